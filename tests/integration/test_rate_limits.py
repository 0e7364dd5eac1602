"""The sliding-window rate limiter on the configured key-value store (in-process, or Redis when
IDP_TEST_REDIS_URL is set): limits are shared through the store, every attempt counts, and a
refusal says when to come back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from idp.security.ratelimit import RateLimited, RateLimiter


@dataclass(frozen=True)
class Spec:
    requests: int
    window: int


async def test_limit_counts_attempts_and_names_the_wait(runtime: Any) -> None:
    limiter = RateLimiter(runtime.kv, {"tries": Spec(requests=2, window=60)})
    await limiter.hit("tries", "alice")
    await limiter.hit("tries", "alice")
    with pytest.raises(RateLimited) as refused:
        await limiter.hit("tries", "alice")
    assert (refused.value.limit, refused.value.retry_after) == ("tries", 60)
    # Another subject has its own counter; a reset clears one.
    await limiter.hit("tries", "bob")
    await limiter.reset("tries", "alice")
    await limiter.hit("tries", "alice")


async def test_two_limiters_on_one_store_share_counters(runtime: Any) -> None:
    # Two instances of the IdP are two limiters over the same Redis.
    first = RateLimiter(runtime.kv, {"tries": Spec(requests=3, window=60)})
    second = RateLimiter(runtime.kv, {"tries": Spec(requests=3, window=60)})
    await first.hit("tries", "10.0.0.1")
    await second.hit("tries", "10.0.0.1")
    await first.hit("tries", "10.0.0.1")
    with pytest.raises(RateLimited):
        await second.hit("tries", "10.0.0.1")


async def test_hit_all_advances_every_counter_before_refusing(runtime: Any) -> None:
    limiter = RateLimiter(runtime.kv, {"account": Spec(1, 60), "ip": Spec(5, 30)})
    await limiter.hit_all({"account": "alice", "ip": "10.0.0.1", "unused": None})
    with pytest.raises(RateLimited) as refused:
        await limiter.hit_all({"account": "alice", "ip": "10.0.0.1"})
    assert refused.value.limit == "account"
    # The IP counter moved on the refused attempt too: 2 of 5 used, so 3 more pass.
    for _ in range(3):
        await limiter.hit("ip", "10.0.0.1")
    with pytest.raises(RateLimited):
        await limiter.hit("ip", "10.0.0.1")


async def test_keys_do_not_hold_the_subject(runtime: Any) -> None:
    limiter = RateLimiter(runtime.kv, {"tries": Spec(requests=5, window=60)})
    await limiter.hit("tries", "alice@example.com")
    assert await runtime.kv.exists(limiter._key("tries", "alice@example.com"))
    assert "alice" not in limiter._key("tries", "alice@example.com")
