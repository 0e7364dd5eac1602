"""What the account use cases share: the database, mail, events, sessions and the rules they apply
(``AccountContext``), and the mail channel of the outbox (``AccountContext.deliver``).

Mail is never sent from a request: ``send`` renders the message and writes it to the outbox, in
the caller's transaction when there is one (the link and its mail commit together), and the
outbox's worker delivers it with retries (idp.outbox). So no answer waits on SMTP, and its time
can't tell whether an address has an account (ASVS 6.3.8).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from idp.accounts.password_policy import PasswordPolicy
from idp.accounts.sessions.store import SessionStore
from idp.accounts.signin.password import PasswordSignIn
from idp.config import AccountSettings
from idp.events import EventBus, EventContext, get_context
from idp.mail import EmailRenderer, Mailer, MailError, OutgoingEmail
from idp.outbox import DeliveryFailed, Outbox, Payload
from idp.security.lockout import LoginGuard
from idp.security.passwords import PasswordHasher
from idp.security.ratelimit import RateLimiter
from idp.storage.db import Database
from idp.storage.repositories.outbox import DbSession

log = logging.getLogger("idp.accounts")

MAIL = "mail"  # the outbox kind of a rendered message


def context_payload(context: EventContext | None = None) -> dict[str, Any]:
    """Who and where a request came from, kept with a queued request so the events its worker
    publishes carry them (the audit trail's IP, user agent and request id)."""
    context = context or get_context()
    return {
        "actor_id": context.actor_id,
        "ip": context.ip,
        "user_agent": context.user_agent,
        "request_id": context.request_id,
        "via": context.via,
    }


def context_from(payload: Payload) -> EventContext:
    saved = payload.get("context")
    if not isinstance(saved, dict):
        return EventContext(via="internal")
    fields = ("actor_id", "ip", "user_agent", "request_id")
    return EventContext(
        **{name: value if isinstance(value := saved.get(name), str) else None for name in fields},
        via=str(saved.get("via") or "internal"),
    )


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
    outbox: Outbox

    @property
    def sign_in(self) -> PasswordSignIn:
        """What a password attempt needs: sign-in and every re-check count the same way."""
        return PasswordSignIn(self.db, self.hasher, self.events, self.limits, self.lockout)

    def link(self, path: str, **params: str) -> str:
        return f"{self.issuer}{path}?{urlencode(params)}" if params else f"{self.issuer}{path}"

    async def send(self, template: str, to: str, *, session: DbSession | None = None, **context: object) -> None:
        """Render a mail and queue it in the outbox: in ``session`` when given (it is sent exactly
        when the caller's change commits), else in a transaction of its own. A message that can't
        be rendered for ``to`` is logged (no address) and dropped: no retry would help."""
        try:
            message = self.emails.render(template, to=to, **context)
        except ValueError:
            # An address the mail headers can't carry (e.g. non-ASCII before the @ on an account
            # created before registration refused those). The message names no address.
            log.error("could not send email", extra={"template": template, "error": "address cannot be mailed"})
            return
        payload = message.to_payload()
        if session is not None:
            await self.outbox.enqueue(session, MAIL, payload)
        else:
            await self.outbox.send(MAIL, payload)

    # -- the outbox's mail channel ----------------------------------------------------------

    async def deliver(self, payload: Payload, attempt: int) -> None:
        """Send one queued message; a failure is logged (template and error only, no address)
        and raised for the outbox to retry."""
        try:
            message = OutgoingEmail.from_payload(payload)
        except (KeyError, TypeError, ValueError):
            raise DeliveryFailed("unreadable message", permanent=True) from None
        try:
            await self.mailer.send(message)
        except MailError as exc:
            log.error(
                "could not send email", extra={"template": message.template, "error": str(exc), "attempt": attempt}
            )
            raise DeliveryFailed(str(exc)) from None

    def gave_up(self, payload: Payload, reason: str, attempts: int) -> None:
        log.error(
            "email not delivered after the last attempt",
            extra={"template": payload.get("template"), "error": reason, "attempts": attempts},
        )
