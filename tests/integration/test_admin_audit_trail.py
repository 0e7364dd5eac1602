"""Every state-changing admin route, of the pages and of the API, found by walking the URL map:
each is done once and must leave its audit row naming the administrator as actor, the account or
client it acted on, and the door ("via": admin_page or admin_api). A new admin action fails here
until it is added to the table below with the event it writes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from idp.oauth.clients import ClientSpec, create_client
from idp.storage.models import AuditEvent, OAuthClient, SigningKey, User
from tests.mfa_helpers import Clock, enable_totp, text, totp_answer
from tests.oauth_helpers import add_user, csrf_from, login, make_world

pytestmark = pytest.mark.usefixtures("clock")

STATE_CHANGING = {"POST", "PATCH", "PUT", "DELETE"}
CLIENT_FORM = {
    "name": "Audited",
    "client_type": "confidential",
    "application_type": "web",
    "subject_type": "public",
    "redirect_uris": "https://audited.example/cb",
    "grant_authorization_code": "yes",
    "scopes": "openid",
}


@dataclass
class Case:
    event: str
    target: str  # "user", "client" or "" (no target: keys)
    prepare: str = ""  # what the target must be first (see Stage.prepare)
    body: dict[str, Any] | None = None


# endpoint -> what doing it must write
PAGE_ACTIONS = {
    "admin.user_disable": Case("account_disabled", "user"),
    "admin.user_enable": Case("account_enabled", "user", "disabled"),
    "admin.user_verify_email": Case("email_verified", "user", "unverified"),
    "admin.user_send_reset": Case("password_reset_requested", "user"),
    "admin.user_reset_mfa": Case("second_factors_reset", "user", "totp"),
    "admin.user_end_sessions": Case("session_ended", "user", "signed_in"),
    "admin.user_end_session": Case("session_ended", "user", "signed_in"),
    "admin.user_unlock": Case("account_unlocked", "user", "failed_sign_in"),
    "admin.user_grant_admin": Case("admin_granted", "user"),
    "admin.user_revoke_admin": Case("admin_revoked", "user", "admin"),
    "admin.user_delete": Case("account_deleted", ""),  # the purge scrubs the subject from the trail
    "admin.client_new": Case("client_created", "new_client", body=CLIENT_FORM),
    "admin.client_edit": Case("client_updated", "client", body={**CLIENT_FORM, "name": "Renamed"}),
    "admin.client_rotate_secret": Case("client_secret_rotated", "client"),
    "admin.client_disable": Case("client_disabled", "client"),
    "admin.client_enable": Case("client_enabled", "client", "disabled"),
    "admin.client_delete": Case("client_deleted", "client"),
    "admin.keys_rotate": Case("signing_keys_rotated", ""),
    "admin.keys_purge": Case("signing_keys_purged", "", "expired_key"),
}
API_ACTIONS = {
    "admin_api.disable_user": Case("account_disabled", "user"),
    "admin_api.enable_user": Case("account_enabled", "user", "disabled"),
    "admin_api.verify_user_email": Case("email_verified", "user", "unverified"),
    "admin_api.reset_mfa": Case("second_factors_reset", "user", "totp"),
    "admin_api.end_sessions": Case("session_ended", "user", "signed_in", body={}),
    "admin_api.unlock_user": Case("account_unlocked", "user", "failed_sign_in"),
    "admin_api.grant_admin": Case("admin_granted", "user"),
    "admin_api.revoke_admin": Case("admin_revoked", "user", "admin"),
    "admin_api.delete_user": Case("account_deleted", ""),
    "admin_api.create_client_route": Case(
        "client_created",
        "new_client",
        body={"name": "Audited", "client_type": "public", "redirect_uris": ["https://a.example/cb"]},
    ),
    "admin_api.update_client_route": Case("client_updated", "client", body={"name": "Renamed"}),
    "admin_api.rotate_secret": Case("client_secret_rotated", "client"),
    "admin_api.disable_client": Case("client_disabled", "client"),
    "admin_api.enable_client": Case("client_enabled", "client", "disabled"),
    "admin_api.delete_client_route": Case("client_deleted", "client"),
    "admin_api.rotate_keys": Case("signing_keys_rotated", "", body={}),
    "admin_api.purge_keys": Case("signing_keys_purged", "", "expired_key"),
}


def state_changing(app: Any, prefix: str) -> dict[str, tuple[str, str]]:
    found = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(prefix):
            for method in (rule.methods or set()) & STATE_CHANGING:
                found[rule.endpoint] = (method, rule.rule)
    return found


def test_the_tables_name_every_state_changing_admin_route(app: Any) -> None:
    assert set(state_changing(app, "admin.")) == set(PAGE_ACTIONS)
    assert set(state_changing(app, "admin_api.")) == set(API_ACTIONS)


@dataclass
class Stage:
    app: Any
    runtime: Any
    clock: Clock

    async def user(self, prepare: str) -> tuple[str, str]:
        """A target account in the state the action needs; (its id, a sample session id)."""
        email = f"target-{time.monotonic_ns()}@example.com"
        user_id = await add_user(self.runtime, email, verified=prepare != "unverified", disabled=prepare == "disabled")
        sid = "none"
        if prepare == "admin":
            async with self.runtime.db.session() as session:
                await session.execute(update(User).where(User.id == user_id).values(is_admin=True))
        if prepare == "totp":
            await enable_totp(self.runtime, user_id, self.clock)
        if prepare == "signed_in":
            assert (await login(self.app.test_client(), email)).status_code == 303
            [sid] = [item["id"] for item in await self._sessions(user_id)]
        if prepare == "failed_sign_in":
            await self.runtime.lockout.failed(email.casefold(), "203.0.113.9")
        return user_id, sid

    async def _sessions(self, user_id: str) -> list[dict[str, Any]]:
        from idp.accounts.sessions.store import describe_all

        return await describe_all(self.runtime.sessions, self.runtime.db, user_id, current_sid=None)

    async def client(self, prepare: str) -> str:
        created = await create_client(
            self.runtime.db,
            self.runtime.events,
            ClientSpec(name="Target", client_type="confidential", redirect_uris=["https://t.example/cb"]),
        )
        if prepare == "disabled":
            async with self.runtime.db.session() as session:
                await session.execute(
                    update(OAuthClient).where(OAuthClient.id == created.client.id).values(disabled=True)
                )
        return created.client.id

    async def expired_key(self) -> None:
        await self.runtime.keys.rotate(["ES256"])
        async with self.runtime.db.session() as session:
            past = datetime.now(UTC) - timedelta(days=1)
            await session.execute(update(SigningKey).where(SigningKey.status == "retired").values(publish_until=past))


async def rows_of(runtime: Any, event: str) -> list[AuditEvent]:
    async with runtime.db.session() as session:
        query = select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)
        return list((await session.execute(query)).scalars())


async def check_trail(
    runtime: Any,
    stage: Stage,
    endpoint: str,
    case: Case,
    rule: str,
    do: Callable[[str, Case], Awaitable[Any]],
    *,
    actor: str,
    via: str,
) -> None:
    user_id, sid, client_id = "", "none", ""
    if case.target == "user":
        user_id, sid = await stage.user(case.prepare)
    elif case.target == "client":
        client_id = await stage.client(case.prepare)
    elif endpoint.endswith(("user_delete", "delete_user")):
        user_id, sid = await stage.user("")
    if case.prepare == "expired_key":
        await stage.expired_key()
    path = rule.replace("<user_id>", user_id).replace("<client_id>", client_id).replace("<sid>", sid)
    before = {row.id for row in await rows_of(runtime, case.event)}
    answer = await do(path, case)
    assert answer.status_code < 400, (endpoint, answer.status_code, await text(answer))
    new = [row for row in await rows_of(runtime, case.event) if row.id not in before]
    assert new, f"{endpoint}: no {case.event} row"
    row = new[-1]
    assert row.actor_id == actor and row.details.get("via") == via, (endpoint, row.actor_id, row.details)
    if case.target == "user":
        assert row.subject_id == user_id, endpoint
    if case.target == "client":
        assert row.client_id == client_id, endpoint
    if case.target == "new_client":
        assert row.client_id, endpoint


async def test_every_page_action_is_audited_with_the_administrator(app: Any, runtime: Any, clock: Clock) -> None:
    admin = await make_world(runtime, email="grace@example.com")
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == admin.user_id).values(is_admin=True))
    secret, _ = await enable_totp(runtime, admin.user_id, clock)
    browser = app.test_client()
    await login(browser, admin.email)
    assert (await totp_answer(secret, clock)(browser)).status_code == 303
    stage = Stage(app, runtime, clock)

    async def submit(path: str, case: Case) -> Any:
        form_page = await browser.get(path)  # the confirmation page or the form, with its token
        token = csrf_from(await text(form_page))
        return await browser.post(path, form={"csrf_token": token, **(case.body or {})})

    routes = state_changing(app, "admin.")
    for endpoint, case in PAGE_ACTIONS.items():
        _, rule = routes[endpoint]
        await check_trail(runtime, stage, endpoint, case, rule, submit, actor=admin.user_id, via="admin_page")


async def test_every_api_action_is_audited_with_the_machine_client(app: Any, runtime: Any, clock: Clock) -> None:
    robot = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(name="Robot", client_type="confidential", grant_types=["client_credentials"], scopes=["admin"]),
    )
    issued = runtime.tokens.issue_access_token(subject=robot.client.id, client_id=robot.client.id, scope="admin")
    headers = {"Authorization": f"Bearer {issued.value}"}
    http = app.test_client()
    stage = Stage(app, runtime, clock)

    async def call(path: str, case: Case) -> Any:
        method, _ = routes[endpoint]
        return await http.open(path, method=method, headers=headers, json=case.body)

    routes = state_changing(app, "admin_api.")
    for endpoint, case in API_ACTIONS.items():
        _, rule = routes[endpoint]
        await check_trail(
            runtime, stage, endpoint, case, rule, call, actor=f"client:{robot.client.id}", via="admin_api"
        )
