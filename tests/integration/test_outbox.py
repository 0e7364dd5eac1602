"""The durable outbox (idp.outbox, issue 15): a message exists exactly when the change that causes it
commits; delivery retries with jittered exponential backoff, then dead-letters; a lease that runs
out (a killed node) hands the message to another worker; concurrent workers never deliver one
message twice; the worker wakes on a commit; payloads are sealed at rest."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from idp.config import OutboxSettings
from idp.outbox import DeliveryFailed, Outbox, RetryPolicy
from idp.outbox.operations import outbox_stats
from idp.storage.db import Database
from idp.storage.models import OneTimeToken, OutboxMessage, User, utcnow
from idp.storage.repositories.outbox import OutboxRepository
from tests.oauth_helpers import make_world

NOTICE = {"time": "now", "ip": "192.0.2.1", "reset_link": "https://idp.test/forgot-password"}
FAST = OutboxSettings(poll_interval=60, base_delay=0.01, max_delay=0.02, max_attempts=3, lease=30, batch_size=50)


class Channel:
    """Records deliveries; fails the first ``failures`` attempts of each message."""

    def __init__(self, failures: int = 0, *, permanent: bool = False, slow: float = 0.0) -> None:
        self.failures, self.permanent, self.slow = failures, permanent, slow
        self.delivered: list[str] = []
        self.attempts: Counter[str] = Counter()
        self.given_up: list[tuple[str, str, int]] = []
        self.arrived = asyncio.Event()

    async def deliver(self, payload: Mapping[str, Any], attempt: int) -> None:
        key = str(payload["n"])
        self.attempts[key] += 1
        if self.slow:
            await asyncio.sleep(self.slow)
        if self.attempts[key] <= self.failures:
            raise DeliveryFailed("HTTP 503", permanent=self.permanent)
        self.delivered.append(key)
        self.arrived.set()

    def gave_up(self, payload: Mapping[str, Any], reason: str, attempts: int) -> None:
        self.given_up.append((str(payload["n"]), reason, attempts))


@pytest.fixture(autouse=True)
async def quiet_app_worker(runtime: Any) -> None:
    """The app's own worker would claim these tests' messages (and find no channel for them)."""
    await runtime.outbox.stop()


def outbox_for(runtime: Any, channel: Channel, settings: OutboxSettings = FAST, db: Database | None = None) -> Outbox:
    outbox = Outbox(db or runtime.db, runtime.encryptor, settings)
    outbox.register("test", channel)
    return outbox


async def rows(runtime: Any, kind: str | None = None) -> list[OutboxMessage]:
    async with runtime.db.session() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.created_at)
        if kind is not None:
            query = query.where(OutboxMessage.kind == kind)
        return list((await session.scalars(query)).all())


# -- written with the change that causes it --------------------------------------------------------


async def test_a_message_commits_or_rolls_back_with_its_change(runtime: Any) -> None:
    world = await make_world(runtime)
    with pytest.raises(RuntimeError):
        async with runtime.db.session() as session:
            user = await session.get(User, world.user_id)
            user.name = "Changed"
            await runtime.accounts.send("password_changed", world.email, session=session, **NOTICE)
            raise RuntimeError("the change fails after the mail was queued")
    assert await rows(runtime, "mail") == []  # rolled back together

    async with runtime.db.session() as session:
        user = await session.get(User, world.user_id)
        user.name = "Changed"
        await runtime.accounts.send("password_changed", world.email, session=session, **NOTICE)
    [row] = await rows(runtime, "mail")
    assert row.status == "pending" and row.attempts == 0
    # Sealed: the address and the body are not readable at rest.
    assert world.email not in row.payload and "reset_link" not in row.payload and row.payload.startswith("v1.")


async def test_registration_commits_the_account_its_link_and_its_mail_together(client: Any, runtime: Any) -> None:
    await runtime.outbox.stop()  # the rows are counted before anything is delivered
    page = await client.get("/register")
    csrf = (await page.get_data(as_text=True)).split('name="csrf_token" value="')[1].split('"')[0]
    form = {"csrf_token": csrf, "email": "ada@example.org", "password": "correct-horse-battery-staple-7"}
    assert (await client.post("/register", form=form)).status_code == 200
    async with runtime.db.session() as session:
        users = await session.scalar(select(func.count()).select_from(User))
        links = await session.scalar(select(func.count()).select_from(OneTimeToken))
    [mail] = await rows(runtime, "mail")
    assert (users, links, mail.status) == (1, 1, "pending")
    await runtime.outbox.drain()
    [mail] = await rows(runtime, "mail")
    assert mail.status == "delivered" and mail.payload == ""  # the link does not stay at rest


# -- retries, dead letters --------------------------------------------------------------------------


def test_the_backoff_doubles_up_to_its_cap_with_full_jitter() -> None:
    policy = RetryPolicy(base_delay=30, max_delay=3600, max_attempts=30)
    assert [policy.ceiling(attempt) for attempt in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    rng = random.Random(7)
    for attempt in (1, 3, 8, 29):
        delays = [policy.delay(attempt, rng) for _ in range(2000)]
        assert min(delays) >= 1.0 and max(delays) <= policy.ceiling(attempt)
        # Spread over the whole range, not bunched (full jitter).
        assert min(delays) < policy.ceiling(attempt) * 0.1 and max(delays) > policy.ceiling(attempt) * 0.9
    # The defaults retry for at most a day in all.
    defaults = RetryPolicy.from_settings(OutboxSettings())
    total = sum(defaults.ceiling(attempt) for attempt in range(1, defaults.max_attempts))
    assert 20 * 3600 <= total <= 25 * 3600


async def test_a_failed_attempt_is_rescheduled_within_the_backoff(runtime: Any) -> None:
    channel = Channel(failures=1)
    outbox = outbox_for(runtime, channel, FAST.model_copy(update={"base_delay": 40.0, "max_delay": 40.0}))
    await outbox.send("test", {"n": 1})
    before = utcnow()
    assert await outbox.deliver_due() == 1
    [row] = await rows(runtime, "test")
    assert (row.status, row.attempts, row.last_error, row.locked_by) == ("pending", 1, "HTTP 503", None)
    assert before + timedelta(seconds=1) <= row.available_at <= utcnow() + timedelta(seconds=40)
    assert await outbox.deliver_due() == 0  # not due yet
    assert channel.delivered == []


async def test_a_message_is_dead_lettered_after_the_last_attempt(runtime: Any) -> None:
    channel = Channel(failures=10)
    outbox = outbox_for(runtime, channel)
    await outbox.send("test", {"n": 1})
    await outbox.drain(retries=True)
    [row] = await rows(runtime, "test")
    assert (row.status, row.attempts, row.last_error) == ("dead", 3, "HTTP 503")
    assert row.dead_at is not None and row.payload != ""  # kept, so it can be retried
    assert channel.attempts["1"] == 3 and channel.given_up == [("1", "HTTP 503", 3)]


async def test_a_permanent_refusal_is_dead_lettered_at_once(runtime: Any) -> None:
    channel = Channel(failures=10, permanent=True)
    outbox = outbox_for(runtime, channel)
    await outbox.send("test", {"n": 1})
    await outbox.drain(retries=True)
    [row] = await rows(runtime, "test")
    assert (row.status, row.attempts) == ("dead", 1)
    assert channel.given_up == [("1", "HTTP 503", 1)]


async def test_a_payload_bound_to_another_row_is_refused(runtime: Any) -> None:
    channel = Channel()
    outbox = outbox_for(runtime, channel)
    first, second = await outbox.send("test", {"n": 1}), await outbox.send("test", {"n": 2})
    async with runtime.db.session() as session:
        one, two = await session.get(OutboxMessage, first), await session.get(OutboxMessage, second)
        two.payload = one.payload  # a ciphertext copied onto another row
    await outbox.drain()
    assert channel.delivered == ["1"]
    assert {row.id: (row.status, row.last_error) for row in await rows(runtime, "test")}[second] == (
        "dead",
        "DecryptionError",
    )


# -- leases, concurrency, wake-up ---------------------------------------------------------------------


async def test_a_message_held_by_a_node_that_died_is_delivered_after_its_lease(runtime: Any) -> None:
    channel = Channel()
    outbox = outbox_for(runtime, channel)
    await outbox.send("test", {"n": 1})
    now = utcnow()
    async with runtime.db.session() as session:  # a node claims it, then is killed
        [held] = await OutboxRepository(session).claim(
            node="killed", now=now, lease_until=now + timedelta(seconds=0.3), limit=10, skip_locked=False
        )
    assert await outbox.deliver_due() == 0  # leased: nobody else takes it
    await asyncio.sleep(0.4)
    assert await outbox.deliver_due() == 1
    assert channel.delivered == ["1"]
    [row] = await rows(runtime, "test")
    assert (row.status, row.attempts) == ("delivered", 2)
    async with runtime.db.session() as session:  # the dead node's late outcome changes nothing
        assert await OutboxRepository(session).reschedule(held, "killed", utcnow(), "late") is False
    assert (await rows(runtime, "test"))[0].status == "delivered"


async def test_concurrent_workers_never_deliver_a_message_twice(runtime: Any) -> None:
    """Four workers, each with its own connection pool (as separate nodes), race for 200 messages:
    every message is delivered exactly once (PostgreSQL: FOR UPDATE SKIP LOCKED plus the claim's
    compare-and-set; SQLite: the compare-and-set)."""
    channel = Channel(slow=0.002)
    databases = [Database(runtime.db.url) for _ in range(4)]
    try:
        workers = [outbox_for(runtime, channel, FAST.model_copy(update={"batch_size": 10}), db) for db in databases]
        async with runtime.db.session() as session:
            for n in range(200):
                await workers[0].enqueue(session, "test", {"n": n})
        await asyncio.gather(*(worker.drain(within=60) for worker in workers))
    finally:
        for db in databases:
            await db.close()
    counts = Counter(channel.delivered)
    assert len(counts) == 200 and set(counts.values()) == {1}
    assert {row.status for row in await rows(runtime, "test")} == {"delivered"}


async def test_a_commit_that_enqueues_wakes_the_worker(runtime: Any) -> None:
    channel = Channel()
    outbox = outbox_for(runtime, channel)  # polls once a minute: only the wake-up can be this quick
    outbox.start()
    try:
        await asyncio.sleep(0.05)  # the first look finds nothing
        await outbox.send("test", {"n": 1})
        await asyncio.wait_for(channel.arrived.wait(), timeout=5)
    finally:
        await outbox.stop()
    assert channel.delivered == ["1"]


async def test_stats_count_by_kind_and_state_and_age_the_oldest_pending(runtime: Any) -> None:
    channel = Channel(failures=10, permanent=True)
    outbox = outbox_for(runtime, channel)
    await outbox.send("test", {"n": 1})
    await outbox.drain()
    await outbox.send("test", {"n": 2})
    stats = await outbox_stats(runtime.db, now=utcnow() + timedelta(seconds=30), dead_letters=5)
    assert stats.counts["test"] == {"pending": 1, "delivered": 0, "dead": 1}
    assert stats.oldest_pending_age is not None and 29 <= stats.oldest_pending_age <= 31
    [letter] = stats.dead_letters
    assert (letter.kind, letter.attempts, letter.last_error) == ("test", 1, "HTTP 503")


async def test_a_queued_mail_is_sent_as_rendered_and_an_unreadable_one_is_dead_at_once(runtime: Any) -> None:
    from idp.accounts.context import MAIL
    from idp.mail import OutgoingEmail

    sent: list[OutgoingEmail] = []

    class Mailer:
        async def send(self, message: OutgoingEmail) -> None:
            sent.append(message)

        async def close(self) -> None:
            return None

    runtime.accounts.mailer = Mailer()
    rendered = runtime.accounts.emails.render("password_changed", to="Ada <ada@example.org>", **NOTICE)
    assert OutgoingEmail.from_payload(rendered.to_payload()) == rendered
    await runtime.outbox.send(MAIL, rendered.to_payload())
    await runtime.outbox.send(MAIL, {"to": "ada@example.org", "subject": ["not", "text"], "text": "x"})
    await runtime.outbox.drain()
    assert sent == [rendered]
    assert sorted((row.status, row.last_error or "") for row in await rows(runtime, MAIL)) == [
        ("dead", "unreadable message"),
        ("delivered", ""),
    ]
