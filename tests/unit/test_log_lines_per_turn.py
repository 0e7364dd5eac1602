"""Serving workers write their access lines once per turn of the event loop
(idp.observability.LinesPerLoopTurn, installed by idp.asgi): the lines of all the requests
answered in one turn leave in one write instead of one write a line (issue 14), none waits
longer than the turn it was logged in, and any other line is written at once."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from idp.observability import LinesPerLoopTurn, configure_logging


class Recording:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        return [json.loads(line)["msg"] for line in "".join(self.writes).splitlines()]


@pytest.fixture
def stream() -> Iterator[Recording]:
    recording = Recording()
    root = logging.getLogger()
    level = root.level
    configure_logging("info", "json", stream=recording, per_loop_turn=True)
    yield recording
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_idp_handler", False):
            root.removeHandler(handler)


log = logging.getLogger("idp.access")


async def test_the_lines_of_one_turn_leave_in_one_write_at_its_end(stream: Recording) -> None:
    for number in range(5):
        log.info("line %d", number)
    assert stream.writes == []  # held for the rest of this turn
    await asyncio.sleep(0)
    assert len(stream.writes) == 1 and stream.lines() == [f"line {number}" for number in range(5)]
    log.info("next turn")
    await asyncio.sleep(0)
    assert len(stream.writes) == 2 and stream.lines()[-1] == "next turn"


def test_a_line_logged_where_no_loop_runs_is_written_at_once(stream: Recording) -> None:
    log.info("from the command line")
    assert stream.lines() == ["from the command line"]


async def test_a_line_from_another_thread_is_written_at_once_after_what_is_held(stream: Recording) -> None:
    log.info("held")
    thread = threading.Thread(target=log.info, args=("from a thread",))
    thread.start()
    thread.join()
    assert stream.lines() == ["held", "from a thread"]
    await asyncio.sleep(0)
    assert stream.lines() == ["held", "from a thread"]  # nothing written twice


async def test_any_other_line_is_written_at_once_after_what_is_held(stream: Recording) -> None:
    # uvicorn's last line ("Application shutdown complete.") comes in the loop's last turn, and a
    # process serving alone then ends on its signal: no end of turn, no logging shutdown.
    log.info("held")
    logging.getLogger("uvicorn.error").info("Application shutdown complete.")
    assert stream.lines() == ["held", "Application shutdown complete."]


async def test_logging_shutdown_writes_what_is_held(stream: Recording) -> None:
    log.info("last words")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LinesPerLoopTurn):
            handler.flush()  # what logging.shutdown() does at exit
    assert stream.lines() == ["last words"]


# -- access lines without a log record (idp.observability.access_line) ----------------------------

ACCESS_CASES = [
    ("GET", "/jwks", 200, 0.42, "127.0.0.1", "3f2a9c1e0b7d4a55"),
    ("POST", "/token", 400, None, None, None),
    ("GET", "/x/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", 404, 1.5, "::1", "rid-12345678"),
    ("GET", "/a/code=abc&token=xyz", 404, 2.0, "2001:db8::1", None),
    ("GET", "/ünïcode/\u2028", 404, 0.1, "10.0.0.1", None),
]


def _only_the_workers_handler(patch: pytest.MonkeyPatch) -> None:
    """The root's handlers as a serving worker has them: pytest's own capture handlers removed."""
    root = logging.getLogger()
    patch.setattr(root, "handlers", [handler for handler in root.handlers if getattr(handler, "_idp_handler", False)])


async def _lines_of(stream: Recording, *, direct: bool) -> list[dict[str, object]]:
    from idp import observability

    with pytest.MonkeyPatch.context() as patch:
        _only_the_workers_handler(patch)
        if not direct:
            patch.setattr(observability._AccessLines, "sink", None)
        stream.writes.clear()
        for method, path, status, duration, remote, rid in ACCESS_CASES:
            token = observability.request_id_var.set(rid)
            observability.log_access(method, path, status, duration, remote)
            observability.request_id_var.reset(token)
        await asyncio.sleep(0)
    # "\n" only: a line may hold U+2028, which str.splitlines would split on.
    return [json.loads(line) for line in "".join(stream.writes).split("\n") if line]


async def test_an_access_line_built_directly_equals_the_log_records_line(
    stream: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    original = logging.Logger.makeRecord

    def counting(self: logging.Logger, name: str, *args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "makeRecord", counting)
    direct = await _lines_of(stream, direct=True)
    assert made == []  # no record was made for any of them
    via_records = await _lines_of(stream, direct=False)
    assert made == ["idp.access"] * len(ACCESS_CASES)
    assert len(direct) == len(via_records) == len(ACCESS_CASES)
    for one, other in zip(direct, via_records, strict=True):
        assert list(one) == list(other)  # the same fields in the same order
        assert {**one, "ts": None} == {**other, "ts": None}
        apart = datetime.fromisoformat(str(one["ts"])) - datetime.fromisoformat(str(other["ts"]))
        assert abs(apart.total_seconds()) < 5
    assert "eyJ" not in json.dumps(direct) and "xyz" not in json.dumps(direct)  # redacted both ways


async def test_access_lines_take_the_record_path_while_anything_else_listens(
    stream: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    from idp.observability import log_access

    with caplog.at_level(logging.INFO, logger="idp.access"):
        log_access("GET", "/jwks", 200, 0.5, "127.0.0.1")
    assert [record.getMessage() for record in caplog.records if record.name == "idp.access"] == ["GET /jwks 200 0.5ms"]
    await asyncio.sleep(0)
    assert stream.lines() == ["GET /jwks 200 0.5ms"]  # and the worker's own handler still wrote it once


async def test_no_access_line_when_the_access_logger_is_quieted(
    stream: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    from idp.observability import log_access

    _only_the_workers_handler(monkeypatch)
    log.setLevel(logging.WARNING)
    try:
        log_access("GET", "/jwks", 200, 0.5, "127.0.0.1")
        await asyncio.sleep(0)
        assert stream.writes == []
    finally:
        log.setLevel(logging.NOTSET)
