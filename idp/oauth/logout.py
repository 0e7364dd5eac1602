"""Back-Channel Logout 1.0: signed logout tokens POSTed to each client's registered endpoint.

Delivery runs in background tasks with retries so the user's logout never waits on a relying
party; failures are logged as warnings (there is no audit event for them yet), never raised to the
user.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import httpx

from idp.oauth.tokens import TokenService
from idp.storage.db import Database
from idp.storage.models import OAuthClient
from idp.storage.repositories import ClientRepository

log = logging.getLogger("idp.backchannel")


class BackchannelNotifier:
    def __init__(
        self,
        db: Database,
        tokens: TokenService,
        *,
        attempts: int = 3,
        backoff: float = 0.5,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._attempts = attempts
        self._backoff = backoff
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False, transport=transport)
        self._tasks: set[asyncio.Task[bool]] = set()

    async def notify(self, client_ids: Iterable[str], *, subject_for: dict[str, str], sid: str | None) -> int:
        """Schedule a logout token for each client with a back-channel endpoint; returns how many."""
        async with self._db.session() as session:
            repo = ClientRepository(session)
            clients = [client for cid in dict.fromkeys(client_ids) if (client := await repo.get(cid)) is not None]
        scheduled = 0
        for client in clients:
            if not client.backchannel_logout_uri or client.disabled:
                continue
            token = self._tokens.issue_logout_token(
                client_id=client.id,
                subject=subject_for.get(client.id),
                sid=sid,
                alg=client.id_token_signed_response_alg,
            )
            task = asyncio.create_task(self._deliver(client, token))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            scheduled += 1
        return scheduled

    async def _deliver(self, client: OAuthClient, logout_token: str) -> bool:
        uri = client.backchannel_logout_uri or ""
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._http.post(uri, data={"logout_token": logout_token})
                # OIDC Back-Channel Logout §2.8: 200 (or 204) means the RP logged the session out.
                if response.status_code in (200, 204):
                    log.info("back-channel logout delivered", extra={"client_id": client.id, "attempt": attempt})
                    return True
                reason = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500:
                    break  # the RP rejected the token: retrying won't help
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if attempt < self._attempts:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
        log.warning("back-channel logout failed", extra={"client_id": client.id, "reason": reason, "attempts": attempt})
        return False

    async def drain(self, within: float = 10.0) -> None:
        """Wait for deliveries in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)

    async def close(self) -> None:
        await self.drain(within=5.0)
        for task in list(self._tasks):
            task.cancel()
        await self._http.aclose()
