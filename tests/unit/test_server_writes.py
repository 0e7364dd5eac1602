"""`idp serve`'s HTTP protocol (idp.server.LimitedHttpToolsProtocol) sends a small answer in one
write: uvicorn writes a response's head and its body separately, two system calls and two TCP
segments the client reads as two (issue 14). What the application sends within one turn of the
event loop leaves together; a head whose body comes later still goes out at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from idp.server import LimitedHttpToolsProtocol


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def whole(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def streamed(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b"first", "more_body": True})
    await send({"type": "http.response.body", "body": b"last"})


async def failing_after_start(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    raise RuntimeError("the application failed")


async def connect(app: Any) -> tuple[LimitedHttpToolsProtocol, Transport]:
    config = uvicorn.Config(app, http=LimitedHttpToolsProtocol, lifespan="off", log_config=None)
    config.load()
    protocol = LimitedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_whole_answer_is_one_write() -> None:
    protocol, transport = await connect(whole)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: idp\r\n\r\n")
    await settle()
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"hello"


async def test_each_answer_on_a_kept_connection_is_one_write() -> None:
    protocol, transport = await connect(whole)
    for _ in range(3):
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: idp\r\n\r\n")
        await settle()
    assert len(transport.writes) == 3
    assert all(write.endswith(b"\r\n\r\nhello") for write in transport.writes)


async def test_a_head_whose_body_comes_later_is_not_held_back() -> None:
    protocol, transport = await connect(streamed)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: idp\r\n\r\n")
    await settle()
    # The body is still being made: the head went out on its own.
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    await asyncio.sleep(0.1)
    assert b"".join(transport.writes[1:]) == b"5\r\nfirst\r\n4\r\nlast\r\n0\r\n\r\n"


async def test_the_answer_to_a_head_request_is_sent() -> None:
    protocol, transport = await connect(whole)
    protocol.data_received(b"HEAD / HTTP/1.1\r\nHost: idp\r\n\r\n")
    await settle()
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(b"\r\n\r\n")


async def test_what_is_held_is_written_before_the_connection_closes() -> None:
    protocol, transport = await connect(whole)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: idp\r\nConnection: close\r\n\r\n")
    await settle()
    assert transport.closed and len(transport.writes) == 1 and transport.writes[0].endswith(b"hello")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_started_answer_whose_application_fails_is_closed_after_its_head() -> None:
    protocol, transport = await connect(failing_after_start)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: idp\r\n\r\n")
    await settle()
    assert transport.closed
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
