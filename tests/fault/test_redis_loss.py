"""Redis is lost and comes back empty (issue 15): a private `redis-server` without persistence
under a real `idp serve`, killed and restarted. While it is down, requests that need it answer
503 and /healthz stays 200; once it is back empty, nothing revoked is accepted again (the
database is the record: idp.oauth.denylist), what was not revoked still works, a grant revoked
now still kills its access tokens, and logging out of a browser session Redis lost still sends
the relying party its back-channel logout token (the clients of each session are recorded in
the database)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.e2e.server import IDP, free_port, run_idp, running
from tests.oauth_helpers import pkce_pair

EMAIL = "redis-loss@example.com"
PASSWORD = "amber-harbor-lantern-5120"
REDIRECT = "http://127.0.0.1/cb"
DEADLINE = 60.0  # the whole test, processes included


# -- a private Redis and a relying party's back-channel logout endpoint ---------------------------


class PrivateRedis:
    """`redis-server` on its own port, with nothing saved: a restart comes back empty."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            ping = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
            if ping.stdout.strip() == "PONG":
                return
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def keys(self) -> int:
        done = subprocess.run(["redis-cli", "-p", str(self.port), "dbsize"], capture_output=True, text=True)
        return int(done.stdout.strip())


@dataclass
class LogoutReceiver:
    """Records the logout tokens POSTed to it (OIDC Back-Channel Logout 1.0 §2.5)."""

    port: int = field(default_factory=free_port)
    tokens: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/bcl"

    @contextmanager
    def serving(self) -> Iterator[None]:
        received = self.tokens

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                received.extend(parse_qs(body).get("logout_token", []))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()


# -- the flows, over HTTP ---------------------------------------------------------------------------


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None, html
    return match.group(1)


def sign_in(browser: httpx.Client, node: str) -> None:
    page = browser.get(f"{node}/login", params={"return_to": "/account"})
    form = {"email": EMAIL, "password": PASSWORD, "csrf_token": csrf(page.text), "return_to": "/account"}
    assert browser.post(f"{node}/login", data=form).status_code == 303


def code_flow(browser: httpx.Client, rp: httpx.Client, node: str, client: dict[str, str]) -> dict[str, str]:
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": REDIRECT,
        "scope": "openid",  # no offline_access: the grant ends with the session
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    response = browser.get(f"{node}/authorize?{urlencode(query)}")
    assert response.status_code == 303, response.text
    code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    token = rp.post(f"{node}/token", data=form, auth=(client["client_id"], client["client_secret"]))
    assert token.status_code == 200, token.text
    return dict(token.json())


def claims_of(token: str) -> dict[str, object]:
    """The payload of a JWT the relying party received (checking it is the RP's business here)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_a_redis_restart_without_persistence_un_revokes_nothing(
    cli_env: dict[str, str], redis: PrivateRedis, tmp_path: Path
) -> None:
    started = time.monotonic()
    port = free_port()
    node = f"http://127.0.0.1:{port}"
    env = {**cli_env, "IDP_ISSUER": node, "IDP_REDIS_URL": redis.url, "IDP_SERVER__WORKERS": "1"}
    receiver = LogoutReceiver()
    run_idp(env, "db", "upgrade")
    run_idp(env, "users", "create", "--email", EMAIL, "--password-stdin", "--verified", stdin=PASSWORD + "\n")
    client = json.loads(
        run_idp(
            env,
            *("clients", "create", "--name", "Redis loss RP", "--confidential", "--first-party"),
            *("--redirect-uri", REDIRECT, "--backchannel-logout-uri", receiver.uri),
            *("--grant", "authorization_code", "--grant", "refresh_token", "--grant", "client_credentials", "--json"),
        )
    )
    auth = (client["client_id"], client["client_secret"])
    with (
        receiver.serving(),
        running([IDP, "serve"], {**env, "IDP_SERVER__PORT": str(port)}, port) as server,
        httpx.Client(timeout=10) as rp,
        httpx.Client(timeout=10) as leaving,
        httpx.Client(timeout=10) as staying,
    ):

        def userinfo(token: str) -> int:
            return rp.get(f"{node}/userinfo", headers={"Authorization": f"Bearer {token}"}).status_code

        def introspect(token: str) -> httpx.Response:
            return rp.post(f"{node}/introspect", data={"token": token}, auth=auth)

        def machine_token() -> str:
            response = rp.post(f"{node}/token", data={"grant_type": "client_credentials"}, auth=auth)
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        # -- before: tokens of a machine and of two browsers' sessions, some revoked -------------
        machine_revoked, machine_kept = machine_token(), machine_token()
        sign_in(leaving, node)
        leaving_tokens = code_flow(leaving, rp, node, client)  # its session will be lost, then left
        sign_in(staying, node)
        kept = code_flow(staying, rp, node, client)  # its grant is revoked only after the restart
        revoked = code_flow(staying, rp, node, client)
        for token in (machine_revoked, revoked["access_token"]):
            assert rp.post(f"{node}/revoke", data={"token": token}, auth=auth).status_code == 200
            assert introspect(token).json() == {"active": False}
        assert userinfo(kept["access_token"]) == 200

        # -- Redis down: 503 where it is needed, the process itself healthy ---------------------
        redis.kill()
        down = introspect(machine_kept)
        assert down.status_code == 503 and down.json()["error"] == "temporarily_unavailable", down.text
        assert userinfo(kept["access_token"]) == 503
        assert rp.get(f"{node}/healthz").status_code == 200

        # -- Redis back, empty -------------------------------------------------------------------
        redis.start()
        assert redis.keys() == 0
        # Nothing revoked is accepted again (27 of 27 probes were before issue 15).
        for _ in range(3):
            assert introspect(machine_revoked).json() == {"active": False}
            assert introspect(revoked["access_token"]).json() == {"active": False}
            assert userinfo(revoked["access_token"]) == 401
        # What was never revoked still works.
        assert introspect(machine_kept).json()["active"] is True
        assert userinfo(kept["access_token"]) == 200
        # A grant revoked now still kills its access tokens (no index of them survived).
        assert rp.post(f"{node}/revoke", data={"token": kept["refresh_token"]}, auth=auth).status_code == 200
        assert userinfo(kept["access_token"]) == 401
        assert introspect(kept["access_token"]).json() == {"active": False}

        # -- logging out of the session Redis lost: the RP still hears of it ----------------------
        sid = claims_of(leaving_tokens["id_token"])["sid"]
        assert userinfo(leaving_tokens["access_token"]) == 200
        bye = leaving.get(f"{node}/logout", params={"id_token_hint": leaving_tokens["id_token"]})
        assert bye.status_code == 200, bye.text
        deadline = time.monotonic() + 15
        while not receiver.tokens and time.monotonic() < deadline:
            time.sleep(0.1)
        [logout_token] = receiver.tokens
        assert claims_of(logout_token)["sid"] == sid
        # The session's grant went with it.
        assert userinfo(leaving_tokens["access_token"]) == 401
    assert "Traceback" not in server.output(), server.output()
    assert time.monotonic() - started < DEADLINE
