"""Exactly once under races (issue 15): every one-time thing presented by many requests at the
same instant is spent once, and what the database holds afterwards is consistent.

Each race releases ``CONCURRENCY`` requests together (tests.fault.race_helpers.race) against one
in-process app, ``ROUNDS`` times; on PostgreSQL (IDP_TEST_DATABASE_URL) each request has its own
connection and the races are real. On SQLite the single writer serialises them, and the same
assertions must hold. ``test_real_server_*`` does the same through a real `idp serve` with two
worker processes (real parallelism) hit by an httpx client with many connections.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select

from idp.accounts import links
from idp.accounts.apps import consents
from idp.accounts.recovery import passwords
from idp.accounts.registration import signup
from idp.accounts.security import mfa, relying_party
from idp.accounts.security.relying_party import PasskeyError
from idp.accounts.users import AccountError
from idp.security.tokens import sha256_digest
from idp.storage import migrate
from idp.storage.db import Database
from idp.storage.models import AuthorizationCode, Consent, MfaCredential, OneTimeToken, RecoveryCode, RefreshToken, User
from tests.e2e.server import IDP, free_port, running
from tests.fault.race_helpers import (
    CONCURRENCY,
    NODE_EMAIL,
    NODE_PASSWORD,
    NODE_REDIRECT,
    NODE_SESSION_LIMIT,
    ROUNDS,
    Node,
    count_rows,
    fetch_rows,
    node_code,
    node_env,
    node_form_post,
    node_sign_in,
    race,
    seed_node,
    unexpected,
)
from tests.mfa_helpers import Clock, enable_totp
from tests.oauth_helpers import (
    PASSWORD,
    WEB_REDIRECT,
    World,
    authorization_url,
    authorize,
    basic,
    code_flow,
    csrf_from,
    login,
    make_world,
    query_of,
)

# Generous limits: the races send many requests from one address, and a 429 is not what they test.
_UNLIMITED = {"requests": 100_000, "window": 60}
_NO_RATE_LIMITS = {
    "rate_limits": {
        name: _UNLIMITED
        for name in (
            "login_per_ip",
            "login_per_account",
            "mfa_per_account",
            "mfa_per_ip",
            "registration_per_ip",
            "password_reset_per_ip",
            "password_reset_per_account",
            "token_per_ip",
            "token_per_client",
        )
    }
}


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any]) -> dict[str, Any]:
    return {**settings_overrides, **_NO_RATE_LIMITS}


@pytest.fixture
async def world(runtime: Any) -> World:
    return await make_world(runtime)


async def _error(response: Any) -> str | None:
    body = await response.get_json()
    return body.get("error") if isinstance(body, dict) else None


async def _introspect(client: Any, world: World, token: str) -> bool:
    response = await client.post("/introspect", form={"token": token}, headers=basic(world.web_id, world.web_secret))
    assert response.status_code == 200
    return bool((await response.get_json())["active"])


async def _fresh_code(client: Any, world: World) -> tuple[str, str]:
    response, verifier = await authorize(client, world.web_id, WEB_REDIRECT, email=world.email)
    assert response.status_code == 303, await response.get_data(as_text=True)
    assert verifier is not None
    return query_of(response.headers["Location"])["code"], verifier


# -- 1. one authorization code, many redemptions ------------------------------------------------


async def test_one_code_redeemed_by_20_concurrent_requests_yields_tokens_once_then_revokes_them(
    app: Any, client: Any, runtime: Any, world: World
) -> None:
    """RFC 6749 §4.1.2: a code is used once; used twice, the server SHOULD revoke what it issued
    (RFC 9700 §4.2.4). idp does (grants.AuthorizationCodeGrant: a replay revokes the grant, in
    the replaying request's transaction): of 20 concurrent redemptions exactly one gets tokens,
    the other 19 get invalid_grant, and being replays they revoke the winner's tokens."""
    for _ in range(ROUNDS):
        code, verifier = await _fresh_code(client, world)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": WEB_REDIRECT,
            "code_verifier": verifier,
        }
        headers = basic(world.web_id, world.web_secret)

        async def redeem(_: int, form: dict[str, str] = form, headers: dict[str, str] = headers) -> Any:
            return await app.test_client().post("/token", form=form, headers=headers)

        results = await race(CONCURRENCY, redeem)
        assert not unexpected(results), unexpected(results)
        won = [response for response in results if response.status_code == 200]
        assert len(won) == 1, [response.status_code for response in results]
        lost = [response for response in results if response.status_code != 200]
        assert {response.status_code for response in lost} == {400}
        assert {await _error(response) for response in lost} == {"invalid_grant"}

        tokens = await won[0].get_json()
        [row] = await fetch_rows(runtime.db, AuthorizationCode, AuthorizationCode.code_digest == sha256_digest(code))
        assert row.consumed_at is not None
        # One refresh token was issued from the code, and the replays revoked it and the access token.
        family = await fetch_rows(runtime.db, RefreshToken, RefreshToken.family_id == row.grant_id)
        assert len(family) == 1 and family[0].revoked_at is not None
        assert not await _introspect(client, world, tokens["access_token"])
        refreshed = await client.post(
            "/token",
            form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            headers=headers,
        )
        assert refreshed.status_code == 400 and await _error(refreshed) == "invalid_grant"


# -- 2. one refresh token, many rotations -------------------------------------------------------


async def test_one_refresh_token_presented_by_20_concurrent_requests_rotates_once_and_reuse_revokes_the_family(
    app: Any, client: Any, runtime: Any, world: World
) -> None:
    """RFC 9700 §4.14.2 with rotation and no grace window (idp has none: [tokens] has no such
    setting, RefreshTokenGrant.detect_reuse revokes the family on any second use): exactly one of
    20 concurrent presentations rotates the token, the rest get invalid_grant, and their reuse
    revokes the whole family, the token just rotated to included."""
    headers = basic(world.web_id, world.web_secret)
    for _ in range(ROUNDS):
        first = await code_flow(client, world)
        [parent] = await fetch_rows(
            runtime.db, RefreshToken, RefreshToken.token_digest == sha256_digest(first["refresh_token"])
        )
        form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}

        async def rotate(_: int, form: dict[str, str] = form) -> Any:
            return await app.test_client().post("/token", form=form, headers=headers)

        results = await race(CONCURRENCY, rotate)
        assert not unexpected(results), unexpected(results)
        won = [response for response in results if response.status_code == 200]
        assert len(won) == 1, [response.status_code for response in results]
        lost = [response for response in results if response.status_code != 200]
        assert {response.status_code for response in lost} == {400}
        assert {await _error(response) for response in lost} == {"invalid_grant"}

        rotated = await won[0].get_json()
        assert rotated["refresh_token"] != first["refresh_token"]
        family = await fetch_rows(runtime.db, RefreshToken, RefreshToken.family_id == parent.family_id)
        # The token presented, and exactly one child: the rotation happened once.
        assert len(family) == 2, [(row.jti, row.parent_jti) for row in family]
        [child] = [row for row in family if row.jti != parent.jti]
        assert child.parent_jti == parent.jti and child.token_digest == sha256_digest(rotated["refresh_token"])
        assert all(row.revoked_at is not None for row in family)
        assert not await _introspect(client, world, rotated["access_token"])
        again = await client.post(
            "/token", form={"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]}, headers=headers
        )
        assert again.status_code == 400 and await _error(again) == "invalid_grant"


# -- 3. one address, many registrations ---------------------------------------------------------


_VOLATILE = re.compile(r'(name="csrf_token" value="|nonce="|nonce-)[^"\';]+')


async def test_one_email_registered_by_20_concurrent_requests_makes_one_account(app: Any, runtime: Any) -> None:
    """One users row, one verification link; every request gets the same "Check your email" answer
    (ASVS 6.3.8: no answer tells a taken address from a free one), none a 500."""
    for round_ in range(ROUNDS):
        address = f"racer{round_}@example.com"
        browsers = [app.test_client() for _ in range(CONCURRENCY)]
        tokens = [csrf_from(await (await browser.get("/register")).get_data(as_text=True)) for browser in browsers]

        async def register(index: int, address: str = address) -> Any:
            # Half of them spell the address in capitals: the same account (normalize_email).
            email = address.upper() if index % 2 else address
            form = {"email": email, "password": PASSWORD, "name": "Racer", "csrf_token": tokens[index]}
            return await browsers[index].post("/register", form=form)

        results = await race(CONCURRENCY, register)
        assert not unexpected(results), unexpected(results)
        assert [response.status_code for response in results] == [200] * CONCURRENCY
        bodies = {_VOLATILE.sub("", await response.get_data(as_text=True)) for response in results}
        assert len(bodies) == 1
        assert "Check your email" in bodies.pop()
        [user] = await fetch_rows(runtime.db, User, User.email_normalized == address)
        assert await count_rows(runtime.db, OneTimeToken, OneTimeToken.user_id == user.id) == 1
    assert await count_rows(runtime.db, User, User.email_normalized.like("racer%")) == ROUNDS


# -- 4. consent ---------------------------------------------------------------------------------

_SCOPE_SETS = [
    ["openid", "profile"],
    ["openid", "email"],
    ["openid", "offline_access"],
    ["openid", "phone"],
    ["address"],
]


async def test_concurrent_consents_of_one_user_and_client_leave_one_row_with_every_scope(
    runtime: Any, world: World
) -> None:
    """Two tabs approving at once: one consent row (uq_consents_user_client), holding the union of
    every scope approved — none lost to a concurrent read-modify-write, no IntegrityError."""
    for _ in range(ROUNDS):
        async with runtime.db.session() as session:
            for row in (await session.execute(select(Consent))).scalars():
                await session.delete(row)

        async def approve(index: int) -> set[str]:
            return await consents.grant(runtime.db, world.user_id, world.web_id, _SCOPE_SETS[index % len(_SCOPE_SETS)])

        results = await race(CONCURRENCY, approve)
        assert not unexpected(results), unexpected(results)
        everything = {scope for scopes in _SCOPE_SETS for scope in scopes}
        [row] = await fetch_rows(
            runtime.db, Consent, Consent.user_id == world.user_id, Consent.client_id == world.web_id
        )
        assert set(row.scopes) == everything and len(row.scopes) == len(everything)
        assert await consents.granted_scopes(runtime.db, world.user_id, world.web_id) == everything


async def test_one_consent_form_submitted_20_times_at_once_issues_one_code(
    app: Any, runtime: Any, world: World
) -> None:
    """The interaction is finished once (InteractionStore.finish): of 20 concurrent approvals of
    one consent screen exactly one redirects with a code, and one code row exists."""
    browser = app.test_client()
    assert (await login(browser, world.email)).status_code == 303
    for _ in range(ROUNDS):
        # prompt=consent: the screen every round, though the first round's approval is remembered.
        started = await browser.get(authorization_url(world.web_id, WEB_REDIRECT, prompt="consent"))
        url = started.headers.get("Location", "")
        assert started.status_code in (302, 303) and url.startswith("/authorize/consent/"), url
        page = await browser.get(url)
        assert page.status_code == 200
        form = {"csrf_token": csrf_from(await page.get_data(as_text=True)), "decision": "allow"}
        before = await count_rows(runtime.db, AuthorizationCode)

        async def approve(_: int, url: str = url, form: dict[str, str] = form) -> Any:
            return await browser.post(url, form=form)

        results = await race(CONCURRENCY, approve)
        assert not unexpected(results), unexpected(results)
        assert all(response.status_code < 500 for response in results), [r.status_code for r in results]
        with_code = [
            r
            for r in results
            if "code=" in r.headers.get("Location", "") and r.headers["Location"].startswith(WEB_REDIRECT)
        ]
        assert len(with_code) == 1, [(r.status_code, r.headers.get("Location")) for r in results]
        assert await count_rows(runtime.db, AuthorizationCode) == before + 1


# -- 5. MFA enrolment ---------------------------------------------------------------------------


async def test_concurrent_totp_enrolment_starts_and_confirmations_leave_one_factor_and_one_code_set(
    runtime: Any, world: World, clock: Clock
) -> None:
    """20 enrolment starts at once leave one pending credential; 20 confirmations of it with the
    same code at once turn TOTP on once (one confirmed credential, one MfaEnabled) and leave the
    winner's 10 recovery codes, no mixture of several sets."""
    starts = await race(
        CONCURRENCY,
        lambda _: mfa.start_totp_enrolment(
            runtime.db, runtime.encryptor, world.user_id, issuer_name="idp", account_name=world.email
        ),
    )
    assert not unexpected(starts), unexpected(starts)
    [pending] = await fetch_rows(runtime.db, MfaCredential, MfaCredential.user_id == world.user_id)
    assert pending.confirmed_at is None
    [enrolment] = [
        start for start in starts if not isinstance(start, BaseException) and start.credential_id == pending.id
    ]
    code = pyotp.TOTP(enrolment.secret).at(clock.now)

    results = await race(
        CONCURRENCY,
        lambda _: mfa.confirm_totp_enrolment(
            runtime.db,
            runtime.encryptor,
            runtime.events,
            world.user_id,
            enrolment.credential_id,
            code,
            hasher=runtime.passwords,
            now=clock.now,
        ),
    )
    assert not unexpected(results, AccountError), unexpected(results, AccountError)
    won = [result for result in results if isinstance(result, list)]
    assert len(won) == 1, results
    [credential] = await fetch_rows(runtime.db, MfaCredential, MfaCredential.user_id == world.user_id)
    assert credential.confirmed_at is not None
    unused = await fetch_rows(runtime.db, RecoveryCode, RecoveryCode.user_id == world.user_id)
    assert len(unused) == mfa.RECOVERY_CODE_COUNT
    # The stored set is the winner's: its last code works (and is spent by this check).
    assert await mfa.use_recovery_code(runtime.db, runtime.passwords, runtime.events, world.user_id, won[0][-1])


async def test_concurrent_recovery_code_regenerations_leave_exactly_one_set(
    runtime: Any, world: World, clock: Clock
) -> None:
    """Two (here 20) regenerations at once: 10 unused codes remain, all of one returned set."""
    await enable_totp(runtime, world.user_id, clock)
    sets = await race(
        CONCURRENCY // 2,
        lambda _: mfa.regenerate_recovery_codes(runtime.db, runtime.passwords, runtime.events, world.user_id),
    )
    assert not unexpected(sets), unexpected(sets)
    assert await count_rows(runtime.db, RecoveryCode, RecoveryCode.user_id == world.user_id) == mfa.RECOVERY_CODE_COUNT
    stored = [
        row.code_hash for row in await fetch_rows(runtime.db, RecoveryCode, RecoveryCode.user_id == world.user_id)
    ]
    # Whose set is stored: each set's first and last code against every stored hash (all of
    # them would be 1,000 argon2 checks; a mixture of sets would show in these ends too).
    owners = set()
    for index, codes in enumerate(sets):
        assert isinstance(codes, list)
        for code in (codes[0], codes[-1]):
            for code_hash in stored:
                if await runtime.passwords.verify(code_hash, mfa.normalize_recovery_code(code)):
                    owners.add(index)
    assert len(owners) == 1, owners


async def test_one_recovery_code_and_one_totp_code_used_20_times_at_once_work_once(
    runtime: Any, world: World, clock: Clock
) -> None:
    """ASVS 6.5.1, RFC 6238 §5.2: a recovery code, and a TOTP code, each accepted once."""
    secret, codes = await enable_totp(runtime, world.user_id, clock)
    for round_ in range(ROUNDS):
        used = await race(
            CONCURRENCY,
            lambda _, code=codes[round_]: mfa.use_recovery_code(
                runtime.db, runtime.passwords, runtime.events, world.user_id, code
            ),
        )
        assert not unexpected(used), unexpected(used)
        assert used.count(True) == 1, used
        assert (
            await count_rows(
                runtime.db, RecoveryCode, RecoveryCode.user_id == world.user_id, RecoveryCode.used_at.is_not(None)
            )
            == round_ + 1
        )

        clock.advance()
        totp = pyotp.TOTP(secret).at(clock.now)
        verified = await race(
            CONCURRENCY,
            lambda _, totp=totp: mfa.verify_totp(runtime.db, runtime.encryptor, world.user_id, totp, now=clock.now),
        )
        assert not unexpected(verified), unexpected(verified)
        assert verified.count(True) == 1, verified


async def test_20_concurrent_removals_of_one_totp_disable_it_once(runtime: Any, world: World, clock: Clock) -> None:
    """disable_totp decides under the user's lock (UserRepository.lock) whether a confirmed TOTP
    was there: exactly one of 20 concurrent removals reports it (one MfaDisabled: one audit row,
    one notice), and afterwards no factor and no recovery code is left."""
    await enable_totp(runtime, world.user_id, clock)
    results = await race(CONCURRENCY, lambda _: mfa.disable_totp(runtime.db, runtime.events, world.user_id))
    assert not unexpected(results), unexpected(results)
    assert results.count(True) == 1, results
    assert await count_rows(runtime.db, MfaCredential, MfaCredential.user_id == world.user_id) == 0
    assert await count_rows(runtime.db, RecoveryCode, RecoveryCode.user_id == world.user_id) == 0


async def test_20_passkeys_registered_at_once_enable_the_factor_once(runtime: Any, world: World) -> None:
    """register_passkey decides "the user's first passkey" under the user's lock: of 20
    registrations finishing at once for an account without one, every one is stored and exactly
    one publishes MfaEnabled (one audit row, one notice), on SQLite as on PostgreSQL."""
    from idp.accounts.security import passkeys
    from idp.events import MfaEnabled
    from tests.webauthn_soft import SoftAuthenticator

    enabled: list[MfaEnabled] = []

    async def hear(event: Any, *_: Any) -> None:
        enabled.append(event)

    runtime.events.subscribe(hear, MfaEnabled)
    origin = "http://localhost:8000"
    rp = relying_party.RelyingParty(id="localhost", name="idp", origins=(origin,))
    ceremonies = []
    for _ in range(CONCURRENCY):
        ceremony, options = await passkeys.registration_options(
            runtime.db, runtime.kv, rp, user_id=world.user_id, user_name=world.email, display_name="A", binding="b"
        )
        ceremonies.append((ceremony, SoftAuthenticator().create(options, origin=origin)))
    results = await race(
        CONCURRENCY,
        lambda index: passkeys.register_passkey(
            runtime.db,
            runtime.kv,
            runtime.events,
            rp,
            user_id=world.user_id,
            ceremony_id=ceremonies[index][0],
            binding="b",
            credential=ceremonies[index][1],
            name=f"Key {index}",
        ),
    )
    assert not unexpected(results), unexpected(results)
    assert await count_rows(runtime.db, MfaCredential, MfaCredential.user_id == world.user_id) == CONCURRENCY
    assert len(enabled) == 1, enabled


async def test_two_administrators_demoting_each_other_at_once_leave_one(runtime: Any) -> None:
    """UserRepository.change_unless_last_admin: of many concurrent demotions and disablings of the
    last two administrators, never all succeed; one enabled administrator is always left."""
    from idp.storage.repositories import UserRepository
    from idp.storage.repositories.errors import LastAdministrator
    from tests.oauth_helpers import add_user

    for round_ in range(ROUNDS):
        admins = [await add_user(runtime, f"admin{round_}-{n}@example.com") for n in range(2)]
        async with runtime.db.session() as session:
            for user in await session.execute(select(User)):
                user[0].is_admin = user[0].id in admins

        async def demote(index: int, admins: list[str] = admins) -> None:
            change = {"is_admin": False} if index % 4 < 2 else {"disabled": True}
            async with runtime.db.session() as session:
                await UserRepository(session).change_unless_last_admin(admins[index % 2], **change)

        results = await race(CONCURRENCY, demote)
        assert not unexpected(results, LastAdministrator), unexpected(results, LastAdministrator)
        left = await count_rows(runtime.db, User, User.is_admin.is_(True), User.disabled.is_(False))
        assert left == 1, left


# -- 6. the session limit -----------------------------------------------------------------------

_LIMIT = 3


@pytest.mark.parametrize("policy", ["end_oldest", "refuse"])
async def test_20_concurrent_sign_ins_of_one_user_leave_at_most_the_limit_of_live_sessions(
    app: Any, runtime: Any, world: World, policy: str
) -> None:
    """[sessions] max_per_user under a burst of sign-ins (SessionStore._make_room under its lock):
    never more than the limit live; with "refuse" exactly the limit's worth of sign-ins succeed."""
    runtime.sessions.max_per_user = _LIMIT
    runtime.sessions.limit_policy = policy
    for _ in range(ROUNDS):
        await runtime.sessions.end_all_for_user(world.user_id, reason="test")
        browsers = [app.test_client() for _ in range(CONCURRENCY)]
        results = await race(CONCURRENCY, lambda index: login(browsers[index], world.email))
        assert not unexpected(results), unexpected(results)
        assert all(response.status_code < 500 for response in results), [r.status_code for r in results]
        signed_in = [response for response in results if response.status_code == 303]
        live = await runtime.sessions.list_for_user(world.user_id)
        assert len(live) <= _LIMIT, len(live)
        if policy == "refuse":
            assert len(signed_in) == _LIMIT and len(live) == _LIMIT
        else:
            assert len(signed_in) == CONCURRENCY and len(live) == _LIMIT


@pytest.mark.parametrize("policy", ["end_oldest", "refuse"])
async def test_the_session_limit_holds_when_the_sign_in_lock_is_not_to_be_had(
    app: Any, runtime: Any, world: World, policy: str
) -> None:
    """Another node took the user's sign-in lock and is slow (or died holding it, until its TTL):
    the 20 sign-ins here wait _LOCK_WAIT for it and then go ahead without it, all at once. The
    limit must still hold: at most the limit live, with "refuse" no more successes than that."""
    from idp.accounts.sessions import store

    runtime.sessions.max_per_user = _LIMIT
    runtime.sessions.limit_policy = policy
    assert await runtime.kv.set_if_absent(store._USER_LOCK + world.user_id, "another-node", ttl=30)
    browsers = [app.test_client() for _ in range(CONCURRENCY)]
    results = await race(CONCURRENCY, lambda index: login(browsers[index], world.email))
    assert not unexpected(results), unexpected(results)
    assert all(response.status_code < 500 for response in results), [r.status_code for r in results]
    signed_in = [response for response in results if response.status_code == 303]
    live = await runtime.sessions.list_for_user(world.user_id)
    assert len(live) <= _LIMIT, len(live)
    assert 1 <= len(signed_in) <= (_LIMIT if policy == "refuse" else CONCURRENCY)
    if policy == "end_oldest":
        assert len(signed_in) == CONCURRENCY and len(live) == _LIMIT


# -- 7. links and passkey challenges ------------------------------------------------------------


async def test_one_password_reset_link_used_by_20_concurrent_requests_changes_the_password_once(
    runtime: Any, world: World
) -> None:
    ctx = runtime.accounts
    for round_ in range(ROUNDS):
        token = await links.issue(runtime.db, purpose=links.RESET_PASSWORD, user_id=world.user_id, ttl=600)
        candidates = [f"quartz-harbor-{round_}-lantern-{index:02d}" for index in range(CONCURRENCY)]
        results = await race(
            CONCURRENCY, lambda index: passwords.reset_password(ctx, token, candidates[index], ip=None)
        )
        assert not unexpected(results, AccountError), unexpected(results, AccountError)
        won = [index for index, result in enumerate(results) if result == world.user_id]
        assert len(won) == 1, results
        assert all(exc.field == "token" for exc in results if isinstance(exc, AccountError))
        [user] = await fetch_rows(runtime.db, User, User.id == world.user_id)
        works = [
            index
            for index, candidate in enumerate(candidates)
            if await runtime.passwords.verify(user.password_hash, candidate)
        ]
        assert works == won


async def test_one_email_verification_link_used_by_20_concurrent_requests_verifies_once(
    runtime: Any, world: World
) -> None:
    ctx = runtime.accounts
    for _ in range(ROUNDS):
        token = await links.issue(
            runtime.db, purpose=links.VERIFY_EMAIL, user_id=world.user_id, ttl=600, email=world.email
        )
        results = await race(CONCURRENCY, lambda _: signup.verify_email(ctx, token, None))
        assert not unexpected(results), unexpected(results)
        assert sum(result is not None for result in results) == 1, results
        [row] = await fetch_rows(runtime.db, OneTimeToken, OneTimeToken.digest == sha256_digest(token))
        assert row.used_at is not None


async def test_20_links_issued_at_once_leave_only_one_usable(runtime: Any, world: World) -> None:
    """Only the newest emailed link works (LinkRepository.issue cancels the older unused ones):
    20 reset requests at once (a user pressing the button repeatedly, two tabs) must leave one
    usable link, not one per request that happened to overlap."""
    for _ in range(ROUNDS):
        tokens = await race(
            CONCURRENCY,
            lambda _: links.issue(runtime.db, purpose=links.RESET_PASSWORD, user_id=world.user_id, ttl=600),
        )
        assert not unexpected(tokens), unexpected(tokens)
        usable = await count_rows(
            runtime.db,
            OneTimeToken,
            OneTimeToken.user_id == world.user_id,
            OneTimeToken.purpose == links.RESET_PASSWORD,
            OneTimeToken.used_at.is_(None),
        )
        assert usable == 1, usable


async def test_one_passkey_ceremony_consumed_by_20_concurrent_requests_is_taken_once(runtime: Any) -> None:
    """A WebAuthn challenge works once (ASVS 6.7.2 / W3C WebAuthn §13.4.3): ``kv.pop`` is atomic
    on Redis (GETDEL) and in-process."""
    rp = relying_party.RelyingParty(id="127.0.0.1", name="idp", origins=("http://127.0.0.1:8000",))
    for _ in range(ROUNDS):
        ceremony = await relying_party.start_ceremony(
            runtime.kv, rp, kind=relying_party.AUTHENTICATION, challenge=b"c" * 64, user_id=None, binding="browser"
        )
        results = await race(
            CONCURRENCY,
            lambda _: relying_party.consume_ceremony(
                runtime.kv, ceremony, kind=relying_party.AUTHENTICATION, binding="browser"
            ),
        )
        assert not unexpected(results, PasskeyError), unexpected(results, PasskeyError)
        assert sum(isinstance(result, relying_party.Ceremony) for result in results) == 1


# -- the same read-then-insert elsewhere: the known-device record ------------------------------


async def test_20_concurrent_sign_ins_from_one_new_browser_record_the_device_once(
    app: Any, runtime: Any, world: World
) -> None:
    """A browser with a device cookie (here: one another account used) signs in to an account it
    never used, 20 times at once (a double-clicked button, a restored set of tabs): every sign-in
    succeeds and the known-devices table gets one row (its key is (user, device)), not an
    IntegrityError and a 500."""
    from idp.accounts.sessions.devices import DEVICE_COOKIE
    from idp.storage.models import KnownDevice

    for round_ in range(ROUNDS):
        device = f"shared-browser-device-cookie-{round_:02d}"
        browsers = [app.test_client() for _ in range(CONCURRENCY)]
        for browser in browsers:
            browser.set_cookie("localhost", DEVICE_COOKIE, device)
        results = await race(CONCURRENCY, lambda index: login(browsers[index], world.email))
        assert not unexpected(results), unexpected(results)
        assert [response.status_code for response in results] == [303] * CONCURRENCY
        assert (
            await count_rows(
                runtime.db,
                KnownDevice,
                KnownDevice.user_id == world.user_id,
                KnownDevice.device_digest == sha256_digest(device),
            )
            == 1
        )


async def test_20_concurrent_records_of_one_new_device_make_one_row(runtime: Any, world: World) -> None:
    """The same, below the per-user session lock that staggers the sign-ins above: 20 calls of
    devices.remember at once for a device the account doesn't know. One row; exactly one call
    learns the device is new (one "new device" notice, not twenty), none raises."""
    from idp.accounts.sessions import devices
    from idp.storage.models import KnownDevice

    for round_ in range(ROUNDS):
        device = f"another-shared-browser-device-{round_:02d}"
        results = await race(
            CONCURRENCY,
            lambda _, device=device: devices.remember(runtime.db, world.user_id, device, label="Firefox", ip=None),
        )
        assert not unexpected(results), unexpected(results)
        assert sum(not seen.known for seen in results if isinstance(seen, devices.DeviceSeen)) == 1
        rows = await fetch_rows(runtime.db, KnownDevice, KnownDevice.user_id == world.user_id)
        assert [row.device_digest for row in rows].count(sha256_digest(device)) == 1


# -- the same through a real server: two worker processes, many connections --------------------


@pytest.fixture(scope="module")
def node(database_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One server for the module's real-server tests (starting one costs seconds): its own
    database, data directory and Redis key prefix, removed afterwards."""
    database_url = database_factory.create()
    migrate.upgrade(database_url)
    redis_url = os.environ.get("IDP_TEST_REDIS_URL", "")
    prefix = f"idp-test-races-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = node_env(database_url, str(tmp_path_factory.mktemp("node")), port, redis_url, prefix)
    client_id, client_secret = asyncio.run(seed_node(database_url))
    try:
        with running([IDP, "serve"], env, port) as server:
            yield Node(
                f"http://127.0.0.1:{port}", client_id, client_secret, int(env["IDP_SERVER__WORKERS"]), database_url
            )
        output = server.output()
        assert "Traceback" not in output and "unhandled exception" not in output, output
    finally:
        if redis_url:
            asyncio.run(_forget_keys(redis_url, prefix))


async def _forget_keys(redis_url: str, prefix: str) -> None:
    from idp.storage.kv import RedisStore

    store = RedisStore(redis_url, prefix=prefix)
    try:
        await store.delete_prefix("")
    finally:
        await store.close()


async def _race_token_requests(http: httpx.AsyncClient, node: Node, form: dict[str, str]) -> list[httpx.Response]:
    results = await race(
        CONCURRENCY, lambda _: http.post(f"{node.url}/token", data=form, auth=(node.client_id, node.client_secret))
    )
    assert not unexpected(results), unexpected(results)
    return [result for result in results if isinstance(result, httpx.Response)]


def _one_winner(responses: list[httpx.Response]) -> dict[str, Any]:
    """Exactly one 200; every other answer invalid_grant (RFC 6749 §5.2)."""
    assert sorted(response.status_code for response in responses) == [200] + [400] * (CONCURRENCY - 1)
    assert {response.json()["error"] for response in responses if response.status_code == 400} == {"invalid_grant"}
    [won] = [response.json() for response in responses if response.status_code == 200]
    return dict(won)


async def test_real_server_spends_each_code_and_refresh_token_once_under_20_parallel_requests(node: Node) -> None:
    """The code and refresh-token races against `idp serve` with two worker processes (real
    parallelism; one worker when there is no Redis to share), 20 connections at once."""
    db = Database(node.database_url)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    auth = (node.client_id, node.client_secret)
    try:
        with httpx.Client(timeout=10) as browser:
            node_sign_in(browser, node)
            async with httpx.AsyncClient(timeout=30, limits=limits) as http:
                for _ in range(ROUNDS):
                    code, verifier = node_code(browser, node)
                    form = {
                        "grant_type": "authorization_code",
                        "code": code,
                        "redirect_uri": NODE_REDIRECT,
                        "code_verifier": verifier,
                    }
                    tokens = _one_winner(await _race_token_requests(http, node, form))
                    [row] = await fetch_rows(
                        db, AuthorizationCode, AuthorizationCode.code_digest == sha256_digest(code)
                    )
                    family = await fetch_rows(db, RefreshToken, RefreshToken.family_id == row.grant_id)
                    # One refresh token issued, revoked by the replays (RFC 9700 §4.2.4) with its access token.
                    assert len(family) == 1 and family[0].revoked_at is not None
                    introspected = await http.post(
                        f"{node.url}/introspect", data={"token": tokens["access_token"]}, auth=auth
                    )
                    assert introspected.json() == {"active": False}

                for _ in range(ROUNDS):
                    # A grant nobody replayed: its refresh token, presented 20 times at once.
                    code, verifier = node_code(browser, node)
                    form = {
                        "grant_type": "authorization_code",
                        "code": code,
                        "redirect_uri": NODE_REDIRECT,
                        "code_verifier": verifier,
                    }
                    first = (await http.post(f"{node.url}/token", data=form, auth=auth)).json()
                    refresh_form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
                    rotated = _one_winner(await _race_token_requests(http, node, refresh_form))
                    [parent] = await fetch_rows(
                        db, RefreshToken, RefreshToken.token_digest == sha256_digest(first["refresh_token"])
                    )
                    family = await fetch_rows(db, RefreshToken, RefreshToken.family_id == parent.family_id)
                    assert len(family) == 2 and all(row.revoked_at is not None for row in family)
                    assert [row.token_digest for row in family if row.parent_jti == parent.jti] == [
                        sha256_digest(rotated["refresh_token"])
                    ]
    finally:
        await db.close()


async def test_one_client_assertion_presented_by_20_concurrent_requests_authenticates_once(
    app: Any, runtime: Any
) -> None:
    """RFC 7523 §3 item 7, OIDC Core §9: a private_key_jwt assertion's jti is single use (the
    replay record is one SET NX in the key-value store): one 200, 19 invalid_client (401)."""
    import time

    from joserfc import jwt
    from joserfc.jwk import ECKey

    from idp.oauth.client_auth import ASSERTION_TYPE
    from idp.oauth.clients import ClientSpec
    from tests.oauth_helpers import add_client

    key = ECKey.generate_key("P-256", parameters={"kid": "race-key", "use": "sig"})
    client_id, _ = await add_client(
        runtime,
        ClientSpec(
            name="Key client",
            client_type="confidential",
            redirect_uris=[WEB_REDIRECT],
            grant_types=["client_credentials"],
            token_endpoint_auth_method="private_key_jwt",
            jwks={"keys": [key.as_dict(private=False)]},
        ),
    )
    for _ in range(ROUNDS):
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": runtime.settings.issuer + "/token",
            "iat": now,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
        }
        assertion = jwt.encode({"alg": "ES256", "kid": "race-key"}, claims, key, algorithms=["ES256"])
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        results = await race(CONCURRENCY, lambda _, form=form: app.test_client().post("/token", form=form))
        assert not unexpected(results), unexpected(results)
        assert sorted(response.status_code for response in results) == [200] + [401] * (CONCURRENCY - 1)
        assert {await _error(response) for response in results if response.status_code == 401} == {"invalid_client"}


async def test_real_server_keeps_one_account_per_address_and_the_session_limit_under_20_parallel_browsers(
    node: Node,
) -> None:
    """Registration and the session limit through `idp serve` (two workers sharing Redis): 20
    browsers registering one address at once make one account and all read the same answer; 20
    browsers signing in at once to one account leave at most [sessions] max_per_user live."""
    db = Database(node.database_url)
    address = "parallel@example.com"
    try:
        browsers = [httpx.AsyncClient(timeout=30) for _ in range(CONCURRENCY)]
        try:
            registered = await race(
                CONCURRENCY,
                lambda index: node_form_post(
                    browsers[index],
                    node,
                    "/register",
                    {"email": address.upper() if index % 2 else address, "password": PASSWORD, "name": "P"},
                ),
            )
            assert not unexpected(registered), unexpected(registered)
            responses = [result for result in registered if isinstance(result, httpx.Response)]
            assert [response.status_code for response in responses] == [200] * CONCURRENCY
            assert len({_VOLATILE.sub("", response.text) for response in responses}) == 1
            assert await count_rows(db, User, User.email_normalized == address) == 1

            signed_in = await race(
                CONCURRENCY,
                lambda index: node_form_post(
                    browsers[index], node, "/login", {"email": NODE_EMAIL, "password": NODE_PASSWORD, "return_to": "/"}
                ),
            )
            assert not unexpected(signed_in), unexpected(signed_in)
            codes = [result.status_code for result in signed_in if isinstance(result, httpx.Response)]
            assert codes == [303] * CONCURRENCY, codes
            # Each browser asks whether it is still signed in: at most the limit are.
            pages = await asyncio.gather(*(browser.get(f"{node.url}/account") for browser in browsers))
            live = [page for page in pages if page.status_code == 200]
            assert 1 <= len(live) <= NODE_SESSION_LIMIT, [page.status_code for page in pages]
        finally:
            await asyncio.gather(*(browser.aclose() for browser in browsers))
    finally:
        await db.close()
