"""Assembling the Quart application: runtime lifecycle, request hooks, errors, blueprints."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable

from quart import Response, current_app, g, request

from idp import openapi
from idp.accounts.blueprints import API as account_api
from idp.accounts.blueprints import LIVE as live_notifications
from idp.accounts.blueprints import PAGES as account_pages
from idp.admin.blueprints import API as admin_api
from idp.admin.blueprints import PAGES as admin_pages
from idp.config import Settings
from idp.error_responses import install_error_handlers
from idp.errors import InvalidRequest, from_http_status
from idp.events import EventContext, set_context
from idp.health import LOOP_LAG
from idp.health import blueprint as health
from idp.http import EXTENSION, IdPApp
from idp.metrics import install as install_metrics
from idp.oauth.routes import blueprint as oauth
from idp.oauth.routes import pages as oauth_pages
from idp.observability import LoopLagProbe, accept_request_id, log_access, request_id_var
from idp.runtime import StartupError, open_runtime
from idp.security import inputs, request_limits
from idp.security.headers import apply_security_headers, new_nonce
from idp.web import attach_csrf_cookie


def build_app(settings: Settings) -> IdPApp:
    app = IdPApp("idp")
    app.settings = settings
    app.json_blueprints = set()
    app.config.update(
        # The largest body any endpoint takes is a picture upload (plus multipart overhead); JSON
        # APIs and forms enforce their own, smaller limits.
        MAX_CONTENT_LENGTH=max(1024 * 1024, settings.pictures.max_upload_bytes + 64 * 1024),
        JSON_SORT_KEYS=False,
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
            rt = app.extensions[EXTENSION] = await open_runtime(settings)
        except StartupError as exc:
            logging.getLogger("idp").critical("cannot start: %s", exc)
            raise
        if rt.relay is not None:
            await rt.relay.start()  # in-process store: what other processes announce arrives from here on
        if settings.notifications.enabled:
            await rt.live.start()  # this node hears every node's notifications
        rt.outbox.start()  # this node delivers due mail and logout tokens (idp.outbox)
        await rt.client_cache.start()  # clients are cached once this node hears every change
        await rt.user_cache.start()  # so are accounts
        await rt.keys.start()  # reload at once when any node rotates; rotate on schedule
        rt.tokens.denylist.start()  # re-synced from the database before it would expire
        await rt.tokens.denylist.listen()  # revocations held in memory once this node hears them all
        if settings.server.loop_lag_probe:
            probe = app.extensions[LOOP_LAG] = LoopLagProbe()
            probe.start()

    @app.after_serving
    async def _stop() -> None:
        if (probe := app.extensions.pop(LOOP_LAG, None)) is not None:
            await probe.stop()
        running = app.extensions.pop(EXTENSION, None)
        if running is not None:
            await running.close()

    _install_request_hooks(app)
    install_error_handlers(app)
    _register_blueprints(app)
    openapi.install(app)
    install_metrics(app, settings.metrics)  # after the request hooks: it reads their g.started
    return app


def _register_blueprints(app: IdPApp) -> None:
    for bp, json_errors in (
        (health, True),
        (oauth, True),
        (oauth_pages, False),
        *((page_blueprint, False) for page_blueprint in account_pages),
        (account_api, True),
        (live_notifications, True),
        (admin_api, True),
        (admin_pages, False),
        (openapi.pages, False),
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
            response.headers,
            response.mimetype,
            https=app.settings.issuer_is_https,
            nonce=g.get("csp_nonce"),
            form_action=None if g.get("forms_leave_site") else "'self'",
        )
        started = getattr(g, "started", None)
        duration_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
        log_access(request.method, request.path, response.status_code, duration_ms, request.remote_addr)
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
