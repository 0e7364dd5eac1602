"""Pending authorization requests while the user signs in or consents.

The validated request is parked in the key-value store under a random id and bound to the
browser that started it by a cookie (only its digest is stored), so a resume link can't be
replayed from another browser. Like node-oidc-provider's interactions, the login pages know
nothing of OAuth: they get a local URL to return to.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from idp.oauth.authorize import AuthorizationRequest
from idp.security.tokens import random_token, sha256_digest
from idp.storage.kv import KeyValueStore

_PREFIX = "interaction:"
COOKIE_NAME = "idp_interaction"


@dataclass
class Interaction:
    id: str
    request: AuthorizationRequest
    created_at: int
    browser_digest: str
    # The authentication (BrowserSession.auth_id) the browser had when the interaction began: every
    # sign-in makes a new one, so only a different value proves a sign-in during the interaction.
    prior_auth_id: str | None = None


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
        await self._kv.set(_PREFIX + interaction.id, json.dumps(payload), ttl=self.ttl)
        return interaction

    async def load(self, interaction_id: str, browser_binding: str | None) -> Interaction | None:
        if not interaction_id or len(interaction_id) > 64 or not browser_binding:
            return None
        raw = await self._kv.get(_PREFIX + interaction_id)
        if raw is None:
            return None
        data = json.loads(raw)
        if data["browser_digest"] != sha256_digest(browser_binding):
            return None
        return Interaction(
            id=interaction_id,
            request=AuthorizationRequest.from_dict(data["request"]),
            created_at=int(data["created_at"]),
            browser_digest=data["browser_digest"],
            prior_auth_id=data.get("prior_auth_id"),
        )

    async def finish(self, interaction_id: str) -> bool:
        """Single use: True only for the caller that removed it."""
        return await self._kv.pop(_PREFIX + interaction_id) is not None
