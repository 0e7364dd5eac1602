"""Account deletion: everything the user owns is purged, their tokens stop working at once, relying
parties get back-channel logout, the audit trail keeps events but no personal data, and the user
is told by email. Another user's data is left exactly as it was."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from sqlalchemy import func, select, update

from idp.accounts.profile.deletion import delete_account
from idp.accounts.users import AccountError, NewUser, create_user
from idp.events import EventContext, set_context
from idp.mail import OutgoingEmail
from idp.oauth.logout import BackchannelNotifier
from idp.oauth.tokens import BACKCHANNEL_LOGOUT_EVENT, TokenInvalid
from idp.storage.models import (
    AuditEvent,
    Base,
    MfaCredential,
    OAuthClient,
    OneTimeToken,
    RecoveryCode,
    User,
    utcnow,
)
from tests.oauth_helpers import PASSWORD, World, add_user, basic, code_flow, jwt_parts, make_world

BCL_URI = "https://rp.example/backchannel-logout"
ALICE = "alice@example.com"
BOB = "bob@example.com"
ALICE_IP, ALICE_UA = "203.0.113.5", "Mozilla/5.0 (Alice's laptop)"
ADMIN_IP, ADMIN_UA = "192.0.2.10", "Mozilla/5.0 (Admin's desk)"


class FakeMailer:
    """Collects what would be sent (SMTP delivery is tested on its own)."""

    def __init__(self) -> None:
        self.sent: list[OutgoingEmail] = []

    async def send(self, message: OutgoingEmail) -> None:
        self.sent.append(message)

    async def close(self) -> None:
        pass


@dataclass
class Scene:
    alice: World
    bob: World
    alice_web: dict[str, Any]  # token response of the confidential client
    alice_spa: dict[str, Any]  # token response of the public client
    bob_web: dict[str, Any]
    bob_browser: Any
    deliveries: list[dict[str, str]] = field(default_factory=list)
    mailer: FakeMailer = field(default_factory=FakeMailer)


async def user_rows(runtime: Any, user_id: str) -> dict[str, int]:
    """Rows per table for the user: every table with a user_id column, and users itself."""
    counts: dict[str, int] = {}
    async with runtime.db.session() as session:
        for table in Base.metadata.sorted_tables:
            if "user_id" in table.c:
                query = select(func.count()).select_from(table).where(table.c.user_id == user_id)
                counts[table.name] = (await session.execute(query)).scalar_one()
        counts["users"] = (await session.execute(select(func.count()).where(User.id == user_id))).scalar_one()
    return counts


async def add_owned_rows(runtime: Any, user_id: str, *, recovery_codes: int, pending_email: str | None) -> None:
    now = utcnow()
    async with runtime.db.session() as session:
        session.add(MfaCredential(user_id=user_id, type="totp", name="phone", secret_encrypted="x", confirmed_at=now))
        for index in range(recovery_codes):
            session.add(RecoveryCode(user_id=user_id, code_hash=f"hash-{user_id}-{index}"))
        session.add(
            OneTimeToken(
                digest=f"{user_id[:8]}".ljust(64, "0"),
                purpose="change_email",
                user_id=user_id,
                email=pending_email,
                expires_at=now + timedelta(hours=1),
            )
        )


async def add_audit(runtime: Any, **fields: Any) -> None:
    async with runtime.db.session() as session:
        session.add(AuditEvent(**fields))


async def audit_rows(runtime: Any) -> list[AuditEvent]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(AuditEvent).order_by(AuditEvent.id))).scalars())


async def set_up(app: Any, client: Any, runtime: Any) -> Scene:
    deliveries: list[dict[str, str]] = []

    def recorder(request: httpx.Request) -> httpx.Response:
        form = {key: values[0] for key, values in parse_qs(request.content.decode()).items()}
        deliveries.append({"url": str(request.url), **form})
        return httpx.Response(200)

    await runtime.backchannel.close()
    runtime.backchannel = BackchannelNotifier(
        runtime.db, runtime.tokens, runtime.outbox, transport=httpx.MockTransport(recorder)
    )
    mailer = FakeMailer()
    runtime.accounts.mailer = mailer

    alice = await make_world(runtime, email=ALICE)
    async with runtime.db.session() as session:
        await session.execute(
            update(OAuthClient).where(OAuthClient.id == alice.web_id).values(backchannel_logout_uri=BCL_URI)
        )
    alice_web = await code_flow(client, alice)
    alice_spa = await code_flow(client, alice, confidential=False)
    await add_owned_rows(runtime, alice.user_id, recovery_codes=3, pending_email="alice.new@example.net")

    bob_id = await add_user(runtime, BOB)
    bob = World(bob_id, BOB, alice.spa_id, alice.web_id, alice.web_secret)
    bob_browser = app.test_client()
    bob_web = await code_flow(bob_browser, bob)
    await add_owned_rows(runtime, bob_id, recovery_codes=2, pending_email=None)

    # An audit trail with personal data in every place it can hide.
    await add_audit(
        runtime,
        event="email_change_requested",
        subject_id=alice.user_id,
        ip=ALICE_IP,
        user_agent=ALICE_UA,
        details={"new_email": "alice.new@example.net", "note": f"asked by {ALICE.upper()}", "via": "http"},
    )
    await add_audit(
        runtime,
        event="login_failed",
        outcome="failure",
        subject_id=alice.user_id,
        ip="198.51.100.66",
        details={"reason": "invalid_credentials", "tried": [ALICE, "other"], "via": "http"},
    )
    # Alice acting on Bob (say, as an administrator): her request data goes, Bob's row stays his.
    await add_audit(
        runtime,
        event="user_updated",
        actor_id=alice.user_id,
        subject_id=bob_id,
        ip=ALICE_IP,
        user_agent=ALICE_UA,
        details={"changed": ["name"], "by": ALICE, "via": "http"},
    )
    await add_audit(
        runtime,
        event="email_change_requested",
        subject_id=bob_id,
        ip="198.51.100.9",
        user_agent="Bob's phone",
        details={"new_email": "bob.new@example.net", "via": "http"},
    )
    return Scene(alice, bob, alice_web, alice_spa, bob_web, bob_browser, deliveries, mailer)


def as_http_request(ip: str, user_agent: str, actor_id: str | None = None) -> None:
    """What the HTTP layer attaches to events published while serving a request."""
    set_context(EventContext(ip=ip, user_agent=user_agent, request_id="req-1", actor_id=actor_id))


async def userinfo_status(client: Any, access_token: str) -> int:
    response = await client.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    return int(response.status_code)


async def refresh(client: Any, world: World, refresh_token: str) -> Any:
    return await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers=basic(world.web_id, world.web_secret),
    )


# -- the user deletes their own account ------------------------------------------------------------


async def test_deletion_purges_everything_of_the_user_and_nothing_else(app: Any, client: Any, runtime: Any) -> None:
    scene = await set_up(app, client, runtime)
    alice_before = await user_rows(runtime, scene.alice.user_id)
    bob_before = await user_rows(runtime, scene.bob.user_id)
    expected_alice = {
        "authorization_codes": 2,
        "refresh_tokens": 2,
        "consents": 2,
        "known_devices": 1,  # the browser that signed in
        "mfa_credentials": 1,
        "recovery_codes": 3,
        "one_time_tokens": 1,
        "session_clients": 2,  # her session, joined by both clients (back-channel logout)
        "users": 1,
    }
    assert alice_before == expected_alice
    assert bob_before == {
        **expected_alice,
        "authorization_codes": 1,
        "refresh_tokens": 1,
        "consents": 1,
        "recovery_codes": 2,
        "session_clients": 1,
    }

    as_http_request(ALICE_IP, ALICE_UA)
    report = await delete_account(runtime.accounts, scene.alice.user_id, password=PASSWORD)

    assert report.user_id == scene.alice.user_id
    assert report.sessions_ended == 1
    assert report.rows_deleted == alice_before
    assert await user_rows(runtime, scene.alice.user_id) == dict.fromkeys(alice_before, 0)
    assert await user_rows(runtime, scene.bob.user_id) == bob_before
    async with runtime.db.session() as session:
        bob_user = await session.get(User, scene.bob.user_id)
        assert bob_user is not None and not bob_user.disabled and bob_user.email == BOB


async def test_tokens_and_sessions_stop_working_at_once(app: Any, client: Any, runtime: Any) -> None:
    scene = await set_up(app, client, runtime)
    assert (await client.get("/account")).status_code == 200
    for tokens in (scene.alice_web, scene.alice_spa):
        assert await userinfo_status(client, tokens["access_token"]) == 200

    await delete_account(runtime.accounts, scene.alice.user_id, password=PASSWORD)

    for tokens in (scene.alice_web, scene.alice_spa):
        assert await userinfo_status(client, tokens["access_token"]) == 401
        # Denylisted, not merely orphaned: a resource server that checks tokens by introspection
        # or the denylist refuses them too, whatever it knows of users.
        with pytest.raises(TokenInvalid, match="revoked"):
            await runtime.tokens.verify_access_token(tokens["access_token"])
    refreshed = await refresh(client, scene.alice, scene.alice_web["refresh_token"])
    assert refreshed.status_code == 400
    assert (await refreshed.get_json())["error"] == "invalid_grant"
    spa_refresh = await client.post(
        "/token",
        form={
            "grant_type": "refresh_token",
            "refresh_token": scene.alice_spa["refresh_token"],
            "client_id": scene.alice.spa_id,
        },
    )
    assert (await spa_refresh.get_json())["error"] == "invalid_grant"
    home = await client.get("/account")
    assert home.status_code == 303
    assert home.headers["Location"] == "/login?return_to=/account"

    # Bob is still signed in and his tokens still work.
    assert await userinfo_status(scene.bob_browser, scene.bob_web["access_token"]) == 200
    assert (await scene.bob_browser.get("/account")).status_code == 200
    bob_refresh = await refresh(scene.bob_browser, scene.bob, scene.bob_web["refresh_token"])
    assert bob_refresh.status_code == 200


async def test_relying_parties_get_back_channel_logout(app: Any, client: Any, runtime: Any) -> None:
    scene = await set_up(app, client, runtime)
    sid = jwt_parts(scene.alice_web["id_token"])[1]["sid"]

    await delete_account(runtime.accounts, scene.alice.user_id, password=PASSWORD)
    await runtime.backchannel.drain()

    # Only the client with a back-channel endpoint is told; the SPA has none.
    assert [delivery["url"] for delivery in scene.deliveries] == [BCL_URI]
    claims = runtime.tokens.peek_claims(scene.deliveries[0]["logout_token"])
    assert claims is not None
    assert claims["sub"] == scene.alice.user_id
    assert claims["sid"] == sid
    assert claims["aud"] == scene.alice.web_id
    assert BACKCHANNEL_LOGOUT_EVENT in claims["events"]
    assert "nonce" not in claims


async def test_back_channel_logout_uses_the_pairwise_sub(app: Any, client: Any, runtime: Any) -> None:
    deliveries: list[str] = []

    def recorder(request: httpx.Request) -> httpx.Response:
        deliveries.append(parse_qs(request.content.decode())["logout_token"][0])
        return httpx.Response(200)

    await runtime.backchannel.close()
    runtime.backchannel = BackchannelNotifier(
        runtime.db, runtime.tokens, runtime.outbox, transport=httpx.MockTransport(recorder)
    )
    world = await make_world(runtime)
    async with runtime.db.session() as session:
        await session.execute(
            update(OAuthClient)
            .where(OAuthClient.id == world.web_id)
            .values(backchannel_logout_uri=BCL_URI, subject_type="pairwise")
        )
    tokens = await code_flow(client, world)
    pairwise_sub = jwt_parts(tokens["id_token"])[1]["sub"]
    assert pairwise_sub != world.user_id

    await delete_account(runtime.accounts, world.user_id, password=PASSWORD)
    await runtime.backchannel.drain()

    assert len(deliveries) == 1
    claims = runtime.tokens.peek_claims(deliveries[0])
    assert claims is not None and claims["sub"] == pairwise_sub


async def test_audit_trail_keeps_events_but_no_personal_data(app: Any, client: Any, runtime: Any) -> None:
    scene = await set_up(app, client, runtime)
    alice_id, bob_id = scene.alice.user_id, scene.bob.user_id
    before = await audit_rows(runtime)
    bob_own_before = [
        (row.id, row.event, row.ip, row.user_agent, row.details)
        for row in before
        if row.subject_id == bob_id and row.actor_id != alice_id
    ]

    as_http_request(ALICE_IP, ALICE_UA)
    await delete_account(runtime.accounts, alice_id, password=PASSWORD)

    after = await audit_rows(runtime)
    # Nothing was removed: each event, its time and outcome are still there.
    assert [(row.id, row.event, row.outcome, row.occurred_at) for row in after[: len(before)]] == [
        (row.id, row.event, row.outcome, row.occurred_at) for row in before
    ]
    events = [row.event for row in after[len(before) :]]
    assert events.count("token_revoked") == 2  # one per grant: Web App and SPA
    assert events[-2:] == ["account_deletion_started", "account_deleted"]

    alices = [row for row in after if alice_id in (row.subject_id, row.actor_id)]
    assert len(alices) > 10
    for row in alices:
        assert row.ip is None and row.user_agent is None, row.event
        text = json.dumps(row.details).casefold()
        assert ALICE not in text and "alice.new@example.net" not in text, row.details

    deleted = [row for row in after if row.event == "account_deleted"]
    assert len(deleted) == 1
    assert deleted[0].subject_id == alice_id
    assert deleted[0].actor_id is None
    assert deleted[0].details == {"via": "http"}
    started = next(row for row in after if row.event == "account_deletion_started")
    assert started.details == {"sessions_ended": 1, "via": "http"}
    revocations = [row for row in after if row.event == "token_revoked" and row.subject_id == alice_id]
    assert {row.details["reason"] for row in revocations} == {"account_deleted"}
    assert {row.client_id for row in revocations} == {scene.alice.web_id, scene.alice.spa_id}

    # Personal values are removed, everything else in the details is kept.
    by_event = {row.event: row for row in alices if row.event in ("email_change_requested", "login_failed")}
    assert by_event["email_change_requested"].details == {"via": "http"}
    assert by_event["login_failed"].details == {"reason": "invalid_credentials", "tried": ["other"], "via": "http"}
    # Alice also acted on her own account (the audit names the signed-in actor); the row where she
    # acted on Bob keeps its non-personal details.
    [acted_on_bob] = [row for row in after if row.actor_id == alice_id and row.subject_id == bob_id]
    assert acted_on_bob.details == {"changed": ["name"], "via": "http"}

    # Bob's own rows are untouched.
    assert [
        (row.id, row.event, row.ip, row.user_agent, row.details)
        for row in after
        if row.subject_id == bob_id and row.actor_id != alice_id
    ] == bob_own_before
    assert any(row.ip == "198.51.100.9" and row.details["new_email"] == "bob.new@example.net" for row in after)


async def test_the_user_is_told_by_email(app: Any, client: Any, runtime: Any) -> None:
    scene = await set_up(app, client, runtime)
    await delete_account(runtime.accounts, scene.alice.user_id, password=PASSWORD)
    await runtime.outbox.drain()
    assert [(message.template, message.to) for message in scene.mailer.sent] == [("account_deleted", ALICE)]
    assert "deleted" in scene.mailer.sent[0].subject


# -- refusals: nothing changes ---------------------------------------------------------------------


async def test_wrong_password_changes_nothing(app: Any, client: Any, runtime: Any) -> None:
    scene = await set_up(app, client, runtime)
    alice_before = await user_rows(runtime, scene.alice.user_id)
    bob_before = await user_rows(runtime, scene.bob.user_id)
    audit_before = len(await audit_rows(runtime))

    for password in ("not-the-password", "", None):
        with pytest.raises(AccountError) as raised:
            await delete_account(runtime.accounts, scene.alice.user_id, password=password)
        assert raised.value.field == "password"
        assert raised.value.message == "The password is not correct."

    assert await user_rows(runtime, scene.alice.user_id) == alice_before
    assert await user_rows(runtime, scene.bob.user_id) == bob_before
    # Only the failed password checks are recorded, as failed sign-ins are (review M3).
    added = (await audit_rows(runtime))[audit_before:]
    assert [(row.event, row.subject_id, row.details["reason"]) for row in added] == [
        ("login_failed", scene.alice.user_id, "invalid_credentials")
    ] * 3
    async with runtime.db.session() as session:
        alice = await session.get(User, scene.alice.user_id)
        assert alice is not None and not alice.disabled
    assert (await client.get("/account")).status_code == 200
    assert await userinfo_status(client, scene.alice_web["access_token"]) == 200
    await runtime.outbox.drain()
    assert scene.mailer.sent == []
    await runtime.backchannel.drain()
    assert scene.deliveries == []


async def test_account_without_password_cannot_delete_itself_yet(runtime: Any) -> None:
    user = await create_user(
        runtime.db, runtime.passwords, runtime.events, NewUser(email="nopw@example.com", password=None)
    )
    with pytest.raises(AccountError) as raised:
        await delete_account(runtime.accounts, user.id, password="anything-at-all-123")
    assert raised.value.field == "password"
    assert (await user_rows(runtime, user.id))["users"] == 1


async def test_unknown_or_already_deleted_account(runtime: Any) -> None:
    world = await make_world(runtime)
    runtime.accounts.mailer = FakeMailer()
    await delete_account(runtime.accounts, world.user_id, password=PASSWORD)
    with pytest.raises(AccountError) as raised:
        await delete_account(runtime.accounts, world.user_id, password=PASSWORD)
    assert raised.value.field == "account"


# -- administrators, pictures ----------------------------------------------------------------------


async def test_admin_deletion_needs_no_password_and_records_the_admin(runtime: Any) -> None:
    mailer = FakeMailer()
    runtime.accounts.mailer = mailer
    admin_id = await add_user(runtime, "admin@example.com")
    user_id = await add_user(runtime, "carol@example.com", verified=False)
    await add_audit(runtime, event="login_failed", subject_id=user_id, ip=ALICE_IP, user_agent=ALICE_UA, details={})

    as_http_request(ADMIN_IP, ADMIN_UA, actor_id=admin_id)
    report = await delete_account(
        runtime.accounts, user_id, password=None, confirm_with_password=False, actor_id=admin_id
    )

    assert report.rows_deleted["users"] == 1
    assert await user_rows(runtime, user_id) == dict.fromkeys(report.rows_deleted, 0)
    rows = await audit_rows(runtime)
    deleted = next(row for row in rows if row.event == "account_deleted")
    # The administrator's request data is theirs, kept for accountability; the user's is gone.
    assert (deleted.actor_id, deleted.subject_id, deleted.ip, deleted.user_agent) == (
        admin_id,
        user_id,
        ADMIN_IP,
        ADMIN_UA,
    )
    failed = next(row for row in rows if row.event == "login_failed")
    assert (failed.ip, failed.user_agent) == (None, None)
    # An unverified address isn't known to be the owner's: no mail to it.
    await runtime.outbox.drain()
    assert mailer.sent == []
    assert (await user_rows(runtime, admin_id))["users"] == 1


async def test_stored_picture_is_deleted_but_not_an_external_one(runtime: Any) -> None:
    runtime.accounts.mailer = FakeMailer()
    deleted: list[str] = []

    async def delete_blob(name: str) -> None:
        deleted.append(name)

    stored = await add_user(runtime, "pic@example.com")
    external = await add_user(runtime, "ext@example.com")
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == stored).values(picture="9f2c41.webp"))
        await session.execute(update(User).where(User.id == external).values(picture="https://cdn.example/ext.png"))
    await delete_account(runtime.accounts, stored, password=PASSWORD, delete_blob=delete_blob)
    await delete_account(runtime.accounts, external, password=PASSWORD, delete_blob=delete_blob)
    assert deleted == ["9f2c41.webp"]


async def test_a_failing_picture_store_does_not_undo_the_deletion(
    runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mailer = FakeMailer()
    runtime.accounts.mailer = mailer

    async def broken(name: str) -> None:
        raise OSError("disk gone")

    user_id = await add_user(runtime, "pic@example.com")
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == user_id).values(picture="9f2c41.webp"))
    await delete_account(runtime.accounts, user_id, password=PASSWORD, delete_blob=broken)
    assert (await user_rows(runtime, user_id))["users"] == 0
    await runtime.outbox.drain()
    assert [message.template for message in mailer.sent] == ["account_deleted"]
    assert any(record.getMessage() == "could not delete the picture of a deleted account" for record in caplog.records)
