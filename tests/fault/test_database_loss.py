"""PostgreSQL goes away under a running `idp serve` and comes back (issue 15): a private
PostgreSQL cluster (initdb + pg_ctl on its own port and directory, so CI's shared server is never
touched) is stopped with `pg_ctl stop -m immediate`, as a crash would.

While it is down (within a second: what the node holds in memory is trusted until its in-process
store's relay fails to read the database): requests that need it answer 503
temporarily_unavailable with Retry-After (never 500), /healthz stays 200 for the whole outage,
/readyz names the database, JWKS and discovery keep serving the last known key set even after
the key reload interval has passed, and a password reset request says it could not be taken
instead of "Check your email". Once the database is back, the same node serves tokens again
without a restart."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import IDP, free_port, production_env, run_idp, running

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A PostgreSQL cluster of its own: trust authentication on 127.0.0.1, its own port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], capture_output=True, text=True, timeout=60, check=False
        )

    def init(self) -> None:
        shutil.chown(self.directory, "postgres", "postgres")
        done = self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"
        )
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        done = self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )
        assert done.returncode == 0, done.stderr + (self.directory / "log").read_text(errors="replace")

    def stop(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    if os.geteuid() != 0 or not (PG_BIN / "initdb").exists():
        pytest.skip("needs root and PostgreSQL 15's initdb to run a private cluster")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("needs the postgres system user")
    directory = Path(tempfile.mkdtemp(prefix="idp-pg-"))
    cluster = PrivatePostgres(directory)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def first_refusal(request: Callable[[], httpx.Response], within: float = 1.0) -> httpx.Response:
    """The first answer to ``request`` that is not a token, once the database went away. The node
    holds its clients in memory (none can change while the database is down: every change is
    committed there first) until its in-process store's relay fails its next read of announcements
    (every 0.2 s); from then on its caches trust nothing they hold, and what needs the database is
    refused."""
    started = time.monotonic()
    while (answer := request()).status_code == 200:
        assert time.monotonic() - started < within, f"tokens still issued from memory after {within} s"
        time.sleep(0.05)
    return answer


def test_a_database_outage_is_503_health_stays_up_keys_stay_published_and_the_node_recovers(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    with private_postgres() as pg:
        port = free_port()
        env = {
            **production_env(tmp_path, port),
            "IDP_DATABASE_URL": pg.url,
            "IDP_KEYS__RELOAD_INTERVAL": "1",  # the cached key set goes stale during the outage
        }
        run_idp(env, "db", "upgrade")
        client = json.loads(
            run_idp(
                env,
                "clients",
                "create",
                "--name",
                "Outage RP",
                "--confidential",
                "--grant",
                "client_credentials",
                "--scope",
                "api",
                "--json",
            )
        )
        auth = (client["client_id"], client["client_secret"])  # client_secret_basic
        base = f"http://127.0.0.1:{port}"
        with running([IDP, "serve"], env, port) as server, httpx.Client(base_url=base, timeout=10) as http:
            token = http.post("/token", data={"grant_type": "client_credentials", "scope": "api"}, auth=auth)
            assert token.status_code == 200, token.text
            jwks = http.get("/jwks")
            discovery = http.get("/.well-known/openid-configuration")
            assert jwks.status_code == discovery.status_code == 200

            pg.stop()  # as a crash: no clean shutdown of the connections
            outage_started = time.monotonic()
            cc = {"grant_type": "client_credentials", "scope": "api"}
            refused = first_refusal(lambda: http.post("/token", data=cc, auth=auth))
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "temporarily_unavailable"
            assert refused.headers["Retry-After"] == "5"
            assert "postgres" not in refused.text and str(pg.port) not in refused.text
            introspected = http.post("/introspect", data={"token": token.json()["access_token"]}, auth=auth)
            assert introspected.status_code == 503

            # A reset request can't be recorded: it says so instead of "Check your email".
            page = http.get("/forgot-password")
            assert page.status_code == 200
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert csrf is not None
            reset = http.post("/forgot-password", data={"csrf_token": csrf.group(1), "email": "a@example.com"})
            assert reset.status_code == 503, reset.text
            assert "Check your email" not in reset.text

            time.sleep(1.5)  # past keys.reload_interval: the reload fails, the last set stays
            for _ in range(3):
                assert http.get("/healthz").status_code == 200
                ready = http.get("/readyz")
                assert ready.status_code == 503 and ready.json()["failed"] == ["database"]
                assert http.get("/jwks").content == jwks.content
                assert http.get("/.well-known/openid-configuration").content == discovery.content
            outage = time.monotonic() - outage_started

            pg.start()
            back_at = time.monotonic()
            while True:
                again = http.post("/token", data={"grant_type": "client_credentials", "scope": "api"}, auth=auth)
                if again.status_code == 200:
                    break
                assert again.status_code == 503, again.text
                assert time.monotonic() - back_at < 30, "the node did not recover"
                time.sleep(0.2)
            recovered_in = time.monotonic() - back_at
            assert http.get("/readyz").status_code == 200
            assert '"status": 500' not in server.output()  # no request failed with a 500
        print(f"outage {outage:.1f} s; served again {recovered_in:.2f} s after PostgreSQL was back")
    assert time.monotonic() - started < 120
