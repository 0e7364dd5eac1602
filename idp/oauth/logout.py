"""Logout: RP-Initiated Logout 1.0 (the end_session endpoint's rules) and Back-Channel Logout
1.0 (signed logout tokens POSTed to each client's registered endpoint).

RP-initiated: ``parse_logout_request`` validates the request before anything happens; a bad
hint, client or post-logout redirect URI is an error page, never a redirect (RP-Initiated Logout
§3). A valid ``id_token_hint`` of this browser's session proves the user wants out
(``hint_confirms``); otherwise the user confirms first (ASVS 10.6.2). ``log_out`` ends the session.

Back-channel: each logout token is an outbox row written before the logout answers (idp.outbox),
delivered by the outbox's worker with retries over hours, so the user's logout never waits on a
relying party and a down receiver or a killed node loses nothing; a token given up on is logged as
a warning and stays as a dead letter (`idp outbox list`), never raised to the user.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from idp.accounts.sessions.store import BrowserSession, SessionStore
from idp.errors import InvalidRequest
from idp.events import EventBus, LoggedOut
from idp.oauth.authorize import with_query
from idp.oauth.params import single_value
from idp.oauth.subjects import SubjectResolver
from idp.oauth.tokens import TokenInvalid, TokenService
from idp.outbox import DeliveryFailed, Outbox
from idp.storage.db import Database
from idp.storage.models import OAuthClient
from idp.storage.repositories import ClientRepository

ClientFinder = Callable[[str], Awaitable[OAuthClient | None]]


# -- RP-Initiated Logout 1.0 ------------------------------------------------------------------------


@dataclass(frozen=True)
class LogoutRequest:
    """A validated logout request: which client asked (if any), and where to send the browser."""

    client: OAuthClient | None = None
    post_logout_redirect_uri: str | None = None
    state: str | None = None
    # The verified claims of the id_token_hint, if one was sent.
    hint_claims: dict[str, Any] | None = None

    @property
    def initiated_by(self) -> str:
        return "client" if self.client else "user"

    def confirmation_fields(self) -> dict[str, str]:
        """What the confirmation form sends back: the request without its hint."""
        fields = (
            ("post_logout_redirect_uri", self.post_logout_redirect_uri),
            ("state", self.state),
            ("client_id", self.client.id if self.client else None),
        )
        return {name: value for name, value in fields if value}

    def redirect_location(self) -> str | None:
        """The post-logout redirect URI with ``state`` (RP-Initiated Logout §3), if one was asked for."""
        uri = self.post_logout_redirect_uri
        if uri is None:
            return None
        return with_query(uri, {"state": self.state} if self.state else {})


def _hint_audience(claims: Mapping[str, Any]) -> Any:
    audience = claims.get("aud")
    return audience if isinstance(audience, str) else (audience[0] if audience else None)


async def parse_logout_request(
    params: Mapping[str, Any], *, tokens: TokenService, find_client: ClientFinder
) -> LogoutRequest:
    """Validate the request's parameters, then its id_token_hint, client_id and
    post_logout_redirect_uri (in that order); InvalidRequest (an error page) for the first that
    fails."""
    # RFC 6749 §3.1, as at every protocol endpoint: a repeated parameter is refused (which hint,
    # client or redirect URI would be trusted is otherwise a matter of which copy is read).
    hint = single_value(params, "id_token_hint")
    redirect_to = single_value(params, "post_logout_redirect_uri")
    state = single_value(params, "state")
    client_id = single_value(params, "client_id")

    hint_claims: dict[str, Any] | None = None
    if hint is not None:
        try:
            hint_claims = tokens.verify_id_token_hint(hint)
        except TokenInvalid:
            raise InvalidRequest("The id_token_hint is not a valid ID token issued by this server.") from None
        hint_client = _hint_audience(hint_claims)
        if client_id is not None and client_id != hint_client:
            raise InvalidRequest("client_id does not match the id_token_hint.")
        client_id = hint_client

    client: OAuthClient | None = None
    if client_id is not None:
        client = await find_client(str(client_id))
        if client is None:
            raise InvalidRequest("The client is unknown.")
    if redirect_to is not None:
        # RP-Initiated Logout §3: only a URI registered for the identified client, matched exactly.
        if client is None:
            raise InvalidRequest("post_logout_redirect_uri needs an id_token_hint or client_id.")
        if redirect_to not in client.post_logout_redirect_uris:
            raise InvalidRequest("The post_logout_redirect_uri is not registered for this client.")
    return LogoutRequest(client=client, post_logout_redirect_uri=redirect_to, state=state, hint_claims=hint_claims)


def hint_confirms(request: LogoutRequest, session: BrowserSession, subjects: SubjectResolver) -> bool:
    """Whether the id_token_hint describes ``session`` (its sid, or its user): only then is the
    request proof enough that this user wants to sign out, without asking (ASVS 10.6.2)."""
    claims = request.hint_claims
    if claims is None:
        return False
    hint_user = subjects.user_id_for(request.client, str(claims.get("sub")))
    return claims.get("sid") == session.sid or hint_user == session.user_id


async def log_out(
    session: BrowserSession | None,
    request: LogoutRequest,
    *,
    sessions: SessionStore,
    events: EventBus,
    subjects: SubjectResolver,
) -> None:
    """End the browser's session; its end sends back-channel logout to the session's clients (a
    SessionEnded subscriber).

    Without a session in this browser, an id_token_hint naming a session (its ``sid``) that the
    key-value store lost still ends it from the database's record of its clients, when the hint's
    client is one of them and its ``sub`` the session's user: back-channel logout goes to every
    client of it (Back-Channel Logout 1.0 §2.7), and its grants are revoked as configured."""
    if session is not None:
        await sessions.end(session, reason="logout")
        user_id, sid = session.user_id, session.sid
    else:
        claims = request.hint_claims
        hint_sid = claims.get("sid") if claims is not None else None
        if claims is None or request.client is None or not isinstance(hint_sid, str):
            return
        hint_user = subjects.user_id_for(request.client, str(claims.get("sub")))
        if hint_user is None:
            return
        user_id, sid = hint_user, hint_sid
        if not await sessions.end_lost(sid, user_id=user_id, client_id=request.client.id, reason="logout"):
            return
    await events.publish(
        LoggedOut(
            user_id=user_id,
            sid=sid,
            initiated_by=request.initiated_by,
            client=request.client.id if request.client else None,
        )
    )


# -- Back-Channel Logout 1.0 --------------------------------------------------------------------------


log = logging.getLogger("idp.backchannel")

BACKCHANNEL_LOGOUT = "backchannel_logout"  # the outbox kind of one logout token for one client
# A stored token is sent again while this much of its lifetime (TokenService: 120 s) is left;
# an older one is replaced by a fresh token (the relying party refuses an expired one, §2.6).
_REUSE_FOR = 60


class BackchannelNotifier:
    """Back-channel logout through the outbox: ``notify`` queues one logout token per client in
    one transaction, before the logout answers; the outbox delivers it (``deliver``, its channel)
    with retries over hours, on exactly one node, surviving restarts."""

    def __init__(
        self,
        db: Database,
        tokens: TokenService,
        outbox: Outbox,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._outbox = outbox
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False, transport=transport)

    async def notify(self, client_ids: Iterable[str], *, subject_for: dict[str, str], sid: str | None) -> int:
        """Queue a logout token for each client with a back-channel endpoint; returns how many."""
        scheduled = 0
        async with self._db.session() as session:
            repo = ClientRepository(session)
            for client_id in dict.fromkeys(client_ids):
                client = await repo.get(client_id)
                if client is None or not client.backchannel_logout_uri or client.disabled:
                    continue
                subject = subject_for.get(client.id)
                payload = {
                    "client_id": client.id,
                    "subject": subject,
                    "sid": sid,
                    "logout_token": self._mint(client, subject, sid),
                    "minted_at": self._tokens.now(),
                }
                await self._outbox.enqueue(session, BACKCHANNEL_LOGOUT, payload)
                scheduled += 1
        return scheduled

    def _mint(self, client: OAuthClient, subject: str | None, sid: str | None) -> str:
        return self._tokens.issue_logout_token(
            client_id=client.id, subject=subject, sid=sid, alg=client.id_token_signed_response_alg
        )

    async def deliver(self, payload: Mapping[str, Any], attempt: int) -> None:
        """The outbox channel: POST the token to the client's current endpoint (Back-Channel
        Logout 1.0 §2.5); raises DeliveryFailed unless it answered 200 or 204 (§2.8)."""
        client_id = str(payload.get("client_id"))
        async with self._db.session() as session:
            client = await ClientRepository(session).get(client_id)
        if client is None or client.disabled or not client.backchannel_logout_uri:
            raise DeliveryFailed("client gone or without a back-channel endpoint", permanent=True)
        token = payload.get("logout_token")
        minted_at = payload.get("minted_at")
        if not isinstance(token, str) or not isinstance(minted_at, int) or self._tokens.now() - minted_at > _REUSE_FOR:
            subject, sid = payload.get("subject"), payload.get("sid")
            token = self._mint(
                client, subject if isinstance(subject, str) else None, sid if isinstance(sid, str) else None
            )
        try:
            response = await self._http.post(client.backchannel_logout_uri, data={"logout_token": token})
        except httpx.HTTPError as exc:
            raise DeliveryFailed(type(exc).__name__) from None
        # §2.8: 200 (or 204) means the RP logged the session out; another 4xx is a refusal that
        # retrying won't change, except 429 (too many requests: later may work); 5xx is retried.
        if response.status_code in (200, 204):
            log.info("back-channel logout delivered", extra={"client_id": client.id, "attempt": attempt})
            return
        status = response.status_code
        raise DeliveryFailed(f"HTTP {status}", permanent=400 <= status < 500 and status != 429)

    def gave_up(self, payload: Mapping[str, Any], reason: str, attempts: int) -> None:
        log.warning(
            "back-channel logout failed",
            extra={"client_id": payload.get("client_id"), "reason": reason, "attempts": attempts},
        )

    async def drain(self, within: float = 10.0) -> None:
        """Deliver every queued logout token and wait, retrying failures at once instead of after
        their backoff, until each is delivered or dead-lettered (tests)."""
        await self._outbox.drain(within, retries=True, kinds=(BACKCHANNEL_LOGOUT,))

    async def close(self) -> None:
        await self._http.aclose()
