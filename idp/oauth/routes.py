"""Protocol endpoints (the only protocol module that imports Quart)."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from idp.app import IdPApp, runtime
from idp.oauth.discovery import provider_metadata

blueprint = Blueprint("oauth", __name__)

# RPs re-fetch the JWKS on an unknown kid; keep caches shorter than a rotation's overlap.
JWKS_MAX_AGE = 300
METADATA_MAX_AGE = 3600


def _metadata() -> dict[str, object]:
    rt = runtime()
    return provider_metadata(rt.settings.issuer, rt.keys.algorithms)


@blueprint.get("/.well-known/openid-configuration")
async def openid_configuration() -> Response:
    response = jsonify(_metadata())
    response.headers["Cache-Control"] = f"public, max-age={METADATA_MAX_AGE}"
    # Discovery and JWKS may be read cross-origin by browser apps (RFC 9700 §2.6).
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@blueprint.get("/.well-known/oauth-authorization-server")
async def oauth_authorization_server() -> Response:
    # RFC 8414 §3: the same document under the OAuth well-known name.
    return await openid_configuration()


@blueprint.get("/jwks")
async def jwks() -> Response:
    response = jsonify(runtime().keys.jwks())
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.content_type = "application/jwk-set+json"
    return response


__all__ = ["IdPApp", "blueprint"]
