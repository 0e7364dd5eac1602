"""Key rotation without a window (issue 15): a rotated-in key is published before it signs, every
node hears of a rotation at once, a token signed with a key a node doesn't know makes it reload
once (rate-limited) before refusing it, and keys rotate on schedule (keys.rotate_every)."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from idp.config import KeySettings
from idp.oauth.tokens import UnknownKey
from tests.integration.test_cli_user_admin import run_json
from tests.integration.test_keys import FakeClock, manager
from tests.oauth_helpers import basic, make_world

LEAD = timedelta(seconds=900)  # keys.publish_ahead's default


def published_kids(node: Any) -> set[str]:
    return {key["kid"] for key in node.jwks()["keys"]}


async def test_a_rotated_in_key_is_published_first_and_signs_after_publish_ahead(runtime: Any) -> None:
    clock = FakeClock(datetime.now(UTC))
    node = manager(runtime, clock)
    await node.reload()
    old = node.signing_key("ES256").kid
    [new] = await node.rotate(["ES256"])
    # Published at once, so relying parties that refetch the JWKS learn it ...
    assert {old, new} <= published_kids(node)
    # ... while the old key goes on signing for publish_ahead (longer than the JWKS max-age).
    clock.advance(LEAD - timedelta(seconds=1))
    assert node.signing_key("ES256").kid == old
    clock.advance(timedelta(seconds=1))
    assert node.signing_key("ES256").kid == new
    assert {old, new} <= published_kids(node)  # the old one still verifies what it signed


async def test_an_immediate_rotation_hands_over_at_once_even_mid_hand_over(runtime: Any) -> None:
    clock = FakeClock(datetime.now(UTC))
    node = manager(runtime, clock)
    await node.reload()
    first = node.signing_key("ES256").kid
    [second] = await node.rotate(["ES256"])
    assert node.signing_key("ES256").kid == first
    [third] = await node.rotate(["ES256"], immediately=True)  # the key is compromised
    assert node.signing_key("ES256").kid == third
    assert {first, second, third} <= published_kids(node)


async def test_overlapping_rotations_hand_over_in_order(runtime: Any) -> None:
    clock = FakeClock(datetime.now(UTC))
    node = manager(runtime, clock)
    await node.reload()
    k0 = node.signing_key("ES256").kid
    [k1] = await node.rotate(["ES256"])
    clock.advance(timedelta(seconds=300))
    [k2] = await node.rotate(["ES256"])
    # k1 was published 300 s ago: it must not sign before its own publish_ahead has passed.
    assert node.signing_key("ES256").kid == k0
    clock.advance(LEAD - timedelta(seconds=300))
    assert node.signing_key("ES256").kid == k1
    clock.advance(timedelta(seconds=300))
    assert node.signing_key("ES256").kid == k2


async def test_keys_rotate_on_schedule_once_for_all_nodes(runtime: Any) -> None:
    clock = FakeClock(datetime.now(UTC))
    settings = KeySettings(rotate_every=7 * 86400)
    a, b = manager(runtime, clock, keys=settings), manager(runtime, clock, keys=settings)
    await a.reload()
    assert await a.rotate_if_due() == []
    clock.advance(timedelta(days=8))
    created = await asyncio.gather(a.rotate_if_due(), b.rotate_if_due())
    assert sorted(len(kids) for kids in created) == [0, 3]  # one node rotated, every algorithm
    assert await a.rotate_if_due() == []  # not due again until the new keys are old
    assert await manager(runtime, clock).rotate_if_due() == []  # rotate_every = 0: never


def test_rotate_every_is_never_or_at_least_an_hour() -> None:
    with pytest.raises(ValueError, match="at least 3600"):
        KeySettings(rotate_every=60)
    assert KeySettings(rotate_every=0).rotate_every == 0


async def test_an_unknown_kid_reloads_the_key_set_once_before_refusing(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    other = manager(runtime)  # another node, whose announcement this one misses
    await other.reload()
    await runtime.keys.stop()  # deaf to announcements: as if it missed the message
    [new] = await other.rotate([runtime.keys.default_algorithm], immediately=True)
    assert new not in published_kids(runtime.keys)
    reloads = runtime.keys._unknown_kid_reload_at
    # A token signed by the other node's new key (what the other node now issues).
    issued = runtime.tokens
    original = issued._keys
    issued._keys = other
    try:
        token = issued.issue_access_token(subject=world.user_id, client_id=world.web_id, scope="openid")
    finally:
        issued._keys = original
    claims = await runtime.tokens.verify_access_token(token.value)
    assert claims["jti"] == token.jti
    assert new in published_kids(runtime.keys)
    assert runtime.keys._unknown_kid_reload_at > reloads
    # Garbage kids can't make a node reload more than once every few seconds.
    forged = token.value.split(".")
    header = '{"alg":"ES256","kid":"nobody","typ":"at+jwt"}'
    forged[0] = base64.urlsafe_b64encode(header.encode()).rstrip(b"=").decode()
    for _ in range(5):
        with pytest.raises(UnknownKey):
            await runtime.tokens.verify_access_token(".".join(forged))
    assert await runtime.keys.reload_for_unknown_kid() is False  # the budget is spent
    await runtime.keys.start()


async def test_cli_rotate_publishes_first_and_rotate_now_hands_over_at_once(
    runtime: Any, cli_env: dict[str, str]
) -> None:
    def rotate(*flags: str) -> tuple[str, dict[str, str]]:
        result = run_json(cli_env, "keys", "rotate", "--alg", "ES256", *flags)
        [created] = result["created"]
        return created, {key["kid"]: key["status"] for key in result["keys"] if key["alg"] == "ES256"}

    new, states = await asyncio.to_thread(rotate)
    assert states[new] == "next" and list(states.values()).count("active") == 1
    newest, states = await asyncio.to_thread(rotate, "--now")
    assert states[newest] == "active" and states[new] == "retiring"
    assert list(states.values()).count("active") == 1


# -- every node hears of a rotation at once (Redis) ------------------------------------------------


async def test_a_rotation_on_one_node_is_published_and_verified_by_another_within_a_second(
    client: Any, runtime: Any, second_node: Any
) -> None:
    world = await make_world(runtime)
    other = second_node.test_client()
    before = {key["kid"] for key in (await (await other.get("/jwks")).get_json())["keys"]}
    [new] = await runtime.keys.rotate([runtime.keys.default_algorithm], immediately=True)
    assert new not in before
    token = (
        await (
            await client.post(
                "/token", form={"grant_type": "client_credentials"}, headers=basic(world.web_id, world.web_secret)
            )
        ).get_json()
    )["access_token"]
    started = time.monotonic()
    while new not in {key["kid"] for key in (await (await other.get("/jwks")).get_json())["keys"]}:
        assert time.monotonic() - started < 1.0, "the second node did not hear of the rotation"
        await asyncio.sleep(0.02)
    assert second_node.runtime.keys._unknown_kid_reload_at == float("-inf")  # heard, not guessed
    introspected = await other.post("/introspect", form={"token": token}, headers=basic(world.web_id, world.web_secret))
    assert (await introspected.get_json())["active"] is True
