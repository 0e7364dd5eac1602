"""Who may sign in: one rule for every way of signing in, whatever proved the user (the password,
a second factor after it, a passkey alone, the link that confirms a new account opened in the
browser that registered it), and for every request of a session (idp.accounts.signin.finish).

An account may sign in while it is not disabled and its address is confirmed: until then the
address may be someone else's, whoever registered never having proved the mailbox. Having no
password is no refusal; it only means a password can't be what proves the user (a passkey can).
"""

from __future__ import annotations

from dataclasses import dataclass

from idp.storage.models import User


@dataclass(frozen=True)
class SignInRefusal:
    reason: str  # for the audit log (LoginFailed.reason)
    message: str  # for the user


DISABLED = SignInRefusal("disabled", "This account cannot sign in. Contact the administrator.")
UNVERIFIED = SignInRefusal("unverified", "Confirm your email address first, using the link we sent you.")


def sign_in_refusal(user: User) -> SignInRefusal | None:
    """Why ``user`` may not sign in, or None when it may."""
    if user.disabled:
        return DISABLED
    if not user.email_verified:
        return UNVERIFIED
    return None


def can_sign_in(user: User) -> bool:
    return sign_in_refusal(user) is None
