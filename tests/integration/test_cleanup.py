"""`idp db cleanup` removes only rows that can no longer matter."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import func, select

from idp.cli import cli
from idp.storage.models import AuthorizationCode, RefreshToken, utcnow
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

    import asyncio

    result = await asyncio.to_thread(CliRunner().invoke, cli, ["db", "cleanup", "--json"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"authorization_codes": 1, "refresh_tokens": 1, "signing_keys": 0}
    assert await _counts(runtime) == (1, 1)
