"""Database.session(), the unit of work every request uses: one that runs nothing costs nothing
(no transaction begun, committed or closed: the cached protocol requests open such units), and
one that does anything still commits, rolls back and closes exactly as before. Both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, func, inspect, select, text

from idp.storage.db import Database
from idp.storage.models import User


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.close()


@pytest.fixture
def transactions(database: Database) -> list[str]:
    """What happens to the database's sessions' transactions, in order."""
    seen: list[str] = []
    for name in ("after_transaction_create", "after_commit", "after_rollback"):
        event.listen(database.session_class, name, lambda *_args, _name=name: seen.append(_name))
    return seen


def _user(email: str) -> User:
    return User(email=email, email_normalized=email)


async def _count_users(database: Database, email: str) -> int:
    async with database.session() as session:
        return int((await session.execute(select(func.count()).where(User.email_normalized == email))).scalar_one())


async def test_a_unit_that_runs_nothing_begins_no_transaction(database: Database, transactions: list[str]) -> None:
    async with database.session():
        pass
    assert transactions == []


async def test_a_unit_that_fails_before_running_anything_rolls_nothing_back(
    database: Database, transactions: list[str]
) -> None:
    with pytest.raises(LookupError):
        async with database.session():
            raise LookupError("refused before any query")
    assert transactions == []


async def test_a_unit_that_only_adds_an_object_still_commits_it(database: Database, transactions: list[str]) -> None:
    async with database.session() as session:
        session.add(_user("added@example.com"))  # no statement has run yet: nothing begun
    assert "after_commit" in transactions
    assert await _count_users(database, "added@example.com") == 1


async def test_a_unit_that_reads_commits_and_leaves_its_objects_detached(database: Database) -> None:
    async with database.session() as session:
        session.add(_user("read@example.com"))
    async with database.session() as session:
        user = (await session.execute(select(User).where(User.email_normalized == "read@example.com"))).scalar_one()
    assert inspect(user).detached  # closed as before: the object can join another session
    async with database.session() as session:
        session.add(user)
        user.name = "Read Again"
    async with database.session() as session:
        again = await session.get(User, user.id)
        assert again is not None and again.name == "Read Again"


async def test_a_unit_that_fails_after_a_write_rolls_it_back(database: Database, transactions: list[str]) -> None:
    with pytest.raises(LookupError):
        async with database.session() as session:
            session.add(_user("rolled@example.com"))
            await session.flush()
            raise LookupError("refused after a write")
    assert "after_rollback" in transactions
    assert await _count_users(database, "rolled@example.com") == 0


async def test_a_unit_whose_statements_ran_and_were_committed_early_ends_cleanly(database: Database) -> None:
    async with database.session() as session:
        await session.execute(text("SELECT 1"))
        await session.commit()  # a replayed code's revocation commits before the error is raised
    seen: Any = database.engine.pool.checkedout()
    assert seen == 0
