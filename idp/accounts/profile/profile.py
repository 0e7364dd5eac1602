"""The user's own profile: reading and editing the profile claims, changing the email address,
the activity trail and the export of everything held about the account.

Plain arguments in, values or ``AccountError(field, message)`` out; the account API
(``idp.accounts.api``) and the account pages (``idp.accounts.profile.pages``) translate. Every
input is validated before anything is written, so a refused request changes nothing.

An address change never takes effect on request: a single-use link goes to the new address and
the change happens when it is confirmed (ASVS 6.3.7 wants the user notified of such changes; the
old address is not mailed yet because there is no template for it). Asking for an address that
belongs to another account answers, stores and records exactly what a free address does, and
mails nobody, so the answer reveals nothing about other accounts (ASVS 6.3.8).
"""

from __future__ import annotations

import functools
import re
import unicodedata
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from idp.accounts import links
from idp.accounts.context import AccountContext
from idp.accounts.users import AccountError, check_email, normalize_email
from idp.events import EmailChanged, EmailChangeRequested, EventBus, ProfileUpdated
from idp.storage.db import Database
from idp.storage.models import AuditEvent, User, utcnow
from idp.storage.repositories import (
    ActivityRepository,
    AlreadyTaken,
    ExportRepository,
    LinkRepository,
    UserRepository,
)

# Where the emailed confirmation link points (the browser page that calls confirm_email_change).
EMAIL_CHANGE_PATH = "/account/email/confirm"
# The name the export (export_account) is downloaded under, from the account page and the API.
EXPORT_FILENAME = "idp-account-export.json"

# Editable profile claims (OIDC Core §5.1) and their maximum lengths, in characters; the columns
# of ``users`` have the same sizes.
TEXT_LIMITS: dict[str, int] = {"name": 200, "given_name": 100, "family_name": 100, "preferred_username": 100}
LOCALE_MAX_LENGTH = 35
EDITABLE_FIELDS: tuple[str, ...] = (*TEXT_LIMITS, "locale", "zoneinfo")
READ_ONLY_FIELDS: dict[str, str] = {
    "sub": "is the account identifier and cannot be changed",
    "email": "is changed through POST /api/account/email (the new address must be confirmed)",
    "email_verified": "is set by confirming the address",
    "pending_email": "is set by POST /api/account/email",
    "picture": "cannot be changed through this API",
    "updated_at": "is set by the server",
}
# BCP 47-ish (RFC 5646 §2.1 without its finer rules): a language subtag and optional subtags.
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
# Line breaks and other control characters have no place in a name; invisible format characters
# (bidi overrides, zero-width spaces) additionally make a username spoofable, so it refuses them.
_CONTROL = frozenset({"Cc", "Zl", "Zp"})
_USERNAME_INVISIBLE = frozenset({"Cf"})
# Entries of the zone database that are not places a person lives in.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})

ACTIVITY_DEFAULT_LIMIT = 20
ACTIVITY_MAX_LIMIT = 100
_MAX_AUDIT_ID = 2**63 - 1  # BIGINT
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: int() would also take "١٢", "1_0", " 5", "+5"


@functools.cache
def time_zones() -> frozenset[str]:
    """IANA zone names; the first call reads the zone database (~30 ms of disk: call it off the loop)."""
    return frozenset(zoneinfo.available_timezones() - _NOT_ZONES)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 UTC timestamp, second precision."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def picture_url(value: str, base_url: str) -> str:
    """The `picture` claim is a URL (OIDC Core §5.1): an absolute http(s) URL as stored, anything
    else the name of a picture served under ``base_url``. Must match idp.oauth.claims.picture_url
    (accounts may not import oauth; userinfo and this API release the same value)."""
    try:
        absolute = urlsplit(value).scheme.lower() in ("http", "https")
    except ValueError:
        absolute = False
    return value if absolute else f"{base_url}/{quote(value, safe='')}"


# -- reading --------------------------------------------------------------------------------------


async def pending_email(db: Database, user_id: str) -> str | None:
    """The address of an unconfirmed, unexpired email change, if any (only the newest link works)."""
    async with db.session() as session:
        return await LinkRepository(session).newest_usable_email(user_id, links.CHANGE_EMAIL, utcnow())


def profile_view(
    user: User, *, subject: str, include_email: bool, pending: str | None, picture_base_url: str
) -> dict[str, Any]:
    """The profile as the account API shows it: the OIDC claim names, empty claims as null,
    ``updated_at`` in seconds since the epoch (OIDC Core §5.1). Email members only with ``include_email``."""
    view: dict[str, Any] = {"sub": subject}
    if include_email:
        view["email"] = user.email
        view["email_verified"] = bool(user.email_verified)
    for field in EDITABLE_FIELDS:
        view[field] = getattr(user, field)
    view["picture"] = picture_url(user.picture, picture_base_url) if user.picture else None
    view["updated_at"] = int(user.updated_at.timestamp())
    if include_email:
        view["pending_email"] = pending
    return view


# -- editing the profile --------------------------------------------------------------------------


def field_label(name: str) -> str:
    """A member name from the request, safe to echo (bounded, printable)."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in name[:64])
    return printable + ("…" if len(name) > 64 else "")


def _clean_text(field: str, value: str) -> str | None:
    text = unicodedata.normalize("NFC", value).strip()
    if not text:
        return None
    refused = _CONTROL | (_USERNAME_INVISIBLE if field == "preferred_username" else frozenset())
    if any(unicodedata.category(ch) in refused for ch in text):
        what = "control or invisible characters" if field == "preferred_username" else "control characters"
        raise AccountError(field, f"must not contain {what}")
    return text


def check_profile_update(changes: Any) -> dict[str, str | None]:
    """Validate a PATCH body (a decoded JSON object); returns the new values, None meaning cleared.

    A string that is empty (after trimming) or null clears the claim. Raises AccountError naming
    the first member at fault: unknown or read-only member, wrong type, too long, bad format.
    """
    if not isinstance(changes, dict):
        raise AccountError("body", "must be a JSON object")
    for key in changes:
        if key in READ_ONLY_FIELDS:
            raise AccountError(key, READ_ONLY_FIELDS[key])
        if key not in EDITABLE_FIELDS:
            raise AccountError(field_label(key), "is not a profile field")
    result: dict[str, str | None] = {}
    for field, value in changes.items():
        if value is None:
            result[field] = None
            continue
        if not isinstance(value, str):
            raise AccountError(field, "must be a string or null")
        text = _clean_text(field, value)
        if text is not None:
            if field in TEXT_LIMITS and len(text) > TEXT_LIMITS[field]:
                raise AccountError(field, f"must be at most {TEXT_LIMITS[field]} characters")
            if field == "locale" and (len(text) > LOCALE_MAX_LENGTH or not _LOCALE.fullmatch(text)):
                raise AccountError(field, "must be a BCP 47 language tag such as en or fr-CA")
            if field == "zoneinfo" and text not in time_zones():
                raise AccountError(field, "must be an IANA time zone name such as Europe/Paris")
        result[field] = text
    return result


async def update_profile(
    db: Database, events: EventBus, user_id: str, changes: Mapping[str, str | None], *, client_id: str | None = None
) -> User:
    """Apply validated changes (from check_profile_update); announces the fields that changed and
    the application (``client_id``) that changed them."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise AccountError(sorted(unknown)[0], "is not a profile field")
    async with db.session() as session:
        user = await UserRepository(session).get(user_id)
        if user is None:
            raise AccountError("user", "the account no longer exists")
        changed = tuple(
            field for field in EDITABLE_FIELDS if field in changes and getattr(user, field) != changes[field]
        )
        for field in changed:
            setattr(user, field, changes[field])
    if changed:
        await events.publish(ProfileUpdated(user_id=user_id, fields=changed, client=client_id))
    return user


# -- changing the email address ------------------------------------------------------------------


async def request_email_change(
    ctx: AccountContext, user_id: str, new_email: str, *, client_id: str | None = None
) -> None:
    """Mail a confirmation link to ``new_email``; nothing changes until it is confirmed.

    Raises AccountError("email", …) for a malformed address or the account's own address. An
    address held by another account is handled like a free one (the same link row, the same
    event) except that no mail is sent, so neither the answer nor the account's later state
    (``pending_email``) tells the caller the address is taken.
    """
    address = check_email(new_email)
    normalized = normalize_email(address)
    async with ctx.db.session() as session:
        users = UserRepository(session)
        user = await users.get(user_id)
        if user is None or user.disabled:
            raise AccountError("user", "the account is not available")
        if user.email_normalized == normalized:
            raise AccountError("email", "is already the address of this account")
        owner = await users.get_by_email_normalized(normalized)
    async with ctx.db.session() as session:  # the link and its mail commit together
        token = await links.issue(
            ctx.db,
            purpose=links.CHANGE_EMAIL,
            user_id=user_id,
            ttl=ctx.settings.verification_ttl,
            email=address,
            session=session,
        )
        if owner is None:
            link = ctx.link(EMAIL_CHANGE_PATH, token=token)
            await ctx.send("email_change_verify", address, session=session, link=link, new_email=address)
    await ctx.events.publish(EmailChangeRequested(user_id=user_id, client=client_id))


async def peek_email_change(ctx: AccountContext, token: str | None) -> str | None:
    """The new address a valid, unused link would set (for a confirmation page; uses nothing up)."""
    row = await links.peek(ctx.db, links.CHANGE_EMAIL, token)
    return row.email if row is not None else None


async def confirm_email_change(ctx: AccountContext, token: str | None) -> str | None:
    """Use an email-change link: returns the user id whose address changed, or None when the link
    is invalid, expired or used, the account is gone or disabled, or the address was taken by
    another account since the link was sent (the link is used up in every case).

    The address becomes verified (following the link proved control of the mailbox). Unused
    verification and password-reset links are cancelled: they were sent to the old address.
    """
    row = await links.consume(ctx.db, links.CHANGE_EMAIL, token)
    if row is None or not row.email:
        return None
    address = row.email
    normalized = normalize_email(address)
    try:
        async with ctx.db.session() as session:
            users = UserRepository(session)
            user = await users.get(row.user_id)
            if user is None or user.disabled:
                return None
            old_address = user.email
            owner = await users.get_by_email_normalized(normalized)
            if owner is not None and owner.id != user.id:
                return None  # registered or changed to by someone else since the link was sent
            await users.set_verified_email(user, address, normalized)
            await LinkRepository(session).cancel_unused(user.id, (links.VERIFY_EMAIL, links.RESET_PASSWORD))
            # ASVS 6.3.7: the old address hears of the change (it can no longer receive a reset
            # link); queued with the change itself.
            await ctx.send(
                "email_changed",
                old_address,
                session=session,
                new_email=address,
                time=utcnow().strftime("%Y-%m-%d %H:%M UTC"),
                reset_link=ctx.link("/forgot-password"),
            )
    except AlreadyTaken:
        # The unique index on email_normalized settles a race with a concurrent registration.
        return None
    await ctx.events.publish(EmailChanged(user_id=row.user_id))
    return row.user_id


# -- activity -------------------------------------------------------------------------------------


def parse_activity_query(limit: str | None, before: str | None) -> tuple[int, int | None]:
    """``limit`` (1 to 100, default 20) and the ``before`` cursor (an event id) from a query string."""
    count = ACTIVITY_DEFAULT_LIMIT
    if limit is not None:
        if not _DIGITS.fullmatch(limit) or not 1 <= int(limit) <= ACTIVITY_MAX_LIMIT:
            raise AccountError("limit", f"must be an integer from 1 to {ACTIVITY_MAX_LIMIT}")
        count = int(limit)
    cursor = None
    if before is not None:
        if not _DIGITS.fullmatch(before) or not 1 <= int(before) <= _MAX_AUDIT_ID:
            raise AccountError("before", "must be the id of an event (a positive integer)")
        cursor = int(before)
    return count, cursor


def audit_view(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "event": event.event,
        "outcome": event.outcome,
        "occurred_at": iso(event.occurred_at),
        "ip": event.ip,
        "user_agent": event.user_agent,
        "client_id": event.client_id,
        "details": dict(event.details or {}),
    }


@dataclass(frozen=True)
class ActivityPage:
    items: list[dict[str, Any]]
    next: int | None  # pass as ``before`` for the following page


async def activity(db: Database, user_id: str, *, limit: int, before: int | None = None) -> ActivityPage:
    """The user's own audit events, newest first, ``limit`` at a time (ids only grow)."""
    async with db.session() as session:
        page, more = await ActivityRepository(session).page(user_id, limit=limit, before=before)
    return ActivityPage([audit_view(row) for row in page], page[-1].id if more else None)


# -- export ---------------------------------------------------------------------------------------


async def export_account(
    db: Database,
    user_id: str,
    *,
    picture_base_url: str,
    sessions: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Everything stored about the account, for the user to keep (GDPR Art. 15 and 20).

    Never credentials or what stands in for them: no password hash, MFA secrets or keys, recovery
    code hashes, token values, digests or ids, nor session cookies or device-cookie digests.
    ``sessions`` are the user's live browser sessions as the sessions page shows them (they live
    in the key-value store, which the caller reads). Authorization codes (minutes-long) are not
    included.
    """
    async with db.session() as session:
        records = await ExportRepository(session).records_of(user_id)
    if records is None:
        return None
    user = records.user
    pending = await pending_email(db, user_id)
    return {
        "format": "idp-account-export/1",
        "exported_at": iso(utcnow()),
        "profile": {
            "id": user.id,
            "email": user.email,
            "email_verified": bool(user.email_verified),
            "pending_email": pending,
            **{field: getattr(user, field) for field in EDITABLE_FIELDS},
            "picture": picture_url(user.picture, picture_base_url) if user.picture else None,
            "has_password": user.password_hash is not None,
            "is_admin": bool(user.is_admin),
            "disabled": bool(user.disabled),
            "created_at": iso(user.created_at),
            "updated_at": iso(user.updated_at),
            "password_changed_at": iso(user.password_changed_at),
            "last_login_at": iso(user.last_login_at),
        },
        "consents": [
            {
                "client_id": consent.client_id,
                "client_name": client_name,
                "scopes": list(consent.scopes),
                "created_at": iso(consent.created_at),
                "updated_at": iso(consent.updated_at),
            }
            for consent, client_name in records.consents
        ],
        "mfa_credentials": [
            {
                "type": credential.type,
                "name": credential.name,
                "created_at": iso(credential.created_at),
                "confirmed_at": iso(credential.confirmed_at),
                "last_used_at": iso(credential.last_used_at),
            }
            for credential in records.mfa_credentials
        ],
        "recovery_codes": {"total": records.recovery_codes_total, "unused": records.recovery_codes_unused},
        "refresh_tokens": [
            {
                "client_id": token.client_id,
                "client_name": client_name,
                "scope": token.scope,
                "issued_at": iso(token.issued_at),
                "expires_at": iso(token.expires_at),
                "used_at": iso(token.used_at),
                "revoked_at": iso(token.revoked_at),
            }
            for token, client_name in records.refresh_tokens
        ],
        "sessions": list(sessions or []),
        "known_devices": [
            {
                "device": device.label,
                "first_seen_at": iso(device.first_seen_at),
                "last_seen_at": iso(device.last_seen_at),
                "last_ip": device.last_ip,
            }
            for device in records.known_devices
        ],
        "audit_events": [audit_view(event) for event in records.audit_events],
    }
