"""The audit trail's batches (idp.audit): tokens issued by client_credentials and refresh grants
are written off the request path, in batches, and never lost; every other event is written before
the use case goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from sqlalchemy import func, select

from idp.audit import AuditLogger
from idp.events import EventContext, LoginFailed, TokenIssued
from idp.storage.db import Database, DatabaseUnavailable
from idp.storage.models import AuditEvent

CONTEXT = EventContext(ip="192.0.2.7", request_id="req-1", via="http")


def issued(n: int, grant_type: str = "client_credentials") -> TokenIssued:
    return TokenIssued(client=f"svc-{n}", grant_type=grant_type, user_id=None, scope="api", refresh_token=False)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.close()


async def count_rows(db: Database, event: str | None = None) -> int:
    query = select(func.count()).select_from(AuditEvent)
    if event is not None:
        query = query.where(AuditEvent.event == event)
    async with db.session() as session:
        return int((await session.execute(query)).scalar_one())


async def test_high_volume_rows_wait_for_their_batch_and_a_clean_shutdown_writes_them_all(db: Database) -> None:
    audit = AuditLogger(db, flush_interval=60)  # no timed flush during the test
    for n in range(120):
        await audit.record(issued(n, "refresh_token" if n % 2 else "client_credentials"), CONTEXT)
    assert audit.queued == 120
    assert await count_rows(db) == 0  # nothing written on the request path
    await audit.close()
    assert audit.queued == 0
    assert await count_rows(db, "token_issued") == 120
    async with db.session() as session:
        row = (await session.execute(select(AuditEvent).where(AuditEvent.client_id == "svc-3"))).scalar_one()
    assert (row.ip, row.request_id, row.details["grant_type"], row.details["via"]) == (
        "192.0.2.7",
        "req-1",
        "refresh_token",
        "http",
    )


async def test_security_events_and_user_grants_are_written_before_record_returns(db: Database) -> None:
    audit = AuditLogger(db, flush_interval=60)
    await audit.record(LoginFailed(user_id=None, reason="unknown_account"), CONTEXT)
    await audit.record(issued(1, "authorization_code"), CONTEXT)
    assert audit.queued == 0
    assert await count_rows(db) == 2
    await audit.close()


async def test_a_batch_is_written_within_the_flush_interval(db: Database) -> None:
    audit = AuditLogger(db, flush_interval=0.05)
    await audit.record(issued(1), CONTEXT)
    await audit.flush(within=5)
    assert await count_rows(db) == 1
    await audit.close()


async def test_a_full_queue_writes_synchronously_instead_of_dropping(db: Database) -> None:
    audit = AuditLogger(db, flush_interval=60, queue_limit=3)
    for n in range(7):
        await audit.record(issued(n), CONTEXT)
    assert audit.queued == 3
    assert await count_rows(db) == 4  # over the limit: back-pressure, each written at once
    await audit.close()
    assert await count_rows(db) == 7


async def test_a_failed_batch_is_retried_not_lost(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    audit = AuditLogger(db, flush_interval=0.01, retry_delay=0.05)
    real_insert = audit._insert
    failures = 0

    async def flaky(batch: Any) -> Any:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise DatabaseUnavailable("cannot reach the database (test)")
        return await real_insert(batch)

    monkeypatch.setattr(audit, "_insert", flaky)
    for n in range(5):
        await audit.record(issued(n), CONTEXT)
    await audit.flush(within=5)
    assert failures == 2
    assert await count_rows(db) == 5
    await audit.close()


async def test_followers_hear_each_batched_row_after_it_is_committed(db: Database) -> None:
    heard: list[tuple[int, bool]] = []

    async def follower(row: Mapping[str, Any]) -> None:
        async with db.session() as session:
            committed = await session.get(AuditEvent, row["id"]) is not None
        heard.append((row["id"], committed))

    audit = AuditLogger(db, [follower], flush_interval=60)
    for n in range(4):
        await audit.record(issued(n), CONTEXT)
    assert heard == []
    await audit.close()
    assert len(heard) == 4 and all(committed for _, committed in heard)
    assert len({row_id for row_id, _ in heard}) == 4


async def test_closing_the_runtime_writes_the_queued_rows(settings: Any) -> None:
    from idp import create_app

    application = create_app(settings)
    async with application.test_app():
        client = application.test_client()
        runtime = application.runtime
        from tests.oauth_helpers import basic, make_world

        world = await make_world(runtime)
        for _ in range(5):
            response = await client.post(
                "/token", form={"grant_type": "client_credentials"}, headers=basic(world.web_id, world.web_secret)
            )
            assert response.status_code == 200
        db_url = settings.database_url
    # The app has shut down (after_serving closed the runtime): every row is there.
    database = Database(db_url)
    try:
        assert await count_rows(database, "token_issued") == 5
    finally:
        await database.close()


async def test_a_batch_is_written_a_page_at_a_time_and_each_row_keeps_its_own_id(db: Database) -> None:
    """Plain INSERTs of APPEND_PAGE rows each on both backends (the event loop runs between them;
    SQLite's were sent a row at a time before, 14 times the time); the ids a follower hears are
    the ids of the rows it is told about, in the order they were recorded."""
    from sqlalchemy import event

    from idp.storage.repositories.audit import APPEND_PAGE

    inserts: list[int] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_LOG"):
            inserts.append(len(statement))

    heard: list[Mapping[str, Any]] = []

    async def follower(row: Mapping[str, Any]) -> None:
        heard.append(row)

    audit = AuditLogger(db, [follower], flush_interval=60, batch_size=500)
    rows = APPEND_PAGE * 2 + 5
    for n in range(rows):
        await audit.record(issued(n), CONTEXT)
    event.listen(db.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        await audit.close()
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", on_execute)
    assert len(inserts) == 3, len(inserts)
    assert [row["client_id"] for row in heard] == [f"svc-{n}" for n in range(rows)]
    async with db.session() as session:
        result = await session.execute(select(AuditEvent.id, AuditEvent.client_id))
        stored = {row_id: client for row_id, client in result}
    assert all(stored[row["id"]] == row["client_id"] for row in heard)


async def test_a_batchs_ids_are_its_rows_ids_in_order_after_rows_were_deleted(db: Database) -> None:
    """The ids append_many returns are each row's own, in the order given, also when the table
    has gaps (deleted rows, among them the newest) and the batch spans several pages."""
    from sqlalchemy import delete

    from idp.storage.repositories.audit import APPEND_PAGE, AuditRepository

    def batch(prefix: str, count: int) -> list[dict[str, Any]]:
        return [
            {"event": "token_issued", "client_id": f"{prefix}-{n}", "request_id": f"{prefix}-{n}", "details": {"n": n}}
            for n in range(count)
        ]

    async with db.session() as session:
        await AuditRepository(session).append_many(batch("first", 10))
    async with db.session() as session:
        await session.execute(delete(AuditEvent).where(AuditEvent.client_id.in_(["first-3", "first-9"])))
    rows = batch("second", 2 * APPEND_PAGE + 7)
    async with db.session() as session:
        ids = await AuditRepository(session).append_many(rows)
    async with db.session() as session:
        stored = dict((await session.execute(select(AuditEvent.id, AuditEvent.request_id))).all())
    assert [stored[entry_id] for entry_id in ids] == [row["request_id"] for row in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(rows)
