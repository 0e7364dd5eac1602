"""Shared fixtures: a migrated database per test run, a clean one per test, and the app.

The backend comes from the environment, so the same tests run on both:
- default: SQLite (aiosqlite) files in a temporary directory and the in-process store;
- ``IDP_TEST_DATABASE_URL=postgresql+asyncpg://…``: a fresh database created for this run on
  that server (dropped at the end), tables emptied after every test;
- ``IDP_TEST_REDIS_URL=redis://…``: Redis, with a key prefix unique to each test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from quart.testing import TestApp
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from idp.config import Settings, generate_secrets, load_settings
from idp.oauth.keys import generate_key as _real_generate_key
from idp.storage import migrate
from idp.storage.models import Base

# The loopback SMTP server fixtures; the MFA tests' clock and world.
pytest_plugins = ["tests.smtp", "tests.mfa_helpers"]

TEST_DATABASE_URL = os.environ.get("IDP_TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("IDP_TEST_REDIS_URL", "")
RUN_ID = uuid.uuid4().hex[:10]


def _pg_admin_url() -> str:
    return TEST_DATABASE_URL


async def _pg_execute(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


class DatabaseFactory:
    """Creates empty databases on the configured backend and removes them afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: list[str] = []

    @property
    def dialect(self) -> str:
        return "postgresql" if TEST_DATABASE_URL else "sqlite"

    def create(self) -> str:
        name = f"idp_test_{RUN_ID}_{len(self.created)}"
        if TEST_DATABASE_URL:
            asyncio.run(_pg_execute(_pg_admin_url(), f'CREATE DATABASE "{name}"'))
            url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
        else:
            url = f"sqlite+aiosqlite:///{self.root / (name + '.sqlite3')}"
        self.created.append(url)
        return url

    def drop_all(self) -> None:
        if not TEST_DATABASE_URL:
            return
        for url in self.created:
            name = make_url(url).database
            asyncio.run(_pg_execute(_pg_admin_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"))
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def migrated_database(database_factory: DatabaseFactory) -> str:
    """One database migrated to head for the whole run (a template file on SQLite)."""
    url = database_factory.create()
    migrate.upgrade(url)
    return url


@pytest.fixture
def fresh_database_url(database_factory: DatabaseFactory) -> str:
    """An empty, unmigrated database of its own (for migration tests)."""
    return database_factory.create()


class LeftOpen(AssertionError):
    """A test left a transaction open on the run's database (its app did not close)."""


async def _empty_tables(url: str, lock_timeout_ms: int = 10_000) -> None:
    """Empty every table; a transaction left open by the test (an app whose shutdown did not
    finish holds its locks) fails this test's teardown by name instead of blocking every later
    test's TRUNCATE for ever: its sessions are ended and the tables emptied all the same."""
    names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    truncate = text(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f"SET lock_timeout = {int(lock_timeout_ms)}"))
            try:
                await connection.execute(truncate)
                return
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                others = (await connection.execute(text(_OTHER_SESSIONS))).all()
                await connection.execute(text(f"SELECT pg_terminate_backend(pid) FROM ({_OTHER_SESSIONS}) AS o"))
                await connection.execute(truncate)
        raise LeftOpen(f"the test left sessions open on its database: {[tuple(row) for row in others]}")
    finally:
        await engine.dispose()


_OTHER_SESSIONS = (
    "SELECT pid, state, left(query, 200) AS query FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@pytest.fixture
def database_url(migrated_database: str, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database for one test."""
    if TEST_DATABASE_URL:
        yield migrated_database
        asyncio.run(_empty_tables(migrated_database))
        return
    source = Path(make_url(migrated_database).database or "")
    target = tmp_path / "idp.sqlite3"
    shutil.copyfile(source, target)
    yield f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def redis_prefix() -> str:
    return f"idp-test-{RUN_ID}-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def test_secrets() -> dict[str, str]:
    return generate_secrets()


@pytest.fixture
def settings_overrides(
    database_url: str, redis_prefix: str, test_secrets: dict[str, str], tmp_path: Path
) -> dict[str, Any]:
    return {
        "issuer": "http://127.0.0.1:8000",
        "database_url": database_url,
        "redis_url": TEST_REDIS_URL,
        "redis_key_prefix": redis_prefix,
        "data_dir": str(tmp_path / "var"),
        "secrets": dict(test_secrets),
        # Cheap hashing keeps the suite fast; production parameters are tested on their own.
        "password_hash": {"time_cost": 1, "memory_cost_kib": 7168, "parallelism": 1},
    }


@pytest.fixture
def settings(settings_overrides: dict[str, Any]) -> Settings:
    return load_settings(environ={}, overrides=settings_overrides)


@pytest.fixture
def cli_env(settings_overrides: dict[str, Any]) -> dict[str, str]:
    """The same settings as IDP_* variables, for CLI and subprocess tests."""
    env = {
        "IDP_ISSUER": settings_overrides["issuer"],
        "IDP_DATABASE_URL": settings_overrides["database_url"],
        "IDP_REDIS_URL": settings_overrides["redis_url"],
        "IDP_REDIS_KEY_PREFIX": settings_overrides["redis_key_prefix"],
        "IDP_DATA_DIR": settings_overrides["data_dir"],
        "IDP_SECRETS__COOKIE_SECRET": settings_overrides["secrets"]["cookie_secret"],
        "IDP_SECRETS__KEY_ENCRYPTION_KEY": settings_overrides["secrets"]["key_encryption_key"],
        "IDP_SECRETS__PAIRWISE_SECRET": settings_overrides["secrets"]["pairwise_secret"],
        "IDP_PASSWORD_HASH__TIME_COST": "1",
        "IDP_PASSWORD_HASH__MEMORY_COST_KIB": "7168",
    }
    return env


@pytest.fixture(autouse=True)
def _clean_redis(redis_prefix: str) -> Iterator[None]:
    yield
    if TEST_REDIS_URL:
        from idp.storage.kv import RedisStore

        async def clean() -> None:
            store = RedisStore(TEST_REDIS_URL, prefix=redis_prefix)
            try:
                await store.delete_prefix("")
            finally:
                await store.close()

        asyncio.run(clean())


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    from idp import create_app

    application = create_app(settings)
    async with application.test_app():
        yield application


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def runtime(app: Any) -> Any:
    return app.runtime


@pytest.fixture
async def second_node(settings: Settings) -> AsyncIterator[Any]:
    """Another node on the same database and Redis, as behind a load balancer (Redis is how nodes
    hear of each other's changes: skipped without it)."""
    if not TEST_REDIS_URL:
        pytest.skip("nodes hear of each other's changes through Redis (IDP_TEST_REDIS_URL)")
    from idp import create_app

    other = create_app(settings)
    async with other.test_app():
        yield other


@pytest.fixture
def json_logs() -> Iterator[Any]:
    """Everything logged during the test, as JSON lines through the production handler."""
    import io
    import logging

    from idp.observability import configure_logging

    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    yield stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_idp_handler", False):
            root.removeHandler(handler)


class PatientTestApp(TestApp):
    """Quart's lifespan harness with the app's own budgets instead of Quart's 6 s: a shutdown may
    take up to 10 s to flush the audit trail and the outbox (idp.audit, idp.outbox), and a start
    waits up to 5 s per subscription. A slow CI machine must not fail a test at its start or stop,
    nor leave an app half-stopped holding a transaction (see _empty_tables)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app, startup_timeout=30, shutdown_timeout=30)


def pytest_configure(config: pytest.Config) -> None:
    from idp.http import IdPApp

    IdPApp.test_app_class = PatientTestApp


def pytest_report_header(config: pytest.Config) -> list[str]:
    database = "PostgreSQL (IDP_TEST_DATABASE_URL)" if TEST_DATABASE_URL else "SQLite (aiosqlite)"
    store = "Redis (IDP_TEST_REDIS_URL)" if TEST_REDIS_URL else "in-process store"
    return [f"idp storage backends: database={database}, key-value={store}"]


class _KeyPool:
    """Signing keys generated once per run and handed out in order within each test.

    RSA generation costs ~50 ms; every test app would otherwise make fresh keys on start. Keys
    stay distinct within a test (rotations draw the next one), which is all a database needs.
    """

    def __init__(self) -> None:
        self._keys: dict[tuple[str, int], list[Any]] = {}
        self._next: dict[tuple[str, int], int] = {}

    def reset(self) -> None:
        self._next.clear()

    def take(self, alg: str, rsa_key_size: int = 2048) -> Any:
        slot = (alg, rsa_key_size if alg == "RS256" else 0)
        index = self._next.get(slot, 0)
        self._next[slot] = index + 1
        keys = self._keys.setdefault(slot, [])
        while len(keys) <= index:
            keys.append(_real_generate_key(alg, rsa_key_size))
        return keys[index]


_KEY_POOL = _KeyPool()


@pytest.fixture(autouse=True)
def _pooled_signing_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _KEY_POOL.reset()
    monkeypatch.setattr("idp.oauth.keys.generate_key", _KEY_POOL.take)
    yield
