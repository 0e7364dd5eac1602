"""Live notifications: a user's security events, pushed to their open first-party apps the moment
they are recorded, whichever node they are connected to.

The audit log is the source: once an event's row is committed, the audit logger hands it here
(``published``), so a notification always has its durable record first, with the same id (a
client that missed some fetches them from its activity by id). Publication goes through the
key-value store's pub/sub (Redis PUBLISH: every node hears it; one subscription per process,
fanned out in memory to that process's sockets).

Resources are bounded: each socket has a send queue of ``queue_limit`` messages, and a socket that
falls that far behind is closed (4008) rather than allowed to grow memory; a user may hold
``max_per_user`` sockets per node.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from idp.accounts.sessions.devices import device_label
from idp.storage.kv import KeyValueError, KeyValueStore
from idp.storage.kv.subscription import Subscription

log = logging.getLogger("idp.live")

CHANNEL = "live:events"
# The events a user hears (the audit log's names); every other event stays in the log only.
FORWARDED = frozenset(
    {
        "login_succeeded",
        "new_device_sign_in",
        "password_changed",
        "password_reset",
        "email_changed",
        "mfa_enabled",
        "mfa_disabled",
        "passkey_registered",
        "passkey_removed",
        "recovery_codes_regenerated",
        "second_factors_reset",
        "session_ended",
        "profile_updated",
        "picture_changed",
        "consent_withdrawn",
        "account_locked",
        "account_disabled",
    }
)
# After these, a socket's token is checked again at once (they may have revoked it).
RECHECK_AFTER = frozenset({"session_ended", "account_disabled", "password_reset", "consent_withdrawn"})
# Detail members a notification may carry: what the user's own activity shows, nothing secret.
_SAFE_DETAILS = frozenset(
    {"sid", "reason", "device", "factor", "method", "scope", "scopes", "duration", "amr", "fields"}
    | {"passkey", "removed"}
)

# Close codes (RFC 6455 §7.4.2 leaves 4000-4999 to applications); docs/notifications.md lists them.
CLOSE_BAD_MESSAGE = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOKEN_LAPSED = 4001
CLOSE_TOO_SLOW = 4008
CLOSE_TOO_MANY = 4029
CLOSE_GOING_AWAY = 1001
CLOSE_IDLE = 1000


def notification(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the user is sent for an audit row (None: not a user's notification)."""
    if row.get("event") not in FORWARDED or not row.get("subject_id"):
        return None
    occurred = row.get("occurred_at")
    if isinstance(occurred, datetime):
        occurred = occurred.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = {key: value for key, value in (row.get("details") or {}).items() if key in _SAFE_DETAILS}
    if row.get("user_agent") and "device" not in data:
        data["device"] = device_label(str(row["user_agent"]))  # "Firefox 120 on Windows"
    if row.get("client_id"):
        data["client_id"] = row["client_id"]
    return {"type": "event", "id": row.get("id"), "event": row["event"], "occurred_at": occurred, "data": data}


class TooManyConnections(Exception):
    pass


@dataclass(eq=False)
class Connection:
    """One socket's side of the hub: what is waiting to be sent, and whether it must close."""

    user_id: str
    queue_limit: int
    queue: asyncio.Queue[str] = field(init=False)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    recheck: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    close_reason: str = ""

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_limit)

    def offer(self, message: str, *, recheck: bool = False) -> None:
        if self.closing.is_set():
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW, "too slow: reconnect and fetch what was missed")
            return
        if recheck:
            self.recheck.set()

    def close(self, code: int, reason: str) -> None:
        if not self.closing.is_set():
            self.close_code, self.close_reason = code, reason
            self.closing.set()


class LiveHub:
    def __init__(self, kv: KeyValueStore, *, max_per_user: int, queue_limit: int) -> None:
        self._kv = kv
        self._max_per_user = max_per_user
        self._queue_limit = queue_limit
        self._connections: dict[str, set[Connection]] = {}
        self._subscription: Subscription | None = None

    # -- publishing (any process: the server's nodes, the CLI) -----------------------------------

    async def published(self, row: Mapping[str, Any]) -> None:
        """An audit row was committed: tell every node, if it is a user's notification. Never
        raises (the event happened whether or not anyone is told now)."""
        message = notification(row)
        if message is None:
            return
        try:
            await self._kv.publish(CHANNEL, json.dumps({"user": row["subject_id"], "message": message}))
        except KeyValueError as exc:
            log.warning("live notification not published", extra={"error": type(exc).__name__})

    # -- this node's sockets -----------------------------------------------------------------------

    def connect(self, user_id: str) -> Connection:
        sockets = self._connections.setdefault(user_id, set())
        if len(sockets) >= self._max_per_user:
            raise TooManyConnections(user_id)
        connection = Connection(user_id, self._queue_limit)
        sockets.add(connection)
        return connection

    def disconnect(self, connection: Connection) -> None:
        sockets = self._connections.get(connection.user_id)
        if sockets is not None:
            sockets.discard(connection)
            if not sockets:
                del self._connections[connection.user_id]

    @property
    def connections(self) -> int:
        return sum(len(sockets) for sockets in self._connections.values())

    def deliver(self, raw: str) -> None:
        """One message from the channel, to this node's sockets of its user."""
        try:
            envelope = json.loads(raw)
            user_id, message = str(envelope["user"]), envelope["message"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable live notification dropped")
            return
        text = json.dumps(message)
        recheck = message.get("event") in RECHECK_AFTER
        for connection in list(self._connections.get(user_id, ())):
            connection.offer(text, recheck=recheck)

    # -- the subscription (serving processes) ----------------------------------------------------

    async def start(self) -> None:
        """Subscribe, and return once subscribed (events from then on reach this node)."""
        # Whatever is published while this node is deaf is lost to it: the sockets close, so their
        # apps reconnect and fetch what they missed from the activity log.
        self._subscription = Subscription(
            self._kv,
            CHANNEL,
            self._heard,
            what="live notifications",
            on_lost=lambda: self._close_all(CLOSE_GOING_AWAY, "notifications interrupted: reconnect"),
        )
        await self._subscription.start()

    async def _heard(self, raw: str) -> None:
        self.deliver(raw)

    def _close_all(self, code: int, reason: str) -> None:
        for sockets in list(self._connections.values()):
            for connection in list(sockets):
                connection.close(code, reason)

    async def stop(self) -> None:
        self._close_all(CLOSE_GOING_AWAY, "server shutting down")
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
