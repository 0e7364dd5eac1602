"""idp as a WebAuthn relying party: who it is to authenticators (``RelyingParty``, from
``[webauthn]``), the ceremonies' challenges, and reading what browsers and py_webauthn hand back
(``PasskeyError`` and its reason). The ceremonies themselves are idp.accounts.security.passkeys.

- A ceremony is a random id (256 bits) handed to the browser; the key-value store holds, under a
  digest of it, the challenge (64 random bytes from py_webauthn, ASVS 6.7.2), the user and the
  binding for ``challenge_ttl`` seconds. It is consumed with one atomic ``pop`` before anything
  is verified: a challenge works once, also under concurrent requests, and a failed attempt
  burns it (WebAuthn §13.4.3).
- A ``binding`` identifies the browser that starts a ceremony (e.g. a digest of its session or
  pre-login cookie), so a ceremony id that leaks can't be finished elsewhere.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, parse_client_data_json
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidCertificateChain,
    InvalidRegistrationResponse,
    UnsupportedAlgorithm,
    UnsupportedEC2Curve,
    UnsupportedPublicKey,
    UnsupportedPublicKeyType,
    WebAuthnException,
)

from idp.accounts.users import AccountError
from idp.config import WebAuthnSettings
from idp.security.tokens import random_token, sha256_digest
from idp.storage.kv import KeyValueStore

MAX_CREDENTIAL_JSON = 64 * 1024  # bytes; a real response is a few KiB at most
_MAX_CEREMONY_ID = 128
# The two ceremonies (WebAuthn §7.1, §7.2).
REGISTRATION = "registration"
AUTHENTICATION = "authentication"

_MESSAGES = {
    "challenge": "This passkey request has expired or was already used. Try again.",
    "origin": "This passkey response came from another website.",
    "rp_id": "This passkey was made for another website.",
    "signature": "The passkey's signature is not valid.",
    "counter": (
        "This passkey reported an unexpected use count, so it may have been copied. "
        "Sign in another way and consider removing it."
    ),
    "user_verification": "Your device didn't verify you (PIN, fingerprint or face). Try again.",
    "user_presence": "The passkey was used without your confirmation on the device. Try again.",
    "user_mismatch": "This passkey is not registered for this account.",
    "unknown_credential": "This passkey is not registered here, or it was removed.",
    "duplicate": "This passkey is already registered.",
    "algorithm": "This kind of passkey or security key is not supported.",
    "attestation": "The passkey's attestation could not be verified.",
    "backup_eligibility": "This passkey's response doesn't match how it was registered.",
    "malformed": "The passkey response could not be read. Try again.",
}

# py_webauthn 3.0.1 reports most failures as InvalidRegistrationResponse/InvalidAuthenticationResponse
# with a message only; the reason for the audit log comes from it, most specific first. The
# tests pin every entry, so a reworded message in a new release fails them instead of logging
# "malformed".
_LIBRARY_MESSAGES = (
    ("was missing", "malformed"),
    ("origin", "origin"),
    ("rp id hash", "rp_id"),
    ("challenge", "challenge"),
    ("user verification", "user_verification"),
    ("user presence", "user_presence"),
    ("user was not present", "user_presence"),
    ("attestation statement alg", "attestation"),
    ("public key alg", "algorithm"),
    ("signature", "signature"),
    ("attestation type", "attestation"),
    ("attestation statement", "attestation"),
)


@dataclass(frozen=True)
class RelyingParty:
    """Who we are to authenticators (WebAuthn §5.4.2) and which pages may run ceremonies."""

    id: str  # RP ID, e.g. "localhost" or "idp.example.com"
    name: str  # shown by the authenticator
    origins: tuple[str, ...]  # accepted origins, e.g. ("http://localhost:8000",)
    challenge_ttl: int = 300  # seconds a ceremony stays valid
    timeout_ms: int = 300_000  # put in the options

    def __post_init__(self) -> None:
        if not self.id or not self.name or not self.origins:
            raise ValueError("a relying party needs an id, a name and at least one origin")
        if self.challenge_ttl <= 0 or self.timeout_ms <= 0:
            raise ValueError("challenge_ttl and timeout_ms must be positive")

    @classmethod
    def from_settings(cls, issuer: str, settings: WebAuthnSettings) -> RelyingParty:
        """The relying party of ``[webauthn]``: the issuer's host and origin by default."""
        parts = urlsplit(issuer)
        return cls(
            id=settings.rp_id or parts.hostname or "localhost",
            name=settings.rp_name,
            origins=tuple(settings.origins or [f"{parts.scheme}://{parts.netloc}"]),
            challenge_ttl=settings.challenge_ttl,
            timeout_ms=settings.challenge_ttl * 1000,
        )


class PasskeyError(AccountError):
    """A refused passkey ceremony. ``reason`` is for the audit log ("challenge", "origin", "rp_id",
    "signature", "counter", "unknown_credential", "user_mismatch", "user_verification",
    "user_presence", "algorithm", "attestation", "backup_eligibility", "duplicate", "limit",
    "malformed"); ``message`` is for the user."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__("passkey", message or _MESSAGES.get(reason, _MESSAGES["malformed"]))
        self.reason = reason


# -- ceremonies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ceremony:
    kind: str
    challenge: bytes
    user_id: str | None


def ceremony_key(ceremony_id: str) -> str:
    # The store holds a digest: whoever can read it can't finish someone's ceremony.
    return f"webauthn:ceremony:{sha256_digest(ceremony_id)}"


async def start_ceremony(
    kv: KeyValueStore, rp: RelyingParty, *, kind: str, challenge: bytes, user_id: str | None, binding: str
) -> str:
    if not binding:
        raise ValueError("binding must identify the browser that starts the ceremony")
    ceremony_id = random_token()
    record = {
        "kind": kind,
        "challenge": bytes_to_base64url(challenge),
        "user_id": user_id,
        "binding": sha256_digest(binding),
    }
    await kv.set(ceremony_key(ceremony_id), json.dumps(record), ttl=rp.challenge_ttl)
    return ceremony_id


async def consume_ceremony(kv: KeyValueStore, ceremony_id: str, *, kind: str, binding: str) -> Ceremony:
    """Take the ceremony out of the store (whatever happens next, it can't be used again)."""
    if not isinstance(ceremony_id, str) or not ceremony_id or len(ceremony_id) > _MAX_CEREMONY_ID:
        raise PasskeyError("challenge")
    raw = await kv.pop(ceremony_key(ceremony_id))
    if raw is None:
        raise PasskeyError("challenge")
    record = json.loads(raw)
    same_browser = hmac.compare_digest(record["binding"], sha256_digest(binding))
    if record["kind"] != kind or not same_browser:
        raise PasskeyError("challenge")
    return Ceremony(kind=kind, challenge=base64url_to_bytes(record["challenge"]), user_id=record["user_id"])


# -- what the browser and the library hand back ---------------------------------------------------


def credential_json(credential: str | dict[str, Any]) -> dict[str, Any]:
    """The browser's PublicKeyCredential JSON as a dict; absurd input is refused before any work."""
    if isinstance(credential, str):
        if len(credential) > MAX_CREDENTIAL_JSON or len(credential.encode()) > MAX_CREDENTIAL_JSON:
            raise PasskeyError("malformed")
        try:
            credential = json.loads(credential)
        except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested deeper than the parser goes
            raise PasskeyError("malformed") from None
    if not isinstance(credential, dict):
        raise PasskeyError("malformed")
    try:
        size = len(json.dumps(credential).encode())
    except (TypeError, ValueError, RecursionError):
        raise PasskeyError("malformed") from None
    if size > MAX_CREDENTIAL_JSON:
        raise PasskeyError("malformed")
    return credential


def library_failure(exc: Exception) -> NoReturn:
    """Turn a py_webauthn (or malformed-input) failure into a PasskeyError with its reason."""
    if isinstance(exc, UnsupportedAlgorithm | UnsupportedEC2Curve | UnsupportedPublicKey | UnsupportedPublicKeyType):
        raise PasskeyError("algorithm") from exc
    if isinstance(exc, InvalidCertificateChain):
        raise PasskeyError("attestation") from exc
    if isinstance(exc, InvalidRegistrationResponse | InvalidAuthenticationResponse):
        text = str(exc).lower()
        for fragment, reason in _LIBRARY_MESSAGES:
            if fragment in text:
                raise PasskeyError(reason) from exc
    # Unparseable JSON, CBOR, authenticator data or key, impossible flags...
    raise PasskeyError("malformed") from exc


# What verifying hostile input can raise besides the library's own exceptions (binascii and
# cbor2 errors are ValueErrors; a COSE key without "kty" is a KeyError).
VERIFICATION_ERRORS = (WebAuthnException, ValueError, TypeError, KeyError, IndexError)


def check_same_origin_context(client_data_json: bytes) -> None:
    """Refuse a ceremony run in a cross-origin iframe (py_webauthn ignores ``crossOrigin``): our
    pages never embed one, and §7.1/§7.2 leave accepting it to the relying party's policy."""
    if parse_client_data_json(client_data_json).cross_origin:
        raise PasskeyError("origin")
