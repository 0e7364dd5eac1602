"""Counting what a request costs the server (issue 14): the SQL statements sent to the database
(transaction control included), the key-value store's operations (each one round trip on Redis)
and, on Redis, the commands sent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio.client import Pipeline
from sqlalchemy import event

# The public operations of idp.storage.kv.KeyValueStore: one round trip each on Redis.
KV_OPERATIONS = (
    "get",
    "get_many",
    "set",
    "set_if_absent",
    "set_if_present",
    "pop",
    "delete",
    "delete_if_equal",
    "exists",
    "ttl",
    "expire",
    "incr",
    "hit_windows",
    "add_to_set",
    "remove_from_set",
    "set_members",
    "delete_prefix",
    "count_prefix",
    "publish",
)


@dataclass
class Cost:
    statements: list[str] = field(default_factory=list)
    kv: list[str] = field(default_factory=list)
    redis_commands: list[str] = field(default_factory=list)

    def reads_of(self, table: str) -> int:
        return sum(1 for statement in self.statements if statement == f"SELECT {table}")

    def summary(self) -> str:
        return (
            f"{len(self.statements)} SQL ({', '.join(self.statements)}); {len(self.kv)} KV ({', '.join(self.kv)});"
            f" {len(self.redis_commands)} Redis commands"
        )


def _describe(statement: str) -> str:
    """ "SELECT users", "INSERT audit_log": the verb and the table, subqueries left out."""
    while (bare := re.sub(r"\([^()]*\)", "", statement)) != statement:
        statement = bare
    target = re.search(r"\b(?:INTO|FROM|UPDATE)\s+\"?(\w+)", statement)
    return f"{statement.split()[0].upper()} {target.group(1) if target else ''}".strip()


@contextmanager
def counting(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cost]:
    cost = Cost()
    engine = runtime.db.engine.sync_engine

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        cost.statements.append(_describe(statement))

    def on_begin(_conn: Any) -> None:
        cost.statements.append("BEGIN")

    def on_commit(_conn: Any) -> None:
        cost.statements.append("COMMIT")

    def on_rollback(_conn: Any) -> None:
        cost.statements.append("ROLLBACK")

    listeners = [
        ("before_cursor_execute", on_statement),
        ("begin", on_begin),
        ("commit", on_commit),
        ("rollback", on_rollback),
    ]
    for name, listener in listeners:
        event.listen(engine, name, listener)

    kv = runtime.kv
    for name in KV_OPERATIONS:
        original = getattr(kv, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            cost.kv.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(kv, name, counted)
    redis = getattr(kv, "_redis", None)
    if redis is not None:
        execute_command = redis.execute_command

        async def counted_command(*args: Any, **kwargs: Any) -> Any:
            cost.redis_commands.append(str(args[0]))
            return await execute_command(*args, **kwargs)

        monkeypatch.setattr(redis, "execute_command", counted_command)
        pipeline_execute = Pipeline.execute

        async def counted_pipeline(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            commands = [str(command[0][0]) for command in pipe.command_stack]
            cost.redis_commands += ["MULTI", *commands, "EXEC"] if pipe.is_transaction else commands
            return await pipeline_execute(pipe, *args, **kwargs)

        monkeypatch.setattr(Pipeline, "execute", counted_pipeline)
    try:
        yield cost
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)
        monkeypatch.undo()
