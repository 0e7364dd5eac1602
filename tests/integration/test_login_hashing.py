"""Password verification at login: argon2id, upgraded on login when parameters change, and the
same cost for unknown accounts (no enumeration by timing)."""

from __future__ import annotations

from argon2 import PasswordHasher as Argon2

from idp.accounts.signin.password import LoginFailure, authenticate_password
from idp.storage.models import User
from tests.oauth_helpers import PASSWORD, make_world


async def test_hash_is_upgraded_on_login_when_parameters_change(runtime) -> None:
    world = await make_world(runtime)
    weaker = Argon2(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    async with runtime.db.session() as session:
        (await session.get(User, world.user_id)).password_hash = weaker
    user = await authenticate_password(runtime.db, runtime.passwords, runtime.events, world.email, PASSWORD)
    async with runtime.db.session() as session:
        stored = (await session.get(User, world.user_id)).password_hash
    assert user.id == world.user_id
    assert stored != weaker and stored.startswith("$argon2id$")
    assert "m=7168" in stored  # the configured (test) parameters
    assert user.last_login_at is not None


async def test_current_hash_is_not_rewritten(runtime) -> None:
    world = await make_world(runtime)
    async with runtime.db.session() as session:
        before = (await session.get(User, world.user_id)).password_hash
    await authenticate_password(runtime.db, runtime.passwords, runtime.events, world.email, PASSWORD)
    async with runtime.db.session() as session:
        assert (await session.get(User, world.user_id)).password_hash == before


async def test_unknown_account_is_verified_against_a_dummy_hash(runtime, monkeypatch) -> None:
    """The unknown-email path runs one argon2 verification like the known path does."""
    await make_world(runtime)
    calls: list[str | None] = []
    original = runtime.passwords.verify

    async def spy(stored_hash, password):
        calls.append(stored_hash)
        return await original(stored_hash, password)

    monkeypatch.setattr(runtime.passwords, "verify", spy)
    for email in ("nobody@example.com", "alice@example.com"):
        try:
            await authenticate_password(runtime.db, runtime.passwords, runtime.events, email, "wrong-password-here")
        except LoginFailure as failure:
            assert failure.message == "The email address or password is incorrect."
    assert len(calls) == 2
    assert calls[0] is None and calls[1] is not None and calls[1].startswith("$argon2id$")


async def test_password_is_compared_exactly_as_typed(runtime) -> None:
    world = await make_world(runtime)
    for variant in (PASSWORD.upper(), PASSWORD + " ", " " + PASSWORD, PASSWORD[:-1]):
        try:
            await authenticate_password(runtime.db, runtime.passwords, runtime.events, world.email, variant)
        except LoginFailure:
            continue
        raise AssertionError(f"variant {variant!r} was accepted")
