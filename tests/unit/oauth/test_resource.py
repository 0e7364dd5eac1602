"""The bearer-token protector (idp.oauth.resource) with fakes: RFC 6750 §2 extraction, token
verification, the scope check, and subject → user. Each refusal asserts the error class, code,
status and the WWW-Authenticate challenge the client sees."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from idp.errors import BearerTokenMissing, Forbidden, InsufficientScope, InvalidToken
from idp.oauth import errors
from idp.oauth.resource import GONE, BearerGrant, BearerProtector, bearer_token
from idp.oauth.userinfo import NOT_OPENID, userinfo_claims
from tests.oauth_fakes import FakeParties, FakeTokens, PublicSubjects, make_client, make_user

CLAIMS = {"sub": "user-1", "client_id": "web", "scope": "openid profile", "jti": "j1"}


def protector(
    *, tokens: dict[str, dict[str, Any]] | None = None, parties: FakeParties | None = None
) -> BearerProtector:
    return BearerProtector(
        FakeTokens(access={"good": CLAIMS} if tokens is None else tokens),
        PublicSubjects(),
        parties if parties is not None else FakeParties({"web": make_client()}, {"user-1": make_user()}),
    )


# -- extraction (RFC 6750 §2) ------------------------------------------------------------------------


def test_the_token_comes_from_the_header() -> None:
    assert bearer_token(["Bearer abc"]) == "abc"
    assert bearer_token(["bearer  abc "]) == "abc"  # the scheme is case-insensitive


def test_the_token_comes_from_the_form_body() -> None:
    assert bearer_token([], {"access_token": "abc"}) == "abc"


def test_no_token_is_a_bare_challenge() -> None:
    for authorization, form in (([], None), ([], {}), ([""], {"access_token": ""})):
        with pytest.raises(BearerTokenMissing) as caught:
            bearer_token(authorization, form)
        assert caught.value.status_code == 401
        assert caught.value.headers["WWW-Authenticate"] == 'Bearer realm="idp"'


def test_a_body_token_is_not_read_where_the_endpoint_takes_none() -> None:
    with pytest.raises(BearerTokenMissing):
        bearer_token([], None)


def test_header_and_body_together_are_invalid_request() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        bearer_token(["Bearer abc"], {"access_token": "abc"})
    assert caught.value.description == "Send the access token in one place only (RFC 6750 §2)."


def test_two_authorization_headers_are_invalid_request() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        bearer_token(["Bearer abc", "Bearer def"])
    assert caught.value.description == "the Authorization header is repeated"


def test_a_repeated_body_token_is_invalid_request() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        bearer_token([], MultiDict([("access_token", "a"), ("access_token", "b")]))
    assert caught.value.description == "access_token is repeated"


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   ", "Token abc"])
def test_another_scheme_is_invalid_token(header: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        bearer_token([header])
    assert caught.value.description == "The Authorization header must be a Bearer token."
    assert caught.value.headers["WWW-Authenticate"].startswith('Bearer realm="idp", error="invalid_token"')


# -- verification, scope, caller -----------------------------------------------------------------------


async def test_a_valid_token_gives_its_grant() -> None:
    parties = FakeParties({"web": make_client()}, {"user-1": make_user()})
    grant = await protector(parties=parties).authenticate(["Bearer good"], scopes=("openid",))
    assert isinstance(grant, BearerGrant)
    assert grant.scopes == frozenset({"openid", "profile"})
    assert (grant.client.id, grant.user.id, grant.subject) == ("web", "user-1", "user-1")
    assert parties.looked_up == ["client:web", "user:user-1"]


async def test_an_unknown_or_revoked_token_is_invalid_token() -> None:
    with pytest.raises(InvalidToken) as caught:
        await protector().authenticate(["Bearer revoked"])
    assert caught.value.description == InvalidToken.default_description


async def test_a_missing_scope_is_insufficient_scope_before_any_look_up() -> None:
    parties = FakeParties()
    with pytest.raises(InsufficientScope) as caught:
        await protector(parties=parties).authenticate(["Bearer good"], scopes=("email",))
    assert caught.value.status_code == 403
    assert caught.value.description == "This request needs the scopes: email."
    assert 'scope="email"' in caught.value.headers["WWW-Authenticate"]
    assert parties.looked_up == []


@pytest.mark.parametrize(
    "parties",
    [
        pytest.param(FakeParties({}, {"user-1": make_user()}), id="client-deleted"),
        pytest.param(FakeParties({"web": make_client(disabled=True)}, {"user-1": make_user()}), id="client-disabled"),
        pytest.param(FakeParties({"web": make_client()}, {}), id="user-deleted"),
        pytest.param(FakeParties({"web": make_client()}, {"user-1": make_user(disabled=True)}), id="user-disabled"),
    ],
)
async def test_a_token_of_a_gone_client_or_user_is_invalid_token(parties: FakeParties) -> None:
    with pytest.raises(InvalidToken) as caught:
        await protector(parties=parties).authenticate(["Bearer good"])
    assert caught.value.description == GONE


async def test_a_pairwise_subject_is_resolved_for_its_client() -> None:
    class Pairwise:
        def user_id_for(self, client: Any, subject: str) -> str | None:
            return subject.removeprefix("pw-") if client is not None and client.id == "web" else None

    tokens = FakeTokens(access={"pw": {**CLAIMS, "sub": "pw-user-1"}})
    parties = FakeParties({"web": make_client(subject_type="pairwise")}, {"user-1": make_user()})
    grant = await BearerProtector(tokens, Pairwise(), parties).authenticate(["Bearer pw"])
    assert grant.user.id == "user-1" and grant.subject == "pw-user-1"


async def test_the_client_policy_and_scopes_after_the_caller() -> None:
    """The account API's order: who calls (client and user, then the client policy) is settled
    before what the token allows."""

    def first_party_only(client: Any) -> None:
        if not client.first_party:
            raise Forbidden("first-party only")

    with pytest.raises(Forbidden):
        await protector().authenticate(
            ["Bearer good"], scopes=("email",), client_policy=first_party_only, check_scopes_first=False
        )
    gone = FakeParties({"web": make_client()}, {})
    with pytest.raises(InvalidToken):
        await protector(parties=gone).authenticate(["Bearer good"], scopes=("email",), check_scopes_first=False)
    first_party = FakeParties({"web": make_client(first_party=True)}, {"user-1": make_user()})
    with pytest.raises(InsufficientScope):
        await protector(parties=first_party).authenticate(
            ["Bearer good"], scopes=("email",), client_policy=first_party_only, check_scopes_first=False
        )


async def test_subject_active() -> None:
    client = make_client()
    parties = FakeParties({"web": client}, {"user-1": make_user(), "user-2": make_user(id="user-2", disabled=True)})
    check = protector(parties=parties).subject_active
    assert await check(client, "user-1")
    assert not await check(client, "user-2")
    assert not await check(client, "nobody")
    # client_credentials: the subject is the client itself.
    assert await check(client, "web")
    assert not await check(make_client(disabled=True), "web")


# -- userinfo -------------------------------------------------------------------------------------------


async def test_userinfo_needs_the_openid_scope() -> None:
    tokens = {"svc": {**CLAIMS, "scope": "profile"}}
    with pytest.raises(InsufficientScope) as caught:
        await userinfo_claims(protector(tokens=tokens), ["Bearer svc"], None, "https://idp/pictures")
    assert caught.value.description == NOT_OPENID
    assert 'scope="openid"' in caught.value.headers["WWW-Authenticate"]


async def test_userinfo_releases_the_claims_of_the_scopes() -> None:
    claims = await userinfo_claims(protector(), [], {"access_token": "good"}, "https://idp/pictures")
    assert claims["sub"] == "user-1" and claims["name"] == "River Example"
    assert "email" not in claims
