"""The token endpoint's named steps (idp.oauth.grants) without an app or a database: the registry's
dispatch, the authorization-code checks, refresh-token scope narrowing, the client_credentials
grant, and whole grants (redemption, replay, rotation, reuse, revocation) against the in-memory
repositories of tests/oauth_fakes.py. The races the database decides (two redemptions at once)
stay in tests/integration/test_token.py."""

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
    revoke_session_grants,
    revoke_user_client_grants,
    token_response,
)
from idp.security.tokens import sha256_digest
from idp.storage.models import utcnow
from tests.oauth_fakes import (
    REDIRECT,
    FakeEvents,
    FakeSessions,
    FakeTokens,
    MemoryUnitOfWork,
    MemoryUnits,
    PublicSubjects,
    make_client,
    make_code,
    make_refresh_token,
    make_session,
    make_user,
)

VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def context(tokens: FakeTokens | None = None, events: FakeEvents | None = None) -> GrantContext:
    return GrantContext(
        units=cast(Any, None),  # a step that opened a unit of work would fail loudly
        tokens=cast(Any, tokens or FakeTokens()),
        sessions=cast(Any, None),
        subjects=cast(Any, None),
        events=cast(Any, events or FakeEvents()),
        settings=TokenSettings(),
    )


def no_rows() -> Any:
    return MemoryUnitOfWork()


def world(
    units: MemoryUnits,
    tokens: FakeTokens | None = None,
    events: FakeEvents | None = None,
    sessions: FakeSessions | None = None,
) -> GrantContext:
    """A GrantContext whose units of work are ``units`` (rows in memory)."""
    return GrantContext(
        units=cast(Any, units),
        tokens=cast(Any, tokens or FakeTokens()),
        sessions=cast(Any, sessions or FakeSessions()),
        subjects=cast(Any, PublicSubjects()),
        events=cast(Any, events or FakeEvents()),
        settings=TokenSettings(),
    )


def authenticate_as(client_id: str) -> Any:
    """Client authentication that finds ``client_id`` in the unit of work's clients."""

    async def authenticate(clients: Any) -> Any:
        client = await clients.get(client_id)
        assert client is not None
        return client

    return authenticate


def code_grant(form: dict[str, str], **client: Any) -> AuthorizationCodeGrant:
    return AuthorizationCodeGrant(context(), no_rows(), make_client(**client), form)


# -- the registry ----------------------------------------------------------------------------------


def test_the_registry_holds_the_three_grants() -> None:
    assert list(GRANTS) == ["authorization_code", "refresh_token", "client_credentials"]


async def test_an_unknown_grant_type_is_unsupported() -> None:
    with pytest.raises(errors.UnsupportedGrantType) as caught:
        await handle_token_request(context(), no_rows(), make_client(), {"grant_type": "password"})
    assert caught.value.description == "grant_type 'password' is not supported."


async def test_a_grant_the_client_may_not_use_is_unauthorized_client() -> None:
    with pytest.raises(errors.UnauthorizedClient) as caught:
        await handle_token_request(context(), no_rows(), make_client(), {"grant_type": "client_credentials"})
    assert caught.value.description == "This client may not use the client_credentials grant."


async def test_grant_type_is_required() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        await handle_token_request(context(), no_rows(), make_client(), {})
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
            context(), no_rows(), make_client(), MultiDict([("code_verifier", VERIFIER), ("code_verifier", VERIFIER)])
        ).check_pkce(code)


async def test_an_overlong_code_is_refused_without_a_look_up() -> None:
    grant = code_grant({"code": "c" * 257, "redirect_uri": REDIRECT})
    with pytest.raises(errors.InvalidGrant) as caught:
        await grant.handle()
    assert caught.value.description == "The authorization code is invalid."
    assert grant.uow.codes.lookups == 0


# -- refresh_token: scope narrowing ------------------------------------------------------------------


def refresh_grant(form: dict[str, str]) -> RefreshTokenGrant:
    return RefreshTokenGrant(context(), no_rows(), make_client(), form)


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
    units = MemoryUnits(service())
    response = await token_response(
        world(units, tokens, events), {"grant_type": "client_credentials"}, authenticate_as("svc")
    )
    assert units.opened == 1
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
    issued = await ClientCredentialsGrant(context(), no_rows(), service(), {"scope": "reports:read"}).handle()
    assert issued.response["scope"] == "reports:read"
    for scope in ("openid", "reports:admin"):
        with pytest.raises(errors.InvalidScope) as caught:
            await ClientCredentialsGrant(context(), no_rows(), service(), {"scope": scope}).handle()
        assert caught.value.description == f"scope not allowed for client_credentials: {scope}"


async def test_client_credentials_needs_a_confidential_client() -> None:
    with pytest.raises(errors.UnauthorizedClient) as caught:
        await ClientCredentialsGrant(context(), no_rows(), service(client_type="public"), {}).handle()
    assert caught.value.description == "Only confidential clients may use client_credentials."


# -- whole grants against in-memory repositories ------------------------------------------------------

CODE = "the-authorization-code"
REFRESH = "the-refresh-token"


def web(**fields: Any) -> Any:
    return make_client(grant_types=["authorization_code", "refresh_token"], **fields)


def redemption() -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": CODE, "redirect_uri": REDIRECT}


def stored_code(**fields: Any) -> Any:
    return make_code(code_digest=sha256_digest(CODE), session_id="sid-1", nonce="n-1", **fields)


def stored_refresh_token(tokens: FakeTokens, **fields: Any) -> Any:
    tokens.refresh[REFRESH] = {"jti": "jti-1"}
    return make_refresh_token(token_digest=sha256_digest(REFRESH), session_id="sid-1", **fields)


async def test_a_code_is_redeemed_in_one_unit_of_work_for_every_token_it_yields() -> None:
    tokens, events, sessions = FakeTokens(), FakeEvents(), FakeSessions(live={"sid-1": make_session()})
    units = MemoryUnits(web(), make_user(), stored_code(scope="openid offline_access"))
    response = await token_response(world(units, tokens, events, sessions), redemption(), authenticate_as("web"))

    assert units.opened == 1 and units.store.commits == 1
    assert set(response) == {"access_token", "token_type", "expires_in", "scope", "id_token", "refresh_token"}
    assert units.store.codes.rows[sha256_digest(CODE)].consumed_at is not None
    [refresh] = units.store.refresh_tokens.rows.values()
    assert (refresh.family_id, refresh.parent_jti, refresh.session_id) == ("grant-1", None, "sid-1")
    assert refresh.token_digest == sha256_digest(response["refresh_token"])
    assert tokens.issued[0].claims["gid"] == "grant-1"  # revoking the grant refuses the token
    # The client joined the session in the database too, in the same unit of work.
    assert units.store.session_clients.rows == {("sid-1", "web"): "user-1"}
    assert tokens.id_tokens_issued[0]["nonce"] == "n-1"
    assert sessions.clients == {"sid-1": ["web"]}  # back-channel logout will notify the client
    [issued] = events.published
    assert (issued.name, issued.grant_type, issued.refresh_token) == ("token_issued", "authorization_code", True)


async def test_a_replayed_code_revokes_its_grant_and_the_revocation_survives_the_refusal() -> None:
    tokens, events = FakeTokens(), FakeEvents()
    units = MemoryUnits(
        web(), make_user(), stored_code(consumed_at=utcnow()), stored_refresh_token(tokens, family_id="grant-1")
    )
    with pytest.raises(errors.InvalidGrant) as caught:
        await token_response(world(units, tokens, events), redemption(), authenticate_as("web"))
    assert caught.value.description == "The authorization code has already been used."
    # The unit of work rolled back on the error, yet the revocation had been committed before it.
    assert units.store.refresh_tokens.rows["jti-1"].revoked_at is not None
    assert set(units.store.revocations.grants) == {"grant-1"} and tokens.revoked_grants == {"grant-1"}
    [revoked] = events.published
    assert (revoked.name, revoked.reason) == ("token_revoked", "code_replay")
    assert units.opened == 1


async def test_a_code_from_an_ended_session_yields_nothing_and_stays_unspent() -> None:
    units = MemoryUnits(web(), make_user(), stored_code())
    with pytest.raises(errors.InvalidGrant) as caught:
        await token_response(world(units), redemption(), authenticate_as("web"))
    assert caught.value.description == "The sign-in session this code was issued in has ended."
    assert units.store.codes.rows[sha256_digest(CODE)].consumed_at is None
    assert units.store.refresh_tokens.rows == {}


async def test_the_code_of_a_disabled_user_is_spent_and_yields_nothing() -> None:
    tokens, events = FakeTokens(), FakeEvents()
    sessions = FakeSessions(live={"sid-1": make_session()})
    units = MemoryUnits(web(), make_user(disabled=True), stored_code())
    with pytest.raises(errors.InvalidGrant) as caught:
        await token_response(world(units, tokens, events, sessions), redemption(), authenticate_as("web"))
    assert caught.value.description == "The user of this grant no longer exists or is disabled."
    assert units.store.codes.rows[sha256_digest(CODE)].consumed_at is not None
    assert (tokens.issued, units.store.refresh_tokens.rows, events.published) == ([], {}, [])


async def test_a_refresh_rotates_in_one_unit_of_work_keeping_family_scope_and_end() -> None:
    tokens, events = FakeTokens(), FakeEvents()
    presented = stored_refresh_token(tokens)
    units = MemoryUnits(web(), make_user(), presented)
    form = {"grant_type": "refresh_token", "refresh_token": REFRESH, "scope": "openid"}
    response = await token_response(world(units, tokens, events), form, authenticate_as("web"))

    assert units.opened == 1 and response["scope"] == "openid"
    assert presented.used_at is not None and presented.revoked_at is None
    [rotated] = [row for row in units.store.refresh_tokens.rows.values() if row.jti != "jti-1"]
    assert (rotated.family_id, rotated.parent_jti) == ("grant-1", "jti-1")
    assert rotated.scope == "openid profile offline_access"  # RFC 6749 §6: the grant's scope stays
    assert rotated.family_expires_at == presented.family_expires_at
    assert rotated.token_digest == sha256_digest(response["refresh_token"])
    [issued] = events.published
    assert issued.grant_type == "refresh_token"


async def test_the_refresh_token_of_a_disabled_user_is_spent_and_yields_nothing() -> None:
    tokens, events = FakeTokens(), FakeEvents()
    presented = stored_refresh_token(tokens)
    units = MemoryUnits(web(), make_user(disabled=True), presented)
    form = {"grant_type": "refresh_token", "refresh_token": REFRESH}
    with pytest.raises(errors.InvalidGrant) as caught:
        await token_response(world(units, tokens, events), form, authenticate_as("web"))
    assert caught.value.description == "The user of this grant no longer exists or is disabled."
    assert presented.used_at is not None and presented.revoked_at is None
    assert (tokens.issued, list(units.store.refresh_tokens.rows), events.published) == ([], ["jti-1"], [])


async def test_a_refresh_to_a_wider_scope_leaves_the_token_unspent() -> None:
    tokens = FakeTokens()
    presented = stored_refresh_token(tokens)
    units = MemoryUnits(web(), make_user(), presented)
    form = {"grant_type": "refresh_token", "refresh_token": REFRESH, "scope": "openid email"}
    with pytest.raises(errors.InvalidScope):
        await token_response(world(units, tokens), form, authenticate_as("web"))
    assert (presented.used_at, tokens.issued, list(units.store.refresh_tokens.rows)) == (None, [], ["jti-1"])


async def test_a_reused_refresh_token_revokes_its_whole_family() -> None:
    tokens, events = FakeTokens(), FakeEvents()
    units = MemoryUnits(
        web(),
        make_user(),
        stored_refresh_token(tokens, used_at=utcnow()),
        make_refresh_token(jti="jti-2", parent_jti="jti-1"),
    )
    form = {"grant_type": "refresh_token", "refresh_token": REFRESH}
    with pytest.raises(errors.InvalidGrant) as caught:
        await token_response(world(units, tokens, events), form, authenticate_as("web"))
    assert caught.value.description == "The refresh token has already been used; the grant has been revoked."
    assert all(row.revoked_at is not None for row in units.store.refresh_tokens.rows.values())
    assert set(units.store.revocations.grants) == {"grant-1"} and tokens.revoked_grants == {"grant-1"}
    assert [event.reason for event in events.published] == ["refresh_token_reuse"]


async def test_a_refresh_token_presented_by_another_client_changes_nothing() -> None:
    tokens = FakeTokens()
    presented = stored_refresh_token(tokens)
    units = MemoryUnits(web(), web(id="other"), make_user(), presented)
    form = {"grant_type": "refresh_token", "refresh_token": REFRESH}
    with pytest.raises(errors.InvalidGrant) as caught:
        await token_response(world(units, tokens), form, authenticate_as("other"))
    assert caught.value.description == "The refresh token was issued to another client."
    assert (presented.used_at, presented.revoked_at, tokens.issued) == (None, None, [])


async def test_withdrawing_a_clients_consent_revokes_its_families_and_its_code_only_grants() -> None:
    tokens, events = FakeTokens(), FakeEvents()
    units = MemoryUnits(
        make_refresh_token(),
        make_code(code_digest="d2", grant_id="code-only", consumed_at=utcnow()),
        make_code(code_digest="d3", grant_id="elsewhere", client_id="other"),
    )
    revoked = await revoke_user_client_grants(world(units, tokens, events), "user-1", "web", reason="consent_withdrawn")
    assert revoked == 2
    assert tokens.revoked_grants == {"grant-1", "code-only"} == set(units.store.revocations.grants)
    assert units.store.refresh_tokens.rows["jti-1"].revoked_at is not None
    assert units.opened == 1


async def test_a_session_end_keeps_offline_grants_when_asked_and_revokes_each_other_grant_once() -> None:
    tokens = FakeTokens()
    units = MemoryUnits(
        make_refresh_token(jti="r1", family_id="online", scope="openid", session_id="sid-1"),
        make_refresh_token(jti="r2", family_id="offline", scope="openid offline_access", session_id="sid-1"),
        make_code(code_digest="d1", grant_id="code-only", session_id="sid-1", consumed_at=utcnow()),
        make_code(code_digest="d2", grant_id="unredeemed", session_id="sid-1"),
    )
    ctx = world(units, tokens)
    assert await revoke_session_grants(ctx, "user-1", "sid-1", keep_offline=True, reason="session_logout") == 2
    assert tokens.revoked_grants == {"online", "code-only"} == set(units.store.revocations.grants)
    assert units.store.refresh_tokens.rows["r2"].revoked_at is None
    # Ending it again finds nothing left to revoke.
    assert await revoke_session_grants(ctx, "user-1", "sid-1", keep_offline=True, reason="session_logout") == 0
