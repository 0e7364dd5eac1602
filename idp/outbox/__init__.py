"""The durable outbox: every outgoing message (mail, back-channel logout tokens) is a row written in
the transaction of the change that causes it, and a worker on each node delivers it.

What a user is told has happened is durable before it is said: the reset link and its mail commit
together, a logout's tokens are rows before the logout answers. The worker claims due rows
(``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, so exactly one node takes each; SQLite has one
process), delivers them through the channel registered for their kind, and on failure retries with
exponential backoff and full jitter over hours, then dead-letters the message. A node that dies
holding a message loses its lease, and the message is retried after it.

A *channel* sends a message outside (SMTP, an HTTP POST). A *resolver* turns a request into what it
implies inside one transaction (a reset request: look up the account, issue the link, enqueue its
mail) so the same durable row serves every address alike (ASVS 6.3.8).

Payloads are sealed with the key-encryption key (they hold addresses and links) and bound to their
row; logs name the kind, the row id and an error type, never a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from idp.config import OutboxSettings
from idp.security.encryption import DecryptionError, Encryptor
from idp.storage.db import DATABASE_ERRORS, Database, DatabaseUnavailable
from idp.storage.models import OutboxMessage, new_id, utcnow
from idp.storage.repositories.outbox import Claimed, DbSession, OutboxRepository, watch_commits

log = logging.getLogger("idp.outbox")

# A database that can't be reached, or a statement that failed: the batch is retried later.
_OUTAGE: tuple[type[BaseException], ...] = (DatabaseUnavailable, *DATABASE_ERRORS)
_OUTAGE_OR_TIMEOUT: tuple[type[BaseException], ...] = (TimeoutError, *_OUTAGE)

Payload = Mapping[str, Any]
AfterCommit = Callable[[], Awaitable[None]]


class DeliveryFailed(Exception):
    """One attempt failed. ``reason`` is safe to store and log (an exception type, an HTTP status);
    ``permanent``: retrying can't help, the message is dead-lettered at once."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Channel(Protocol):
    async def deliver(self, payload: Payload, attempt: int) -> None:
        """Send the message, or raise DeliveryFailed."""

    def gave_up(self, payload: Payload, reason: str, attempts: int) -> None:
        """The message is dead-lettered (log it the channel's way; nothing to raise)."""


class Resolver(Protocol):
    async def resolve(self, session: DbSession, payload: Payload) -> AfterCommit | None:
        """Do what the request implies in ``session`` (committed with the request marked done);
        returns what to run after the commit (events to publish), if anything."""


@dataclass(frozen=True)
class RetryPolicy:
    base_delay: float = 30.0
    max_delay: float = 3600.0
    max_attempts: int = 30

    @classmethod
    def from_settings(cls, settings: OutboxSettings) -> RetryPolicy:
        return cls(settings.base_delay, settings.max_delay, settings.max_attempts)

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt ``attempt`` (1-based): doubling, capped."""
        return float(min(self.max_delay, self.base_delay * 2 ** min(attempt - 1, 60)))

    def floor(self, attempt: int) -> float:
        """The shortest wait: a second (or the ceiling, if lower), so a retry is never immediate."""
        return min(1.0, self.ceiling(attempt))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter (a uniform wait up to the ceiling, above the floor): retries of many
        messages that failed at once, e.g. in an SMTP outage, spread out instead of arriving
        together when it ends."""
        return (rng or _rng).uniform(self.floor(attempt), self.ceiling(attempt))


_rng = random.SystemRandom()


def node_name() -> str:
    """This process among the nodes (host, pid and a random part: a restarted pid is new)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseLost(Exception):
    """The claim ran out and another node holds the message now."""


class Outbox:
    def __init__(self, db: Database, encryptor: Encryptor, settings: OutboxSettings, *, node: str | None = None):
        self._db = db
        self._encryptor = encryptor
        self.settings = settings
        self.retry = RetryPolicy.from_settings(settings)
        self.node = node or node_name()
        self._channels: dict[str, Channel] = {}
        self._resolvers: dict[str, Resolver] = {}
        self._wake = asyncio.Event()
        self._batch_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._unwatch: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outage_logged = False
        self._stopping = False
        # What this process queued while no worker ran here (a CLI command): tried before it exits.
        self._mine: set[str] = set()

    # -- what is sent, and how ------------------------------------------------------------------

    def register(self, kind: str, channel: Channel) -> None:
        self._channels[kind] = channel

    def register_resolver(self, kind: str, resolver: Resolver) -> None:
        self._resolvers[kind] = resolver

    def _seal(self, message_id: str, payload: Payload) -> str:
        return self._encryptor.encrypt(json.dumps(dict(payload)).encode(), _associated_data(message_id))

    def _open(self, claimed: Claimed) -> dict[str, Any]:
        data = json.loads(self._encryptor.decrypt(claimed.payload, _associated_data(claimed.id)))
        if not isinstance(data, dict):
            raise DecryptionError("not an object")
        return data

    async def enqueue(self, session: DbSession, kind: str, payload: Payload) -> str:
        """Add a message in the caller's transaction: it exists exactly when the transaction commits."""
        message_id = new_id()
        now = utcnow()
        await OutboxRepository(session).add(
            OutboxMessage(
                id=message_id,
                kind=kind,
                status="pending",
                payload=self._seal(message_id, payload),
                created_at=now,
                available_at=now,
                attempts=0,
            )
        )
        if self._task is None:
            self._mine.add(message_id)
        return message_id

    async def send(self, kind: str, payload: Payload) -> str:
        """Add a message in a transaction of its own (a message no other change goes with)."""
        async with self._db.session() as session:
            return await self.enqueue(session, kind, payload)

    # -- the worker -----------------------------------------------------------------------------

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def start(self) -> None:
        """Deliver in the background until ``stop``: at once after a commit that enqueued (this
        process), and every ``poll_interval`` seconds otherwise (other nodes' messages, retries)."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._unwatch = watch_commits(self._db.engine, self.wake)
        self._task = asyncio.create_task(self._run(), name="idp-outbox")

    async def stop(self, within: float = 5.0) -> None:
        """Stop the worker between batches (a batch cancelled halfway would leave its claims to
        their leases, and on SQLite a transaction open); cancel it if that takes over ``within``."""
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=within)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self._stopping = False

    async def close(self, within: float = 5.0) -> None:
        """Stop the worker, then try once to deliver what this process queued while no worker ran
        (a CLI command exits right after it queued a mail); what fails or takes longer stays
        queued for the nodes' workers."""
        await self.stop()
        if not self._mine:
            return
        try:
            async with asyncio.timeout(within):
                while await self.deliver_due(ids=self._mine):
                    pass
        except _OUTAGE_OR_TIMEOUT as exc:
            log.info("outbox left messages for the workers at exit", extra={"error": type(exc).__name__})

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            claimed = 0
            try:
                claimed = await self.deliver_due()
                if self._outage_logged:
                    log.info("outbox worker reached the database again")
                    self._outage_logged = False
            except _OUTAGE as exc:
                if not self._outage_logged:
                    log.warning("outbox worker cannot reach the database", extra={"error": type(exc).__name__})
                    self._outage_logged = True
            except Exception as exc:  # the worker outlives any one bad batch
                log.error("outbox worker failed", extra={"error": type(exc).__name__})
            if self._stopping:
                return
            if claimed >= self.settings.batch_size:
                continue  # more are due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_interval)

    async def deliver_due(self, kinds: Iterable[str] | None = None, *, ids: set[str] | None = None) -> int:
        """Claim a batch of due messages, deliver them concurrently and record each outcome;
        returns how many were claimed."""
        async with self._batch_lock:
            now = utcnow()
            async with self._db.session() as session:
                batch = await OutboxRepository(session).claim(
                    node=self.node,
                    now=now,
                    lease_until=now + timedelta(seconds=self.settings.lease),
                    limit=self.settings.batch_size,
                    skip_locked=self._db.dialect == "postgresql",
                    kinds=kinds,
                    ids=ids,
                )
            await asyncio.gather(*(self._attempt(claimed) for claimed in batch))
            return len(batch)

    async def drain(self, within: float = 10.0, *, retries: bool = False, kinds: Iterable[str] | None = None) -> None:
        """Deliver everything due now and wait for it (tests, the CLI). With ``retries`` a failed
        message is retried at once rather than after its backoff, until it is delivered or
        dead-lettered."""
        wanted = list(kinds) if kinds is not None else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            claimed = await self.deliver_due(wanted)
            hastened = 0
            if retries:
                async with self._db.session() as session:
                    hastened = await OutboxRepository(session).hasten(utcnow(), wanted)
            if not claimed and not hastened:
                return

    async def _attempt(self, claimed: Claimed) -> None:
        fields = {"outbox_id": claimed.id, "kind": claimed.kind, "attempt": claimed.attempts}
        try:
            payload = self._open(claimed)
        except (DecryptionError, ValueError) as exc:
            await self._failed(claimed, None, {}, DeliveryFailed(type(exc).__name__, permanent=True))
            return
        channel = self._channels.get(claimed.kind)
        resolver = self._resolvers.get(claimed.kind)
        try:
            if resolver is not None:
                await self._resolve(claimed, resolver, payload)
                return
            if channel is None:
                raise DeliveryFailed(f"no channel for {claimed.kind}")
            await channel.deliver(payload, claimed.attempts)
        except LeaseLost:
            log.warning("outbox lease lost before the outcome was recorded", extra=fields)
            return
        except DeliveryFailed as exc:
            await self._failed(claimed, channel, payload, exc)
            return
        except _OUTAGE as exc:
            await self._failed(claimed, channel, payload, DeliveryFailed(type(exc).__name__))
            return
        except Exception as exc:  # a bug in one channel must not stop the others
            log.error("outbox delivery raised", extra={**fields, "error": type(exc).__name__})
            await self._failed(claimed, channel, payload, DeliveryFailed(type(exc).__name__))
            return
        await self._record(claimed, "delivered")

    async def _resolve(self, claimed: Claimed, resolver: Resolver, payload: Payload) -> None:
        async with self._db.session() as session:
            after = await resolver.resolve(session, payload)
            if not await OutboxRepository(session).mark_delivered(claimed, self.node, utcnow()):
                raise LeaseLost  # rolls the resolution back: the new holder resolves it
        self._mine.discard(claimed.id)
        if after is not None:
            await after()

    async def _failed(self, claimed: Claimed, channel: Channel | None, payload: Payload, exc: DeliveryFailed) -> None:
        fields = {"outbox_id": claimed.id, "kind": claimed.kind, "attempt": claimed.attempts, "reason": exc.reason}
        if exc.permanent or claimed.attempts >= self.retry.max_attempts:
            if await self._record(claimed, "dead", exc.reason):
                log.warning("outbox message dead-lettered", extra=fields)
                if channel is not None:
                    channel.gave_up(payload, exc.reason, claimed.attempts)
            return
        delay = self.retry.delay(claimed.attempts)
        if await self._record(claimed, "retry", exc.reason, delay):
            log.info("outbox delivery failed; retrying", extra={**fields, "retry_in": round(delay, 3)})

    async def _record(self, claimed: Claimed, outcome: str, error: str = "", delay: float = 0.0) -> bool:
        """Store an attempt's outcome. False when it could not be (the lease was lost, or the
        database is down: the message is then retried after its lease, delivered at least once)."""
        now = utcnow()
        try:
            async with self._db.session() as session:
                repo = OutboxRepository(session)
                if outcome == "delivered":
                    done = await repo.mark_delivered(claimed, self.node, now)
                elif outcome == "dead":
                    done = await repo.bury(claimed, self.node, now, error)
                else:
                    done = await repo.reschedule(claimed, self.node, now + timedelta(seconds=delay), error)
        except _OUTAGE as exc:
            log.warning(
                "outbox outcome not recorded",
                extra={"outbox_id": claimed.id, "kind": claimed.kind, "error": type(exc).__name__},
            )
            return False
        if not done:
            log.warning("outbox lease lost before the outcome was recorded", extra={"outbox_id": claimed.id})
        elif outcome != "retry":
            self._mine.discard(claimed.id)
        return done


def _associated_data(message_id: str) -> bytes:
    return f"outbox:{message_id}".encode()
