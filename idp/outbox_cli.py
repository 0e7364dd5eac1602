"""`idp outbox list|retry|purge`: the outbox (idp.outbox) for operators, docs/outbox.md.

Registered on the `idp` group by idp.cli. The commands need the database only (no key-value store,
no keys, no key-encryption key: payloads are never opened here), and print no payload: ids, kinds,
counts, ages and error types.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click

T = TypeVar("T")

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _fail(message: str) -> NoReturn:
    click.echo(f"idp: error: {message}", err=True)
    sys.exit(1)


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _with_database(state: Any, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``action(db)`` on the configured database, at the schema this version needs."""
    # Imported here, as idp.cli does per command: `idp --help` loads no database code.
    from idp.storage import migrate  # noqa: PLC0415
    from idp.storage.db import Database, DatabaseUnavailable  # noqa: PLC0415

    settings = state.settings()

    async def main() -> T:
        db = Database(settings.database_url)
        try:
            try:
                current = await db.schema_revision()
            except DatabaseUnavailable as exc:
                _fail(f"database_url: {exc}")
            if current != migrate.head_revision():
                _fail(f"database_url: schema is at revision {current or 'none'}; run `idp db upgrade`")
            return await action(db)
        finally:
            await db.close()

    return asyncio.run(main())


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@click.group("outbox")
def outbox_commands() -> None:
    """Outgoing messages (mail, back-channel logout): queue, dead letters."""


@outbox_commands.command("list")
@click.option("--limit", type=click.IntRange(0, 1000), default=20, show_default=True, help="Dead letters to show.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def outbox_list(state: Any, limit: int, as_json: bool) -> None:
    """Queue depth by kind and state, the oldest pending message's age, and the dead letters."""
    from idp.outbox.operations import outbox_stats  # noqa: PLC0415

    stats = _with_database(state, lambda db: outbox_stats(db, dead_letters=limit))
    lines = [f"{'kind':<30} {'pending':>8} {'delivered':>10} {'dead':>6}"]
    for kind, by_status in sorted(stats.counts.items()):
        lines.append(f"{kind:<30} {by_status['pending']:>8} {by_status['delivered']:>10} {by_status['dead']:>6}")
    lines.append(f"oldest pending: {_age(stats.oldest_pending_age)}")
    if stats.dead_letters:
        lines.append("dead letters (retry with `idp outbox retry ID` or `--dead`):")
        lines.extend(
            f"  {letter.id}  {letter.kind}  {letter.attempts} attempt(s)  {letter.last_error or '-'}"
            f"  dead since {letter.dead_at.isoformat() if letter.dead_at else '-'}"
            for letter in stats.dead_letters
        )
    _emit(stats.as_dict(), as_json, "\n".join(lines))


@outbox_commands.command("retry")
@click.argument("message_id", required=False)
@click.option("--dead", "all_dead", is_flag=True, help="Every dead letter.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def outbox_retry(state: Any, message_id: str | None, all_dead: bool, as_json: bool) -> None:
    """Put a dead letter (ID), or every one (--dead), back in the queue with its attempts reset."""
    from idp.outbox.operations import retry_dead  # noqa: PLC0415

    if (message_id is None) == (not all_dead):
        _fail("give one message ID or --dead")
    if message_id is not None and not _ID.fullmatch(message_id):
        _fail("ID: not an outbox message id (a UUID, as `idp outbox list` shows)")
    revived = _with_database(state, lambda db: retry_dead(db, message_id))
    if message_id is not None and revived == 0:
        _fail(f"ID: {message_id} is not a dead letter")
    _emit({"retried": revived}, as_json, f"{revived} message(s) queued again")


@outbox_commands.command("purge")
@click.option(
    "--delivered-before",
    "days",
    type=click.FloatRange(0, 36500),
    default=None,
    help="Delete delivered messages older than DAYS days.",
)
@click.option("--dead", is_flag=True, help="Delete every dead letter.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def outbox_purge(state: Any, days: float | None, dead: bool, as_json: bool) -> None:
    """Delete delivered messages (--delivered-before DAYS) and dead letters (--dead); pending
    messages are never deleted."""
    from idp.outbox.operations import purge  # noqa: PLC0415

    if days is None and not dead:
        _fail("give --delivered-before DAYS, --dead, or both")
    delivered, buried = _with_database(state, lambda db: purge(db, delivered_before_days=days, dead=dead))
    _emit(
        {"delivered": delivered, "dead": buried},
        as_json,
        f"deleted {delivered} delivered message(s) and {buried} dead letter(s)",
    )
