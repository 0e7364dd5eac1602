"""idp: an OpenID Connect identity provider.

``create_app(settings)`` is the application factory and the only place blueprints are registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quart import Quart

    from idp.config import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Quart:
    from idp.app import build_app
    from idp.config import load_settings

    return build_app(settings or load_settings())
