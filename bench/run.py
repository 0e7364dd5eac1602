"""idp side by side with node-oidc-provider 9 (issue 14): wrk and a Python load generator, A B A B,
results in bench/RESULTS.md.

    .venv/bin/python bench/run.py [--duration 10] [--rounds 2] [--scenarios cc_es256 refresh ...]
    .venv/bin/python bench/run.py --soak 600        # mixed load on idp PostgreSQL + Redis, RSS sampled

Installs the peer from bench/peer/package-lock.json (`npm ci`) when needed, then per signing
algorithm starts three servers on 127.0.0.1:

- peer: node-oidc-provider (NODE_ENV=production), bench/peer/server.mjs;
- idp PostgreSQL + Redis: `idp serve`, production settings, workers = cores, a fresh database
  bench_<random> on the local PostgreSQL and a fresh Redis key prefix;
- idp embedded: `idp serve`, production settings on the defaults (SQLite file, in-process store,
  1 worker).

Each has one confidential client (client_secret_basic; client_credentials for scope `api`,
authorization_code, refresh_token) and one user access token minted by the code flow (idp) or the
provider's own models (peer), plus refresh-token families and users when the group's scenarios need
them. After a warm-up per server, each scenario runs `--rounds` times in the order peer, idp PG,
idp embedded (A B A B): the fixed requests with wrk (bench/wrk/request.lua, no response() callback,
1 thread, 8 connections), the chained ones with bench/loadgen.py (bench/flows.py: refresh with
rotation, authorization-code exchange, password sign-in beside the bare argon2id rate, the token
endpoint during a sign-in storm). The embedded configuration also runs at 2 connections for its p99
target. idp's loop-lag probe is read per worker after each scenario, and each serving process's
resident memory after each group. Everything stops by itself; every child runs under a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import flows
import httpx
import probes
import report
from loadgen import Measurement, basic
from scenarios import (
    CC,
    CONNECTIONS,
    FAMILIES_PER_WORKER,
    IDP_SERVERS,
    LABELS,
    LOW_CONNECTIONS,
    SCENARIOS,
    SIGNIN_CLIENTS,
    SIGNIN_USERS,
    Scenario,
    X,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEER = BENCH / "peer"
LUA = BENCH / "wrk" / "request.lua"
IDP = str(Path(sys.executable).with_name("idp"))
ALGS = ("RS256", "ES256", "Ed25519")  # idp's default key set; the first listed signs access tokens
REDIRECT = flows.REDIRECT
PASSWORD = "quarry-lantern-harbor-5521"  # noqa: S105 - the throwaway accounts of a benchmark
POSTGRES = os.environ.get("IDP_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("IDP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
ACCESS_TOKEN_TTL = 3600  # both servers: tokens minted at start must outlive the run
LOG_PROBLEMS: dict[str, str] = {}  # server and group -> what its log said at warning level or above
# The soak's mixed load: generator workers per kind (refresh: FAMILIES_PER_WORKER families each).
SOAK_WORKERS = {"client_credentials": 3, "userinfo": 3, "refresh": 2}
SOAK_ALG = "ES256"


# -- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(args: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None, timeout: int = 300) -> str:
    done = subprocess.run(args, env=env, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(args[:3])}: exit {done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}"
        )
    return done.stdout


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log: Path, limit: int) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process group, stopped (SIGTERM, then SIGKILL) on exit; `timeout` bounds it."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["timeout", "--signal=TERM", "--kill-after=10", str(limit), *command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def wait_until(url: str, log: Path, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up:\n{log.read_text(errors='replace')[-3000:]}")


# -- the peer -------------------------------------------------------------------------------------


def install_peer() -> None:
    marker = PEER / "node_modules" / ".package-lock.json"
    lock = PEER / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        run(["npm", "ci", "--prefix", str(PEER), "--no-audit", "--no-fund"], timeout=300)


@dataclass
class Server:
    name: str
    base: str
    client_id: str
    client_secret: str
    user_token: str
    pid: int = 0  # the root of its process tree (the `timeout` wrapper)
    refresh_tokens: list[str] = field(default_factory=list)  # one per token family
    emails: list[str] = field(default_factory=list)  # idp: the users that sign in
    workers: int = 1
    argon2: dict[str, int] = field(default_factory=dict)  # idp: its [password_hash] parameters
    hash_pool: flows.HashPool | None = None  # idp: the threads it hashes in
    loads: dict[str, Any] = field(default_factory=dict)  # the generator's state per scenario kind

    @property
    def port(self) -> int:
        return int(urlsplit(self.base).port or 80)

    @property
    def client(self) -> flows.Client:
        return flows.Client(self.base, self.client_id, self.client_secret)


@contextlib.contextmanager
def peer(alg: str, workdir: Path, limit: int, families: int = 0) -> Iterator[Server]:
    port = free_port()
    secret = secrets.token_urlsafe(32)
    env = {**os.environ, "NODE_ENV": "production"}
    command = [
        "node",
        str(PEER / "server.mjs"),
        "--port",
        str(port),
        "--alg",
        alg,
        "--client-id",
        "bench",
        "--client-secret",
        secret,
        "--access-token-ttl",
        str(ACCESS_TOKEN_TTL),
        "--refresh-tokens",
        str(families),
    ]
    log = workdir / f"peer-{alg}.log"
    with started(command, env, log, limit) as process:
        deadline = time.monotonic() + 30
        ready = None
        while ready is None and time.monotonic() < deadline and process.poll() is None:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith('{"ready"'):
                    ready = json.loads(line)
            time.sleep(0.1)
        if ready is None:
            raise SystemExit(f"peer did not start:\n{log.read_text(errors='replace')[-3000:]}")
        server = Server("peer", ready["issuer"], "bench", secret, ready["user_access_token"], process.pid)
        server.refresh_tokens = list(ready["refresh_tokens"])
        yield server


# -- idp ------------------------------------------------------------------------------------------


def limit_json(requests: int, window: int) -> str:
    return json.dumps({"requests": requests, "window": window})


def idp_env(alg: str, issuer: str, database_url: str, data: Path, redis_url: str, workers: int) -> dict[str, str]:
    from idp.config import generate_secrets

    keys = generate_secrets()
    never = limit_json(1_000_000, 1)
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("IDP_")},
        "IDP_ISSUER": issuer,
        "IDP_DATABASE_URL": database_url,
        "IDP_DATA_DIR": str(data),
        "IDP_SERVER__PORT": str(urlsplit(issuer).port),
        "IDP_SERVER__WORKERS": str(workers),
        # /debug/loop-lag, read from loopback after each scenario (idp.observability.LoopLagProbe).
        "IDP_SERVER__LOOP_LAG_PROBE": "true",
        "IDP_SECRETS__COOKIE_SECRET": keys["cookie_secret"],
        "IDP_SECRETS__KEY_ENCRYPTION_KEY": keys["key_encryption_key"],
        "IDP_SECRETS__PAIRWISE_SECRET": keys["pairwise_secret"],
        "IDP_KEYS__ALGORITHMS": json.dumps([alg, *(other for other in ALGS if other != alg)]),
        "IDP_TOKENS__ACCESS_TOKEN_TTL": str(ACCESS_TOKEN_TTL),
        # The limits stay on (their counters are part of every request's work) but high enough
        # never to answer 429 during a run: 1,000,000 requests per second. The sign-in lockout
        # counts failures only, and the bench makes none.
        "IDP_RATE_LIMITS__TOKEN_PER_IP": never,
        "IDP_RATE_LIMITS__TOKEN_PER_CLIENT": never,
        "IDP_RATE_LIMITS__LOGIN_PER_IP": never,
        "IDP_RATE_LIMITS__LOGIN_PER_ACCOUNT": never,
        # A few users sign in thousands of times: with a session limit each sign-in past the tenth
        # would end the user's oldest session, which a crowd of distinct users never does.
        "IDP_SESSIONS__MAX_PER_USER": "0",
    }
    if redis_url:
        env["IDP_REDIS_URL"] = redis_url
        env["IDP_REDIS_KEY_PREFIX"] = f"bench-{secrets.token_hex(4)}:"
    return env


def password_hashing(env: dict[str, str]) -> tuple[dict[str, int], flows.HashPool]:
    """The argon2id parameters and hashing pool the server will have: its [password_hash]
    settings, read from its own environment."""
    from idp.config import load_settings

    hashing = load_settings(environ=env).password_hash
    params = {
        "time_cost": hashing.time_cost,
        "memory_cost": hashing.memory_cost_kib,
        "parallelism": hashing.parallelism,
    }
    return params, flows.hash_pool(hashing.threads, hashing.queue_limit)


def create_client(env: dict[str, str]) -> dict[str, str]:
    scopes = ("api", "openid", "profile", "email", "offline_access")
    grants = ("client_credentials", "authorization_code", "refresh_token")
    command = [IDP, "clients", "create", "--name", "Bench", "--confidential", "--first-party"]
    command += [part for grant in grants for part in ("--grant", grant)]
    command += [part for scope in scopes for part in ("--scope", scope)]
    command += ["--redirect-uri", REDIRECT, "--json"]
    return dict(json.loads(run(command, env=env)))


def create_user(env: dict[str, str], email: str) -> None:
    run(
        [IDP, "users", "create", "--email", email, "--name", "Bench User", "--password-stdin", "--verified"],
        env=env,
        stdin=PASSWORD + "\n",
    )


@contextlib.contextmanager
def idp_server(
    name: str, alg: str, workdir: Path, limit: int, *, families: int = 0, users: int = 0
) -> Iterator[Server]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    data = workdir / f"{name}-{alg}"
    data.mkdir()
    database = ""
    workers = 1
    if name == "idp_pg":
        database = f"bench_{secrets.token_hex(6)}"
        asyncio.run(postgres(f"CREATE DATABASE {database}"))
        database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
        workers = os.cpu_count() or 1
        env = idp_env(alg, issuer, database_url, data, REDIS, workers)
    else:
        env = idp_env(alg, issuer, f"sqlite+aiosqlite:///{data / 'idp.sqlite3'}", data, "", 1)
    try:
        run([IDP, "db", "upgrade"], env=env)
        client = create_client(env)
        email = "bench@example.com"
        emails = [f"bench-{number}@example.com" for number in range(1, users + 1)]
        for address in (email, *emails):
            create_user(env, address)
        log = workdir / f"{name}-{alg}.log"
        with started([IDP, "serve"], env, log, limit) as process:
            wait_until(f"{issuer}/healthz", log, process)
            server = Server(name, issuer, client["client_id"], client["client_secret"], "", process.pid)
            server.user_token, server.refresh_tokens = flows.idp_tokens(server.client, email, PASSWORD, families)
            server.emails, server.workers = emails, workers
            server.argon2, server.hash_pool = password_hashing(env)
            yield server
        LOG_PROBLEMS[f"{LABELS[name]}, {alg} group"] = log_problems(log)
    finally:
        if database:
            asyncio.run(postgres(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            if "IDP_REDIS_KEY_PREFIX" in env:
                asyncio.run(redis_clear(env["IDP_REDIS_KEY_PREFIX"]))


def log_problems(log: Path) -> str:
    """idp's log lines at warning level or above, counted by logger and message."""
    counts: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if re.search(r"Traceback|^ERROR|^WARNING|^CRITICAL", line):
                counts[line[:200]] = counts.get(line[:200], 0) + 1
            continue
        if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
            key = f"{entry['level']} {entry.get('logger')}: {str(entry.get('msg'))[:200]}"
            counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"`{key}` {X}{count}" for key, count in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


async def postgres(statement: str) -> str:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES)
    try:
        if statement.startswith("SHOW"):
            return str(await connection.fetchval(statement))
        await connection.execute(statement)
        return ""
    finally:
        await connection.close()


async def redis_clear(prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


async def redis_version() -> str:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS)
    try:
        return str((await client.info("server"))["redis_version"])
    finally:
        await client.aclose()


# -- wrk ------------------------------------------------------------------------------------------


def request_env(scenario: Scenario, server: Server) -> dict[str, str]:
    body = scenario.body.replace("{user}", server.user_token)
    auth = ""
    if scenario.auth == "client":
        auth = basic(server.client_id, server.client_secret)
    elif scenario.auth == "user":
        auth = f"Bearer {server.user_token}"
    return {"BENCH_METHOD": scenario.method, "BENCH_BODY": body, "BENCH_AUTHORIZATION": auth}


def check(scenario: Scenario, server: Server) -> None:
    """One request before the load: a 2xx with the expected content, so wrk's errors mean load."""
    env = request_env(scenario, server)
    headers = {"Authorization": env["BENCH_AUTHORIZATION"]} if env["BENCH_AUTHORIZATION"] else {}
    if env["BENCH_BODY"]:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    answer = httpx.request(
        scenario.method, server.base + scenario.path, content=env["BENCH_BODY"] or None, headers=headers, timeout=10
    )
    ok = answer.status_code == 200
    if ok and scenario.path == "/token":
        header = json.loads(base64.urlsafe_b64decode(answer.json()["access_token"].split(".")[0] + "=="))
        ok = header["alg"] == scenario.alg
    if ok and scenario.path == "/introspect":
        ok = answer.json().get("active") is True
    if not ok:
        raise SystemExit(f"{server.name} {scenario.name}: {answer.status_code} {answer.text[:500]}")


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(scenario: Scenario, server: Server, duration: int, connections: int) -> Measurement:
    env = {**os.environ, **request_env(scenario, server)}
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{duration}s",
            "--timeout",
            "5s",
            "--latency",
            "-s",
            str(LUA),
            server.base + scenario.path,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and total):
        raise SystemExit(f"unexpected wrk output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return Measurement(float(rps.group(1)), to_ms(p50.group(1)), to_ms(p99.group(1)), errors, int(total.group(1)))


# -- versions -------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    def out(args: list[str]) -> str:
        done = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT, timeout=30)
        return (done.stdout or done.stderr).strip()

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        line.split(":", 1)[1].strip()
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    package = json.loads((PEER / "node_modules" / "oidc-provider" / "package.json").read_text())
    import uvicorn

    dirty = (
        " (with uncommitted changes by others in the work tree)"
        if out(["git", "status", "--porcelain", "--", "idp"])
        else ""
    )
    return {
        "idp": f"{out([IDP, '--version']).split()[-1]} at commit {out(['git', 'rev-parse', '--short', 'HEAD'])}{dirty}",
        "Python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "node-oidc-provider": package["version"],
        "Node.js": out(["node", "--version"]),
        "wrk": out(["wrk", "-v"]).splitlines()[0],
        "PostgreSQL": asyncio.run(postgres("SHOW server_version")),
        "Redis": asyncio.run(redis_version()),
        "machine": f"{os.cpu_count()} cores ({cpu}), {memory} RAM, {platform.platform()}",
        "load average at the end (1, 5, 15 min)": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


# -- the generator's scenarios --------------------------------------------------------------------


def load_of(scenario: Scenario, server: Server) -> flows.RefreshFamilies | flows.CodeExchanges | flows.SignIns:
    """The generator's state for this scenario on this server, made once (token families go on
    rotating, browsers stay signed in or keep their device cookies, from round to round)."""
    kind = "signin" if scenario.kind == "storm" else scenario.kind
    if kind not in server.loads:
        if kind == "refresh":
            server.loads[kind] = flows.RefreshFamilies(server.client, list(server.refresh_tokens))
        elif kind == "code":
            jars = (
                flows.peer_sessions(server.client, CONNECTIONS)
                if server.name == "peer"
                else flows.idp_sessions(server.client, CONNECTIONS, "bench@example.com", PASSWORD)
            )
            server.loads[kind] = flows.CodeExchanges(server.client, jars)
        elif kind == "signin":
            server.loads[kind] = flows.SignIns(server.base, server.emails, PASSWORD)
        else:
            raise ValueError(scenario.kind)
    load = server.loads[kind]
    assert isinstance(load, flows.RefreshFamilies | flows.CodeExchanges | flows.SignIns)
    return load


def measure(scenario: Scenario, server: Server, duration: int, workers: int) -> Measurement:
    if scenario.kind in ("wrk", "storm"):
        return wrk(scenario, server, duration, workers)
    return flows.measure(load_of(scenario, server), duration, workers)


def workers_for(scenario: Scenario) -> int:
    return SIGNIN_CLIENTS if scenario.kind == "signin" else CONNECTIONS


def prepare(scenario: Scenario, server: Server, warmup: int) -> None:
    """The scenario's first operation must succeed; then the warm-up."""
    if scenario.kind in ("wrk", "storm"):
        check(scenario, server)
    else:
        try:
            flows.check(load_of(scenario, server))
        except flows.LoadError as exc:
            raise SystemExit(f"{server.name} {scenario.name}: {exc}") from None
    measure(scenario, server, warmup, workers_for(scenario))
    if scenario.kind == "storm":  # the browsers' first sign-ins (new devices) before any storm
        flows.measure(load_of(scenario, server), warmup, SIGNIN_CLIENTS)


def loop_lag(server: Server) -> list[tuple[int, float | None]]:
    """Each worker's longest stall since the last read (which this resets), in pid order; None for
    a worker no fresh connection reached."""
    return [(pid, stall) for pid, stall, _ in worker_readings(server)]


def worker_readings(server: Server) -> list[tuple[int, float | None, int | None]]:
    """Each worker's longest stall and the requests it answered since the last read (which this
    resets), in pid order; None for a worker no fresh connection reached."""
    readings = probes.read_workers(server.base, server.pid, server.port)
    return [
        (pid, *(readings[pid] if pid in readings else (None, None)))
        for pid in probes.serving_pids(server.pid, server.port)
    ]


def show(scenario: Scenario, number: int, key: str, measured: Measurement) -> None:
    rate = f"{measured.rps:>9,.0f}" if measured.rps >= 100 else f"{measured.rps:>9,.1f}"
    cpu = f" generator {measured.client_cpu:.2f} cores" if measured.client_cpu is not None else ""
    print(
        f"{scenario.name:<14} round {number + 1} {key:<20} {rate}/s p50 {measured.p50_ms:.2f} "
        f"p99 {measured.p99_ms:.2f} ms errors {measured.errors}{cpu}",
        flush=True,
    )


def run_rounds(scenario: Scenario, servers: dict[str, Server], args: argparse.Namespace, out: report.Results) -> None:
    rows: dict[str, list[Measurement]] = out.results.setdefault(scenario.name, {})
    names = [name for name in scenario.servers if name in servers]

    def record(number: int, key: str, measured: Measurement) -> None:
        rows.setdefault(key, []).append(measured)
        show(scenario, number, key, measured)

    for number in range(args.rounds):
        if scenario.kind == "signin":
            for name in names:
                server = servers[name]
                params, pool = server.argon2, server.hash_pool
                assert pool is not None
                out.hash_pool = (
                    f"argon2id, time_cost {params['time_cost']}, memory {params['memory_cost']} KiB, parallelism "
                    f"{params['parallelism']} (the servers' [password_hash] settings); hashed in {pool.description}"
                )
                out.labels[f"argon2:{name}"] = (
                    f"bare argon2id verify, {server.workers} process{'es' if server.workers > 1 else ''} "
                    f"{X} {pool.threads} threads at nice +{pool.niceness} (as {LABELS[name]})"
                )
                record(number, f"argon2:{name}", flows.argon2_rate(params, server.workers, pool, args.duration))
                record(number, name, measure(scenario, server, args.duration, SIGNIN_CLIENTS))
        elif scenario.kind == "storm":
            server = servers["idp_pg"]
            out.labels.update(
                {
                    "idp_pg:calm": f"{LABELS['idp_pg']}, alone",
                    "idp_pg:storm": f"{LABELS['idp_pg']}, while {SIGNIN_CLIENTS} browsers sign in",
                    "signins:storm": "sign-ins/s during the storm (Python generator)",
                }
            )
            record(number, "idp_pg:calm", wrk(scenario, server, args.duration, CONNECTIONS))
            sign_ins = load_of(scenario, server)
            assert isinstance(sign_ins, flows.SignIns)

            def tokens(server: Server = server) -> Measurement:
                return wrk(scenario, server, args.duration, CONNECTIONS)

            stormy, signins = flows.storm(sign_ins, SIGNIN_CLIENTS, tokens)
            record(number, "idp_pg:storm", stormy)
            record(number, "signins:storm", signins)
        else:
            for name in names:
                record(number, name, measure(scenario, servers[name], args.duration, CONNECTIONS))
        if scenario.low and "idp_embedded" in names:
            measured = measure(scenario, servers["idp_embedded"], args.duration, LOW_CONNECTIONS)
            out.low.setdefault(scenario.name, []).append(measured)
            show(scenario, number, f"idp_embedded@{LOW_CONNECTIONS}", measured)


def run_group(
    alg: str,
    group: list[Scenario],
    args: argparse.Namespace,
    workdir: Path,
    out: report.Results,
    reference: probes.ReferenceLoop,
) -> None:
    per_run = args.duration + 2
    # An upper bound for the servers' lives: every run of the group, plus start-up and set-up.
    limit = 300 + len(group) * (4 * args.warmup + 6 * args.rounds * per_run + 60)
    kinds = {scenario.kind for scenario in group}
    families = CONNECTIONS * FAMILIES_PER_WORKER if "refresh" in kinds else 0
    users = SIGNIN_USERS if kinds & {"signin", "storm"} else 0
    wanted = {name for scenario in group for name in scenario.servers}
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        if "peer" in wanted:
            servers["peer"] = stack.enter_context(peer(alg, workdir, limit, families))
        for name in IDP_SERVERS:
            if name in wanted:
                servers[name] = stack.enter_context(
                    idp_server(name, alg, workdir, limit, families=families, users=users)
                )
        for scenario in group:
            taking_part = [servers[name] for name in scenario.servers if name in servers]
            for server in taking_part:
                prepare(scenario, server, args.warmup)
            idp_part = [server for server in taking_part if server.name in IDP_SERVERS]
            for server in idp_part:
                loop_lag(server)  # reset: the set-up and the warm-up don't count
            reference.read()
            run_rounds(scenario, servers, args, out)
            readings = {server.name: worker_readings(server) for server in idp_part}
            out.lag[scenario.name] = {name: [(pid, stall) for pid, stall, _ in rows] for name, rows in readings.items()}
            out.served[scenario.name] = {
                name: [(pid, served) for pid, _, served in rows] for name, rows in readings.items()
            }
            out.reference_lag[scenario.name] = reference.read()
            print(
                f"{scenario.name:<14} loop stall ms {out.lag[scenario.name]}, "
                f"a do-nothing loop {out.reference_lag[scenario.name]}",
                flush=True,
            )
        out.memory[f"{alg} group"] = {
            name: {pid: probes.rss_mib(pid) for pid in probes.serving_pids(server.pid, server.port)}
            for name, server in servers.items()
        }
        print(f"RSS MiB after the {alg} group: {out.memory[f'{alg} group']}", flush=True)


# -- the soak -------------------------------------------------------------------------------------


def run_soak(args: argparse.Namespace, workdir: Path, reference: probes.ReferenceLoop) -> report.Soak:
    families = SOAK_WORKERS["refresh"] * FAMILIES_PER_WORKER
    limit = args.soak + 4 * args.warmup + 300
    started_at = datetime.now(UTC)
    with idp_server("idp_pg", SOAK_ALG, workdir, limit, families=families) as server:
        loads: dict[str, tuple[flows.Requests | flows.RefreshFamilies, int]] = {
            "client_credentials": (
                flows.Requests(server.base, "POST", "/token", {"Authorization": server.client.authorization}, CC),
                SOAK_WORKERS["client_credentials"],
            ),
            "userinfo": (
                flows.Requests(server.base, "GET", "/userinfo", {"Authorization": f"Bearer {server.user_token}"}),
                SOAK_WORKERS["userinfo"],
            ),
            "refresh": (flows.RefreshFamilies(server.client, list(server.refresh_tokens)), SOAK_WORKERS["refresh"]),
        }

        def sample() -> dict[int, float | None]:
            return {pid: probes.rss_mib(pid) for pid in probes.serving_pids(server.pid, server.port)}

        flows.soak(loads, args.warmup, args.warmup, sample)  # warm-up: caches filled, pools opened
        loop_lag(server)
        reference.read()
        print(f"soak: {args.soak} s, RSS sampled every {args.soak_interval} s", flush=True)
        measured, samples = flows.soak(loads, args.soak, args.soak_interval, sample)
        for name, m in measured.items():
            print(f"soak {name:<20} {m.rps:>9,.0f}/s p50 {m.p50_ms:.2f} p99 {m.p99_ms:.2f} ms errors {m.errors}")
        print(f"soak RSS samples: {samples}", flush=True)
        lag, reference_lag = loop_lag(server), reference.read()
    return report.Soak(
        args.soak, args.soak_interval, SOAK_ALG, dict(SOAK_WORKERS), measured, samples, lag, reference_lag, started_at
    )


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds per scenario (default 2)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server and scenario")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=[s.name for s in SCENARIOS],
        help="a subset (default: all, or none with --soak alone)",
    )
    parser.add_argument(
        "--soak",
        type=int,
        metavar="SECONDS",
        help="also (or, without --scenarios, only) a soak: mixed load on idp PostgreSQL + Redis, RSS sampled",
    )
    parser.add_argument("--soak-interval", type=int, default=30, help="seconds between RSS samples (default 30)")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--keep-logs", type=Path, help="copy the servers' logs into this directory")
    args = parser.parse_args()
    if args.soak is not None and not 0 < args.soak <= ACCESS_TOKEN_TTL - 600:
        parser.error(f"--soak must be between 1 and {ACCESS_TOKEN_TTL - 600} s (the user access token's lifetime)")
    chosen_names = args.scenarios or ([] if args.soak else [s.name for s in SCENARIOS])
    for tool in ("wrk", "node", "npm", "timeout"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (wrk: apt-get install wrk; node: Node.js 20+)")
    install_peer()
    started_at = datetime.now(UTC)
    load_at_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    chosen = [s for s in SCENARIOS if s.name in chosen_names]
    out = report.Results(log_problems=LOG_PROBLEMS)
    workdir = Path(tempfile.mkdtemp(prefix="idp-bench-peer-"))
    reference = probes.ReferenceLoop()
    try:
        for alg in ALGS:
            group = [s for s in chosen if s.alg == alg]
            if group:
                run_group(alg, group, args, workdir, out, reference)
        if args.soak:
            out.soak = run_soak(args, workdir, reference)
        command = "bench/run.py " + " ".join(sys.argv[1:])
        if chosen:
            info = {"load average at the start (1, 5, 15 min)": load_at_start, **versions()}
            if out.hash_pool:
                info["idp's password hashing"] = out.hash_pool
            text = report.render(out, info, started_at, command, args.duration, args.warmup, args.rounds)
            args.output.write_text(text)
        else:
            assert out.soak is not None
            existing = (
                args.output.read_text() if args.output.exists() else "# idp and node-oidc-provider side by side\n\n"
            )
            section = "\n".join(report.soak_section(out.soak)) + "\n"
            args.output.write_text(report.upsert_section(existing, "## Soak", section))
        print(f"wrote {args.output}")
    finally:
        reference.close()
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("*.log"):
                shutil.copy(log, args.keep_logs / log.name)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
