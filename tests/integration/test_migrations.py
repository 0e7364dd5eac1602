"""Alembic migrations: identical to the models, reversible, driven by `idp db`, enforced at start-up.

Every test runs on the configured backend (SQLite by default, PostgreSQL with IDP_TEST_DATABASE_URL).
Tests that invoke the CLI in-process are plain functions: the commands call ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import json
import pprint
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from idp.cli import cli
from idp.config import load_settings
from idp.runtime import StartupError, open_runtime
from idp.storage import migrate
from idp.storage.models import Base

MODEL_TABLES = frozenset(Base.metadata.tables)


async def _with_connection(url: str, work: Any) -> Any:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def _schema_diff(url: str) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    return asyncio.run(_with_connection(url, compare))


def _table_names(url: str) -> set[str]:
    return asyncio.run(_with_connection(url, lambda connection: set(inspect(connection).get_table_names())))


def _db_revision(url: str) -> str | None:
    def read(connection: Connection) -> str | None:
        if not inspect(connection).has_table("alembic_version"):
            return None
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert len(rows) <= 1, rows
        return rows[0] if rows else None

    return asyncio.run(_with_connection(url, read))


def test_migrations_match_the_models(fresh_database_url: str) -> None:
    migrate.upgrade(fresh_database_url)
    diff = _schema_diff(fresh_database_url)
    assert diff == [], "migrations differ from idp.storage.models:\n" + pprint.pformat(diff)


def test_downgrade_to_base_and_upgrade_again(fresh_database_url: str) -> None:
    assert _table_names(fresh_database_url) == set()

    migrate.upgrade(fresh_database_url)
    assert _table_names(fresh_database_url) == MODEL_TABLES | {"alembic_version"}
    assert _db_revision(fresh_database_url) == migrate.head_revision()

    migrate.downgrade(fresh_database_url, "base")
    assert _table_names(fresh_database_url) == {"alembic_version"}
    assert _db_revision(fresh_database_url) is None

    migrate.upgrade(fresh_database_url)
    assert _table_names(fresh_database_url) == MODEL_TABLES | {"alembic_version"}
    assert _db_revision(fresh_database_url) == migrate.head_revision()
    # The round trip leaves exactly the schema a first upgrade creates.
    assert _schema_diff(fresh_database_url) == []


def test_upgrade_is_idempotent(fresh_database_url: str) -> None:
    migrate.upgrade(fresh_database_url)
    migrate.upgrade(fresh_database_url)
    assert _db_revision(fresh_database_url) == migrate.head_revision()
    assert _table_names(fresh_database_url) == MODEL_TABLES | {"alembic_version"}


def test_0005_marks_existing_codes_as_having_had_redirect_uri(fresh_database_url: str) -> None:
    """L3: a code issued before 0005 must repeat redirect_uri at /token (RFC 6749 §4.1.3), the
    stricter answer for a row that doesn't know."""
    migrate.upgrade(fresh_database_url, "0004")
    now = "2026-12-01 00:00:00"
    statements = [
        "INSERT INTO users (id, email, email_normalized, email_verified, is_admin, disabled, created_at, updated_at)"
        f" VALUES ('u1', 'a@example.com', 'a@example.com', true, false, false, '{now}', '{now}')",
        "INSERT INTO oauth_clients (id, name, client_type, application_type, token_endpoint_auth_method,"
        " redirect_uris, post_logout_redirect_uris, grant_types, response_types, scopes, web_origins,"
        " subject_type, backchannel_logout_session_required, require_pkce, first_party, disabled,"
        " created_at, updated_at) VALUES ('c1', 'C', 'public', 'web', 'none', '[]', '[]', '[]', '[]', '[]',"
        f" '[]', 'public', true, true, false, false, '{now}', '{now}')",
        "INSERT INTO authorization_codes (code_digest, grant_id, client_id, user_id, redirect_uri, scope,"
        " auth_time, amr, created_at, expires_at) VALUES ('d1', 'g1', 'c1', 'u1', 'https://rp.example/cb',"
        f" 'openid', '{now}', '[]', '{now}', '{now}')",
    ]

    def insert(connection: Connection) -> None:
        for statement in statements:
            connection.execute(text(statement))
        connection.commit()

    asyncio.run(_with_connection(fresh_database_url, insert))
    migrate.upgrade(fresh_database_url)

    def read(connection: Connection) -> Any:
        return connection.execute(text("SELECT redirect_uri_in_request FROM authorization_codes")).scalars().all()

    assert [bool(value) for value in asyncio.run(_with_connection(fresh_database_url, read))] == [True]


def test_0006_drops_the_unused_sessions_table_and_its_downgrade_restores_it(fresh_database_url: str) -> None:
    """Browser sessions live in the key-value store; the table no code wrote is gone."""
    migrate.upgrade(fresh_database_url, "0005")
    assert "sessions" in _table_names(fresh_database_url)
    migrate.upgrade(fresh_database_url)
    assert "sessions" not in _table_names(fresh_database_url)
    migrate.downgrade(fresh_database_url, "0005")
    assert "sessions" in _table_names(fresh_database_url)


# --------------------------------------------------------------------------------------------------
# idp db …


def _db_env(cli_env: dict[str, str], url: str) -> dict[str, str]:
    return {**cli_env, "IDP_DATABASE_URL": url}


def _current(runner: CliRunner, env: dict[str, str]) -> dict[str, Any]:
    result = runner.invoke(cli, ["db", "current", "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_db_upgrade_current_downgrade(cli_env: dict[str, str], fresh_database_url: str) -> None:
    runner = CliRunner()
    env = _db_env(cli_env, fresh_database_url)
    head = migrate.head_revision()

    assert _current(runner, env) == {"current": None, "head": head, "up_to_date": False}

    result = runner.invoke(cli, ["db", "upgrade"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert head in result.stdout
    assert _current(runner, env) == {"current": head, "head": head, "up_to_date": True}
    assert _table_names(fresh_database_url) == MODEL_TABLES | {"alembic_version"}

    result = runner.invoke(cli, ["db", "downgrade", "base"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "base" in result.stdout
    assert _table_names(fresh_database_url) == {"alembic_version"}
    assert _current(runner, env) == {"current": None, "head": head, "up_to_date": False}

    result = runner.invoke(cli, ["db", "upgrade"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _db_revision(fresh_database_url) == head


def test_cli_db_current_text_says_what_to_run(cli_env: dict[str, str], fresh_database_url: str) -> None:
    result = CliRunner().invoke(cli, ["db", "current"], env=_db_env(cli_env, fresh_database_url))
    assert result.exit_code == 0, result.output
    assert "idp db upgrade" in result.stdout


def test_cli_db_upgrade_unknown_revision_is_one_line(cli_env: dict[str, str], fresh_database_url: str) -> None:
    result = CliRunner().invoke(cli, ["db", "upgrade", "no-such-rev"], env=_db_env(cli_env, fresh_database_url))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("idp: error: revision:")
    assert "no-such-rev" in lines[0]
    assert _db_revision(fresh_database_url) is None


def test_commands_refuse_an_unmigrated_database(cli_env: dict[str, str], fresh_database_url: str) -> None:
    result = CliRunner().invoke(cli, ["keys", "list", "--json"], env=_db_env(cli_env, fresh_database_url))
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("idp: error: database_url:")
    assert "idp db upgrade" in lines[0]
    # Nothing was created on the way: still no tables at all.
    assert _table_names(fresh_database_url) == set()


# --------------------------------------------------------------------------------------------------
# start-up schema check


async def test_runtime_refuses_an_unmigrated_database(
    settings_overrides: dict[str, Any], fresh_database_url: str
) -> None:
    settings = load_settings(environ={}, overrides={**settings_overrides, "database_url": fresh_database_url})
    with pytest.raises(StartupError) as excinfo:
        await open_runtime(settings)
    message = str(excinfo.value)
    assert message.startswith("database_url:")
    assert "idp db upgrade" in message
    assert migrate.head_revision() in message


async def test_runtime_refuses_a_downgraded_database(
    settings_overrides: dict[str, Any], fresh_database_url: str
) -> None:
    await asyncio.to_thread(migrate.upgrade, fresh_database_url)
    await asyncio.to_thread(migrate.downgrade, fresh_database_url, "base")
    settings = load_settings(environ={}, overrides={**settings_overrides, "database_url": fresh_database_url})
    with pytest.raises(StartupError, match="idp db upgrade"):
        await open_runtime(settings)


async def test_runtime_starts_on_a_migrated_database(
    settings_overrides: dict[str, Any], fresh_database_url: str
) -> None:
    await asyncio.to_thread(migrate.upgrade, fresh_database_url)
    settings = load_settings(environ={}, overrides={**settings_overrides, "database_url": fresh_database_url})
    rt = await open_runtime(settings)
    try:
        assert sorted(rt.keys.algorithms) == sorted(settings.keys.algorithms)
        assert {key.alg for key in rt.keys.published()} == set(settings.keys.algorithms)
    finally:
        await rt.close()
