"""The rules of introspection (RFC 7662), revocation (RFC 7009) and RP-initiated logout, each with
fakes of the look-ups they need. Their storage side effects (a family revoked, a session ended)
are asserted over real storage in tests/integration/test_introspection_revocation.py and
test_logout.py."""

from __future__ import annotations

from typing import Any, cast

import pytest
from werkzeug.datastructures import MultiDict

from idp.config import TokenSettings
from idp.errors import InvalidRequest
from idp.oauth import errors, introspection, logout, revocation
from idp.oauth.grants import GrantContext
from idp.oauth.subjects import SubjectResolver
from idp.storage.models import RefreshToken, utcnow
from tests.oauth_fakes import (
    FakeEvents,
    FakeParties,
    FakeTokens,
    MemoryUnits,
    PublicSubjects,
    make_client,
    make_refresh_token,
    make_session,
)

ACCESS = {"sub": "user-1", "client_id": "web", "scope": "openid", "jti": "a1", "exp": 2_000_000_000, "iss": "x"}
REFRESH = {"sub": "user-1", "client_id": "web", "scope": "openid offline_access", "jti": "jti-1", "sid": "sid-1"}


# -- introspection -------------------------------------------------------------------------------------


async def introspect(params: dict[str, str], *, active: bool = True, rows: list[RefreshToken] | None = None) -> Any:
    tokens = FakeTokens(access={"at": ACCESS}, refresh={"rt": REFRESH})
    found = {row.jti: row for row in (rows if rows is not None else [make_refresh_token()])}

    async def find_refresh_token(jti: str) -> RefreshToken | None:
        return found.get(jti)

    async def subject_active(client: Any, subject: str) -> bool:
        return active

    return await introspection.introspect_token(
        params,
        make_client(),
        tokens=cast(Any, tokens),
        find_refresh_token=find_refresh_token,
        subject_active=subject_active,
    )


async def test_an_active_access_token_says_what_it_is() -> None:
    answer = await introspect({"token": "at"})
    assert answer == {"active": True, **{k: ACCESS[k] for k in ACCESS}, "token_type": "Bearer"}


async def test_a_refresh_token_is_found_with_or_without_the_hint() -> None:
    for params in ({"token": "rt"}, {"token": "rt", "token_type_hint": "refresh_token"}):
        answer = await introspect(params)
        assert answer["active"] is True and answer["token_type"] == "refresh_token" and answer["sid"] == "sid-1"


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(None, id="unknown"),
        pytest.param(make_refresh_token(used_at=utcnow()), id="used"),
        pytest.param(make_refresh_token(revoked_at=utcnow()), id="revoked"),
        pytest.param(make_refresh_token(client_id="other"), id="other-client"),
    ],
)
async def test_an_unusable_refresh_token_is_inactive(row: RefreshToken | None) -> None:
    assert await introspect({"token": "rt"}, rows=[row] if row else []) == {"active": False}


async def test_a_token_of_an_inactive_subject_or_unknown_is_only_inactive() -> None:
    assert await introspect({"token": "at"}, active=False) == {"active": False}
    assert await introspect({"token": "garbage"}) == {"active": False}


async def test_introspection_needs_a_token_and_a_confidential_client() -> None:
    with pytest.raises(errors.InvalidRequest, match="token is required"):
        await introspect({})
    with pytest.raises(errors.InvalidClient, match="Public clients cannot use the introspection endpoint"):
        introspection.check_permission(make_client(client_type="public"))


# -- revocation ----------------------------------------------------------------------------------------


async def revoke(params: dict[str, str], tokens: FakeTokens, *rows: Any) -> tuple[MemoryUnits, FakeEvents]:
    """A revocation request by the client "web", against ``rows`` in memory."""
    units, events = MemoryUnits(make_client(), *rows), FakeEvents()
    ctx = GrantContext(
        units=cast(Any, units),
        tokens=cast(Any, tokens),
        sessions=cast(Any, None),
        subjects=cast(Any, PublicSubjects()),
        events=cast(Any, events),
        settings=TokenSettings(),
    )

    async def authenticate(clients: Any) -> Any:
        return await clients.get("web")

    try:
        await revocation.revocation_request(ctx, params, authenticate)
    finally:
        assert units.opened == 1
    return units, events


async def test_revocation_needs_a_token_and_a_known_hint() -> None:
    with pytest.raises(errors.InvalidRequest, match="token is required"):
        await revoke({}, FakeTokens())
    with pytest.raises(errors.UnsupportedTokenType) as caught:
        await revoke({"token": "x", "token_type_hint": "id_token"}, FakeTokens())
    assert caught.value.description == "token_type_hint 'id_token' is not supported"


async def test_an_invalid_token_is_revoked_without_an_error_and_changes_nothing() -> None:
    tokens = FakeTokens()
    row = make_refresh_token()
    _, events = await revoke({"token": "garbage"}, tokens, row)
    assert (tokens.revoked, row.revoked_at, events.published) == (set(), None, [])


async def test_another_clients_token_is_refused() -> None:
    tokens = FakeTokens(access={"at": {**ACCESS, "client_id": "other"}})
    with pytest.raises(errors.InvalidRequest, match="not issued to this client"):
        await revoke({"token": "at"}, tokens)
    assert tokens.revoked == set()


async def test_revoking_a_refresh_token_ends_its_whole_grant() -> None:
    tokens = FakeTokens(refresh={"rt": REFRESH})
    presented, rotated = make_refresh_token(used_at=utcnow()), make_refresh_token(jti="jti-2", parent_jti="jti-1")
    units, events = await revoke({"token": "rt"}, tokens, presented, rotated)
    assert presented.revoked_at is not None and rotated.revoked_at is not None
    # The grant's revocation is recorded (its access tokens carry its id), then cached.
    assert set(units.store.revocations.grants) == {"grant-1"} and tokens.revoked_grants == {"grant-1"}
    assert [(event.name, event.reason) for event in events.published] == [("token_revoked", "client_request")]


async def test_revoking_an_access_token_denies_it_alone() -> None:
    tokens = FakeTokens(access={"at": ACCESS})
    row = make_refresh_token()
    units, events = await revoke({"token": "at", "token_type_hint": "access_token"}, tokens, row)
    assert tokens.revoked == {"a1"} and row.revoked_at is None
    # Recorded until the token would be refused anyway (its exp plus the leeway), then cached.
    assert units.store.revocations.access_tokens["a1"].timestamp() == 2_000_000_060
    # Committed before the key-value store heard of it (then the unit of work's end commits again).
    assert units.store.commits == 2 and units.store.revocations.grants == {}
    # Audited like any revocation, with whose token it was.
    [event] = events.published
    assert (event.name, event.reason, event.user_id, event.client, event.token_type) == (
        "token_revoked", "client_request", "user-1", "web", "access_token",
    )  # fmt: skip


# -- RP-initiated logout -------------------------------------------------------------------------------

HINT = {"sub": "user-1", "aud": "web", "sid": "sid-1"}


async def parse(**params: str) -> logout.LogoutRequest:
    parties = FakeParties({"web": make_client(), "spa": make_client(id="spa", post_logout_redirect_uris=[])})
    tokens = FakeTokens(id_tokens={"hint": HINT})
    return await logout.parse_logout_request(params, tokens=cast(Any, tokens), find_client=parties.client)


async def test_a_hint_identifies_the_client_and_its_redirect() -> None:
    request = await parse(id_token_hint="hint", post_logout_redirect_uri="https://rp.example/bye", state="s 1")
    assert request.client is not None and request.client.id == "web" and request.initiated_by == "client"
    assert request.redirect_location() == "https://rp.example/bye?state=s+1"
    assert request.confirmation_fields() == {
        "post_logout_redirect_uri": "https://rp.example/bye",
        "state": "s 1",
        "client_id": "web",
    }


async def test_no_parameters_is_a_logout_by_the_user() -> None:
    request = await parse()
    assert (request.client, request.redirect_location(), request.initiated_by) == (None, None, "user")
    assert request.confirmation_fields() == {}


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"id_token_hint": "forged"}, "The id_token_hint is not a valid ID token issued by this server."),
        ({"id_token_hint": "hint", "client_id": "spa"}, "client_id does not match the id_token_hint."),
        ({"client_id": "nobody"}, "The client is unknown."),
        (
            {"post_logout_redirect_uri": "https://rp.example/bye"},
            "post_logout_redirect_uri needs an id_token_hint or client_id.",
        ),
        (
            {"client_id": "web", "post_logout_redirect_uri": "https://rp.example/bye/"},
            "The post_logout_redirect_uri is not registered for this client.",
        ),
    ],
)
async def test_a_bad_request_is_an_error_page(params: dict[str, str], description: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await parse(**params)
    assert caught.value.description == description and caught.value.status_code == 400


async def test_only_a_hint_of_this_session_confirms_the_logout() -> None:
    subjects = SubjectResolver(None)
    hinted = await parse(id_token_hint="hint")
    assert logout.hint_confirms(hinted, make_session(), subjects)
    assert logout.hint_confirms(hinted, make_session(sid="sid-2"), subjects)  # same user
    assert not logout.hint_confirms(hinted, make_session(sid="sid-2", user_id="user-2"), subjects)
    assert not logout.hint_confirms(await parse(client_id="web"), make_session(), subjects)


async def test_a_repeated_logout_parameter_is_refused() -> None:
    parties = FakeParties({"web": make_client()})
    params = MultiDict([("client_id", "web"), ("client_id", "web")])
    with pytest.raises(errors.InvalidRequest, match="client_id is repeated"):
        await logout.parse_logout_request(params, tokens=cast(Any, FakeTokens()), find_client=parties.client)
