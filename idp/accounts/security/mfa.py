"""Second factors: TOTP (RFC 6238) and recovery codes — the domain layer, no HTTP.

What the callers (the login step, the account pages) must do themselves, because only they know
the request:

- re-authenticate the user (password and, when TOTP is already on, a current code) before
  ``start_totp_enrolment``, ``regenerate_recovery_codes`` and ``disable_totp`` (ASVS 7.5.1);
- rate-limit ``verify_totp`` and ``use_recovery_code`` per account: a 6-digit code accepted in a
  3-step window falls to guessing without a limit (NIST SP 800-63B §3.2.2);
- record failed attempts (ASVS 16.3.1); successful recovery-code use is published here.

Choices made here:

- One TOTP per user. While a confirmed one exists, a new enrolment is refused: the user disables
  the old one first (which the caller guards with password + current code), so a stolen session
  alone can't swap the authenticator. Starting again replaces an unconfirmed enrolment.
- Time is the server's only (ASVS 6.5.8); 30-second steps (ASVS 6.5.5), one step of drift either
  way. The accepted step is stored with a conditional UPDATE, so a code — or any code of an
  earlier step — works once even under concurrent requests (ASVS 6.5.1, RFC 6238 §5.2).
- The seed is 160 bits from the CSPRNG (RFC 4226 §4 recommends 160; ASVS 6.5.3), stored
  AES-GCM-encrypted with the credential id as associated data, so it can't be moved to another row.
- Recovery codes: 10 characters of Crockford's base32 from ``secrets`` (50 bits each, ASVS 6.5.3/
  6.5.4), shown once, stored as argon2id hashes (ASVS 6.5.2: under 112 bits needs a password
  hash), single use by a conditional UPDATE.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import pyotp
import segno

from idp.accounts.users import AccountError
from idp.events import EventBus, MfaDisabled, MfaEnabled, RecoveryCodesRegenerated, RecoveryCodeUsed
from idp.security.encryption import Encryptor
from idp.security.passwords import PasswordHasher
from idp.storage.db import Database
from idp.storage.models import MfaCredential, User, new_id, utcnow
from idp.storage.repositories import MfaRepository, RecoveryCodeRepository, UserRepository
from idp.storage.repositories.mfa import TOTP

TOTP_DIGITS = 6
TOTP_INTERVAL = 30  # seconds (ASVS 6.5.5: a TOTP lives at most 30 s)
TOTP_WINDOW = 1  # steps accepted either side of the server's, for clock drift and typing time
TOTP_SECRET_LENGTH = 32  # base32 characters = 160 bits

RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_LENGTH = 10  # 10 characters of 5 bits = 50 bits
# Crockford's base32 (no i, l, o, u): easy to read aloud and to type from paper.
_RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# Crockford's decoding of look-alikes, so a code read off paper still matches.
_RECOVERY_LOOKALIKES = str.maketrans({"i": "1", "l": "1", "o": "0"})

_WRONG_CODE = "That code is not correct. Check your authenticator app's clock and enter the current code."


@dataclass(frozen=True)
class TotpEnrolment:
    """What the enrolment page shows once: the secret (for manual entry) and the otpauth:// URI
    (for the QR code). Neither can be retrieved again."""

    credential_id: str
    secret: str
    provisioning_uri: str


# -- helpers --------------------------------------------------------------------------------


def _server_now(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _time_step(now: datetime) -> int:
    return int(now.timestamp()) // TOTP_INTERVAL


def _clean_totp_code(code: str) -> str | None:
    """The code without spaces (apps show "123 456"), or None unless it is 6 ASCII digits."""
    clean = "".join(code.split())
    if len(clean) != TOTP_DIGITS or not clean.isascii() or not clean.isdigit():
        return None
    return clean


def _matching_step(secret: str, code: str | None, now: datetime) -> int | None:
    """The newest time step within the window whose code is ``code``; None if none is."""
    if code is None:
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL)
    current = _time_step(now)
    found: int | None = None
    # Every step is compared (in constant time) so the answer takes the same time either way.
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def _associated_data(credential_id: str) -> bytes:
    return credential_id.encode()


def _decrypt_secret(encryptor: Encryptor, credential: MfaCredential) -> str:
    if credential.secret_encrypted is None:
        raise ValueError("TOTP credential without a secret")
    return encryptor.decrypt(credential.secret_encrypted, _associated_data(credential.id)).decode()


def normalize_recovery_code(code: str) -> str:
    """Lower-case, without spaces or dashes, look-alike letters read as digits."""
    return "".join(char for char in code.lower() if char not in " -\t\r\n").translate(_RECOVERY_LOOKALIKES)


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


async def _new_recovery_codes(hasher: PasswordHasher) -> tuple[list[str], list[str]]:
    """Fresh codes (as shown to the user) and their argon2id hashes (of the normalised form)."""
    codes: list[str] = []
    while len(codes) < RECOVERY_CODE_COUNT:
        code = _new_recovery_code()
        if code not in codes:
            codes.append(code)
    hashes = await asyncio.gather(*(hasher.hash(normalize_recovery_code(code)) for code in codes))
    return codes, list(hashes)


async def _lock_user(users: UserRepository, user_id: str) -> None:
    """Serialise MFA changes of one user (PostgreSQL row lock; SQLite has one writer anyway)."""
    if not await users.lock(user_id):
        raise AccountError("user", "This account no longer exists.")


# -- TOTP enrolment -------------------------------------------------------------------------


async def start_totp_enrolment(
    db: Database, encryptor: Encryptor, user_id: str, *, issuer_name: str, account_name: str
) -> TotpEnrolment:
    """Create an unconfirmed TOTP credential and return its secret, once.

    Replaces an earlier unconfirmed enrolment. Raises AccountError("totp", …) when the user
    already has a confirmed TOTP (disable it first). The caller re-authenticates the user first.
    """
    secret = pyotp.random_base32(TOTP_SECRET_LENGTH)
    async with db.session() as session:
        await _lock_user(UserRepository(session), user_id)
        credentials = MfaRepository(session)
        if await credentials.confirmed_totp(user_id) is not None:
            raise AccountError("totp", "An authenticator app is already set up. Remove it before adding another.")
        credential_id = new_id()
        await credentials.replace_pending_totp(
            MfaCredential(
                id=credential_id,
                user_id=user_id,
                type=TOTP,
                name="Authenticator app",
                secret_encrypted=encryptor.encrypt(secret.encode(), _associated_data(credential_id)),
            )
        )
    uri = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL).provisioning_uri(
        name=account_name, issuer_name=issuer_name
    )
    return TotpEnrolment(credential_id=credential_id, secret=secret, provisioning_uri=uri)


async def pending_totp_enrolment(
    db: Database, encryptor: Encryptor, user_id: str, credential_id: str, *, issuer_name: str, account_name: str
) -> TotpEnrolment | None:
    """The user's unconfirmed enrolment ``credential_id`` again (to show after a mistyped code), or
    None when it no longer exists, is confirmed or belongs to someone else."""
    async with db.session() as session:
        credential = await MfaRepository(session).get(credential_id[:36])
    if credential is None or credential.user_id != user_id or credential.type != TOTP or credential.confirmed_at:
        return None
    secret = _decrypt_secret(encryptor, credential)
    uri = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL).provisioning_uri(
        name=account_name, issuer_name=issuer_name
    )
    return TotpEnrolment(credential_id=credential.id, secret=secret, provisioning_uri=uri)


async def confirm_totp_enrolment(
    db: Database,
    encryptor: Encryptor,
    events: EventBus,
    user_id: str,
    credential_id: str,
    code: str,
    *,
    hasher: PasswordHasher,
    now: datetime | None = None,
) -> list[str]:
    """Turn TOTP on once the user proves the app works; returns the recovery codes, once.

    The code's step is recorded as used, so the same code can't then sign in. Any earlier
    recovery codes are replaced. Raises AccountError("code", …) for a wrong code and
    AccountError("credential", …) for an enrolment that doesn't exist (any more), belongs to
    someone else or is already confirmed; nothing changes then.
    """
    now = _server_now(now)
    async with db.session() as session:
        credential = await MfaRepository(session).get(credential_id)
    if credential is None or credential.user_id != user_id or credential.type != TOTP or credential.confirmed_at:
        raise AccountError("credential", "This setup has expired or was replaced. Start again.")
    step = _matching_step(_decrypt_secret(encryptor, credential), _clean_totp_code(code), now)
    if step is None:
        raise AccountError("code", _WRONG_CODE)
    # Hashing is slow: done before the transaction so the user row isn't locked meanwhile.
    codes, hashes = await _new_recovery_codes(hasher)
    async with db.session() as session:
        await _lock_user(UserRepository(session), user_id)
        credentials = MfaRepository(session)
        if await credentials.confirmed_totp(user_id) is not None:
            raise AccountError("totp", "An authenticator app is already set up. Remove it before adding another.")
        if not await credentials.confirm_totp(credential_id, user_id, step=step, now=now):
            raise AccountError("credential", "This setup has expired or was replaced. Start again.")
        await RecoveryCodeRepository(session).replace(user_id, hashes)
    await events.publish(MfaEnabled(user_id=user_id, method=TOTP))
    return codes


# -- TOTP verification ----------------------------------------------------------------------


async def verify_totp(
    db: Database, encryptor: Encryptor, user_id: str, code: str, *, now: datetime | None = None
) -> bool:
    """True when ``code`` is the user's current TOTP (one step of drift either way) and no code of
    this or a later step was accepted before. Time is the server's, never the client's (ASVS 6.5.8).

    The accepted step is stored by one conditional UPDATE: of concurrent requests with the same
    code, exactly one succeeds (ASVS 6.5.1). The caller rate-limits failures.
    """
    now = _server_now(now)
    clean = _clean_totp_code(code)
    async with db.session() as session:
        credential = await MfaRepository(session).confirmed_totp(user_id)
    if credential is None or clean is None:
        return False
    step = _matching_step(_decrypt_secret(encryptor, credential), clean, now)
    if step is None or (credential.last_used_step is not None and step <= credential.last_used_step):
        return False
    async with db.session() as session:
        return await MfaRepository(session).spend_totp_step(credential.id, step, now)


# -- recovery codes -------------------------------------------------------------------------


async def use_recovery_code(db: Database, hasher: PasswordHasher, events: EventBus, user_id: str, code: str) -> bool:
    """Spend one of the user's unused recovery codes; True if ``code`` was one of them.

    Case, spaces and dashes don't matter. Each code works once, also under concurrent requests.
    Publishes RecoveryCodeUsed with the number left. The caller rate-limits failures.
    """
    clean = normalize_recovery_code(code)
    async with db.session() as session:
        rows = await RecoveryCodeRepository(session).unused(user_id)
    if len(clean) != RECOVERY_CODE_LENGTH or not set(clean) <= set(_RECOVERY_ALPHABET) or not rows:
        await hasher.verify(None, clean)  # about the cost of a real check
        return False
    matched: str | None = None
    for row_id, code_hash in rows:
        if await hasher.verify(code_hash, clean):
            matched = row_id
            break
    if matched is None:
        return False
    async with db.session() as session:
        codes = RecoveryCodeRepository(session)
        if not await codes.spend(matched, utcnow()):
            return False  # a concurrent request spent it first
        remaining = await codes.count_unused(user_id)
    await events.publish(RecoveryCodeUsed(user_id=user_id, remaining=remaining))
    return True


async def regenerate_recovery_codes(db: Database, hasher: PasswordHasher, events: EventBus, user_id: str) -> list[str]:
    """A new set of recovery codes, returned once; every earlier code stops working.

    Raises AccountError("totp", …) when the user has no second factor (codes would be useless).
    The caller re-authenticates the user first (ASVS 7.5.1).
    """
    codes, hashes = await _new_recovery_codes(hasher)
    async with db.session() as session:
        await _lock_user(UserRepository(session), user_id)
        if not await MfaRepository(session).has_confirmed_factor(user_id):
            raise AccountError("totp", "Set up an authenticator app or a passkey first.")
        await RecoveryCodeRepository(session).replace(user_id, hashes)
    await events.publish(RecoveryCodesRegenerated(user_id=user_id, count=len(codes)))
    return codes


# -- removal and status ---------------------------------------------------------------------


async def disable_totp(db: Database, events: EventBus, user_id: str) -> bool:
    """Remove the user's TOTP (confirmed or pending) and, unless a passkey remains as a second
    factor, all recovery codes (ASVS 6.5.6).

    Returns whether a confirmed TOTP was removed (MfaDisabled is published then). The caller
    checks the password and a current code first (ASVS 7.5.1) and should offer to end other
    sessions (ASVS 7.4.3).
    """
    async with db.session() as session:
        await _lock_user(UserRepository(session), user_id)
        credentials = MfaRepository(session)
        confirmed = await credentials.confirmed_totp(user_id) is not None
        await credentials.delete_totp(user_id)
        if not await credentials.has_confirmed_factor(user_id):
            await RecoveryCodeRepository(session).delete_all(user_id)
    if confirmed:
        await events.publish(MfaDisabled(user_id=user_id, method=TOTP))
    return confirmed


async def has_second_factor(db: Database, user_id: str) -> bool:
    """Whether sign-in must ask for a second factor: a confirmed MFA credential of any type
    (a WebAuthn registration must set ``confirmed_at`` to count)."""
    async with db.session() as session:
        return await MfaRepository(session).has_confirmed_factor(user_id)


@dataclass(frozen=True)
class FactorStatus:
    """What sign-in can ask this user for, and what the account pages show."""

    totp: bool
    webauthn: int  # confirmed passkeys and security keys
    recovery_codes: int  # unused recovery codes

    @property
    def any(self) -> bool:
        return self.totp or self.webauthn > 0


async def factor_status(db: Database, user_id: str) -> FactorStatus:
    async with db.session() as session:
        types = await MfaRepository(session).confirmed_types(user_id)
        remaining = await RecoveryCodeRepository(session).count_unused(user_id)
    return FactorStatus(totp=TOTP in types, webauthn=sum(1 for kind in types if kind != TOTP), recovery_codes=remaining)


def mfa_required(policy: str, user: User) -> bool:
    """Whether the ``[mfa] required`` policy ("off", "admins", "all") covers this user."""
    return policy == "all" or (policy == "admins" and bool(user.is_admin))


def qr_code(uri: str) -> str:
    """An otpauth:// URI as an SVG data URI, rendered here: no third-party QR service sees the seed."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, border=2))


def totp_issuer_name(issuer: str, configured: str) -> str:
    """The name authenticator apps show next to the code: ``[mfa] totp_issuer``, else the host."""
    return configured or urlsplit(issuer).hostname or "idp"
