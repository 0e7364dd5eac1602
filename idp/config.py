"""Settings: one TOML file plus ``IDP_*`` environment overrides, validated once at start-up.

Precedence, lowest to highest: built-in defaults < the TOML file (``--config`` or ``IDP_CONFIG``)
< environment variables. Environment names are the key path upper-cased and joined with ``__``
under the ``IDP_`` prefix: ``issuer`` is ``IDP_ISSUER``, ``server.port`` is ``IDP_SERVER__PORT``.
``config.example.toml`` documents every key with its default; a test keeps the two in step.

Any problem (unknown key, wrong type, missing secret outside dev mode) raises ``ConfigError``
with one line naming the key and where its value came from.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from idp.security.hosts import is_loopback_host
from idp.storage.urls import redact_url

ENV_PREFIX = "IDP_"
ENV_SEPARATOR = "__"
# Environment names with the prefix that are not settings keys.
RESERVED_ENV = frozenset({"IDP_CONFIG"})
RESERVED_ENV_PREFIXES = ("IDP_TEST_",)

SigningAlg = Literal["RS256", "ES256", "Ed25519", "EdDSA"]
_DEFAULT_ALGS: list[SigningAlg] = ["RS256", "ES256", "Ed25519"]


class ConfigError(Exception):
    """A configuration problem, phrased for the operator in one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    # Worker processes of `idp serve`; more than one needs redis_url (workers_without_shared_state).
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    # Addresses of reverse proxies whose X-Forwarded-For/-Proto headers are trusted (RFC 9700 §4.13:
    # never trust forwarding headers from anyone else).
    forwarded_allow_ips: list[str] = Field(default_factory=list)
    # Debugging and benchmarks only: measure how long the event loop stalls (a step that blocks
    # it delays every request of the worker), read and reset at /debug/loop-lag from loopback.
    loop_lag_probe: bool = False


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # "auto": JSON lines in production, readable text in dev mode.
    format: Literal["auto", "json", "text"] = "auto"


class SecretSettings(_Section):
    # Signs cookies and CSRF tokens. At least 32 random bytes, e.g. `idp secrets generate`.
    cookie_secret: SecretStr | None = None
    # Encrypts signing keys (and TOTP seeds) at rest: 32 bytes, base64url. `idp secrets generate`.
    key_encryption_key: SecretStr | None = None
    # Older key-encryption keys still accepted for decryption after a change of key.
    previous_key_encryption_keys: list[SecretStr] = Field(default_factory=list)
    # Derives pairwise subject identifiers (OIDC Core §8.1). Needed only for pairwise clients;
    # changing it changes every pairwise `sub`, so treat it as permanent.
    pairwise_secret: SecretStr | None = None

    @field_validator("cookie_secret", "key_encryption_key", "pairwise_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # IDP_SECRETS__X="" (an unset variable in many deployment tools) means "not configured".
        return None if value == "" else value

    @field_validator("pairwise_secret")
    @classmethod
    def _pairwise_secret_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters of random data")
        return value

    @field_validator("cookie_secret")
    @classmethod
    def _cookie_secret_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters of random data")
        return value

    @field_validator("key_encryption_key")
    @classmethod
    def _kek_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_kek(value.get_secret_value())
        return value

    @field_validator("previous_key_encryption_keys")
    @classmethod
    def _previous_kek_shape(cls, value: list[SecretStr]) -> list[SecretStr]:
        for item in value:
            decode_kek(item.get_secret_value())
        return value


class TokenSettings(_Section):
    # RFC 6749 §4.1.2 recommends at most 10 minutes; ASVS 10.4.3.
    authorization_code_ttl: Annotated[int, Field(ge=10, le=600)] = 60
    # Short-lived access tokens (RFC 9700 §4.10): revocation need only be remembered this long.
    access_token_ttl: Annotated[int, Field(ge=30, le=86400)] = 600
    id_token_ttl: Annotated[int, Field(ge=30, le=86400)] = 3600
    # Absolute refresh-token lifetime, even with rotation (ASVS 10.4.8).
    refresh_token_ttl: Annotated[int, Field(ge=60, le=31536000)] = 2592000
    # A refresh token unused for this long expires (RFC 9700 §4.14.2: expire after inactivity).
    refresh_token_idle_ttl: Annotated[int, Field(ge=60, le=31536000)] = 1209600

    @model_validator(mode="after")
    def _idle_within_absolute(self) -> TokenSettings:
        if self.refresh_token_idle_ttl > self.refresh_token_ttl:
            raise ValueError("refresh_token_idle_ttl must not exceed refresh_token_ttl")
        return self


class KeySettings(_Section):
    # One active signing key is kept per algorithm listed here; the first is the default for
    # access tokens and for ID tokens of clients that don't choose one.
    algorithms: list[SigningAlg] = Field(default_factory=lambda: _DEFAULT_ALGS.copy(), min_length=1)
    rsa_key_size: Literal[2048, 3072, 4096] = 2048
    # How often each instance re-reads the key set from the database, so a rotation made on one
    # node (or by `idp keys rotate`) reaches every node.
    reload_interval: Annotated[int, Field(ge=1, le=3600)] = 60
    # A rotated-in key is published this many seconds before it signs, so relying parties that
    # cached the JWKS (we advertise max-age 300) have it before they meet it; the old key signs
    # until then. `idp keys rotate --now` (a compromised key) hands over at once.
    publish_ahead: Annotated[int, Field(ge=0, le=604800)] = 900
    # Rotate every key automatically when its newest one is this many seconds old (0: never;
    # `idp keys rotate` rotates by hand). At least an hour.
    rotate_every: Annotated[int, Field(ge=0, le=31536000)] = 0

    @field_validator("rotate_every")
    @classmethod
    def _rotation_not_too_often(cls, value: int) -> int:
        if 0 < value < 3600:
            raise ValueError("must be 0 (never) or at least 3600 seconds")
        return value

    @field_validator("algorithms")
    @classmethod
    def _normalise_algorithms(cls, value: list[str]) -> list[str]:
        # RFC 9864 names the Ed25519 JWS algorithm "Ed25519"; "EdDSA" is the older, polymorphic name.
        normalised = ["Ed25519" if alg == "EdDSA" else alg for alg in value]
        if len(set(normalised)) != len(normalised):
            raise ValueError("lists an algorithm twice")
        # OIDC Core §15.1 and Discovery 1.0 §3: every OP signs ID tokens with RS256 on request. It
        # need not come first: the first algorithm is only the default.
        if "RS256" not in normalised:
            raise ValueError("must include RS256, which every OpenID provider supports (OIDC Core §15.1)")
        return normalised


class SessionSettings(_Section):
    # The IdP's own browser session (single sign-on). NIST SP 800-63B rev. 4 §5: re-authenticate
    # after at most 1 hour of inactivity and 24 hours overall at AAL2.
    idle_ttl: Annotated[int, Field(ge=60, le=604800)] = 3600
    absolute_ttl: Annotated[int, Field(ge=300, le=7776000)] = 86400
    # How long a user may take to sign in and consent before the authorization request expires.
    interaction_ttl: Annotated[int, Field(ge=60, le=3600)] = 600
    # Sessions one user may have at once (0: no limit), and what a sign-in beyond that does:
    # "end_oldest" ends the user's oldest session, "refuse" refuses the sign-in with a message.
    max_per_user: Annotated[int, Field(ge=0, le=1000)] = 10
    limit_policy: Literal["end_oldest", "refuse"] = "end_oldest"
    # Mail the user when their account signs in from a browser it never used before.
    notify_new_device: bool = True
    # When a session ends early (logout, ended from another device, password change …), revoke
    # the grants issued within it, refresh and access tokens alike: "online" those without a
    # refresh token with offline_access (OIDC Core §11: offline access outlives the sign-in; a
    # client without refresh tokens keeps nothing offline), "all", or "none". Back-channel logout
    # is sent anyway.
    end_revokes_refresh_tokens: Literal["online", "all", "none"] = "online"

    @model_validator(mode="after")
    def _idle_within_absolute(self) -> SessionSettings:
        if self.idle_ttl > self.absolute_ttl:
            raise ValueError("idle_ttl must not exceed absolute_ttl")
        return self


class MailSettings(_Section):
    # "outbox": write each message as an .eml file under outbox_dir (development default);
    # "smtp": send through the SMTP server below.
    backend: Literal["outbox", "smtp"] = "outbox"
    sender: str = "idp <no-reply@localhost>"
    # Default: data_dir/outbox.
    outbox_dir: str = ""
    smtp_host: str = "localhost"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    # "starttls" (port 587), "tls" (implicit TLS, port 465) or "none" (loopback relays only).
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    timeout: Annotated[float, Field(gt=0, le=120)] = 10.0


class PasswordPolicySettings(_Section):
    # NIST SP 800-63B rev. 4 §3.1.1.2: 15 characters when the password is the only factor,
    # 8 when it is one of two; at least 64 allowed. No composition rules by default.
    min_length: Annotated[int, Field(ge=8, le=64)] = 15
    min_length_with_mfa: Annotated[int, Field(ge=8, le=64)] = 8
    max_length: Annotated[int, Field(ge=64, le=1024)] = 128
    # zxcvbn strength score required (0-4); 0 switches the estimate off.
    min_strength: Annotated[int, Field(ge=0, le=4)] = 3
    # Character classes (lower, upper, digit, other) a password must mix; 0 = off, as advised.
    required_character_classes: Annotated[int, Field(ge=0, le=4)] = 0
    # Extra blocked passwords, one per line (e.g. a breached-password corpus), besides the
    # common-password list shipped with idp.
    blocklist_file: str = ""
    # Context-specific words a password may not contain (ASVS 6.1.2), besides the user's own
    # email and name.
    context_words: list[str] = Field(default_factory=lambda: ["idp", "identity", "openid"])


class AccountSettings(_Section):
    # Self-service registration; off means accounts are created by administrators only.
    registration_enabled: bool = True
    # Seconds an email-verification link stays valid.
    verification_ttl: Annotated[int, Field(ge=300, le=604800)] = 86400
    # Seconds a password-reset link stays valid (short: it is a credential).
    reset_ttl: Annotated[int, Field(ge=300, le=86400)] = 1800


class PasswordHashSettings(_Section):
    # argon2id; OWASP Password Storage Cheat Sheet minimum: m=19 MiB, t=2, p=1.
    time_cost: Annotated[int, Field(ge=1, le=20)] = 2
    memory_cost_kib: Annotated[int, Field(ge=7168, le=4194304)] = 19456
    parallelism: Annotated[int, Field(ge=1, le=16)] = 1
    # Hashing threads per worker process (0: one per core). They run at a lower priority than
    # the event loop, so a burst of sign-ins slows sign-ins, not the token endpoint.
    threads: Annotated[int, Field(ge=0, le=256)] = 0
    # Hashes that may wait for a thread; past that a sign-in or password change answers 503 with
    # Retry-After rather than queueing without bound.
    queue_limit: Annotated[int, Field(ge=0, le=100000)] = 1024


class PictureSettings(_Section):
    # Where uploaded profile pictures are kept: "filesystem" (under `directory`) or "s3" (any
    # S3-compatible object store, with the s3_* keys below).
    backend: Literal["filesystem", "s3"] = "filesystem"
    # Default: data_dir/pictures (created with mode 0700).
    directory: str = ""
    # Largest accepted upload, in bytes (the request is refused with 413 above it).
    max_upload_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 5242880
    # Largest accepted width x height, checked from the header before any pixel is decoded
    # (a small file can declare a huge image: a decompression bomb).
    max_pixels: Annotated[int, Field(ge=4096, le=178956970)] = 40000000
    # Square sizes, in pixels, each picture is stored at; the largest is the `picture` claim.
    sizes: list[Annotated[int, Field(ge=16, le=2048)]] = Field(
        default_factory=lambda: [256, 64], min_length=1, max_length=8
    )
    s3_bucket: str = ""
    # Empty: AWS's own endpoint for s3_region.
    s3_endpoint_url: str = ""
    s3_region: str = ""
    # Empty: the usual AWS credential chain (environment, shared files, instance role).
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None

    @field_validator("s3_access_key", "s3_secret_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("sizes")
    @classmethod
    def _distinct_sizes(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("lists a size twice")
        return sorted(value, reverse=True)

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_shape(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError("must be an absolute http(s) URL, or empty")
        return value

    @model_validator(mode="after")
    def _s3_requirements(self) -> PictureSettings:
        if (self.s3_access_key is None) != (self.s3_secret_key is None):
            raise ValueError("s3_access_key and s3_secret_key must be set together")
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("s3_bucket: required when backend is s3")
        return self


class MfaSettings(_Section):
    # Who must have a second factor: "off" (optional), "admins" (administrators) or "all". Users
    # the policy covers who have none are led through enrolment at their next sign-in (ASVS 6.3.3).
    required: Literal["off", "admins", "all"] = "off"
    # The name authenticator apps show next to the code; empty: the issuer's host name.
    totp_issuer: Annotated[str, Field(max_length=100)] = ""


class AdminSettings(_Section):
    # Administrators must have signed in with a second factor to use the admin pages and API (an
    # administrator without one is sent to enrol first). Machine clients (client_credentials with
    # the "admin" scope) are not people and are not asked.
    require_mfa: bool = True
    # Destructive admin actions (delete a user, reset second factors, grant admin, rotate keys,
    # delete a client) need a sign-in at most this many seconds old (ASVS 5.0 re-authentication).
    fresh_auth_max_age: Annotated[int, Field(ge=60, le=3600)] = 300


class NotificationSettings(_Section):
    # The live notification channel (/ws/notifications): a first-party browser app hears the
    # user's security events the moment they happen, on any node.
    enabled: bool = True
    # Seconds between the server's pings; a socket silent for twice as long is closed.
    heartbeat: Annotated[int, Field(ge=5, le=300)] = 25
    # Seconds a new socket has to send its access token.
    auth_timeout: Annotated[int, Field(ge=1, le=60)] = 10
    # Seconds between re-checks that the socket's token is still valid (not revoked); it is also
    # re-checked at once after a session of the user ends, and the socket closes when it expires.
    recheck_interval: Annotated[int, Field(ge=5, le=3600)] = 60
    # Sockets one user may hold on one node (tabs, devices); one more is refused.
    max_per_user: Annotated[int, Field(ge=1, le=100)] = 10
    # Messages waiting for one socket; a consumer that falls this far behind is disconnected
    # (it reconnects and fetches what it missed) instead of growing the server's memory.
    queue_limit: Annotated[int, Field(ge=10, le=10000)] = 100


class OutboxSettings(_Section):
    # The durable outbox (idp.outbox, docs/outbox.md): mail and back-channel logout tokens are
    # written in the transaction that causes them and delivered by a worker on every node.
    # Seconds between looks for due messages (a commit that enqueues wakes this node at once).
    poll_interval: Annotated[float, Field(ge=0.1, le=300)] = 5.0
    # Seconds before the first retry; doubled per attempt (with full jitter) up to max_delay.
    base_delay: Annotated[float, Field(ge=0.01, le=3600)] = 30.0
    max_delay: Annotated[float, Field(ge=0.01, le=86400)] = 3600.0
    # Attempts before a message is dead-lettered (`idp outbox list`, `idp outbox retry --dead`).
    # With the defaults the waits add up to at most a day (on average about half of it).
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 30
    # Seconds a node holds a message it claimed; one that died holding it is retried after.
    lease: Annotated[float, Field(ge=1, le=3600)] = 60.0
    # Messages claimed at once, and delivered concurrently, by one node.
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 50

    @model_validator(mode="after")
    def _delays_in_order(self) -> OutboxSettings:
        if self.max_delay < self.base_delay:
            raise ValueError("max_delay must be at least base_delay")
        return self


class WebAuthnSettings(_Section):
    # Relying-party id (WebAuthn §5.1.2): the issuer's host or a registrable suffix of it; passkeys
    # are bound to it for ever, so choose it once. Empty: the issuer's host name.
    rp_id: str = ""
    # The name authenticators show when a passkey is created.
    rp_name: Annotated[str, Field(min_length=1, max_length=64)] = "idp"
    # Origins accepted in WebAuthn responses (scheme://host[:port]); empty: the issuer's origin.
    origins: list[str] = Field(default_factory=list)
    # Seconds a registration or sign-in ceremony (its challenge) stays valid.
    challenge_ttl: Annotated[int, Field(ge=30, le=600)] = 300

    @field_validator("origins")
    @classmethod
    def _origin_shape(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("https", "http") or not parts.hostname or parts.path or parts.query:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port])")
        return value


class Limit(_Section):
    # At most `requests` within any `window` seconds (a sliding window).
    requests: Annotated[int, Field(ge=1, le=1_000_000)]
    window: Annotated[int, Field(ge=1, le=86400)]


def _limit(requests: int, window: int) -> Any:
    return Field(default_factory=lambda: Limit(requests=requests, window=window))


class RateLimitSettings(_Section):
    # Counters live in the key-value store, so every instance sharing one Redis shares them. Over a
    # limit the answer is 429 with Retry-After. Every attempt counts, refused ones included.
    # Password sign-in attempts: per client IP, and per account (the email address entered).
    login_per_ip: Limit = _limit(100, 300)
    login_per_account: Limit = _limit(30, 300)
    # Second-factor attempts (TOTP, recovery code, passkey after the password).
    mfa_per_account: Limit = _limit(10, 300)
    mfa_per_ip: Limit = _limit(50, 300)
    # Passwordless passkey sign-ins, per client IP.
    passkey_login_per_ip: Limit = _limit(60, 300)
    # Sign-ups, per client IP.
    registration_per_ip: Limit = _limit(20, 3600)
    # Password reset requests, per IP and per address asked for (each one sends a mail).
    password_reset_per_ip: Limit = _limit(20, 3600)
    password_reset_per_account: Limit = _limit(5, 3600)
    # The sign-up and password forms' checks of a password as it is typed, per client IP.
    password_check_per_ip: Limit = _limit(120, 60)
    # Re-sent verification mails, per IP and per address.
    verification_resend_per_ip: Limit = _limit(20, 3600)
    verification_resend_per_account: Limit = _limit(5, 3600)
    # Requests to the endpoints where clients authenticate: token, introspection and revocation,
    # each counted on its own. Before authentication a request counts per client IP only (client
    # ids are public, so failures counted per client would let anyone lock a client out); once
    # authenticated, per client as well.
    token_per_ip: Limit = _limit(1200, 60)
    token_per_client: Limit = _limit(1200, 60)


class LockoutSettings(_Section):
    # Brute-force protection for password sign-in (see idp.security.lockout). Failures are counted
    # within `window` seconds. From one IP on one account: after `delay_after` failures each further
    # attempt waits 1, 2, 4 … up to `max_delay` seconds; after `lock_after` failures that IP may
    # not try that account for `lock_duration` seconds.
    window: Annotated[int, Field(ge=60, le=86400)] = 900
    delay_after: Annotated[int, Field(ge=1, le=1000)] = 3
    max_delay: Annotated[int, Field(ge=1, le=3600)] = 30
    lock_after: Annotated[int, Field(ge=1, le=1000)] = 10
    lock_duration: Annotated[int, Field(ge=60, le=86400)] = 900
    # From all IPs together: after this many failures the account is locked for `lock_duration`,
    # for browsers that never signed in to it (a browser the owner used before still works).
    account_lock_after: Annotated[int, Field(ge=1, le=100000)] = 50
    # One IP failing this often within `window`, on any accounts (credential stuffing), is refused
    # for a whole `window`.
    ip_failures: Annotated[int, Field(ge=1, le=100000)] = 100
    # Mail the account's owner when a lock is switched on.
    notify: bool = True

    @model_validator(mode="after")
    def _delay_before_lock(self) -> LockoutSettings:
        if self.delay_after > self.lock_after:
            raise ValueError("delay_after must not exceed lock_after")
        return self


class MetricsSettings(_Section):
    # Prometheus metrics at /metrics on the main listener (idp.metrics; docs/deployment.md).
    enabled: bool = True
    # The token a scraper presents (Authorization: Bearer …), at least 32 characters. Without one,
    # /metrics answers only loopback callers that came through no proxy; outside dev mode a server
    # listening beyond loopback (server.host) must set one, or switch metrics off.
    bearer_token: SecretStr | None = None

    @field_validator("bearer_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("bearer_token")
    @classmethod
    def _token_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters of random data")
        return value


class Settings(_Section):
    # The issuer identifier (OIDC Discovery §3): an https URL without query or fragment; http is
    # accepted only for loopback hosts or in dev mode.
    issuer: str = "http://127.0.0.1:8000"
    # Dev mode: readable logs and generated secrets kept in data_dir. Never in production.
    dev_mode: bool = False
    # Runtime files (SQLite database, dev secrets, uploads).
    data_dir: str = "var"
    # SQLAlchemy async URL: sqlite+aiosqlite:///var/idp.sqlite3 (embedded) or
    # postgresql+asyncpg://user:pass@host/db (production).
    database_url: str = "sqlite+aiosqlite:///var/idp.sqlite3"
    # Redis for state shared by instances; empty means the in-process store (single node only).
    redis_url: str = ""
    # Namespace for every key this deployment writes to Redis.
    redis_key_prefix: str = "idp:"
    # Seconds the server waits at start for the database and Redis to answer (they may be starting
    # beside it) before it gives up with an error naming the one that didn't.
    startup_wait: Annotated[float, Field(ge=0, le=600)] = 10.0
    server: ServerSettings = Field(default_factory=ServerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    secrets: SecretSettings = Field(default_factory=SecretSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    password_policy: PasswordPolicySettings = Field(default_factory=PasswordPolicySettings)
    accounts: AccountSettings = Field(default_factory=AccountSettings)
    password_hash: PasswordHashSettings = Field(default_factory=PasswordHashSettings)
    pictures: PictureSettings = Field(default_factory=PictureSettings)
    mfa: MfaSettings = Field(default_factory=MfaSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    webauthn: WebAuthnSettings = Field(default_factory=WebAuthnSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    lockout: LockoutSettings = Field(default_factory=LockoutSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @field_validator("issuer")
    @classmethod
    def _issuer_shape(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query or fragment (OIDC Discovery §3)")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url_shape(cls, value: str) -> str:
        scheme = value.split("://", 1)[0]
        if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// (the async drivers idp ships)"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_shape(cls, value: str) -> str:
        if value and value.split("://", 1)[0] not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL, or empty")
        return value

    @model_validator(mode="after")
    def _webauthn_scope(self) -> Settings:
        # WebAuthn §5.1.2/§13.4.9: the RP ID is the origin's host or a registrable suffix of it.
        rp_id = self.webauthn.rp_id
        if not rp_id:
            return self
        hosts = [urlsplit(origin).hostname or "" for origin in self.webauthn.origins] or [
            urlsplit(self.issuer).hostname or ""
        ]
        for host in hosts:
            if host != rp_id and not host.endswith("." + rp_id):
                raise ValueError(f"webauthn.rp_id: {rp_id!r} is neither {host!r} nor a parent domain of it")
        return self

    @model_validator(mode="after")
    def _shared_state_for_workers(self) -> Settings:
        problem = workers_without_shared_state(self.server.workers, self.redis_url)
        if problem:
            raise ValueError(f"server.workers: {problem}")
        return self

    @model_validator(mode="after")
    def _production_requirements(self) -> Settings:
        if self.dev_mode:
            return self
        host = urlsplit(self.issuer).hostname or ""
        if urlsplit(self.issuer).scheme != "https" and not is_loopback_host(host):
            raise ValueError("issuer: must be https outside dev mode (RFC 8414 §2); http is for loopback only")
        if self.secrets.cookie_secret is None:
            raise ValueError("secrets.cookie_secret: required outside dev mode (generate: idp secrets generate)")
        if self.secrets.key_encryption_key is None:
            raise ValueError("secrets.key_encryption_key: required outside dev mode (generate: idp secrets generate)")
        if self.metrics.enabled and self.metrics.bearer_token is None and not is_loopback_host(self.server.host):
            raise ValueError(
                f"metrics.bearer_token: required outside dev mode when server.host ({self.server.host}) listens "
                "beyond loopback (a proxy on this host would make every caller look local); set one, or "
                "metrics.enabled = false"
            )
        return self

    @property
    def issuer_is_https(self) -> bool:
        return self.issuer.startswith("https://")

    @property
    def log_format(self) -> Literal["json", "text"]:
        if self.log.format == "auto":
            return "text" if self.dev_mode else "json"
        return self.log.format

    def redacted(self) -> dict[str, Any]:
        """The effective settings with secrets and URL passwords masked, for `idp config check`."""
        data = self.model_dump(mode="json")
        data["database_url"] = redact_url(self.database_url)
        data["redis_url"] = redact_url(self.redis_url)
        return data


def workers_without_shared_state(workers: int, redis_url: str) -> str | None:
    """Why ``workers`` processes can't run without Redis, or None when they can.

    Each process has its own in-process store: a token revoked, an assertion used or a session
    ended in one worker would still be accepted by the others (RFC 7009 §2.2, RFC 7523 §3)."""
    if workers > 1 and not redis_url:
        return (
            f"{workers} worker processes need redis_url (each would keep its own sessions, revoked tokens and "
            "replay records); set redis_url or run 1 worker"
        )
    return None


def decode_kek(value: str) -> bytes:
    """Decode a key-encryption key: 32 bytes, base64url (padding optional)."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("must be 32 bytes encoded as base64url") from exc
    if len(raw) != 32:
        raise ValueError(f"must be 32 bytes encoded as base64url (got {len(raw)} bytes)")
    return raw


def generate_secrets() -> dict[str, str]:
    """Fresh values for every secret setting."""
    return {
        "cookie_secret": secrets.token_urlsafe(48),
        "pairwise_secret": secrets.token_urlsafe(48),
        "key_encryption_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode(),
    }


# ---------------------------------------------------------------------------------------------------
# Loading


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build validated settings from defaults, the TOML file, the environment and explicit overrides.

    ``config_path`` wins over ``IDP_CONFIG``. ``overrides`` (nested dict) is for tests and for
    commands such as ``idp demo`` that force a value; it has the highest precedence.
    """
    env = dict(os.environ if environ is None else environ)
    sources: dict[tuple[str, ...], str] = {}
    data: dict[str, Any] = {}

    path = config_path or env.get("IDP_CONFIG") or None
    if path:
        file_data = _read_toml(Path(path))
        _merge(data, file_data, sources, origin=str(path))

    _merge(data, _environment_values(env), sources, origin=None)
    if overrides:
        _merge(data, dict(overrides), sources, origin="override")

    if data.get("dev_mode") in (True, "true", "1", "yes", "on"):
        _fill_dev_secrets(data, sources)

    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except PermissionError:
        raise ConfigError(f"config file {path}: not readable (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not valid UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a directory") from None


# Settings that may be read from a file named by IDP_<NAME>_FILE (Docker and systemd credentials,
# Kubernetes secrets): every SecretStr setting, and the URLs that carry a password.
FILE_SUFFIX = "_FILE"
_URLS_WITH_PASSWORDS = frozenset({("database_url",), ("redis_url",)})


def file_settings(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> frozenset[tuple[str, ...]]:
    """Key paths of the secret settings (SecretStr, alone or in a list), and the two URLs."""
    found: set[tuple[str, ...]] = set(_URLS_WITH_PASSWORDS) if not prefix else set()
    for key, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            found |= file_settings(annotation, (*prefix, key))
        elif "SecretStr" in str(annotation):
            found.add((*prefix, key))
    return frozenset(found)


def _read_secret_file(name: str, path: str) -> str:
    """The content of a ``*_FILE`` setting, trailing newline removed. Errors name the variable and
    the path, never the content."""
    try:
        content = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: file {path} not found") from None
    except PermissionError:
        raise ConfigError(f"{name}: file {path} not readable (permission denied)") from None
    except IsADirectoryError:
        raise ConfigError(f"{name}: {path} is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: file {path} is not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{name}: file {path} not readable ({exc.strerror or type(exc).__name__})") from None
    content = content.rstrip("\r\n")
    if not content:
        raise ConfigError(f"{name}: file {path} is empty")
    return content


def _environment_values(env: Mapping[str, str]) -> dict[str, Any]:
    """Turn IDP_A__B=v into {"a": {"b": v}}, tagged with the variable name for error messages.

    IDP_A__B_FILE=/path gives a secret setting the content of that file instead; setting both
    IDP_A__B and IDP_A__B_FILE is an error."""
    result: dict[str, Any] = {}
    secret_paths = file_settings()
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR)]
        if not all(path):
            raise ConfigError(f"{name}: malformed variable name (use IDP_SECTION__KEY)")
        if name.endswith(FILE_SUFFIX) and len(path[-1]) > len(FILE_SUFFIX):
            path[-1] = path[-1][: -len(FILE_SUFFIX)]
            if tuple(path) not in secret_paths:
                raise ConfigError(f"{name}: {'.'.join(path)} is not a secret setting that can be read from a file")
            plain = name[: -len(FILE_SUFFIX)]
            if plain in env:
                raise ConfigError(f"{name}: {plain} is set as well; set one of the two")
            raw = _read_secret_file(name, raw)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: conflicts with another IDP_ variable")
            node = child
        node[path[-1]] = _EnvValue(name, _parse_env_value(name, raw))
    return result


class _EnvValue:
    """A value from the environment, remembering its variable name until merged."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value


def _parse_env_value(name: str, raw: str) -> Any:
    # Lists are written as JSON arrays (IDP_KEYS__ALGORITHMS='["ES256"]') and tables as JSON
    # objects (IDP_RATE_LIMITS__TOKEN_PER_IP='{"requests": 5000, "window": 60}', the same as setting
    # each member); everything else is a string that pydantic coerces (ints, booleans) and reports
    # precisely when it can't.
    stripped = raw.strip()
    if stripped.startswith("["):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    if stripped.startswith("{"):
        try:
            table = json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):
            raise ConfigError(f"{name}: not a valid JSON object") from None
        if isinstance(table, dict):
            return table
    return raw


def _merge(
    target: dict[str, Any],
    incoming: dict[str, Any],
    sources: dict[tuple[str, ...], str],
    origin: str | None,
    prefix: tuple[str, ...] = (),
) -> None:
    for key, value in incoming.items():
        path = (*prefix, key)
        if isinstance(value, dict) and not isinstance(value, _EnvValue):
            existing = target.get(key)
            if not isinstance(existing, dict):
                existing = {}
                target[key] = existing
            _merge(existing, value, sources, origin, path)
            continue
        if isinstance(value, _EnvValue):
            sources[path] = value.name
            value = value.value
        elif origin is not None:
            sources[path] = origin
        target[key] = value


def _fill_dev_secrets(data: dict[str, Any], sources: dict[tuple[str, ...], str]) -> None:
    """In dev mode, generate missing secrets once and keep them in data_dir/dev-secrets.json.

    Persisting them keeps encrypted signing keys readable across restarts; the file is created
    with mode 0600 and is never used outside dev mode.
    """
    section = data.setdefault("secrets", {})
    if not isinstance(section, dict):
        return
    missing = [name for name in ("cookie_secret", "key_encryption_key", "pairwise_secret") if not section.get(name)]
    if not missing:
        return
    data_dir = Path(str(data.get("data_dir", "var")))
    path = data_dir / "dev-secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ConfigError(f"{path}: unreadable dev secrets file (delete it to regenerate)") from None
    if not all(name in stored for name in missing):
        stored = {**generate_secrets(), **stored}
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(stored, handle)
    for name in missing:
        section[name] = stored[name]
        sources[("secrets", name)] = str(path)


def _describe(exc: ValidationError, sources: dict[tuple[str, ...], str]) -> str:
    """One line for the first validation error: key, problem, and where the value came from."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(str(part) for part in error["loc"])
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        key = ".".join(loc)
        return f"{key}: unknown setting{_origin(loc, sources)}"
    if not loc:
        # model-level checks name their own key in the message
        return message
    key = ".".join(part for part in loc if not part.isdigit())
    shown = ""
    from_file = _origin(loc, sources).endswith(f"{FILE_SUFFIX}]")
    if (
        "input" in error
        and not isinstance(error["input"], dict)
        and error["type"] != "missing"
        and "secret" not in key
        and tuple(key.split(".")) not in file_settings()
        and not from_file
    ):
        shown = f" (got {error['input']!r})"
    return f"{key}: {message}{shown}{_origin(loc, sources)}"


def _origin(loc: tuple[str, ...], sources: dict[tuple[str, ...], str]) -> str:
    for length in range(len(loc), 0, -1):
        origin = sources.get(loc[:length])
        if origin:
            return f" [from {origin}]"
    return ""
