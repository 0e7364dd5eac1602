"""The state between the password and the second factor (a pending sign-in): kept in the key-value
store under an opaque cookie, single use, for ``[sessions] interaction_ttl`` seconds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from idp.security.tokens import random_token, sha256_digest
from idp.storage.kv import KeyValueStore

_PENDING = "login_pending:"
PENDING_COOKIE = "idp_login"


@dataclass
class PendingLogin:
    """A password check passed; the second factor (or its enrolment, ``enrol``) is still due."""

    digest: str
    user_id: str
    return_to: str
    created_at: int
    enrol: bool = False
    # Set once enrolment succeeded: what the new factor proved.
    enrolled: str | None = None


class PendingLogins:
    """Pending sign-ins, each under a random cookie value known to the store only by its digest."""

    def __init__(self, kv: KeyValueStore, *, ttl: int, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self.ttl = ttl
        self._clock = clock

    async def start(self, user_id: str, return_to: str, *, enrol: bool = False) -> tuple[str, PendingLogin]:
        cookie = random_token(32)
        pending = PendingLogin(
            digest=sha256_digest(cookie),
            user_id=user_id,
            return_to=return_to,
            created_at=int(self._clock()),
            enrol=enrol,
        )
        await self._kv.set(_PENDING + pending.digest, json.dumps(asdict(pending)), ttl=self.ttl)
        return cookie, pending

    async def load(self, cookie: str | None) -> PendingLogin | None:
        if not cookie or len(cookie) > 128:
            return None
        raw = await self._kv.get(_PENDING + sha256_digest(cookie))
        return PendingLogin(**json.loads(raw)) if raw else None

    async def save(self, pending: PendingLogin) -> None:
        remaining = self.ttl - (int(self._clock()) - pending.created_at)
        if remaining > 0:
            await self._kv.set(_PENDING + pending.digest, json.dumps(asdict(pending)), ttl=remaining)

    async def finish(self, pending: PendingLogin) -> bool:
        """Consume the pending sign-in; False if another request already did (single use)."""
        return await self._kv.pop(_PENDING + pending.digest) is not None
