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
