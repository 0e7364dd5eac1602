"""TOTP enrolment and verification, recovery codes (idp.accounts.security.mfa), on both databases.

Covers ASVS 6.5.1 (TOTP and recovery codes usable once, also under concurrency), 6.5.2 (recovery
codes stored as argon2id hashes), 6.5.3 (seed from the CSPRNG, encrypted at rest), 6.5.5 (30-second
steps), 6.5.6 (the factor can be removed) and 6.5.8 (server time only: ``now`` is injected).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from sqlalchemy import select

from idp.accounts.security import mfa
from idp.accounts.users import AccountError
from idp.security.encryption import DecryptionError
from idp.storage.models import AuditEvent, MfaCredential, RecoveryCode
from tests.oauth_helpers import add_user

ISSUER_NAME = "idp test"
ALICE = "alice@example.com"
# Mid-step, so ±1 step stays inside the window and ±2 outside regardless of rounding.
NOW = datetime(2026, 3, 1, 12, 0, 15, tzinfo=UTC)
STEP = timedelta(seconds=30)


def code_at(secret: str, when: datetime) -> str:
    return pyotp.TOTP(secret).at(when)


async def credentials(runtime: Any, user_id: str) -> list[MfaCredential]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(MfaCredential).where(MfaCredential.user_id == user_id))).scalars())


async def recovery_rows(runtime: Any, user_id: str) -> list[RecoveryCode]:
    async with runtime.db.session() as session:
        query = select(RecoveryCode).where(RecoveryCode.user_id == user_id)
        return list((await session.execute(query)).scalars())


async def start(runtime: Any, user_id: str) -> mfa.TotpEnrolment:
    return await mfa.start_totp_enrolment(
        runtime.db, runtime.encryptor, user_id, issuer_name=ISSUER_NAME, account_name=ALICE
    )


async def confirm(runtime: Any, user_id: str, enrolment: mfa.TotpEnrolment, code: str, now: datetime) -> list[str]:
    return await mfa.confirm_totp_enrolment(
        runtime.db,
        runtime.encryptor,
        runtime.events,
        user_id,
        enrolment.credential_id,
        code,
        hasher=runtime.passwords,
        now=now,
    )


async def enrolled(runtime: Any) -> tuple[str, str, list[str]]:
    """A user with TOTP confirmed at NOW: (user id, secret, recovery codes)."""
    user_id = await add_user(runtime, ALICE)
    enrolment = await start(runtime, user_id)
    codes = await confirm(runtime, user_id, enrolment, code_at(enrolment.secret, NOW), NOW)
    return user_id, enrolment.secret, codes


async def verify(runtime: Any, user_id: str, code: str, now: datetime) -> bool:
    return await mfa.verify_totp(runtime.db, runtime.encryptor, user_id, code, now=now)


# -- enrolment ------------------------------------------------------------------------------


async def test_enrolment_returns_a_working_provisioning_uri_and_secret(runtime: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    enrolment = await start(runtime, user_id)

    assert len(enrolment.secret) == 32  # 160 bits of base32
    parts = urlsplit(enrolment.provisioning_uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == f"/{ISSUER_NAME}:{ALICE}"
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert query["secret"] == enrolment.secret
    assert query["issuer"] == ISSUER_NAME
    # What an authenticator app would build from the URI produces codes the server accepts.
    app_totp = pyotp.parse_uri(enrolment.provisioning_uri)
    assert isinstance(app_totp, pyotp.TOTP)
    assert await confirm(runtime, user_id, enrolment, app_totp.at(NOW), NOW)


async def test_the_secret_is_stored_encrypted_and_bound_to_its_row(runtime: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    enrolment = await start(runtime, user_id)

    [row] = await credentials(runtime, user_id)
    assert row.id == enrolment.credential_id
    assert row.type == "totp"
    assert row.secret_encrypted is not None
    assert enrolment.secret not in row.secret_encrypted
    assert enrolment.secret.lower() not in row.secret_encrypted.lower()
    assert runtime.encryptor.decrypt(row.secret_encrypted, row.id.encode()).decode() == enrolment.secret
    with pytest.raises(DecryptionError):
        runtime.encryptor.decrypt(row.secret_encrypted, b"another-credential-id")


async def test_enrolment_is_unconfirmed_until_a_correct_code(runtime: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    enrolment = await start(runtime, user_id)

    [row] = await credentials(runtime, user_id)
    assert row.confirmed_at is None
    assert not await mfa.has_second_factor(runtime.db, user_id)
    # An unconfirmed credential doesn't sign anyone in.
    assert not await verify(runtime, user_id, code_at(enrolment.secret, NOW), NOW)

    codes = await confirm(runtime, user_id, enrolment, code_at(enrolment.secret, NOW), NOW)

    [row] = await credentials(runtime, user_id)
    assert row.confirmed_at == NOW
    assert row.last_used_step == int(NOW.timestamp()) // 30
    assert len(codes) == 10
    assert await mfa.has_second_factor(runtime.db, user_id)
    async with runtime.db.session() as session:
        events = (await session.execute(select(AuditEvent).where(AuditEvent.event == "mfa_enabled"))).scalars().all()
    assert [(event.subject_id, event.details["method"]) for event in events] == [(user_id, "totp")]


async def test_wrong_code_at_confirmation_changes_nothing(runtime: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    enrolment = await start(runtime, user_id)
    right = code_at(enrolment.secret, NOW)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    for bad in (wrong, code_at(enrolment.secret, NOW + 2 * STEP), "12345", "abcdef", ""):
        with pytest.raises(AccountError) as caught:
            await confirm(runtime, user_id, enrolment, bad, NOW)
        assert caught.value.field == "code"

    [row] = await credentials(runtime, user_id)
    assert (row.confirmed_at, row.last_used_step, row.last_used_at) == (None, None, None)
    assert await recovery_rows(runtime, user_id) == []
    assert not await mfa.has_second_factor(runtime.db, user_id)


async def test_confirmation_code_cannot_be_replayed_to_sign_in(runtime: Any) -> None:
    user_id, secret, _ = await enrolled(runtime)

    assert not await verify(runtime, user_id, code_at(secret, NOW), NOW)
    assert await verify(runtime, user_id, code_at(secret, NOW + STEP), NOW + STEP)


async def test_starting_again_replaces_an_unconfirmed_enrolment(runtime: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    first = await start(runtime, user_id)
    second = await start(runtime, user_id)

    assert second.secret != first.secret
    assert [row.id for row in await credentials(runtime, user_id)] == [second.credential_id]
    with pytest.raises(AccountError) as caught:
        await confirm(runtime, user_id, first, code_at(first.secret, NOW), NOW)
    assert caught.value.field == "credential"
    assert await confirm(runtime, user_id, second, code_at(second.secret, NOW), NOW)


async def test_a_second_totp_is_refused_while_one_is_confirmed(runtime: Any) -> None:
    user_id, secret, _ = await enrolled(runtime)

    with pytest.raises(AccountError) as caught:
        await start(runtime, user_id)
    assert caught.value.field == "totp"
    [row] = await credentials(runtime, user_id)
    assert row.confirmed_at is not None
    assert await verify(runtime, user_id, code_at(secret, NOW + STEP), NOW + STEP)


async def test_a_confirmed_enrolment_cannot_be_confirmed_again(runtime: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    enrolment = await start(runtime, user_id)
    codes = await confirm(runtime, user_id, enrolment, code_at(enrolment.secret, NOW), NOW)

    with pytest.raises(AccountError) as caught:
        await confirm(runtime, user_id, enrolment, code_at(enrolment.secret, NOW + STEP), NOW + STEP)
    assert caught.value.field == "credential"
    # The recovery codes shown at the first confirmation are still the valid ones.
    assert await mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, user_id, codes[0])


async def test_someone_elses_enrolment_cannot_be_confirmed(runtime: Any) -> None:
    alice = await add_user(runtime, ALICE)
    mallory = await add_user(runtime, "mallory@example.com")
    enrolment = await start(runtime, alice)

    with pytest.raises(AccountError) as caught:
        await confirm(runtime, mallory, enrolment, code_at(enrolment.secret, NOW), NOW)
    assert caught.value.field == "credential"
    assert (await credentials(runtime, alice))[0].confirmed_at is None


# -- verification ---------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "accepted"), [(-2, False), (-1, True), (0, True), (1, True), (2, False)])
async def test_window_is_one_step_either_way(runtime: Any, steps: int, accepted: bool) -> None:
    user_id, secret, _ = await enrolled(runtime)
    server_now = NOW + 10 * STEP  # well after the confirmation's step

    code = code_at(secret, server_now + steps * STEP)
    assert await verify(runtime, user_id, code, server_now) is accepted
    [row] = await credentials(runtime, user_id)
    expected_step = int((server_now + steps * STEP).timestamp()) // 30 if accepted else int(NOW.timestamp()) // 30
    assert row.last_used_step == expected_step


async def test_replayed_code_is_refused(runtime: Any) -> None:
    user_id, secret, _ = await enrolled(runtime)
    later = NOW + 5 * STEP
    code = code_at(secret, later)

    assert await verify(runtime, user_id, code, later)
    assert not await verify(runtime, user_id, code, later)
    # Still inside the window one step later, still refused.
    assert not await verify(runtime, user_id, code, later + STEP)


async def test_older_step_after_a_newer_one_is_refused(runtime: Any) -> None:
    user_id, secret, _ = await enrolled(runtime)
    later = NOW + 5 * STEP

    assert await verify(runtime, user_id, code_at(secret, later + STEP), later)
    assert not await verify(runtime, user_id, code_at(secret, later), later)
    assert not await verify(runtime, user_id, code_at(secret, later - STEP), later)


async def test_concurrent_use_of_one_code_succeeds_once(runtime: Any) -> None:
    user_id, secret, _ = await enrolled(runtime)
    later = NOW + 5 * STEP
    code = code_at(secret, later)

    results = await asyncio.gather(verify(runtime, user_id, code, later), verify(runtime, user_id, code, later))

    assert sorted(results) == [False, True]
    [row] = await credentials(runtime, user_id)
    assert row.last_used_step == int(later.timestamp()) // 30


async def test_code_format(runtime: Any) -> None:
    user_id, secret, _ = await enrolled(runtime)
    later = NOW + 5 * STEP
    code = code_at(secret, later)

    assert not await verify(runtime, user_id, code[:5], later)
    assert not await verify(runtime, user_id, code + "0", later)
    assert not await verify(runtime, user_id, "١٢٣٤٥٦", later)  # non-ASCII digits
    assert await verify(runtime, user_id, f" {code[:3]} {code[3:]} ", later)


async def test_naive_time_is_refused(runtime: Any) -> None:
    user_id, secret, _ = await enrolled(runtime)
    with pytest.raises(ValueError):
        await verify(runtime, user_id, code_at(secret, NOW), NOW.replace(tzinfo=None))


async def test_user_without_totp_is_refused(runtime: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    assert not await verify(runtime, user_id, "123456", NOW)
    assert not await mfa.has_second_factor(runtime.db, user_id)


# -- recovery codes -------------------------------------------------------------------------


async def test_recovery_codes_are_distinct_strong_and_hashed(runtime: Any) -> None:
    user_id, _, codes = await enrolled(runtime)

    assert len(codes) == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert len(code) == 12 and code[4] == code[9] == "-"
        raw = code.replace("-", "")
        assert set(raw) <= set("0123456789abcdefghjkmnpqrstvwxyz")  # 10 x 5 bits = 50 bits
    rows = await recovery_rows(runtime, user_id)
    assert len(rows) == 10
    for row in rows:
        assert row.code_hash.startswith("$argon2id$")
        assert row.used_at is None
        assert all(code.replace("-", "") not in row.code_hash for code in codes)


async def test_each_recovery_code_works_once_and_is_audited(runtime: Any) -> None:
    user_id, _, codes = await enrolled(runtime)

    async def use(code: str) -> bool:
        return await mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, user_id, code)

    assert await use(codes[0])
    assert not await use(codes[0])
    assert await use(codes[1])
    assert not await use("0000-0000-00")
    assert not await use("not a code")

    rows = await recovery_rows(runtime, user_id)
    assert sum(row.used_at is not None for row in rows) == 2
    async with runtime.db.session() as session:
        query = select(AuditEvent).where(AuditEvent.event == "recovery_code_used").order_by(AuditEvent.id)
        audit = (await session.execute(query)).scalars().all()
    assert [(row.subject_id, row.outcome, row.details["remaining"]) for row in audit] == [
        (user_id, "success", 9),
        (user_id, "success", 8),
    ]


async def test_recovery_code_normalisation(runtime: Any) -> None:
    user_id, _, codes = await enrolled(runtime)
    raw = codes[0].replace("-", "")
    typed = f" {raw[:3].upper()} {raw[3:7].upper()}  {raw[7:]} "

    assert await mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, user_id, typed)
    assert not await mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, user_id, codes[0])


async def test_concurrent_use_of_one_recovery_code_succeeds_once(runtime: Any) -> None:
    user_id, _, codes = await enrolled(runtime)

    results = await asyncio.gather(
        *(mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, user_id, codes[3]) for _ in range(2))
    )

    assert sorted(results) == [False, True]
    assert sum(row.used_at is not None for row in await recovery_rows(runtime, user_id)) == 1


async def test_regenerating_invalidates_the_old_codes(runtime: Any) -> None:
    user_id, _, old = await enrolled(runtime)
    assert await mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, user_id, old[0])

    new = await mfa.regenerate_recovery_codes(runtime.db, runtime.passwords, runtime.events, user_id)

    assert len(new) == 10 and not set(new) & set(old)
    rows = await recovery_rows(runtime, user_id)
    assert len(rows) == 10 and all(row.used_at is None for row in rows)
    assert not await mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, user_id, old[1])
    assert await mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, user_id, new[1])
    async with runtime.db.session() as session:
        query = select(AuditEvent).where(AuditEvent.event == "recovery_codes_regenerated")
        assert [row.subject_id for row in (await session.execute(query)).scalars()] == [user_id]


async def test_regenerating_without_totp_is_refused(runtime: Any) -> None:
    user_id = await add_user(runtime, ALICE)
    with pytest.raises(AccountError) as caught:
        await mfa.regenerate_recovery_codes(runtime.db, runtime.passwords, runtime.events, user_id)
    assert caught.value.field == "totp"
    assert await recovery_rows(runtime, user_id) == []


# -- removal --------------------------------------------------------------------------------


async def test_disable_removes_totp_and_recovery_codes(runtime: Any) -> None:
    user_id, secret, codes = await enrolled(runtime)
    other_id = await add_user(runtime, "bob@example.com")
    other = await start(runtime, other_id)
    await confirm(runtime, other_id, other, code_at(other.secret, NOW), NOW)

    assert await mfa.disable_totp(runtime.db, runtime.events, user_id)

    assert await credentials(runtime, user_id) == []
    assert await recovery_rows(runtime, user_id) == []
    assert not await mfa.has_second_factor(runtime.db, user_id)
    assert not await verify(runtime, user_id, code_at(secret, NOW + STEP), NOW + STEP)
    assert not await mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, user_id, codes[0])
    # Another user's factor is untouched.
    assert len(await credentials(runtime, other_id)) == 1
    assert len(await recovery_rows(runtime, other_id)) == 10
    async with runtime.db.session() as session:
        query = select(AuditEvent).where(AuditEvent.event == "mfa_disabled")
        audit = (await session.execute(query)).scalars().all()
    assert [(row.subject_id, row.details["method"]) for row in audit] == [(user_id, "totp")]
    # Nothing left to disable: no second event.
    assert not await mfa.disable_totp(runtime.db, runtime.events, user_id)
    # And a new enrolment is possible again.
    assert (await start(runtime, user_id)).secret != secret
