"""Pooled PostgreSQL connections: none is pinged while in steady use (the ping was half of a token
request's round trips), and one idle long enough to have been dropped by the server is checked
and replaced before use, so a database restart costs no request an error.

Needs PostgreSQL (IDP_TEST_DATABASE_URL); SQLite has no server to drop connections.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from sqlalchemy import text

from idp.storage import db as db_module
from idp.storage.db import Database, DatabaseUnavailable

URL = os.environ.get("IDP_TEST_DATABASE_URL", "")
pytestmark = pytest.mark.skipif(not URL.startswith("postgresql"), reason="needs PostgreSQL (IDP_TEST_DATABASE_URL)")


@pytest.fixture
async def database(monkeypatch: pytest.MonkeyPatch) -> Any:
    database = Database(URL)
    pings: list[int] = []
    real_ping = database.engine.dialect.do_ping

    def counted(connection: Any) -> bool:
        pings.append(1)
        return bool(real_ping(connection))

    monkeypatch.setattr(database.engine.dialect, "do_ping", counted)
    yield database, pings
    await database.close()


async def select_one(database: Database) -> int:
    async with database.session() as session:
        return int((await session.execute(text("SELECT 1"))).scalar_one())


async def pooled_pid(database: Database) -> int:
    async with database.session() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def drop(pid: int) -> None:
    """What a database restart does to a pooled connection: the server closes it (this one only)."""
    other = Database(URL)
    try:
        async with other.engine.connect() as admin:
            assert (await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar_one()
    finally:
        await other.close()
    await asyncio.sleep(0.1)


async def test_connections_in_steady_use_are_not_pinged(database: Any) -> None:
    db, pings = database
    for _ in range(20):
        assert await select_one(db) == 1
    assert pings == []


async def test_an_idle_connection_dropped_by_the_server_is_replaced(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, pings = database
    pid = await pooled_pid(db)
    monkeypatch.setattr(db_module, "IDLE_PING_AFTER", 0.05)
    await drop(pid)
    assert await select_one(db) == 1  # pinged, found dead, replaced: no error
    assert pings


async def test_without_the_idle_check_a_dropped_connection_fails_the_request(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: what the check prevents (the request would get a 503)."""
    db, _ = database
    pid = await pooled_pid(db)
    monkeypatch.setattr(db_module, "IDLE_PING_AFTER", 3600.0)
    await drop(pid)
    with pytest.raises(DatabaseUnavailable):
        await select_one(db)
