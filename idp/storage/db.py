"""The async database: engine, sessions, health and schema-revision checks.

One code path for SQLite (aiosqlite, the embedded default) and PostgreSQL (asyncpg, production),
chosen by the URL alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from idp.storage.urls import redact_url

# What a failed database operation raises: a connection that could not be made, or SQLAlchemy's
# errors (callers outside storage catch these without importing SQLAlchemy).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (OSError, SQLAlchemyError)


class DatabaseUnavailable(Exception):
    """The database can't be reached; the message is safe to show (no password, no SQL)."""


# PostgreSQL SQLSTATEs of a server that can't take the request now (Appendix A of its manual):
# class 08 connection exceptions, 57P01-57P03 shutting down or not yet accepting connections (a
# server starting up or in recovery answers 57P03 "cannot connect now"), 53300 too many
# connections. Each is an outage to wait out (503), not a fault of the request (500).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def _lost_connection(exc: BaseException, dialect: str) -> bool:
    """A failure of the connection rather than of the statement (a constraint, a bad query).
    SQLite reports bad statements as OperationalError too: there only a lock held too long is."""
    if isinstance(exc, OSError | PoolTimeout | InterfaceError):
        return True
    if isinstance(exc, OperationalError):
        return dialect != "sqlite" or "database is locked" in str(exc.orig)
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
        return True
    return bool(exc.connection_invalidated)


def describe_error(exc: BaseException) -> str:
    """A one-line description of a database failure without SQL text or parameters."""
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(original, SQLAlchemyError) and not isinstance(original, DBAPIError):
        return type(original).__name__
    first_line = (str(original).strip().splitlines() or [""])[0][:200]
    return f"{type(original).__name__}: {first_line}" if first_line else type(original).__name__


def _engine_options(url: str, pool_size: int) -> dict[str, Any]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One writer at a time: wait for the lock rather than fail at once.
        return {"connect_args": {"timeout": 15}}
    # No pool_pre_ping: a liveness round trip before every checkout was half of a token request's
    # round trips. Connections idle long enough to have been dropped are checked instead
    # (_check_idle_connections).
    return {"pool_size": pool_size, "max_overflow": 2 * pool_size, "pool_recycle": 1800}


# A pooled connection unused for longer than this is pinged before it is handed out: a server
# restart or an idle timeout may have closed it. One in steady use is not (it just worked).
IDLE_PING_AFTER = 10.0


def _check_idle_connections(engine: AsyncEngine) -> None:
    """SQLAlchemy's "pessimistic, custom" disconnect handling: a connection idle for more than
    IDLE_PING_AFTER seconds is pinged at checkout, and one that fails is replaced (the pool
    retries with a new connection)."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= IDLE_PING_AFTER:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception:
            alive = False
        if not alive:
            raise DisconnectionError("a pooled connection idle for a while was closed by the server")


# Seconds a writer waits for SQLite's one write lock: the busy timeout the driver is given.
_SQLITE_LOCK_WAIT = 15.0
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "WITH")
_HOLDS_WRITE_LOCK = "idp_write_lock"


class _SQLiteWriters:
    """SQLite lets one transaction write at a time. Without a queue, concurrent writers of one
    process each retry in SQLite's busy handler, which sleeps 1, 2, 5 … up to 100 ms between
    tries: eight refreshes at once had a p99 of 640 ms against 40 ms at two (issue 14). Here a
    connection takes this in-process lock before its first write (the driver begins the write
    transaction right then) and gives it back when it returns to the pool, after its commit or
    rollback, so the writers of a process queue in order and each starts the moment the last
    one is done. Other processes (the command line) still meet SQLite's own busy wait."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    def before_statement(self, info: dict[Any, Any], statement: str) -> None:
        if _HOLDS_WRITE_LOCK in info or not statement.lstrip()[:7].upper().startswith(_WRITES):
            return
        lock = self._lock()
        try:
            await_only(asyncio.wait_for(lock.acquire(), _SQLITE_LOCK_WAIT))
        except TimeoutError:
            # What SQLite itself says once its busy timeout has passed (answered with a 503).
            raise OperationalError(statement, None, sqlite3.OperationalError("database is locked")) from None
        info[_HOLDS_WRITE_LOCK] = lock

    @staticmethod
    def returned(info: dict[Any, Any]) -> None:
        lock = info.pop(_HOLDS_WRITE_LOCK, None)
        if lock is not None:
            lock.release()


# The writers' queue of each SQLite file, shared by every engine of this process on it (the
# announcements relay has an engine of its own, idp.storage.announcements).
_WRITERS: weakref.WeakValueDictionary[str, _SQLiteWriters] = weakref.WeakValueDictionary()


def _configure_sqlite(engine: AsyncEngine, url: str) -> None:
    writers = _WRITERS.get(url)
    if writers is None:
        writers = _WRITERS[url] = _SQLiteWriters()

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _before_statement(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        writers.before_statement(connection.info, statement)

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        writers.returned(record.info)

    @event.listens_for(engine.sync_engine, "invalidate")
    def _invalidated(_dbapi_connection: Any, record: Any, _exc: Any) -> None:
        writers.returned(record.info)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # Cascading deletes (account purge) rely on foreign keys, which SQLite leaves off by default.
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets readers proceed while one request writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _untouched(session: AsyncSession) -> bool:
    """Nothing ran, loaded or was added in this session: it holds no transaction, connection or
    object, so there is nothing to commit, roll back or close. A protocol request answered from
    the caches opens such a unit of work; skipping the three saved about 60 microseconds of a
    token request's CPU (issue 14)."""
    sync = session.sync_session
    return not (sync.in_transaction() or sync.identity_map or sync.new or sync.deleted)


class LazySession:
    """The session of one unit of work, made on first use (:meth:`Database.lazy_session`)."""

    def __init__(self, maker: async_sessionmaker[AsyncSession]) -> None:
        self._maker = maker
        self.made: AsyncSession | None = None

    def get(self) -> AsyncSession:
        if self.made is None:
            self.made = self._maker()
        return self.made

    def touched(self) -> bool:
        """A session was made and something ran, loaded or was added in it."""
        return self.made is not None and not _untouched(self.made)


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        """``pool_size``: connections kept open (PostgreSQL; up to twice as many more under load)."""
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url, **_engine_options(url, pool_size))
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine, url)
        else:
            _check_idle_connections(self.engine)
        # A session class of this database's own, so what listens to its sessions' events
        # (``idp.storage.repositories.user_cache``) hears this database's alone.
        self.session_class: type[Session] = type("Session", (Session,), {})
        self._sessionmaker = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=self.session_class
        )
        self._settled: list[Callable[[dict[Any, Any]], Awaitable[None]]] = []

    def when_settled(self, hook: Callable[[dict[Any, Any]], Awaitable[None]]) -> None:
        """Run ``hook(session.info)`` as every unit of work ends, committed or not, once it holds
        anything in ``info`` (what its session's event listeners noted there)."""
        self._settled.append(hook)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits on success, rolls back on any exception. A database that can't
        be reached (refused, dropped or timed-out connections) raises DatabaseUnavailable, which
        the web layer answers with 503 and Retry-After rather than a 500."""
        async with self.lazy_session() as lazy:
            yield lazy.get()

    @asynccontextmanager
    async def lazy_session(self) -> AsyncIterator[LazySession]:
        """:meth:`session`, with the session made only when the caller first asks for it: a
        protocol request answered from the caches makes none (issue 14: making and settling an
        unused AsyncSession was about 9 % of a client_credentials token's CPU)."""
        lazy = LazySession(self._sessionmaker)
        try:
            yield lazy
            if lazy.touched():
                await lazy.get().commit()
        except BaseException as exc:
            if lazy.touched():
                with contextlib.suppress(*DATABASE_ERRORS):  # a dead connection can't roll back either
                    await lazy.get().rollback()
            if _lost_connection(exc, self.engine.dialect.name):
                raise DatabaseUnavailable(f"cannot reach {self.display_url} ({describe_error(exc)})") from None
            raise
        finally:
            session = lazy.made
            if session is not None:
                if lazy.touched():
                    # As AsyncSession's own ``async with`` does: closed even if this task is cancelled.
                    await asyncio.shield(asyncio.create_task(session.close()))
                if session.info:
                    for hook in self._settled:
                        await hook(session.info)

    async def ping(self, within: float | None = 3.0) -> None:
        """One connection and ``SELECT 1``, in at most `within` seconds (None: the caller bounds it)."""
        try:
            async with asyncio.timeout(within):
                async with self.engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except TimeoutError:
            raise DatabaseUnavailable(f"cannot reach {self.display_url} (timed out after {within:g}s)") from None
        except (OSError, SQLAlchemyError) as exc:
            raise DatabaseUnavailable(f"cannot reach {self.display_url} ({describe_error(exc)})") from None

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at, or None for an empty database."""
        async with self.engine.connect() as connection:
            has_table = await connection.run_sync(
                lambda sync_conn: sync_conn.dialect.has_table(sync_conn, "alembic_version")
            )
            if not has_table:
                return None
            row = (await connection.execute(text("SELECT version_num FROM alembic_version"))).first()
            return row[0] if row else None

    async def close(self) -> None:
        await self.engine.dispose()
