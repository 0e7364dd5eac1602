"""The discovery document is checked at start-up with Authlib's metadata model (OpenID Connect
Discovery 1.0 §3, RFC 8414 §2): what idp would publish is valid, and a document that is not stops
the process with one line naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from idp.config import generate_secrets, load_settings
from idp.oauth.discovery import check_provider_metadata, provider_metadata
from idp.runtime import StartupError, check_discovery_document

ISSUER = "https://id.example.com"


@pytest.mark.parametrize("pairwise", [False, True])
@pytest.mark.parametrize("registration", [False, True])
def test_every_document_idp_publishes_is_valid(pairwise: bool, registration: bool) -> None:
    for algorithms in (["RS256"], ["ES256", "RS256"], ["RS256", "ES256", "Ed25519"]):
        check_provider_metadata(provider_metadata(ISSUER, algorithms, pairwise=pairwise, registration=registration))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id_token_signing_alg_values_supported": ["ES256"]}, "id_token_signing_alg_values_supported"),
        ({"issuer": "https://id.example.com/?tenant=1"}, "issuer"),
        ({"response_types_supported": None}, "response_types_supported"),
        ({"subject_types_supported": None}, "subject_types_supported"),
    ],
)
def test_an_invalid_document_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    metadata = {**provider_metadata(ISSUER, ["RS256"], pairwise=False), **change}
    metadata = {name: value for name, value in metadata.items() if value is not None}
    with pytest.raises(ValueError, match=field):
        check_provider_metadata(metadata)


def test_start_up_checks_the_document_the_settings_would_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = generate_secrets()
    settings = load_settings(
        environ={
            "IDP_ISSUER": ISSUER,
            "IDP_SECRETS__COOKIE_SECRET": secrets["cookie_secret"],
            "IDP_SECRETS__KEY_ENCRYPTION_KEY": secrets["key_encryption_key"],
        }
    )
    check_discovery_document(settings)

    def broken(*_: Any, **__: Any) -> dict[str, Any]:
        return {"issuer": ISSUER}

    monkeypatch.setattr("idp.runtime.provider_metadata", broken)
    with pytest.raises(StartupError, match=r"^the discovery document would be invalid: .*authorization_endpoint"):
        check_discovery_document(settings)
