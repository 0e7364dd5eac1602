"""The audit log as administrators read it: filtered, newest first a page at a time, followed as
it grows, and exported whole (CSV or JSON lines) in batches, never built in memory."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from idp.accounts.users import AccountError
from idp.storage.db import Database
from idp.storage.models import AuditEvent
from idp.storage.repositories import AuditFilter, AuditRepository

COLUMNS = (
    "id",
    "occurred_at",
    "event",
    "outcome",
    "actor_id",
    "subject_id",
    "client_id",
    "ip",
    "user_agent",
    "request_id",
    "details",
)
OUTCOMES = ("success", "failure")
EXPORT_BATCH = 500
MAX_ID_LENGTH = 64


def audit_row(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "occurred_at": event.occurred_at.isoformat(),
        "event": event.event,
        "outcome": event.outcome,
        "actor_id": event.actor_id,
        "subject_id": event.subject_id,
        "client_id": event.client_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "details": dict(event.details or {}),
    }


def parse_time(field: str, value: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise AccountError(field, "must be an ISO 8601 date or date-time, e.g. 2026-12-01T08:00:00Z") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def audit_filter(
    *,
    user_id: str | None = None,
    client_id: str | None = None,
    event: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> AuditFilter:
    """The filter from its text form; AccountError names the first bad field."""
    for field, value in (("user", user_id), ("client", client_id), ("event", event)):
        if value is not None and not 1 <= len(value) <= MAX_ID_LENGTH:
            raise AccountError(field, f"must be 1 to {MAX_ID_LENGTH} characters")
    if outcome is not None and outcome not in OUTCOMES:
        raise AccountError("outcome", f"must be one of {', '.join(OUTCOMES)}")
    start = parse_time("since", since) if since is not None else None
    end = parse_time("until", until) if until is not None else None
    if start is not None and end is not None and end <= start:
        raise AccountError("until", "must be later than since")
    return AuditFilter(subject_id=user_id, client_id=client_id, event=event, outcome=outcome, since=start, until=end)


async def newest(
    db: Database, where: AuditFilter, *, limit: int = 50, before_id: int | None = None
) -> list[dict[str, Any]]:
    """Matching events newest first, those before ``before_id`` (a page's cursor)."""
    async with db.session() as session:
        rows = await AuditRepository(session).newest(where, limit=limit, before_id=before_id)
    return [audit_row(event) for event in rows]


async def oldest_first(
    db: Database, where: AuditFilter, *, after_id: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Every matching event from the oldest, read ``EXPORT_BATCH`` at a time (each batch its own
    short transaction, so an export of millions holds no connection or memory for long)."""
    while True:
        async with db.session() as session:
            batch = await AuditRepository(session).oldest(where, after_id=after_id, limit=EXPORT_BATCH)
        for event in batch:
            yield audit_row(event)
        if len(batch) < EXPORT_BATCH:
            return
        after_id = batch[-1].id


async def follow(
    db: Database,
    where: AuditFilter,
    *,
    after_id: int | None,
    interval: float = 1.0,
    stop: Callable[[], bool] = lambda: False,
) -> AsyncIterator[dict[str, Any]]:
    """The events written after ``after_id``, as they are written (polled every ``interval``
    seconds) until ``stop()`` says so."""
    while not stop():
        found = False
        async for row in oldest_first(db, where, after_id=after_id):
            found = True
            after_id = row["id"]
            yield row
        if not found:
            await asyncio.sleep(interval)


# OWASP CSV injection: a cell a spreadsheet would run as a formula is given a leading quote.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_header() -> str:
    return _csv_line(COLUMNS)


def csv_line(row: dict[str, Any]) -> str:
    return _csv_line([_cell(row[column]) for column in COLUMNS])


def _csv_line(cells: Any) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)  # RFC 4180 line ends
    return buffer.getvalue()


def json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True) + "\n"


async def export_lines(db: Database, where: AuditFilter, *, csv_format: bool) -> AsyncIterator[bytes]:
    """The export as it goes out: a CSV header and rows, or JSON lines, batch by batch."""
    if csv_format:
        yield csv_header().encode()
    async for row in oldest_first(db, where):
        yield (csv_line(row) if csv_format else json_line(row)).encode()
