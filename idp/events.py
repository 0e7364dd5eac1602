"""Domain events.

Domain code publishes named events; the audit log, metrics and (later) WebSocket notifications
subscribe to them instead of being called from every use case. An event is a frozen dataclass
whose ``name`` is stable (it is what the audit log stores and what clients will receive).

Request context (IP, user agent, request id) is attached by the publisher's caller through
``EventContext`` so domain code never touches the HTTP layer.

An event may be published within the caller's database transaction (:class:`Transaction`):
subscribers that write (the audit row, a queued mail) then write in it, so what they record commits
with the change the event reports, in one unit of work, or not at all.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from idp.storage.models import utcnow

if TYPE_CHECKING:
    from idp.storage.db import Database
    from idp.storage.repositories.outbox import DbSession

log = logging.getLogger("idp.events")


@dataclass(frozen=True)
class EventContext:
    """Who and where: filled in by the HTTP layer or the CLI."""

    actor_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    via: str = "http"  # "http" | "cli" | "admin_api" | "admin_page"


_context: ContextVar[EventContext | None] = ContextVar("idp_event_context", default=None)
_INTERNAL = EventContext(via="internal")


def set_context(context: EventContext) -> None:
    """Attach who/where to every event published from this task (HTTP request or CLI command)."""
    _context.set(context)


def get_context() -> EventContext:
    return _context.get() or _INTERNAL


def set_actor(actor_id: str | None, *, via: str | None = None) -> None:
    """Name who acts in this request (the signed-in user, the API caller) for the audit log, and
    through which door when it is not plain http ("admin_api", "admin_page")."""
    context = replace(get_context(), actor_id=actor_id)
    _context.set(replace(context, via=via) if via is not None else context)


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = "event"
    occurred_at: datetime = field(default_factory=utcnow, kw_only=True)

    # Events name the user in a `user_id` field and the client in a `client` field; the audit
    # log reads them through these two properties.
    @property
    def subject_id(self) -> str | None:
        return getattr(self, "user_id", None)

    @property
    def client_id(self) -> str | None:
        return getattr(self, "client", None)

    @property
    def outcome(self) -> str:
        return "success"

    def details(self) -> dict[str, Any]:
        """Non-personal details for the audit log."""
        return {}


@dataclass(frozen=True)
class UserCreated(Event):
    name: ClassVar[str] = "user_created"
    user_id: str
    admin: bool = False
    verified: bool = False

    def details(self) -> dict[str, Any]:
        return {"admin": self.admin, "verified": self.verified}


@dataclass(frozen=True)
class RegistrationAttempted(Event):
    """Someone tried to register an address that already has an account (its owner is mailed)."""

    name: ClassVar[str] = "registration_duplicate"
    user_id: str

    @property
    def outcome(self) -> str:
        return "refused"


@dataclass(frozen=True)
class EmailVerified(Event):
    name: ClassVar[str] = "email_verified"
    user_id: str
    # True when an administrator marked the address verified instead of the owner's link.
    by_admin: bool = False

    def details(self) -> dict[str, Any]:
        return {"by": "admin"} if self.by_admin else {}


@dataclass(frozen=True)
class PasswordResetRequested(Event):
    name: ClassVar[str] = "password_reset_requested"
    user_id: str


@dataclass(frozen=True)
class PasswordResetCompleted(Event):
    """A password set through a reset link: every session ended; tokens must be revoked too."""

    name: ClassVar[str] = "password_reset"
    user_id: str
    sessions_ended: int = 0

    def details(self) -> dict[str, Any]:
        return {"sessions_ended": self.sessions_ended}


@dataclass(frozen=True)
class PasswordChanged(Event):
    name: ClassVar[str] = "password_changed"
    user_id: str
    sessions_ended: int = 0

    def details(self) -> dict[str, Any]:
        return {"sessions_ended": self.sessions_ended}


@dataclass(frozen=True)
class ProfileUpdated(Event):
    """The user changed profile claims; the audit log names the fields, never their values."""

    name: ClassVar[str] = "profile_updated"
    user_id: str
    fields: tuple[str, ...]
    client: str | None = None  # the application that made the change, if any

    def details(self) -> dict[str, Any]:
        return {"fields": list(self.fields)}


@dataclass(frozen=True)
class EmailChangeRequested(Event):
    """A confirmation link for a new address was issued. Recorded the same way whether or not the
    address belongs to another account: the user reads this trail (account API activity)."""

    name: ClassVar[str] = "email_change_requested"
    user_id: str
    client: str | None = None


@dataclass(frozen=True)
class EmailChanged(Event):
    """The new address was confirmed through the emailed link (no addresses in the audit log)."""

    name: ClassVar[str] = "email_changed"
    user_id: str


@dataclass(frozen=True)
class LoginSucceeded(Event):
    name: ClassVar[str] = "login_succeeded"
    user_id: str
    sid: str
    amr: tuple[str, ...]

    def details(self) -> dict[str, Any]:
        return {"amr": list(self.amr), "sid": self.sid}


@dataclass(frozen=True)
class LoginFailed(Event):
    name: ClassVar[str] = "login_failed"
    reason: str  # "invalid_credentials" | "disabled" | "unverified" | "locked" | "rate_limited"
    user_id: str | None = None  # known only when the account exists
    factor: str = "password"  # "password" | "totp" | "recovery_code" | "webauthn"

    @property
    def outcome(self) -> str:
        return "failure"

    def details(self) -> dict[str, Any]:
        return {"reason": self.reason, "factor": self.factor}


@dataclass(frozen=True)
class LoggedOut(Event):
    name: ClassVar[str] = "logged_out"
    user_id: str
    sid: str
    initiated_by: str  # "user" | "client" | "admin"
    client: str | None = None

    def details(self) -> dict[str, Any]:
        return {"sid": self.sid, "initiated_by": self.initiated_by}


@dataclass(frozen=True)
class SessionEnded(Event):
    """A browser session at the IdP ended before it expired. ``clients`` received tokens within it:
    the protocol side sends them back-channel logout and (as configured) revokes the refresh tokens
    issued in the session.

    ``reason``: "logout" (the user or a client), "ended_by_user" (from another device),
    "ended_by_admin", "signed_in_as_another_user", "session_limit", "password_changed",
    "password_reset", "mfa_changed", "account_disabled", "account_deleted"."""

    name: ClassVar[str] = "session_ended"
    user_id: str
    sid: str
    reason: str
    clients: tuple[str, ...] = ()

    def details(self) -> dict[str, Any]:
        return {"sid": self.sid, "reason": self.reason, "clients": len(self.clients)}


@dataclass(frozen=True)
class NewDeviceSignIn(Event):
    """A sign-in from a browser this account never signed in from (the user is told by email)."""

    name: ClassVar[str] = "new_device_sign_in"
    user_id: str
    device: str

    def details(self) -> dict[str, Any]:
        return {"device": self.device}


@dataclass(frozen=True)
class AccountLocked(Event):
    """Repeated failed sign-ins switched a lock on. ``scope``: "account_ip" (the attacking IP on
    this account), "account" (this account, for browsers it never signed in from)."""

    name: ClassVar[str] = "account_locked"
    user_id: str
    scope: str
    duration: int

    @property
    def outcome(self) -> str:
        return "failure"

    def details(self) -> dict[str, Any]:
        return {"scope": self.scope, "duration": self.duration}


@dataclass(frozen=True)
class AccountUnlocked(Event):
    name: ClassVar[str] = "account_unlocked"
    user_id: str
    reason: str  # "admin" | "password_reset"

    def details(self) -> dict[str, Any]:
        return {"reason": self.reason}


@dataclass(frozen=True)
class AccountDisabled(Event):
    name: ClassVar[str] = "account_disabled"
    user_id: str
    sessions_ended: int = 0

    def details(self) -> dict[str, Any]:
        return {"sessions_ended": self.sessions_ended}


@dataclass(frozen=True)
class AdminGranted(Event):
    """The account was made an administrator (by another administrator or the CLI)."""

    name: ClassVar[str] = "admin_granted"
    user_id: str


@dataclass(frozen=True)
class AdminRevoked(Event):
    name: ClassVar[str] = "admin_revoked"
    user_id: str


@dataclass(frozen=True)
class SecondFactorsReset(Event):
    """An administrator removed every second factor of the account (a lost authenticator): TOTP,
    passkeys and recovery codes. The user signs in with the password alone until they enrol again."""

    name: ClassVar[str] = "second_factors_reset"
    user_id: str
    removed: int

    def details(self) -> dict[str, Any]:
        return {"removed": self.removed}


@dataclass(frozen=True)
class AccountEnabled(Event):
    name: ClassVar[str] = "account_enabled"
    user_id: str


@dataclass(frozen=True)
class ConsentGranted(Event):
    name: ClassVar[str] = "consent_granted"
    user_id: str
    client: str
    scopes: tuple[str, ...]

    def details(self) -> dict[str, Any]:
        return {"scopes": list(self.scopes)}


@dataclass(frozen=True)
class ConsentWithdrawn(Event):
    """The user took back a client's access: its tokens must stop working (ASVS 10.4.9, 10.7.3)."""

    name: ClassVar[str] = "consent_withdrawn"
    user_id: str
    client: str


@dataclass(frozen=True)
class PictureChanged(Event):
    """The user's profile picture was replaced or removed (``removed``); no file names logged."""

    name: ClassVar[str] = "picture_changed"
    user_id: str
    removed: bool = False
    client: str | None = None  # the application that made the change, if any

    def details(self) -> dict[str, Any]:
        return {"removed": self.removed}


@dataclass(frozen=True)
class AccountDeleting(Event):
    """An account is about to be deleted; its rows still exist while subscribers run.

    Published so the protocol side can revoke every grant (their refresh tokens and the index of
    their access tokens live in rows the deletion cascades away) and send back-channel logout for
    the sessions that were ended: ``sessions`` is ``(sid, client ids)`` per session.
    """

    name: ClassVar[str] = "account_deletion_started"
    user_id: str
    sessions: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def details(self) -> dict[str, Any]:
        return {"sessions_ended": len(self.sessions)}


@dataclass(frozen=True)
class AccountDeleted(Event):
    """The account's rows are gone; the audit trail keeps this event and the opaque id only."""

    name: ClassVar[str] = "account_deleted"
    user_id: str


@dataclass(frozen=True)
class MfaEnabled(Event):
    """A second factor was confirmed (the user proved it works); recovery codes were issued."""

    name: ClassVar[str] = "mfa_enabled"
    user_id: str
    method: str  # "totp" | "webauthn"

    def details(self) -> dict[str, Any]:
        return {"method": self.method}


@dataclass(frozen=True)
class MfaDisabled(Event):
    """A second factor was removed, with the recovery codes that went with it (ASVS 6.5.6)."""

    name: ClassVar[str] = "mfa_disabled"
    user_id: str
    method: str  # "totp"

    def details(self) -> dict[str, Any]:
        return {"method": self.method}


@dataclass(frozen=True)
class PasskeyRegistered(Event):
    """A WebAuthn credential (passkey or security key) was added; its name stays out of the log."""

    name: ClassVar[str] = "passkey_registered"
    user_id: str
    passkey: str  # the credential's row id
    discoverable: bool = False  # usable for passwordless sign-in

    def details(self) -> dict[str, Any]:
        return {"passkey": self.passkey, "discoverable": self.discoverable}


@dataclass(frozen=True)
class PasskeyRenamed(Event):
    name: ClassVar[str] = "passkey_renamed"
    user_id: str
    passkey: str

    def details(self) -> dict[str, Any]:
        return {"passkey": self.passkey}


@dataclass(frozen=True)
class PasskeyRemoved(Event):
    """A WebAuthn credential was removed (lost or retired, ASVS 6.5.6)."""

    name: ClassVar[str] = "passkey_removed"
    user_id: str
    passkey: str

    def details(self) -> dict[str, Any]:
        return {"passkey": self.passkey}


@dataclass(frozen=True)
class RecoveryCodeUsed(Event):
    """A recovery code was spent; ``remaining`` tells the user (and the audit log) how many are left."""

    name: ClassVar[str] = "recovery_code_used"
    user_id: str
    remaining: int

    def details(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "factor": "recovery_code"}


@dataclass(frozen=True)
class RecoveryCodesRegenerated(Event):
    """A new set of recovery codes replaced every earlier one, used or not."""

    name: ClassVar[str] = "recovery_codes_regenerated"
    user_id: str
    count: int

    def details(self) -> dict[str, Any]:
        return {"count": self.count}


@dataclass(frozen=True)
class TokenIssued(Event):
    name: ClassVar[str] = "token_issued"
    client: str
    grant_type: str
    user_id: str | None
    scope: str
    refresh_token: bool

    def details(self) -> dict[str, Any]:
        return {"grant_type": self.grant_type, "scope": self.scope, "refresh_token": self.refresh_token}


@dataclass(frozen=True)
class TokenRevoked(Event):
    name: ClassVar[str] = "token_revoked"
    client: str
    reason: str  # "client_request" | "code_replay" | "refresh_token_reuse" | "logout"
    user_id: str | None = None
    token_type: str | None = None

    @property
    def outcome(self) -> str:
        benign = ("client_request", "logout", "consent_withdrawn", "password_reset", "account_deleted")
        return "success" if self.reason in benign else "security_alert"

    def details(self) -> dict[str, Any]:
        return {"reason": self.reason, "token_type": self.token_type}


@dataclass(frozen=True)
class ClientCreated(Event):
    name: ClassVar[str] = "client_created"
    client: str
    client_type: str

    def details(self) -> dict[str, Any]:
        return {"client_type": self.client_type}


@dataclass(frozen=True)
class ClientSecretRotated(Event):
    name: ClassVar[str] = "client_secret_rotated"
    client: str


@dataclass(frozen=True)
class ClientUpdated(Event):
    name: ClassVar[str] = "client_updated"
    client: str
    fields: tuple[str, ...]

    def details(self) -> dict[str, Any]:
        return {"fields": list(self.fields)}


@dataclass(frozen=True)
class ClientDisabled(Event):
    """The client can't authenticate, and its tokens are refused, until it is enabled again."""

    name: ClassVar[str] = "client_disabled"
    client: str


@dataclass(frozen=True)
class ClientEnabled(Event):
    name: ClassVar[str] = "client_enabled"
    client: str


@dataclass(frozen=True)
class ClientDeleted(Event):
    name: ClassVar[str] = "client_deleted"
    client: str
    grants_revoked: int

    def details(self) -> dict[str, Any]:
        return {"grants_revoked": self.grants_revoked}


@dataclass(frozen=True)
class SigningKeysRotated(Event):
    name: ClassVar[str] = "signing_keys_rotated"
    new_kids: tuple[str, ...]
    retired_kids: tuple[str, ...]

    def details(self) -> dict[str, Any]:
        return {"new_kids": list(self.new_kids), "retired_kids": list(self.retired_kids)}


@dataclass(frozen=True)
class SigningKeysPurged(Event):
    """Retired keys whose publication window had ended were deleted."""

    name: ClassVar[str] = "signing_keys_purged"
    removed: int

    def details(self) -> dict[str, Any]:
        return {"removed": self.removed}


Handler = Callable[[Event, EventContext], Awaitable[None]]


@dataclass
class Transaction:
    """A database transaction that events are published in (``EventBus.publish(..., within=)``).

    Subscribers that write do so in its ``session`` (see :func:`current_transaction`); what may
    only happen once the writes are committed (telling live followers about an audit row) is
    registered with :meth:`after_commit` and runs after the commit, never after a rollback. A
    subscriber's failed write fails the transaction: a sign-in is recorded whole or not at all.
    While it is open, publish events within it: on SQLite, a subscriber writing in a transaction
    of its own would wait for this one's write lock."""

    session: DbSession
    _after_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def after_commit(self, action: Callable[[], Awaitable[None]]) -> None:
        self._after_commit.append(action)

    @classmethod
    @asynccontextmanager
    async def open(cls, db: Database) -> AsyncIterator[Transaction]:
        """A unit of work on ``db`` (committed on success, rolled back on any exception)."""
        async with db.session() as session:
            transaction = cls(session)
            yield transaction
        for action in transaction._after_commit:
            try:
                await action()
            except Exception as exc:  # committed: what follows must not fail the user's action
                log.error(
                    "after-commit action failed",
                    extra={"action": getattr(action, "__qualname__", "?"), "error": type(exc).__name__},
                )


_transaction: ContextVar[Transaction | None] = ContextVar("idp_event_transaction", default=None)


def current_transaction() -> Transaction | None:
    """The transaction the event being handled was published in, if any (for subscribers)."""
    return _transaction.get()


class EventBus:
    """In-process publish/subscribe. Subscribers run in order; one failing doesn't stop the rest
    and never fails the use case that published (the failure is logged)."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._catch_all: list[Handler] = []

    def subscribe(self, handler: Handler, *event_types: type[Event]) -> None:
        if not event_types:
            self._catch_all.append(handler)
        for event_type in event_types:
            self._handlers[event_type.name].append(handler)

    async def publish(
        self, event: Event, context: EventContext | None = None, *, within: Transaction | None = None
    ) -> None:
        """Run the subscribers of ``event``; ``within``: the caller's transaction, which they
        write in (an event they publish in turn is outside it unless they say so)."""
        ctx = context or get_context()
        token = _transaction.set(within)
        try:
            for handler in [*self._handlers.get(event.name, ()), *self._catch_all]:
                try:
                    await handler(event, ctx)
                except Exception as exc:  # a subscriber's failure must not undo the user's action
                    log.error(
                        "event subscriber failed",
                        extra={
                            "event": event.name,
                            "subscriber": getattr(handler, "__qualname__", "?"),
                            "error": type(exc).__name__,
                        },
                    )
        finally:
            _transaction.reset(token)
