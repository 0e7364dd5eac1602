"""idp side by side with node-oidc-provider 9 (issue 14): wrk, A B A B, results in bench/RESULTS.md.

    .venv/bin/python bench/run.py [--duration 10] [--rounds 2] [--scenarios cc_es256 jwks ...]

Installs the peer from bench/peer/package-lock.json (`npm ci`) when needed, then per signing
algorithm starts three servers on 127.0.0.1:

- peer: node-oidc-provider (NODE_ENV=production), bench/peer/server.mjs;
- idp PostgreSQL + Redis: `idp serve`, production settings, workers = cores, a fresh database
  bench_<random> on the local PostgreSQL and a fresh Redis key prefix;
- idp embedded: `idp serve`, production settings on the defaults (SQLite file, in-process store,
  1 worker).

Each has one confidential client (client_secret_basic; client_credentials for scope `api`) and
one user access token minted by the code flow (idp) or the provider's own models (peer). After a
warm-up per server, each scenario runs `--rounds` times in the order peer, idp PG, idp embedded
(A B A B), with the same wrk Lua script (bench/wrk/request.lua, no response() callback), 1 thread
and 8 connections; the embedded configuration also at 2 connections for its p99 target.
Everything stops by itself; every child runs under a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEER = BENCH / "peer"
LUA = BENCH / "wrk" / "request.lua"
IDP = str(Path(sys.executable).with_name("idp"))
ALGS = ("RS256", "ES256", "Ed25519")  # idp's default key set; the first listed signs access tokens
REDIRECT = "http://127.0.0.1:9/callback"
PASSWORD = "quarry-lantern-harbor-5521"  # noqa: S105 - the throwaway account of a benchmark
POSTGRES = os.environ.get("IDP_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("IDP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
ACCESS_TOKEN_TTL = 3600  # both servers: tokens minted at start must outlive the run
CONNECTIONS = 8
LOW_CONNECTIONS = 2
SERVERS = ("peer", "idp_pg", "idp_embedded")
X = "\u00d7"  # the multiplication sign of the ratios
LOG_PROBLEMS: dict[str, str] = {}  # server and group -> what its log said at warning level or above
LABELS = {"peer": "node-oidc-provider", "idp_pg": "idp PostgreSQL + Redis", "idp_embedded": "idp embedded"}


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    alg: str  # the server group it runs in (the access-token signing algorithm)
    method: str
    path: str
    body: str = ""
    auth: str = ""  # "client" (Basic), "user" (Bearer user access token) or ""
    target: float = 1.0  # issue 14: idp / peer req/s at least this
    p99_factor: float | None = None  # issue 14: idp p99 at most this times the peer's


SCENARIOS = (
    Scenario(
        "cc_rs256",
        "client_credentials, RS256",
        "RS256",
        "POST",
        "/token",
        "grant_type=client_credentials&scope=api",
        "client",
        0.5,
        2.0,
    ),
    Scenario(
        "cc_es256",
        "client_credentials, ES256",
        "ES256",
        "POST",
        "/token",
        "grant_type=client_credentials&scope=api",
        "client",
        0.5,
        2.0,
    ),
    Scenario(
        "cc_ed25519",
        "client_credentials, Ed25519",
        "Ed25519",
        "POST",
        "/token",
        "grant_type=client_credentials&scope=api",
        "client",
        0.5,
        2.0,
    ),
    Scenario(
        "introspection",
        "introspection of a user access token",
        "RS256",
        "POST",
        "/introspect",
        "token={user}&token_type_hint=access_token",
        "client",
        0.5,
    ),
    Scenario("userinfo", "userinfo (GET, Bearer)", "RS256", "GET", "/userinfo", "", "user", 0.5),
    Scenario("jwks", "JWKS", "RS256", "GET", "/jwks", target=1.0),
    Scenario("discovery", "discovery", "RS256", "GET", "/.well-known/openid-configuration", target=1.0),
)
NOT_YET = ("refresh_token grant", "authorization code exchange", "sign-in (login form + authorize)")


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
    pid: int = 0
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def peer(alg: str, workdir: Path, limit: int) -> Iterator[Server]:
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
        yield Server("peer", ready["issuer"], "bench", secret, ready["user_access_token"], process.pid)


# -- idp ------------------------------------------------------------------------------------------


def idp_env(alg: str, issuer: str, database_url: str, data: Path, redis_url: str, workers: int) -> dict[str, str]:
    from idp.config import generate_secrets

    keys = generate_secrets()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("IDP_")},
        "IDP_ISSUER": issuer,
        "IDP_DATABASE_URL": database_url,
        "IDP_DATA_DIR": str(data),
        "IDP_SERVER__PORT": str(urlsplit(issuer).port),
        "IDP_SERVER__WORKERS": str(workers),
        "IDP_SECRETS__COOKIE_SECRET": keys["cookie_secret"],
        "IDP_SECRETS__KEY_ENCRYPTION_KEY": keys["key_encryption_key"],
        "IDP_SECRETS__PAIRWISE_SECRET": keys["pairwise_secret"],
        "IDP_KEYS__ALGORITHMS": json.dumps([alg, *(other for other in ALGS if other != alg)]),
        "IDP_TOKENS__ACCESS_TOKEN_TTL": str(ACCESS_TOKEN_TTL),
        # The limits stay on (their counters are part of every request's work) but high enough
        # never to answer 429 during a run: 1,000,000 requests per second.
        "IDP_RATE_LIMITS__TOKEN_PER_IP__REQUESTS": "1000000",
        "IDP_RATE_LIMITS__TOKEN_PER_IP__WINDOW": "1",
        "IDP_RATE_LIMITS__TOKEN_PER_CLIENT__REQUESTS": "1000000",
        "IDP_RATE_LIMITS__TOKEN_PER_CLIENT__WINDOW": "1",
    }
    if redis_url:
        env["IDP_REDIS_URL"] = redis_url
        env["IDP_REDIS_KEY_PREFIX"] = f"bench-{secrets.token_hex(4)}:"
    return env


def user_access_token(issuer: str, client_id: str, secret: str, email: str) -> str:
    """The code flow with PKCE through the sign-in form (a first-party client: no consent)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    with httpx.Client(base_url=issuer, timeout=30) as browser:
        page = browser.get("/login", params={"return_to": "/account"})
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None, page.text[:500]
        form = {"email": email, "password": PASSWORD, "csrf_token": csrf.group(1), "return_to": "/account"}
        assert browser.post("/login", data=form).status_code == 303
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": "openid profile email",
            "state": "s",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        answer = browser.get(f"/authorize?{urlencode(query)}")
        code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
        tokens = browser.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            },
            auth=(client_id, secret),
        ).json()
    return str(tokens["access_token"])


@contextlib.contextmanager
def idp_server(name: str, alg: str, workdir: Path, limit: int) -> Iterator[Server]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    data = workdir / f"{name}-{alg}"
    data.mkdir()
    database = ""
    if name == "idp_pg":
        database = f"bench_{secrets.token_hex(6)}"
        asyncio.run(postgres(f"CREATE DATABASE {database}"))
        database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
        env = idp_env(alg, issuer, database_url, data, REDIS, os.cpu_count() or 1)
    else:
        env = idp_env(alg, issuer, f"sqlite+aiosqlite:///{data / 'idp.sqlite3'}", data, "", 1)
    try:
        run([IDP, "db", "upgrade"], env=env)
        client = json.loads(
            run(
                [
                    IDP,
                    "clients",
                    "create",
                    "--name",
                    "Bench",
                    "--confidential",
                    "--first-party",
                    "--grant",
                    "client_credentials",
                    "--grant",
                    "authorization_code",
                    "--scope",
                    "api",
                    "--scope",
                    "openid",
                    "--scope",
                    "profile",
                    "--scope",
                    "email",
                    "--redirect-uri",
                    REDIRECT,
                    "--json",
                ],
                env=env,
            )
        )
        email = "bench@example.com"
        run(
            [IDP, "users", "create", "--email", email, "--name", "Bench User", "--password-stdin", "--verified"],
            env=env,
            stdin=PASSWORD + "\n",
        )
        log = workdir / f"{name}-{alg}.log"
        with started([IDP, "serve"], env, log, limit) as process:
            wait_until(f"{issuer}/healthz", log, process)
            token = user_access_token(issuer, client["client_id"], client["client_secret"], email)
            yield Server(name, issuer, client["client_id"], client["client_secret"], token, process.pid)
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
        auth = "Basic " + base64.b64encode(f"{server.client_id}:{server.client_secret}".encode()).decode()
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


@dataclass
class Measurement:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


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


# -- the report -----------------------------------------------------------------------------------


def summary(runs: list[Measurement]) -> dict[str, float]:
    return {
        "rps": statistics.mean(m.rps for m in runs),
        "p50": statistics.mean(m.p50_ms for m in runs),
        "p99": max(m.p99_ms for m in runs),  # the worst round
        "errors": sum(m.errors for m in runs),
        "requests": sum(m.requests for m in runs),
    }


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


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, list[Measurement]]],
    low: dict[str, list[Measurement]],
    info: dict[str, str],
    started_at: datetime,
) -> str:
    lines = [
        "# idp and node-oidc-provider side by side",
        "",
        f"Written by `bench/run.py --duration {args.duration} --rounds {args.rounds}` on "
        f"{started_at:%Y-%m-%d %H:%M} UTC. wrk: 1 thread, {CONNECTIONS} connections, {args.duration} s per run, "
        f"{args.warmup} s warm-up per server and scenario, then {args.rounds} rounds in the order peer, idp "
        "PostgreSQL + Redis, idp embedded (A B A B); the same Lua script for every server "
        "(`bench/wrk/request.lua`, no `response()` callback). req/s and p50 are the mean of the rounds, "
        "p99 the worst round, errors the sum (non-2xx responses and socket errors). The load generator "
        "shares the machine's cores with the server under test.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in info.items()),
        "",
        "## Results",
        "",
        "| scenario | server | req/s | idp / peer | p50 ms | p99 ms | errors | requests |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    targets: list[str] = []
    for scenario in SCENARIOS:
        if scenario.name not in results:
            continue
        rows = {name: summary(runs) for name, runs in results[scenario.name].items()}
        peer_row = rows["peer"]
        for name in SERVERS:
            row = rows[name]
            ratio = "" if name == "peer" else f"{row['rps'] / peer_row['rps']:.2f}{X}"
            lines.append(
                f"| {scenario.title} | {LABELS[name]} | {row['rps']:,.0f} | {ratio} | {row['p50']:.2f} | "
                f"{row['p99']:.2f} | {row['errors']:.0f} | {row['requests']:,.0f} |"
            )
        for name in ("idp_pg", "idp_embedded"):
            row = rows[name]
            ratio = row["rps"] / peer_row["rps"]
            ok = ratio >= scenario.target
            text = f"req/s ≥ {scenario.target:.1f}{X} peer ({ratio:.2f}{X})"
            if scenario.p99_factor is not None:
                p99_ok = row["p99"] <= scenario.p99_factor * peer_row["p99"]
                errors_ok = row["errors"] == 0
                ok = ok and p99_ok and errors_ok
                text += (
                    f", zero errors ({row['errors']:.0f}), p99 ≤ {scenario.p99_factor:.0f}{X} peer "
                    f"({row['p99']:.2f} vs {peer_row['p99']:.2f} ms)"
                )
            targets.append(f"| {scenario.title} | {LABELS[name]} | {text} | {verdict(ok)} |")
        if scenario.name in low:
            row_low = summary(low[scenario.name])
            p99_8 = rows["idp_embedded"]["p99"]
            targets.append(
                f"| {scenario.title} | idp embedded | p99 at {CONNECTIONS} connections ≤ 3{X} p99 at "
                f"{LOW_CONNECTIONS} ({p99_8:.2f} vs {row_low['p99']:.2f} ms; {row_low['rps']:,.0f} req/s, "
                f"{row_low['errors']:.0f} errors at {LOW_CONNECTIONS}) | {verdict(p99_8 <= 3 * row_low['p99'])} |"
            )
    lines += [
        "",
        "## Issue 14 targets",
        "",
        "| scenario | server | target (measured) | |",
        "|---|---|---|---|",
        *targets,
        "",
        "## idp's logs",
        "",
        *([f"- {where}: {what}" for where, what in LOG_PROBLEMS.items()] or ["- No idp server ran."]),
        "",
        "## Not yet measured",
        "",
        *(f"- {name}" for name in NOT_YET),
        "",
        "## What is and isn't equivalent",
        "",
        "- Same client (confidential, `client_secret_basic`, `client_credentials` for scope `api`, "
        "plus `authorization_code` for the user token), same key set (RS256, ES256 and Ed25519 keys, "
        "generated at start), the algorithm under test signing access tokens (idp: first in "
        "`[keys] algorithms`; peer: `resourceIndicators` default resource with `accessTokenFormat: 'jwt'` "
        "and `jwt.sign.alg`), the same paths (the peer's routes are set to idp's), access-token "
        f"lifetime {ACCESS_TOKEN_TTL} s on both.",
        "- Production settings on both (idp without dev mode; peer with `NODE_ENV=production`). idp "
        "keeps its production logging (one JSON access-log line per request, to a file) and its rate "
        "limits (raised to 1,000,000 per second, so counted but never refusing) and writes an audit "
        "row per issued token (for `client_credentials`, in batches off the request path); the peer "
        "logs nothing per request, has no rate limits and no audit trail.",
        "- Storage: the peer runs on its built-in in-memory adapter (it warns that it is not for "
        "production); idp on PostgreSQL + Redis, or on SQLite + its in-process store. A JWT access "
        "token is not stored by either server.",
        "- User access token (introspection, userinfo): idp's is a JWT (signed with the group's first "
        "algorithm, RS256) checked against its revocation list and its user row; the peer's is opaque "
        "(the format node-oidc-provider gives tokens for its own userinfo endpoint, which JWT access "
        "tokens for a resource may not call), found in its adapter with its grant and the account. "
        "It is minted through the peer's own Grant and AccessToken models instead of its login "
        "pages, which the peer would need an interaction implementation for; idp's comes from its "
        "code flow. The peer cannot introspect its JWT access tokens (it does not store them), so "
        "both introspect the user token.",
        "- node-oidc-provider 9 asks for Node.js 22 or later and prints a warning on the Node.js 20 of this machine.",
        "",
    ]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds per scenario (default 2)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server and scenario")
    parser.add_argument(
        "--scenarios", nargs="+", choices=[s.name for s in SCENARIOS], default=[s.name for s in SCENARIOS]
    )
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--keep-logs", type=Path, help="copy the servers' logs into this directory")
    args = parser.parse_args()
    for tool in ("wrk", "node", "npm", "timeout"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (wrk: apt-get install wrk; node: Node.js 20+)")
    install_peer()
    started_at = datetime.now(UTC)
    load_at_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    chosen = [s for s in SCENARIOS if s.name in args.scenarios]
    per_run = args.duration + 1
    results: dict[str, dict[str, list[Measurement]]] = {}
    low: dict[str, list[Measurement]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="idp-bench-peer-"))
    try:
        for alg in ALGS:
            group = [s for s in chosen if s.alg == alg]
            if not group:
                continue
            # An upper bound for the servers' lives: every run of the group, plus start-up.
            limit = 180 + len(group) * (3 * args.warmup + (3 * args.rounds + args.rounds) * per_run)
            with contextlib.ExitStack() as stack:
                servers = {
                    "peer": stack.enter_context(peer(alg, workdir, limit)),
                    "idp_pg": stack.enter_context(idp_server("idp_pg", alg, workdir, limit)),
                    "idp_embedded": stack.enter_context(idp_server("idp_embedded", alg, workdir, limit)),
                }
                for scenario in group:
                    for server in servers.values():
                        check(scenario, server)
                        wrk(scenario, server, args.warmup, CONNECTIONS)
                    results[scenario.name] = {name: [] for name in SERVERS}
                    low[scenario.name] = []
                    for number in range(args.rounds):
                        for name in SERVERS:
                            measured = wrk(scenario, servers[name], args.duration, CONNECTIONS)
                            results[scenario.name][name].append(measured)
                            print(
                                f"{scenario.name:<14} round {number + 1} {name:<13} {measured.rps:>9,.0f} req/s "
                                f"p50 {measured.p50_ms:.2f} p99 {measured.p99_ms:.2f} ms errors {measured.errors}",
                                flush=True,
                            )
                        measured = wrk(scenario, servers["idp_embedded"], args.duration, LOW_CONNECTIONS)
                        low[scenario.name].append(measured)
                        print(
                            f"{scenario.name:<14} round {number + 1} idp_embedded@{LOW_CONNECTIONS} "
                            f"{measured.rps:>7,.0f} req/s p99 {measured.p99_ms:.2f} ms",
                            flush=True,
                        )
        info = {"load average at the start (1, 5, 15 min)": load_at_start, **versions()}
        args.output.write_text(report(args, results, low, info, started_at))
        print(f"wrote {args.output}")
    finally:
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("*.log"):
                shutil.copy(log, args.keep_logs / log.name)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
