"""Passkeys and security keys: WebAuthn registration and authentication — the domain layer, no HTTP.

Verification is py_webauthn's (WebAuthn §7.1, §7.2); this module keeps the credentials in
``mfa_credentials`` (``type = "webauthn"``) and makes the checks the library leaves to the relying
party. The ceremonies' challenges, and reading what browsers send, are
idp.accounts.security.relying_party's.

What the callers (the login step, the account pages) must do themselves, because only they know
the request:

- re-authenticate the user before ``registration_options``/``register_passkey`` and
  ``remove_passkey`` (ASVS 7.5.1);
- pass a ``binding`` that identifies the browser that starts a ceremony (e.g. a digest of its
  session or pre-login cookie), so a ceremony id that leaks can't be finished elsewhere;
- rate-limit ``authenticate_passkey`` and record failures (``LoginFailed(factor="webauthn")`` with
  ``PasskeyError.reason``, ASVS 16.3.1); refuse accounts that may not sign in
  (idp.accounts.signin.eligibility); publish the successful sign-in.

Choices made here:

- ``user.id`` is the opaque account id, never an email address (WebAuthn §14.6.1).
- Registration asks for a discoverable credential where the authenticator can make one
  (``residentKey: "preferred"``) and for the ``credProps`` extension (§10.1.3) to learn whether
  it did. Attestation is ``"none"``: we don't restrict authenticator models, so there is nothing
  to check a certificate chain against.
- A credential id is registered once, to one account (§7.1: fail a known credential id).
- Passwordless sign-in requires user verification (the authenticator's PIN or biometric is the
  second factor) and a user handle naming the credential's owner (§7.2); as a second factor after
  the password, user presence suffices and verification is only "preferred".
- The signature counter (§6.1.1) is checked after the signature, as §7.2 orders the steps: a
  counter that didn't grow (while either value is non-zero) refuses the sign-in as a possibly
  cloned authenticator, and only a correctly signed response can raise that alarm. The new count
  is stored by a conditional UPDATE on the count read, so of two concurrent assertions with the
  same count only one passes.
- The backup-eligibility flag can't change over a credential's life (§6.1.3); a response whose
  BE flag differs from the registration's is refused. The backup state is refreshed each time.
"""

from __future__ import annotations

import hmac
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    options_to_json_dict,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from idp.accounts.security.relying_party import (
    AUTHENTICATION,
    REGISTRATION,
    VERIFICATION_ERRORS,
    PasskeyError,
    RelyingParty,
    check_same_origin_context,
    consume_ceremony,
    credential_json,
    library_failure,
    start_ceremony,
)
from idp.accounts.users import AccountError
from idp.events import EventBus, MfaDisabled, MfaEnabled, PasskeyRegistered, PasskeyRemoved, PasskeyRenamed
from idp.storage.db import Database
from idp.storage.kv import KeyValueStore
from idp.storage.models import MfaCredential, utcnow
from idp.storage.repositories import AlreadyTaken, PasskeyRepository, UserRepository
from idp.storage.repositories.passkeys import WEBAUTHN

# ES256 first: every authenticator supports it; EdDSA and RS256 (Windows Hello) for the rest.
ALGORITHMS = (
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
)
MAX_NAME_LENGTH = 64
MAX_TRANSPORTS = 8
MAX_PASSKEYS = 25  # per account: bounds excludeCredentials/allowCredentials and the list page
# §7.1 allows credential ids up to 1023 bytes; the column holds 1024 base64url characters (768 bytes).
MAX_CREDENTIAL_ID_CHARS = 1024
_KNOWN_TRANSPORTS = frozenset(transport.value for transport in AuthenticatorTransport)
# The reason "limit"'s message (PasskeyError), fixed when the module loads.
_LIMIT = f"An account can have at most {MAX_PASSKEYS} passkeys. Remove one first."


@dataclass(frozen=True)
class Passkey:
    """A registered credential as the account pages list it."""

    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    discoverable: bool | None  # usable without typing the email address; None: the browser didn't say
    backed_up: bool  # synced to the user's other devices (as of the last use)
    backup_eligible: bool  # a synced passkey rather than a device-bound one
    transports: tuple[str, ...]


@dataclass(frozen=True)
class PasskeyAssertion:
    """A verified sign-in with a passkey."""

    user_id: str
    passkey_id: str
    user_verified: bool
    backup_eligible: bool


# -- helpers --------------------------------------------------------------------------------


def clean_passkey_name(name: str) -> str:
    """The name as stored: NFC, trimmed, 1..64 characters, no control or invisible formatting
    characters (which could make two names look alike or reorder the text shown around them)."""
    clean = unicodedata.normalize("NFC", name if isinstance(name, str) else "").strip()
    if not clean:
        raise AccountError("name", "Give the passkey a name.")
    if len(clean) > MAX_NAME_LENGTH:
        raise AccountError("name", f"must be at most {MAX_NAME_LENGTH} characters")
    for char in clean:
        category = unicodedata.category(char)
        # U+200D (zero-width joiner) is allowed: emoji sequences need it.
        if category in ("Cc", "Cs", "Co") or (category == "Cf" and char != "\u200d"):
            raise AccountError("name", "must not contain control characters")
    return clean


def _passkey(row: MfaCredential) -> Passkey:
    return Passkey(
        id=row.id,
        name=row.name or "",
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        discoverable=row.discoverable,
        backed_up=row.backed_up,
        backup_eligible=row.backup_eligible,
        transports=tuple(row.transports or ()),
    )


def _transports(values: list[AuthenticatorTransport] | None) -> list[str]:
    """Known transport strings (py_webauthn drops unknown ones), each once, at most 8."""
    found: list[str] = []
    for transport in values or ():
        if transport.value not in found:
            found.append(transport.value)
    return found[:MAX_TRANSPORTS]


def _descriptor(row: MfaCredential) -> PublicKeyCredentialDescriptor:
    transports = [AuthenticatorTransport(value) for value in row.transports or () if value in _KNOWN_TRANSPORTS]
    return PublicKeyCredentialDescriptor(id=base64url_to_bytes(row.credential_id or ""), transports=transports)


def _discoverable(credential: dict[str, Any]) -> bool | None:
    """clientExtensionResults.credProps.rk (§10.1.3); None when the browser didn't report it."""
    results = credential.get("clientExtensionResults")
    props = results.get("credProps") if isinstance(results, dict) else None
    rk = props.get("rk") if isinstance(props, dict) else None
    return rk if isinstance(rk, bool) else None


def _user_handle(user_id: str) -> bytes:
    handle = user_id.encode()
    if not 1 <= len(handle) <= 64:  # §5.4.3: a user handle is 1 to 64 bytes
        raise ValueError("a user id must be 1 to 64 bytes to serve as a WebAuthn user handle")
    return handle


# -- registration ---------------------------------------------------------------------------


async def registration_options(
    db: Database,
    kv: KeyValueStore,
    rp: RelyingParty,
    *,
    user_id: str,
    user_name: str,
    display_name: str,
    binding: str,
) -> tuple[str, dict[str, Any]]:
    """Start adding a passkey: (ceremony id, PublicKeyCredentialCreationOptionsJSON for the browser).

    Attestation "none"; a discoverable credential preferred (needed for passwordless sign-in);
    user verification preferred; the user's passkeys excluded, so an authenticator that holds one
    says so instead of making a second (§5.4 excludeCredentials); ES256, EdDSA and RS256.
    ``user.id`` is the account id's UTF-8 bytes: no personal data (§14.6.1). ``user_name`` (the
    email address) and ``display_name`` are shown by the authenticator only.
    Raises PasskeyError(reason="limit") when the account has MAX_PASSKEYS already.
    """
    async with db.session() as session:
        rows = await PasskeyRepository(session).of_user(user_id)
    if len(rows) >= MAX_PASSKEYS:
        raise PasskeyError("limit", _LIMIT)
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=_user_handle(user_id),
        user_name=user_name,
        user_display_name=display_name,
        timeout=rp.timeout_ms,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[_descriptor(row) for row in rows],
        supported_pub_key_algs=list(ALGORITHMS),
    )
    ceremony_id = await start_ceremony(
        kv, rp, kind=REGISTRATION, challenge=options.challenge, user_id=user_id, binding=binding
    )
    # py_webauthn 3.0.1 has no extensions in its options; credProps tells whether the
    # authenticator made the credential discoverable (§10.1.3).
    return ceremony_id, {**options_to_json_dict(options), "extensions": {"credProps": True}}


async def register_passkey(
    db: Database,
    kv: KeyValueStore,
    events: EventBus,
    rp: RelyingParty,
    *,
    user_id: str,
    ceremony_id: str,
    binding: str,
    credential: str | dict[str, Any],
    name: str,
) -> Passkey:
    """Verify navigator.credentials.create()'s result (§7.1) and store the passkey, confirmed.

    The name and the response's size and shape are checked first, so a mistyped name doesn't
    burn the ceremony. Then the ceremony is consumed: a wrong, expired, used, other user's or
    other browser's ceremony is PasskeyError(reason="challenge"). Verification failures are
    PasskeyError with the reason ("origin", "rp_id", "signature", "attestation", "algorithm",
    "malformed", …); a credential id registered before, to anyone, is reason "duplicate".
    Nothing is stored on any failure. Publishes PasskeyRegistered, and MfaEnabled for the user's
    first passkey.
    """
    clean_name = clean_passkey_name(name)
    data = credential_json(credential)
    ceremony = await consume_ceremony(kv, ceremony_id, kind=REGISTRATION, binding=binding)
    if ceremony.user_id != user_id:
        raise PasskeyError("challenge")
    try:
        parsed: RegistrationCredential = parse_registration_credential_json(data)
        verified = verify_registration_response(
            credential=parsed,
            expected_challenge=ceremony.challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            require_user_verification=False,
            supported_pub_key_algs=list(ALGORITHMS),
        )
        check_same_origin_context(parsed.response.client_data_json)
        # The key must be usable for the assertions to come (a "none" attestation never used it).
        decoded_public_key_to_cryptography(decode_credential_public_key(verified.credential_public_key))
    except PasskeyError:
        raise
    except VERIFICATION_ERRORS as exc:
        library_failure(exc)
    credential_id = bytes_to_base64url(verified.credential_id)
    # The browser's id must be the one the authenticator attested: it is what sign-ins will name.
    if credential_id != parsed.id or len(credential_id) > MAX_CREDENTIAL_ID_CHARS:
        raise PasskeyError("malformed")
    discoverable = _discoverable(data)
    now = utcnow()
    async with db.session() as session:
        # Passkey changes of one user are decided one at a time, so "first passkey" and "last
        # passkey" are decided once under concurrent requests.
        if not await UserRepository(session).lock(user_id):
            raise AccountError("user", "This account no longer exists.")
        credentials = PasskeyRepository(session)
        if await credentials.is_registered(credential_id):
            raise PasskeyError("duplicate")
        existing = await credentials.count(user_id)
        if existing >= MAX_PASSKEYS:
            raise PasskeyError("limit", _LIMIT)
        row = MfaCredential(
            user_id=user_id,
            type=WEBAUTHN,
            name=clean_name,
            credential_id=credential_id,
            public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count,
            transports=_transports(parsed.response.transports),
            backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
            backed_up=verified.credential_backed_up,
            aaguid=verified.aaguid,
            discoverable=discoverable,
            confirmed_at=now,
            created_at=now,
        )
        try:
            await credentials.add(row)
        except AlreadyTaken:  # registered concurrently by another account
            raise PasskeyError("duplicate") from None
        passkey = _passkey(row)
    await events.publish(PasskeyRegistered(user_id=user_id, passkey=passkey.id, discoverable=bool(discoverable)))
    if existing == 0:
        await events.publish(MfaEnabled(user_id=user_id, method=WEBAUTHN))
    return passkey


# -- authentication -------------------------------------------------------------------------


async def authentication_options(
    db: Database, kv: KeyValueStore, rp: RelyingParty, *, user_id: str | None, binding: str
) -> tuple[str, dict[str, Any]]:
    """Start a sign-in: (ceremony id, PublicKeyCredentialRequestOptionsJSON for the browser).

    With ``user_id`` (the second factor after the password): allowCredentials lists that user's
    passkeys and user verification is "preferred"; PasskeyError(reason="unknown_credential") when
    the user has none. Without (passwordless, discoverable credentials): no allowCredentials, so
    the authenticator offers the passkeys it holds for this site, and user verification is
    "required" (the passkey is then both factors).
    """
    descriptors: list[PublicKeyCredentialDescriptor] = []
    if user_id is not None:
        async with db.session() as session:
            descriptors = [_descriptor(row) for row in await PasskeyRepository(session).of_user(user_id)]
        if not descriptors:
            raise PasskeyError("unknown_credential", "This account has no passkey.")
    options = generate_authentication_options(
        rp_id=rp.id,
        timeout=rp.timeout_ms,
        allow_credentials=descriptors,
        user_verification=(
            UserVerificationRequirement.PREFERRED if user_id is not None else UserVerificationRequirement.REQUIRED
        ),
    )
    ceremony_id = await start_ceremony(
        kv, rp, kind=AUTHENTICATION, challenge=options.challenge, user_id=user_id, binding=binding
    )
    return ceremony_id, options_to_json_dict(options)


async def authenticate_passkey(
    db: Database,
    kv: KeyValueStore,
    rp: RelyingParty,
    *,
    ceremony_id: str,
    binding: str,
    credential: str | dict[str, Any],
) -> PasskeyAssertion:
    """Verify navigator.credentials.get()'s result (§7.2); who signed in, with which passkey.

    Consumes the ceremony first (single use). The credential must be registered
    ("unknown_credential") and, as a second factor, belong to the ceremony's user; passwordless,
    the response's userHandle must name the credential's owner ("user_mismatch") and the user must
    have been verified ("user_verification"). A counter that didn't grow is "counter" (§6.1.1) and
    changes nothing. On success the new count, the backup state and last_used_at are stored.
    Publishes nothing: the login step does, with the session it creates.
    """
    data = credential_json(credential)
    ceremony = await consume_ceremony(kv, ceremony_id, kind=AUTHENTICATION, binding=binding)
    passwordless = ceremony.user_id is None
    try:
        parsed: AuthenticationCredential = parse_authentication_credential_json(data)
    except VERIFICATION_ERRORS as exc:
        library_failure(exc)
    credential_id = bytes_to_base64url(parsed.raw_id)
    if credential_id != parsed.id or len(credential_id) > MAX_CREDENTIAL_ID_CHARS:
        raise PasskeyError("malformed")
    async with db.session() as session:
        row = await PasskeyRepository(session).by_credential_id(credential_id)
    if row is None or row.public_key is None:
        raise PasskeyError("unknown_credential")
    if not passwordless and row.user_id != ceremony.user_id:
        raise PasskeyError("user_mismatch")
    # §7.2: the user handle, when given, must name the credential's owner; passwordless it is
    # how the user is identified, so it must be given.
    user_handle = parsed.response.user_handle
    if (passwordless or user_handle is not None) and (
        user_handle is None or not hmac.compare_digest(user_handle, row.user_id.encode())
    ):
        raise PasskeyError("user_mismatch")
    try:
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=ceremony.challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            credential_public_key=base64url_to_bytes(row.public_key),
            # The counter is checked below, after the signature (see the module docstring): with 0
            # here py_webauthn's own check, which runs before the signature's, never fires.
            credential_current_sign_count=0,
            require_user_verification=passwordless,
        )
        check_same_origin_context(parsed.response.client_data_json)
    except PasskeyError:
        raise
    except VERIFICATION_ERRORS as exc:
        library_failure(exc)
    stored = row.sign_count
    new = verified.new_sign_count
    if (new != 0 or stored != 0) and new <= stored:
        raise PasskeyError("counter")
    if (verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE) != row.backup_eligible:
        raise PasskeyError("backup_eligibility")
    async with db.session() as session:
        credentials = PasskeyRepository(session)
        recorded = await credentials.record_sign_in(
            row.id, seen_count=stored, new_count=new, backed_up=verified.credential_backed_up, now=utcnow()
        )
        if not recorded:
            # A concurrent assertion stored its count first, or the passkey was just removed.
            raise PasskeyError("counter" if await credentials.exists(row.id) else "unknown_credential")
    return PasskeyAssertion(
        user_id=row.user_id,
        passkey_id=row.id,
        user_verified=verified.user_verified,
        backup_eligible=row.backup_eligible,
    )


# -- management -----------------------------------------------------------------------------


async def list_passkeys(db: Database, user_id: str) -> list[Passkey]:
    """The user's passkeys, oldest first."""
    async with db.session() as session:
        return [_passkey(row) for row in await PasskeyRepository(session).of_user(user_id)]


async def count_passkeys(db: Database, user_id: str) -> int:
    async with db.session() as session:
        return await PasskeyRepository(session).count(user_id)


async def rename_passkey(db: Database, events: EventBus, user_id: str, passkey_id: str, name: str) -> Passkey:
    """Rename one of the user's passkeys. AccountError("name", …) for an unusable name and
    AccountError("passkey", …) when the passkey isn't the user's (or no longer exists)."""
    clean_name = clean_passkey_name(name)
    async with db.session() as session:
        row = await PasskeyRepository(session).rename(user_id, passkey_id, clean_name)
        if row is None:
            raise AccountError("passkey", "This passkey doesn't exist (any more).")
        passkey = _passkey(row)
    await events.publish(PasskeyRenamed(user_id=user_id, passkey=passkey_id))
    return passkey


async def remove_passkey(db: Database, events: EventBus, user_id: str, passkey_id: str) -> bool:
    """Remove one of the user's passkeys (ASVS 6.5.6); False when it isn't the user's or is gone.

    Publishes PasskeyRemoved, and MfaDisabled(method="webauthn") when it was the user's last one.
    The caller re-authenticates the user first (ASVS 7.5.1) and, when the account has no
    password, makes sure the user keeps a way to sign in.
    """
    async with db.session() as session:
        if not await UserRepository(session).lock(user_id):
            return False
        credentials = PasskeyRepository(session)
        if not await credentials.remove(user_id, passkey_id):
            return False
        remaining = await credentials.count(user_id)
    await events.publish(PasskeyRemoved(user_id=user_id, passkey=passkey_id))
    if remaining == 0:
        await events.publish(MfaDisabled(user_id=user_id, method=WEBAUTHN))
    return True
