"""The authorization endpoint's decision, once the request is valid: which interaction it needs
(sign-in, sign-up, consent), which error goes back to the client, or the code.

The policy is an ordered list of small checks, as node-oidc-provider writes its prompts
(``lib/helpers/interaction_policy/prompts/login.js``). Each check reads the decision's state and
asks the services it needs, then says what to do next: ``CONTINUE`` (the next check decides) or
an outcome (``SendToLogin``, ``SendToRegistration``, ``SendToConsent``, ``RedirectError``). When
every check lets the request through, the interaction is completed and a code issued
(``RedirectCode``). The route gathers the facts (the browser's session, the interaction), calls
``decide`` and renders the outcome; cookies, pages and redirects stay there.

No Quart here; storage and the account domain are reached through ``AuthorizationServices``
(``StoredAuthorizationServices`` in the app, small fakes in unit tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from idp.accounts.apps import consents
from idp.accounts.security import mfa
from idp.accounts.sessions.store import BrowserSession, SessionStore
from idp.accounts.signin import authn
from idp.errors import InvalidRequest
from idp.events import ConsentGranted, EventBus
from idp.oauth import errors, interactions
from idp.oauth.authorize import AuthorizationRequest, issue_authorization_code
from idp.oauth.interactions import Interaction, InteractionStore
from idp.oauth.scopes import scopes_for_user
from idp.oauth.subjects import SubjectResolver
from idp.oauth.tokens import TokenInvalid, TokenService
from idp.storage.db import Database
from idp.storage.models import OAuthClient, User
from idp.storage.repositories import UserRepository

# -- what to do next ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Continue:
    """The check has nothing to say: the next one decides."""


CONTINUE = Continue()


@dataclass(frozen=True)
class SendToLogin:
    # The check that asks for a sign-in: no_session, prompt_login, max_age, id_token_hint, acr.
    reason: str

    def location(self, interaction_id: str, request: AuthorizationRequest) -> str:
        return interactions.login_location(interaction_id, request.login_hint)


@dataclass(frozen=True)
class SendToRegistration:
    """prompt=create: the sign-up page, then back here once the new account has signed in."""

    def location(self, interaction_id: str, request: AuthorizationRequest) -> str:
        return interactions.registration_location(interaction_id)


@dataclass(frozen=True)
class SendToConsent:
    # prompt_consent, or scopes_not_granted (the request asks for more than the user agreed to).
    reason: str

    def location(self, interaction_id: str, request: AuthorizationRequest) -> str:
        return interactions.consent_location(interaction_id)


@dataclass(frozen=True)
class RedirectError:
    """An error for the client's verified redirect URI."""

    error: errors.RedirectableError
    # RFC 9700 §4.11.2: nobody is signed in, so the error waits (parked, bound to the browser)
    # until someone is; the IdP authenticates the user before it redirects to the client.
    wait_for_sign_in: bool = False


@dataclass(frozen=True)
class RedirectCode:
    code: str


# The request waits in an interaction while the browser is on one of these pages.
Interact = SendToLogin | SendToRegistration | SendToConsent
Outcome = Interact | RedirectError | RedirectCode
Step = Continue | Outcome


def redirect_error(error: errors.RedirectableError, *, prompt_none: bool, signed_in: bool) -> RedirectError:
    """An error response goes back at once when someone is signed in, or with prompt=none (silent
    authentication shows no page, OIDC Core §3.1.2.1); otherwise after sign-in (RFC 9700 §4.11.2)."""
    return RedirectError(error, wait_for_sign_in=not (prompt_none or signed_in))


# -- the facts ----------------------------------------------------------------------------------


@dataclass
class AuthorizationState:
    """One decision: the request, the browser's session and interaction, and what the checks
    learn on the way (the user, the id_token_hint's user)."""

    client: OAuthClient
    request: AuthorizationRequest
    session: BrowserSession | None
    interaction: Interaction | None = None
    now: int = 0
    # The user has just answered the consent page for this request.
    consented: bool = False
    # Authenticated during this very interaction: satisfies prompt=login and max_age.
    fresh: bool = False
    user: User | None = None
    hint_user_id: str | None = None

    @classmethod
    def begin(
        cls,
        client: OAuthClient,
        request: AuthorizationRequest,
        session: BrowserSession | None,
        interaction: Interaction | None = None,
        *,
        now: int,
        consented: bool = False,
    ) -> AuthorizationState:
        # auth_time has one-second resolution, so the authentication must also be a new one
        # (auth_id changes at every sign-in; the sid does not when the same user signs in again).
        fresh = (
            interaction is not None
            and session is not None
            and session.auth_id != interaction.prior_auth_id
            and session.auth_time >= interaction.created_at
        )
        return cls(client, request, session, interaction, now=now, consented=consented, fresh=fresh)

    @property
    def prompt(self) -> set[str]:
        return set(self.request.prompt)

    @property
    def prompt_none(self) -> bool:
        return "none" in self.request.prompt


class AuthorizationServices(Protocol):
    """What the checks ask of the rest of the IdP."""

    registration_enabled: bool

    def read_id_token_hint(self, hint: str) -> dict[str, Any] | None:
        """The claims of an ID token this server issued (expired or not), else None."""

    def user_id_for(self, client: OAuthClient | None, subject: str) -> str | None: ...

    async def load_user(self, user_id: str) -> User | None: ...

    async def end_session(self, session: BrowserSession) -> None:
        """End the session of an account that was disabled or deleted."""

    async def has_second_factor(self, user_id: str) -> bool: ...

    async def granted_scopes(self, user_id: str, client_id: str) -> set[str]: ...

    async def grant_consent(self, user_id: str, client_id: str, scopes: Sequence[str]) -> None: ...

    async def finish_interaction(self, interaction_id: str) -> bool:
        """Single use: True only for the caller that completed it."""

    async def issue_code(self, request: AuthorizationRequest, user: User, session: BrowserSession, acr: str) -> str: ...


Check = Callable[[AuthorizationState, AuthorizationServices], Awaitable[Step]]


# -- the checks, in order -----------------------------------------------------------------------


async def check_id_token_hint(state: AuthorizationState, services: AuthorizationServices) -> Step:
    """OIDC Core §3.1.2.1: an id_token_hint is an ID token this server issued (an expired one is
    fine); it names the user the client expects (see check_id_token_hint_user)."""
    hint = state.request.id_token_hint
    if hint is None:
        return CONTINUE
    claims = services.read_id_token_hint(hint)
    if claims is None:
        error = errors.InvalidAuthorizationRequest("id_token_hint is not an ID token issued by this server.")
        return redirect_error(error, prompt_none=state.prompt_none, signed_in=state.session is not None)
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    # A pairwise sub resolves only with the client it was issued to.
    owner = state.client if state.client.id in audiences else None
    state.hint_user_id = services.user_id_for(owner, str(claims.get("sub")))
    return CONTINUE


async def check_account(state: AuthorizationState, services: AuthorizationServices) -> Step:
    """The session's account may have been disabled or deleted since: that session ends, and the
    request goes on as if nobody were signed in."""
    if state.session is None:
        return CONTINUE
    user = await services.load_user(state.session.user_id)
    if user is None or user.disabled:
        await services.end_session(state.session)
        state.session, state.user = None, None
    else:
        state.user = user
    return CONTINUE


async def check_prompt_create(state: AuthorizationState, services: AuthorizationServices) -> Step:
    """OpenID Connect Initiating User Registration 1.0: prompt=create shows the sign-up page; the
    account then signs in (after verifying its address) and the request resumes."""
    if "create" in state.prompt and not state.fresh and services.registration_enabled:
        return SendToRegistration()
    return CONTINUE


def _ask_login(state: AuthorizationState, reason: str) -> Step:
    # OIDC Core §3.1.2.6: prompt=none may not show a page.
    if state.prompt_none:
        return RedirectError(errors.LoginRequired())
    return SendToLogin(reason)


async def check_session(state: AuthorizationState, services: AuthorizationServices) -> Step:
    """Nobody is signed in (OIDC Core §3.1.2.3)."""
    return _ask_login(state, "no_session") if state.session is None else CONTINUE


async def check_prompt_login(state: AuthorizationState, services: AuthorizationServices) -> Step:
    """prompt=login and prompt=select_account ask for a sign-in now (OIDC Core §3.1.2.1), as does
    prompt=create without self-service registration; one made during this interaction counts."""
    if state.prompt & {"login", "select_account", "create"} and not state.fresh:
        return _ask_login(state, "prompt_login")
    return CONTINUE


async def check_max_age(state: AuthorizationState, services: AuthorizationServices) -> Step:
    """OIDC Core §3.1.2.1: a sign-in at most max_age seconds old; "max_age=0 is equivalent to
    prompt=login" (auth_time has 1 s resolution, so 0 can't be compared)."""
    max_age, session = state.request.max_age, state.session
    if max_age is None or session is None or state.fresh:
        return CONTINUE
    if max_age == 0 or state.now - session.auth_time > max_age:
        return _ask_login(state, "max_age")
    return CONTINUE


async def check_id_token_hint_user(state: AuthorizationState, services: AuthorizationServices) -> Step:
    """The id_token_hint names another user than the one signed in: that user signs in."""
    session = state.session
    if session is not None and state.hint_user_id is not None and session.user_id != state.hint_user_id:
        return _ask_login(state, "id_token_hint")
    return CONTINUE


async def check_acr(state: AuthorizationState, services: AuthorizationServices) -> Step:
    """Step-up (OIDC Core §3.1.2.1 acr_values): sign in again, with the second factor, when the
    session's class is below every requested one — only if the user has a second factor to use;
    otherwise the ID token says truthfully what was achieved."""
    session, user = state.session, state.user
    if state.fresh or session is None or user is None or authn.satisfies(session.acr, state.request.acr_values):
        return CONTINUE
    if await services.has_second_factor(user.id):
        return _ask_login(state, "acr")
    return CONTINUE


async def check_consent(state: AuthorizationState, services: AuthorizationServices) -> Step:
    """Third-party clients get only the scopes the user agreed to (first-party clients are the
    IdP's own); prompt=consent asks again (OIDC Core §3.1.2.1)."""
    user = state.user
    if state.consented or state.client.first_party or user is None:
        return CONTINUE
    granted = await services.granted_scopes(user.id, state.client.id)
    if "consent" in state.prompt:
        reason = "prompt_consent"
    elif not set(state.request.scopes) <= granted:
        reason = "scopes_not_granted"
    else:
        return CONTINUE
    if state.prompt_none:
        return RedirectError(errors.ConsentRequired())
    return SendToConsent(reason)


CHECKS: tuple[Check, ...] = (
    check_id_token_hint,
    check_account,
    check_prompt_create,
    check_session,
    check_prompt_login,
    check_max_age,
    check_id_token_hint_user,
    check_acr,
    check_consent,
)


async def complete(state: AuthorizationState, services: AuthorizationServices) -> RedirectCode:
    """Every check passed: the interaction ends (once) and a code is issued (RFC 6749 §4.1.2)."""
    session, user = state.session, state.user
    assert session is not None and user is not None, "complete() after the checks only"
    if state.interaction is not None and not await services.finish_interaction(state.interaction.id):
        raise InvalidRequest("This sign-in request has already been completed.")
    acr = authn.acr_claim(session.acr, state.request.acr_values)
    return RedirectCode(await services.issue_code(state.request, user, session, acr))


async def decide(state: AuthorizationState, services: AuthorizationServices) -> Outcome:
    """What to do with a valid authorization request: the first check that has something to say
    decides; if none has, the code."""
    for check in CHECKS:
        step = await check(state, services)
        if not isinstance(step, Continue):
            return step
    return await complete(state, services)


async def answer_consent(state: AuthorizationState, services: AuthorizationServices, *, allow: bool) -> Outcome:
    """The signed-in user's answer on the consent page: a refusal goes back to the client as
    access_denied (RFC 6749 §4.1.2.1); an approval is remembered and the decision goes on."""
    if not allow:
        if state.interaction is not None:
            await services.finish_interaction(state.interaction.id)
        return RedirectError(errors.AccessDenied("The user denied the request."))
    assert state.session is not None, "the consent page needs a signed-in user"
    await services.grant_consent(state.session.user_id, state.client.id, state.request.scopes)
    state.consented = True
    return await decide(state, services)


# -- the services, from the running IdP -----------------------------------------------------------


class StoredAuthorizationServices:
    """AuthorizationServices over the database, the key-value stores and the event bus."""

    def __init__(
        self,
        *,
        db: Database,
        tokens: TokenService,
        subjects: SubjectResolver,
        sessions: SessionStore,
        interactions: InteractionStore,
        events: EventBus,
        registration_enabled: bool,
        code_ttl: int,
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._subjects = subjects
        self._sessions = sessions
        self._interactions = interactions
        self._events = events
        self.registration_enabled = registration_enabled
        self._code_ttl = code_ttl

    def read_id_token_hint(self, hint: str) -> dict[str, Any] | None:
        try:
            return self._tokens.verify_id_token_hint(hint)
        except TokenInvalid:
            return None

    def user_id_for(self, client: OAuthClient | None, subject: str) -> str | None:
        return self._subjects.user_id_for(client, subject)

    async def load_user(self, user_id: str) -> User | None:
        async with self._db.session() as session:
            return await UserRepository(session).get(user_id)

    async def end_session(self, session: BrowserSession) -> None:
        await self._sessions.end(session, reason="account_disabled")

    async def has_second_factor(self, user_id: str) -> bool:
        return await mfa.has_second_factor(self._db, user_id)

    async def granted_scopes(self, user_id: str, client_id: str) -> set[str]:
        return await consents.granted_scopes(self._db, user_id, client_id)

    async def grant_consent(self, user_id: str, client_id: str, scopes: Sequence[str]) -> None:
        await consents.grant(self._db, user_id, client_id, scopes)
        await self._events.publish(ConsentGranted(user_id=user_id, client=client_id, scopes=tuple(scopes)))

    async def finish_interaction(self, interaction_id: str) -> bool:
        return await self._interactions.finish(interaction_id)

    async def issue_code(self, request: AuthorizationRequest, user: User, session: BrowserSession, acr: str) -> str:
        granted = scopes_for_user(request.scopes, is_admin=bool(user.is_admin))
        issued = await issue_authorization_code(
            self._db,
            replace(request, scopes=granted) if granted != request.scopes else request,
            user_id=user.id,
            session_id=session.sid,
            auth_time=session.auth_time,
            amr=session.amr,
            acr=acr,
            ttl=self._code_ttl,
        )
        return issued.code
