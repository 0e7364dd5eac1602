"""Mail the user when the way they sign in changes, or a recovery code was spent (ASVS 6.3.7,
issue: "using one is logged and notified by email"), so a change they didn't make stands out."""

from __future__ import annotations

from idp.accounts.context import AccountContext
from idp.events import (
    AccountLocked,
    Event,
    EventContext,
    MfaDisabled,
    MfaEnabled,
    NewDeviceSignIn,
    PasskeyRegistered,
    PasskeyRemoved,
    RecoveryCodesRegenerated,
    RecoveryCodeUsed,
    SecondFactorsReset,
    current_transaction,
)
from idp.storage.models import utcnow
from idp.storage.repositories import UserRepository
from idp.storage.repositories.outbox import DbSession

_METHOD_NAMES = {"totp": "An authenticator app", "webauthn": "Passkeys"}
_SUBJECTS = {
    NewDeviceSignIn.name: "New sign-in to your account",
    AccountLocked.name: "Sign-in to your account was blocked after failed attempts",
}


def describe(event: Event) -> str | None:
    """One sentence for the mail, or None for events that don't warrant one."""
    if isinstance(event, RecoveryCodeUsed):
        left = f"{event.remaining} unused code{'s' if event.remaining != 1 else ''} remain"
        return f"A recovery code was used to sign in to your account. {left}."
    if isinstance(event, RecoveryCodesRegenerated):
        return "New recovery codes were created for your account; the earlier ones no longer work."
    if isinstance(event, MfaEnabled):
        return f"{_METHOD_NAMES.get(event.method, 'A second factor')} now protect(s) your account as a second factor."
    if isinstance(event, MfaDisabled):
        return f"{_METHOD_NAMES.get(event.method, 'A second factor')} no longer protect(s) your account."
    if isinstance(event, PasskeyRegistered):
        return "A passkey was added to your account."
    if isinstance(event, PasskeyRemoved):
        return "A passkey was removed from your account."
    if isinstance(event, SecondFactorsReset):
        return (
            "An administrator removed the second factors of your account (authenticator app, passkeys and "
            "recovery codes). You can sign in with your password and set up a new one on the security page."
        )
    if isinstance(event, NewDeviceSignIn):
        return f"Your account was signed in to from a browser it had not used before: {event.device}."
    if isinstance(event, AccountLocked):
        minutes = max(1, event.duration // 60)
        where = "from one network address" if event.scope == "account_ip" else "from browsers it has not used before"
        return (
            f"Someone entered a wrong password for your account many times. Sign-in {where} is blocked for "
            f"{minutes} minutes. If it wasn't you, your password may be targeted: make sure it is unique to "
            "this site, and consider a second factor."
        )
    return None


async def _queue(
    ctx: AccountContext, session: DbSession, event: Event, context: EventContext, what: str, user_id: str
) -> None:
    """The notice to the account's address, queued in ``session``'s transaction."""
    user = await UserRepository(session).get(user_id)
    if user is None:
        return
    await ctx.send(
        "security_notice",
        user.email,
        session=session,
        what=what,
        subject=_SUBJECTS.get(event.name),
        time=utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        ip=context.ip or "unknown",
        security_link=ctx.link("/account/security"),
        reset_link=ctx.link("/forgot-password"),
    )


def subscribe_security_notices(ctx: AccountContext, *, new_device: bool = True, lockout: bool = True) -> None:
    async def notify(event: Event, context: EventContext) -> None:
        what = describe(event)
        user_id = event.subject_id
        if what is None or user_id is None:
            return
        transaction = current_transaction()
        if transaction is not None:
            # Queued with the change it tells of; the account is usually loaded in it already.
            await _queue(ctx, transaction.session, event, context, what, user_id)
            return
        async with ctx.db.session() as session:
            await _queue(ctx, session, event, context, what, user_id)

    ctx.events.subscribe(
        notify,
        RecoveryCodeUsed,
        RecoveryCodesRegenerated,
        MfaEnabled,
        MfaDisabled,
        PasskeyRegistered,
        PasskeyRemoved,
        SecondFactorsReset,
    )
    if new_device:
        ctx.events.subscribe(notify, NewDeviceSignIn)
    if lockout:
        ctx.events.subscribe(notify, AccountLocked)
