"""Password hashing with argon2id (OWASP parameters from configuration; ASVS 11.4.2)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from argon2 import PasswordHasher as _Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Argon2Parameters(Protocol):
    """The argon2id cost parameters ([password_hash] in the configuration: idp.config)."""

    @property
    def time_cost(self) -> int: ...

    @property
    def memory_cost_kib(self) -> int: ...

    @property
    def parallelism(self) -> int: ...


T = TypeVar("T")

# The nice value of the hashing threads (Linux keeps one per thread): when a burst of sign-ins
# would take every core, the event loops (nice 0) still get theirs first, so the token endpoint
# and everything else keep answering; idle cores still go to the hashes.
HASH_THREAD_NICENESS = 10


class HashPoolBusy(Exception):
    """More password hashes are waiting than the pool's queue allows: the request is answered 503
    with Retry-After instead of waiting in a queue that grows without bound."""


def _lower_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):  # not Linux: the threads keep the default
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


class PasswordHasher:
    """argon2id hashing run off the event loop (each hash costs tens of milliseconds of CPU), in a
    pool of ``threads`` low-priority threads of its own with at most ``queue_limit`` hashes waiting
    beyond them (HashPoolBusy past that)."""

    def __init__(self, settings: Argon2Parameters, *, threads: int | None = None, queue_limit: int = 1024) -> None:
        self._hasher = _Argon2Hasher(
            time_cost=settings.time_cost,
            memory_cost=settings.memory_cost_kib,
            parallelism=settings.parallelism,
            type=Type.ID,
        )
        # Verified against when the account doesn't exist, so unknown users cost the same time.
        self._dummy_hash = self._hasher.hash("idp-timing-equaliser")
        self.threads = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="argon2", initializer=_lower_priority)
        self._admitted = self.threads + queue_limit
        self.in_flight = 0

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        if self.in_flight >= self._admitted:
            raise HashPoolBusy()
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)
        finally:
            self.in_flight -= 1

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        target = stored_hash or self._dummy_hash
        try:
            ok = await self._run(self._hasher.verify, target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return bool(ok) and stored_hash is not None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)
