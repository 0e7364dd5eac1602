"""Writes of one row on the protocol's hot paths as Core statements (issue 14).

The ORM's unit of work (a flush for an INSERT) and its bulk-update path (compile state, RETURNING
into an identity-mapped instance) cost more CPU than the statements themselves. A row written
here is not in the session's identity map: nothing in the same unit of work reads it back through
the ORM, and what ``spend`` returns is a detached copy the caller only reads.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar, cast

from sqlalchemy import Insert, Table, Update, insert
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import Base

Row = TypeVar("Row", bound=Base)


def table_of(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


@cache
def _insert(table: Table) -> Insert:
    return insert(table)  # built once per table: its cache key is then computed once too


async def insert_row(session: AsyncSession, row: Base) -> None:
    """One INSERT of every column of ``row``, without the session's flush."""
    table = table_of(type(row))
    await session.execute(_insert(table), {column.key: getattr(row, column.key) for column in table.columns})


async def spend(session: AsyncSession, statement: Update, parameters: dict[str, Any], model: type[Row]) -> Row | None:
    """Run ``statement`` (a Core UPDATE … RETURNING every column of ``model``'s table) and return
    the row it changed as a detached ``model``, or None when it matched none."""
    found = (await session.execute(statement, parameters)).one_or_none()
    return None if found is None else model(**found._mapping)
