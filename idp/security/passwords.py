"""Password hashing with argon2id (OWASP parameters from configuration; ASVS 11.4.2)."""

from __future__ import annotations

import asyncio
from typing import Protocol

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


class PasswordHasher:
    """argon2id hashing run off the event loop (each hash costs tens of milliseconds of CPU)."""

    def __init__(self, settings: Argon2Parameters) -> None:
        self._hasher = _Argon2Hasher(
            time_cost=settings.time_cost,
            memory_cost=settings.memory_cost_kib,
            parallelism=settings.parallelism,
            type=Type.ID,
        )
        # Verified against when the account doesn't exist, so unknown users cost the same time.
        self._dummy_hash = self._hasher.hash("idp-timing-equaliser")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        target = stored_hash or self._dummy_hash
        try:
            ok = await asyncio.to_thread(self._hasher.verify, target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return bool(ok) and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)
