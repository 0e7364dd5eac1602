"""The live notification socket (``/ws/notifications``): a first-party browser app's line to the
user's security events (idp.accounts.live.hub). The protocol, close codes included, is in
docs/notifications.md.

- The access token comes in the first message, never in the URL (URLs land in logs): a token in
  the query string is refused. ``Origin`` must be a web origin of an enabled first-party client,
  and the token's client must be first-party (the account API's rule).
- The token is checked again every ``recheck_interval`` seconds and soon after a session of the
  user ends, and the socket closes (4001) when it lapses: the app refreshes and reconnects. The app
  may send a fresh token on the open socket to extend its life.
- The server pings every ``heartbeat`` seconds; a socket silent for twice as long is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from quart import Blueprint, websocket

from idp.accounts.live.hub import (
    CLOSE_BAD_MESSAGE,
    CLOSE_FORBIDDEN,
    CLOSE_IDLE,
    CLOSE_TOKEN_LAPSED,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHENTICATED,
    Connection,
    TooManyConnections,
)
from idp.errors import IdPError
from idp.events import set_actor
from idp.http import runtime
from idp.oauth.resource import BearerGrant, BearerProtector, StoredParties
from idp.storage.models import OAuthClient
from idp.storage.repositories import ClientRepository

blueprint = Blueprint("live", __name__)

MAX_MESSAGE = 8 * 1024
# After an event that may have revoked the token, the check waits this long (the revocation is
# another subscriber of the same event, and may still be running).
RECHECK_DELAY = 1.0


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _first_party_only(client: OAuthClient) -> None:
    if not client.first_party:
        raise Refused(CLOSE_FORBIDDEN, "notifications are for first-party applications only")


async def _verify(token: Any) -> BearerGrant:
    if not isinstance(token, str) or not 1 <= len(token) <= 4096:
        raise Refused(CLOSE_UNAUTHENTICATED, "send {type: auth, access_token} first")
    rt = runtime()
    try:
        return await BearerProtector(rt.tokens, rt.subjects, StoredParties(rt.units)).authenticate(
            [f"Bearer {token}"], scopes=["openid"], client_policy=_first_party_only, check_scopes_first=False
        )
    except IdPError:
        raise Refused(CLOSE_UNAUTHENTICATED, "the access token is invalid, expired or revoked") from None


def _message(raw: str | bytes) -> dict[str, Any]:
    if not isinstance(raw, str) or len(raw) > MAX_MESSAGE:
        raise Refused(CLOSE_BAD_MESSAGE, "messages are JSON text of at most 8 KiB")
    try:
        data = json.loads(raw)
    except ValueError:
        raise Refused(CLOSE_BAD_MESSAGE, "messages are JSON objects") from None
    if not isinstance(data, dict) or data.get("type") not in ("auth", "pong"):
        raise Refused(CLOSE_BAD_MESSAGE, "messages are {type: auth} or {type: pong}")
    return data


async def _origin_allowed() -> bool:
    origin = websocket.headers.get("Origin", "")
    async with runtime().db.session() as session:
        return origin in await ClientRepository(session).first_party_web_origins()


@blueprint.websocket("/ws/notifications")
async def notifications() -> None:
    await websocket.accept()
    try:
        if "access_token" in websocket.args:
            raise Refused(CLOSE_UNAUTHENTICATED, "the token goes in the first message, never in the URL")
        if not await _origin_allowed():
            raise Refused(CLOSE_FORBIDDEN, "this origin is not a first-party application's")
        settings = runtime().settings.notifications
        try:
            first = await asyncio.wait_for(websocket.receive(), settings.auth_timeout)
        except TimeoutError:
            raise Refused(CLOSE_UNAUTHENTICATED, "send {type: auth, access_token} first") from None
        message = _message(first)
        if message["type"] != "auth":
            raise Refused(CLOSE_UNAUTHENTICATED, "send {type: auth, access_token} first")
        grant = await _verify(message.get("access_token"))
        set_actor(grant.user.id)
        try:
            connection = runtime().live.connect(grant.user.id)
        except TooManyConnections:
            raise Refused(CLOSE_TOO_MANY, "too many notification sockets for this account") from None
        try:
            await websocket.send(json.dumps({"type": "ready", "sub": grant.user.id, "heartbeat": settings.heartbeat}))
            await _serve(connection, grant, str(message["access_token"]))
        finally:
            runtime().live.disconnect(connection)
    except Refused as refused:
        await websocket.close(refused.code, refused.reason)


@dataclass
class _SocketState:
    token: str  # the latest token the client sent
    expires: int  # its exp
    heard: float  # when the client last sent anything (monotonic)


async def _serve(connection: Connection, grant: BearerGrant, token: str) -> None:
    """Until the connection must close: send what the hub queues, read pongs and fresh tokens,
    ping, and keep checking the token."""
    settings = runtime().settings.notifications
    state = _SocketState(token, int(grant.claims.get("exp", 0)), time.monotonic())

    async def send() -> None:
        while True:
            await websocket.send(await connection.queue.get())

    async def receive() -> None:
        while True:
            message = _message(await websocket.receive())
            state.heard = time.monotonic()
            if message["type"] == "auth":  # a refreshed token: the socket lives as long as it does
                fresh = await _verify(message.get("access_token"))
                if fresh.user.id != connection.user_id:
                    raise Refused(CLOSE_FORBIDDEN, "a token for another account")
                state.token, state.expires = str(message["access_token"]), int(fresh.claims.get("exp", 0))

    async def ping() -> None:
        while True:
            await asyncio.sleep(settings.heartbeat)
            if time.monotonic() - state.heard > 2 * settings.heartbeat:
                connection.close(CLOSE_IDLE, "no answer to pings")
                return
            await websocket.send('{"type":"ping"}')

    async def watch_token() -> None:
        while True:
            left = state.expires - time.time()
            if left <= 0:
                connection.close(CLOSE_TOKEN_LAPSED, "the access token expired: refresh and reconnect")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.recheck.wait(), min(left, settings.recheck_interval))
                await asyncio.sleep(RECHECK_DELAY)
            connection.recheck.clear()
            try:
                await _verify(state.token)
            except Refused:
                connection.close(CLOSE_TOKEN_LAPSED, "the access token was revoked: sign in again")
                return

    tasks = [asyncio.create_task(job()) for job in (send, receive, ping, watch_token)]
    closing = asyncio.create_task(connection.closing.wait())
    try:
        done, _ = await asyncio.wait([*tasks, closing], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not closing and (problem := task.exception()) is not None:
                raise problem
    finally:
        for task in [*tasks, closing]:
            task.cancel()
        await asyncio.gather(*tasks, closing, return_exceptions=True)
    if connection.close_code is not None:
        raise Refused(connection.close_code, connection.close_reason)
