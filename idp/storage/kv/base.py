"""The key-value interface both backends implement, and its errors."""

from __future__ import annotations

import abc
import asyncio
import builtins
import math
from collections.abc import AsyncIterator, Sequence


class KeyValueError(Exception):
    """A key-value operation failed (wrong type for the key, not an integer, server refusal...)."""


class KeyValueUnavailable(KeyValueError):
    """The backend cannot be reached; callers may fail closed or degrade, but must not crash oddly."""


# The most hits a sliding window keeps when its caller names no threshold.
DEFAULT_WINDOW_CAP = 10_000


def _check_cap(cap: int) -> int:
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"cap must be a positive integer, got {cap!r}")
    return cap


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

    @property
    def shared(self) -> bool:
        """Whether what this process publishes reaches every other process using this state (the
        command line beside a server among them), so that caches kept in memory may trust their
        channel. Redis: always; the in-process store: through the database's announcements relay."""
        return False

    @abc.abstractmethod
    async def get(self, key: str) -> str | None:
        """The value of ``key``, or None when it is missing or expired."""

    @abc.abstractmethod
    async def get_many(self, *keys: str) -> list[str | None]:
        """The values of ``keys`` in order, in one round trip (Redis MGET): None for a key that is
        missing, expired or not a string (MGET answers nil for other types rather than an error)."""

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

    async def hit_window(self, key: str, window: float, *, cap: int = DEFAULT_WINDOW_CAP) -> int:
        """Record one hit now; return the hits within the last ``window`` seconds, this one
        included, counted up to ``cap``: only the newest ``cap`` hits are kept, so a key stays small
        however fast it is hit (callers compare the count with a threshold no larger than ``cap``).

        A sliding window does not allow the 2x burst a fixed window allows at its boundary.
        """
        (count,) = await self.hit_windows([(key, window, cap)])
        return count

    @abc.abstractmethod
    async def hit_windows(self, counters: Sequence[tuple[str, float, int]]) -> list[int]:
        """:meth:`hit_window` for each ``(key, window, cap)``, in one round trip; the counts in order."""

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
    async def count_prefix(self, sub_prefix: str) -> int:
        """How many live keys are under ``prefix + sub_prefix`` (an administrator's count: it
        walks the keys, so never on a request path that users take)."""

    # -- publish / subscribe ---------------------------------------------------------------------

    @abc.abstractmethod
    async def publish(self, channel: str, message: str) -> None:
        """Send ``message`` to every current listener of ``channel`` (of every process sharing the
        backend). At most once: a listener that is not connected at that moment misses it."""

    @abc.abstractmethod
    def listen(self, channel: str, ready: asyncio.Event | None = None) -> AsyncIterator[str]:
        """The messages published to ``channel`` from now on (``ready`` is set once subscribed),
        until the iterator is closed; raises KeyValueUnavailable when the backend goes away."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`KeyValueUnavailable` when the backend cannot be reached (readiness probes)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store must not be used afterwards."""

    def _k(self, key: str) -> str:
        return self.prefix + key
