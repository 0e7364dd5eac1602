"""The database goes away while idp runs (issue 15): requests that need it answer 503
temporarily_unavailable with Retry-After, not 500; /healthz stays 200, /readyz names the
database, and JWKS, discovery and token checks keep using the last known key set."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from idp.storage.db import Database, DatabaseUnavailable
from tests.oauth_helpers import basic, make_world

UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1


async def test_an_unreachable_database_is_database_unavailable_not_a_driver_error() -> None:
    db = Database(UNREACHABLE)
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            async with db.session() as session:
                await session.execute(text("SELECT 1"))
        assert "127.0.0.1:1" in str(caught.value)
    finally:
        await db.close()


async def test_a_statement_error_is_not_an_outage(runtime: Any) -> None:
    with pytest.raises(Exception) as caught:
        async with runtime.db.session() as session:
            await session.execute(text("SELECT * FROM no_such_table"))
    assert not isinstance(caught.value, DatabaseUnavailable)


async def test_during_an_outage_tokens_fail_softly_and_keys_stay_published(
    client: Any, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await make_world(runtime)
    jwks_before = await (await client.get("/jwks")).get_json()
    discovery_before = await (await client.get("/.well-known/openid-configuration")).get_json()
    fresh = runtime.tokens.issue_access_token(subject=world.user_id, client_id=world.web_id, scope="openid")

    dead = create_async_engine(UNREACHABLE)
    # Restored by hand, before the app's teardown closes the (real) engine.
    working = runtime.db._sessionmaker, runtime.db.engine
    runtime.db._sessionmaker = async_sessionmaker(dead, expire_on_commit=False)
    runtime.db.engine = dead  # readiness pings it
    monkeypatch.setattr(runtime.keys, "_loaded_at", 0.0)  # the key set is due for a reload
    try:
        token = await client.post(
            "/token", form={"grant_type": "client_credentials"}, headers=basic(world.web_id, world.web_secret)
        )
        body = await token.get_json()
        assert token.status_code == 503 and body["error"] == "temporarily_unavailable", body
        assert token.headers["Retry-After"] == "5"
        assert "postgres" not in str(body) and "127.0.0.1:1" not in str(body)

        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and (await ready.get_json())["failed"] == ["database"]
        jwks = await client.get("/jwks")
        assert jwks.status_code == 200 and await jwks.get_json() == jwks_before
        discovery = await client.get("/.well-known/openid-configuration")
        assert discovery.status_code == 200 and await discovery.get_json() == discovery_before
        # An access token is still checked against the last known keys (introspection of its
        # signature needs no database; the account lookup for userinfo does, and says so).
        info = await client.get("/userinfo", headers={"Authorization": f"Bearer {fresh.value}"})
        assert info.status_code == 503 and info.headers["Retry-After"] == "5"
    finally:
        runtime.db._sessionmaker, runtime.db.engine = working
        await dead.dispose()


@pytest.mark.parametrize(
    ("sqlstate", "outage"),
    [
        ("57P03", True),  # cannot connect now: starting up, or a standby in recovery
        ("57P01", True),  # admin shutdown
        ("08006", True),  # connection failure
        ("53300", True),  # too many connections
        ("23505", False),  # a unique violation is the request's fault, not an outage
        ("42P01", False),  # undefined table: a bug, a 500
    ],
)
def test_a_server_that_cannot_take_connections_now_is_an_outage(sqlstate: str, outage: bool) -> None:
    """PostgreSQL refusing connections while it starts (57P03) was a 500: SQLAlchemy raises a bare
    DBAPIError for it, not an OperationalError, and doesn't mark the connection invalidated."""
    from sqlalchemy.exc import DBAPIError

    from idp.storage.db import _lost_connection

    class Refusal(Exception):
        def __init__(self, code: str) -> None:
            super().__init__("the database system is not yet accepting connections")
            self.sqlstate = self.pgcode = code

    error = DBAPIError(None, None, Refusal(sqlstate))
    assert _lost_connection(error, "postgresql") is outage
