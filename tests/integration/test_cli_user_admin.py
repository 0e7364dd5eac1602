"""`idp users disable | enable | sessions | end-sessions | unlock`: what an administrator does from
the command line. Sessions and sign-in locks live in the key-value store, which a running server
shares with the CLI only through Redis: without it those commands refuse with a clear line, and
with it (IDP_TEST_REDIS_URL) they act on what the server sees."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result

from idp.cli import cli
from idp.config import Settings
from idp.runtime import open_runtime

PASSWORD = "correct-horse-battery-staple-7"
EMAIL = "ada@example.com"
REDIS = os.environ.get("IDP_TEST_REDIS_URL", "")
needs_redis = pytest.mark.skipif(not REDIS, reason="the CLI shares sessions with a server only through Redis")


def run(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)
    assert result.exit_code == 0, f"idp {' '.join(args)} exited {result.exit_code}: {result.output}"
    return result


def run_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(run(env, *args, "--json").stdout)


def run_error(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


def with_runtime(settings: Settings, work: Callable[[Any], Any]) -> Any:
    """What a running server does, through its own runtime on the same database and store."""

    async def main() -> Any:
        rt = await open_runtime(settings)
        try:
            return await work(rt)
        finally:
            await rt.close()

    return asyncio.run(main())


@pytest.fixture
def user_id(cli_env: dict[str, str]) -> str:
    created = run(cli_env, "users", "create", "--email", EMAIL, "--password-stdin", "--verified", "--json",
                  input=PASSWORD + "\n")  # fmt: skip
    return str(json.loads(created.stdout)["id"])


def test_unknown_accounts_are_named(cli_env: dict[str, str]) -> None:
    for command in ("disable", "enable"):
        line = run_error(cli_env, "users", command, "nobody@example.com")
        assert line == "idp: error: EMAIL: there is no account with the address 'nobody@example.com'"


def test_disable_and_enable(cli_env: dict[str, str], settings: Settings, user_id: str) -> None:
    assert run_json(cli_env, "users", "disable", EMAIL.upper()) == {
        "id": user_id,
        "disabled": True,
        "sessions_ended": 0,
    }

    async def state(rt: Any) -> tuple[bool, list[str]]:
        from sqlalchemy import select

        from idp.storage.models import AuditEvent, User

        async with rt.db.session() as session:
            user = await session.get(User, user_id)
            events = (await session.execute(select(AuditEvent).where(AuditEvent.subject_id == user_id))).scalars()
            return user.disabled, [(event.event, event.details.get("via")) for event in events]

    disabled, events = with_runtime(settings, state)
    assert disabled and ("account_disabled", "cli") in events
    assert run(cli_env, "users", "enable", EMAIL).stdout.strip() == f"enabled {user_id}"
    disabled, events = with_runtime(settings, state)
    assert not disabled and ("account_enabled", "cli") in events


def test_session_commands_need_the_shared_store(cli_env: dict[str, str], user_id: str) -> None:
    env = {**cli_env, "IDP_REDIS_URL": ""}
    for args in (["sessions", EMAIL], ["end-sessions", EMAIL], ["unlock", EMAIL]):
        line = run_error(env, "users", *args)
        assert line.startswith("idp: error: redis_url: not set, so sessions and sign-in locks live in the running")


@needs_redis
def test_list_and_end_sessions(cli_env: dict[str, str], settings: Settings, user_id: str) -> None:
    async def sign_in_twice(rt: Any) -> list[str]:
        sids = []
        for agent in ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", None):
            _, session = await rt.sessions.create(user_id, amr=["pwd"], ip="192.0.2.4", user_agent=agent,
                                                  device="Firefox 121 on Linux" if agent else None)  # fmt: skip
            sids.append(session.sid)
        return sids

    first, second = with_runtime(settings, sign_in_twice)
    listed = run_json(cli_env, "users", "sessions", EMAIL)
    assert {row["id"] for row in listed} == {first, second}
    assert {row["device"] for row in listed} == {"Firefox 121 on Linux", "Unknown browser"}
    assert all(row["ip"] == "192.0.2.4" and row["current"] is False for row in listed)

    assert run_json(cli_env, "users", "end-sessions", EMAIL, "--session", first) == {"sessions_ended": 1}
    assert run_error(cli_env, "users", "end-sessions", EMAIL, "--session", first) == (
        f"idp: error: --session: {EMAIL} has no live session {first}"
    )
    assert [row["id"] for row in run_json(cli_env, "users", "sessions", EMAIL)] == [second]
    assert run_json(cli_env, "users", "end-sessions", EMAIL) == {"sessions_ended": 1}
    assert run(cli_env, "users", "sessions", EMAIL).stdout.strip() == "no sessions"


@needs_redis
def test_unlock(cli_env: dict[str, str], settings: Settings, user_id: str) -> None:
    async def lock(rt: Any) -> int:
        for n in range(settings.lockout.account_lock_after):
            await rt.lockout.failed(EMAIL, f"192.0.2.{n % 250}")
        return int(await rt.lockout.locked_for(EMAIL))

    assert with_runtime(settings, lock) == settings.lockout.lock_duration
    data = run_json(cli_env, "users", "unlock", EMAIL)
    assert data["cleared"] is True and 0 < data["was_locked_for"] <= settings.lockout.lock_duration
    assert with_runtime(settings, lambda rt: rt.lockout.locked_for(EMAIL)) == 0
    assert run(cli_env, "users", "unlock", EMAIL).stdout.strip() == f"{user_id} had no failed sign-ins to clear"


def test_end_all_sessions_needs_confirmation_and_the_shared_store(cli_env: dict[str, str]) -> None:
    assert run_error(cli_env, "users", "end-all-sessions") == (
        "idp: error: --yes: required, to confirm that every user is signed out"
    )
    line = run_error({**cli_env, "IDP_REDIS_URL": ""}, "users", "end-all-sessions", "--yes")
    assert line.startswith("idp: error: redis_url: not set")


@needs_redis
def test_end_all_sessions(cli_env: dict[str, str], settings: Settings, user_id: str) -> None:
    other = json.loads(run(cli_env, "users", "create", "--email", "bo@example.com", "--json").stdout)["id"]

    async def sign_in_everyone(rt: Any) -> None:
        for uid in (user_id, user_id, other):
            await rt.sessions.create(uid, amr=["pwd"])

    with_runtime(settings, sign_in_everyone)
    assert run_json(cli_env, "users", "end-all-sessions", "--yes") == {"users": 2, "sessions_ended": 3}

    async def remaining(rt: Any) -> int:
        return sum([len(await rt.sessions.list_for_user(uid)) for uid in (user_id, other)])

    assert with_runtime(settings, remaining) == 0
