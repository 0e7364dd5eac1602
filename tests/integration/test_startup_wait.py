"""Start-up waits for the database and Redis (settings.startup_wait): a server started beside them,
or on a machine busy enough that a first connection takes seconds, starts once they answer; one
that can't reach them gives up with one line naming the setting, and no secret."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy.engine import make_url

from idp.config import load_settings
from idp.runtime import StartupError, open_runtime, reach
from idp.storage.db import DatabaseUnavailable

REFUSED_PG = "postgresql+asyncpg://u:hunter2@127.0.0.1:1/x"  # nothing listens on port 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def _late_forwarder(target_port: int, *, after: float) -> AsyncIterator[int]:
    """A port on which nothing listens for `after` seconds; then it forwards to `target_port`."""
    port = _free_port()
    servers: list[asyncio.Server] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def open_later() -> None:
        await asyncio.sleep(after)
        servers.append(await asyncio.start_server(forward, "127.0.0.1", port))

    opener = asyncio.create_task(open_later())
    try:
        yield port
    finally:
        opener.cancel()
        for server in servers:
            server.close()


async def test_reach_retries_until_the_service_answers() -> None:
    calls = 0

    async def ping() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise DatabaseUnavailable("cannot reach it (refused)")

    await reach("database_url", ping, DatabaseUnavailable, wait=5)
    assert calls == 3


async def test_reach_gives_up_after_the_wait_naming_the_setting_and_the_failure(caplog: Any) -> None:
    async def ping() -> None:
        raise DatabaseUnavailable("cannot reach db.internal (ConnectionRefusedError)")

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="idp"), pytest.raises(StartupError) as excinfo:
        await reach("database_url", ping, DatabaseUnavailable, wait=1.2)
    elapsed = time.monotonic() - started
    assert str(excinfo.value) == "database_url: cannot reach db.internal (ConnectionRefusedError)"
    assert 0.9 <= elapsed < 3
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        "database_url: cannot reach db.internal (ConnectionRefusedError); trying again for up to 1.2s (startup_wait)"
    ]


async def test_reach_with_no_wait_tries_once() -> None:
    calls = 0

    async def ping() -> None:
        nonlocal calls
        calls += 1
        raise DatabaseUnavailable("cannot reach it")

    with pytest.raises(StartupError, match=r"^redis_url: cannot reach it$"):
        await reach("redis_url", ping, DatabaseUnavailable, wait=0)
    assert calls == 1


async def test_reach_bounds_an_attempt_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("idp.runtime._ATTEMPT_TIMEOUT", 0.2)

    async def ping() -> None:
        await asyncio.sleep(60)

    started = time.monotonic()
    with pytest.raises(StartupError, match=r"^database_url: no answer within 0\.2s$"):
        await reach("database_url", ping, DatabaseUnavailable, wait=0)
    assert time.monotonic() - started < 2


async def test_a_refused_database_fails_after_the_wait_without_the_password(settings_overrides: dict[str, Any]) -> None:
    settings = load_settings(environ={}, overrides={**settings_overrides, "database_url": REFUSED_PG})
    started = time.monotonic()
    with pytest.raises(StartupError) as excinfo:
        await open_runtime(settings, wait=0.8)
    assert time.monotonic() - started >= 0.5
    message = str(excinfo.value)
    assert message.startswith("database_url: cannot reach")
    assert "hunter2" not in message


async def test_the_server_starts_once_a_late_database_listens(
    settings_overrides: dict[str, Any], database_url: str
) -> None:
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("an embedded SQLite database is never late")
    async with _late_forwarder(url.port or 5432, after=1.0) as port:
        late = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        settings = load_settings(environ={}, overrides={**settings_overrides, "database_url": late})
        started = time.monotonic()
        rt = await open_runtime(settings, wait=10)
        try:
            assert time.monotonic() - started >= 0.9
            assert await rt.db.schema_revision() is not None
        finally:
            await rt.close()


async def test_the_server_starts_once_a_late_redis_listens(settings_overrides: dict[str, Any]) -> None:
    redis_url = settings_overrides.get("redis_url") or ""
    if not redis_url:
        pytest.skip("the in-process store is never late")
    parts = urlsplit(redis_url)
    async with _late_forwarder(parts.port or 6379, after=1.0) as port:
        late = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        settings = load_settings(environ={}, overrides={**settings_overrides, "redis_url": late})
        started = time.monotonic()
        rt = await open_runtime(settings, wait=10)
        try:
            assert time.monotonic() - started >= 0.9
            await rt.kv.ping()
        finally:
            await rt.close()
