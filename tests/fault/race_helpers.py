"""Pieces of the race tests (issue 15, "exactly once under races"): release many requests at the
same instant, and read back what the database holds afterwards.

``race`` starts ``n`` tasks that each wait on one :class:`asyncio.Barrier` and then make their
request, so they reach the server together rather than one after another; on PostgreSQL each
request holds its own pooled connection, on SQLite its own aiosqlite thread, so the database sees
them concurrently. Exceptions are returned, not raised: a race test classifies every outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.sql.elements import ColumnElement

from idp.storage.db import Database

T = TypeVar("T")

# Concurrent requests in each race, and how many times each race is run: bounded so the whole
# file stays well under 90 s on two cores, enough to have caught each race fixed here.
CONCURRENCY = 20
ROUNDS = 3


async def race(n: int, attempt: Callable[[int], Awaitable[T]]) -> list[T | BaseException]:
    """Run ``attempt(0) … attempt(n-1)`` released together; each result or exception, in order."""
    barrier = asyncio.Barrier(n)

    async def one(index: int) -> T:
        await barrier.wait()
        return await attempt(index)

    async with asyncio.timeout(60):
        return await asyncio.gather(*(one(index) for index in range(n)), return_exceptions=True)


def unexpected(results: Sequence[object], *expected: type[BaseException]) -> list[BaseException]:
    """The exceptions among ``results`` that are not of an ``expected`` type (a race test fails
    on any of them: a crash is not a refusal)."""
    return [result for result in results if isinstance(result, BaseException) and not isinstance(result, expected)]


async def count_rows(db: Database, model: Any, *where: ColumnElement[bool]) -> int:
    async with db.session() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(query)).scalar_one())


async def fetch_rows(db: Database, model: Any, *where: ColumnElement[bool]) -> list[Any]:
    async with db.session() as session:
        return list((await session.execute(select(model).where(*where))).scalars())
