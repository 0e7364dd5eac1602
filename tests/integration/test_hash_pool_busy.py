"""When password hashing is saturated (idp.security.passwords.HashPoolBusy: every thread busy and
the queue full) a sign-in is answered 503 with Retry-After, signs nobody in and counts no failed
attempt; once the pool has room the same sign-in works."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from idp.storage.models import AuditEvent
from tests.oauth_helpers import PASSWORD, csrf_from, make_world


async def audit_count(runtime: Any, event: str) -> int:
    async with runtime.db.session() as session:
        query = select(func.count()).select_from(AuditEvent).where(AuditEvent.event == event)
        return int((await session.execute(query)).scalar_one())


async def test_a_sign_in_while_hashing_is_saturated_is_refused_with_503_and_changes_nothing(
    client: Any, runtime: Any
) -> None:
    world = await make_world(runtime)
    page = await client.get("/login")
    form = {"email": world.email, "password": PASSWORD, "csrf_token": csrf_from(await page.get_data(as_text=True))}
    hasher = runtime.passwords
    hasher.in_flight = hasher._admitted  # every thread busy, the queue full
    try:
        response = await client.post("/login", form=form)
    finally:
        hasher.in_flight = 0
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "Try again in a few seconds" in await response.get_data(as_text=True)
    assert not any(cookie.name == "idp_session" for cookie in client.cookie_jar or [])
    assert await audit_count(runtime, "login_failed") == 0 and await audit_count(runtime, "login_succeeded") == 0
    response = await client.post("/login", form=form)
    assert response.status_code == 303
    assert await audit_count(runtime, "login_succeeded") == 1
