"""`idp serve` with several workers (idp.workers): each worker listens on a socket of its own
(SO_REUSEPORT), so connections are spread over all of them instead of piling onto whichever
accepts first; a worker that dies is replaced; SIGTERM stops them all.

Needs Redis (several workers share state through it): IDP_TEST_REDIS_URL, as CI's second stage
sets. Without it the test skips, unless IDP_TEST_REQUIRE_REDIS=1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import IDP, free_port, production_env, run_idp, running

pytestmark = pytest.mark.server


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("IDP_TEST_REDIS_URL", "")
    if not url:
        message = "several workers share state through Redis: set IDP_TEST_REDIS_URL"
        if os.environ.get("IDP_TEST_REQUIRE_REDIS") == "1":
            pytest.fail(message + " (IDP_TEST_REQUIRE_REDIS=1)")
        pytest.skip(message)
    return url


def worker_pids(output: str) -> Counter[int]:
    """Requests per worker process, from the JSON access log lines."""
    counts: Counter[int] = Counter()
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("logger") == "idp.access" and entry.get("path") == "/healthz":
            counts[int(entry["pid"])] += 1
    return counts


def test_connections_are_spread_over_every_worker_and_a_dead_one_is_replaced(
    tmp_path: Path, cli_env: dict[str, str], redis_url: str
) -> None:
    port = free_port()
    env = {
        **production_env(tmp_path, port),
        "IDP_DATABASE_URL": cli_env["IDP_DATABASE_URL"],
        "IDP_REDIS_URL": redis_url,
        "IDP_REDIS_KEY_PREFIX": cli_env["IDP_REDIS_KEY_PREFIX"],
        "IDP_LOG__FORMAT": "json",
    }
    run_idp(env, "db", "upgrade")
    with running([IDP, "serve", "--workers", "2"], env, port) as server:
        # 200 requests, each on a connection of its own (as many clients would open them).
        for _ in range(200):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Connection": "close"}).status_code == 200
        deadline = time.monotonic() + 5
        while sum(worker_pids(server.output()).values()) < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        counts = worker_pids(server.output())
        assert sum(counts.values()) >= 200, counts  # and the start-up health checks
        assert len(counts) == 2, counts
        # Spread by the kernel's hash of each connection: far from 200/0 (a shared socket often
        # gave one worker everything). 40 is more than eight standard deviations below 100.
        assert min(counts.values()) >= 40, counts

        # Killing a worker: the supervisor starts another, and the server keeps answering.
        victim = next(iter(counts))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        replaced: set[int] = set()
        while time.monotonic() < deadline and not replaced:
            for _ in range(20):
                # A connection the kernel had already queued at the killed worker's socket is
                # reset with it (SIGKILL leaves nobody to accept it): a client retries that one.
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Connection": "close"})
            replaced = set(worker_pids(server.output())) - set(counts)
            time.sleep(0.2)
        assert replaced, "no new worker answered after one was killed"
        # Once replaced, every connection is answered again, by either worker.
        for _ in range(50):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Connection": "close"}).status_code == 200
    # SIGTERM (running's exit) stopped the supervisor and its workers: the port is free again.
    assert server.returncode == 0, server.output()[-2000:]
    with httpx.Client() as probe, pytest.raises(httpx.ConnectError):
        probe.get(f"http://127.0.0.1:{port}/healthz")
