"""Live notifications: memory per idle socket, and delivery latency from one node to another.

Starts two `idp serve` nodes (production mode, one worker each) on one SQLite database and one
Redis, then

1. opens ``--sockets`` authenticated, idle notification sockets to node A and reports node A's
   resident memory growth per socket (from /proc, after the sockets are ready and a pause);
2. keeps one socket on node B and changes the user's profile ``--events`` times through node A's
   account API, reporting how long each event took from the start of that request on A to its
   arrival on B (p50 / p99 / max; an upper bound on publication-to-receipt, since it includes
   the request's own work before the audit row is committed and published), and how long A's
   requests took.

Everything targets 127.0.0.1 and stops by itself:

    .venv/bin/python bench/notifications.py --redis-url redis://127.0.0.1:6379/15
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from websockets.asyncio.client import connect
from websockets.typing import Origin

IDP = str(Path(sys.executable).with_name("idp"))
ORIGIN = "http://127.0.0.1:9"  # the app's origin: only sent, never served
REDIRECT = f"{ORIGIN}/callback"
PASSWORD = "bench-lantern-harbor-8812"  # noqa: S105 - a throwaway account of the benchmark


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def idp(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([IDP, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"idp {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) if match else 0


@contextlib.contextmanager
def node(env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([IDP, "serve"], env={**env, "IDP_SERVER__PORT": str(port)}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            log.seek(0)
            raise SystemExit(f"node on {port} did not start: {log.read().decode(errors='replace')[-2000:]}")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def access_token(issuer: str, client_id: str, email: str) -> str:
    """The code flow with PKCE through the sign-in form (a first-party client: no consent)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    with httpx.Client(base_url=issuer, timeout=30) as browser:
        page = browser.get("/login", params={"return_to": "/account"})
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        form = {"email": email, "password": PASSWORD, "csrf_token": csrf.group(1), "return_to": "/account"}
        assert browser.post("/login", data=form).status_code == 303
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": "openid profile",
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
                "client_id": client_id,
            },
        ).json()
    return str(tokens["access_token"])


async def open_socket(url: str, token: str) -> object:
    socket_ = await connect(url, origin=Origin(ORIGIN), open_timeout=10, max_queue=16)
    await socket_.send(json.dumps({"type": "auth", "access_token": token}))
    ready = json.loads(await asyncio.wait_for(socket_.recv(), 10))
    assert ready["type"] == "ready", ready
    return socket_


async def measure(args: argparse.Namespace, a: str, b: str, pid_a: int, tokens: list[str]) -> dict[str, object]:
    url_a, url_b = (base.replace("http://", "ws://") + "/ws/notifications" for base in (a, b))
    # 1. Memory per idle socket on node A.
    await asyncio.sleep(1)
    before = rss_kib(pid_a)
    sockets = []
    for index in range(args.sockets):
        sockets.append(await open_socket(url_a, tokens[index % len(tokens)]))
    await asyncio.sleep(2)
    after = rss_kib(pid_a)
    for socket_ in sockets:
        await socket_.close()  # type: ignore[attr-defined]
    # 2. Delivery latency, A to B.
    listener = await open_socket(url_b, tokens[0])
    delays, requests = [], []
    async with httpx.AsyncClient(base_url=a, timeout=30) as http:
        headers = {"Authorization": f"Bearer {tokens[0]}", "Origin": ORIGIN}
        for number in range(args.events):
            started = time.perf_counter()
            answer = await http.patch("/api/account/profile", json={"name": f"Bench {number}"}, headers=headers)
            requests.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
            while True:
                message = json.loads(await asyncio.wait_for(listener.recv(), 10))  # type: ignore[attr-defined]
                if message.get("event") == "profile_updated":
                    break
            delays.append(time.perf_counter() - started)
    await listener.close()  # type: ignore[attr-defined]

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "sockets": args.sockets,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "kib_per_idle_socket": round((after - before) / args.sockets, 1),
        "events": args.events,
        "delivery_ms": {
            "p50": round(pct(delays, 0.5), 2),
            "p99": round(pct(delays, 0.99), 2),
            "max": round(max(delays) * 1000, 2),
        },
        "request_on_a_ms": {"p50": round(pct(requests, 0.5), 2), "p99": round(pct(requests, 0.99), 2)},
        "delivery_after_response_ms_median": round(
            statistics.median(d - r for d, r in zip(delays, requests, strict=True)) * 1000, 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("IDP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.sockets * 2 + 256)), hard))

    from idp.config import generate_secrets

    data = Path(tempfile.mkdtemp(prefix="idp-bench-live-"))
    port_a, port_b = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port_a}"
    keys = generate_secrets()
    users = max(1, -(-args.sockets // 100))
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("IDP_")},
        "IDP_ISSUER": issuer,
        "IDP_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'idp.sqlite3'}",
        "IDP_DATA_DIR": str(data),
        "IDP_REDIS_URL": args.redis_url,
        "IDP_REDIS_KEY_PREFIX": f"bench-{secrets.token_hex(4)}:",
        "IDP_SERVER__WORKERS": "1",
        "IDP_SECRETS__COOKIE_SECRET": keys["cookie_secret"],
        "IDP_SECRETS__KEY_ENCRYPTION_KEY": keys["key_encryption_key"],
        "IDP_NOTIFICATIONS__MAX_PER_USER": "100",
        "IDP_LOG__LEVEL": "warning",
        "IDP_RATE_LIMITS__LOGIN_PER_IP__REQUESTS": "1000",
        "IDP_RATE_LIMITS__LOGIN_PER_IP__WINDOW": "60",
    }
    idp(env, "db", "upgrade")
    client = json.loads(
        idp(
            env,
            "clients",
            "create",
            "--name",
            "Bench app",
            "--public",
            "--first-party",
            "--redirect-uri",
            REDIRECT,
            "--web-origin",
            ORIGIN,
            "--json",
        )
    )
    emails = [f"bench{number}@example.com" for number in range(users)]
    for email in emails:
        idp(env, "users", "create", "--email", email, "--password-stdin", "--verified", stdin=PASSWORD + "\n")
    with node(env, port_a) as process_a, node(env, port_b):
        tokens = [access_token(issuer, client["client_id"], email) for email in emails]
        result = asyncio.run(measure(args, issuer, f"http://127.0.0.1:{port_b}", process_a.pid, tokens))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
