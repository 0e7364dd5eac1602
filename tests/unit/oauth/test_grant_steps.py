"""The token endpoint's named steps (idp.oauth.grants), each on its own without a database: the
registry's dispatch, the authorization-code checks, refresh-token scope narrowing and the
client_credentials grant. Consuming codes and rotating refresh tokens need the database's atomic
update; they stay in tests/integration/test_token.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest
from werkzeug.datastructures import MultiDict

from idp.config import TokenSettings
from idp.oauth import errors
from idp.oauth.grants import (
    GRANTS,
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    GrantContext,
    RefreshTokenGrant,
    handle_token_request,
)
from idp.storage.models import utcnow
from tests.oauth_fakes import REDIRECT, FakeEvents, FakeTokens, make_client, make_code, make_refresh_token

VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def context(tokens: FakeTokens | None = None, events: FakeEvents | None = None) -> GrantContext:
    return GrantContext(
        db=cast(Any, None),  # a step that touched the database would fail loudly
        tokens=cast(Any, tokens or FakeTokens()),
        sessions=cast(Any, None),
        subjects=cast(Any, None),
        events=cast(Any, events or FakeEvents()),
        settings=TokenSettings(),
    )


def code_grant(form: dict[str, str], **client: Any) -> AuthorizationCodeGrant:
    return AuthorizationCodeGrant(context(), make_client(**client), form)


# -- the registry ----------------------------------------------------------------------------------


def test_the_registry_holds_the_three_grants() -> None:
    assert list(GRANTS) == ["authorization_code", "refresh_token", "client_credentials"]


async def test_an_unknown_grant_type_is_unsupported() -> None:
    with pytest.raises(errors.UnsupportedGrantType) as caught:
        await handle_token_request(context(), make_client(), {"grant_type": "password"})
    assert caught.value.description == "grant_type 'password' is not supported."


async def test_a_grant_the_client_may_not_use_is_unauthorized_client() -> None:
    with pytest.raises(errors.UnauthorizedClient) as caught:
        await handle_token_request(context(), make_client(), {"grant_type": "client_credentials"})
    assert caught.value.description == "This client may not use the client_credentials grant."


async def test_grant_type_is_required() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        await handle_token_request(context(), make_client(), {})
    assert caught.value.description == "grant_type is required"


# -- authorization_code: the checks before the code is consumed --------------------------------------


def test_a_code_of_another_client_is_invalid_grant() -> None:
    with pytest.raises(errors.InvalidGrant) as caught:
        code_grant({}, id="other").check_client(make_code())
    assert caught.value.description == "The authorization code was issued to another client."
    code_grant({}).check_client(make_code())


def test_an_expired_code_is_invalid_grant() -> None:
    with pytest.raises(errors.InvalidGrant) as caught:
        code_grant({}).check_expiry(make_code(expires_at=utcnow() - timedelta(seconds=1)))
    assert caught.value.description == "The authorization code has expired."
    code_grant({}).check_expiry(make_code())


def test_the_redirect_uri_must_repeat_the_requests() -> None:
    code_grant({"redirect_uri": REDIRECT}).check_redirect_uri(make_code())
    with pytest.raises(errors.InvalidGrant) as caught:
        code_grant({"redirect_uri": REDIRECT + "/other"}).check_redirect_uri(make_code())
    assert caught.value.description == "redirect_uri does not match the authorization request."
    with pytest.raises(errors.InvalidRequest) as missing:
        code_grant({}).check_redirect_uri(make_code())
    assert missing.value.description == "redirect_uri is required: the authorization request included it"


def test_a_request_without_redirect_uri_needs_none_at_the_token_endpoint() -> None:
    code_grant({}).check_redirect_uri(make_code(redirect_uri_in_request=False))
    with pytest.raises(errors.InvalidGrant):
        code_grant({"redirect_uri": "https://elsewhere.example/cb"}).check_redirect_uri(
            make_code(redirect_uri_in_request=False)
        )


def test_the_pkce_step_checks_the_verifier_against_the_code() -> None:
    code = make_code(code_challenge=CHALLENGE, code_challenge_method="S256")
    code_grant({"code_verifier": VERIFIER}).check_pkce(code)
    with pytest.raises(errors.InvalidGrant, match="does not match"):
        code_grant({"code_verifier": "x" * 43}).check_pkce(code)
    with pytest.raises(errors.InvalidGrant, match="no code_challenge"):
        code_grant({"code_verifier": VERIFIER}).check_pkce(make_code())
    with pytest.raises(errors.InvalidRequest, match="code_verifier is repeated"):
        AuthorizationCodeGrant(
            context(), make_client(), MultiDict([("code_verifier", VERIFIER), ("code_verifier", VERIFIER)])
        ).check_pkce(code)


async def test_an_overlong_code_is_refused_without_a_look_up() -> None:
    with pytest.raises(errors.InvalidGrant) as caught:
        await code_grant({}).find_code("c" * 257)
    assert caught.value.description == "The authorization code is invalid."


# -- refresh_token: scope narrowing ------------------------------------------------------------------


def refresh_grant(form: dict[str, str]) -> RefreshTokenGrant:
    return RefreshTokenGrant(context(), make_client(), form)


def test_without_scope_the_refresh_keeps_the_granted_scope() -> None:
    assert refresh_grant({}).narrowed_scope(make_refresh_token()) == "openid profile offline_access"


def test_a_narrower_scope_is_granted_in_the_requested_order() -> None:
    assert refresh_grant({"scope": "profile openid profile"}).narrowed_scope(make_refresh_token()) == "profile openid"


def test_a_wider_scope_is_invalid_scope() -> None:
    with pytest.raises(errors.InvalidScope) as caught:
        refresh_grant({"scope": "openid email"}).narrowed_scope(make_refresh_token())
    assert caught.value.description == "The requested scope exceeds the scope originally granted."


# -- client_credentials ------------------------------------------------------------------------------


def service(**fields: Any) -> Any:
    return make_client(
        id="svc",
        grant_types=["client_credentials"],
        scopes=["openid", "profile", "reports:read", "reports:write"],
        **fields,
    )


async def test_client_credentials_gets_the_clients_own_scopes_only() -> None:
    tokens, events = FakeTokens(), FakeEvents()
    response = await ClientCredentialsGrant(context(tokens, events), service(), {}).handle()
    assert response == {
        "access_token": "token-at-1",
        "token_type": "Bearer",
        "expires_in": 600,
        "scope": "reports:read reports:write",
    }
    assert tokens.issued[0].claims["sub"] == "svc"
    [issued] = events.published
    assert (issued.name, issued.client, issued.user_id, issued.refresh_token) == ("token_issued", "svc", None, False)


async def test_client_credentials_may_narrow_but_never_ask_for_user_scopes() -> None:
    response = await ClientCredentialsGrant(context(), service(), {"scope": "reports:read"}).handle()
    assert response["scope"] == "reports:read"
    for scope in ("openid", "reports:admin"):
        with pytest.raises(errors.InvalidScope) as caught:
            await ClientCredentialsGrant(context(), service(), {"scope": scope}).handle()
        assert caught.value.description == f"scope not allowed for client_credentials: {scope}"


async def test_client_credentials_needs_a_confidential_client() -> None:
    with pytest.raises(errors.UnauthorizedClient) as caught:
        await ClientCredentialsGrant(context(), service(client_type="public"), {}).handle()
    assert caught.value.description == "Only confidential clients may use client_credentials."
