"""The admin API (/api/admin/...): who may call it (a walk over every route), what each operation
changes and audits, field-level errors, fresh sign-ins for destructive actions, and the OpenAPI
document that describes it."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest
from openapi_spec_validator import validate

from idp.accounts.users import NewUser, create_user
from idp.oauth.clients import ClientSpec, create_client
from idp.storage.models import AuditEvent, User
from tests.oauth_helpers import basic

STAFF = "grace@example.com"


def _routes(app: Any) -> list[tuple[str, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("admin_api."):
            path = rule.rule.replace("<user_id>", "some-user-id").replace("<client_id>", "some-client-id")
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                found.append((method, path))
    return sorted(found)


@pytest.fixture
async def setup(runtime: Any) -> dict[str, Any]:
    async def user(email: str, *, admin: bool = False) -> User:
        return await create_user(
            runtime.db, runtime.passwords, runtime.events, NewUser(email, None, email_verified=True, is_admin=admin)
        )

    staff, alice, bob = await user(STAFF, admin=True), await user("alice@example.com"), await user("bob@example.com")
    first_party = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="Console",
            client_type="public",
            redirect_uris=["https://console.example/cb"],
            scopes=["openid", "admin"],
            first_party=True,
        ),
    )
    third_party = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="Other", client_type="public", redirect_uris=["https://other.example/cb"], scopes=["openid", "admin"]
        ),
    )
    robot = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(name="Robot", client_type="confidential", grant_types=["client_credentials"], scopes=["admin"]),
    )
    plain_robot = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(name="Plain", client_type="confidential", grant_types=["client_credentials"], scopes=["reports"]),
    )

    def token(user_: User, *, client: Any = first_party, scope: str = "openid admin", **claims: Any) -> dict[str, str]:
        values = {"auth_time": int(time.time()), "amr": ["pwd", "otp", "mfa"], **claims}
        issued = runtime.tokens.issue_access_token(subject=user_.id, client_id=client.client.id, scope=scope, **values)
        return {"Authorization": f"Bearer {issued.value}"}

    return {
        "staff": staff,
        "alice": alice,
        "bob": bob,
        "token": token,
        "robot": robot,
        "plain_robot": plain_robot,
        "third_party": third_party,
        "runtime": runtime,
    }


async def machine_token(client: Any, registered: Any, scope: str = "admin") -> Any:
    return await client.post(
        "/token",
        form={"grant_type": "client_credentials", "scope": scope},
        headers=basic(registered.client.id, registered.client_secret),
    )


# -- who may call ----------------------------------------------------------------------------------


async def test_every_admin_route_refuses_whoever_is_not_an_administrator(
    app: Any, client: Any, setup: dict[str, Any]
) -> None:
    routes = _routes(app)
    assert len(routes) >= 24  # the walk covers what exists; a route added later is walked too
    token = setup["token"]
    callers = {
        "anonymous": ({}, 401, None),
        "no admin scope": (token(setup["staff"], scope="openid"), 403, "insufficient_scope"),
        "not an administrator": (token(setup["alice"]), 403, "forbidden"),
        "third-party client": (token(setup["staff"], client=setup["third_party"]), 403, "forbidden"),
        "administrator without a second factor": (
            token(setup["staff"], amr=["pwd"]),
            401,
            "insufficient_user_authentication",
        ),
        "garbage": ({"Authorization": "Bearer not-a-token"}, 401, "invalid_token"),
    }
    for method, path in routes:
        for who, (headers, status, error) in callers.items():
            body = {} if method in ("POST", "PATCH") else None
            response = await client.open(path, method=method, headers=headers, json=body)
            assert response.status_code == status, (method, path, who, await response.get_data(as_text=True))
            if error is not None:
                assert (await response.get_json())["error"] == error, (method, path, who)
            if who == "administrator without a second factor":
                assert 'acr_values="urn:idp:acr:mfa"' in response.headers["WWW-Authenticate"]
    async with setup["runtime"].db.session() as session:
        assert (await session.get(User, setup["alice"].id)).disabled is False  # nothing changed


async def test_a_machine_client_needs_the_admin_scope_in_its_registration(client: Any, setup: dict[str, Any]) -> None:
    refused = await machine_token(client, setup["plain_robot"])
    assert (await refused.get_json())["error"] == "invalid_scope"
    granted = await machine_token(client, setup["robot"])
    bearer = {"Authorization": f"Bearer {(await granted.get_json())['access_token']}"}
    listed = await client.get("/api/admin/users", headers=bearer)
    assert listed.status_code == 200
    assert [user["email"] for user in (await listed.get_json())["items"]] == [
        STAFF,
        "alice@example.com",
        "bob@example.com",
    ]


# -- users -----------------------------------------------------------------------------------------


async def test_list_pages_and_filters(client: Any, setup: dict[str, Any]) -> None:
    headers = setup["token"](setup["staff"])
    first = await (await client.get("/api/admin/users?limit=2", headers=headers)).get_json()
    assert [u["email"] for u in first["items"]] == [STAFF, "alice@example.com"] and first["next_cursor"]
    second = await client.get(f"/api/admin/users?limit=2&cursor={first['next_cursor']}", headers=headers)
    assert [u["email"] for u in (await second.get_json())["items"]] == ["bob@example.com"]
    admins = await (await client.get("/api/admin/users?admin=true", headers=headers)).get_json()
    assert [u["email"] for u in admins["items"]] == [STAFF]
    found = await (await client.get("/api/admin/users?q=BOB", headers=headers)).get_json()
    assert [u["email"] for u in found["items"]] == ["bob@example.com"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("status=gone", "status"),
        ("cursor=%21%21", "cursor"),
        ("admin=perhaps", "admin"),
        ("unknown=1", "unknown"),
    ],
)
async def test_a_bad_query_names_its_field(client: Any, setup: dict[str, Any], query: str, field: str) -> None:
    response = await client.get(f"/api/admin/users?{query}", headers=setup["token"](setup["staff"]))
    body = await response.get_json()
    assert response.status_code == 400 and body["error"] == "invalid_request"
    assert field in body["fields"], body


async def test_a_user_in_detail_and_an_unknown_one(client: Any, setup: dict[str, Any]) -> None:
    headers = setup["token"](setup["staff"])
    detail = await (await client.get(f"/api/admin/users/{setup['alice'].id}", headers=headers)).get_json()
    assert detail["email"] == "alice@example.com" and detail["second_factors"]["passkeys"] == 0
    assert detail["sessions"] == [] and "password_hash" not in detail
    missing = await client.get("/api/admin/users/no-such-user", headers=headers)
    assert missing.status_code == 404 and (await missing.get_json())["error"] == "not_found"


async def test_actions_change_the_account_and_are_audited_with_the_actor(
    app: Any, client: Any, setup: dict[str, Any]
) -> None:
    headers, alice = setup["token"](setup["staff"]), setup["alice"]
    for action, field, value in (("disable", "disabled", True), ("enable", "disabled", False)):
        answer = await client.post(f"/api/admin/users/{alice.id}/{action}", headers=headers)
        assert await answer.get_json() == {"id": alice.id, "changed": True}
        async with setup["runtime"].db.session() as session:
            assert getattr(await session.get(User, alice.id), field) is value
        again = await client.post(f"/api/admin/users/{alice.id}/{action}", headers=headers)
        assert await again.get_json() == {"id": alice.id, "changed": False}  # and nothing published
    assert (await (await client.post(f"/api/admin/users/{alice.id}/enable", headers=headers)).get_json())[
        "changed"
    ] is False
    ended = await client.post(f"/api/admin/users/{alice.id}/end-sessions", headers=headers, json={})
    assert await ended.get_json() == {"id": alice.id, "sessions_ended": 0}
    async with setup["runtime"].db.session() as session:
        from sqlalchemy import select

        rows = (await session.execute(select(AuditEvent).where(AuditEvent.subject_id == alice.id))).scalars().all()
    acted = {(row.event, row.actor_id, row.details.get("via")) for row in rows}
    assert ("account_disabled", setup["staff"].id, "admin_api") in acted
    assert ("account_enabled", setup["staff"].id, "admin_api") in acted
    assert [row.event for row in rows].count("account_disabled") == 1


async def test_the_last_administrator_is_refused_by_field(client: Any, setup: dict[str, Any]) -> None:
    staff = setup["staff"]
    for action in ("revoke-admin", "disable"):
        answer = await client.post(f"/api/admin/users/{staff.id}/{action}", headers=setup["token"](staff))
        body = await answer.get_json()
        assert answer.status_code == 400 and "last enabled administrator" in body["fields"]["account"]


async def test_destructive_actions_need_a_recent_sign_in(app: Any, client: Any, setup: dict[str, Any]) -> None:
    stale = setup["token"](setup["staff"], auth_time=int(time.time()) - 3600)
    bob = setup["bob"]
    for method, path in (
        ("DELETE", f"/api/admin/users/{bob.id}"),
        ("POST", f"/api/admin/users/{bob.id}/reset-mfa"),
        ("POST", f"/api/admin/users/{bob.id}/grant-admin"),
    ):
        answer = await client.open(path, method=method, headers=stale)
        assert answer.status_code == 401 and (await answer.get_json())["error"] == "insufficient_user_authentication"
        assert 'max_age="300"' in answer.headers["WWW-Authenticate"]
    fresh = setup["token"](setup["staff"])
    assert (await client.delete(f"/api/admin/users/{bob.id}", headers=fresh)).status_code == 204
    async with setup["runtime"].db.session() as session:
        assert await session.get(User, bob.id) is None
    assert (await client.delete(f"/api/admin/users/{bob.id}", headers=fresh)).status_code == 204  # idempotent


# -- audit -----------------------------------------------------------------------------------------


async def test_the_audit_log_pages_filters_and_exports(client: Any, setup: dict[str, Any]) -> None:
    headers = setup["token"](setup["staff"])
    page = await (await client.get("/api/admin/audit?event=user_created&limit=2", headers=headers)).get_json()
    assert [item["event"] for item in page["items"]] == ["user_created", "user_created"]
    older = await client.get(f"/api/admin/audit?event=user_created&before={page['next_before']}", headers=headers)
    assert [item["subject_id"] for item in (await older.get_json())["items"]] == [setup["staff"].id]
    exported = await client.get("/api/admin/audit/export?event=user_created", headers=headers)
    assert exported.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO((await exported.get_data()).decode())))
    assert [row["subject_id"] for row in rows] == [setup["staff"].id, setup["alice"].id, setup["bob"].id]
    bad = await client.get("/api/admin/audit?since=yesterday", headers=headers)
    assert bad.status_code == 400 and "since" in (await bad.get_json())["fields"]


# -- the document ----------------------------------------------------------------------------------


async def test_openapi_describes_the_apis_and_validates(client: Any) -> None:
    response = await client.get("/openapi.json")
    document = await response.get_json()
    validate(document)  # openapi-spec-validator: a valid OpenAPI 3.1 document
    assert document["openapi"].startswith("3.1")
    assert "/api/admin/users" in document["paths"] and "/api/admin/audit/export" in document["paths"]
    # The account API too, every operation with its summary, its answers and its error answers.
    account = {path: item for path, item in document["paths"].items() if path.startswith("/api/account")}
    assert {"/api/account", "/api/account/profile", "/api/account/sessions/{sid}"} <= set(account)
    assert set(account["/api/account/profile"]) == {"get", "patch"}
    for item in account.values():
        for operation in item.values():
            assert operation["summary"] and {"401", "403"} <= set(map(str, operation["responses"]))
    patch = account["/api/account/profile"]["patch"]
    assert patch["requestBody"]["required"] is True and "400" in map(str, patch["responses"])
    assert all(path.startswith(("/api/admin/", "/api/account")) for path in document["paths"])
    docs = await client.get("/api/docs")
    html = await docs.get_data(as_text=True)
    assert docs.status_code == 200 and "GET /api/admin/users" in html and "cdn" not in html.lower()
    assert "PATCH /api/account/profile" in html


# -- clients and keys ------------------------------------------------------------------------------


async def test_clients_are_created_changed_and_deleted(client: Any, setup: dict[str, Any]) -> None:
    headers = setup["token"](setup["staff"])
    created = await client.post(
        "/api/admin/clients",
        headers=headers,
        json={"name": "Reports", "client_type": "confidential", "redirect_uris": ["https://rp.example/cb"]},
    )
    body = await created.get_json()
    assert created.status_code == 201 and len(body["client_secret"]) > 30
    assert created.headers["Location"].endswith(f"/api/admin/clients/{body['client_id']}")
    shown = await (await client.get(f"/api/admin/clients/{body['client_id']}", headers=headers)).get_json()
    assert shown["name"] == "Reports" and shown["client_secret"] is None

    patched = await client.patch(
        f"/api/admin/clients/{body['client_id']}", headers=headers, json={"name": "Reports 2", "web_origins": None}
    )
    assert (await patched.get_json())["name"] == "Reports 2"
    found = await (await client.get("/api/admin/clients?q=reports", headers=headers)).get_json()
    assert [item["client_id"] for item in found["items"]] == [body["client_id"]]

    rotated = await client.post(f"/api/admin/clients/{body['client_id']}/rotate-secret", headers=headers)
    assert (await rotated.get_json())["client_secret"] != body["client_secret"]
    disabled = await client.post(f"/api/admin/clients/{body['client_id']}/disable", headers=headers)
    assert (await disabled.get_json())["changed"] is True

    stale = setup["token"](setup["staff"], auth_time=int(time.time()) - 3600)
    assert (await client.delete(f"/api/admin/clients/{body['client_id']}", headers=stale)).status_code == 401
    assert (await client.delete(f"/api/admin/clients/{body['client_id']}", headers=headers)).status_code == 204
    assert (await client.get(f"/api/admin/clients/{body['client_id']}", headers=headers)).status_code == 404
    assert (await client.delete(f"/api/admin/clients/{body['client_id']}", headers=headers)).status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "X", "client_type": "confidential", "redirect_uris": ["http://evil.example/cb"]}, "redirect_uris"),
        ({"name": "X", "client_type": "sometimes"}, "client_type"),
        ({"name": "X", "client_type": "public", "secret": "mine"}, "secret"),
        ({"client_type": "public"}, "name"),
        ({"name": "X", "client_type": "public", "grant_types": ["password"]}, "grant_types.0"),
    ],
)
async def test_a_bad_registration_names_its_field(
    client: Any, setup: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/admin/clients", headers=setup["token"](setup["staff"]), json=body)
    answer = await response.get_json()
    assert response.status_code == 400 and answer["error"] == "invalid_request"
    assert field in answer["fields"], answer


async def test_a_clients_identity_does_not_change(client: Any, setup: dict[str, Any]) -> None:
    robot = setup["robot"].client.id
    response = await client.patch(
        f"/api/admin/clients/{robot}", headers=setup["token"](setup["staff"]), json={"subject_type": "pairwise"}
    )
    assert response.status_code == 400 and "subject_type" in (await response.get_json())["fields"]


async def test_signing_keys_are_listed_rotated_and_purged(client: Any, setup: dict[str, Any]) -> None:
    headers = setup["token"](setup["staff"])
    before = await (await client.get("/api/admin/keys", headers=headers)).get_json()
    assert {key["alg"] for key in before["items"] if key["status"] == "active"} == {"RS256", "ES256", "Ed25519"}
    stale = setup["token"](setup["staff"], auth_time=int(time.time()) - 3600)
    assert (await client.post("/api/admin/keys/rotate", headers=stale, json={})).status_code == 401
    rotated = await client.post("/api/admin/keys/rotate", headers=headers, json={"algorithms": ["ES256"]})
    answer = await rotated.get_json()
    assert rotated.status_code == 200 and len(answer["created"]) == 1
    assert len(answer["items"]) == len(before["items"]) + 1
    purged = await client.post("/api/admin/keys/purge", headers=headers)
    assert (await purged.get_json()) == {"removed": 0}  # the retired key is still published


# -- the admin scope at authorization --------------------------------------------------------------


@pytest.mark.parametrize(("admin", "granted"), [(False, "openid"), (True, "openid admin")])
async def test_the_admin_scope_is_granted_to_administrators_only(
    client: Any, runtime: Any, admin: bool, granted: str
) -> None:
    from tests.oauth_helpers import PASSWORD, authorize, query_of

    email = "ops@example.com"
    await create_user(
        runtime.db, runtime.passwords, runtime.events, NewUser(email, PASSWORD, email_verified=True, is_admin=admin)
    )
    console = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="Console",
            client_type="public",
            redirect_uris=["https://console.example/cb"],
            scopes=["openid", "admin"],
            first_party=True,
        ),
    )
    response, verifier = await authorize(
        client, console.client.id, "https://console.example/cb", email=email, scope="openid admin"
    )
    code = query_of(response.headers["Location"])["code"]
    token = await client.post(
        "/token",
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://console.example/cb",
            "code_verifier": verifier,
            "client_id": console.client.id,
        },
    )
    body = await token.get_json()
    assert token.status_code == 200, body
    assert body["scope"] == granted  # RFC 6749 §5.1: the token says what it was granted
