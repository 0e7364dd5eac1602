"""Prometheus metrics at /metrics: what is counted, by which labels, and who may read them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from idp import create_app
from idp.config import load_settings
from idp.metrics import metrics_of
from tests.conftest import TEST_REDIS_URL
from tests.e2e.server import IDP, free_port, run_idp, running
from tests.oauth_helpers import basic, code_flow, login, make_world

TOKEN = "scrape-token-" + "x" * 32
LOCAL = {"client": ("127.0.0.1", 50000)}  # the test client's own peer is no address at all


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(client: Any, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics", headers=headers, scope_base=LOCAL)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(await response.get_data(as_text=True))


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_requests_are_counted_by_route_template_and_status(client: Any) -> None:
    for sid in ("a" * 20, "b" * 20, "c" * 20):
        await client.get(f"/account/sessions/{sid}/end")  # three raw paths, one route template
    await client.get("/no/such/page/" + "z" * 30)
    await client.get("/healthz")
    await client.open("/healthz", method="BREW")
    found = await scrape(client)
    routes = {dict(labels).get("route") for (name, labels) in found if name == "idp_http_requests_total"}
    assert "/account/sessions/<sid>/end" in routes
    assert not any(route and ("aaaa" in route or "zzzz" in route) for route in routes), routes
    assert value(found, "idp_http_requests_total", method="GET", route="/healthz", status="200") == 1
    assert value(found, "idp_http_requests_total", method="GET", route="unmatched", status="404") == 1
    # an invented method is one label value, not a new one per caller
    assert not any(dict(labels).get("method") == "BREW" for (_, labels) in found)
    assert value(found, "idp_http_request_duration_seconds_count", route="/healthz") >= 1
    assert value(found, "idp_http_request_duration_seconds_bucket", route="/healthz", le="10.0") >= 1


async def test_tokens_sign_ins_and_revocations_come_from_the_event_bus(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    refused = await login(client, world.email, password="not-the-password-at-all")
    assert refused.status_code == 401
    tokens = await code_flow(client, world)
    refreshed = await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(world.web_id, world.web_secret),
    )
    assert refreshed.status_code == 200
    access_token = (await refreshed.get_json())["access_token"]
    revoked = await client.post("/revoke", form={"token": access_token}, headers=basic(world.web_id, world.web_secret))
    assert revoked.status_code == 200
    machine = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic(world.web_id, world.web_secret)
    )
    assert machine.status_code == 200, await machine.get_data(as_text=True)
    found = await scrape(client)
    assert value(found, "idp_tokens_issued_total", grant_type="client_credentials") == 1
    assert value(found, "idp_tokens_issued_total", grant_type="authorization_code") == 1
    assert value(found, "idp_tokens_issued_total", grant_type="refresh_token") == 1
    assert value(found, "idp_sign_ins_total", outcome="success", factor="pwd") == 1
    assert value(found, "idp_sign_ins_total", outcome="invalid_credentials", factor="password") == 1
    assert value(found, "idp_tokens_revoked_total", reason="client_request", token_type="access_token") == 1
    # the signing keys' age, computed at the scrape
    ages = {dict(labels)["alg"]: v for (name, labels), v in found.items() if name == "idp_signing_key_age_seconds"}
    assert set(ages) == set(runtime.settings.keys.algorithms) and all(0 <= age < 600 for age in ages.values())
    assert value(found, "idp_metrics_source_up", source="idp_signing_key_age_seconds") == 1


async def test_the_outbox_is_reported_from_its_table(client: Any, runtime: Any) -> None:
    from idp.outbox.operations import outbox_stats

    stats = await outbox_stats(runtime.db)
    found = await scrape(client)
    for gauge in ("idp_outbox_depth", "idp_outbox_dead_letters", "idp_outbox_oldest_age_seconds"):
        assert value(found, "idp_metrics_source_up", source=gauge) == 1, gauge
    assert ("idp_outbox_oldest_age_seconds", ()) in found
    for kind, by_status in stats.counts.items():
        assert value(found, "idp_outbox_depth", kind=kind) == by_status["pending"]


async def test_rate_limit_hits_and_gauge_sources(settings_overrides: dict[str, Any]) -> None:
    limits = {"token_per_ip": {"requests": 1, "window": 60}}
    app = create_app(load_settings(environ={}, overrides={**settings_overrides, "rate_limits": limits}))
    async with app.test_app():
        client = app.test_client()
        statuses = [
            (await client.post("/token", form={"grant_type": "client_credentials"})).status_code for _ in range(3)
        ]
        assert statuses[1:] == [429, 429]
        await check_gauge_sources(app, client)


async def check_gauge_sources(app: Any, client: Any) -> None:
    metrics = metrics_of(app)
    assert metrics is not None

    async def depth() -> dict[str, float]:
        return {"mail": 3, "logout": 1}

    async def broken() -> float:
        raise RuntimeError("database away")

    metrics.register_gauge_source("idp_test_depth", "Messages waiting.", depth, label="kind")
    metrics.register_gauge_source("idp_test_oldest_age_seconds", "Oldest waiting.", broken)
    with pytest.raises(ValueError, match="has a source already"):
        metrics.register_gauge_source("idp_test_depth", "twice", depth, label="kind")
    with pytest.raises(ValueError, match="idp_\\*"):
        metrics.register_gauge_source("outbox", "no prefix", depth)
    found = await scrape(client)
    assert value(found, "idp_rate_limited_total", route="/token") == 2
    assert value(found, "idp_http_requests_total", method="POST", route="/token", status="429") == 2
    assert value(found, "idp_test_depth", kind="mail") == 3
    assert value(found, "idp_metrics_source_up", source="idp_test_depth") == 1
    # a failing source leaves its gauge out and says so; the scrape still answers
    assert ("idp_test_oldest_age_seconds", ()) not in found
    assert value(found, "idp_metrics_source_up", source="idp_test_oldest_age_seconds") == 0


async def test_without_a_token_only_unproxied_loopback_callers_are_answered(client: Any) -> None:
    assert (await client.get("/metrics", scope_base=LOCAL)).status_code == 200
    # a proxy on this host makes every caller look local: a forwarded request is not local
    forwarded = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, scope_base=LOCAL)
    assert forwarded.status_code == 404
    assert (await client.get("/metrics")).status_code == 404  # no peer address: not local either
    remote = await client.get("/metrics", scope_base={"client": ("203.0.113.9", 4000)})
    assert remote.status_code == 404


async def test_with_a_token_the_scraper_must_present_it(settings_overrides: dict[str, Any]) -> None:
    settings = load_settings(environ={}, overrides={**settings_overrides, "metrics": {"bearer_token": TOKEN}})
    app = create_app(settings)
    async with app.test_app():
        client = app.test_client()
        missing = await client.get("/metrics", scope_base=LOCAL)  # a token is needed even locally
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
        wrong = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN[:-1]}y"})
        assert wrong.status_code == 401
        good = await client.get(
            "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, scope_base={"client": ("203.0.113.9", 1)}
        )
        assert good.status_code == 200
        assert re.search(r"^idp_http_requests_total\{", await good.get_data(as_text=True), re.M)


async def test_switched_off_there_is_no_such_page(settings_overrides: dict[str, Any]) -> None:
    settings = load_settings(environ={}, overrides={**settings_overrides, "metrics": {"enabled": False}})
    app = create_app(settings)
    async with app.test_app():
        assert (await app.test_client().get("/metrics")).status_code == 404


@pytest.fixture
def shared_redis_url() -> Iterator[str]:
    """Several workers need Redis: CI's (with this test's key prefix), or a private one."""
    if TEST_REDIS_URL:
        yield TEST_REDIS_URL
        return
    if shutil.which("redis-server") is None:
        pytest.skip("several workers need Redis: set IDP_TEST_REDIS_URL or install redis-server")
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.server
def test_counts_add_up_across_two_workers(cli_env: dict[str, str], shared_redis_url: str, tmp_path: Path) -> None:
    """Two `idp serve` workers: every scrape, whichever worker answers it, counts every request."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left over from an earlier run")
    env = {
        **cli_env,
        "IDP_REDIS_URL": shared_redis_url,
        "IDP_SERVER__PORT": str(port),
        "IDP_SERVER__WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    run_idp(env, "db", "upgrade")
    base = f"http://127.0.0.1:{port}"
    sent = 200

    def probe(_: int) -> int:
        # a new connection each time, so the kernel spreads them over both workers' accept queues
        with httpx.Client(timeout=10) as http:
            return http.get(f"{base}/healthz").status_code

    with running([IDP, "serve"], env, port) as server:
        assert not (metrics_dir / "counter_999999.db").exists(), "stale files are removed at start"
        time.sleep(1.5)  # both workers have written the tally of running()'s /healthz polls
        healthy_before = _healthz_count(base)
        with ThreadPoolExecutor(max_workers=16) as pool:
            assert set(pool.map(probe, range(sent))) == {200}
        writers = {path.name for path in metrics_dir.glob("counter_*.db")}
        assert len(writers) == 2, f"both workers counted requests: {writers}"
        # Each worker writes its tally once a second: within two, every scrape (answered by either
        # worker) counts every request, and keeps counting exactly that many.
        deadline = time.monotonic() + 5
        while _healthz_count(base) != healthy_before + sent:
            assert time.monotonic() < deadline, _healthz_count(base)
            time.sleep(0.2)
        counts = {_healthz_count(base) for _ in range(10)}
        assert counts == {healthy_before + sent}, counts
    assert "Traceback" not in server.output(), server.output()


def _healthz_count(base: str) -> float:
    with httpx.Client(timeout=10) as http:
        response = http.get(f"{base}/metrics")
    assert response.status_code == 200, response.text
    return value(samples(response.text), "idp_http_requests_total", method="GET", route="/healthz", status="200")


async def test_an_account_lock_is_counted(settings_overrides: dict[str, Any]) -> None:
    lockout = {"delay_after": 2, "lock_after": 2, "max_delay": 1, "lock_duration": 600}
    app = create_app(load_settings(environ={}, overrides={**settings_overrides, "lockout": lockout}))
    async with app.test_app():
        client = app.test_client()
        world = await make_world(app.extensions["idp"])
        statuses = [(await login(client, world.email, password=f"wrong-password-{n}")).status_code for n in range(4)]
        assert statuses[:2] == [401, 401] and statuses[-1] != 401, statuses
        found = await scrape(client)
    assert value(found, "idp_account_locks_total", scope="account_ip") == 1, found
    assert value(found, "idp_sign_ins_total", outcome="invalid_credentials", factor="password") == 2
    # the attempts after the lock, counted by their reason
    assert value(found, "idp_sign_ins_total", outcome="locked", factor="password") == 2


def test_a_private_metrics_directory_is_removed_by_its_maker_or_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from idp import server

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    environ: dict[str, str] = {}
    made = server.prepare_metrics_directory(environ)
    assert environ["PROMETHEUS_MULTIPROC_DIR"] == str(made) and made.parent == tmp_path
    # a worker (another pid) leaves it alone; its maker removes it
    (made / "counter_1.db").write_bytes(b"")
    monkeypatch.setattr(server.os, "getpid", lambda: 4_000_000)
    server.release_metrics_directory(str(made))
    assert made.exists()
    monkeypatch.undo()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    server.release_metrics_directory(str(made))
    assert not made.exists()
    # one whose maker was killed is removed at the next start; a live one and an operator's stay
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned, live, foreign = tmp_path / "idp-metrics-dead", tmp_path / "idp-metrics-live", tmp_path / "idp-metrics-x"
    for directory, owner in ((abandoned, str(dead.pid)), (live, str(os.getpid())), (foreign, None)):
        directory.mkdir()
        if owner is not None:
            (directory / "owner.pid").write_text(owner)
    again = server.prepare_metrics_directory({})
    assert not abandoned.exists() and live.exists() and foreign.exists() and again.exists()
    server.release_metrics_directory(str(again))
    # an operator's directory is emptied of earlier files, never removed
    own = tmp_path / "operator"
    own.mkdir()
    (own / "counter_7.db").write_bytes(b"")
    assert server.prepare_metrics_directory({"PROMETHEUS_MULTIPROC_DIR": str(own)}) == own
    assert own.exists() and not list(own.glob("*.db"))
