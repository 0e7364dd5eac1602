"""Pending authorization requests while the user signs in or consents.

The validated request is parked in the key-value store under a random id and bound to the
browser that started it by a cookie (only its digest is stored), so a resume link can't be
replayed from another browser. Like node-oidc-provider's interactions, the login pages know
nothing of OAuth: they get a local URL to return to.

An invalid request that may only be answered at the client's redirect URI is parked the same way
(``ParkedError``) when nobody is signed in: RFC 9700 §4.11.2, the user authenticates before the
IdP redirects to the client, even with an error.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

from idp.errors import InvalidRequest
from idp.oauth.authorize import AuthorizationRequest, RedirectTarget
from idp.security.tokens import random_token, sha256_digest
from idp.storage.kv import KeyValueStore

_PREFIX = "interaction:"
COOKIE_NAME = "idp_interaction"
GONE = "This sign-in request has expired or was started in another browser. Return to the application and start again."


def usable_binding(binding: str | None) -> str:
    """The browser's interaction binding (the cookie's value), or a new one."""
    return binding if binding and 20 <= len(binding) <= 100 else random_token(32)


# Where the browser goes while an interaction waits: local pages that get back here through a
# resume URL only (the login and sign-up pages know nothing of OAuth).


def resume_path(interaction_id: str) -> str:
    return f"/authorize/resume/{interaction_id}"


def login_location(interaction_id: str, login_hint: str | None = None) -> str:
    query = {"return_to": resume_path(interaction_id)}
    if login_hint:
        query["login_hint"] = login_hint
    return f"/login?{urlencode(query)}"


def registration_location(interaction_id: str) -> str:
    return f"/register?{urlencode({'return_to': resume_path(interaction_id)})}"


def consent_location(interaction_id: str) -> str:
    return f"/authorize/consent/{interaction_id}"


@dataclass
class Interaction:
    id: str
    request: AuthorizationRequest
    created_at: int
    browser_digest: str
    # The authentication (BrowserSession.auth_id) the browser had when the interaction began: every
    # sign-in makes a new one, so only a different value proves a sign-in during the interaction.
    prior_auth_id: str | None = None


@dataclass
class ParkedError:
    """An error response for a verified redirect URI, held until the browser's user signs in."""

    id: str
    client_id: str
    target: RedirectTarget
    # The response parameters: error and error_description (state and iss are added on delivery).
    response: dict[str, str]
    created_at: int
    browser_digest: str


class InteractionStore:
    def __init__(self, kv: KeyValueStore, ttl: int) -> None:
        self._kv = kv
        self.ttl = ttl

    async def start(
        self, request: AuthorizationRequest, browser_binding: str, prior_auth_id: str | None = None
    ) -> Interaction:
        interaction = Interaction(
            id=random_token(16),
            request=request,
            created_at=int(time.time()),
            browser_digest=sha256_digest(browser_binding),
            prior_auth_id=prior_auth_id,
        )
        payload = {
            "request": request.to_dict(),
            "created_at": interaction.created_at,
            "browser_digest": interaction.browser_digest,
            "prior_auth_id": prior_auth_id,
        }
        await self._save(interaction.id, payload)
        return interaction

    async def park_error(
        self, client_id: str, target: RedirectTarget, response: dict[str, str], browser_binding: str
    ) -> ParkedError:
        parked = ParkedError(
            id=random_token(16),
            client_id=client_id,
            target=target,
            response=dict(response),
            created_at=int(time.time()),
            browser_digest=sha256_digest(browser_binding),
        )
        payload = {
            "error": {"client_id": client_id, "target": asdict(target), "response": parked.response},
            "created_at": parked.created_at,
            "browser_digest": parked.browser_digest,
        }
        await self._save(parked.id, payload)
        return parked

    async def _save(self, interaction_id: str, payload: dict[str, Any]) -> None:
        await self._kv.set(_PREFIX + interaction_id, json.dumps(payload), ttl=self.ttl)

    async def load(self, interaction_id: str, browser_binding: str | None) -> Interaction | ParkedError | None:
        """The parked request or error, only for the browser that started it."""
        if not interaction_id or len(interaction_id) > 64 or not browser_binding:
            return None
        raw = await self._kv.get(_PREFIX + interaction_id)
        if raw is None:
            return None
        data = json.loads(raw)
        if data["browser_digest"] != sha256_digest(browser_binding):
            return None
        if "error" in data:
            error = data["error"]
            return ParkedError(
                id=interaction_id,
                client_id=error["client_id"],
                target=RedirectTarget(**error["target"]),
                response=dict(error["response"]),
                created_at=int(data["created_at"]),
                browser_digest=data["browser_digest"],
            )
        return Interaction(
            id=interaction_id,
            request=AuthorizationRequest.from_dict(data["request"]),
            created_at=int(data["created_at"]),
            browser_digest=data["browser_digest"],
            prior_auth_id=data.get("prior_auth_id"),
        )

    async def resume(self, interaction_id: str, browser_binding: str | None) -> Interaction | ParkedError:
        """The parked request or error of this browser; InvalidRequest (an error page, never a
        redirect: the request can't be tied to this browser any more) when there is none."""
        parked = await self.load(interaction_id, browser_binding)
        if parked is None:
            raise InvalidRequest(GONE)
        return parked

    async def resume_request(self, interaction_id: str, browser_binding: str | None) -> Interaction:
        """The parked request of this browser (a parked error has no consent step)."""
        parked = await self.resume(interaction_id, browser_binding)
        if not isinstance(parked, Interaction):
            raise InvalidRequest(GONE)
        return parked

    async def finish(self, interaction_id: str) -> bool:
        """Single use: True only for the caller that removed it."""
        return await self._kv.pop(_PREFIX + interaction_id) is not None
