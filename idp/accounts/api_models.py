"""The account API's request and response bodies as typed models (pydantic): idp.accounts.api
validates bodies and queries with them, quart-schema writes /openapi.json from them.

The models carry types, lengths and bounds, and refuse unknown members (``extra="forbid"``);
what a type can't say stays in the domain modules: IANA zone names and BCP 47 tags
(idp.accounts.profile.profile), email syntax (email-validator), passwords, passkey ceremonies.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from idp.accounts.profile.profile import (
    ACTIVITY_DEFAULT_LIMIT,
    ACTIVITY_MAX_LIMIT,
    LOCALE_MAX_LENGTH,
    READ_ONLY_FIELDS,
    TEXT_LIMITS,
    iso,
)
from idp.accounts.security.passkeys import MAX_NAME_LENGTH

_MAX_EVENT_ID = 2**63 - 1  # BIGINT
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _trimmed(value: Any) -> Any:
    # Lengths count characters of the trimmed, NFC-normalised text (as the profile stores it).
    return unicodedata.normalize("NFC", value).strip() if isinstance(value, str) else value


def _ascii_integer(value: Any) -> Any:
    # A query integer is plain ASCII digits: int() would also take "+5", " 5", "1_0" and Arabic-Indic digits.
    if isinstance(value, str) and not _ASCII_DIGITS.fullmatch(value):
        raise ValueError("must be plain ASCII digits")
    return value


def _text(limit: int, description: str) -> Any:
    return Field(default=None, max_length=limit, description=description)


Trimmed = Annotated[str | None, BeforeValidator(_trimmed)]
QueryInt = Annotated[int, BeforeValidator(_ascii_integer)]


# -- profile ---------------------------------------------------------------------------------------


class ProfilePatch(_Model):
    """The members to change; an absent one stays, ``null`` or a blank string clears it."""

    # sub, email, email_verified, pending_email, picture, updated_at: named as read-only when sent.
    read_only: ClassVar[dict[str, str]] = READ_ONLY_FIELDS

    name: Trimmed = _text(TEXT_LIMITS["name"], "No control characters or line breaks.")
    given_name: Trimmed = _text(TEXT_LIMITS["given_name"], "No control characters or line breaks.")
    family_name: Trimmed = _text(TEXT_LIMITS["family_name"], "No control characters or line breaks.")
    preferred_username: Trimmed = _text(
        TEXT_LIMITS["preferred_username"], "No control, line-break or invisible format characters."
    )
    locale: Trimmed = Field(
        default=None,
        max_length=LOCALE_MAX_LENGTH,
        description="A BCP 47-style tag: en, fr-CA, zh-Hant-TW.",
        json_schema_extra={"pattern": r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"},
    )
    zoneinfo: Trimmed = Field(
        default=None, max_length=64, description="An IANA time zone name of the server's database: Europe/Paris."
    )


# The members released only with the email scope: absent (not null) without it.
EMAIL_MEMBERS = ("email", "email_verified", "pending_email")


class ProfileOut(_Model):
    """The profile, with the OpenID Connect claim names; claims not set are null."""

    sub: str = Field(description="The subject this client knows the user by.")
    email: str | None = Field(default=None, description="With the email scope only.")
    email_verified: bool | None = Field(default=None, description="With the email scope only.")
    name: str | None
    given_name: str | None
    family_name: str | None
    preferred_username: str | None
    locale: str | None
    zoneinfo: str | None
    picture: str | None = Field(description="A URL, as /userinfo releases it.")
    updated_at: int = Field(description="Seconds since the epoch.")
    pending_email: str | None = Field(
        default=None, description="With the email scope only: an address change waiting for confirmation."
    )

    @model_serializer(mode="wrap")
    def _released(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in EMAIL_MEMBERS:
            if name not in self.model_fields_set:
                data.pop(name, None)
        return data


# PUT /api/account/picture: the image itself, or a multipart/form-data upload with a picture part.
_IMAGE = {"schema": {"type": "string", "format": "binary"}}
PICTURE_UPLOAD: dict[str, Any] = {
    "image/png": _IMAGE,
    "image/jpeg": _IMAGE,
    "image/webp": _IMAGE,
    "multipart/form-data": {
        "schema": {"type": "object", "properties": {"picture": _IMAGE["schema"]}, "required": ["picture"]}
    },
}


class EmailChange(_Model):
    email: str = Field(max_length=320, description="The new address; a link to confirm it is mailed there.")


class EmailChangeAccepted(_Model):
    status: str = Field(description="verification_sent (also when another account has the address).")


# -- activity and export ---------------------------------------------------------------------------


class ActivityQuery(_Model):
    limit: QueryInt = Field(default=ACTIVITY_DEFAULT_LIMIT, ge=1, le=ACTIVITY_MAX_LIMIT)
    before: QueryInt | None = Field(
        default=None, ge=1, le=_MAX_EVENT_ID, description="Events older than this id: the next of the page before."
    )


class ActivityItem(_Model):
    id: int
    event: str
    outcome: str
    occurred_at: str | None
    ip: str | None
    user_agent: str | None
    client_id: str | None
    details: dict[str, Any]


class ActivityPage(_Model):
    items: list[ActivityItem]
    next: int | None = Field(description="Pass as before for older events; null on the last page.")


class SessionOut(_Model):
    id: str = Field(description="The session's sid, as relying parties see it.")
    current: bool = Field(description="The session the access token was issued in.")
    device: str
    ip: str | None
    signed_in_at: str | None
    last_seen_at: str | None
    amr: list[str]
    acr: str | None
    applications: list[str]


class ExportProfile(_Model):
    id: str
    email: str | None
    email_verified: bool
    pending_email: str | None
    name: str | None
    given_name: str | None
    family_name: str | None
    preferred_username: str | None
    locale: str | None
    zoneinfo: str | None
    picture: str | None
    has_password: bool
    is_admin: bool
    disabled: bool
    created_at: str | None
    updated_at: str | None
    password_changed_at: str | None
    last_login_at: str | None


class ExportConsent(_Model):
    client_id: str
    client_name: str | None
    scopes: list[str]
    created_at: str | None
    updated_at: str | None


class ExportMfaCredential(_Model):
    type: str
    name: str | None
    created_at: str | None
    confirmed_at: str | None
    last_used_at: str | None


class ExportRecoveryCodes(_Model):
    total: int
    unused: int


class ExportRefreshToken(_Model):
    client_id: str
    client_name: str | None
    scope: str
    issued_at: str | None
    expires_at: str | None
    used_at: str | None
    revoked_at: str | None


class ExportDevice(_Model):
    device: str | None
    first_seen_at: str | None
    last_seen_at: str | None
    last_ip: str | None


class AccountExport(_Model):
    """Everything stored about the account (never a credential or what stands in for one)."""

    format: str = Field(description="idp-account-export/1")
    exported_at: str | None
    profile: ExportProfile
    consents: list[ExportConsent]
    mfa_credentials: list[ExportMfaCredential]
    recovery_codes: ExportRecoveryCodes
    refresh_tokens: list[ExportRefreshToken]
    sessions: list[SessionOut]
    known_devices: list[ExportDevice]
    audit_events: list[ActivityItem]


# -- deletion, second factors, passkeys, sessions --------------------------------------------------


class PasswordChange(_Model):
    current_password: str = Field(min_length=1, description="The password now (checked as a sign-in attempt).")
    new_password: str = Field(min_length=1, max_length=1024, description="Checked against the password policy.")


class PasswordChanged(_Model):
    sessions_ended: int = Field(description="How many other sessions of the user ended.")


class PasswordConfirmation(_Model):
    password: str = Field(min_length=1, description="The user's current password (ASVS 7.5.1).")


class TotpConfirmation(_Model):
    credential_id: str = Field(min_length=1, max_length=64, description="From POST /api/account/mfa/totp.")
    code: str = Field(min_length=1, max_length=64, description="The 6-digit code the app shows.")


class TotpRemoval(_Model):
    password: str = Field(min_length=1)
    code: str = Field(min_length=1, max_length=64, description="A current code of the app.")


class PasskeyOut(_Model):
    id: str
    name: str
    created_at: str | None
    last_used_at: str | None
    discoverable: bool
    backed_up: bool
    transports: list[str]

    @classmethod
    def of(cls, key: Any) -> PasskeyOut:
        return cls(
            id=key.id,
            name=key.name,
            created_at=iso(key.created_at),
            last_used_at=iso(key.last_used_at),
            discoverable=key.discoverable,
            backed_up=key.backed_up,
            transports=list(key.transports),
        )


class MfaStatus(_Model):
    totp: bool
    recovery_codes_remaining: int
    passkeys: list[PasskeyOut]
    required: bool = Field(description="Whether [mfa] required covers this user.")


class TotpSetup(_Model):
    """Shown once: the secret for manual entry, the otpauth URI and its QR code (an SVG data: URI)."""

    credential_id: str
    secret: str
    otpauth_uri: str
    qr_code: str


class RecoveryCodes(_Model):
    """Shown once; every earlier code stops working."""

    recovery_codes: list[str]


class PasskeyOptions(_Model):
    ceremony: str = Field(description="Pass back with the credential.")
    publicKey: dict[str, Any] = Field(description="PublicKeyCredentialCreationOptionsJSON")


class PasskeyRegistration(_Model):
    ceremony: str = Field(min_length=1, max_length=200, description="From POST /api/account/passkeys/options.")
    credential: dict[str, Any] = Field(description="The RegistrationResponseJSON of navigator.credentials.create().")
    name: str | None = Field(default=None, description=f"At most {MAX_NAME_LENGTH} characters; default: Passkey.")


class PasskeyRename(_Model):
    name: str = Field(min_length=1, description=f"At most {MAX_NAME_LENGTH} characters (trimmed).")


class Reauthentication(_Model):
    """Optional: without it, the token's sign-in must be at most 5 minutes old."""

    password: str | None = Field(default=None, min_length=1)


class SessionList(_Model):
    sessions: list[SessionOut]


class SessionsEnded(_Model):
    ended: int
