"""The suite's own guard (tests/conftest.py): on PostgreSQL every test's tables are emptied by one
TRUNCATE, which waits for every lock on them. A transaction a test leaves open (an app whose
shutdown did not finish) once blocked every later test for ever (CI timed out after 90 minutes);
now that test's teardown fails by name, and the later tests find their tables empty."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import TEST_DATABASE_URL, LeftOpen, _empty_tables

pytestmark = pytest.mark.skipif(
    not TEST_DATABASE_URL.startswith("postgresql"), reason="needs PostgreSQL (IDP_TEST_DATABASE_URL)"
)


async def test_a_transaction_left_open_fails_the_teardown_by_name_and_the_tables_are_emptied(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            row = "INSERT INTO announcements (origin, channel, message, created_at) VALUES ('t', 'c', 'm', now())"
            await connection.execute(text(row))
        left_open = await engine.connect()
        await left_open.begin()
        await left_open.execute(text("SELECT count(*) FROM announcements"))  # holds its lock until the end

        with pytest.raises(LeftOpen) as refused:
            await _empty_tables(database_url, lock_timeout_ms=200)
        assert "idle in transaction" in str(refused.value)
        assert "SELECT count(*) FROM announcements" in str(refused.value)
        await left_open.invalidate()  # its server session was ended by the guard
        await left_open.close()

        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM announcements"))).scalar_one() == 0
        await _empty_tables(database_url, lock_timeout_ms=200)  # nothing left open: no complaint
    finally:
        await engine.dispose()
