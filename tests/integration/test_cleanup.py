"""`idp db cleanup` removes only rows that can no longer matter."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import func, select

from idp.cli import cli
from idp.storage.models import (
    Announcement,
    AuthorizationCode,
    KnownDevice,
    RefreshToken,
    RevokedAccessToken,
    RevokedGrant,
    SessionClient,
    utcnow,
)
from tests.oauth_helpers import code_flow, make_world


async def _counts(runtime) -> tuple[int, int]:
    async with runtime.db.session() as session:
        codes = (await session.execute(select(func.count()).select_from(AuthorizationCode))).scalar_one()
        refresh = (await session.execute(select(func.count()).select_from(RefreshToken))).scalar_one()
    return codes, refresh


async def test_cleanup_deletes_expired_rows_and_keeps_live_ones(client, runtime, cli_env) -> None:
    world = await make_world(runtime)
    await code_flow(client, world)  # live code (consumed) + live refresh token
    await code_flow(client, world)
    async with runtime.db.session() as session:
        code = (await session.execute(select(AuthorizationCode).limit(1))).scalar_one()
        code.expires_at = utcnow() - timedelta(days=2)
        token = (await session.execute(select(RefreshToken).limit(1))).scalar_one()
        token.family_expires_at = utcnow() - timedelta(seconds=1)
    assert await _counts(runtime) == (2, 2)
    # Two remembered browsers: one seen within the device cookie's 400 days, one not.
    async with runtime.db.session() as session:
        for digest, age in (("a" * 64, 399), ("b" * 64, 401)):
            seen = utcnow() - timedelta(days=age)
            session.add(
                KnownDevice(
                    user_id=world.user_id, device_digest=digest, label="Firefox", first_seen_at=seen, last_seen_at=seen
                )
            )

    # Revocations and session records: one past its end, one in force, of each kind.
    now = utcnow()
    async with runtime.db.session() as session:
        for name, end in (("old", now - timedelta(seconds=1)), ("live", now + timedelta(minutes=5))):
            session.add(RevokedAccessToken(jti=f"jti-{name}", expires_at=end))
            session.add(RevokedGrant(grant_id=f"grant-{name}", expires_at=end))
            session.add(SessionClient(sid=f"sid-{name}", user_id=world.user_id, client_id=world.web_id, expires_at=end))
    # Announcements between processes: one written 61 s ago (every process has read it), one now.
    async with runtime.db.session() as session:
        for message, age in (("old", 61), ("new", 0)):
            at = now - timedelta(seconds=age)
            session.add(Announcement(origin="x" * 32, channel="test", message=message, created_at=at))

    import asyncio

    result = await asyncio.to_thread(CliRunner().invoke, cli, ["db", "cleanup", "--json"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "authorization_codes": 1,
        "refresh_tokens": 1,
        "known_devices": 1,
        "announcements": 1,
        "revoked_access_tokens": 1,
        "revoked_grants": 1,
        "session_clients": 1,
        "signing_keys": 0,
    }
    assert await _counts(runtime) == (1, 1)
    async with runtime.db.session() as session:
        kept = set((await session.execute(select(KnownDevice.device_digest))).scalars())
    assert "a" * 64 in kept and "b" * 64 not in kept
    assert len(kept) == 2  # with the test browser's own, seen just now
    async with runtime.db.session() as session:
        assert set((await session.execute(select(RevokedAccessToken.jti))).scalars()) == {"jti-live"}
        assert set((await session.execute(select(RevokedGrant.grant_id))).scalars()) == {"grant-live"}
        assert "sid-old" not in set((await session.execute(select(SessionClient.sid))).scalars())
        relayed = select(Announcement.message).where(Announcement.channel == "test")
        assert set((await session.execute(relayed)).scalars()) == {"new"}
