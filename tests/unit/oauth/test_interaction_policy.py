"""The authorization decision (idp.oauth.interaction_policy), check by check, without an app.

Every check is called on its own with a state and in-memory services, and asserts what it says to
do next and what it changed; ``decide`` is then run on whole requests for the order of the checks.
"""

from __future__ import annotations

from typing import Any

import pytest

from idp.errors import InvalidRequest
from idp.oauth import errors
from idp.oauth import interaction_policy as policy
from idp.oauth.interaction_policy import (
    CONTINUE,
    AuthorizationState,
    RedirectCode,
    RedirectError,
    SendToConsent,
    SendToLogin,
    SendToRegistration,
)
from tests.oauth_fakes import (
    FakeAuthorizationServices,
    make_client,
    make_interaction,
    make_request,
    make_session,
    make_user,
)

NOW = 1_000_100  # 100 s after make_session()'s auth_time


def state(
    *,
    session: Any = "default",
    interaction: Any = None,
    consented: bool = False,
    client: Any = None,
    user: Any = "default",
    **request: Any,
) -> AuthorizationState:
    built = AuthorizationState.begin(
        client or make_client(),
        make_request(**request),
        make_session() if session == "default" else session,
        interaction,
        now=NOW,
        consented=consented,
    )
    if user == "default":
        built.user = make_user() if built.session is not None else None
    else:
        built.user = user
    return built


@pytest.fixture
def services() -> FakeAuthorizationServices:
    return FakeAuthorizationServices(users={"user-1": make_user()})


# -- fresh: signed in during this interaction ------------------------------------------------------


def test_a_sign_in_after_the_interaction_began_is_fresh() -> None:
    interaction = make_interaction(created_at=999_990, prior_auth_id="auth-0")
    assert state(interaction=interaction).fresh


@pytest.mark.parametrize(
    ("interaction", "session"),
    [
        pytest.param(None, make_session(), id="no-interaction"),
        pytest.param(make_interaction(created_at=999_990, prior_auth_id="auth-1"), make_session(), id="same-auth"),
        pytest.param(make_interaction(created_at=1_000_001, prior_auth_id="auth-0"), make_session(), id="older"),
        pytest.param(make_interaction(created_at=999_990, prior_auth_id="auth-0"), None, id="no-session"),
    ],
)
def test_other_sessions_are_not_fresh(interaction: Any, session: Any) -> None:
    assert not state(interaction=interaction, session=session).fresh


# -- check_id_token_hint ---------------------------------------------------------------------------


async def test_no_hint_continues(services: FakeAuthorizationServices) -> None:
    assert await policy.check_id_token_hint(state(), services) is CONTINUE


async def test_a_valid_hint_names_its_user(services: FakeAuthorizationServices) -> None:
    services.id_tokens["hint"] = {"sub": "user-2", "aud": "web"}
    decision = state(id_token_hint="hint")
    assert await policy.check_id_token_hint(decision, services) is CONTINUE
    assert decision.hint_user_id == "user-2"


async def test_a_pairwise_hint_resolves_only_with_its_own_client(services: FakeAuthorizationServices) -> None:
    services.id_tokens["mine"] = {"sub": "pairwise-user-2", "aud": ["web", "other"]}
    services.id_tokens["theirs"] = {"sub": "pairwise-user-2", "aud": "other"}
    client = make_client(subject_type="pairwise")
    mine, theirs = state(client=client, id_token_hint="mine"), state(client=client, id_token_hint="theirs")
    await policy.check_id_token_hint(mine, services)
    await policy.check_id_token_hint(theirs, services)
    assert mine.hint_user_id == "user-2"
    assert theirs.hint_user_id == "pairwise-user-2"  # resolved as a public sub: no user of ours


async def test_an_invalid_hint_is_redirected_at_once_to_a_signed_in_user(services: FakeAuthorizationServices) -> None:
    outcome = await policy.check_id_token_hint(state(id_token_hint="forged"), services)
    assert isinstance(outcome, RedirectError)
    assert isinstance(outcome.error, errors.InvalidAuthorizationRequest)
    assert outcome.error.description == "id_token_hint is not an ID token issued by this server."
    assert outcome.wait_for_sign_in is False


async def test_an_invalid_hint_waits_for_a_sign_in(services: FakeAuthorizationServices) -> None:
    outcome = await policy.check_id_token_hint(state(session=None, id_token_hint="forged"), services)
    assert isinstance(outcome, RedirectError) and outcome.wait_for_sign_in is True


async def test_an_invalid_hint_with_prompt_none_is_redirected_at_once(services: FakeAuthorizationServices) -> None:
    outcome = await policy.check_id_token_hint(state(session=None, id_token_hint="forged", prompt=["none"]), services)
    assert isinstance(outcome, RedirectError) and outcome.wait_for_sign_in is False


# -- check_account ---------------------------------------------------------------------------------


async def test_the_sessions_user_is_loaded(services: FakeAuthorizationServices) -> None:
    decision = state(user=None)
    assert await policy.check_account(decision, services) is CONTINUE
    assert decision.user is not None and decision.user.id == "user-1"
    assert services.ended_sessions == []


@pytest.mark.parametrize("users", [{}, {"user-1": make_user(disabled=True)}], ids=["deleted", "disabled"])
async def test_the_session_of_a_gone_account_ends(users: dict[str, Any]) -> None:
    services = FakeAuthorizationServices(users=users)
    decision = state(user=None)
    assert await policy.check_account(decision, services) is CONTINUE
    assert decision.session is None and decision.user is None
    assert services.ended_sessions == ["sid-1"]


async def test_no_session_loads_nobody(services: FakeAuthorizationServices) -> None:
    decision = state(session=None)
    assert await policy.check_account(decision, services) is CONTINUE
    assert decision.user is None


# -- check_prompt_create ---------------------------------------------------------------------------


async def test_prompt_create_sends_to_registration(services: FakeAuthorizationServices) -> None:
    assert await policy.check_prompt_create(state(prompt=["create"]), services) == SendToRegistration()


async def test_prompt_create_without_registration_continues(services: FakeAuthorizationServices) -> None:
    services.registration_enabled = False
    assert await policy.check_prompt_create(state(prompt=["create"]), services) is CONTINUE


async def test_prompt_create_after_signing_up_in_this_interaction_continues(
    services: FakeAuthorizationServices,
) -> None:
    fresh = state(prompt=["create"], interaction=make_interaction(created_at=999_000, prior_auth_id=None))
    assert fresh.fresh
    assert await policy.check_prompt_create(fresh, services) is CONTINUE


# -- the sign-in checks ----------------------------------------------------------------------------


async def test_no_session_sends_to_login(services: FakeAuthorizationServices) -> None:
    assert await policy.check_session(state(session=None), services) == SendToLogin("no_session")
    assert await policy.check_session(state(), services) is CONTINUE


async def test_no_session_with_prompt_none_is_login_required(services: FakeAuthorizationServices) -> None:
    outcome = await policy.check_session(state(session=None, prompt=["none"]), services)
    assert isinstance(outcome, RedirectError) and isinstance(outcome.error, errors.LoginRequired)
    assert outcome.error.error == "login_required" and outcome.wait_for_sign_in is False


@pytest.mark.parametrize("prompt", ["login", "select_account", "create"])
async def test_prompt_login_and_select_account_send_to_login(services: FakeAuthorizationServices, prompt: str) -> None:
    assert await policy.check_prompt_login(state(prompt=[prompt]), services) == SendToLogin("prompt_login")


async def test_prompt_login_is_satisfied_by_a_fresh_sign_in(services: FakeAuthorizationServices) -> None:
    fresh = state(prompt=["login"], interaction=make_interaction(created_at=999_000, prior_auth_id="auth-0"))
    assert await policy.check_prompt_login(fresh, services) is CONTINUE
    assert await policy.check_prompt_login(state(prompt=["consent"]), services) is CONTINUE


@pytest.mark.parametrize(("max_age", "expected"), [(0, "max_age"), (99, "max_age"), (100, None), (3600, None)])
async def test_max_age(services: FakeAuthorizationServices, max_age: int, expected: str | None) -> None:
    outcome = await policy.check_max_age(state(max_age=max_age), services)
    assert outcome == (SendToLogin(expected) if expected else CONTINUE)


async def test_max_age_is_satisfied_by_a_fresh_sign_in(services: FakeAuthorizationServices) -> None:
    fresh = state(max_age=0, interaction=make_interaction(created_at=999_000, prior_auth_id="auth-0"))
    assert await policy.check_max_age(fresh, services) is CONTINUE
    assert await policy.check_max_age(state(), services) is CONTINUE


async def test_a_hint_for_another_user_sends_to_login(services: FakeAuthorizationServices) -> None:
    other, same, none = state(), state(), state()
    other.hint_user_id, same.hint_user_id = "user-2", "user-1"
    assert await policy.check_id_token_hint_user(other, services) == SendToLogin("id_token_hint")
    assert await policy.check_id_token_hint_user(same, services) is CONTINUE
    assert await policy.check_id_token_hint_user(none, services) is CONTINUE


async def test_step_up_needs_a_second_factor(services: FakeAuthorizationServices) -> None:
    wants_mfa = state(acr_values=["urn:idp:acr:mfa"])
    assert await policy.check_acr(wants_mfa, services) is CONTINUE  # nothing to step up with
    services.second_factor.add("user-1")
    assert await policy.check_acr(wants_mfa, services) == SendToLogin("acr")


async def test_step_up_is_not_asked_when_the_session_meets_the_request(services: FakeAuthorizationServices) -> None:
    services.second_factor.add("user-1")
    met = state(acr_values=["urn:idp:acr:mfa"], session=make_session(acr="phr"))
    unknown = state(acr_values=["urn:example:gold"])
    fresh = state(
        acr_values=["urn:idp:acr:mfa"], interaction=make_interaction(created_at=999_000, prior_auth_id="auth-0")
    )
    for decision in (met, unknown, fresh):
        assert await policy.check_acr(decision, services) is CONTINUE
    assert services.asked == []  # the factor look-up happens only when it decides


async def test_every_sign_in_check_with_prompt_none_is_login_required(services: FakeAuthorizationServices) -> None:
    services.second_factor.add("user-1")
    hinted = state(prompt=["none"])
    hinted.hint_user_id = "user-2"
    for check, decision in (
        (policy.check_max_age, state(prompt=["none"], max_age=0)),
        (policy.check_id_token_hint_user, hinted),
        (policy.check_acr, state(prompt=["none"], acr_values=["phr"])),
    ):
        outcome = await check(decision, services)
        assert isinstance(outcome, RedirectError) and isinstance(outcome.error, errors.LoginRequired), check


# -- check_consent ---------------------------------------------------------------------------------


async def test_scopes_not_consented_send_to_consent(services: FakeAuthorizationServices) -> None:
    services.consents[("user-1", "web")] = {"openid"}
    assert await policy.check_consent(state(), services) == SendToConsent("scopes_not_granted")
    services.consents[("user-1", "web")] = {"openid", "profile", "email"}
    assert await policy.check_consent(state(), services) is CONTINUE


async def test_prompt_consent_always_asks(services: FakeAuthorizationServices) -> None:
    services.consents[("user-1", "web")] = {"openid", "profile"}
    assert await policy.check_consent(state(prompt=["consent"]), services) == SendToConsent("prompt_consent")


async def test_prompt_none_without_consent_is_consent_required(services: FakeAuthorizationServices) -> None:
    outcome = await policy.check_consent(state(prompt=["none"]), services)
    assert isinstance(outcome, RedirectError) and isinstance(outcome.error, errors.ConsentRequired)


async def test_first_party_clients_and_a_fresh_answer_need_no_consent(services: FakeAuthorizationServices) -> None:
    assert await policy.check_consent(state(client=make_client(first_party=True), prompt=["consent"]), services) is (
        CONTINUE
    )
    assert await policy.check_consent(state(consented=True, prompt=["consent"]), services) is CONTINUE
    assert services.asked == []


# -- decide: the checks in order, then the code ------------------------------------------------------


async def test_a_signed_in_user_with_consent_gets_a_code(services: FakeAuthorizationServices) -> None:
    services.consents[("user-1", "web")] = {"openid", "profile"}
    decision = state(user=None, acr_values=["urn:idp:acr:1fa"])
    assert await policy.decide(decision, services) == RedirectCode("code-1")
    assert services.codes == [{"client_id": "web", "user_id": "user-1", "sid": "sid-1", "acr": "urn:idp:acr:1fa"}]


async def test_the_interaction_completes_once(services: FakeAuthorizationServices) -> None:
    services.consents[("user-1", "web")] = {"openid", "profile"}
    services.open_interactions.add("interaction-1")
    decision = state(user=None, interaction=make_interaction())
    assert isinstance(await policy.decide(decision, services), RedirectCode)
    again = state(user=None, interaction=make_interaction())
    with pytest.raises(InvalidRequest, match="already been completed"):
        await policy.decide(again, services)
    assert len(services.codes) == 1


async def test_an_invalid_hint_is_decided_before_the_account_is_loaded() -> None:
    services = FakeAuthorizationServices(users={"user-1": make_user(disabled=True)})
    outcome = await policy.decide(state(user=None, id_token_hint="forged"), services)
    # Signed in when the request arrived: the error goes back at once, the session untouched.
    assert isinstance(outcome, RedirectError) and outcome.wait_for_sign_in is False
    assert services.ended_sessions == []


async def test_a_disabled_accounts_session_counts_as_none() -> None:
    services = FakeAuthorizationServices(users={"user-1": make_user(disabled=True)})
    assert await policy.decide(state(user=None), services) == SendToLogin("no_session")
    assert services.ended_sessions == ["sid-1"]


async def test_registration_comes_before_the_sign_in_checks(services: FakeAuthorizationServices) -> None:
    assert await policy.decide(state(session=None, prompt=["create"]), services) == SendToRegistration()


async def test_sign_in_comes_before_consent(services: FakeAuthorizationServices) -> None:
    assert await policy.decide(state(user=None, max_age=0), services) == SendToLogin("max_age")
    assert services.asked == []


# -- answer_consent --------------------------------------------------------------------------------


async def test_allowing_records_the_consent_and_issues_the_code(services: FakeAuthorizationServices) -> None:
    services.open_interactions.add("interaction-1")
    decision = state(user=None, interaction=make_interaction(), prompt=["consent"])
    assert await policy.answer_consent(decision, services, allow=True) == RedirectCode("code-1")
    assert services.consents[("user-1", "web")] == {"openid", "profile"}
    assert services.finished == ["interaction-1"]


async def test_denying_is_access_denied_and_ends_the_interaction(services: FakeAuthorizationServices) -> None:
    services.open_interactions.add("interaction-1")
    outcome = await policy.answer_consent(state(interaction=make_interaction()), services, allow=False)
    assert isinstance(outcome, RedirectError) and isinstance(outcome.error, errors.AccessDenied)
    assert outcome.error.description == "The user denied the request." and outcome.wait_for_sign_in is False
    assert services.finished == ["interaction-1"] and services.codes == [] and services.consents == {}


# -- redirect_error --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt_none", "signed_in", "waits"), [(False, False, True), (False, True, False), (True, False, False)]
)
def test_an_error_waits_for_a_sign_in_unless_someone_is_signed_in_or_prompt_none(
    prompt_none: bool, signed_in: bool, waits: bool
) -> None:
    outcome = policy.redirect_error(errors.InteractionRequired(), prompt_none=prompt_none, signed_in=signed_in)
    assert outcome.wait_for_sign_in is waits
