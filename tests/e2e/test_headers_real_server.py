"""Security headers, cookies and CORS as a real `idp serve` (uvicorn) puts them on the wire.

Two servers: one with an http (loopback) issuer, as in development, and one with an https issuer
served over plain HTTP on loopback, as behind a proxy that ends TLS: HSTS and the Secure
``__Host-`` cookie follow the issuer, not the connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.e2e.server import IDP, free_port, run_idp, running

pytestmark = pytest.mark.server

EMAIL = "harbor.headers@example.com"
PASSWORD = "copper-kettle-horizon-5120"
SPA_ORIGIN = "http://127.0.0.1:9"  # registered as the client's web origin
ON_EVERY_RESPONSE = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
HSTS = "max-age=63072000; includeSubDomains"


@contextmanager
def serving(cli_env: dict[str, str], issuer: str | None = None) -> Iterator[str]:
    """A migrated, seeded `idp serve`; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**cli_env, "IDP_ISSUER": issuer or base, "IDP_SERVER__PORT": str(port), "IDP_SERVER__WORKERS": "1"}
    run_idp(env, "db", "upgrade")
    run_idp(env, "users", "create", "--email", EMAIL, "--password-stdin", "--verified", stdin=PASSWORD + "\n")
    client = ["clients", "create", "--name", "SPA", "--public", "--auth-method", "none", "--json"]
    run_idp(env, *client, "--redirect-uri", f"{SPA_ORIGIN}/cb", "--web-origin", SPA_ORIGIN)
    with running([IDP, "serve"], env, port):
        yield base


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def csp(response: httpx.Response) -> dict[str, str]:
    return {
        name: value
        for name, _, value in (
            part.strip().partition(" ") for part in response.headers["content-security-policy"].split(";")
        )
    }


def check_basics(response: httpx.Response) -> None:
    for name, value in ON_EVERY_RESPONSE.items():
        assert response.headers[name] == value, (response.url, name)


def check_page(response: httpx.Response) -> None:
    check_basics(response)
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert csp(response)["frame-ancestors"] == "'none'"
    assert "access-control-allow-origin" not in response.headers


def cookie(response: httpx.Response, name: str) -> str:
    """The one Set-Cookie header for ``name``, exactly as sent, with its value replaced by VALUE."""
    (header,) = [value for value in response.headers.get_list("set-cookie") if value.startswith(f"{name}=")]
    value = header.split(";", 1)[0].split("=", 1)[1]
    assert len(value) >= 40
    return header.replace(value, "VALUE", 1)


def test_headers_cookies_and_cors_over_real_http(cli_env: dict[str, str]) -> None:
    with serving(cli_env) as base, httpx.Client(base_url=base, timeout=5) as http:
        page = http.get("/login", headers={"Origin": SPA_ORIGIN})
        assert page.status_code == 200
        check_page(page)
        assert "strict-transport-security" not in page.headers
        nonce = re.fullmatch(r"'nonce-([A-Za-z0-9_-]+)' 'strict-dynamic'", csp(page)["script-src"])
        assert nonce and f'<script nonce="{nonce.group(1)}" src=' in page.text
        again = http.get("/login")
        assert csp(again)["script-src"] != csp(page)["script-src"]  # never the same nonce twice
        assert cookie(page, "idp_csrf") == "idp_csrf=VALUE; HttpOnly; Path=/; SameSite=Lax"

        forged = http.post("/login", data={"email": EMAIL, "password": PASSWORD, "return_to": "/"})
        assert forged.status_code == 403
        check_page(forged)
        signed_in = http.post(
            "/login", data={"email": EMAIL, "password": PASSWORD, "return_to": "/", "csrf_token": csrf_token(page.text)}
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        check_page(signed_in)
        session = cookie(signed_in, "idp_session")
        assert re.fullmatch(
            r"idp_session=VALUE; Expires=[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT; "
            r"Max-Age=\d+; HttpOnly; Path=/; SameSite=Lax",
            session,
        ), session
        account = http.get("/account")
        assert account.status_code == 200 and EMAIL in account.text
        check_page(account)

        # The account API takes Bearer tokens only: this browser's cookies are not enough.
        api = http.get("/api/account/profile")
        assert api.status_code == 401 and api.headers["www-authenticate"] == 'Bearer realm="idp"'
        assert api.headers["cache-control"] == "no-store"

        # Public documents keep their caching; no page policy on JSON.
        discovery = http.get("/.well-known/openid-configuration")
        assert discovery.headers["cache-control"] == "public, max-age=3600"
        assert "content-security-policy" not in discovery.headers
        check_basics(discovery)

        # CORS: the registered origin on the token endpoint, never with credentials; nothing else.
        preflight = {"Origin": SPA_ORIGIN, "Access-Control-Request-Method": "POST"}
        allowed = http.options("/token", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == SPA_ORIGIN
        assert "access-control-allow-credentials" not in allowed.headers
        evil = http.options("/token", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers


def test_hsts_and_host_prefixed_cookies_follow_an_https_issuer(cli_env: dict[str, str]) -> None:
    with serving(cli_env, issuer="https://login.example.test") as base, httpx.Client(base_url=base, timeout=5) as http:
        page = http.get("/login")
        check_page(page)
        assert page.headers["strict-transport-security"] == HSTS
        assert cookie(page, "__Host-idp_csrf") == "__Host-idp_csrf=VALUE; Secure; HttpOnly; Path=/; SameSite=Lax"
        binding = page.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
        # httpx keeps Secure cookies for https only: this browser sends the binding itself.
        signed_in = http.post(
            "/login",
            data={"email": EMAIL, "password": PASSWORD, "return_to": "/", "csrf_token": csrf_token(page.text)},
            headers={"Cookie": f"__Host-idp_csrf={binding}"},
        )
        assert signed_in.status_code == 303
        assert signed_in.headers["strict-transport-security"] == HSTS
        session = cookie(signed_in, "__Host-idp_session")
        assert re.fullmatch(
            r"__Host-idp_session=VALUE; Expires=[^;]+ GMT; Max-Age=\d+; Secure; HttpOnly; Path=/; SameSite=Lax",
            session,
        ), session
        assert "Domain=" not in session
        assert http.get("/jwks").headers["strict-transport-security"] == HSTS
