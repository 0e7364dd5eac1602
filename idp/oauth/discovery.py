"""Provider metadata (OpenID Connect Discovery 1.0 §3; RFC 8414 §2).

Only what this server implements is advertised: a relying party must be able to rely on every
value, and nothing that works is missing.
"""

from __future__ import annotations

from typing import Any


def provider_metadata(
    issuer: str,
    signing_algorithms: list[str],
    *,
    scopes: list[str],
    grant_types: list[str],
    auth_methods: list[str],
    assertion_algs: list[str],
    claims: list[str],
    acr_values: list[str] | None = None,
    pairwise: bool,
    registration: bool = False,
) -> dict[str, Any]:
    # Introspection answers authenticated clients only (RFC 7662 §2.1); revocation also serves
    # public clients, which identify themselves with client_id alone (RFC 7009 §2.1).
    client_auth = [method for method in auth_methods if method != "none"]
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks",
        "end_session_endpoint": f"{issuer}/logout",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": grant_types,
        "subject_types_supported": ["public", "pairwise"] if pairwise else ["public"],
        "id_token_signing_alg_values_supported": list(signing_algorithms),
        "token_endpoint_auth_methods_supported": list(auth_methods),
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": client_auth,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_methods_supported": list(auth_methods),
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": claims,
        **({"acr_values_supported": acr_values} if acr_values else {}),
        # "create" only while self-service registration is on (Initiating User Registration 1.0 §3).
        "prompt_values_supported": [
            "none",
            "login",
            "consent",
            "select_account",
            *(["create"] if registration else []),
        ],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }
