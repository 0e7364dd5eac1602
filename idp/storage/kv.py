"""Key-value state: server-side sessions, rate limits, denylists, one-time ids and short locks.

One small async interface, two backends:

* :class:`MemoryStore` keeps everything in a dict of the running process. It is the embedded
  default for a single node and needs no infrastructure.
* :class:`RedisStore` keeps the state in Redis so several instances behind a load balancer agree
  on who is logged in, which tokens are revoked and how many attempts a client has left.

Both backends implement the same semantics (the same test suite runs against both), including
Redis' refusal to treat a string key as a set ("WRONGTYPE"), so code written against the memory
store does not break when it is deployed with Redis.
"""

from __future__ import annotations

import abc
import builtins
import collections
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import ClassVar, cast

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from idp.storage.urls import redact_url, url_secrets

__all__ = (
    "KeyValueError",
    "KeyValueStore",
    "KeyValueUnavailable",
    "MemoryStore",
    "RedisStore",
    "open_kv_store",
    "redact_url",
)


class KeyValueError(Exception):
    """A key-value operation failed (wrong type for the key, not an integer, server refusal...)."""


class KeyValueUnavailable(KeyValueError):
    """The backend cannot be reached; callers may fail closed or degrade, but must not crash oddly."""


def _ttl_ms(ttl: float) -> int:
    """Seconds to whole milliseconds, rounded *up* so a tiny ttl never becomes "no expiry" or 0."""
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


class KeyValueStore(abc.ABC):
    """Async key-value state shared by the request handlers.

    Values are strings; ``ttl`` is in seconds (``None`` = no expiry). Every key is namespaced with
    :attr:`prefix` so several deployments (or tests) can share one Redis database safely; prefixes
    of different stores on the same backend must not be prefixes of one another.
    """

    prefix: str

    @property
    @abc.abstractmethod
    def backend_name(self) -> str:
        """``"memory"`` or ``"redis"``; reported by health checks and logs."""

    @abc.abstractmethod
    async def get(self, key: str) -> str | None:
        """The value of ``key``, or None when it is missing or expired."""

    @abc.abstractmethod
    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store ``value``, replacing any previous value, type and expiry of ``key``."""

    @abc.abstractmethod
    async def set_if_absent(self, key: str, value: str, ttl: float | None = None) -> bool:
        """Atomically create ``key``; True only for the single caller that created it.

        This is the primitive behind jti replay detection and locks.
        """

    @abc.abstractmethod
    async def set_if_present(self, key: str, value: str, ttl: float | None = None) -> bool:
        """Atomically replace the value of an existing ``key``; False (and nothing written) when it
        is absent, so an update can't bring back what another instance deleted."""

    @abc.abstractmethod
    async def pop(self, key: str) -> str | None:
        """Atomically read and delete ``key`` so a consume-once artefact is used exactly once."""

    @abc.abstractmethod
    async def delete(self, *keys: str) -> int:
        """Delete ``keys``; returns how many existed."""

    @abc.abstractmethod
    async def delete_if_equal(self, key: str, value: str) -> bool:
        """Atomically delete ``key`` only while it holds ``value``; True when it did.

        Releasing a lock: a holder whose lock expired and was taken by another must not delete the
        new holder's lock, so the comparison and the deletion are one step.
        """

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether ``key`` currently exists (of any type)."""

    @abc.abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Remaining seconds before ``key`` expires; None when it is missing or never expires."""

    @abc.abstractmethod
    async def expire(self, key: str, ttl: float) -> bool:
        """Set a new expiry on an existing key (sliding sessions); False when the key is missing."""

    @abc.abstractmethod
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Atomically add ``amount`` and return the new value.

        ``ttl`` is applied only when this call created the key, so a fixed-window counter is not
        extended by every hit.
        """

    @abc.abstractmethod
    async def hit_window(self, key: str, window: float) -> int:
        """Record one hit now; return the hits within the last ``window`` seconds, this one included.

        A sliding window does not allow the 2x burst a fixed window allows at its boundary.
        """

    @abc.abstractmethod
    async def add_to_set(self, key: str, *members: str, ttl: float | None = None) -> int:
        """Add ``members`` to the set ``key``; returns how many were new.

        When ``ttl`` is given it (re)sets the expiry of the whole set, so an index lives as long as
        its newest entry; ``None`` leaves any existing expiry untouched.
        """

    @abc.abstractmethod
    async def remove_from_set(self, key: str, *members: str) -> int:
        """Remove ``members``; returns how many were present. An emptied set disappears."""

    @abc.abstractmethod
    async def set_members(self, key: str) -> builtins.set[str]:
        """All members of the set ``key`` (empty when missing)."""

    @abc.abstractmethod
    async def delete_prefix(self, sub_prefix: str) -> int:
        """Delete every key under ``prefix + sub_prefix``; returns how many were deleted."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`KeyValueUnavailable` when the backend cannot be reached (readiness probes)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store must not be used afterwards."""

    def _k(self, key: str) -> str:
        return self.prefix + key


# --------------------------------------------------------------------------------------------------
# In-process backend
# --------------------------------------------------------------------------------------------------

_Value = str | set[str] | collections.deque[float]


def _kind_name(kind: type) -> str:
    """Human name of a stored value type, for WRONGTYPE messages."""
    if issubclass(kind, str):
        return "string"
    if issubclass(kind, set):
        return "set"
    return "sliding window"


@dataclass(slots=True)
class _Entry:
    value: _Value
    expires_at: float | None = None


class MemoryStore(KeyValueStore):
    """Dict-backed store for a single process.

    Everything runs on one event loop and no method awaits between reading and writing the dict,
    so each operation is atomic without locks. Expired entries are dropped lazily when touched and
    by a periodic sweep, so keys that are never read again do not pile up.
    """

    SWEEP_EVERY: ClassVar[int] = 1000
    """Minimum number of writes between two sweeps."""

    def __init__(self, prefix: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix
        self._clock = clock
        self._data: dict[str, _Entry] = {}
        self._writes = 0
        self._next_sweep = self.SWEEP_EVERY

    @property
    def backend_name(self) -> str:
        return "memory"

    # -- internals -------------------------------------------------------------------------------

    def _deadline(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + _ttl_ms(ttl) / 1000

    def _live(self, full_key: str) -> _Entry | None:
        """The entry for ``full_key`` unless it has expired (in which case it is dropped now)."""
        entry = self._data.get(full_key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= self._clock():
            del self._data[full_key]
            return None
        return entry

    def _typed(self, full_key: str, kind: type) -> _Entry | None:
        """Like :meth:`_live`, but refuses a key holding another type, as Redis' WRONGTYPE does."""
        entry = self._live(full_key)
        if entry is not None and not isinstance(entry.value, kind):
            held = _kind_name(type(entry.value))
            raise KeyValueError(f"WRONGTYPE key {full_key!r} holds a {held}, not a {_kind_name(kind)}")
        return entry

    def _wrote(self) -> None:
        """Count a write and sweep once enough have happened.

        The interval grows with the number of live keys, so sweeping costs amortised O(1) per write
        and expired garbage never exceeds roughly the live data.
        """
        self._writes += 1
        if self._writes >= self._next_sweep:
            self._sweep()

    def _sweep(self) -> int:
        now = self._clock()
        dead = [k for k, e in self._data.items() if e.expires_at is not None and e.expires_at <= now]
        for k in dead:
            del self._data[k]
        self._writes = 0
        self._next_sweep = max(self.SWEEP_EVERY, len(self._data))
        return len(dead)

    # -- strings ---------------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        entry = self._typed(self._k(key), str)
        return None if entry is None else str(entry.value)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._data[self._k(key)] = _Entry(value, self._deadline(ttl))
        self._wrote()

    async def set_if_absent(self, key: str, value: str, ttl: float | None = None) -> bool:
        deadline = self._deadline(ttl)
        full = self._k(key)
        if self._live(full) is not None:
            return False
        self._data[full] = _Entry(value, deadline)
        self._wrote()
        return True

    async def set_if_present(self, key: str, value: str, ttl: float | None = None) -> bool:
        deadline = self._deadline(ttl)  # validates ttl whether or not the key exists
        full = self._k(key)
        if self._live(full) is None:
            return False
        self._data[full] = _Entry(value, deadline)
        self._wrote()
        return True

    async def pop(self, key: str) -> str | None:
        full = self._k(key)
        entry = self._typed(full, str)
        if entry is None:
            return None
        del self._data[full]
        return str(entry.value)

    async def delete(self, *keys: str) -> int:
        removed = 0
        for key in keys:
            full = self._k(key)
            if self._live(full) is not None:
                del self._data[full]
                removed += 1
        return removed

    async def delete_if_equal(self, key: str, value: str) -> bool:
        full = self._k(key)
        entry = self._live(full)
        if entry is None or entry.value != value:
            return False
        del self._data[full]
        return True

    async def exists(self, key: str) -> bool:
        return self._live(self._k(key)) is not None

    async def ttl(self, key: str) -> float | None:
        entry = self._live(self._k(key))
        if entry is None or entry.expires_at is None:
            return None
        return entry.expires_at - self._clock()

    async def expire(self, key: str, ttl: float) -> bool:
        deadline = self._deadline(ttl)
        entry = self._live(self._k(key))
        if entry is None:
            return False
        entry.expires_at = deadline
        self._wrote()
        return True

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        deadline = self._deadline(ttl)
        full = self._k(key)
        entry = self._typed(full, str)
        if entry is None:
            self._data[full] = _Entry(str(amount), deadline)
            self._wrote()
            return amount
        try:
            current = int(str(entry.value))
        except ValueError:
            raise KeyValueError(f"value of key {full!r} is not an integer") from None
        entry.value = str(current + amount)
        self._wrote()
        return current + amount

    # -- sliding window --------------------------------------------------------------------------

    async def hit_window(self, key: str, window: float) -> int:
        window_ms = _ttl_ms(window)
        full = self._k(key)
        now = self._clock()
        entry = self._typed(full, collections.deque)
        if entry is None:
            entry = _Entry(collections.deque())
            self._data[full] = entry
        hits = cast("collections.deque[float]", entry.value)  # _typed checked the type
        cutoff = now - window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        hits.append(now)
        entry.expires_at = now + window_ms / 1000
        self._wrote()
        return len(hits)

    # -- sets ------------------------------------------------------------------------------------

    def _set_of(self, entry: _Entry) -> builtins.set[str]:
        return cast("builtins.set[str]", entry.value)  # _typed checked the type

    async def add_to_set(self, key: str, *members: str, ttl: float | None = None) -> int:
        deadline = self._deadline(ttl)
        if not members:
            return 0
        full = self._k(key)
        entry = self._typed(full, set)
        if entry is None:
            entry = _Entry(set())
            self._data[full] = entry
        current = self._set_of(entry)
        before = len(current)
        current.update(members)
        if deadline is not None:
            entry.expires_at = deadline
        self._wrote()
        return len(current) - before

    async def remove_from_set(self, key: str, *members: str) -> int:
        full = self._k(key)
        entry = self._typed(full, set)
        if entry is None or not members:
            return 0
        current = self._set_of(entry)
        before = len(current)
        current.difference_update(members)
        if not current:
            del self._data[full]
        return before - len(current)

    async def set_members(self, key: str) -> builtins.set[str]:
        entry = self._typed(self._k(key), set)
        return set() if entry is None else set(self._set_of(entry))

    # -- administration --------------------------------------------------------------------------

    async def delete_prefix(self, sub_prefix: str) -> int:
        start = self._k(sub_prefix)
        now = self._clock()
        doomed = [k for k in self._data if k.startswith(start)]
        removed = 0
        for k in doomed:
            expires_at = self._data.pop(k).expires_at
            if expires_at is None or expires_at > now:
                removed += 1
        return removed

    async def ping(self) -> None:
        """The process' own memory is always reachable."""

    async def close(self) -> None:
        self._data.clear()


# --------------------------------------------------------------------------------------------------
# Redis backend
# --------------------------------------------------------------------------------------------------

_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # includes authentication failures and "server is loading"
    redis_errors.TimeoutError,
    redis_errors.InvalidResponse,  # something that is not Redis answers on that port
    OSError,  # includes the builtin (and asyncio) TimeoutError
)

_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")

_DELETE_BATCH = 500

_DELETE_IF_EQUAL = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _escape_glob(text: str) -> str:
    """Make ``text`` match literally in a SCAN MATCH pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _text(value: bytes | str | None) -> str | None:
    """Narrow redis-py's reply type; ``decode_responses=True`` means bytes never actually arrive."""
    if isinstance(value, bytes):
        return value.decode()
    return value


class RedisStore(KeyValueStore):
    """Store shared by every instance through one Redis database.

    Multi-step operations use MULTI/EXEC transactions so they stay atomic across instances.
    """

    def __init__(self, url: str, prefix: str = "idp:", *, socket_timeout: float = 5.0) -> None:
        self.prefix = prefix
        self._display_url = redact_url(url)
        self._secrets = url_secrets(url)
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )

    @property
    def backend_name(self) -> str:
        return "redis"

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Translate redis-py errors into ours; messages carry no password and no traceback text."""
        try:
            yield
        except _UNAVAILABLE_ERRORS as exc:
            raise KeyValueUnavailable(f"Redis at {self._display_url} is unavailable: {self._clean(exc)}") from None
        except redis_errors.RedisError as exc:
            raise KeyValueError(f"Redis at {self._display_url} refused the operation: {self._clean(exc)}") from exc

    def _clean(self, exc: BaseException) -> str:
        reason = str(exc) or type(exc).__name__
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        return reason

    # -- strings ---------------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        async with self._guard():
            value = await self._redis.get(self._k(key))
        return _text(value)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        px = None if ttl is None else _ttl_ms(ttl)
        async with self._guard():
            await self._redis.set(self._k(key), value, px=px)

    async def set_if_absent(self, key: str, value: str, ttl: float | None = None) -> bool:
        px = None if ttl is None else _ttl_ms(ttl)
        async with self._guard():
            created = await self._redis.set(self._k(key), value, px=px, nx=True)
        return bool(created)

    async def set_if_present(self, key: str, value: str, ttl: float | None = None) -> bool:
        px = None if ttl is None else _ttl_ms(ttl)
        async with self._guard():
            replaced = await self._redis.set(self._k(key), value, px=px, xx=True)
        return bool(replaced)

    async def pop(self, key: str) -> str | None:
        async with self._guard():
            value = await self._redis.getdel(self._k(key))
        return _text(value)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        async with self._guard():
            removed = await self._redis.unlink(*(self._k(k) for k in keys))
        return int(removed)

    async def delete_if_equal(self, key: str, value: str) -> bool:
        # One script, so no other client's command runs between the GET and the DEL. A key of
        # another type is simply not equal (TYPE first: GET on a set would be WRONGTYPE).
        async with self._guard():
            deleted = await self._redis.eval(_DELETE_IF_EQUAL, 1, self._k(key), value)
        return bool(deleted)

    async def exists(self, key: str) -> bool:
        async with self._guard():
            count = await self._redis.exists(self._k(key))
        return int(count) == 1

    async def ttl(self, key: str) -> float | None:
        async with self._guard():
            remaining_ms = int(await self._redis.pttl(self._k(key)))
        return None if remaining_ms < 0 else remaining_ms / 1000  # -2 missing, -1 no expiry

    async def expire(self, key: str, ttl: float) -> bool:
        px = _ttl_ms(ttl)
        async with self._guard():
            return bool(await self._redis.pexpire(self._k(key), px))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        full = self._k(key)
        if ttl is None:
            async with self._guard():
                return int(await self._redis.incrby(full, amount))
        px = _ttl_ms(ttl)
        # SET NX creates the counter with its expiry only if it is absent; INCRBY keeps the expiry.
        async with self._guard(), self._redis.pipeline(transaction=True) as pipe:
            pipe.set(full, "0", px=px, nx=True)
            pipe.incrby(full, amount)
            _created, value = await pipe.execute()
        return int(value)

    # -- sliding window --------------------------------------------------------------------------

    async def hit_window(self, key: str, window: float) -> int:
        window_ms = _ttl_ms(window)
        full = self._k(key)
        # Wall clock, not monotonic: the timestamps are compared across instances (keep NTP on).
        now = time.time()
        member = f"{now:.6f}:{uuid.uuid4().hex}"
        # MULTI does not stop at a failed command: if the key already holds another type, the
        # call raises WRONGTYPE but the PEXPIRE still lands on that key (same for add_to_set).
        async with self._guard(), self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(full, "-inf", now - window)
            pipe.zadd(full, {member: now})
            pipe.zcard(full)
            pipe.pexpire(full, window_ms)
            _removed, _added, count, _expiry_set = await pipe.execute()
        return int(count)

    # -- sets ------------------------------------------------------------------------------------

    async def add_to_set(self, key: str, *members: str, ttl: float | None = None) -> int:
        px = None if ttl is None else _ttl_ms(ttl)
        if not members:
            return 0
        full = self._k(key)
        if px is None:
            async with self._guard():
                return int(await self._redis.sadd(full, *members))
        async with self._guard(), self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(full, *members)
            pipe.pexpire(full, px)
            added, _expiry_set = await pipe.execute()
        return int(added)

    async def remove_from_set(self, key: str, *members: str) -> int:
        if not members:
            return 0
        async with self._guard():
            return int(await self._redis.srem(self._k(key), *members))

    async def set_members(self, key: str) -> builtins.set[str]:
        async with self._guard():
            members = await self._redis.smembers(self._k(key))
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    # -- administration --------------------------------------------------------------------------

    async def delete_prefix(self, sub_prefix: str) -> int:
        """SCAN + UNLINK in batches: never KEYS, which blocks the server on a large database."""
        start = self._k(sub_prefix)
        if not start:
            raise ValueError("refusing to delete every key of the Redis database (empty prefix)")
        pattern = _escape_glob(start) + "*"
        removed = 0
        batch: list[str] = []
        async with self._guard():
            async for found in self._redis.scan_iter(match=pattern, count=1000):
                batch.append(found)
                if len(batch) >= _DELETE_BATCH:
                    removed += int(await self._redis.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(await self._redis.unlink(*batch))
        return removed

    async def ping(self) -> None:
        async with self._guard():
            await self._redis.ping()

    async def close(self) -> None:
        async with self._guard():
            await self._redis.aclose()


def open_kv_store(redis_url: str | None, prefix: str) -> KeyValueStore:
    """Redis when a URL is configured (multi-instance deployments), else the in-process store."""
    if redis_url:
        return RedisStore(redis_url, prefix)
    return MemoryStore(prefix)
