"""Assembling the Quart application: runtime lifecycle, request hooks, errors, blueprints."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any, cast

from quart import Quart, Response, current_app, g, render_template, request
from werkzeug.exceptions import HTTPException

from idp.config import Settings
from idp.errors import IdPError, InvalidRequest, ServerError, ServiceUnavailable, from_http_status
from idp.events import EventContext, set_context
from idp.observability import accept_request_id, request_id_var, summarize_exception
from idp.runtime import Runtime, StartupError, open_runtime
from idp.security import inputs, request_limits
from idp.security.headers import apply_security_headers, new_nonce
from idp.storage.db import DatabaseUnavailable
from idp.storage.kv import KeyValueUnavailable
from idp.web import attach_csrf_cookie

access_log = logging.getLogger("idp.access")
error_log = logging.getLogger("idp.errors")


class IdPResponse(Response):
    """Quart's Response, except that a body states its own type: Quart would label every body,
    an empty one too, text/html (RFC 9110 §8.3: Content-Type describes content)."""

    default_mimetype = None  # type: ignore[assignment]


class IdPApp(Quart):
    """Quart with the settings and the per-process runtime attached."""

    response_class = IdPResponse

    settings: Settings
    json_blueprints: set[str]
    _runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the application is not serving (before_serving has not run)")
        return self._runtime


def runtime() -> Runtime:
    """The runtime of the app handling the current request."""
    return cast(IdPApp, current_app).runtime


def build_app(settings: Settings) -> IdPApp:
    app = IdPApp("idp")
    app.settings = settings
    app.json_blueprints = set()
    app.config.update(
        SECRET_KEY=settings.secrets.cookie_secret.get_secret_value() if settings.secrets.cookie_secret else None,
        # The largest body any endpoint takes is a picture upload (plus multipart overhead); JSON
        # APIs and forms enforce their own, smaller limits.
        MAX_CONTENT_LENGTH=max(1024 * 1024, settings.pictures.max_upload_bytes + 64 * 1024),
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.issuer_is_https,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.template_global()
    def csp_nonce() -> str:
        """This response's script nonce (made on first use; the CSP header then carries it)."""
        if "csp_nonce" not in g:
            g.csp_nonce = new_nonce()
        return str(g.csp_nonce)

    @app.before_serving
    async def _start() -> None:
        try:
            app._runtime = await open_runtime(settings)
        except StartupError as exc:
            logging.getLogger("idp").critical("cannot start: %s", exc)
            raise

    @app.after_serving
    async def _stop() -> None:
        if app._runtime is not None:
            await app._runtime.close()
            app._runtime = None

    _install_request_hooks(app)
    _install_error_handlers(app)
    _register_blueprints(app)
    return app


def _register_blueprints(app: IdPApp) -> None:
    from idp.accounts.api import blueprint as account_api
    from idp.accounts.mfa_routes import blueprint as mfa_pages
    from idp.accounts.routes import blueprint as accounts
    from idp.accounts.session_routes import blueprint as session_pages
    from idp.health import blueprint as health
    from idp.oauth.routes import blueprint as oauth
    from idp.oauth.routes import pages as oauth_pages

    for bp, json_errors in (
        (health, True),
        (oauth, True),
        (oauth_pages, False),
        (accounts, False),
        (mfa_pages, False),
        (session_pages, False),
        (account_api, True),
    ):
        app.register_blueprint(bp)
        if json_errors:
            app.json_blueprints.add(bp.name)


def _install_request_hooks(app: IdPApp) -> None:
    @app.before_request
    async def _begin() -> None:
        g.started = time.perf_counter()
        # `idp serve` refuses these while they arrive; this holds the rule under any ASGI server.
        refusal = request_limits.head_refusal(_target_length(), request.headers.items())
        if refusal is not None:
            raise from_http_status(refusal.status, refusal.message)
        await _refuse_unusable_text()
        g.request_id = accept_request_id(request.headers.get("X-Request-ID")) or uuid.uuid4().hex
        request_id_var.set(g.request_id)
        set_context(
            EventContext(
                ip=request.remote_addr,
                user_agent=request.headers.get("User-Agent"),
                request_id=g.request_id,
            )
        )
        await app.runtime.keys.refresh_if_stale()

    @app.after_request
    async def _finish(response: Response) -> Response:
        rid = getattr(g, "request_id", None)
        if rid:
            response.headers["X-Request-ID"] = rid
        attach_csrf_cookie(response)
        _describe_body_truthfully(response)
        apply_security_headers(
            response,
            https=app.settings.issuer_is_https,
            nonce=g.get("csp_nonce"),
            form_action=None if g.get("forms_leave_site") else "'self'",
        )
        started = getattr(g, "started", None)
        duration_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
        access_log.info(
            "%s %s %s %sms",
            request.method,
            request.path,  # never the query string: it can carry codes and tokens
            response.status_code,
            duration_ms,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "remote_addr": request.remote_addr,
            },
        )
        return response


async def _refuse_unusable_text() -> None:
    """400 naming the input when a query parameter, path segment, form field or header carries a
    character no handler could store (NUL) or encode (a lone surrogate): before any query runs,
    whichever route it is (idp.security.inputs)."""
    sources: list[tuple[str, Iterable[tuple[str, str]]]] = [
        ("query parameter", request.args.items(multi=True)),
        ("path segment", ((name, str(value)) for name, value in (request.view_args or {}).items())),
        ("header", request.headers.items()),
    ]
    view = current_app.view_functions.get(request.endpoint or "")
    own_validation = getattr(view, "validates_own_form_text", False)
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data") and not own_validation:
        sources.append(("form field", (await request.form).items(multi=True)))
    for where, pairs in sources:
        found = inputs.first_unusable(pairs)
        if found is not None:
            name, problem = found
            raise InvalidRequest(f"The {where} {name[:50]!r} contains {problem}, which is not allowed.")


# RFC 9110 §15.2, §15.3.5, §15.4.5: these never carry content.
_NO_CONTENT_STATUSES = frozenset({204, 304})


def _describe_body_truthfully(response: Response) -> None:
    """An empty body has no media type (RFC 9110 §8.3: Content-Type describes content), and a 204
    or 304 no Content-Length either (§8.6). A text/html label on an empty revocation answer made
    browser OpenID libraries refuse it, and drew the HTML CSP."""
    if response.status_code in _NO_CONTENT_STATUSES or response.status_code < 200:
        response.headers.pop("Content-Type", None)
        response.headers.pop("Content-Length", None)
    elif response.content_length == 0:
        response.headers.pop("Content-Type", None)


def _target_length() -> int:
    """Bytes of the request target as sent (the raw path and the query string)."""
    raw_path = request.scope.get("raw_path") or request.path.encode()
    query = request.query_string
    return len(raw_path) + (len(query) + 1 if query else 0)


JSON_PATH_PREFIXES = (
    "/api/",
    "/token",
    "/userinfo",
    "/introspect",
    "/revoke",
    "/jwks",
    "/.well-known/",
    "/healthz",
    "/readyz",
)


def wants_json() -> bool:
    app = cast(IdPApp, current_app)
    if request.blueprint in app.json_blueprints:
        return True
    if request.mimetype == "application/json":
        return True  # a page's fetch() call (passkey ceremonies) reads JSON errors
    if request.blueprint is not None:
        return False
    # Routing failed (404/405), so no blueprint is known: API paths still answer in JSON.
    if request.path.startswith(JSON_PATH_PREFIXES):
        return True
    accept = request.accept_mimetypes
    return accept.best_match(["text/html", "application/json"]) == "application/json"


async def render_error(error: IdPError) -> Response:
    if wants_json():
        response = cast(Response, current_app.json.response(error.to_dict()))
    else:
        html = await render_template("error.html", error=error)
        response = Response(html, content_type="text/html; charset=utf-8")
    response.status_code = error.status_code
    response.headers["Cache-Control"] = "no-store"
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _install_error_handlers(app: IdPApp) -> None:
    @app.errorhandler(IdPError)
    async def _idp_error(error: IdPError) -> Response:
        return await render_error(error)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        response = await render_error(from_http_status(error.code or 500))
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        if isinstance(error, DatabaseUnavailable | KeyValueUnavailable):
            error_log.error("dependency unavailable", extra={"error": summarize_exception(error)})
            return await render_error(ServiceUnavailable())
        # Type and location only: the message and traceback may hold SQL or secrets.
        error_log.error("unhandled exception", extra={"error": summarize_exception(error)})
        return await render_error(ServerError())


def public_url(path: str, **_: Any) -> str:
    """An absolute URL under the issuer (not the request's Host header, which a client controls)."""
    return f"{cast(IdPApp, current_app).settings.issuer}{path}"
