"""The one error model: HTML for browser routes, JSON for APIs, RFC 6749 codes, nothing leaked."""

from __future__ import annotations

import json

import pytest
from quart import Blueprint, request

from idp import create_app
from idp.errors import NotFound, TooManyRequests
from idp.oauth.errors import InvalidClient, InvalidGrant, InvalidToken
from idp.observability import accept_request_id

LEAKY = "SELECT password_hash FROM users WHERE email='victim@example.com' -- hunter2"


def probes() -> tuple[Blueprint, Blueprint]:
    """Routes that fail in every way, one browser-facing and one JSON-facing blueprint."""
    pages = Blueprint("probe_pages", __name__)
    api = Blueprint("probe_api", __name__)

    @pages.get("/probe/page-crash")
    async def page_crash() -> str:
        raise RuntimeError(LEAKY)

    @pages.get("/probe/page-error")
    async def page_error() -> str:
        raise NotFound("No client <script>alert(1)</script> here.")

    @api.get("/probe/api-crash")
    async def api_crash() -> str:
        raise RuntimeError(LEAKY)

    @api.post("/probe/invalid-client")
    async def invalid_client() -> str:
        raise InvalidClient()

    @api.post("/probe/invalid-grant")
    async def invalid_grant() -> str:
        raise InvalidGrant("The authorization code has already been used.")

    @api.get("/probe/invalid-token")
    async def invalid_token() -> str:
        raise InvalidToken()

    @api.post("/probe/echo")
    async def echo() -> str:
        return str(len(await request.get_data()))

    @api.get("/probe/rate-limited")
    async def rate_limited() -> str:
        raise TooManyRequests(retry_after=17)

    return pages, api


@pytest.fixture
async def probe_app(settings):
    app = create_app(settings)
    pages, api = probes()
    app.register_blueprint(pages)
    app.register_blueprint(api)
    app.json_blueprints.add(api.name)
    async with app.test_app():
        yield app


async def test_unexpected_exception_on_a_json_route_is_a_fixed_server_error(probe_app, json_logs) -> None:
    response = await probe_app.test_client().get("/probe/api-crash")
    assert response.status_code == 500
    assert await response.get_json() == {
        "error": "server_error",
        "error_description": "The server encountered an unexpected condition.",
    }
    logged = json_logs.getvalue()
    assert "RuntimeError at" in logged  # type and place, so it can be found
    assert "hunter2" not in logged and "SELECT" not in logged and "Traceback" not in logged


async def test_unexpected_exception_on_a_page_renders_html_without_details(probe_app) -> None:
    response = await probe_app.test_client().get("/probe/page-crash")
    assert response.status_code == 500
    assert response.mimetype == "text/html"
    body = await response.get_data(as_text=True)
    assert 'id="error-code">server_error<' in body
    assert "hunter2" not in body and "SELECT" not in body and "Traceback" not in body
    assert response.headers["X-Request-ID"] in body  # the reference users can quote


async def test_html_error_page_escapes_descriptions(probe_app) -> None:
    response = await probe_app.test_client().get("/probe/page-error")
    assert response.status_code == 404
    body = await response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_invalid_client_is_401_with_a_challenge(probe_app) -> None:
    response = await probe_app.test_client().post("/probe/invalid-client")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="idp"'
    assert (await response.get_json())["error"] == "invalid_client"
    assert response.headers["Cache-Control"] == "no-store"


async def test_invalid_grant_is_400_with_its_description(probe_app) -> None:
    response = await probe_app.test_client().post("/probe/invalid-grant")
    assert response.status_code == 400
    assert await response.get_json() == {
        "error": "invalid_grant",
        "error_description": "The authorization code has already been used.",
    }


async def test_invalid_token_follows_rfc_6750(probe_app) -> None:
    response = await probe_app.test_client().get("/probe/invalid-token")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="idp", error="invalid_token"')


async def test_rate_limit_carries_retry_after(probe_app) -> None:
    response = await probe_app.test_client().get("/probe/rate-limited")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "17"
    assert (await response.get_json())["error"] == "rate_limited"


async def test_unknown_path_negotiates_html_or_json(client) -> None:
    html = await client.get("/no/such/page", headers={"Accept": "text/html"})
    assert html.status_code == 404 and html.mimetype == "text/html"
    api = await client.get("/no/such/page", headers={"Accept": "application/json"})
    assert api.status_code == 404
    assert await api.get_json() == {"error": "not_found", "error_description": "The requested resource does not exist."}


async def test_wrong_method_is_405_with_allow(client) -> None:
    response = await client.post("/jwks", headers={"Accept": "application/json"})
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert (await response.get_json())["error"] == "method_not_allowed"


async def test_oversized_body_is_413_and_a_body_within_the_limit_is_read(probe_app) -> None:
    client = probe_app.test_client()
    ok = await client.post("/probe/echo", data=b"x" * 1024, headers={"Content-Type": "text/plain"})
    assert ok.status_code == 200 and await ok.get_data(as_text=True) == "1024"
    limit = probe_app.config["MAX_CONTENT_LENGTH"]
    response = await client.post("/probe/echo", data=b"x" * (limit + 1), headers={"Content-Type": "text/plain"})
    assert response.status_code == 413
    assert (await response.get_json())["error"] == "payload_too_large"


async def test_request_id_is_echoed_only_when_well_formed(client, json_logs) -> None:
    good = await client.get("/healthz", headers={"X-Request-ID": "req-12345678"})
    assert good.headers["X-Request-ID"] == "req-12345678"
    forged = '{"level": "critical", "msg": "forged"}'
    evil = await client.get("/healthz", headers={"X-Request-ID": forged})
    assert evil.headers["X-Request-ID"] != forged
    assert len(evil.headers["X-Request-ID"]) == 32
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "idp.access"]
    assert [line["request_id"] for line in access] == ["req-12345678", evil.headers["X-Request-ID"]]


@pytest.mark.parametrize("value", ["req-12345678\n", "req-12345678\r\n", "\nreq-12345678"])
def test_request_id_with_a_newline_is_not_accepted(value: str) -> None:
    """L5: a "^...$" pattern with .match() accepts a trailing newline; a request id goes into
    every log line (log injection). HTTP servers refuse newlines in headers, ASGI need not."""
    assert accept_request_id(value) is None
    assert accept_request_id("req-12345678") == "req-12345678"


@pytest.mark.parametrize("path", ["/token", "/api/account/nope", "/userinfo"])
async def test_unmatched_methods_and_paths_on_apis_answer_json(client, path) -> None:
    """A 404/405 from routing has no blueprint; API paths still get the JSON error shape."""
    response = await client.put(path, headers={"Accept": "text/html"})
    assert response.status_code in (404, 405)
    assert response.mimetype == "application/json"
    assert (await response.get_json())["error"] in ("not_found", "method_not_allowed")


def test_invalid_token_challenge_is_a_valid_quoted_string() -> None:
    error = InvalidToken('token "x" is \\ revoked\u00e9')
    header = error.headers["WWW-Authenticate"]
    inner = header.split('error_description="', 1)[1][:-1]
    assert '"' not in inner and "\\" not in inner and inner.isascii()
