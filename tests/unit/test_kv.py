"""One behavioural suite for every key-value backend.

The memory backend always runs; the Redis backend runs too when ``IDP_TEST_REDIS_URL`` is set,
so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from idp.storage.kv import (
    KeyValueError,
    KeyValueStore,
    KeyValueUnavailable,
    MemoryStore,
    RedisStore,
    open_kv_store,
    redact_url,
)

REDIS_URL = os.environ.get("IDP_TEST_REDIS_URL", "")
BACKENDS = ["memory", *(["redis"] if REDIS_URL else [])]

UNREACHABLE = "redis://:s3cret@127.0.0.1:1/0"  # nothing listens on port 1


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def unique_prefix() -> str:
    return f"idp-test-{uuid.uuid4().hex}:"


def make_store(backend: str, prefix: str) -> KeyValueStore:
    if backend == "redis":
        return RedisStore(REDIS_URL, prefix)
    return MemoryStore(prefix)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    kv = make_store(request.param, unique_prefix())
    yield kv
    await kv.delete_prefix("")
    await kv.close()


# -- strings -------------------------------------------------------------------------------------


async def test_backend_name_and_ping(store: KeyValueStore) -> None:
    assert store.backend_name in BACKENDS
    assert await store.ping() is None


async def test_get_set_delete_exists_roundtrip(store: KeyValueStore) -> None:
    assert await store.get("k") is None
    assert await store.exists("k") is False

    await store.set("k", "v1")
    assert await store.get("k") == "v1"
    assert await store.exists("k") is True

    await store.set("k", "v2")
    assert await store.get("k") == "v2"

    await store.set("other", "o")
    assert await store.delete("k", "missing", "other") == 2
    assert await store.get("k") is None
    assert await store.exists("k") is False
    assert await store.delete("k") == 0
    assert await store.delete() == 0


async def test_values_round_trip_unchanged(store: KeyValueStore) -> None:
    for value in ("", "ünïcødé ✓", "with\nnewline", "*?[glob]", "0"):
        await store.set("k", value)
        assert await store.get("k") == value


async def test_get_many_answers_each_key_in_order(store: KeyValueStore) -> None:
    await store.set("a", "1")
    await store.set("b", "2")
    await store.set("gone", "x", ttl=0.05)
    await store.add_to_set("a_set", "m")
    await asyncio.sleep(0.1)
    assert await store.get_many("b", "missing", "a", "gone", "a_set", "b") == ["2", None, "1", None, None, "2"]
    assert await store.get_many() == []


async def test_keys_are_namespaced_with_prefix(store: KeyValueStore) -> None:
    await store.set("k", "v")
    if isinstance(store, MemoryStore):
        assert list(store._data) == [store.prefix + "k"]
    else:
        raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            assert await raw.get(store.prefix + "k") == "v"
        finally:
            await raw.aclose()


async def test_ttl_expiry_real_time(store: KeyValueStore) -> None:
    await store.set("s", "v", ttl=0.15)
    assert await store.set_if_absent("once", "v", ttl=0.15) is True
    assert await store.incr("counter", ttl=0.15) == 1
    assert await store.add_to_set("set", "m", ttl=0.15) == 1
    await store.set("forever", "v")
    assert await store.get("s") == "v"

    await asyncio.sleep(0.3)

    assert await store.get("s") is None
    assert await store.exists("s") is False
    assert await store.exists("once") is False
    assert await store.set_members("set") == set()
    assert await store.get("forever") == "v"
    # Expired keys behave exactly like missing ones.
    assert await store.set_if_absent("once", "again") is True
    assert await store.incr("counter") == 1
    assert await store.pop("s") is None
    assert await store.delete("s") == 0


async def test_set_without_ttl_clears_previous_expiry(store: KeyValueStore) -> None:
    await store.set("k", "v", ttl=0.15)
    await store.set("k", "w")
    await asyncio.sleep(0.3)
    assert await store.get("k") == "w"
    assert await store.ttl("k") is None


async def test_ttl_values(store: KeyValueStore) -> None:
    assert await store.ttl("missing") is None
    await store.set("plain", "v")
    assert await store.ttl("plain") is None

    await store.set("k", "v", ttl=10)
    remaining = await store.ttl("k")
    assert remaining is not None
    assert 9.0 < remaining <= 10.0

    assert await store.expire("k", 20) is True
    remaining = await store.ttl("k")
    assert remaining is not None
    assert 19.0 < remaining <= 20.0

    assert await store.expire("plain", 5) is True
    remaining = await store.ttl("plain")
    assert remaining is not None
    assert 4.0 < remaining <= 5.0


async def test_expire_on_missing_key(store: KeyValueStore) -> None:
    assert await store.expire("missing", 5) is False
    assert await store.exists("missing") is False
    assert await store.ttl("missing") is None


async def test_expire_shortens_life(store: KeyValueStore) -> None:
    await store.set("k", "v")
    assert await store.expire("k", 0.15) is True
    await asyncio.sleep(0.3)
    assert await store.get("k") is None


async def test_set_if_present_only_replaces_a_live_key(store: KeyValueStore) -> None:
    assert await store.set_if_present("k", "v") is False
    assert await store.get("k") is None  # nothing was written
    await store.set("k", "v1", ttl=60)
    assert await store.set_if_present("k", "v2", ttl=0.15) is True
    assert await store.get("k") == "v2"
    await asyncio.sleep(0.3)
    # Expired is absent: an update can't revive it.
    assert await store.set_if_present("k", "v3") is False
    assert await store.get("k") is None
    await store.set("gone", "v")
    await store.delete("gone")
    assert await store.set_if_present("gone", "v") is False


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
async def test_invalid_ttl_is_rejected(store: KeyValueStore, bad: float) -> None:
    with pytest.raises(ValueError, match="ttl must be a positive number"):
        await store.set("k", "v", ttl=bad)
    with pytest.raises(ValueError):
        await store.set_if_absent("k", "v", ttl=bad)
    with pytest.raises(ValueError):
        await store.set_if_present("k", "v", ttl=bad)
    with pytest.raises(ValueError):
        await store.incr("k", ttl=bad)
    with pytest.raises(ValueError):
        await store.hit_window("k", bad)
    await store.set("k", "v")
    with pytest.raises(ValueError):
        await store.expire("k", bad)
    assert await store.ttl("k") is None


# -- atomic primitives ---------------------------------------------------------------------------


async def test_set_if_absent_single_winner_among_50(store: KeyValueStore) -> None:
    results = await asyncio.gather(*(store.set_if_absent("jti:abc", f"caller-{i}", ttl=60) for i in range(50)))
    assert results.count(True) == 1
    assert results.count(False) == 49
    winner = results.index(True)
    assert await store.get("jti:abc") == f"caller-{winner}"
    # A later attempt (a replayed jti) is refused and does not overwrite.
    assert await store.set_if_absent("jti:abc", "replay") is False
    assert await store.get("jti:abc") == f"caller-{winner}"


async def test_pop_consumes_once_among_50(store: KeyValueStore) -> None:
    await store.set("code:xyz", "grant")
    results = await asyncio.gather(*(store.pop("code:xyz") for _ in range(50)))
    assert results.count("grant") == 1
    assert results.count(None) == 49
    assert await store.exists("code:xyz") is False
    assert await store.pop("code:xyz") is None


async def test_delete_if_equal_deletes_only_the_expected_value(store: KeyValueStore) -> None:
    await store.set("lock", "mine", ttl=30)
    assert await store.delete_if_equal("lock", "theirs") is False
    assert await store.get("lock") == "mine"
    assert await store.delete_if_equal("lock", "mine") is True
    assert await store.exists("lock") is False
    assert await store.delete_if_equal("lock", "mine") is False  # missing
    await store.add_to_set("a-set", "mine")
    assert await store.delete_if_equal("a-set", "mine") is False  # another type is never equal
    assert await store.set_members("a-set") == {"mine"}


async def test_delete_if_equal_single_winner_among_50(store: KeyValueStore) -> None:
    await store.set("lock", "token", ttl=30)
    results = await asyncio.gather(*(store.delete_if_equal("lock", "token") for _ in range(50)))
    assert results.count(True) == 1


async def test_incr_counts(store: KeyValueStore) -> None:
    assert await store.incr("c") == 1
    assert await store.incr("c", 5) == 6
    assert await store.incr("c", -2) == 4
    assert await store.get("c") == "4"
    assert await store.ttl("c") is None

    await store.set("n", "41")
    assert await store.incr("n") == 42


async def test_incr_ttl_only_set_on_creation(store: KeyValueStore) -> None:
    assert await store.incr("w", ttl=10) == 1
    assert await store.incr("w", ttl=100) == 2
    assert await store.incr("w") == 3
    remaining = await store.ttl("w")
    assert remaining is not None
    assert 9.0 < remaining <= 10.0

    # An existing counter without expiry does not gain one.
    await store.set("n", "5")
    assert await store.incr("n", ttl=10) == 6
    assert await store.ttl("n") is None


async def test_incr_concurrent_total(store: KeyValueStore) -> None:
    results = await asyncio.gather(*(store.incr("hits", ttl=60) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert await store.get("hits") == "50"
    remaining = await store.ttl("hits")
    assert remaining is not None
    assert 59.0 < remaining <= 60.0


async def test_incr_non_integer_value(store: KeyValueStore) -> None:
    await store.set("s", "abc")
    with pytest.raises(KeyValueError) as excinfo:
        await store.incr("s")
    assert not isinstance(excinfo.value, KeyValueUnavailable)
    assert await store.get("s") == "abc"


# -- sliding window ------------------------------------------------------------------------------


async def test_hit_window_counts_each_hit(store: KeyValueStore) -> None:
    assert [await store.hit_window("rl", 60) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert await store.hit_window("rl-other", 60) == 1
    remaining = await store.ttl("rl")
    assert remaining is not None
    assert 59.0 < remaining <= 60.0


async def test_hit_window_concurrent_hits_are_all_counted(store: KeyValueStore) -> None:
    results = await asyncio.gather(*(store.hit_window("rl", 60) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))


async def test_hit_window_slides(store: KeyValueStore) -> None:
    assert await store.hit_window("rl", 0.6) == 1
    await asyncio.sleep(0.4)
    assert await store.hit_window("rl", 0.6) == 2
    await asyncio.sleep(0.4)
    # The first hit (0.8 s ago) fell out of the window, the second (0.4 s ago) did not.
    assert await store.hit_window("rl", 0.6) == 2


async def test_hit_window_keeps_only_the_newest_cap_hits(store: KeyValueStore) -> None:
    """However fast a key is hit, it holds at most ``cap`` hits (an attacker at thousands of
    requests a second can't grow one key without bound), and the count saturates at ``cap``."""
    counts = [await store.hit_window("capped", 60, cap=3) for _ in range(200)]
    assert counts[:3] == [1, 2, 3] and set(counts[3:]) == {3}
    if isinstance(store, RedisStore):
        assert await store._redis.zcard(store._k("capped")) == 3
    else:
        assert len(store._data[store._k("capped")].value) == 3  # type: ignore[attr-defined]


async def test_hit_windows_counts_every_window_in_one_call(store: KeyValueStore) -> None:
    assert await store.hit_windows([("a", 60, 10), ("b", 30, 10)]) == [1, 1]
    assert await store.hit_windows([("a", 60, 10), ("b", 30, 10), ("c", 60, 1)]) == [2, 2, 1]
    assert await store.hit_windows([]) == []
    with pytest.raises(ValueError, match="cap must be a positive integer"):
        await store.hit_windows([("a", 60, 10), ("d", 60, 0)])
    # Refused before anything was counted.
    assert await store.hit_windows([("a", 60, 10)]) == [3]
    assert await store.exists("d") is False


async def test_hit_window_key_expires_when_idle(store: KeyValueStore) -> None:
    assert await store.hit_window("rl", 0.15) == 1
    await asyncio.sleep(0.3)
    assert await store.exists("rl") is False
    assert await store.hit_window("rl", 0.15) == 1


# -- sets ----------------------------------------------------------------------------------------


async def test_set_operations(store: KeyValueStore) -> None:
    assert await store.set_members("sessions") == set()
    assert await store.add_to_set("sessions", "a", "b") == 2
    assert await store.add_to_set("sessions", "b", "c") == 1
    assert await store.add_to_set("sessions") == 0
    assert await store.set_members("sessions") == {"a", "b", "c"}
    assert await store.exists("sessions") is True

    assert await store.remove_from_set("sessions", "a", "zz") == 1
    assert await store.set_members("sessions") == {"b", "c"}
    assert await store.remove_from_set("sessions") == 0
    assert await store.remove_from_set("missing", "x") == 0

    # An emptied set disappears, as in Redis.
    assert await store.remove_from_set("sessions", "b", "c") == 2
    assert await store.exists("sessions") is False
    assert await store.set_members("sessions") == set()


async def test_add_to_set_ttl_refreshes_and_none_keeps_it(store: KeyValueStore) -> None:
    assert await store.add_to_set("idx", "a") == 1
    assert await store.ttl("idx") is None
    assert await store.add_to_set("idx", "b", ttl=10) == 1
    remaining = await store.ttl("idx")
    assert remaining is not None
    assert 9.0 < remaining <= 10.0
    assert await store.add_to_set("idx", "c") == 1
    remaining = await store.ttl("idx")
    assert remaining is not None
    assert 9.0 < remaining <= 10.0
    assert await store.add_to_set("idx", "a", ttl=100) == 0
    remaining = await store.ttl("idx")
    assert remaining is not None
    assert 99.0 < remaining <= 100.0


async def test_wrong_type_is_refused(store: KeyValueStore) -> None:
    await store.set("str", "v")
    assert await store.add_to_set("set", "m") == 1
    assert await store.hit_window("window", 60) == 1

    wrong_uses: list[Callable[[], Awaitable[object]]] = [
        lambda: store.add_to_set("str", "m"),
        lambda: store.remove_from_set("str", "m"),
        lambda: store.set_members("str"),
        lambda: store.hit_window("str", 60),
        lambda: store.get("set"),
        lambda: store.pop("set"),
        lambda: store.incr("set"),
        lambda: store.incr("set", ttl=60),
        lambda: store.set_members("window"),
        lambda: store.get("window"),
    ]
    for call in wrong_uses:
        with pytest.raises(KeyValueError, match="WRONGTYPE") as excinfo:
            await call()
        assert not isinstance(excinfo.value, KeyValueUnavailable)

    # Nothing was damaged by the refused calls.
    assert await store.get("str") == "v"
    assert await store.set_members("set") == {"m"}
    # Type-agnostic operations work on every type, and set() replaces whatever was there.
    assert await store.exists("set") is True
    assert await store.set_if_absent("set", "x") is False
    await store.set("set", "now a string")
    assert await store.get("set") == "now a string"
    assert await store.delete("window", "set") == 2


# -- prefixes ------------------------------------------------------------------------------------


async def test_delete_prefix_only_removes_that_sub_prefix(store: KeyValueStore) -> None:
    await store.set("sess:1", "a")
    await store.set("sess:2", "b", ttl=60)
    await store.add_to_set("sess:index", "1", "2")
    await store.set("sess-other", "c")
    await store.set("rl:1", "d")
    await store.set("SESS:1", "e")

    assert await store.delete_prefix("sess:") == 3
    assert await store.exists("sess:1") is False
    assert await store.exists("sess:2") is False
    assert await store.exists("sess:index") is False
    assert await store.get("sess-other") == "c"
    assert await store.get("rl:1") == "d"
    assert await store.get("SESS:1") == "e"
    assert await store.delete_prefix("sess:") == 0


async def test_count_prefix_counts_live_keys_of_that_sub_prefix_only(store: KeyValueStore) -> None:
    await store.set("sess:1", "a")
    await store.set("sess:2", "b", ttl=60)
    await store.set("sess:gone", "x", ttl=0.01)
    await store.set("sess-other", "c")
    await store.set("se*:1", "glob")
    await asyncio.sleep(0.05)
    assert await store.count_prefix("sess:") == 2
    assert await store.count_prefix("se*:") == 1  # glob characters are literal
    assert await store.count_prefix("none:") == 0


async def test_delete_prefix_treats_glob_characters_literally(store: KeyValueStore) -> None:
    for key in ("a*b", "a*c", "axb", "[x]1", "x1", "q?1", "qq1", "back\\slash", "backXslash"):
        await store.set(key, "v")
    assert await store.delete_prefix("a*") == 2
    assert await store.delete_prefix("[x]") == 1
    assert await store.delete_prefix("q?") == 1
    assert await store.delete_prefix("back\\") == 1
    for key in ("axb", "x1", "qq1", "backXslash"):
        assert await store.get(key) == "v"


async def test_delete_prefix_many_keys(store: KeyValueStore) -> None:
    for i in range(1234):
        await store.set(f"bulk:{i}", "v")
    await store.set("keep", "v")
    assert await store.delete_prefix("bulk:") == 1234
    assert await store.get("keep") == "v"


async def test_two_prefixes_on_one_backend_are_isolated(store: KeyValueStore) -> None:
    # "[ab]:" would glob-match "a:" if the prefix were not escaped in SCAN MATCH.
    first = make_store(store.backend_name, store.prefix + "[ab]:")
    second = make_store(store.backend_name, store.prefix + "a:")
    try:
        await first.set("k", "first")
        await second.set("k", "second")
        await first.add_to_set("set", "f")
        await second.add_to_set("set", "s")
        await second.set("only-second", "x")

        assert await first.get("k") == "first"
        assert await second.get("k") == "second"
        assert await first.set_members("set") == {"f"}
        assert await first.exists("only-second") is False
        assert await first.set_if_absent("only-second", "mine") is True
        assert await second.get("only-second") == "x"

        assert await first.delete("k") == 1
        assert await second.get("k") == "second"

        assert await first.delete_prefix("") == 2
        assert await second.get("k") == "second"
        assert await second.set_members("set") == {"s"}
        assert await second.get("only-second") == "x"
        assert await second.delete_prefix("") == 3
    finally:
        await first.close()
        await second.close()


# -- availability --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        UNREACHABLE,
        "redis://alice:s3cret@127.0.0.1:1/0",
        "redis://127.0.0.1:1/0?password=s3cret",
    ],
)
async def test_unreachable_redis_raises_unavailable_without_password(url: str) -> None:
    kv = RedisStore(url, unique_prefix(), socket_timeout=1.0)
    try:
        with pytest.raises(KeyValueUnavailable) as excinfo:
            await kv.ping()
        message = str(excinfo.value)
        assert "s3cret" not in message
        assert "***" in message
        assert "127.0.0.1:1" in message
        assert "Traceback" not in message

        with pytest.raises(KeyValueUnavailable) as excinfo:
            await kv.get("k")
        assert "s3cret" not in str(excinfo.value)
    finally:
        await kv.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:s3cret@host/1", "redis://user:***@host/1"),
        ("rediss://user:p%40ss@host", "rediss://user:***@host"),
        ("redis://user:p@ss@host:1", "redis://user:***@host:1"),
        ("redis://user@host", "redis://user@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://host/0?db=1&password=s3cret", "redis://host/0?db=1&password=***"),
        ("unix:///run/redis.sock?password=s3cret&db=2", "unix:///run/redis.sock?password=***&db=2"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


async def test_open_kv_store_picks_backend() -> None:
    memory = open_kv_store(None, "p:")
    assert isinstance(memory, MemoryStore)
    assert memory.backend_name == "memory"
    assert memory.prefix == "p:"

    assert isinstance(open_kv_store("", "p:"), MemoryStore)

    redis_store = open_kv_store(UNREACHABLE, "p:")  # connecting is lazy, so nothing is contacted
    try:
        assert isinstance(redis_store, RedisStore)
        assert redis_store.backend_name == "redis"
        assert redis_store.prefix == "p:"
    finally:
        await redis_store.close()


async def test_redis_delete_prefix_refuses_to_flush_the_database() -> None:
    kv = RedisStore(UNREACHABLE, "")
    try:
        with pytest.raises(ValueError, match="refusing"):
            await kv.delete_prefix("")
    finally:
        await kv.close()


# -- memory backend internals (fake clock) -------------------------------------------------------


async def test_memory_expiry_with_fake_clock() -> None:
    clock = FakeClock()
    kv = MemoryStore("p:", clock=clock)
    await kv.set("k", "v", ttl=10)
    assert await kv.ttl("k") == pytest.approx(10.0)
    clock.advance(9.9)
    assert await kv.get("k") == "v"
    assert await kv.ttl("k") == pytest.approx(0.1)
    clock.advance(0.1)
    assert await kv.get("k") is None
    # Lazily removed on access.
    assert "p:k" not in kv._data


async def test_memory_ttl_rounds_up_to_milliseconds() -> None:
    clock = FakeClock()
    kv = MemoryStore(clock=clock)
    await kv.set("k", "v", ttl=0.0001)
    assert await kv.ttl("k") == pytest.approx(0.001)
    await kv.set("k", "v", ttl=1.0004)
    assert await kv.ttl("k") == pytest.approx(1.001)


async def test_memory_hit_window_slides_with_fake_clock() -> None:
    clock = FakeClock()
    kv = MemoryStore(clock=clock)
    counts = []
    for delay in (0, 4, 4, 3, 3.5, 15.5):
        clock.advance(delay)
        counts.append(await kv.hit_window("rl", 10))
    # t=0 -> 1, t=4 -> 2, t=8 -> 3, t=11 (0 out) -> 3, t=14.5 (4 out) -> 3, t=30 (all out) -> 1
    assert counts == [1, 2, 3, 3, 3, 1]
    clock.advance(10)
    assert await kv.hit_window("rl", 10) == 1  # a hit exactly `window` ago is outside


async def test_memory_sweep_removes_expired_keys() -> None:
    clock = FakeClock()
    kv = MemoryStore("p:", clock=clock)
    assert kv.SWEEP_EVERY == 1000
    for i in range(1000):
        await kv.set(f"old:{i}", "v", ttl=1)
    assert len(kv._data) == 1000

    clock.advance(2)
    for i in range(999):
        await kv.set(f"new:{i}", "v")
    assert len(kv._data) == 1999  # expired but not yet swept: never read again

    await kv.set("new:999", "v")  # the 1,000th write since the last sweep
    assert len(kv._data) == 1000
    assert all(key.startswith("p:new:") for key in kv._data)


async def test_memory_close_drops_data() -> None:
    kv = MemoryStore()
    await kv.set("k", "v")
    await kv.close()
    assert kv._data == {}


# -- publish / subscribe ---------------------------------------------------------------------------


async def test_listeners_get_what_is_published_after_they_subscribed(store: KeyValueStore) -> None:
    await store.publish("news", "too early")  # nobody listens yet: lost, as documented
    ready_a, ready_b = asyncio.Event(), asyncio.Event()
    first, second = store.listen("news", ready_a), store.listen("news", ready_b)
    got_a = asyncio.ensure_future(first.__anext__())
    got_b = asyncio.ensure_future(second.__anext__())
    await asyncio.wait_for(asyncio.gather(ready_a.wait(), ready_b.wait()), 5)
    await store.publish("other", "not for them")
    await store.publish("news", "hello")
    assert await asyncio.wait_for(got_a, 5) == "hello"
    assert await asyncio.wait_for(got_b, 5) == "hello"
    await store.publish("news", "again")
    assert await asyncio.wait_for(first.__anext__(), 5) == "again"
    await first.aclose()
    await second.aclose()


async def test_a_closed_listener_receives_nothing_more(store: KeyValueStore) -> None:
    ready = asyncio.Event()
    listener = store.listen("quiet", ready)
    pending = asyncio.ensure_future(listener.__anext__())
    await asyncio.wait_for(ready.wait(), 5)
    await store.publish("quiet", "one")
    assert await asyncio.wait_for(pending, 5) == "one"
    await listener.aclose()
    await store.publish("quiet", "two")  # no error, no listener


@pytest.mark.skipif(not REDIS_URL, reason="needs Redis (IDP_TEST_REDIS_URL)")
async def test_a_connection_redis_dropped_costs_no_request_an_error() -> None:
    """Redis closing our pooled connections (as a restart does) is retried on a new one."""
    kv = RedisStore(REDIS_URL, unique_prefix())
    admin = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await kv.set("k", "v")
        mine = await kv._redis.client_id()
        assert await admin.client_kill_filter(_id=mine) == 1  # the pooled connection is gone
        assert await kv.get("k") == "v"
        await kv.set("k", "w")
        assert await kv.get("k") == "w"
    finally:
        await kv.delete_prefix("")
        await kv.close()
        await admin.aclose()
