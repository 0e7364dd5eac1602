"""The Redis backend: state shared by every instance through one Redis database."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from idp.storage.kv.base import KeyValueError, KeyValueStore, KeyValueUnavailable, _check_cap, _ttl_ms
from idp.storage.urls import redact_url, url_secrets

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


# Sliding windows: a sorted set of hit times per key, trimmed to the window and to its newest
# `cap` members. One script for every window of a request (one round trip, atomic). KEYS[i] has
# window ARGV[3i-2] (seconds), ARGV[3i-1] (ms, the expiry) and cap ARGV[3i]; ARGV[last] is "now"
# and a unique suffix comes from the member counter so equal times stay distinct members.
_HIT_WINDOWS = """
local n = #KEYS
local now = tonumber(ARGV[3 * n + 1])
local tag = ARGV[3 * n + 2]
local out = {}
for i, key in ipairs(KEYS) do
  local window, window_ms, cap = tonumber(ARGV[3 * i - 2]), ARGV[3 * i - 1], tonumber(ARGV[3 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  redis.call('ZADD', key, now, ARGV[3 * n + 1] .. ':' .. tag .. ':' .. i)
  redis.call('ZREMRANGEBYRANK', key, 0, -(cap + 1))
  out[i] = redis.call('ZCARD', key)
  redis.call('PEXPIRE', key, window_ms)
end
return out
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
        # A pooled connection that Redis dropped (a restart, a timeout on its side) fails once and
        # is retried on a new one, and idle ones are checked before use: a Redis restart costs
        # no request an error. A retried command may have reached Redis the first time: the
        # operations here then err on the safe side (a counter counts twice, a set-if-absent
        # reports the key present).
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
            retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError],
        )
        self._url, self._connect_timeout = url, socket_timeout
        self._hit_windows = self._redis.register_script(_HIT_WINDOWS)

    @property
    def backend_name(self) -> str:
        return "redis"

    @property
    def shared(self) -> bool:
        return True

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

    async def get_many(self, *keys: str) -> list[str | None]:
        if not keys:
            return []
        async with self._guard():
            values = await self._redis.mget([self._k(key) for key in keys])
        return [_text(value) for value in values]

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

    async def hit_windows(self, counters: Sequence[tuple[str, float, int]]) -> list[int]:
        if not counters:
            return []
        args: list[str | int | float] = []
        for _key, window, cap in counters:
            args += [repr(float(window)), _ttl_ms(window), _check_cap(cap)]
        # Wall clock, not monotonic: the times are compared across instances (keep NTP on).
        args += [f"{time.time():.6f}", uuid.uuid4().hex]
        async with self._guard():
            counts = await self._hit_windows(keys=[self._k(key) for key, _window, _cap in counters], args=args)
        return [int(count) for count in counts]

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

    async def count_prefix(self, sub_prefix: str) -> int:
        """SCAN, never KEYS (which blocks the server on a large database)."""
        pattern = _escape_glob(self._k(sub_prefix)) + "*"
        found = 0
        async with self._guard():
            async for _ in self._redis.scan_iter(match=pattern, count=1000):
                found += 1
        return found

    async def publish(self, channel: str, message: str) -> None:
        async with self._guard():
            await self._redis.publish(self._k(channel), message)

    async def listen(self, channel: str, ready: asyncio.Event | None = None) -> AsyncIterator[str]:
        """SUBSCRIBE on a connection of its own, which waits without a read timeout (it may be
        quiet for hours) and is health-checked instead, so a dead server is noticed."""
        client: aioredis.Redis = aioredis.Redis.from_url(
            self._url,
            decode_responses=True,
            socket_connect_timeout=self._connect_timeout,
            health_check_interval=15,
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            async with self._guard():
                await pubsub.subscribe(self._k(channel))
            if ready is not None:
                ready.set()
            while True:
                async with self._guard():
                    found = await pubsub.get_message(timeout=5.0)
                if found is not None and found.get("type") == "message":
                    yield str(found["data"])
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    async def ping(self) -> None:
        async with self._guard():
            await self._redis.ping()

    async def close(self) -> None:
        async with self._guard():
            await self._redis.aclose()
