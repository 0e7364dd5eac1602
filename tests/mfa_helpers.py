"""Shared pieces of the MFA tests: a movable TOTP clock, enrolling TOTP, posting codes, reading
the audit log and the dev outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from idp.accounts.security import mfa
from idp.storage.models import AuditEvent
from tests.oauth_helpers import World, code_flow, csrf_from, jwt_parts, make_world

SESSION_COOKIE = "idp_session"
ORIGIN = "http://127.0.0.1:8000"  # the test issuer's origin: WebAuthn's default accepted origin


class Clock:
    """The server's clock for TOTP checks (idp.accounts.security.mfa reads utcnow), moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: int = 30) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    value = Clock()
    monkeypatch.setattr(mfa, "utcnow", value)
    return value


@pytest.fixture
async def world(runtime: Any) -> World:
    return await make_world(runtime)


async def enable_totp(runtime: Any, user_id: str, clock: Clock) -> tuple[str, list[str]]:
    """TOTP on for the user (confirmed with the current code); the clock then moves one step on,
    so the next code differs from the one used to confirm."""
    enrolment = await mfa.start_totp_enrolment(
        runtime.db, runtime.encryptor, user_id, issuer_name="idp", account_name="alice@example.com"
    )
    codes = await mfa.confirm_totp_enrolment(
        runtime.db,
        runtime.encryptor,
        runtime.events,
        user_id,
        enrolment.credential_id,
        pyotp.TOTP(enrolment.secret).at(clock.now),
        hasher=runtime.passwords,
        now=clock.now,
    )
    clock.advance()
    return enrolment.secret, codes


async def text(response: Any) -> str:
    return str(await response.get_data(as_text=True))


def totp_answer(secret: str, clock: Clock) -> Callable[[Any], Awaitable[Any]]:
    async def answer(client: Any) -> Any:
        page = await client.get("/login/mfa")
        assert page.status_code == 200
        form = {"csrf_token": csrf_from(await text(page)), "method": "totp", "code": pyotp.TOTP(secret).at(clock.now)}
        return await client.post("/login/mfa", form=form)

    return answer


def recovery_answer(code: str) -> Callable[[Any], Awaitable[Any]]:
    async def answer(client: Any) -> Any:
        page = await client.get("/login/mfa?method=recovery_code")
        assert 'id="recovery-form"' in await text(page)
        form = {"csrf_token": csrf_from(await text(page)), "method": "recovery_code", "code": code}
        return await client.post("/login/mfa", form=form)

    return answer


async def post_code(client: Any, method: str, code: str) -> Any:
    page = await client.get("/login/mfa")
    return await client.post(
        "/login/mfa", form={"csrf_token": csrf_from(await text(page)), "method": method, "code": code}
    )


async def id_token_claims(client: Any, world: World, **kwargs: Any) -> dict[str, Any]:
    tokens = await code_flow(client, world, **kwargs)
    return jwt_parts(tokens["id_token"])[1]


async def audit(runtime: Any, user_id: str, event: str) -> list[AuditEvent]:
    async with runtime.db.session() as session:
        query = select(AuditEvent).where(AuditEvent.subject_id == user_id, AuditEvent.event == event)
        return list((await session.execute(query)).scalars())


async def outbox_subjects(runtime: Any) -> list[str]:
    """The subjects of the mail sent so far (to the .eml directory), once the outbox has sent
    everything queued."""
    await runtime.outbox.drain()
    directory = Path(runtime.settings.data_dir) / "outbox"
    if not directory.exists():
        return []
    return [str(message_from_bytes(path.read_bytes())["Subject"]) for path in sorted(directory.glob("*.eml"))]
