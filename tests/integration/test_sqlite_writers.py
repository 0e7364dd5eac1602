"""SQLite's one writer at a time, queued in the process (idp.storage.db._SQLiteWriters): concurrent
writers of a process wait in arrival order for the one before them, instead of each retrying in
SQLite's busy handler (sleeps of up to 100 ms: the embedded refresh p99 of 640 ms); the lock is
given back however a unit of work ends, reads never wait for it, and a writer that can't have it
within the busy timeout fails as SQLite would, without hanging."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from idp.storage import db as db_module
from idp.storage.db import Database, DatabaseUnavailable


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's single writer")
    database = Database(database_url)
    async with database.session() as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS writer_probe (n INTEGER)"))
        await session.execute(text("DELETE FROM writer_probe"))
    yield database
    async with database.session() as session:
        await session.execute(text("DROP TABLE writer_probe"))
    await database.close()


async def _write(database: Database, n: int, done: list[int], *, hold: float = 0.0) -> None:
    async with database.session() as session:
        await session.execute(text("INSERT INTO writer_probe (n) VALUES (:n)"), {"n": n})
        await asyncio.sleep(hold)  # the transaction stays open: SQLite's write lock is held
    done.append(n)


async def test_writers_queue_in_arrival_order(database: Database) -> None:
    done: list[int] = []
    first = asyncio.create_task(_write(database, 0, done, hold=0.3))
    await asyncio.sleep(0.05)
    waiting = []
    for n in range(1, 6):
        waiting.append(asyncio.create_task(_write(database, n, done)))
        await asyncio.sleep(0.01)  # each arrives after the one before
    await asyncio.gather(first, *waiting)
    assert done == [0, 1, 2, 3, 4, 5]
    async with database.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM writer_probe"))).scalar_one() == 6


async def test_reads_do_not_wait_for_a_writer(database: Database) -> None:
    done: list[int] = []
    writer = asyncio.create_task(_write(database, 1, done, hold=0.5))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(0.3), database.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM writer_probe"))).scalar_one() == 0
    await writer


async def test_a_failed_or_committed_early_unit_gives_the_lock_back(database: Database) -> None:
    with pytest.raises(LookupError):
        async with database.session() as session:
            await session.execute(text("INSERT INTO writer_probe (n) VALUES (1)"))
            raise LookupError("refused after a write")
    async with database.session() as session:
        await session.execute(text("INSERT INTO writer_probe (n) VALUES (2)"))
        await session.commit()  # a replayed code's revocation commits before the error
        await session.execute(text("INSERT INTO writer_probe (n) VALUES (3)"))
    async with asyncio.timeout(2):
        await _write(database, 4, [])
    async with database.session() as session:
        rows = (await session.execute(text("SELECT n FROM writer_probe ORDER BY n"))).scalars().all()
    assert rows == [2, 3, 4]


async def test_a_writer_that_waits_past_the_busy_timeout_fails_like_sqlite(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "_SQLITE_LOCK_WAIT", 0.2)
    holder = asyncio.create_task(_write(database, 1, [], hold=1.0))
    await asyncio.sleep(0.05)
    with pytest.raises(DatabaseUnavailable, match="database is locked"):
        await _write(database, 2, [])
    await holder
    await _write(database, 3, [])  # and the lock is usable again afterwards
