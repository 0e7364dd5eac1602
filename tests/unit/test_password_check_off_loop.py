"""The password policy's strength estimate (zxcvbn: up to ~65 ms for a long password, measured
in issue 14) runs in a worker thread, never on the event loop's, where it would stall every other
request of the worker. (How long the loop stalls is measured by bench/ and /debug/loop-lag, not
by a timed test.)"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from idp.accounts.password_policy import PasswordRejected
from idp.accounts.users import AccountError, check_new_password


class RecordingPolicy:
    def __init__(self, refuse: bool = False) -> None:
        self.threads: list[threading.Thread] = []
        self.refuse = refuse

    def check(self, password: str, **_context: Any) -> None:
        self.threads.append(threading.current_thread())
        if self.refuse:
            raise PasswordRejected("weak", "This password is too easy to guess.")


async def test_the_policy_runs_off_the_event_loop_thread() -> None:
    policy = RecordingPolicy()
    await check_new_password(policy, "a candidate password", email="a@example.com", name=None)  # type: ignore[arg-type]
    assert policy.threads and policy.threads[0] is not threading.current_thread()


async def test_its_verdict_still_names_the_field_and_rule() -> None:
    policy = RecordingPolicy(refuse=True)
    with pytest.raises(AccountError) as refused:
        await check_new_password(policy, "password", email=None, name=None, field="new_password")  # type: ignore[arg-type]
    assert refused.value.field == "new_password" and getattr(refused.value, "rule", None) == "weak"
    assert policy.threads[0] is not threading.current_thread()
