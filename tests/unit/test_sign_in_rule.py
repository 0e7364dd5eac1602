"""Who may sign in (idp.accounts.signin.eligibility): one rule for every way of signing in; the
paths' answers to a refusal are in tests/integration/test_sign_in_refusals.py."""

from __future__ import annotations

import pytest

from idp.accounts.signin.eligibility import DISABLED, UNVERIFIED, can_sign_in, sign_in_refusal
from idp.storage.models import User


def user(*, disabled: bool = False, verified: bool = True, password_hash: str | None = "$argon2id$…") -> User:
    return User(
        id="u1",
        email="alice@example.com",
        email_normalized="alice@example.com",
        email_verified=verified,
        disabled=disabled,
        password_hash=password_hash,
    )


@pytest.mark.parametrize(
    ("disabled", "verified", "refusal"),
    [(False, True, None), (True, True, DISABLED), (False, False, UNVERIFIED), (True, False, DISABLED)],
    ids=["active", "disabled", "unverified", "disabled and unverified"],
)
def test_an_account_signs_in_while_enabled_and_confirmed(disabled: bool, verified: bool, refusal: object) -> None:
    account = user(disabled=disabled, verified=verified)
    assert sign_in_refusal(account) == refusal
    assert can_sign_in(account) is (refusal is None)


def test_an_account_without_a_password_may_sign_in_another_way() -> None:
    assert can_sign_in(user(password_hash=None))


def test_the_refusals_name_their_reason_for_the_audit_log() -> None:
    assert (DISABLED.reason, UNVERIFIED.reason) == ("disabled", "unverified")
