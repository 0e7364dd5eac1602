"""What the account use cases share: the database, mail, events, sessions and the rules they apply
(``AccountContext``), and mail that waits until the answer has been sent (``deferred_mail``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import urlencode

from idp.accounts.password_policy import PasswordPolicy
from idp.accounts.sessions.store import SessionStore
from idp.accounts.signin.password import PasswordSignIn
from idp.config import AccountSettings
from idp.events import EventBus
from idp.mail import EmailRenderer, Mailer, MailError, OutgoingEmail
from idp.security.lockout import LoginGuard
from idp.security.passwords import PasswordHasher
from idp.security.ratelimit import RateLimiter
from idp.storage.db import Database

log = logging.getLogger("idp.accounts")

# Set by deferred_mail(): AccountContext.send queues here instead of delivering.
_deferred_mail: ContextVar[list[OutgoingEmail] | None] = ContextVar("idp_deferred_mail", default=None)


@contextmanager
def deferred_mail() -> Iterator[list[OutgoingEmail]]:
    """Collect what ``AccountContext.send`` renders inside the block instead of sending it.

    The caller answers first and delivers afterwards (``deliver``): an SMTP round trip made only
    when an address has an account would otherwise show in the response time (ASVS 6.3.8).
    """
    outbox: list[OutgoingEmail] = []
    token = _deferred_mail.set(outbox)
    try:
        yield outbox
    finally:
        _deferred_mail.reset(token)


async def in_background(job: Awaitable[object]) -> None:
    """Await work nobody waits for (run after the answer was sent). A failure is logged with its
    type only: a message or traceback could hold an address or SQL."""
    try:
        await job
    except Exception as exc:
        log.error("background task failed", extra={"error": type(exc).__name__})


@dataclass
class AccountContext:
    db: Database
    hasher: PasswordHasher
    policy: PasswordPolicy
    mailer: Mailer
    emails: EmailRenderer
    events: EventBus
    sessions: SessionStore
    settings: AccountSettings
    issuer: str
    limits: RateLimiter
    lockout: LoginGuard

    @property
    def sign_in(self) -> PasswordSignIn:
        """What a password attempt needs: sign-in and every re-check count the same way."""
        return PasswordSignIn(self.db, self.hasher, self.events, self.limits, self.lockout)

    def link(self, path: str, **params: str) -> str:
        return f"{self.issuer}{path}?{urlencode(params)}" if params else f"{self.issuer}{path}"

    async def send(self, template: str, to: str, **context: object) -> None:
        """Mail failures are logged, never shown: the answer must not depend on them (nor on
        whether the address exists, ASVS 6.3.8)."""
        try:
            message = self.emails.render(template, to=to, **context)
        except ValueError:
            # An address the mail headers can't carry (e.g. non-ASCII before the @ on an account
            # created before registration refused those). The message names no address.
            log.error("could not send email", extra={"template": template, "error": "address cannot be mailed"})
            return
        outbox = _deferred_mail.get()
        if outbox is not None:
            outbox.append(message)
            return
        await self.deliver(message)

    async def deliver(self, *messages: OutgoingEmail) -> None:
        """Send rendered messages; failures are logged (template and error only, no address)."""
        for message in messages:
            try:
                await self.mailer.send(message)
            except MailError as exc:
                log.error("could not send email", extra={"template": message.template, "error": str(exc)})
