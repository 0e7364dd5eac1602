"""The event-loop stall probe ([server] loop_lag_probe, for benchmarks): off by default (404); on,
/debug/loop-lag reports the longest stall since the last read, to loopback callers only."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

LOOPBACK = {"client": ("127.0.0.1", 1234)}


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**settings_overrides, **getattr(request, "param", {})}


async def test_the_probe_is_off_by_default(client: Any) -> None:
    assert (await client.get("/debug/loop-lag", scope_base=LOOPBACK)).status_code == 404


@pytest.mark.parametrize("settings_overrides", [{"server": {"loop_lag_probe": True}}], indirect=True)
async def test_a_blocked_loop_is_reported_then_the_count_starts_over(client: Any) -> None:
    await asyncio.sleep(0.02)
    time.sleep(0.08)  # noqa: ASYNC251 - the point: a step that blocks the event loop
    await asyncio.sleep(0.02)
    first = await client.get("/debug/loop-lag", scope_base=LOOPBACK)
    report = await first.get_json()
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    assert report["max_stall_ms"] >= 70 and report["samples"] >= 2
    assert report["pid"] == os.getpid()  # which worker answered (each has its own probe)
    await asyncio.sleep(0.02)
    again = await (await client.get("/debug/loop-lag", scope_base=LOOPBACK)).get_json()
    assert again["max_stall_ms"] < 70  # read and reset
    remote = await client.get("/debug/loop-lag", scope_base={"client": ("203.0.113.5", 1234)})
    assert remote.status_code == 404  # loopback callers only


@pytest.mark.parametrize("settings_overrides", [{"server": {"loop_lag_probe": True}}], indirect=True)
async def test_the_probe_counts_the_requests_the_worker_answered_since_the_last_read(client: Any) -> None:
    await client.get("/debug/loop-lag", scope_base=LOOPBACK)
    for path in ("/jwks", "/.well-known/openid-configuration", "/no-such-page"):
        await client.get(path)
    await client.post("/token", form={"grant_type": "client_credentials"})
    report = await (await client.get("/debug/loop-lag", scope_base=LOOPBACK)).get_json()
    assert report["requests"] == 5  # the four, and the read before them (counted once it was answered)
    again = await (await client.get("/debug/loop-lag", scope_base=LOOPBACK)).get_json()
    assert again["requests"] == 1
