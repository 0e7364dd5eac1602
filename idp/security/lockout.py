"""Brute-force protection for password sign-in (ASVS 6.3.1, NIST SP 800-63B §3.2.2), and for a
signed-in user's password re-checks, which count as sign-in attempts (idp.accounts.signin.password).

Failures are tracked per account *and client IP*, and per account across all IPs, in the
key-value store (so every instance sees them):

- from one IP, after ``delay_after`` failures on one account each further attempt must wait
  (1 s, 2 s, 4 s … up to ``max_delay``), and after ``lock_after`` failures that IP may not try the
  account for ``lock_duration``. An attacker at one address locks out only that address: the
  owner elsewhere is unaffected.
- across all IPs, after ``account_lock_after`` failures the account is locked for browsers it has
  never signed in from (``trusted_device=False``) for ``lock_duration``; a browser that signed in
  to the account before keeps working, so a distributed attack can't lock the owner out either.
- one IP failing on many accounts (credential stuffing) is throttled after
  ``ip_failures`` failures within ``window``, whatever the accounts.

Accounts are keyed by their normalised email address, whether or not such an account exists, so a
lockout answer says nothing about which addresses have accounts. Keys are hashed: neither
addresses nor IPs appear in the store. An administrator (or a completed password reset) unlocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from idp.security.tokens import sha256_digest
from idp.storage.kv import KeyValueStore

_PREFIX = "lockout:"

Scope = Literal["account_ip", "account", "ip"]


class LockoutSpec(Protocol):
    window: int
    delay_after: int
    max_delay: int
    lock_after: int
    account_lock_after: int
    lock_duration: int
    ip_failures: int


@dataclass(frozen=True)
class LockedOut(Exception):
    """Sign-in refused before the password is checked; ``retry_after`` seconds to wait.

    ``scope``: ``"account_ip"`` (this IP, this account), ``"account"`` (this account, from
    unknown browsers), ``"ip"`` (this IP, any account) or ``"delay"`` (a progressive delay)."""

    scope: str
    retry_after: int


@dataclass(frozen=True)
class Engaged:
    """A lock that a failure just switched on (for the notification and the audit log)."""

    scope: Scope
    duration: int


class LoginGuard:
    def __init__(self, kv: KeyValueStore, spec: LockoutSpec, *, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self.spec = spec
        self.clock = clock

    # -- keys ------------------------------------------------------------------------------------

    @staticmethod
    def _account(account: str) -> str:
        return f"{_PREFIX}{sha256_digest(account.casefold())}:"

    def _pair(self, account: str, ip: str) -> str:
        return f"{self._account(account)}ip:{sha256_digest(ip)}:"

    @staticmethod
    def _ip(ip: str) -> str:
        return f"{_PREFIX}ip:{sha256_digest(ip)}:"

    async def _remaining(self, key: str) -> int:
        """Seconds until the deadline stored at ``key`` (0 when there is none or it passed)."""
        return self._seconds_until(await self._kv.get(key))

    def _seconds_until(self, deadline: str | None) -> int:
        if deadline is None:
            return 0
        try:
            return max(0, int(float(deadline) - self.clock() + 0.999))
        except ValueError:
            return 0

    async def _set_deadline(self, key: str, seconds: int) -> None:
        await self._kv.set(key, f"{self.clock() + seconds:.3f}", ttl=seconds)

    # -- the sign-in steps -----------------------------------------------------------------------

    async def check(self, account: str, ip: str, *, trusted_device: bool) -> None:
        """Raise :class:`LockedOut` when this attempt may not be made now."""
        pair = self._pair(account, ip)
        locks = [(self._ip(ip) + "lock", "ip"), (pair + "lock", "account_ip"), (pair + "delay", "delay")]
        if not trusted_device:
            locks.append((self._account(account) + "lock", "account"))
        # Every deadline in one round trip, the first that holds (in this order) answering.
        deadlines = await self._kv.get_many(*(key for key, _scope in locks))
        for (_key, scope), deadline in zip(locks, deadlines, strict=True):
            if wait := self._seconds_until(deadline):
                raise LockedOut(scope, wait)

    async def failed(self, account: str, ip: str) -> list[Engaged]:
        """Count a failed attempt; the locks this failure switched on."""
        spec = self.spec
        pair, account_key, ip_key = self._pair(account, ip), self._account(account), self._ip(ip)
        engaged: list[Engaged] = []
        # The three failure counts in one round trip, each kept only up to its threshold.
        pair_failures, account_failures, ip_failures = await self._kv.hit_windows(
            [
                (pair + "fail", spec.window, max(spec.lock_after, spec.delay_after)),
                (account_key + "fail", spec.window, spec.account_lock_after),
                (ip_key + "fail", spec.window, spec.ip_failures),
            ]
        )
        if pair_failures >= spec.lock_after:
            if not await self._remaining(pair + "lock"):
                await self._set_deadline(pair + "lock", spec.lock_duration)
                engaged.append(Engaged("account_ip", spec.lock_duration))
        elif pair_failures >= spec.delay_after:
            delay = min(spec.max_delay, 2 ** (pair_failures - spec.delay_after))
            await self._set_deadline(pair + "delay", delay)
        if account_failures >= spec.account_lock_after:
            if not await self._remaining(account_key + "lock"):
                await self._set_deadline(account_key + "lock", spec.lock_duration)
                engaged.append(Engaged("account", spec.lock_duration))
        if ip_failures >= spec.ip_failures:
            if not await self._remaining(ip_key + "lock"):
                await self._set_deadline(ip_key + "lock", spec.window)
                engaged.append(Engaged("ip", spec.window))
        return engaged

    async def succeeded(self, account: str, ip: str) -> None:
        """A correct password from this IP clears its failures on the account (not the account's
        overall count, which an attacker elsewhere may still be raising)."""
        pair = self._pair(account, ip)
        await self._kv.delete(pair + "fail", pair + "delay", pair + "lock")

    # -- administration --------------------------------------------------------------------------

    async def locked_for(self, account: str) -> int:
        """Seconds the account-wide lock still holds (0: not locked)."""
        return await self._remaining(self._account(account) + "lock")

    async def unlock(self, account: str) -> int:
        """Clear every failure count, delay and lock of the account, from every IP."""
        return await self._kv.delete_prefix(self._account(account))
