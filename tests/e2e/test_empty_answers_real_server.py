"""Empty answers as a real `idp serve` puts them on the wire: no media type for no content.

L6 of the 2026-12-01 security test: empty 200s (/revoke, OPTIONS) and 204s were labelled
`Content-Type: text/html` and got the page CSP, and a 204 carried `Content-Length: 0`. A widely
used browser OpenID library refuses a revocation answer of that type, so single-page apps could
never revoke their tokens. RFC 9110 §8.3 (Content-Type describes content), §8.6 (no
Content-Length on a 204); RFC 7009 §2.2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import IDP, free_port, production_env, run_idp, running

# Its own server on the embedded defaults, whatever the suite's backend: CI runs it once (stage 1).
pytestmark = [pytest.mark.server, pytest.mark.embedded]
SPA_ORIGIN = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    port = free_port()
    env = production_env(tmp_path_factory.mktemp("empty"), port)
    run_idp(env, "db", "upgrade")
    created = run_idp(
        env, "clients", "create", "--name", "SPA", "--public", "--json",
        "--redirect-uri", f"{SPA_ORIGIN}/cb", "--web-origin", SPA_ORIGIN,
    )  # fmt: skip
    with running([IDP, "serve"], env, port):
        yield f"http://127.0.0.1:{port}", json.loads(created)["client_id"]


def assert_empty_and_untyped(response: httpx.Response) -> None:
    assert response.content == b""
    assert "content-type" not in response.headers
    assert "content-security-policy" not in response.headers


def test_revocation_answers_an_empty_untyped_200(served: tuple[str, str]) -> None:
    base, spa = served
    response = httpx.post(
        f"{base}/revoke", data={"token": "not-a-token", "client_id": spa}, headers={"Origin": SPA_ORIGIN}
    )
    assert response.status_code == 200
    assert_empty_and_untyped(response)
    assert response.headers["content-length"] == "0"
    assert response.headers["access-control-allow-origin"] == SPA_ORIGIN
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/token", "/revoke", "/api/account/profile", "/login"])
def test_options_answers_are_empty_and_untyped(served: tuple[str, str], path: str) -> None:
    base, _ = served
    response = httpx.options(f"{base}{path}", headers={"Origin": SPA_ORIGIN, "Access-Control-Request-Method": "POST"})
    assert response.status_code == 200
    assert_empty_and_untyped(response)
    assert "allow" in response.headers
