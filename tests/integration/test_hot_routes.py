"""The protocol's hot requests below the framework (idp.hot_routes) answer exactly as the Quart
routes do: for every case below the same request goes through both, and the status, headers
(the request id and Date aside) and body agree (issued tokens compared by their claims' names and
the values that don't vary). Anything not plainly such a request reaches the application, with
its body intact."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any
from urllib.parse import urlencode

import pytest

from idp.hot_routes import HotRoutes
from idp.metrics import metrics_of
from tests.oauth_helpers import basic, code_flow, jwt_parts, make_world

VARIABLE = {"x-request-id", "date"}
TOKEN_FIELDS = ("access_token", "refresh_token", "id_token")
VARYING_CLAIMS = {"jti", "iat", "exp", "nbf", "auth_time"}
ORIGIN = "http://127.0.0.1:8080"  # the world's SPA registers it


class _Reached:
    def __init__(self, app: Any) -> None:
        self._app = app
        self.extensions = app.extensions
        self.reached = False

    def __getattr__(self, name: str) -> Any:  # the app's json provider, debug flag, …
        return getattr(self._app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.reached = True
        await self._app(scope, receive, send)


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    hot: bool = True,
    query: bytes = b"",
    root_path: str = "",
) -> Any:
    """One request through HotRoutes (or, hot=False, straight to Quart): (status, headers, body,
    whether Quart was reached)."""
    proxy = _Reached(app)
    raw = [(name.lower().encode(), value.encode("latin-1")) for name, value in headers or []]
    if body is not None and not any(name == b"content-length" for name, _ in raw):
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": root_path,
        "headers": [(b"host", b"127.0.0.1:8000"), *raw],
        "client": ("192.0.2.9", 40000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }
    sent = asyncio.Event()
    requests = [{"type": "http.request", "body": body or b"", "more_body": False}]
    messages: list[Any] = []

    async def receive() -> Any:
        if requests:
            return requests.pop()
        await sent.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            sent.set()

    target = HotRoutes(proxy) if hot else proxy  # type: ignore[arg-type]
    await target(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    out = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], {n.decode(): v.decode() for n, v in start["headers"]}, out, proxy.reached


def _without_id(body: bytes, headers: dict[str, str]) -> bytes:
    rid = headers.get("x-request-id", "").encode()
    return body.replace(rid, b"RID") if rid else body


def _normalised(body: bytes) -> Any:
    if not body:
        return body
    document = json.loads(body)
    for name in TOKEN_FIELDS:
        if isinstance(document.get(name), str):
            token = document[name]
            if token.count(".") == 2:
                header, claims = jwt_parts(token)
                document[name] = (header.get("alg"), {k: v for k, v in claims.items() if k not in VARYING_CLAIMS})
            else:
                document[name] = "opaque"
    return document


async def assert_same(app: Any, method: str, path: str, **request: Any) -> tuple[int, dict[str, str], bytes]:
    status, headers, body, reached = await call(app, method, path, **request)
    assert not reached, "the hot path should have answered"
    expected_status, expected_headers, expected_body, _ = await call(app, method, path, hot=False, **request)
    assert (status, _normalised(body)) == (expected_status, _normalised(expected_body))
    comparable = {name: value for name, value in headers.items() if name not in VARIABLE}
    assert comparable == {name: value for name, value in expected_headers.items() if name not in VARIABLE}
    supplied = dict(request.get("headers") or []).get("X-Request-ID")
    assert headers["x-request-id"] == supplied if supplied else len(headers["x-request-id"]) == 32
    return status, headers, body


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


FORM = ("Content-Type", "application/x-www-form-urlencoded")


def basic_header(client_id: str, secret: str) -> tuple[str, str]:
    [(name, value)] = basic(client_id, secret).items()
    return name, value


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**settings_overrides, **getattr(request, "param", {})}


@pytest.fixture
async def world(runtime: Any) -> Any:
    return await make_world(runtime)


async def test_token_requests_match_the_route(app: Any, world: Any) -> None:
    auth = basic_header(world.web_id, world.web_secret)
    cc = form(grant_type="client_credentials")
    status, headers, body = await assert_same(app, "POST", "/token", headers=[FORM, auth], body=cc)
    assert status == 200 and json.loads(body)["token_type"] == "Bearer"
    assert headers["cache-control"] == "no-store" and headers["pragma"] == "no-cache"
    # The client's secret in the body (client_secret_post is not this client's method: refused alike).
    posted = form(grant_type="client_credentials", client_id=world.web_id, client_secret=world.web_secret)
    await assert_same(app, "POST", "/token", headers=[FORM], body=posted)
    # With a charset, from a registered web origin, with the caller's request id.
    await assert_same(
        app,
        "POST",
        "/token",
        headers=[("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8"), auth, ("Origin", ORIGIN)],
        body=cc,
    )
    status, headers, _ = await assert_same(
        app, "POST", "/token", headers=[FORM, auth, ("Origin", ORIGIN), ("X-Request-ID", "rp-trace-42")], body=cc
    )
    assert headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"grant_type": "client_credentials"}, 401),  # a wrong secret
        ({"grant_type": "password", "username": "a", "password": "b"}, 400),
        ({}, 400),
        ({"grant_type": "client_credentials", "scope": "not-a-scope"}, 400),
        ({"grant_type": "authorization_code", "code": "nope", "redirect_uri": "https://rp.example/cb"}, 400),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, 400),
        ({"grant_type": "client_credentials", "empty": ""}, 401),
    ],
)
async def test_token_errors_match_the_route(app: Any, world: Any, fields: dict[str, str], status: int) -> None:
    secret = "wrong" if status == 401 else world.web_secret
    auth = basic_header(world.web_id, secret)
    got, headers, body = await assert_same(
        app, "POST", "/token", headers=[FORM, auth, ("Origin", "https://evil.example")], body=form(**fields)
    )
    assert got == status, body
    assert "access-control-allow-origin" not in headers


async def test_a_code_exchange_and_a_refresh_match_the_route(app: Any, client: Any, world: Any) -> None:
    tokens = await code_flow(client, world, scope="openid profile offline_access")
    auth = basic_header(world.web_id, world.web_secret)
    refresh = form(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    status, _, body, reached = await call(app, "POST", "/token", headers=[FORM, auth], body=refresh)
    assert (status, reached) == (200, False), body
    # The rotated-away token replayed: the grant is revoked (once), then both paths refuse alike.
    replayed = await call(app, "POST", "/token", headers=[FORM, auth], body=refresh)
    assert (replayed[0], replayed[3], json.loads(replayed[2])["error"]) == (400, False, "invalid_grant")
    await assert_same(app, "POST", "/token", headers=[FORM, auth], body=refresh)


async def test_introspection_and_revocation_match_the_route(app: Any, client: Any, world: Any) -> None:
    tokens = await code_flow(client, world, scope="openid profile offline_access")
    auth = basic_header(world.web_id, world.web_secret)
    for token in (tokens["access_token"], tokens["refresh_token"], "not-a-token"):
        status, _, body = await assert_same(app, "POST", "/introspect", headers=[FORM, auth], body=form(token=token))
        assert status == 200 and "active" in json.loads(body)
    await assert_same(app, "POST", "/introspect", headers=[FORM], body=form(token=tokens["access_token"]))
    await assert_same(app, "POST", "/introspect", headers=[FORM, auth], body=form())
    status, headers, body = await assert_same(
        app, "POST", "/revoke", headers=[FORM, auth, ("Origin", ORIGIN)], body=form(token="not-a-token")
    )
    assert (status, body, "content-type" in headers, headers["content-length"]) == (200, b"", False, "0")
    await assert_same(app, "POST", "/revoke", headers=[FORM, auth], body=form(token=tokens["refresh_token"]))
    await assert_same(app, "POST", "/revoke", headers=[FORM], body=form(token="x"))


async def test_userinfo_matches_the_route(app: Any, client: Any, world: Any) -> None:
    tokens = await code_flow(client, world, scope="openid profile email")
    bearer = ("Authorization", f"Bearer {tokens['access_token']}")
    status, _, body = await assert_same(app, "GET", "/userinfo", headers=[bearer, ("Origin", ORIGIN)])
    assert status == 200 and json.loads(body)["sub"]
    await assert_same(app, "POST", "/userinfo", headers=[FORM], body=form(access_token=tokens["access_token"]))
    await assert_same(app, "POST", "/userinfo", headers=[FORM, bearer], body=form())
    status, headers, _ = await assert_same(app, "GET", "/userinfo", headers=[("Authorization", "Bearer nope")])
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    await assert_same(app, "GET", "/userinfo")
    await assert_same(app, "POST", "/userinfo", headers=[FORM, bearer], body=form(access_token=tokens["access_token"]))
    client_token = await call(
        app,
        "POST",
        "/token",
        headers=[FORM, basic_header(world.web_id, world.web_secret)],
        body=form(grant_type="client_credentials"),
    )
    not_openid = json.loads(client_token[2])["access_token"]
    await assert_same(app, "GET", "/userinfo", headers=[("Authorization", f"Bearer {not_openid}")])


@pytest.mark.parametrize(
    "settings_overrides", [{"rate_limits": {"token_per_ip": {"requests": 2, "window": 60}}}], indirect=True
)
async def test_rate_limited_answers_match_the_route(app: Any, world: Any) -> None:
    auth = basic_header(world.web_id, world.web_secret)
    cc = form(grant_type="client_credentials")
    for _ in range(2):
        assert (await call(app, "POST", "/token", headers=[FORM, auth], body=cc))[0] == 200
    status, headers, _ = await assert_same(app, "POST", "/token", headers=[FORM, auth], body=cc)
    assert status == 429 and int(headers["retry-after"]) >= 1


async def test_an_unexpected_failure_is_a_fixed_500_on_both(
    app: Any, world: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_args: Any) -> Any:
        raise RuntimeError("secret detail: hunter2")

    monkeypatch.setattr("idp.hot_routes.token_response", broken)
    monkeypatch.setattr("idp.oauth.routes.token_response", broken)
    auth = basic_header(world.web_id, world.web_secret)
    status, _, body = await assert_same(app, "POST", "/token", headers=[FORM, auth], body=form(grant_type="x"))
    assert status == 500 and json.loads(body)["error"] == "server_error"
    assert "hunter2" not in caplog.text and "hunter2" not in body.decode()


async def test_a_request_is_logged_and_counted_once(app: Any, world: Any, caplog: pytest.LogCaptureFixture) -> None:
    auth = basic_header(world.web_id, world.web_secret)
    metrics = metrics_of(app)
    assert metrics is not None
    before = dict(metrics._pending)
    with caplog.at_level(logging.INFO, logger="idp.access"):
        status, *_ = await call(app, "POST", "/token", headers=[FORM, auth], body=form(grant_type="client_credentials"))
    assert status == 200
    [line] = [record for record in caplog.records if record.name == "idp.access"]
    assert (line.method, line.path, line.status, line.remote_addr) == ("POST", "/token", 200, "192.0.2.9")
    key = ("POST", "/token", 200)
    assert metrics._pending[key][0] == before.get(key, [0])[0] + 1


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "query", "root_path"),
    [
        ("GET", "/token", [], None, b"", ""),  # the application's 405
        ("OPTIONS", "/token", [("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")], None, b"", ""),
        ("POST", "/token", [FORM], b"grant_type=client_credentials", b"x=1", ""),
        ("POST", "/token", [FORM], b"grant_type=client_credentials", b"", "/idp"),
        ("POST", "/token", [("Content-Type", "application/json")], b'{"grant_type": "client_credentials"}', b"", ""),
        ("POST", "/token", [FORM], b"grant_type=client_credentials&grant_type=refresh_token", b"", ""),
        ("POST", "/token", [FORM], b"grant_type=client%00credentials", b"", ""),
        ("POST", "/token", [FORM], "grant_type=caf\u00e9".encode(), b"", ""),
        ("POST", "/token", [FORM], b"grant_type=caf%C3%A9", b"", ""),
        ("POST", "/token", [FORM, ("Authorization", "Basic a"), ("Authorization", "Basic b")], b"x=1", b"", ""),
        ("POST", "/token", [FORM, ("X-Odd", "a\x00b")], b"x=1", b"", ""),
        ("POST", "/token", [FORM, ("Remote-Addr", "10.0.0.1")], b"x=1", b"", ""),
        ("POST", "/token", [FORM, ("Content-Length", str(70 * 1024))], b"x" * (70 * 1024), b"", ""),
        ("POST", "/token", [FORM, ("Transfer-Encoding", "chunked")], b"x=1", b"", ""),
        ("POST", "/userinfo", [("Content-Type", "text/plain")], b"hello", b"", ""),
        ("GET", "/userinfo", [("Content-Length", "0")], None, b"", ""),
        ("POST", "/authorize", [FORM], b"x=1", b"", ""),
    ],
)
async def test_anything_else_reaches_the_application_with_its_body(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    query: bytes,
    root_path: str,
) -> None:
    status, sent, answer, reached = await call(
        app, method, path, headers=headers, body=body, query=query, root_path=root_path
    )
    assert reached
    expected = await call(app, method, path, headers=headers, body=body, query=query, root_path=root_path, hot=False)
    # The body was handed over as it came: the same answer (an error page names its request id).
    assert (status, _without_id(answer, sent)) == (expected[0], _without_id(expected[2], expected[1]))


async def test_a_client_that_leaves_mid_body_gets_nothing(app: Any) -> None:
    proxy = _Reached(app)
    sent: list[Any] = []
    messages = [
        {"type": "http.request", "body": b"grant_type=", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Any:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/token",
        "raw_path": b"/token",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/x-www-form-urlencoded"), (b"content-length", b"30")],
        "client": ("192.0.2.9", 40000),
    }
    await HotRoutes(proxy)(scope, receive, send)  # type: ignore[arg-type]
    assert (sent, proxy.reached) == ([], False)


def test_the_basic_header_helper_is_what_clients_send() -> None:
    name, value = basic_header("id", "s")
    assert (name, base64.b64decode(value.split()[1])) == ("Authorization", b"id:s")
