"""Running real `idp` server processes on ephemeral ports for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

IDP = str(Path(sys.executable).with_name("idp"))


def run_idp(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run the `idp` command with ``env`` (and no other IDP_* variables); its standard output."""
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("IDP_")}
    full_env.update(env)
    done = subprocess.run([IDP, *args], env=full_env, input=stdin, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"idp {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def production_env(data_dir: Path, port: int) -> dict[str, str]:
    """IDP_* settings for a production-mode `idp serve` on ``port`` with its own SQLite database
    and fresh secrets (no dev mode, no Redis)."""
    from idp.config import generate_secrets

    secrets = generate_secrets()
    return {
        "IDP_ISSUER": f"http://127.0.0.1:{port}",
        "IDP_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'idp.sqlite3'}",
        "IDP_DATA_DIR": str(data_dir),
        "IDP_SERVER__PORT": str(port),
        "IDP_SECRETS__COOKIE_SECRET": secrets["cookie_secret"],
        "IDP_SECRETS__KEY_ENCRYPTION_KEY": secrets["key_encryption_key"],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running(
    args: Sequence[str], env: dict[str, str], port: int, cwd: Path | None = None, timeout: float = 30.0
) -> Iterator[Server]:
    """Start a server, wait until /healthz answers, yield it, then stop it with SIGTERM."""
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("IDP_")}
    full_env.update(env)
    log_dir = Path(tempfile.mkdtemp(prefix="idp-server-"))
    log_path = log_dir / "output.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(list(args), env=full_env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(process, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited early ({process.returncode}):\n{server.output()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server did not become healthy in time")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
