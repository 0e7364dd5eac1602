"""The error model's HTTP half: each IdPError as an HTML page or as JSON, and the handlers.

Browser routes get a page; protocol endpoints, APIs and a page's fetch() calls get
``{"error", "error_description"}`` with the error's status and headers. Anything that is not an
IdPError becomes ``server_error`` (or ``temporarily_unavailable`` when a dependency is down) with
a fixed text: no stack trace, SQL or exception message reaches a client or a log line.
"""

from __future__ import annotations

import logging
from typing import cast

from quart import Quart, Response, render_template, request
from werkzeug.exceptions import HTTPException

from idp.errors import IdPError, ServerError, ServiceUnavailable, from_http_status
from idp.http import current
from idp.observability import summarize_exception
from idp.security.passwords import HashPoolBusy
from idp.storage.db import DatabaseUnavailable
from idp.storage.kv import KeyValueUnavailable

error_log = logging.getLogger("idp.errors")


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
    if request.blueprint in current().json_blueprints:
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
        response = cast(Response, current().json.response(error.to_dict()))
    else:
        html = await render_template("error.html", error=error)
        response = Response(html, content_type="text/html; charset=utf-8")
    response.status_code = error.status_code
    response.headers["Cache-Control"] = "no-store"
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def install_error_handlers(app: Quart) -> None:
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
        return await render_error(answer_for_unexpected(error))


def answer_for_unexpected(error: Exception) -> IdPError:
    """What a client is told of an exception that is not an IdPError, logged here: a dependency
    that is down or a saturated hash pool is 503, anything else 500, with a fixed text."""
    if isinstance(error, HashPoolBusy):
        error_log.warning("password hashing saturated: request refused with 503")
        return ServiceUnavailable("Too many sign-ins at once. Try again in a few seconds.")
    if isinstance(error, DatabaseUnavailable | KeyValueUnavailable):
        error_log.error("dependency unavailable", extra={"error": summarize_exception(error)})
        return ServiceUnavailable()
    # Type and location only: the message and traceback may hold SQL or secrets.
    error_log.error("unhandled exception", extra={"error": summarize_exception(error)})
    return ServerError()
