"""Sliding-window rate limits kept in the key-value store, so all instances share the counters.

A counter keeps only the newest ``requests + 1`` hits (bounded memory, whatever the attack rate),
and all the limits of one request are counted in one round trip.

A limit allows at most ``requests`` hits within any ``window`` seconds. Every attempt is counted,
refused ones included: a client that keeps hammering stays refused until it pauses for a whole
window (NIST SP 800-63B §3.2.2 asks to limit consecutive failed attempts; counting attempts also
limits guesses made with a correct-looking cadence). Keys are hashed, so neither addresses nor
account ids appear in Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from idp.security.tokens import sha256_digest
from idp.storage.kv import KeyValueStore

_PREFIX = "ratelimit:"


class LimitSpec(Protocol):
    requests: int
    window: int


RateLimits = Callable[[dict[str, str | None], str], Awaitable[None]]
"""Counts an attempt against the named limits ({limit: subject}), raising past any of them; the
second argument names what was attempted (idp.web.enforcing)."""


@dataclass(frozen=True)
class RateLimited(Exception):
    """Over the named limit; try again after ``retry_after`` seconds."""

    limit: str
    retry_after: int


class RateLimiter:
    def __init__(self, kv: KeyValueStore, limits: Mapping[str, LimitSpec]) -> None:
        self._kv = kv
        self._limits = dict(limits)

    def limit(self, name: str) -> LimitSpec:
        return self._limits[name]

    def _key(self, name: str, subject: str) -> str:
        return f"{_PREFIX}{name}:{sha256_digest(subject)}"

    async def hit(self, name: str, subject: str) -> None:
        """Count one attempt against ``name`` for ``subject``; raise RateLimited when over it."""
        await self.hit_all({name: subject})

    async def hit_all(self, attempts: Mapping[str, str | None]) -> None:
        """Count one attempt for each ``{limit name: subject}`` (None subjects skipped), all in one
        round trip; every counter is advanced before the first refusal is raised, so no limit can
        be dodged. The refusal carries the longest wait of the limits exceeded."""
        counted = [(name, subject) for name, subject in attempts.items() if subject is not None]
        if not counted:
            return
        # Only the newest requests + 1 hits are kept: enough to tell "over the limit", and a key
        # stays small however fast an attacker hits it.
        counts = await self._kv.hit_windows(
            [
                (self._key(name, subject), self._limits[name].window, self._limits[name].requests + 1)
                for name, subject in counted
            ]
        )
        refused: RateLimited | None = None
        for (name, _subject), count in zip(counted, counts, strict=True):
            spec = self._limits[name]
            # The window slides: after a whole quiet window every earlier hit has aged out.
            if count > spec.requests and (refused is None or spec.window > refused.retry_after):
                refused = RateLimited(name, spec.window)
        if refused is not None:
            raise refused

    async def reset(self, name: str, subject: str) -> None:
        await self._kv.delete(self._key(name, subject))
