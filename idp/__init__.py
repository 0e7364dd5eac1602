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
    # Deferred: `import idp.config` (the CLI, tools) must not load Quart and every blueprint.
    from idp.app import build_app  # noqa: PLC0415
    from idp.config import load_settings  # noqa: PLC0415

    return build_app(settings or load_settings())
