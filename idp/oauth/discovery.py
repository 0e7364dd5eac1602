"""Provider metadata (OpenID Connect Discovery 1.0 §3; RFC 8414 §2).

Only what this server actually implements is advertised: a relying party must be able to rely
on every value. Endpoints join this document as they are built.
"""

from __future__ import annotations

from typing import Any


def provider_metadata(issuer: str, signing_algorithms: list[str]) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks",
        "id_token_signing_alg_values_supported": list(signing_algorithms),
    }
