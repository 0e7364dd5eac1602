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


async def is_known(db: Database, user_id: str, token: str | None) -> bool:
    if not valid_device_token(token):
        return False
    async with db.session() as session:
        return await DeviceRepository(session).is_known(user_id, sha256_digest(str(token)))


async def is_known_to_address(db: Database, email_normalized: str, token: str | None) -> bool:
    """Whether this browser signed in to the account with this (normalised) address before; as
    cheap for an address without an account as for one with."""
    if not token or not email_normalized or len(token) > 100:
        return False
    async with db.session() as session:
        return await DeviceRepository(session).is_known_to_address(email_normalized, sha256_digest(token))


async def remember(
    db: Database, user_id: str, token: str | None, *, label: str, ip: str | None, when: datetime | None = None
) -> DeviceSeen:
    """Record a sign-in from this browser; whether it was known, and the cookie value to keep."""
    now = when or utcnow()
    token = valid_device_token(token) or new_device_token()
    async with db.session() as session:
        seen = await DeviceRepository(session).remember(user_id, sha256_digest(token), label=label, ip=ip, now=now)
    if not seen.known:
        async with db.session() as session:
            await DeviceRepository(session).forget_least_recent(user_id, keep=MAX_DEVICES_PER_USER)
    return DeviceSeen(known=seen.known, first=seen.first, token=token)
