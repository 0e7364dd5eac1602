"""The constant documents' fast path (idp.constant_routes) answers exactly as the Quart routes do:
the same status, body and headers (the request id and Date aside), the same 304s and HEADs, an
access log line and a request metric; and anything not plainly one of them reaches the
application unchanged."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from idp.constant_routes import ConstantRoutes

PATHS = ("/jwks", "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
VARIABLE = {"x-request-id", "date"}


async def call(app: Any, method: str, path: str, headers: dict[str, str] | None = None, query: bytes = b"") -> Any:
    """One request through the ASGI layer: (status, headers, body, whether Quart was reached)."""
    proxy = _Reached(app)
    messages: list[Any] = []
    raw = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *raw],
        "client": ("192.0.2.9", 40000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }

    sent = asyncio.Event()
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Any:
        if requests:
            return requests.pop()
        await sent.wait()  # as a server does: the client goes once it has the answer
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            sent.set()

    await ConstantRoutes(proxy)(scope, receive, send)  # type: ignore[arg-type]
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers_out = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers_out, body, proxy.reached


class _Reached:
    """The Quart app as ConstantRoutes sees it, noting whether a request was passed on to it."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self.extensions = app.extensions
        self.reached = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.reached = True
        await self._app(scope, receive, send)


async def quart_answer(client: Any, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    response = await client.open(path, method=method, headers=headers or {})
    return response.status_code, {k.lower(): v for k, v in response.headers.items()}, await response.get_data()


def comparable(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name not in VARIABLE}


@pytest.mark.parametrize("path", PATHS)
async def test_get_and_head_match_the_quart_routes(app: Any, client: Any, path: str) -> None:
    for method in ("GET", "HEAD"):
        status, headers, body, reached = await call(app, method, path)
        expected_status, expected_headers, expected_body = await quart_answer(client, method, path)
        assert not reached, "the fast path should have answered"
        # (Quart's test client keeps a HEAD's body; the server sends none, and neither do we.)
        assert (status, body) == (expected_status, b"" if method == "HEAD" else expected_body)
        assert comparable(headers) == comparable(expected_headers)
        assert len(headers["x-request-id"]) == 32
    assert json.loads(body or (await quart_answer(client, "GET", path))[2])


async def test_revalidation_answers_304_like_the_route_weak_tags_included(app: Any, client: Any) -> None:
    _, first, _, _ = await call(app, "GET", "/jwks")
    etag = first["etag"]
    for condition in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, headers, body, reached = await call(app, "GET", "/jwks", {"If-None-Match": condition})
        expected = await quart_answer(client, "GET", "/jwks", {"If-None-Match": condition})
        assert (status, body, reached) == (304, b"", False)
        # Quart's test client adds Content-Length: 0 to a 304, which the served route doesn't send
        # (the app removes it, RFC 9110 §8.6); nor does the fast path.
        assert "content-length" not in headers
        expected_headers = {name: value for name, value in expected[1].items() if name != "content-length"}
        assert (expected[0], comparable(headers)) == (304, comparable(expected_headers))
    status, _, body, _ = await call(app, "GET", "/jwks", {"If-None-Match": '"stale"'})
    assert status == 200 and body


async def test_a_callers_request_id_is_kept_and_the_request_logged_and_counted(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="idp.access"):
        _, headers, _, _ = await call(app, "GET", "/jwks", {"X-Request-ID": "rp-trace-42"})
    assert headers["x-request-id"] == "rp-trace-42"
    [line] = [record for record in caplog.records if record.name == "idp.access"]
    assert (line.method, line.path, line.status, line.remote_addr) == ("GET", "/jwks", 200, "192.0.2.9")


@pytest.mark.parametrize(
    ("method", "path", "headers", "query"),
    [
        ("POST", "/jwks", {}, b""),
        ("GET", "/jwks", {}, b"x=1"),
        ("GET", "/jwks/", {}, b""),
        ("GET", "/healthz", {}, b""),
        ("GET", "/jwks", {"X-Odd": "a\x00b"}, b""),  # an unusable character: the app's 400
        ("GET", "/jwks", {f"X-H{n}": "v" for n in range(200)}, b""),  # over the head limits
    ],
)
async def test_anything_else_reaches_the_application(
    app: Any, method: str, path: str, headers: dict[str, str], query: bytes
) -> None:
    *_, reached = await call(app, method, path, headers, query)
    assert reached
