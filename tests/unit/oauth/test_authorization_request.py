"""The authorization endpoint's request checks (idp.oauth.authorize) without an app: phase one
(client and redirect URI, never redirected) and phase two (every other parameter, redirected with
state), each error with its code and description, and the first failing check reported."""

from __future__ import annotations

from typing import Any

import pytest

from idp.oauth import authorize
from idp.oauth.authorize import AuthorizationErrorRedirect, InvalidRedirectUri
from tests.oauth_fakes import REDIRECT, make_client

CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
VALID = {
    "response_type": "code",
    "client_id": "web",
    "redirect_uri": REDIRECT,
    "scope": "openid profile",
    "state": "st",
    "code_challenge": CHALLENGE,
    "code_challenge_method": "S256",
}


def refused(change: dict[str, Any], **client: Any) -> tuple[str, str]:
    params = {name: value for name, value in {**VALID, **change}.items() if value is not None}
    with pytest.raises(AuthorizationErrorRedirect) as caught:
        authorize.parse_authorization_request(make_client(**client), params)
    assert caught.value.target.redirect_uri == REDIRECT
    return caught.value.error.error, caught.value.error.description


def test_a_valid_request_is_parsed_whole() -> None:
    request = authorize.parse_authorization_request(
        make_client(), {**VALID, "max_age": "300", "prompt": "login consent", "nonce": "n", "acr_values": "a b"}
    )
    assert (request.scopes, request.state, request.max_age, request.prompt) == (
        ["openid", "profile"],
        "st",
        300,
        ["login", "consent"],
    )
    assert (request.nonce, request.acr_values, request.redirect_uri_in_request) == ("n", ["a", "b"], True)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"state": "s" * 2049}, ("invalid_request", "state is longer than")),
        ({"response_mode": "fragment"}, ("invalid_request", "response_mode must be query or form_post")),
        ({"request": "eyJ..."}, ("request_not_supported", "")),
        ({"request_uri": "https://rp.example/r"}, ("request_uri_not_supported", "")),
        ({"response_type": None}, ("invalid_request", "response_type is required")),
        ({"response_type": "token"}, ("unsupported_response_type", "")),
        ({"scope": None}, ("invalid_scope", "scope is required")),
        ({"scope": "openid admin"}, ("invalid_scope", "scope not allowed for this client: admin")),
        ({"code_challenge": None, "code_challenge_method": None}, ("invalid_request", "code_challenge is required")),
        ({"code_challenge_method": "plain"}, ("invalid_request", "code_challenge_method must be S256")),
        ({"prompt": "sometimes"}, ("invalid_request", "unsupported prompt value 'sometimes'")),
        ({"prompt": "none login"}, ("invalid_request", "prompt=none cannot be combined")),
        ({"max_age": "-1"}, ("invalid_request", "max_age must be a non-negative integer")),
        ({"max_age": "١٢"}, ("invalid_request", "max_age must be a non-negative integer")),
        ({"nonce": "n" * 513}, ("invalid_request", "nonce is longer than")),
        ({"login_hint": "h" * 5000}, ("invalid_request", "login_hint is too long")),
    ],
)
def test_each_check_refuses_what_it_checks(change: dict[str, Any], expected: tuple[str, str]) -> None:
    error, description = refused(change)
    assert error == expected[0]
    assert description.startswith(expected[1])


def test_the_first_failing_check_is_the_one_reported() -> None:
    # response_mode is checked before response_type, response_type before scope, scope before PKCE.
    assert refused({"response_mode": "x", "response_type": "token"})[1].startswith("response_mode")
    assert refused({"response_type": "token", "scope": None})[0] == "unsupported_response_type"
    assert refused({"scope": None, "code_challenge": None})[1] == "scope is required"


def test_a_client_without_the_code_grant_is_unauthorized() -> None:
    assert refused({}, grant_types=["client_credentials"])[0] == "unauthorized_client"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"redirect_uri": "https://evil.example/cb"}, "The redirect_uri is not registered for this client."),
        ({"redirect_uri": None}, "The redirect_uri parameter is required in an OpenID Connect request."),
        ({"redirect_uri": REDIRECT + "#frag"}, "The redirect_uri is not registered for this client."),
    ],
)
def test_phase_one_errors_are_never_redirected(change: dict[str, Any], message: str) -> None:
    params = {name: value for name, value in {**VALID, **change}.items() if value is not None}
    with pytest.raises(InvalidRedirectUri) as caught:
        authorize.parse_authorization_request(make_client(), params)
    assert caught.value.description == message
