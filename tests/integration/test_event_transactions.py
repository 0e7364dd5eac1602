"""Events published within the caller's transaction (idp.events.Transaction): the audit row is
written in it, so it commits with the change it records or not at all, and the audit trail's
followers (the live notifications) hear of it only once it is committed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from sqlalchemy import func, select

from idp.audit import AuditLogger
from idp.events import EventBus, LoginFailed, Transaction
from idp.storage.db import Database
from idp.storage.models import AuditEvent


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.close()


async def audit_rows(db: Database) -> int:
    async with db.session() as session:
        return int((await session.execute(select(func.count()).select_from(AuditEvent))).scalar_one())


@pytest.fixture
def heard() -> list[Mapping[str, Any]]:
    return []


@pytest.fixture
def bus(db: Database, heard: list[Mapping[str, Any]]) -> EventBus:
    async def follower(row: Mapping[str, Any]) -> None:
        heard.append(row)

    events = EventBus()
    AuditLogger(db, [follower]).subscribe_to(events)
    return events


async def test_the_audit_row_commits_with_the_transaction_and_followers_hear_it_after(
    db: Database, bus: EventBus, heard: list[Mapping[str, Any]]
) -> None:
    counted_inside: list[int] = []
    async with Transaction.open(db) as transaction:
        await bus.publish(LoginFailed(reason="invalid_credentials"), within=transaction)
        await bus.publish(LoginFailed(reason="locked"), within=transaction)
        counted_inside.append(await audit_rows(db))  # another session: nothing committed yet
        assert heard == []
    assert counted_inside == [0]
    assert await audit_rows(db) == 2
    assert [row["details"]["reason"] for row in heard] == ["invalid_credentials", "locked"]
    assert heard[0]["id"] < heard[1]["id"]


async def test_a_rolled_back_transaction_leaves_no_audit_row_and_tells_no_follower(
    db: Database, bus: EventBus, heard: list[Mapping[str, Any]]
) -> None:
    with pytest.raises(RuntimeError):
        async with Transaction.open(db) as transaction:
            await bus.publish(LoginFailed(reason="invalid_credentials"), within=transaction)
            raise RuntimeError("the change the event records failed")
    assert await audit_rows(db) == 0
    assert heard == []


async def test_an_event_published_outside_a_transaction_is_written_on_its_own(
    db: Database, bus: EventBus, heard: list[Mapping[str, Any]]
) -> None:
    async with Transaction.open(db) as transaction:
        await bus.publish(LoginFailed(reason="invalid_credentials"), within=transaction)
    # Not within one: a transaction of its own.
    await bus.publish(LoginFailed(reason="rate_limited"))
    assert await audit_rows(db) == 2
    assert [row["details"]["reason"] for row in heard] == ["invalid_credentials", "rate_limited"]


async def test_a_follower_failing_after_the_commit_fails_nothing(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing(_row: Mapping[str, Any]) -> None:
        raise RuntimeError("the live notification could not be sent")

    events = EventBus()
    AuditLogger(db, [failing]).subscribe_to(events)
    async with Transaction.open(db) as transaction:
        await events.publish(LoginFailed(reason="invalid_credentials"), within=transaction)
    assert await audit_rows(db) == 1
    assert any(record.message == "after-commit action failed" for record in caplog.records)
