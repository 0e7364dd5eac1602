"""The protocol's hot requests answered before the framework: the token, introspection and
revocation endpoints' form posts and UserInfo.

Relying parties and resource servers call them for every login, API call and refresh. Through
Quart, the request and response objects, its contexts and the hooks cost more than the protocol
work itself (issue 14: about 550 of 1,050 microseconds of a client_credentials token, measured
in-process). This ASGI layer calls the same protocol functions the routes in idp.oauth.routes call,
and adds what the application's hooks add (request id, event context, key refresh, CORS, security
headers, no-store, access log line, request metric, the JSON errors); a test holds the two paths
equal, answer for answer.

Only what is certainly plain is answered here: one of these paths and methods, no query string
or root path, a head within the limits with no repeated field and no unusable character, a
form body of at most 64 KiB with a Content-Length, in ASCII, whose fields are all usable. Anything
else — a preflight, a JSON or multipart body, chunked uploads, a node still starting — goes to the
application unchanged (a body already read is handed over as it came).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

from quart import Quart
from quart.typing import ASGIReceiveCallable, ASGISendCallable
from werkzeug.datastructures import MultiDict

from idp import cors
from idp.constant_routes import ASGIApp, encode_headers, send_answer
from idp.error_responses import answer_for_unexpected
from idp.errors import IdPError
from idp.events import EventContext, set_context
from idp.http import EXTENSION
from idp.oauth import introspection, revocation
from idp.oauth.client_auth import authenticator
from idp.oauth.grants import token_response
from idp.oauth.params import single_values
from idp.oauth.resource import BearerProtector, StoredParties
from idp.oauth.userinfo import userinfo_claims
from idp.observability import accept_request_id, request_id_var
from idp.security import request_limits
from idp.security.headers import apply_security_headers
from idp.security.inputs import first_unusable
from idp.web import enforcing

FORM = "application/x-www-form-urlencoded"
MAX_BODY = 64 * 1024
# path: the methods answered here (the routes' own; anything else is the application's 405)
ROUTES = {
    "/token": frozenset({"POST"}),
    "/introspect": frozenset({"POST"}),
    "/revoke": frozenset({"POST"}),
    "/userinfo": frozenset({"GET", "POST"}),
}
# Matched by the regular-expression engine, not byte by byte in Python: a body holding a user's
# access token is about 1 KB, and a Python loop over it was 6 % of an introspection's time.
_BEYOND_ASCII = re.compile(rb"[^\x00-\x7e]")
_NOT_VISIBLE_ASCII = re.compile(r"[^\x20-\x7e]")


class _Call:
    """One request as the endpoints need it."""

    def __init__(self, scope: Any, fields: dict[str, str], form: MultiDict[str, str] | None) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        client = scope.get("client")
        self.remote_addr: str = client[0] if client else "<local>"  # what Quart's request says
        self.fields = fields
        self.form = form  # None: no form body (a UserInfo GET)


class HotRoutes:
    """ASGI middleware between the server and the application (``idp.asgi.create``)."""

    def __init__(self, app: Quart, then: ASGIApp | None = None) -> None:
        self.app = app
        self.then: ASGIApp = then or app

    async def __call__(self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        methods = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        runtime = self.app.extensions.get(EXTENSION)
        if (
            methods is None
            or runtime is None
            or scope["method"] not in methods
            or scope["query_string"]
            or scope.get("root_path")
        ):
            await self.then(scope, receive, send)
            return
        started = time.perf_counter()
        fields = _plain_head(scope)
        if fields is None:
            await self.then(scope, receive, send)
            return
        mimetype = fields.get("content-type", "").split(";", 1)[0].strip().lower()
        if scope["method"] == "GET" and "content-length" not in fields and "transfer-encoding" not in fields:
            await self._answer(runtime, _Call(scope, fields, None), started, send)
            return
        length = fields.get("content-length", "")
        if mimetype != FORM or "transfer-encoding" in fields or not length.isdigit() or int(length) > MAX_BODY:
            await self.then(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        form = _plain_form(body)
        if form is None:
            await self.then(scope, _replay(body, receive), send)
            return
        await self._answer(runtime, _Call(scope, fields, form), started, send)

    async def _answer(self, rt: Any, call: _Call, started: float, send: ASGISendCallable) -> None:
        request_id = accept_request_id(call.fields.get("x-request-id")) or uuid.uuid4().hex
        request_id_var.set(request_id)
        set_context(EventContext(ip=call.remote_addr, user_agent=call.fields.get("user-agent"), request_id=request_id))
        headers: dict[str, str] = {}
        try:
            await rt.keys.refresh_if_stale()
            body = await _endpoint(rt, call)
            status = 200
            if body is not None:
                headers["Content-Type"] = "application/json"
            headers["Cache-Control"] = "no-store"  # RFC 6749 §5.1
            headers["Pragma"] = "no-cache"
        except Exception as exc:
            error = exc if isinstance(exc, IdPError) else answer_for_unexpected(exc)
            status, body = error.status_code, error.to_dict()
            headers["Content-Type"] = "application/json"
            headers["Cache-Control"] = "no-store"
            headers.update(error.headers)
        encoded = self._json(body) if body is not None else b""
        headers["Content-Length"] = str(len(encoded))
        headers["Vary"] = "Origin"
        origin = call.fields.get("origin")
        if await rt.cors.allowed(origin):
            assert origin is not None
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = cors.EXPOSED_HEADERS
        headers["X-Request-ID"] = request_id
        apply_security_headers(headers, headers.get("Content-Type"), https=rt.settings.issuer_is_https)
        await send_answer(
            self.app,
            send,
            status,
            encode_headers(headers),
            encoded,
            started=started,
            method=call.method,
            path=call.path,
            rule=call.path,
            remote_addr=call.remote_addr,
        )

    def _json(self, body: Any) -> bytes:
        """Encoded as the application's jsonify does (its provider; indented only in debug mode)."""
        compact = getattr(self.app.json, "compact", None)
        indent = (compact is None and self.app.debug) or compact is False
        spacing: dict[str, Any] = {"indent": 2} if indent else {"separators": (",", ":")}
        return f"{self.app.json.dumps(body, **spacing)}\n".encode()


async def _endpoint(rt: Any, call: _Call) -> dict[str, Any] | None:
    """What the route of ``call.path`` in idp.oauth.routes answers (None: an empty body)."""
    if call.path == "/userinfo":
        protector = BearerProtector(rt.tokens, rt.subjects, StoredParties(rt.units, cached=True))
        authorization = [call.fields["authorization"]] if "authorization" in call.fields else []
        return await userinfo_claims(protector, authorization, call.form, f"{rt.settings.issuer}/pictures")
    assert call.form is not None
    form = single_values(call.form)
    authenticate = authenticator(
        call.path,
        call.fields.get("authorization"),
        form,
        kv=rt.kv,
        issuer=rt.settings.issuer,
        ip=call.remote_addr,
        enforce_limits=enforcing(rt.limits),
    )
    if call.path == "/token":
        return dict(await token_response(rt.grants, form, authenticate))
    if call.path == "/introspect":
        return dict(await introspection.introspection_request(rt.units, rt.tokens, rt.subjects, form, authenticate))
    await revocation.revocation_request(rt.grants, form, authenticate)
    return None


def _plain_head(scope: Any) -> dict[str, str] | None:
    """The head's fields by lower-cased name, or None when it isn't plain (over the limits, a
    field repeated, an unusable character, a Remote-Addr of the caller's own): the application
    answers those with its own messages."""
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    target = len(scope.get("raw_path") or scope["path"].encode())
    if request_limits.head_refusal(target, raw) is not None:
        return None
    fields: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key in fields:
            return None
        fields[key] = value.decode("latin-1")
    if "remote-addr" in fields or first_unusable(fields.items()) is not None:
        return None
    return fields


async def _read_body(receive: ASGIReceiveCallable) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _plain_form(body: bytes) -> MultiDict[str, str] | None:
    """The form's fields as the route reads them, or None when the application should read it:
    bytes beyond ASCII, a field that decodes to anything but visible ASCII (a NUL, a control
    character, UTF-8), or a repeated field (the routes refuse it with their own error)."""
    if _BEYOND_ASCII.search(body):
        return None
    pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True)  # as Quart's form parser
    form = MultiDict(pairs)
    for name, value in pairs:
        if _NOT_VISIBLE_ASCII.search(name) or _NOT_VISIBLE_ASCII.search(value):
            return None
    if len(form) != len(pairs):
        return None
    return form


def _replay(body: bytes, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    """``receive`` for the application, starting with the body this layer already read."""
    pending: list[Any] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Any:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
