"""POST /api/account/password: the current password checked as a sign-in attempt, the new one
against the policy; the user's other sessions end, the one the token came from stays, and the
new password is the one that signs in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from idp.storage.models import AuditEvent, User
from tests.integration.test_account_api import api_world, bearer, token_for
from tests.oauth_helpers import PASSWORD, login

NEW_PASSWORD = "harbor-quartz-willow-8123"


async def user_row(runtime: Any, user_id: str) -> dict[str, Any]:
    async with runtime.db.session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return {"password_hash": user.password_hash, "password_changed_at": user.password_changed_at}


async def change(client: Any, token: str, body: Any) -> tuple[Any, dict[str, Any]]:
    response = await client.post("/api/account/password", json=body, headers=bearer(token))
    return response, await response.get_json()


async def test_the_password_changes_and_other_sessions_end(app: Any, client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)  # signs this browser in: the session the token is from
    elsewhere = app.test_client()
    assert (await login(elsewhere, world.email)).status_code == 303
    before = (await user_row(runtime, world.user_id))["password_hash"]

    response, body = await change(client, token, {"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert response.status_code == 200 and body == {"sessions_ended": 1}
    assert response.headers["Cache-Control"] == "no-store"
    assert (await user_row(runtime, world.user_id))["password_hash"] != before
    assert (await client.get("/account")).status_code == 200  # the token's session stays
    assert (await elsewhere.get("/account")).status_code == 303  # the other one ended
    assert (await login(app.test_client(), world.email, NEW_PASSWORD)).status_code == 303
    assert (await login(app.test_client(), world.email, PASSWORD)).status_code == 401
    async with runtime.db.session() as session:
        rows = (await session.execute(select(AuditEvent).where(AuditEvent.event == "password_changed"))).scalars()
        [row] = list(rows)
    assert row.subject_id == world.user_id and row.details["sessions_ended"] == 1


async def test_refusals_name_their_field_and_change_nothing(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    before = await user_row(runtime, world.user_id)
    for body, field in (
        ({"current_password": "not it", "new_password": NEW_PASSWORD}, "current_password"),
        ({"current_password": PASSWORD, "new_password": PASSWORD}, "new_password"),
        ({"current_password": PASSWORD, "new_password": "short"}, "new_password"),
        ({"current_password": PASSWORD, "new_password": "password123456789"}, "new_password"),
        ({"current_password": PASSWORD}, "new_password"),
        ({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm": True}, "confirm"),
    ):
        response, answer = await change(client, token, body)
        assert response.status_code == 400, (body, answer)
        assert answer["error"] == "invalid_request" and answer["field"] == field, (body, answer)
        assert field in answer["fields"]
    assert await user_row(runtime, world.user_id) == before
    async with runtime.db.session() as session:
        failed = (await session.execute(select(AuditEvent).where(AuditEvent.event == "login_failed"))).scalars()
        assert [row.subject_id for row in failed] == [world.user_id]  # the wrong current password


async def test_guessing_the_current_password_is_limited(client: Any, runtime: Any) -> None:
    world = await api_world(runtime)
    token = await token_for(client, world)
    statuses = []
    for _ in range(runtime.settings.rate_limits.login_per_account.requests + 1):
        response, _body = await change(client, token, {"current_password": "guess", "new_password": NEW_PASSWORD})
        statuses.append(response.status_code)
    assert statuses[-1] == 429 and set(statuses) <= {400, 429}
