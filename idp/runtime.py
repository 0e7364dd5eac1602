"""Long-lived resources of one process: database, key-value store, keys, events, hashers.

Created once per process (Quart's before_serving, or a CLI command) and closed at the end; nothing
lives in module globals, so any number of instances can share one PostgreSQL and one Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from idp.accounts import notifications
from idp.accounts.context import MAIL, AccountContext
from idp.accounts.live.hub import LiveHub
from idp.accounts.password_policy import PasswordPolicy
from idp.accounts.profile import pictures
from idp.accounts.recovery.passwords import RESET_REQUEST, ResetRequests
from idp.accounts.registration.signup import RESEND_REQUEST, ResendRequests
from idp.accounts.security.enrolment import Enrolment
from idp.accounts.security.mfa import totp_issuer_name
from idp.accounts.security.relying_party import RelyingParty
from idp.accounts.sessions.store import SessionStore
from idp.accounts.signin.pending import PendingLogins
from idp.audit import AuditLogger
from idp.config import Settings, decode_kek
from idp.cors import CorsPolicy
from idp.events import (
    AccountDeleting,
    AccountDisabled,
    AccountUnlocked,
    ClientCreated,
    ClientDeleted,
    ClientDisabled,
    ClientEnabled,
    ClientSecretRotated,
    ClientUpdated,
    ConsentWithdrawn,
    Event,
    EventBus,
    EventContext,
    PasswordResetCompleted,
    SessionEnded,
)
from idp.mail import EmailRenderer, build_mailer
from idp.oauth.denylist import Denylist
from idp.oauth.discovery import check_provider_metadata, provider_metadata
from idp.oauth.grants import GrantContext, revoke_session_grants, revoke_user_client_grants
from idp.oauth.interactions import InteractionStore
from idp.oauth.keys import KeyManager
from idp.oauth.logout import BACKCHANNEL_LOGOUT, BackchannelNotifier
from idp.oauth.subjects import SubjectResolver
from idp.oauth.tokens import TokenService
from idp.outbox import Outbox, Payload
from idp.security.encryption import DecryptionError, Encryptor
from idp.security.lockout import LoginGuard
from idp.security.passwords import PasswordHasher
from idp.security.ratelimit import RateLimiter
from idp.storage import migrate
from idp.storage.announcements import DatabaseRelay, relay_for
from idp.storage.blobs import BlobStore, FilesystemBlobStore, S3BlobStore
from idp.storage.db import Database, DatabaseUnavailable
from idp.storage.kv import KeyValueStore, KeyValueUnavailable, MemoryStore, open_kv_store
from idp.storage.repositories import ClientRepository, UnitsOfWork, UserRepository
from idp.storage.repositories.client_cache import ClientCache
from idp.storage.repositories.user_cache import UserCache

log = logging.getLogger("idp")

# One attempt to reach the database or Redis at startup may take this long even when the wait is
# shorter (a busy machine can take seconds to open a first connection); a refusal ends it at once.
_ATTEMPT_TIMEOUT = 5.0
_RETRY_PAUSE = 0.5


class StartupError(Exception):
    """The process can't start; the message names the setting or the step to take."""


async def reach(setting: str, ping: Callable[[], Awaitable[None]], unavailable: type[Exception], wait: float) -> None:
    """Ping until it answers or `wait` seconds have passed: a database or Redis started beside the
    server may not be listening yet. Raises StartupError naming `setting` with the last failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    told = False
    while True:
        within = max(_ATTEMPT_TIMEOUT, deadline - loop.time())
        try:
            async with asyncio.timeout(within):
                await ping()
            return
        except TimeoutError:
            failure = f"no answer within {within:g}s"
        except unavailable as exc:
            failure = str(exc)
        if loop.time() + _RETRY_PAUSE >= deadline:
            raise StartupError(f"{setting}: {failure}") from None
        if not told:
            log.warning("%s: %s; trying again for up to %gs (startup_wait)", setting, failure, wait)
            told = True
        await asyncio.sleep(_RETRY_PAUSE)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    kv: KeyValueStore
    events: EventBus
    encryptor: Encryptor
    keys: KeyManager
    passwords: PasswordHasher
    tokens: TokenService
    sessions: SessionStore
    interactions: InteractionStore
    subjects: SubjectResolver
    backchannel: BackchannelNotifier
    cors: CorsPolicy
    accounts: AccountContext
    blobs: BlobStore
    limits: RateLimiter
    lockout: LoginGuard
    pending_logins: PendingLogins
    # Live notifications: publishes from every process; its subscription runs only while serving.
    live: LiveHub
    # Outgoing messages (mail, back-channel logout); its worker runs only while serving.
    outbox: Outbox
    # Registered clients in memory for the protocol endpoints; its subscription (which makes it
    # usable) runs only while serving.
    client_cache: ClientCache
    # Accounts in memory for the resource endpoints' reads (UserInfo, introspection); forgotten on
    # every node whenever a session commits a change to one. Usable while serving, like clients.
    user_cache: UserCache
    # Writes the audit trail; batches the high-volume rows (closed after the last request).
    audit: AuditLogger
    # With the in-process store: what this process publishes reaches the others on the database,
    # and theirs reach this one once it serves (idp.storage.announcements). None with Redis.
    relay: DatabaseRelay | None = None

    async def delete_picture(self, stored: str) -> None:
        """Delete every stored size of a picture (the ``delete_blob`` of account deletion)."""
        await pictures.delete_picture_files(self.blobs, stored, self.settings.pictures)

    @property
    def enrolment(self) -> Enrolment:
        """Adding a second factor: at sign-in, on the security page, through the account API."""
        return Enrolment(
            db=self.db,
            kv=self.kv,
            encryptor=self.encryptor,
            events=self.events,
            hasher=self.passwords,
            relying_party=RelyingParty.from_settings(self.settings.issuer, self.settings.webauthn),
            totp_issuer=totp_issuer_name(self.settings.issuer, self.settings.mfa.totp_issuer),
        )

    @property
    def units(self) -> UnitsOfWork:
        """Units of work for the protocol endpoints (one database session a request)."""
        return UnitsOfWork(self.db, self.client_cache, self.user_cache)

    @property
    def grants(self) -> GrantContext:
        return GrantContext(
            units=self.units,
            tokens=self.tokens,
            sessions=self.sessions,
            subjects=self.subjects,
            events=self.events,
            settings=self.settings.tokens,
            session_end_revokes=self.settings.sessions.end_revokes_refresh_tokens,
        )

    async def close(self) -> None:
        await self.outbox.close()  # first: its last deliveries need the database and the mailer
        await self.live.stop()
        await self.client_cache.stop()
        await self.user_cache.stop()
        await self.keys.stop()
        await self.tokens.denylist.stop()
        await self.audit.close()
        await self.blobs.close()
        await self.accounts.mailer.close()
        await self.backchannel.close()
        if self.relay is not None:
            await self.relay.close()  # after everything that may still announce a change
        await self.kv.close()
        await self.db.close()
        self.passwords.close()


def build_encryptor(settings: Settings) -> Encryptor:
    kek = settings.secrets.key_encryption_key
    if kek is None:
        raise StartupError("secrets.key_encryption_key: not set")
    previous = [decode_kek(item.get_secret_value()) for item in settings.secrets.previous_key_encryption_keys]
    return Encryptor(decode_kek(kek.get_secret_value()), previous)


def build_blob_store(settings: Settings) -> BlobStore:
    """The picture store named by [pictures] (nothing is connected until first use)."""
    config = settings.pictures
    if config.backend == "s3":
        return S3BlobStore(
            config.s3_bucket,
            endpoint_url=config.s3_endpoint_url or None,
            region=config.s3_region or None,
            access_key=config.s3_access_key.get_secret_value() if config.s3_access_key else None,
            secret_key=config.s3_secret_key.get_secret_value() if config.s3_secret_key else None,
        )
    return FilesystemBlobStore(config.directory or Path(settings.data_dir) / "pictures")


_CLIENT_CHANGES = (ClientCreated, ClientUpdated, ClientSecretRotated, ClientDisabled, ClientEnabled, ClientDeleted)


def _subscribe_protocol_handlers(rt: Runtime) -> None:
    """Protocol consequences of account events (accounts never call into oauth directly)."""

    async def on_client_changed(event: Event, _context: EventContext) -> None:
        # Published after the change is committed: every node's cached copy goes now.
        assert isinstance(event, _CLIENT_CHANGES)
        await rt.client_cache.changed(event.client)

    async def on_consent_withdrawn(event: Event, _context: EventContext) -> None:
        assert isinstance(event, ConsentWithdrawn)
        await revoke_user_client_grants(rt.grants, event.user_id, event.client, reason="consent_withdrawn")

    async def on_password_reset(event: Event, _context: EventContext) -> None:
        # A reset means the old password may be known to someone else: nothing issued under it
        # survives (RFC 9700 §4.14.2 allows revoking refresh tokens on such security events).
        assert isinstance(event, PasswordResetCompleted)
        await revoke_user_client_grants(rt.grants, event.user_id, None, reason="password_reset")

    async def on_account_deleting_revoke(event: Event, _context: EventContext) -> None:
        # Runs while the user's refresh tokens and codes still exist (they cascade away with the
        # account): revoking their grants puts every access token issued from them on the
        # denylist, so they stop working at once, not when they expire (ASVS 7.4.2).
        assert isinstance(event, AccountDeleting)
        await revoke_user_client_grants(rt.grants, event.user_id, None, reason="account_deleted")

    async def on_account_disabled(event: Event, _context: EventContext) -> None:
        # A disabled account's tokens stop working at once (introspection, the denylist), not
        # when they expire; its sessions ended already (SessionEnded, back-channel logout).
        assert isinstance(event, AccountDisabled)
        await revoke_user_client_grants(rt.grants, event.user_id, None, reason="account_disabled")

    async def on_session_ended(event: Event, _context: EventContext) -> None:
        # Back-Channel Logout 1.0 §2.4: one logout token per client of the session, with its sid
        # and the `sub` each client knows the user by (pairwise clients know another one).
        assert isinstance(event, SessionEnded)
        if not event.clients:
            return
        subjects: dict[str, str] = {}
        async with rt.db.session() as db_session:
            repo = ClientRepository(db_session)
            for client_id in event.clients:
                client = await repo.get(client_id)
                if client is not None:
                    subjects[client_id] = rt.subjects.subject_for(client, event.user_id)
        await rt.backchannel.notify(event.clients, subject_for=subjects, sid=event.sid)

    async def on_session_ended_revoke(event: Event, _context: EventContext) -> None:
        # A separate subscriber, so a failed delivery doesn't stop the revocation and vice versa.
        # Refresh and access tokens alike, for clients with or without refresh tokens (ASVS 7.4.1).
        assert isinstance(event, SessionEnded)
        mode = rt.settings.sessions.end_revokes_refresh_tokens
        if mode != "none" and event.clients:
            await revoke_session_grants(
                rt.grants, event.user_id, event.sid, keep_offline=mode == "online", reason=f"session_{event.reason}"
            )

    async def on_password_reset_unlock(event: Event, _context: EventContext) -> None:
        # Completing a reset proved control of the mailbox: the account's sign-in locks go.
        assert isinstance(event, PasswordResetCompleted)
        async with rt.db.session() as db_session:
            user = await UserRepository(db_session).get(event.user_id)
            email = user.email_normalized if user is not None else None
        if email is not None and await rt.lockout.unlock(email):
            await rt.events.publish(AccountUnlocked(user_id=event.user_id, reason="password_reset"))

    rt.events.subscribe(on_consent_withdrawn, ConsentWithdrawn)
    rt.events.subscribe(on_password_reset, PasswordResetCompleted)
    rt.events.subscribe(on_account_deleting_revoke, AccountDeleting)
    rt.events.subscribe(on_account_disabled, AccountDisabled)
    rt.events.subscribe(on_session_ended, SessionEnded)
    rt.events.subscribe(on_session_ended_revoke, SessionEnded)
    rt.events.subscribe(on_password_reset_unlock, PasswordResetCompleted)
    rt.events.subscribe(on_client_changed, *_CLIENT_CHANGES)


class _BackchannelChannel:
    """The outbox channel of logout tokens: whichever notifier the runtime holds at delivery."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    async def deliver(self, payload: Payload, attempt: int) -> None:
        await self._rt.backchannel.deliver(payload, attempt)

    def gave_up(self, payload: Payload, reason: str, attempts: int) -> None:
        self._rt.backchannel.gave_up(payload, reason, attempts)


def _register_outbox_handlers(rt: Runtime) -> None:
    """What the outbox delivers, kind by kind (idp.outbox): mail, logout tokens, and the requests
    resolved in a transaction of their own (a reset or a new verification link for an address)."""
    rt.outbox.register(MAIL, rt.accounts)
    rt.outbox.register(BACKCHANNEL_LOGOUT, _BackchannelChannel(rt))
    rt.outbox.register_resolver(RESET_REQUEST, ResetRequests(rt.accounts))
    rt.outbox.register_resolver(RESEND_REQUEST, ResendRequests(rt.accounts))


def check_discovery_document(settings: Settings) -> None:
    """The discovery document these settings publish is valid (before anything is connected)."""
    metadata = provider_metadata(
        settings.issuer,
        list(settings.keys.algorithms),
        pairwise=settings.secrets.pairwise_secret is not None,
        registration=settings.accounts.registration_enabled,
    )
    try:
        check_provider_metadata(metadata)
    except ValueError as exc:
        hint = " (keys.algorithms: add RS256)" if "RS256" in str(exc) else ""
        raise StartupError(f"the discovery document would be invalid: {exc}{hint}") from None


async def open_runtime(
    settings: Settings, *, check_schema: bool = True, ensure_keys: bool = True, wait: float | None = None
) -> Runtime:
    """Connect, verify, and get ready to serve. Raises StartupError with one operator-facing line.
    The database and Redis are given `wait` seconds to answer (default: settings.startup_wait)."""
    check_discovery_document(settings)
    encryptor = build_encryptor(settings)
    db = Database(settings.database_url)
    kv = open_kv_store(settings.redis_url or None, settings.redis_key_prefix)
    relay = relay_for(settings.database_url, kv) if isinstance(kv, MemoryStore) else None
    try:
        patience = settings.startup_wait if wait is None else wait
        await reach("database_url", lambda: db.ping(within=None), DatabaseUnavailable, patience)
        await reach("redis_url", kv.ping, KeyValueUnavailable, patience)
        if check_schema:
            current, head = await db.schema_revision(), migrate.head_revision()
            if current != head:
                raise StartupError(
                    f"database_url: schema is at revision {current or 'none'}, this version needs {head}; "
                    "run `idp db upgrade`"
                )
        events = EventBus()
        live = LiveHub(
            kv, max_per_user=settings.notifications.max_per_user, queue_limit=settings.notifications.queue_limit
        )
        audit = AuditLogger(db, followers=[live.published] if settings.notifications.enabled else [])
        audit.subscribe_to(events)
        keys = KeyManager(db, encryptor, settings.keys, settings.tokens, kv=kv, events=events)
        try:
            await (keys.ensure_active_keys() if ensure_keys else keys.reload())
        except DecryptionError as exc:
            raise StartupError(f"secrets.key_encryption_key: cannot decrypt the stored signing keys ({exc})") from None
        tokens = TokenService(
            keys,
            Denylist(kv, db),
            settings.issuer,
            access_token_ttl=settings.tokens.access_token_ttl,
            id_token_ttl=settings.tokens.id_token_ttl,
        )
        pairwise = settings.secrets.pairwise_secret
        hashing = settings.password_hash
        hasher = PasswordHasher(hashing, threads=hashing.threads or None, queue_limit=hashing.queue_limit)
        sessions = SessionStore(
            kv,
            events,
            db=db,
            idle_ttl=settings.sessions.idle_ttl,
            absolute_ttl=settings.sessions.absolute_ttl,
            max_per_user=settings.sessions.max_per_user,
            limit_policy=settings.sessions.limit_policy,
        )
        try:
            policy = PasswordPolicy(settings.password_policy)
            mailer = build_mailer(settings)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        limits = RateLimiter(kv, dict(settings.rate_limits))
        outbox = Outbox(db, encryptor, settings.outbox)
        lockout = LoginGuard(kv, settings.lockout)
        runtime = Runtime(
            settings=settings,
            db=db,
            kv=kv,
            events=events,
            encryptor=encryptor,
            keys=keys,
            passwords=hasher,
            tokens=tokens,
            sessions=sessions,
            interactions=InteractionStore(kv, settings.sessions.interaction_ttl),
            subjects=SubjectResolver(pairwise.get_secret_value() if pairwise else None),
            backchannel=BackchannelNotifier(db, tokens, outbox),
            cors=CorsPolicy(db),
            accounts=AccountContext(
                db=db,
                hasher=hasher,
                policy=policy,
                mailer=mailer,
                emails=EmailRenderer(),
                events=events,
                sessions=sessions,
                settings=settings.accounts,
                issuer=settings.issuer,
                limits=limits,
                lockout=lockout,
                outbox=outbox,
            ),
            blobs=build_blob_store(settings),
            limits=limits,
            lockout=lockout,
            pending_logins=PendingLogins(kv, ttl=settings.sessions.interaction_ttl),
            live=live,
            outbox=outbox,
            client_cache=ClientCache(db, kv),
            user_cache=UserCache(db, kv),
            audit=audit,
            relay=relay,
        )
        notifications.subscribe_security_notices(
            runtime.accounts, new_device=settings.sessions.notify_new_device, lockout=settings.lockout.notify
        )
        _subscribe_protocol_handlers(runtime)
        _register_outbox_handlers(runtime)
        return runtime
    except BaseException:
        if relay is not None:
            await relay.close()
        await kv.close()
        await db.close()
        raise
