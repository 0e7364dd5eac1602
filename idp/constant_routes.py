"""The constant documents (JWKS and the two discovery names) answered before the framework.

They are the most requested URLs of an identity provider (every relying party and resource server
fetches them) and the same bytes for everyone until the keys change: idp.oauth.routes serves them
through Quart with an ETag, and this ASGI layer answers a plain GET or HEAD of them from the same
encoded documents without building a request and response object per call (issue 14: Quart's own
per-request floor was about 4,800 requests a second on one worker, the peer's JWKS 23,500).

Only what is certainly plain is answered here, with the headers Quart would send (the same
security headers, request id, access log line and request metric; a test holds the two paths
equal). Anything else — a query string, a head over the limits, an unusable character, any other
path or method, a node still starting — goes to the application unchanged.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Quart
from quart.typing import ASGIReceiveCallable, ASGISendCallable

from idp.http import EXTENSION
from idp.metrics import metrics_of
from idp.oauth.routes import JWKS_MAX_AGE, METADATA_MAX_AGE, discovery_document
from idp.observability import accept_request_id, log_access, request_id_var
from idp.security import request_limits
from idp.security.headers import apply_security_headers
from idp.security.inputs import first_unusable

ASGIApp = Callable[[Any, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]

# path: (the route's rule, as the request metric names it; content type; max-age)
ROUTES = {
    "/jwks": ("/jwks", "application/jwk-set+json", JWKS_MAX_AGE),
    "/.well-known/openid-configuration": ("/.well-known/openid-configuration", "application/json", METADATA_MAX_AGE),
    "/.well-known/oauth-authorization-server": (
        "/.well-known/oauth-authorization-server",
        "application/json",
        METADATA_MAX_AGE,
    ),
}


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: If-None-Match compares weakly (``W/"x"`` matches ``"x"``), or ``*``."""
    bare = etag.strip('"')
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/").strip('"') == bare:
            return True
    return False


class ConstantRoutes:
    """ASGI middleware in front of the Quart application (``idp.asgi.create``)."""

    def __init__(self, app: Quart, then: ASGIApp | None = None) -> None:
        self.app = app
        self.then: ASGIApp = then or app  # what answers everything else

    async def __call__(self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        route = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        runtime = self.app.extensions.get(EXTENSION)
        if route is None or runtime is None or scope["method"] not in ("GET", "HEAD") or scope["query_string"]:
            await self.then(scope, receive, send)
            return
        started = time.perf_counter()
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw_headers]
        target = len(scope.get("raw_path") or scope["path"].encode())
        if request_limits.head_refusal(target, raw_headers) is not None or first_unusable(headers) is not None:
            await self.then(scope, receive, send)  # the application answers it, with its message
            return
        await runtime.keys.refresh_if_stale()
        path = scope["path"]
        document = runtime.keys.jwks_document() if path == "/jwks" else discovery_document(runtime)
        rule, content_type, max_age = route
        fields = {name.lower(): value for name, value in headers}
        request_id = accept_request_id(fields.get("x-request-id")) or uuid.uuid4().hex
        request_id_var.set(request_id)
        not_modified = "if-none-match" in fields and _etag_matches(fields["if-none-match"], document.etag)
        status = 304 if not_modified else 200
        head, tail = _fixed_headers(
            document.etag, len(document.body), content_type, max_age, runtime.settings.issuer_is_https, not_modified
        )
        client = scope.get("client")
        body = b"" if not_modified or scope["method"] == "HEAD" else document.body
        await send_answer(
            self.app,
            send,
            status,
            [*head, (b"x-request-id", request_id.encode()), *tail],
            body,
            started=started,
            method=scope["method"],
            path=path,
            rule=rule,
            remote_addr=client[0] if client else None,
        )


@functools.lru_cache(maxsize=64)
def _fixed_headers(
    etag: str, length: int, content_type: str, max_age: int, https: bool, not_modified: bool
) -> tuple[tuple[tuple[bytes, bytes], ...], tuple[tuple[bytes, bytes], ...]]:
    """A document's answer headers but its request id (what comes before it, what after),
    encoded once per document, key set and kind of answer rather than per request."""
    head: dict[str, str] = {}
    if not not_modified:
        head["Content-Type"] = content_type
        head["Content-Length"] = str(length)
    head["ETag"] = etag
    head["Cache-Control"] = f"public, max-age={max_age}"
    head["Access-Control-Allow-Origin"] = "*"  # read cross-origin by browser apps (RFC 9700 §2.6)
    tail: dict[str, str] = {}
    apply_security_headers(tail, content_type, https=https)
    return tuple(encode_headers(head)), tuple(encode_headers(tail))


def encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI's header list: lower-case names, latin-1 bytes."""
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


async def send_answer(
    app: Quart,
    send: ASGISendCallable,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    started: float,
    method: str,
    path: str,
    rule: str,
    remote_addr: str | None,
) -> None:
    """Send a whole answer from in front of the framework and account for it as the application's
    hooks do: the access log line and the request metric (under the route's ``rule``)."""
    start: Any = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    end: Any = {"type": "http.response.body", "body": body}
    await send(end)
    seconds = time.perf_counter() - started
    log_access(method, path, status, round(seconds * 1000, 2), remote_addr)
    if (metrics := metrics_of(app)) is not None:
        metrics.observe_request(method, rule, status, seconds)
