"""SQLAlchemy models: the relational state of the identity provider.

The same models serve SQLite (embedded) and PostgreSQL (production); Alembic migrations in
``migrations/`` are kept identical to them (a test runs autogenerate and expects no difference).
Everything a user owns references ``users.id`` with ``ON DELETE CASCADE`` so that deleting an
account purges it; the audit log keeps only an opaque subject id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone, so store naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class User(Base):
    __tablename__ = "users"

    # Also the public `sub` claim: random, stable, never the email (OIDC Core §5.7).
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased address used for uniqueness and look-up; `email` keeps what the user typed.
    email_normalized: Mapped[str] = mapped_column(String(320), unique=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(200))
    given_name: Mapped[str | None] = mapped_column(String(100))
    family_name: Mapped[str | None] = mapped_column(String(100))
    preferred_username: Mapped[str | None] = mapped_column(String(100))
    locale: Mapped[str | None] = mapped_column(String(35))
    zoneinfo: Mapped[str | None] = mapped_column(String(64))
    picture: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    password_changed_at: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]


class OAuthClient(Base):
    __tablename__ = "oauth_clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    client_type: Mapped[str] = mapped_column(String(16))  # "public" | "confidential"
    application_type: Mapped[str] = mapped_column(String(16), default="web")  # "web" | "native"
    # HMAC-SHA256 of the IdP-generated secret; compared in constant time.
    secret_digest: Mapped[str | None] = mapped_column(String(128))
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    redirect_uris: Mapped[list[str]] = mapped_column(default=list)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(default=list)
    grant_types: Mapped[list[str]] = mapped_column(default=list)
    response_types: Mapped[list[str]] = mapped_column(default=list)
    scopes: Mapped[list[str]] = mapped_column(default=list)
    web_origins: Mapped[list[str]] = mapped_column(default=list)
    id_token_signed_response_alg: Mapped[str | None] = mapped_column(String(16))
    subject_type: Mapped[str] = mapped_column(String(16), default="public")  # "public" | "pairwise"
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(String(2048))
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2048))
    backchannel_logout_session_required: Mapped[bool] = mapped_column(Boolean, default=True)
    require_pkce: Mapped[bool] = mapped_column(Boolean, default=True)
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuthorizationCode(Base):
    __tablename__ = "authorization_codes"

    # SHA-256 of the code: the code itself is never stored.
    code_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The grant this code starts; refresh tokens and revocations hang off it (RFC 9700 §4.2.4).
    grant_id: Mapped[str] = mapped_column(String(36), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    # Whether the authorization request carried redirect_uri: then the token request must repeat
    # it (RFC 6749 §4.1.3). Rows from before the column say true (migration 0005), the stricter answer.
    redirect_uri_in_request: Mapped[bool] = mapped_column(Boolean, default=True)
    scope: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(String(512))
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    session_id: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[datetime]
    acr: Mapped[str | None] = mapped_column(String(100))
    amr: Mapped[list[str]] = mapped_column(default=list)
    claims: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    # The JWT's `jti`.
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    # SHA-256 of the whole token as issued, so a forged token with a known jti is still refused.
    token_digest: Mapped[str] = mapped_column(String(64))
    # Every token rotated from one authorization shares its family (RFC 9700 §4.14.2).
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    parent_jti: Mapped[str | None] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    auth_time: Mapped[datetime | None]
    acr: Mapped[str | None] = mapped_column(String(100))
    amr: Mapped[list[str]] = mapped_column(default=list)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    # The family's absolute end, carried over on rotation (ASVS 10.4.8).
    family_expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Consent(Base):
    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("user_id", "client_id", name="uq_consents_user_client"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True)
    scopes: Mapped[list[str]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    # Public JWK (no private members), published in the JWKS.
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The private JWK, AES-256-GCM encrypted under the configured key-encryption key.
    private_jwk_encrypted: Mapped[str] = mapped_column(Text)
    # "active" signs new tokens; "retired" only verifies until `publish_until`.
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]
    publish_until: Mapped[datetime | None]


class KnownDevice(Base):
    """Browsers a user has signed in from, recognised by a long-lived random cookie (its digest)."""

    __tablename__ = "known_devices"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    device_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "Firefox 120 on Windows", from the user agent of the latest sign-in.
    label: Mapped[str] = mapped_column(String(200))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_ip: Mapped[str | None] = mapped_column(String(64))


class MfaCredential(Base):
    __tablename__ = "mfa_credentials"
    __table_args__ = (Index("ix_mfa_credentials_user_type", "user_id", "type"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))  # "totp" | "webauthn"
    name: Mapped[str | None] = mapped_column(String(100))
    # TOTP: encrypted seed. WebAuthn: the COSE public key (base64url).
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    credential_id: Mapped[str | None] = mapped_column(String(1024), unique=True)
    public_key: Mapped[str | None] = mapped_column(Text)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[list[str]] = mapped_column(default=list)
    # WebAuthn §6.1.3 backup flags: eligibility (BE) is fixed when the credential is created, the
    # state (BS) is refreshed at each sign-in.
    backup_eligible: Mapped[bool] = mapped_column(Boolean, default=False)
    backed_up: Mapped[bool] = mapped_column(Boolean, default=False)
    # The authenticator model (WebAuthn §6.5.1), "00000000-0000-0000-0000-000000000000" when hidden.
    aaguid: Mapped[str | None] = mapped_column(String(36))
    # Client-side discoverable ("resident") credential, from the credProps extension; None: unknown.
    discoverable: Mapped[bool | None] = mapped_column(Boolean)
    # TOTP replay protection: the last accepted time step.
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)
    confirmed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]


class AuditEvent(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_subject_time", "subject_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    # Opaque ids only: after an account is deleted the trail keeps the event, not the person.
    actor_id: Mapped[str | None] = mapped_column(String(64))
    subject_id: Mapped[str | None] = mapped_column(String(64))
    client_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class OneTimeToken(Base):
    """Single-use, expiring links sent by email (verification, password reset, email change)."""

    __tablename__ = "one_time_tokens"
    __table_args__ = (Index("ix_one_time_tokens_user_purpose", "user_id", "purpose"),)

    # SHA-256 of the token in the link; the token itself is never stored.
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))  # "verify_email" | "reset_password" | "change_email"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The address being verified (differs from the user's current one for an email change).
    email: Mapped[str | None] = mapped_column(String(320))
    # Where to continue after use (a local path, e.g. a paused authorization request).
    return_to: Mapped[str | None] = mapped_column(String(2048))
    # SHA-256 of a cookie of the browser that asked for the link: used in that same browser,
    # verifying also signs the user in.
    browser_digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class RevokedAccessToken(Base):
    """An access token revoked before its expiry; the key-value denylist is rebuilt from these."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The token's own expiry: the row is purged after it.
    expires_at: Mapped[datetime] = mapped_column(index=True)


class RevokedGrant(Base):
    """A revoked grant (refresh-token family): every access token carrying its id is refused."""

    __tablename__ = "revoked_grants"

    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the last access token the grant could have issued expires: the row is purged after it.
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SessionClient(Base):
    """A relying party that joined a browser session: who gets a back-channel logout when it ends."""

    __tablename__ = "session_clients"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The session's absolute end: the row is purged after it.
    expires_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]


class OutboxMessage(Base):
    """A message to send (a mail, a back-channel logout token) or a request to resolve (a password
    reset asked for an address), written in the transaction of the change that causes it and
    delivered by idp.outbox's worker: what a user is told has happened is durable first."""

    __tablename__ = "outbox"
    # The worker's query: pending rows by when they are due.
    __table_args__ = (Index("ix_outbox_status_available_at", "status", "available_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))  # "mail" | "backchannel_logout" | "password_reset_request" | ...
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | dead
    # AES-GCM ciphertext of the JSON payload, bound to the row id (it holds links and addresses);
    # emptied once delivered.
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The next attempt; while a node holds the message, the end of its lease.
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # An exception type or an HTTP status: never an address, a link or a body.
    last_error: Mapped[str | None] = mapped_column(String(200))
    locked_by: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    dead_at: Mapped[datetime | None]


class Announcement(Base):
    """A message published on a key-value channel by a process whose store is its own (the
    in-process store: the command line, an embedded server), relayed from here to the other
    processes on this database (idp.storage.announcements). Rows live about a minute."""

    __tablename__ = "announcements"
    # Ids never reused on SQLite, even once every row is pruned: readers ask for ids above the last.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    origin: Mapped[str] = mapped_column(String(32))  # the publishing process, which doesn't hear itself
    channel: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
