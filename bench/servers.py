"""Compare ASGI servers for idp: uvicorn (uvloop + httptools) vs Hypercorn (asyncio and uvloop).

Runs each server with one worker on 127.0.0.1, drives it with wrk (Debian package `wrk`) for a
bounded time per path, and prints requests/second. By hand:

    .venv/bin/python bench/servers.py [--duration 10] [--connections 32]

Everything talks to loopback only and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

PATHS = ("/healthz", "/jwks", "/.well-known/openid-configuration")

APP = textwrap.dedent(
    """
    import os
    from idp import create_app
    from idp.config import load_settings
    from idp.storage import migrate

    settings = load_settings()
    migrate.upgrade(settings.database_url)
    app = create_app(settings)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def wrk(url: str, duration: int, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per path (default 10)")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="idp-bench-"))
    (workdir / "bench_app.py").write_text(APP)
    env = {
        **os.environ,
        "IDP_DEV_MODE": "true",
        "IDP_LOG__LEVEL": "warning",
        "IDP_DATA_DIR": str(workdir / "var"),
        "IDP_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'var' / 'bench.sqlite3'}",
        "PYTHONPATH": str(workdir),
    }
    bin_dir = Path(sys.executable).parent
    servers = {
        "uvicorn (uvloop, httptools)": [
            str(bin_dir / "uvicorn"),
            "bench_app:app",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--port",
        ],
        "hypercorn (asyncio)": [str(bin_dir / "hypercorn"), "bench_app:app", "--log-level", "warning", "--bind"],
        "hypercorn (uvloop)": [
            str(bin_dir / "hypercorn"),
            "bench_app:app",
            "-k",
            "uvloop",
            "--log-level",
            "warning",
            "--bind",
        ],
    }
    results: dict[str, dict[str, float]] = {}
    for name, command in servers.items():
        port = free_port()
        bind = str(port) if "uvicorn" in name else f"127.0.0.1:{port}"
        process = subprocess.Popen(
            [*command, bind], cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_healthy(port)
            results[name] = {
                path: wrk(f"http://127.0.0.1:{port}{path}", args.duration, args.connections) for path in PATHS
            }
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
    width = max(len(name) for name in results)
    print(f"{'server':<{width}}  " + "  ".join(f"{path:>34}" for path in PATHS))
    for name, row in results.items():
        print(f"{name:<{width}}  " + "  ".join(f"{row[path]:>28.0f} req/s" for path in PATHS))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
