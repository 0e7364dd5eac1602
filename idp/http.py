"""The HTTP layer's leaf: the Quart application class and how a request reaches the running app.

Route modules and the web helpers import this module, never the factory (``idp.app``), so the
factory can import them without a cycle. The per-process runtime lives on
``app.extensions["idp"]``, as Quart and Flask extensions keep theirs; ``runtime()`` reads it for
the current request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from quart import Quart, Response, current_app
from quart.sessions import SessionInterface

if TYPE_CHECKING:
    from idp.config import Settings
    from idp.runtime import Runtime

EXTENSION = "idp"


class IdPResponse(Response):
    """Quart's Response, except that a body states its own type: Quart would label every body,
    an empty one too, text/html (RFC 9110 §8.3: Content-Type describes content)."""

    default_mimetype = None  # type: ignore[assignment]


class NoFrameworkSession(SessionInterface):
    """Sessions live server-side (idp.accounts.sessions.store) behind idp's own cookie; Quart's
    signed-cookie session is never used, so it is neither opened nor saved on each request (its
    serializer was built per request). Writing to ``quart.session`` raises: nothing can use it
    by mistake."""

    async def open_session(self, app: Any, request: Any) -> None:
        return None

    async def save_session(self, app: Any, session: Any, response: Any) -> None:
        return None


class IdPApp(Quart):
    """Quart with the settings attached and the runtime on ``extensions["idp"]`` while serving."""

    response_class = IdPResponse
    session_interface = NoFrameworkSession()  # type: ignore[assignment]  # Quart's infers its cookie one

    settings: Settings
    # Blueprints whose errors are JSON (protocol endpoints and APIs); the others render pages.
    json_blueprints: set[str]

    @property
    def runtime(self) -> Runtime:
        found = self.extensions.get(EXTENSION)
        if found is None:
            raise RuntimeError("the application is not serving (before_serving has not run)")
        return cast("Runtime", found)


def current() -> IdPApp:
    return cast(IdPApp, current_app)


def runtime() -> Runtime:
    """The runtime of the app handling the current request."""
    return current().runtime


def settings() -> Settings:
    return current().settings
