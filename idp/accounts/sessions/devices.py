"""The browsers a user signs in from: a readable label for each session, and the devices seen before.

A device is a browser profile, recognised by a long-lived random cookie (only its digest is
stored, per user). A sign-in from a browser without that cookie, or whose cookie this user never
signed in with, is a new device: the user is told by email (configurable), and it does not count
as trusted when the account is locked against unknown browsers (see idp.security.lockout).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import ua_parser

from idp.security.tokens import random_token, sha256_digest
from idp.storage.db import Database
from idp.storage.models import utcnow
from idp.storage.repositories import DeviceRepository
from idp.storage.repositories.outbox import DbSession

DEVICE_COOKIE = "idp_device"
# Browsers cap cookie lifetimes at 400 days (RFC 6265bis §5.5).
DEVICE_COOKIE_MAX_AGE = 400 * 86400
# Devices remembered per user; the least recently seen are forgotten beyond this.
MAX_DEVICES_PER_USER = 50
_MAX_UA = 512

_OS_NAMES = {"Mac OS X": "macOS", "Other": ""}
_BROWSER_NAMES = {"Mobile Safari": "Safari", "Chrome Mobile": "Chrome", "Firefox Mobile": "Firefox", "Other": ""}


@lru_cache(maxsize=1024)
def device_label(user_agent: str | None) -> str:
    """ "Firefox 120 on Windows", "Safari 17 on iOS", or "Unknown browser" (ua-parser's rules)."""
    if not user_agent:
        return "Unknown browser"
    parsed = ua_parser.parse(user_agent[:_MAX_UA]).with_defaults()
    browser = _BROWSER_NAMES.get(parsed.user_agent.family, parsed.user_agent.family)
    if browser and parsed.user_agent.major:
        browser = f"{browser} {parsed.user_agent.major}"
    system = _OS_NAMES.get(parsed.os.family, parsed.os.family)
    if system and parsed.os.family == "Windows" and parsed.os.major:
        system = f"Windows {parsed.os.major}"
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown browser"


def new_device_token() -> str:
    return random_token(32)


def valid_device_token(value: str | None) -> str | None:
    return value if value and 20 <= len(value) <= 100 else None


@dataclass(frozen=True)
class DeviceSeen:
    known: bool  # signed in to this account from this browser before
    first: bool  # the account's first device ever (nothing to compare with: no announcement)
    token: str  # the cookie value to (re)set


async def remember(
    db: Database, user_id: str, token: str | None, *, label: str, ip: str | None, when: datetime | None = None
) -> DeviceSeen:
    """Record a sign-in from this browser; whether it was known, and the cookie value to keep."""
    async with db.session() as session:
        return await remember_in(session, user_id, token, label=label, ip=ip, when=when)


async def remember_in(
    session: DbSession,
    user_id: str,
    token: str | None,
    *,
    label: str,
    ip: str | None,
    when: datetime | None = None,
    known: bool | None = None,
) -> DeviceSeen:
    """:func:`remember` in the caller's unit of work. ``known``: whether the sign-in found the
    device known already (None: not looked up), which spares a statement either way."""
    now = when or utcnow()
    valid = valid_device_token(token)
    token = valid or new_device_token()
    repository = DeviceRepository(session)
    likely_known = valid is not None and known is not False
    seen = await repository.remember(user_id, sha256_digest(token), label=label, ip=ip, now=now, known=likely_known)
    if seen.devices > MAX_DEVICES_PER_USER:
        await repository.forget_least_recent(user_id, keep=MAX_DEVICES_PER_USER)
    return DeviceSeen(known=seen.known, first=seen.first, token=token)
