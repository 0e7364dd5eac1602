"""Accounts kept in memory for the resource endpoints' reads (UserInfo, introspection's subject
check, the account API's bearer check), which otherwise read the user's row on every request
(issue 14: about a third of a UserInfo request's time).

Unlike clients, accounts change in many places (profile, sign-in, verification, admin, deletion,
the command line), so no caller announces a change: this module listens to the database's
sessions. Whatever a session writes to the users table is noted, by the ORM flush (a loaded
account changed, added or deleted) or by an UPDATE or DELETE statement on the table (the account
its WHERE names by id, else every account); once the transaction commits, those accounts are
forgotten here and announced to every other node (:mod:`row_cache`) as the unit of work ends. A
change that is rolled back announces nothing.

The cached account is a read-only copy: only the resource endpoints' look-ups use it, never a
unit of work that changes an account.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList, ColumnElement

from idp.storage.db import Database
from idp.storage.kv import KeyValueStore
from idp.storage.models import User
from idp.storage.repositories.row_cache import ALL, RowCache

__all__ = ("CHANNEL", "UserCache")

CHANNEL = "users_changed"
# session.info keys: accounts changed in the open transaction, and in committed ones.
_PENDING = "idp.users_changed.pending"
_COMMITTED = "idp.users_changed.committed"


class UserCache(RowCache[User]):
    channel = CHANNEL

    def __init__(self, db: Database, kv: KeyValueStore, **options: Any) -> None:
        super().__init__(db, kv, **options)
        _track_changes(db.session_class, self)
        db.when_settled(self._announce)

    @staticmethod
    async def load(session: AsyncSession, user_id: str) -> User | None:
        return await session.get(User, user_id)

    async def _announce(self, info: dict[Any, Any]) -> None:
        info.pop(_PENDING, None)
        committed = info.pop(_COMMITTED, None)
        if committed:
            await self.changed_many(committed)


def _id_named_by(where: ColumnElement[Any] | None) -> str | None:
    """The account id an UPDATE or DELETE names (``users.id = :id``, alone or ANDed), else None."""
    if isinstance(where, BooleanClauseList) and where.operator is operators.and_:
        for clause in where.clauses:
            found = _id_named_by(clause)
            if found is not None:
                return found
        return None
    if (
        isinstance(where, BinaryExpression)
        and where.operator is operators.eq
        and _is_users(getattr(where.left, "table", None))
        and getattr(where.left, "key", None) == "id"
        and isinstance(where.right, BindParameter)
        and isinstance(where.right.value, str)
    ):
        return where.right.value
    return None


def _is_users(table: Any) -> bool:
    # A statement's table may be an annotated copy of the users table (update(User) makes one).
    return getattr(table, "name", None) == User.__tablename__


def _pending(session: Session) -> set[str]:
    pending: set[str] = session.info.setdefault(_PENDING, set())
    return pending


def _track_changes(session_class: type[Session], cache: UserCache) -> None:
    @event.listens_for(session_class, "after_flush")
    def _flushed(session: Session, _context: Any) -> None:
        # Still the flush's own view here: new, dirty and deleted as they were flushed.
        for row in (*session.new, *session.dirty, *session.deleted):
            if isinstance(row, User) and row.id is not None:
                _pending(session).add(row.id)

    @event.listens_for(session_class, "do_orm_execute")
    def _executed(state: ORMExecuteState) -> None:
        statement = state.statement
        if (state.is_update or state.is_delete) and _is_users(getattr(statement, "table", None)):
            _pending(state.session).add(_id_named_by(getattr(statement, "whereclause", None)) or ALL)

    @event.listens_for(session_class, "after_commit")
    def _committed(session: Session) -> None:
        pending = session.info.pop(_PENDING, None)
        if pending:
            for user_id in pending:
                cache.forget(user_id)  # here at once; the other nodes once the session ends
            session.info.setdefault(_COMMITTED, set()).update(pending)

    @event.listens_for(session_class, "after_transaction_end")
    def _ended(session: Session, transaction: SessionTransaction) -> None:
        # What the outermost transaction ends with still pending was rolled back (after_commit
        # has taken the rest). A savepoint's end drops nothing: forgetting too much is harmless.
        if transaction.parent is None:
            session.info.pop(_PENDING, None)
