"""The account API (/api/account/…): Bearer-token JSON for first-party browser apps.

Every case asserts the status, the ``error`` code (and the ``field`` at fault), the challenge where
there is one, and the storage side effect: the row changed, or, for every refused request, the row
and the audit trail exactly as they were.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from idp.accounts import links
from idp.accounts.apps import consents
from idp.accounts.profile import profile
from idp.storage.models import (
    AuditEvent,
    KnownDevice,
    MfaCredential,
    OAuthClient,
    OneTimeToken,
    RecoveryCode,
    RefreshToken,
    User,
)
from tests.oauth_helpers import World, add_user, basic, code_flow, make_world

SPA = "http://127.0.0.1:8080"  # the SPA's registered web origin (make_world)
EVIL = "https://evil.example"
BEARER_MISSING = 'Bearer realm="idp"'
PROFILE_COLUMNS = (
    "email",
    "email_normalized",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "locale",
    "zoneinfo",
    "picture",
    "updated_at",
)


# -- helpers ---------------------------------------------------------------------------------------


async def make_first_party(runtime: Any, *client_ids: str) -> None:
    async with runtime.db.session() as session:
        await session.execute(update(OAuthClient).where(OAuthClient.id.in_(client_ids)).values(first_party=True))


async def api_world(runtime: Any) -> World:
    """make_world with both clients first-party (the account API serves no others)."""
    world = await make_world(runtime)
    await make_first_party(runtime, world.web_id, world.spa_id)
    return world


async def token_for(client: Any, world: World, scope: str = "openid profile email", **params: Any) -> str:
    tokens = await code_flow(client, world, scope=scope, **params)
    return str(tokens["access_token"])


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


async def user_row(runtime: Any, user_id: str) -> dict[str, Any]:
    async with runtime.db.session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return {column: getattr(user, column) for column in PROFILE_COLUMNS}


async def audit_rows(runtime: Any, user_id: str) -> list[AuditEvent]:
    async with runtime.db.session() as session:
        result = await session.execute(
            select(AuditEvent).where(AuditEvent.subject_id == user_id).order_by(AuditEvent.id.desc())
        )
        return list(result.scalars().all())


async def events_named(runtime: Any, user_id: str, name: str) -> list[AuditEvent]:
    return [row for row in await audit_rows(runtime, user_id) if row.event == name]


async def outbox(runtime: Any) -> list[email.message.EmailMessage]:
    """The mail sent so far (to the .eml directory), once the outbox has sent everything queued."""
    await runtime.outbox.drain()
    return sent_mail(Path(runtime.accounts.mailer.directory))


def sent_mail(directory: Path) -> list[email.message.EmailMessage]:
    messages = []
    for path in sorted(directory.glob("*.eml")) if directory.exists() else []:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        messages.append(message)
    return messages


def link_token(message: email.message.EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    match = re.search(r"/account/email/confirm\?token=([A-Za-z0-9_-]+)", body.get_content())
    assert match, "no confirmation link in the message"
    return match.group(1)


def assert_error(response: Any, body: dict[str, Any], status: int, error: str, field: str | None = None) -> None:
    assert response.status_code == status, body
    assert body["error"] == error
    assert response.headers["Cache-Control"] == "no-store"
    if field is not None:
        assert body["field"] == field
        assert body["error_description"].startswith(f"{field}: ")


def assert_invalid_token(response: Any, body: dict[str, Any]) -> None:
    assert_error(response, body, 401, "invalid_token")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="idp", error="invalid_token"')


async def patch(client: Any, token: str, body: Any, **headers: str) -> tuple[Any, dict[str, Any]]:
    response = await client.patch("/api/account/profile", json=body, headers=bearer(token, **headers))
    return response, await response.get_json()


async def patch_raw(client: Any, token: str, data: bytes, content_type: str) -> tuple[Any, dict[str, Any]]:
    response = await client.patch(
        "/api/account/profile", data=data, headers=bearer(token, **{"Content-Type": content_type})
    )
    return response, await response.get_json()


# -- reading the profile -----------------------------------------------------------------------------


async def test_profile_read(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    response = await client.get("/api/account/profile", headers=bearer(token))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.get_json()
    row = await user_row(runtime, world.user_id)
    assert body == {
        "sub": world.user_id,
        "email": "alice@example.com",
        "email_verified": True,
        "name": "Alice Example",
        "given_name": None,
        "family_name": None,
        "preferred_username": None,
        "locale": None,
        "zoneinfo": None,
        "picture": None,
        "updated_at": int(row["updated_at"].timestamp()),
        "pending_email": None,
    }
    assert list(body) == [
        "sub",
        "email",
        "email_verified",
        "name",
        "given_name",
        "family_name",
        "preferred_username",
        "locale",
        "zoneinfo",
        "picture",
        "updated_at",
        "pending_email",
    ]


async def test_profile_without_the_email_scope_leaves_the_address_out(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world, "openid profile")
    response = await client.get("/api/account/profile", headers=bearer(token))
    assert response.status_code == 200
    body = await response.get_json()
    assert body["sub"] == world.user_id and body["name"] == "Alice Example"
    assert not {"email", "email_verified", "pending_email"} & set(body)


async def test_picture_is_released_as_a_url_like_userinfo(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == world.user_id).values(picture="../a b.png"))
    body = await (await client.get("/api/account/profile", headers=bearer(token))).get_json()
    userinfo = await (await client.get("/userinfo", headers=bearer(token))).get_json()
    assert body["picture"] == userinfo["picture"] == "http://127.0.0.1:8000/pictures/..%2Fa%20b.png"


# -- editing the profile -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("name", "Alice Liddell", "Alice Liddell"),
        ("name", "  Ada  ", "Ada"),
        ("name", "N" * 200, "N" * 200),
        ("name", "Zoe\u0301", "Zo\u00e9"),  # NFC: the combining accent is composed
        ("given_name", "Alice", "Alice"),
        ("given_name", "G" * 100, "G" * 100),
        ("family_name", "Liddell", "Liddell"),
        ("family_name", "F" * 100, "F" * 100),
        ("preferred_username", "alice", "alice"),
        ("preferred_username", "U" * 100, "U" * 100),
        ("locale", "en", "en"),
        ("locale", "fr-CA", "fr-CA"),
        ("locale", "zh-Hant-TW", "zh-Hant-TW"),
        ("locale", "gsw", "gsw"),
        ("zoneinfo", "Europe/Paris", "Europe/Paris"),
        ("zoneinfo", "America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
        ("zoneinfo", "UTC", "UTC"),
    ],
)
async def test_patch_each_field(client: Any, runtime: Any, field: str, value: str, stored: str) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    before = await user_row(runtime, world.user_id)
    response, body = await patch(client, token, {field: value})
    assert response.status_code == 200, body
    assert response.headers["Cache-Control"] == "no-store"
    assert body[field] == stored
    after = await user_row(runtime, world.user_id)
    assert after[field] == stored
    assert after["updated_at"] >= before["updated_at"]
    assert body["updated_at"] == int(after["updated_at"].timestamp())
    # Only that field changed.
    assert {k: v for k, v in after.items() if k not in (field, "updated_at")} == {
        k: v for k, v in before.items() if k not in (field, "updated_at")
    }
    [event] = await events_named(runtime, world.user_id, "profile_updated")
    assert event.details == {"fields": [field], "via": "http"}  # names, never values
    assert event.client_id == world.web_id
    assert stored not in json.dumps(event.details)


async def test_patch_several_fields_and_clear_with_null_or_empty(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    response, body = await patch(
        client, token, {"zoneinfo": "Asia/Tokyo", "given_name": "Alice", "locale": "ja", "family_name": "Example"}
    )
    assert response.status_code == 200
    assert (body["given_name"], body["family_name"], body["locale"], body["zoneinfo"]) == (
        "Alice",
        "Example",
        "ja",
        "Asia/Tokyo",
    )
    response, body = await patch(client, token, {"name": None, "locale": "", "zoneinfo": "   ", "given_name": "Alice"})
    assert response.status_code == 200
    assert (body["name"], body["locale"], body["zoneinfo"], body["given_name"]) == (None, None, None, "Alice")
    row = await user_row(runtime, world.user_id)
    assert (row["name"], row["locale"], row["zoneinfo"], row["given_name"]) == (None, None, None, "Alice")
    updates = await events_named(runtime, world.user_id, "profile_updated")
    # Newest first; fields in a fixed order, and an unchanged value (given_name) is not listed.
    assert [event.details["fields"] for event in updates] == [
        ["name", "locale", "zoneinfo"],
        ["given_name", "family_name", "locale", "zoneinfo"],
    ]


async def test_patch_without_changes_records_nothing(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    before = await user_row(runtime, world.user_id)
    for body in ({}, {"name": "Alice Example"}):
        response, answer = await patch(client, token, body)
        assert response.status_code == 200
        assert answer["name"] == "Alice Example"
    assert await user_row(runtime, world.user_id) == before
    assert await events_named(runtime, world.user_id, "profile_updated") == []


JSON, INVALID, UNSUPPORTED = "application/json", "invalid_request", "unsupported_media_type"
BAD_BODIES: list[tuple[str, bytes, str, int, str, str | None]] = [
    # (id, raw body, content type, status, error, field)
    ("text-plain", b'{"name": "Bob"}', "text/plain", 415, UNSUPPORTED, None),
    ("form", b"name=Bob", "application/x-www-form-urlencoded", 415, UNSUPPORTED, None),
    ("latin1-charset", b'{"name": "Bob"}', "application/json; charset=iso-8859-1", 415, UNSUPPORTED, None),
    ("invalid-json", b'{"name": "Bob"', JSON, 400, INVALID, "body"),
    ("empty-body", b"", JSON, 400, INVALID, "body"),
    ("invalid-utf8", b'{"name": "Bob \xff"}', JSON, 400, INVALID, "body"),
    ("not-an-object", b'["name", "Bob"]', JSON, 400, INVALID, "body"),
    ("duplicate-member", b'{"name": "Bob", "name": "Eve"}', JSON, 400, INVALID, "body"),
    ("nan", b'{"name": NaN}', JSON, 400, INVALID, "body"),
    ("deep-nesting", b'{"name": %s}' % (b"[" * 5000 + b"]" * 5000), JSON, 400, INVALID, "body"),
    ("unknown-field", b'{"name": "Bob", "nickname": "b"}', JSON, 400, INVALID, "nickname"),
    ("read-only-email", b'{"email": "bob@example.com"}', JSON, 400, INVALID, "email"),
    ("read-only-sub", b'{"sub": "someone-else"}', JSON, 400, INVALID, "sub"),
    ("read-only-picture", b'{"picture": "x.png"}', JSON, 400, INVALID, "picture"),
    ("name-number", b'{"name": 5}', JSON, 400, INVALID, "name"),
    ("locale-list", b'{"locale": ["en"]}', JSON, 400, INVALID, "locale"),
    ("zone-bool", b'{"zoneinfo": true}', JSON, 400, INVALID, "zoneinfo"),
    ("name-object", b'{"name": {"first": "Bob"}}', JSON, 400, INVALID, "name"),
    ("name-too-long", json.dumps({"name": "N" * 201}).encode(), JSON, 400, INVALID, "name"),
    ("given-too-long", json.dumps({"given_name": "G" * 101}).encode(), JSON, 400, INVALID, "given_name"),
    ("family-too-long", json.dumps({"family_name": "F" * 101}).encode(), JSON, 400, INVALID, "family_name"),
    ("username-too-long", b'{"preferred_username": "%s"}' % (b"U" * 101), JSON, 400, INVALID, "preferred_username"),
    ("username-newline", b'{"preferred_username": "al\\nice"}', JSON, 400, INVALID, "preferred_username"),
    ("username-nul", b'{"preferred_username": "al\\u0000ice"}', JSON, 400, INVALID, "preferred_username"),
    ("username-bidi", b'{"preferred_username": "al\\u202eice"}', JSON, 400, INVALID, "preferred_username"),
    ("name-line-separator", b'{"name": "Bob\\u2028Eve"}', JSON, 400, INVALID, "name"),
    ("locale-word", b'{"locale": "english"}', JSON, 400, INVALID, "locale"),
    ("locale-underscore", b'{"locale": "en_US"}', JSON, 400, INVALID, "locale"),
    ("locale-trailing-dash", b'{"locale": "en-"}', JSON, 400, INVALID, "locale"),
    ("locale-space", b'{"locale": "en US"}', JSON, 400, INVALID, "locale"),
    ("locale-too-long", json.dumps({"locale": "en" + "-abcdefgh" * 4}).encode(), JSON, 400, INVALID, "locale"),
    ("zone-unknown", b'{"zoneinfo": "Mars/Olympus_Mons"}', JSON, 400, INVALID, "zoneinfo"),
    ("zone-case", b'{"zoneinfo": "europe/paris"}', JSON, 400, INVALID, "zoneinfo"),
    ("zone-localtime", b'{"zoneinfo": "localtime"}', JSON, 400, INVALID, "zoneinfo"),
    ("zone-path", b'{"zoneinfo": "../../etc/passwd"}', JSON, 400, INVALID, "zoneinfo"),
    # One bad member refuses the whole request: the valid one before it is not applied either.
    ("valid-then-invalid", b'{"name": "Bob", "locale": "not a locale"}', JSON, 400, INVALID, "locale"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "content_type", "status", "error", "field"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_patch_refuses_bad_input_and_changes_nothing(
    client: Any, runtime: Any, data: bytes, content_type: str, status: int, error: str, field: str | None
) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    before, trail = await user_row(runtime, world.user_id), await audit_rows(runtime, world.user_id)
    response, body = await patch_raw(client, token, data, content_type)
    assert_error(response, body, status, error, field)
    assert await user_row(runtime, world.user_id) == before
    assert [row.id for row in await audit_rows(runtime, world.user_id)] == [row.id for row in trail]


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "no-content-length"])
async def test_patch_body_too_large(client: Any, runtime: Any, announced: bool) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    before = await user_row(runtime, world.user_id)
    # Valid JSON of 16 KiB + 1 byte: refused for its size alone (before reading it, when announced).
    padding = " " * (16 * 1024 + 1 - len(b'{"name": "Bob"}'))
    data = ('{"name": "Bob"}' + padding).encode()
    assert len(data) == 16 * 1024 + 1
    headers = bearer(token, **{"Content-Type": "application/json"})
    if announced:
        headers["Content-Length"] = str(len(data))
    response = await client.patch("/api/account/profile", data=data, headers=headers)
    assert_error(response, await response.get_json(), 413, "payload_too_large")
    assert await user_row(runtime, world.user_id) == before
    # Control: exactly 16 KiB is accepted.
    response, body = await patch_raw(client, token, data[:-1], "application/json")
    assert response.status_code == 200
    assert body["name"] == "Bob"


async def test_patch_body_too_large_without_content_length(client: Any, runtime: Any) -> None:
    # A streamed body announces no length: the limit applies to what actually arrives.
    world = await api_world(runtime)
    token = await token_for(client, world)
    before = await user_row(runtime, world.user_id)
    headers = bearer(token, **{"Content-Type": "application/json"})
    async with client.request("/api/account/profile", method="PATCH", headers=headers) as connection:
        await connection.send(b'{"name": "Bob"')
        await connection.send(b" " * (16 * 1024))
        await connection.send(b"}")
        await connection.send_complete()
        await connection.receive()
    assert connection.status_code == 413
    assert connection.headers["Cache-Control"] == "no-store"
    assert await user_row(runtime, world.user_id) == before


async def test_unknown_field_name_is_echoed_safely(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    response, body = await patch(client, token, {"x\n" + "y" * 200: 1})
    assert_error(response, body, 400, "invalid_request")
    assert body["field"] == "x?" + "y" * 62 + "…"


# -- the access token --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/account/profile"),
        ("PATCH", "/api/account/profile"),
        ("POST", "/api/account/email"),
        ("GET", "/api/account/activity"),
        ("GET", "/api/account/export"),
    ],
)
async def test_missing_token_gets_a_bare_challenge(client: Any, runtime: Any, method: str, path: str) -> None:
    world = await api_world(runtime)
    before = await user_row(runtime, world.user_id)
    response = await client.open(path, method=method, json={"name": "Mallory"})
    body = await response.get_json()
    assert_error(response, body, 401, "invalid_request")
    # RFC 6750 §3.1: no error code when the request carried no token at all.
    assert response.headers["WWW-Authenticate"] == BEARER_MISSING
    assert await user_row(runtime, world.user_id) == before


async def test_malformed_tokens_and_other_schemes_are_invalid(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    headers = [
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {token[:-4]}AAAA"},  # signature altered
        {"Authorization": f"Token {token}"},
        {"Authorization": "Bearer"},
        basic(world.web_id, world.web_secret),
    ]
    for header in headers:
        response = await client.get("/api/account/profile", headers=header)
        assert_invalid_token(response, await response.get_json())
    # Not in the query string or a cookie either (RFC 6750 §2.3 leaks tokens into logs).
    response = await client.get(f"/api/account/profile?access_token={token}")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == BEARER_MISSING


async def test_id_and_refresh_tokens_are_not_access_tokens(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    tokens = await code_flow(client, world, scope="openid profile email offline_access")
    for other in (tokens["id_token"], tokens["refresh_token"]):
        response = await client.get("/api/account/profile", headers=bearer(other))
        assert_invalid_token(response, await response.get_json())


async def test_revoked_token_is_invalid_and_changes_nothing(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    assert (await client.get("/api/account/profile", headers=bearer(token))).status_code == 200
    revoke = await client.post(
        "/revoke",
        form={"token": token, "token_type_hint": "access_token"},
        headers=basic(world.web_id, world.web_secret),
    )
    assert revoke.status_code == 200
    before = await user_row(runtime, world.user_id)
    response, body = await patch(client, token, {"name": "Mallory"})
    assert_invalid_token(response, body)
    assert await user_row(runtime, world.user_id) == before


async def test_expired_token_is_invalid(client: Any, runtime: Any) -> None:
    from idp.oauth.tokens import TokenService

    world = await api_world(runtime)
    ttl = runtime.settings.tokens.access_token_ttl
    stale = TokenService(
        runtime.keys,
        runtime.tokens.denylist,
        runtime.settings.issuer,
        access_token_ttl=ttl,
        id_token_ttl=runtime.settings.tokens.id_token_ttl,
        clock=lambda: time.time() - ttl - 120,
    ).issue_access_token(subject=world.user_id, client_id=world.web_id, scope="openid profile")
    response = await client.get("/api/account/profile", headers=bearer(stale.value))
    assert_invalid_token(response, await response.get_json())
    # Control: the same token, not expired.
    fresh = runtime.tokens.issue_access_token(subject=world.user_id, client_id=world.web_id, scope="openid profile")
    assert (await client.get("/api/account/profile", headers=bearer(fresh.value))).status_code == 200


@pytest.mark.parametrize("what", ["user-disabled", "user-deleted", "client-disabled"])
async def test_token_of_a_disabled_or_deleted_user_or_client_is_invalid(client: Any, runtime: Any, what: str) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    async with runtime.db.session() as session:
        if what == "user-disabled":
            await session.execute(update(User).where(User.id == world.user_id).values(disabled=True))
        elif what == "user-deleted":
            await session.delete(await session.get(User, world.user_id))
    if what == "client-disabled":
        # The way every door disables a client (admin API and pages, CLI): cached copies go too.
        from idp.oauth.clients import set_client_disabled

        assert await set_client_disabled(runtime.db, runtime.events, world.web_id, True)
    response = await client.get("/api/account/profile", headers=bearer(token))
    assert_invalid_token(response, await response.get_json())


async def test_client_credentials_token_is_invalid(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    issued = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic(world.web_id, world.web_secret)
    )
    assert issued.status_code == 200
    response = await client.get("/api/account/profile", headers=bearer((await issued.get_json())["access_token"]))
    assert_invalid_token(response, await response.get_json())


async def test_third_party_clients_are_refused(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)  # neither client first-party
    token = await token_for(client, world)
    before = await user_row(runtime, world.user_id)
    calls = [
        ("GET", "/api/account/profile", None),
        ("PATCH", "/api/account/profile", {"name": "Mallory"}),
        ("POST", "/api/account/email", {"email": "mallory@example.net"}),
        ("GET", "/api/account/activity", None),
        ("GET", "/api/account/export", None),
    ]
    for method, path, body in calls:
        response = await client.open(path, method=method, json=body, headers=bearer(token))
        assert_error(response, await response.get_json(), 403, "forbidden")
    assert await user_row(runtime, world.user_id) == before
    assert (await outbox(runtime)) == []


# -- scopes --------------------------------------------------------------------------------------------


def assert_insufficient_scope(response: Any, body: dict[str, Any], scope: str) -> None:
    assert_error(response, body, 403, "insufficient_scope")
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="idp", error="insufficient_scope", scope="{scope}"'


async def test_profile_needs_the_profile_scope(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world, "openid email")
    before = await user_row(runtime, world.user_id)
    response = await client.get("/api/account/profile", headers=bearer(token))
    assert_insufficient_scope(response, await response.get_json(), "openid profile")
    response, body = await patch(client, token, {"name": "Mallory"})
    assert_insufficient_scope(response, body, "openid profile")
    assert await user_row(runtime, world.user_id) == before
    # The same token may use what its scopes cover.
    response = await client.get("/api/account/activity", headers=bearer(token))
    assert response.status_code == 200


async def test_email_change_needs_the_email_scope(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world, "openid profile")
    response = await client.post("/api/account/email", json={"email": "new@example.org"}, headers=bearer(token))
    assert_insufficient_scope(response, await response.get_json(), "openid email")
    assert (await outbox(runtime)) == []
    assert await profile.pending_email(runtime.db, world.user_id) is None


async def test_export_needs_openid_profile_and_email(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    for scope in ("openid profile", "openid email"):
        token = await token_for(client, world, scope)
        response = await client.get("/api/account/export", headers=bearer(token))
        assert_insufficient_scope(response, await response.get_json(), "openid profile email")


async def test_every_call_needs_openid(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = runtime.tokens.issue_access_token(subject=world.user_id, client_id=world.web_id, scope="profile email")
    response = await client.get("/api/account/activity", headers=bearer(token.value))
    assert_insufficient_scope(response, await response.get_json(), "openid")


# -- CORS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/account/profile", "/api/account/email", "/api/account/activity"])
async def test_preflight_from_a_registered_origin(client: Any, runtime: Any, path: str) -> None:
    await api_world(runtime)
    response = await client.options(
        path,
        headers={
            "Origin": SPA,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SPA
    assert response.headers["Access-Control-Allow-Methods"] == "GET, PATCH, POST, DELETE"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers["Vary"]
    assert response.headers["Cache-Control"] == "no-store"


async def test_unregistered_origins_get_no_cors_headers(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    for origin in (EVIL, "null", "http://127.0.0.1:8081"):
        response = await client.options(
            "/api/account/profile", headers={"Origin": origin, "Access-Control-Request-Method": "PATCH"}
        )
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Methods" not in response.headers
        assert "Origin" in response.headers["Vary"]
    token = await token_for(client, world, confidential=False)
    response = await client.get("/api/account/profile", headers=bearer(token, Origin=EVIL))
    assert response.status_code == 200  # CORS is the browser's decision; the server just doesn't allow it
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_actual_requests_and_errors_carry_cors_for_the_registered_origin(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world, confidential=False)
    response = await client.get("/api/account/profile", headers=bearer(token, Origin=SPA))
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SPA
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers["Vary"]
    # The app must be able to read the error and its challenge.
    failed = await client.get("/api/account/profile", headers={"Origin": SPA})
    assert failed.status_code == 401
    assert failed.headers["Access-Control-Allow-Origin"] == SPA
    assert "WWW-Authenticate" in failed.headers["Access-Control-Expose-Headers"]
    export = await client.get("/api/account/export", headers=bearer(token, Origin=SPA))
    assert "Content-Disposition" in export.headers["Access-Control-Expose-Headers"]


# -- changing the email address -----------------------------------------------------------------------


async def request_change(client: Any, token: str, address: str) -> tuple[Any, dict[str, Any]]:
    response = await client.post("/api/account/email", json={"email": address}, headers=bearer(token))
    return response, await response.get_json()


async def test_email_change_mails_a_link_to_the_new_address_and_changes_nothing_yet(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    before = await user_row(runtime, world.user_id)
    response, body = await request_change(client, token, "Alice.New@Example.org")
    assert response.status_code == 202
    assert body == {"status": "verification_sent"}
    assert response.headers["Cache-Control"] == "no-store"
    [message] = await outbox(runtime)
    assert message["To"] == "Alice.New@example.org"  # the domain normalised by email-validator
    assert message["Subject"] == "Confirm your new email address"
    link = link_token(message)
    assert await user_row(runtime, world.user_id) == before
    # The link row: for this user, for that address, only its digest stored.
    async with runtime.db.session() as session:
        [row] = (
            (await session.execute(select(OneTimeToken).where(OneTimeToken.purpose == links.CHANGE_EMAIL)))
            .scalars()
            .all()
        )
    assert (row.user_id, row.email, row.used_at) == (world.user_id, "Alice.New@example.org", None)
    assert row.digest != link
    profile_body = await (await client.get("/api/account/profile", headers=bearer(token))).get_json()
    assert profile_body["email"] == "alice@example.com"
    assert profile_body["pending_email"] == "Alice.New@example.org"
    [event] = await events_named(runtime, world.user_id, "email_change_requested")
    assert (event.details, event.client_id) == ({"via": "http"}, world.web_id)

    # Confirming (the browser page calls this) changes the address and verifies it.
    assert await profile.peek_email_change(runtime.accounts, link) == "Alice.New@example.org"
    assert await profile.confirm_email_change(runtime.accounts, link) == world.user_id
    after = await user_row(runtime, world.user_id)
    assert (after["email"], after["email_normalized"], after["email_verified"]) == (
        "Alice.New@example.org",
        "alice.new@example.org",
        True,
    )
    [changed] = await events_named(runtime, world.user_id, "email_changed")
    assert "example" not in json.dumps(changed.details)  # no addresses in the audit log
    profile_body = await (await client.get("/api/account/profile", headers=bearer(token))).get_json()
    assert (profile_body["email"], profile_body["pending_email"]) == ("Alice.New@example.org", None)
    # Single use.
    assert await profile.confirm_email_change(runtime.accounts, link) is None
    assert await profile.peek_email_change(runtime.accounts, link) is None
    # Confirmation tells the old address (ASVS 6.3.7), once.
    messages = await outbox(runtime)
    assert len(messages) == 2
    assert messages[1]["To"] == "alice@example.com"
    assert messages[1]["Subject"] == "The email address of your account was changed"


async def test_an_address_of_another_account_gets_the_same_answer_and_nobody_is_mailed(
    client: Any, runtime: Any
) -> None:
    world = await api_world(runtime)
    other_id = await add_user(runtime, "bob@example.com")
    token = await token_for(client, world)
    before, other_before = await user_row(runtime, world.user_id), await user_row(runtime, other_id)
    other_trail = [row.id for row in await audit_rows(runtime, other_id)]
    response, body = await request_change(client, token, "BOB@example.com")
    assert response.status_code == 202
    assert body == {"status": "verification_sent"}
    assert (await outbox(runtime)) == []  # neither the other owner nor anyone else
    # The caller's visible state is what a free address gives: a pending change, a recorded request.
    profile_body = await (await client.get("/api/account/profile", headers=bearer(token))).get_json()
    assert profile_body["pending_email"] == "BOB@example.com"
    assert len(await events_named(runtime, world.user_id, "email_change_requested")) == 1
    assert await user_row(runtime, world.user_id) == before
    assert await user_row(runtime, other_id) == other_before
    assert [row.id for row in await audit_rows(runtime, other_id)] == other_trail


async def test_confirmation_rechecks_that_the_address_is_still_free(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    response, _ = await request_change(client, token, "carol@example.net")
    assert response.status_code == 202
    link = link_token((await outbox(runtime))[0])
    # Someone registers the address before the link is used.
    await add_user(runtime, "Carol@Example.net")
    before = await user_row(runtime, world.user_id)
    assert await profile.confirm_email_change(runtime.accounts, link) is None
    assert await user_row(runtime, world.user_id) == before
    assert await events_named(runtime, world.user_id, "email_changed") == []
    async with runtime.db.session() as session:
        row = (
            await session.execute(select(OneTimeToken).where(OneTimeToken.purpose == links.CHANGE_EMAIL))
        ).scalar_one()
    assert row.used_at is not None  # used up all the same


async def test_confirmation_cancels_links_sent_to_the_old_address(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    reset = await links.issue(
        runtime.db, purpose=links.RESET_PASSWORD, user_id=world.user_id, ttl=1800, email="alice@example.com"
    )
    await request_change(client, token, "alice@example.net")
    assert await profile.confirm_email_change(runtime.accounts, link_token((await outbox(runtime))[0])) == world.user_id
    assert await links.peek(runtime.db, links.RESET_PASSWORD, reset) is None


async def test_only_the_newest_link_works(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    await request_change(client, token, "first@example.net")
    await request_change(client, token, "second@example.net")
    first, second = (link_token(message) for message in (await outbox(runtime)))
    assert await profile.confirm_email_change(runtime.accounts, first) is None
    assert await profile.confirm_email_change(runtime.accounts, second) == world.user_id
    assert (await user_row(runtime, world.user_id))["email"] == "second@example.net"


@pytest.mark.parametrize("token", [None, "", "x" * 200, "not-a-link"])
async def test_confirmation_with_a_bad_token(runtime: Any, token: str | None) -> None:
    assert await profile.confirm_email_change(runtime.accounts, token) is None


async def test_confirmation_for_a_disabled_account_does_nothing(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    await request_change(client, token, "dave@example.net")
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == world.user_id).values(disabled=True))
    assert await profile.confirm_email_change(runtime.accounts, link_token((await outbox(runtime))[0])) is None
    assert (await user_row(runtime, world.user_id))["email"] == "alice@example.com"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not an address"}, "email"),
        ({"email": "a@b@example.com"}, "email"),
        ({"email": "alice@example.com"}, "email"),  # the current address
        ({"email": " ALICE@example.com "}, "email"),
        ({"email": 5}, "email"),
        ({}, "email"),
        ({"email": "new@example.org", "notify": True}, "notify"),
    ],
)
async def test_email_change_input_errors(client: Any, runtime: Any, body: dict[str, Any], field: str) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    response = await client.post("/api/account/email", json=body, headers=bearer(token))
    assert_error(response, await response.get_json(), 400, "invalid_request", field)
    assert (await outbox(runtime)) == []
    assert await profile.pending_email(runtime.db, world.user_id) is None
    assert await events_named(runtime, world.user_id, "email_change_requested") == []


async def test_email_change_needs_json(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    response = await client.post("/api/account/email", form={"email": "new@example.org"}, headers=bearer(token))
    assert_error(response, await response.get_json(), 415, "unsupported_media_type")
    assert (await outbox(runtime)) == []


async def test_email_change_needs_a_recent_sign_in(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    old = runtime.tokens.issue_access_token(
        subject=world.user_id, client_id=world.web_id, scope="openid email", auth_time=int(time.time()) - 901
    )
    response, body = await request_change(client, old.value, "new@example.org")
    assert response.status_code == 401
    assert body["error"] == "insufficient_user_authentication"
    # RFC 9470 §3: the challenge tells the client how recent the sign-in must be.
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="idp", error="insufficient_user_authentication", '
        'error_description="A more recent sign-in is required.", max_age="900"'
    )
    no_auth_time = runtime.tokens.issue_access_token(
        subject=world.user_id, client_id=world.web_id, scope="openid email"
    )
    response, body = await request_change(client, no_auth_time.value, "new@example.org")
    assert (response.status_code, body["error"]) == (401, "insufficient_user_authentication")
    assert (await outbox(runtime)) == []
    # Control: a sign-in within the window.
    recent = runtime.tokens.issue_access_token(
        subject=world.user_id, client_id=world.web_id, scope="openid email", auth_time=int(time.time()) - 600
    )
    response, _ = await request_change(client, recent.value, "new@example.org")
    assert response.status_code == 202


# -- activity --------------------------------------------------------------------------------------------


async def test_activity_pages_through_the_users_own_events(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    await add_user(runtime, "bob@example.com")  # another user's events must not appear
    token = await token_for(client, world)
    for name in ("One", "Two", "Three"):
        response, _ = await patch(client, token, {"name": name}, **{"User-Agent": "pytest-agent"})
        assert response.status_code == 200
    expected = await audit_rows(runtime, world.user_id)
    assert len(expected) > 4

    seen: list[dict[str, Any]] = []
    url = "/api/account/activity?limit=2"
    pages = 0
    while True:
        response = await client.get(url, headers=bearer(token))
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        page = await response.get_json()
        assert set(page) == {"items", "next"}
        assert 1 <= len(page["items"]) <= 2
        seen.extend(page["items"])
        pages += 1
        if page["next"] is None:
            break
        assert page["next"] == page["items"][-1]["id"]
        url = f"/api/account/activity?limit=2&before={page['next']}"
    assert pages == (len(expected) + 1) // 2
    assert [item["id"] for item in seen] == [row.id for row in expected]  # newest first, all of them, once
    newest = seen[0]
    assert newest == {
        "id": expected[0].id,
        "event": "profile_updated",
        "outcome": "success",
        "occurred_at": expected[0].occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ip": expected[0].ip,
        "user_agent": "pytest-agent",
        "client_id": world.web_id,  # the application that made the change
        "details": {"fields": ["name"], "via": "http"},
    }
    assert {item["event"] for item in seen} >= {"user_created", "login_succeeded", "token_issued", "profile_updated"}


async def test_activity_default_limit_and_empty_page(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    rows = await audit_rows(runtime, world.user_id)
    page = await (await client.get("/api/account/activity", headers=bearer(token))).get_json()
    assert [item["id"] for item in page["items"]] == [row.id for row in rows][:20]
    assert page["next"] is None
    oldest = rows[-1].id
    page = await (await client.get(f"/api/account/activity?before={oldest}", headers=bearer(token))).get_json()
    assert page == {"items": [], "next": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("limit=%2B5", "limit"),
        ("limit=%D9%A5", "limit"),  # an Arabic-Indic five: int() would take it
        ("before=x", "before"),
        ("before=0", "before"),
        ("before=99999999999999999999", "before"),
    ],
)
async def test_activity_bad_query(client: Any, runtime: Any, query: str, field: str) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    response = await client.get(f"/api/account/activity?{query}", headers=bearer(token))
    assert_error(response, await response.get_json(), 400, "invalid_request", field)


# -- export ---------------------------------------------------------------------------------------------


async def test_export_holds_everything_but_secrets(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    # A third-party app the user consented to, MFA and recovery codes with their secrets.
    await consents.grant(runtime.db, world.user_id, world.spa_id, ["openid", "profile"])
    async with runtime.db.session() as session:
        await session.execute(update(OAuthClient).where(OAuthClient.id == world.spa_id).values(first_party=False))
        session.add(
            MfaCredential(
                user_id=world.user_id,
                type="totp",
                name="Phone",
                secret_encrypted="SECRET-TOTP-SEED",
                public_key="PUBLIC-KEY-MATERIAL",
                credential_id="CREDENTIAL-ID",
            )
        )
        session.add(RecoveryCode(user_id=world.user_id, code_hash="RECOVERY-HASH"))
    tokens = await code_flow(client, world, scope="openid profile email offline_access")
    token = tokens["access_token"]
    await patch(client, token, {"locale": "en-GB"})

    response = await client.get("/api/account/export", headers=bearer(token))
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="idp-account-export.json"'
    assert response.headers["Cache-Control"] == "no-store"
    data = await response.get_json()
    text = await response.get_data(as_text=True)

    async with runtime.db.session() as session:
        user = await session.get(User, world.user_id)
        refresh = (await session.execute(select(RefreshToken))).scalars().all()
    assert user is not None and user.password_hash
    for secret in (
        user.password_hash,
        "SECRET-TOTP-SEED",
        "PUBLIC-KEY-MATERIAL",
        "CREDENTIAL-ID",
        "RECOVERY-HASH",
        tokens["refresh_token"],
        tokens["access_token"],
        *(row.jti for row in refresh),
        *(row.token_digest for row in refresh),
        *(row.family_id for row in refresh),
    ):
        assert secret not in text
    assert "password_hash" not in text

    assert set(data) == {
        "format",
        "exported_at",
        "profile",
        "consents",
        "mfa_credentials",
        "recovery_codes",
        "refresh_tokens",
        "sessions",
        "known_devices",
        "audit_events",
    }
    assert data["profile"]["id"] == world.user_id
    assert data["profile"]["email"] == "alice@example.com"
    assert data["profile"]["locale"] == "en-GB"
    assert data["profile"]["has_password"] is True
    assert data["consents"] == [
        {
            "client_id": world.spa_id,
            "client_name": "SPA",
            "scopes": ["openid", "profile"],
            "created_at": data["consents"][0]["created_at"],
            "updated_at": data["consents"][0]["updated_at"],
        }
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["consents"][0]["created_at"])
    assert data["mfa_credentials"] == [
        {
            "type": "totp",
            "name": "Phone",
            "created_at": data["mfa_credentials"][0]["created_at"],
            "confirmed_at": None,
            "last_used_at": None,
        }
    ]
    assert data["recovery_codes"] == {"total": 1, "unused": 1}
    [issued] = data["refresh_tokens"]
    assert (issued["client_id"], issued["client_name"], issued["scope"]) == (
        world.web_id,
        "Web App",
        "openid profile email offline_access",
    )
    assert issued["revoked_at"] is None and issued["expires_at"] > issued["issued_at"]
    # The browser that signed in: its session (by sid, never the cookie) and the device it is.
    [browser] = data["sessions"]
    assert browser["current"] is True and browser["applications"] == ["Web App"] and browser["amr"] == ["pwd"]
    [device] = data["known_devices"]
    assert set(device) == {"device", "first_seen_at", "last_seen_at", "last_ip"}
    async with runtime.db.session() as session:
        digests = (await session.execute(select(KnownDevice.device_digest))).scalars().all()
    for cookie in client.cookie_jar:
        assert cookie.value not in text
    for digest in digests:
        assert digest not in text
    trail = await audit_rows(runtime, world.user_id)
    assert [event["id"] for event in data["audit_events"]] == [row.id for row in reversed(trail)]
    assert {"login_succeeded", "profile_updated", "token_issued"} <= {e["event"] for e in data["audit_events"]}


async def test_export_shows_a_pending_email_change(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    await request_change(client, token, "new@example.org")
    data = await (await client.get("/api/account/export", headers=bearer(token))).get_json()
    assert data["profile"]["pending_email"] == "new@example.org"
    assert data["profile"]["email"] == "alice@example.com"


async def test_two_authorization_headers_are_invalid_request(client: Any, runtime: Any) -> None:
    """The first of two Bearer tokens must not win (as at /token, /userinfo; RFC 6750 §2)."""
    from werkzeug.datastructures import Headers

    world = await api_world(runtime)
    token = await token_for(client, world)
    headers = Headers([("Authorization", f"Bearer {token}"), ("Authorization", "Bearer other")])
    response = await client.get("/api/account/profile", headers=headers)
    assert response.status_code == 400
    assert await response.get_json() == {
        "error": "invalid_request",
        "error_description": "the Authorization header is repeated",
    }
    assert (await client.get("/api/account/profile", headers=bearer(token))).status_code == 200
