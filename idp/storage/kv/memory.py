"""The in-process backend: a dict of the running process, for a single node."""

from __future__ import annotations

import asyncio
import builtins
import collections
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, cast

from idp.storage.kv.base import KeyValueError, KeyValueStore, KeyValueUnavailable, _check_cap, _ttl_ms

_Value = str | set[str] | collections.deque[float]
# Messages a listener may have waiting before further ones are dropped for it.
_LISTENER_BACKLOG = 10_000


def _kind_name(kind: type) -> str:
    """Human name of a stored value type, for WRONGTYPE messages."""
    if issubclass(kind, str):
        return "string"
    if issubclass(kind, set):
        return "set"
    return "sliding window"


class Relay(Protocol):
    """Carries what a store publishes to the other processes on the same database, and theirs to
    the store's listeners (``MemoryStore.deliver``): idp.storage.announcements."""

    @property
    def hearing(self) -> bool:
        """Whether the other processes' messages arrive now."""
        ...

    def send(self, channel_key: str, message: str) -> None:
        """Pass a message on (without waiting for it to be written)."""
        ...


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
        self._listeners: dict[str, set[asyncio.Queue[str | None]]] = {}
        # Set by idp.storage.announcements: what is published here reaches the other processes.
        self.relay: Relay | None = None

    @property
    def backend_name(self) -> str:
        return "memory"

    @property
    def shared(self) -> bool:
        return self.relay is not None

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

    async def get_many(self, *keys: str) -> list[str | None]:
        entries = [self._live(self._k(key)) for key in keys]
        return [entry.value if entry is not None and isinstance(entry.value, str) else None for entry in entries]

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

    async def hit_windows(self, counters: Sequence[tuple[str, float, int]]) -> list[int]:
        checked = [(key, window, _ttl_ms(window), _check_cap(cap)) for key, window, cap in counters]
        now = self._clock()
        counts = []
        for key, window, window_ms, cap in checked:
            full = self._k(key)
            entry = self._typed(full, collections.deque)
            if entry is None:
                entry = _Entry(collections.deque())
                self._data[full] = entry
            hits = cast("collections.deque[float]", entry.value)  # _typed checked the type
            cutoff = now - window
            while hits and hits[0] <= cutoff:
                hits.popleft()
            hits.append(now)
            while len(hits) > cap:  # only the newest `cap` are kept
                hits.popleft()
            entry.expires_at = now + window_ms / 1000
            counts.append(len(hits))
        self._wrote()
        return counts

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

    async def count_prefix(self, sub_prefix: str) -> int:
        start, now = self._k(sub_prefix), self._clock()
        return sum(
            1
            for k, entry in self._data.items()
            if k.startswith(start) and (entry.expires_at is None or entry.expires_at > now)
        )

    async def publish(self, channel: str, message: str) -> None:
        key = self._k(channel)
        self.deliver(key, message)
        if self.relay is not None:
            self.relay.send(key, message)

    def deliver(self, channel_key: str, message: str) -> None:
        """Hand a message to this process' listeners of a (prefixed) channel."""
        for queue in list(self._listeners.get(channel_key, ())):
            if queue.qsize() < _LISTENER_BACKLOG:  # a listener that stopped reading loses messages, not memory
                queue.put_nowait(message)

    def interrupt(self) -> None:
        """The other processes' messages stopped arriving (the relay's reads fail): every listener
        ends with KeyValueUnavailable, as a subscription to Redis does when Redis goes away."""
        for listeners in self._listeners.values():
            for queue in listeners:
                queue.put_nowait(None)

    async def listen(self, channel: str, ready: asyncio.Event | None = None) -> AsyncIterator[str]:
        if self.relay is not None and not self.relay.hearing:
            raise KeyValueUnavailable("messages from other processes are not arriving")
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        listeners = self._listeners.setdefault(self._k(channel), set())
        listeners.add(queue)
        if ready is not None:
            ready.set()
        try:
            while True:
                message = await queue.get()
                if message is None:
                    raise KeyValueUnavailable("messages from other processes stopped arriving")
                yield message
        finally:
            listeners.discard(queue)

    async def ping(self) -> None:
        """The process' own memory is always reachable."""

    async def close(self) -> None:
        self._data.clear()
