"""Two `idp serve` processes sharing one database and one Redis, as two nodes behind a load
balancer: a browser session made on one is valid on the other and ends on both; rate-limit counters
are shared; a token revoked on one is dead on the other, and a refresh token rotated on one can't be
replayed on the other.

A user's notification socket on one node hears a sign-out done on the other.

Needs Redis: IDP_TEST_REDIS_URL (CI's second stage sets it). Without it the test skips, unless
IDP_TEST_REQUIRE_REDIS=1 says a missing Redis is a failure.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin

from tests.e2e.server import IDP, free_port, run_idp, running
from tests.oauth_helpers import pkce_pair

pytestmark = pytest.mark.server

EMAIL = "nodes@example.com"
PASSWORD = "copper-meadow-lantern-4471"
REDIRECT = "https://rp.example/cb"
APP_ORIGIN = "https://rp.example"
LIMIT = 6  # sign-in attempts per IP within the window, across both nodes


@dataclass(frozen=True)
class Cluster:
    a: str  # base URL of node A (also the issuer)
    b: str  # base URL of node B
    client_id: str
    client_secret: str


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("IDP_TEST_REDIS_URL", "")
    if not url:
        message = "two instances share state through Redis: set IDP_TEST_REDIS_URL"
        if os.environ.get("IDP_TEST_REQUIRE_REDIS") == "1":
            pytest.fail(message + " (IDP_TEST_REQUIRE_REDIS=1)")
        pytest.skip(message)
    return url


@pytest.fixture
def cluster(cli_env: dict[str, str], redis_url: str) -> Iterator[Cluster]:
    port_a, port_b = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port_a}"
    env = {
        **cli_env,
        "IDP_ISSUER": issuer,
        "IDP_REDIS_URL": redis_url,
        "IDP_SERVER__WORKERS": "1",
        "IDP_RATE_LIMITS__LOGIN_PER_IP__REQUESTS": str(LIMIT),
        "IDP_RATE_LIMITS__LOGIN_PER_IP__WINDOW": "120",
    }
    run_idp(env, "db", "upgrade")
    run_idp(env, "users", "create", "--email", EMAIL, "--password-stdin", "--verified", stdin=PASSWORD + "\n")
    created = json.loads(
        run_idp(
            env,
            "clients",
            "create",
            "--name",
            "Two nodes RP",
            "--confidential",
            "--first-party",
            "--redirect-uri",
            REDIRECT,
            "--web-origin",
            APP_ORIGIN,
            "--grant",
            "authorization_code",
            "--grant",
            "refresh_token",
            "--json",
        )
    )
    with ExitStack() as stack:
        servers = [
            stack.enter_context(running([IDP, "serve"], {**env, "IDP_SERVER__PORT": str(port)}, port))
            for port in (port_a, port_b)
        ]
        yield Cluster(issuer, f"http://127.0.0.1:{port_b}", created["client_id"], created["client_secret"])
    for server in servers:
        assert "Traceback" not in server.output(), server.output()


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None, html
    return match.group(1)


def sign_in(http: httpx.Client, node: str, email: str = EMAIL, password: str = PASSWORD) -> httpx.Response:
    page = http.get(f"{node}/login", params={"return_to": "/account"})
    form = {"email": email, "password": password, "csrf_token": csrf(page.text), "return_to": "/account"}
    return http.post(f"{node}/login", data=form)


def redeem(rp: httpx.Client, cluster: Cluster, node: str, code: str, verifier: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    return rp.post(f"{node}/token", data=form, auth=(cluster.client_id, cluster.client_secret))


def refresh(rp: httpx.Client, cluster: Cluster, node: str, refresh_token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return rp.post(f"{node}/token", data=form, auth=(cluster.client_id, cluster.client_secret))


def authorization_code(http: httpx.Client, cluster: Cluster, node: str) -> tuple[str, str]:
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": cluster.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    response = http.get(f"{node}/authorize?{urlencode(query)}")
    assert response.status_code == 303, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?"), location
    return parse_qs(urlsplit(location).query)["code"][0], verifier


def test_two_nodes_share_sessions_limits_and_revocations(cluster: Cluster) -> None:
    auth = (cluster.client_id, cluster.client_secret)
    with httpx.Client(timeout=10) as browser, httpx.Client(timeout=10) as other_browser, httpx.Client(timeout=10) as rp:
        # -- sessions: made on A, valid on B, ended on B, gone on A ------------------------------
        assert sign_in(browser, cluster.a).status_code == 303
        assert browser.get(f"{cluster.b}/account").status_code == 200
        assert sign_in(other_browser, cluster.b).status_code == 303
        listed = other_browser.get(f"{cluster.a}/account/sessions")
        sids = re.findall(r'data-session-id="([^"]+)"', listed.text)
        assert len(sids) == 2
        current = re.search(r'<li data-session-id="([^"]+)" class="current"', listed.text)
        assert current is not None
        [first_browsers] = [sid for sid in sids if sid != current.group(1)]
        ended = other_browser.post(
            f"{cluster.b}/account/sessions/{first_browsers}/end", data={"csrf_token": csrf(listed.text)}
        )
        assert ended.status_code == 303
        # The first browser is signed out at its next request, whichever node answers it.
        for node in (cluster.a, cluster.b):
            assert browser.get(f"{node}/account").headers["Location"].startswith("/login")

        # -- revocation and rotation across nodes ---------------------------------------------
        code, verifier = authorization_code(other_browser, cluster, cluster.b)
        tokens = redeem(rp, cluster, cluster.a, code, verifier).json()
        # The code was consumed on A: replaying it on B fails.
        replay = redeem(rp, cluster, cluster.b, code, verifier)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        # The replay revoked the grant everywhere (RFC 9700 §4.14.2): A no longer honours its tokens.
        introspected = rp.post(f"{cluster.a}/introspect", data={"token": tokens["access_token"]}, auth=auth)
        assert introspected.json() == {"active": False}

        code, verifier = authorization_code(other_browser, cluster, cluster.a)
        tokens = redeem(rp, cluster, cluster.b, code, verifier).json()
        assert rp.post(f"{cluster.a}/introspect", data={"token": tokens["access_token"]}, auth=auth).json()["active"]
        assert rp.post(f"{cluster.a}/revoke", data={"token": tokens["access_token"]}, auth=auth).status_code == 200
        assert rp.post(f"{cluster.b}/introspect", data={"token": tokens["access_token"]}, auth=auth).json() == {
            "active": False
        }
        rotated = refresh(rp, cluster, cluster.a, tokens["refresh_token"])
        assert rotated.status_code == 200
        reused = refresh(rp, cluster, cluster.b, tokens["refresh_token"])
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"

        # -- rate limits: one counter for both nodes --------------------------------------------
        # Everything comes from 127.0.0.1: the two sign-ins above used two of the LIMIT attempts.
        with httpx.Client(timeout=10) as guesser:
            for n in range(LIMIT - 2):
                node = cluster.a if n % 2 == 0 else cluster.b
                failed = sign_in(guesser, node, email=f"guess{n}@example.com", password="wrong-password-00")
                assert failed.status_code == 401, failed.text
            for node in (cluster.a, cluster.b):
                limited = sign_in(guesser, node)
                assert limited.status_code == 429
                assert 0 < int(limited.headers["Retry-After"]) <= 120


def test_a_sign_out_on_one_node_is_heard_on_the_other_at_once(cluster: Cluster) -> None:
    """The live notification channel across nodes: the socket is on B, the session ends on A."""
    with httpx.Client(timeout=10) as browser, httpx.Client(timeout=10) as rp:
        assert sign_in(browser, cluster.a).status_code == 303
        code, verifier = authorization_code(browser, cluster, cluster.a)
        tokens = redeem(rp, cluster, cluster.a, code, verifier).json()
        socket_url = cluster.b.replace("http://", "ws://") + "/ws/notifications"
        with ws_connect(socket_url, origin=Origin(APP_ORIGIN), open_timeout=5) as socket:
            socket.send(json.dumps({"type": "auth", "access_token": tokens["access_token"]}))
            assert json.loads(socket.recv(timeout=5))["type"] == "ready"
            page = browser.get(f"{cluster.a}/logout")
            started = time.monotonic()
            signed_out = browser.post(f"{cluster.a}/logout", data={"csrf_token": csrf(page.text), "confirm": "yes"})
            assert signed_out.status_code in (200, 303), signed_out.text
            while True:
                message = json.loads(socket.recv(timeout=2))
                if message.get("event") == "session_ended":
                    break
            assert time.monotonic() - started < 2
            assert message["data"]["reason"] == "logout" and message["id"] > 0
