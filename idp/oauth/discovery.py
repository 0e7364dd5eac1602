"""Provider metadata (OpenID Connect Discovery 1.0 §3; RFC 8414 §2).

Only what this server implements is advertised: a relying party must be able to rely on every
value, and nothing that works is missing.
"""

from __future__ import annotations

import functools
from typing import Any

from authlib.oidc.discovery import OpenIDProviderMetadata

from idp.accounts.signin import authn
from idp.oauth import pkce
from idp.oauth.authorize import PROMPTS, RESPONSE_MODES
from idp.oauth.claims import SUPPORTED_CLAIMS
from idp.oauth.client_auth import ASSERTION_ALGS
from idp.oauth.clients import AUTH_METHODS
from idp.oauth.grants import GRANTS
from idp.oauth.keys import ConstantDocument
from idp.oauth.scopes import STANDARD_SCOPES


def provider_metadata(
    issuer: str, signing_algorithms: list[str], *, pairwise: bool, registration: bool = False
) -> dict[str, Any]:
    """The document for ``issuer``, whose keys sign with ``signing_algorithms``; ``pairwise`` when
    pairwise subjects are configured, ``registration`` while self-service sign-up is on."""
    auth_methods = list(AUTH_METHODS)
    # "EdDSA" is RFC 8037's name for what RFC 9864 calls "Ed25519": accepted, advertised once.
    assertion_algs = [alg for alg in ASSERTION_ALGS if alg != "EdDSA"]
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
        "scopes_supported": list(STANDARD_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": list(RESPONSE_MODES),
        # What the token endpoint's grant registry holds, and nothing else.
        "grant_types_supported": list(GRANTS),
        "subject_types_supported": ["public", "pairwise"] if pairwise else ["public"],
        "id_token_signing_alg_values_supported": list(signing_algorithms),
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": client_auth,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_methods_supported": list(auth_methods),
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "code_challenge_methods_supported": list(pkce.METHODS),
        "claims_supported": list(SUPPORTED_CLAIMS),
        "acr_values_supported": list(authn.ACR_VALUES),
        # "create" only while self-service registration is on (Initiating User Registration 1.0 §3).
        "prompt_values_supported": [prompt for prompt in PROMPTS if prompt != "create" or registration],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }


def check_provider_metadata(metadata: dict[str, Any]) -> None:
    """Validate the document against OpenID Connect Discovery 1.0 §3 and RFC 8414 §2 with Authlib's
    metadata model (OpenIDProviderMetadata extends AuthorizationServerMetadata), so a configuration
    that would publish an invalid one fails at start-up: for example signing keys without RS256,
    which Discovery §3 says MUST be included. Raises ValueError naming the field."""
    OpenIDProviderMetadata(metadata).validate()


@functools.lru_cache(maxsize=16)
def metadata_document(
    issuer: str, algorithms: tuple[str, ...], *, pairwise: bool, registration: bool
) -> ConstantDocument:
    """The discovery document encoded once per set of inputs (its bytes and ETag)."""
    metadata = provider_metadata(issuer, list(algorithms), pairwise=pairwise, registration=registration)
    return ConstantDocument.of(metadata)
