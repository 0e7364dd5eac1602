"""Request-head limits as a real `idp serve` (uvicorn + httptools) enforces them on the wire.

M7 of the 2026-12-01 security test: a 50 MB header was read and answered 200, and 5,000 headers
too (ASVS 15.2.2, CWE-770). The server now answers 431 (RFC 6585 §5) or 414 (RFC 9110 §15.5.15)
while the head is still arriving, without waiting for it to end and without running the app.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from idp.security.request_limits import MAX_HEADER_BYTES, MAX_HEADER_FIELDS, MAX_TARGET_BYTES
from tests.e2e.server import IDP, free_port, production_env, run_idp, running

# Its own server on the embedded defaults, whatever the suite's backend: CI runs it once (stage 1).
pytestmark = [pytest.mark.server, pytest.mark.embedded]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    env = production_env(tmp_path_factory.mktemp("limits"), port)
    run_idp(env, "db", "upgrade")
    with running([IDP, "serve"], env, port):
        yield port


def refused_by_server(reply: bytes, status: int) -> bytes:
    """The protocol answered (plain text, connection closed) before any route ran (JSON); its body."""
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 %d " % status), lines[0]
    assert b"content-type: text/plain; charset=utf-8" in lines
    assert b"connection: close" in lines
    return body


def exchange(port: int, head: bytes, *, then: bytes = b"", chunk: int = 65536) -> bytes:
    """Send ``head`` and then ``then`` in chunks until the server answers or closes; its reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for start in range(0, len(then), chunk):
            try:
                sock.sendall(then[start : start + chunk])
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed while we were still sending
        reply = b""
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                reply += part
        except ConnectionResetError:
            pass
    return reply


def test_a_huge_header_is_refused_before_it_ends(server: int) -> None:
    # One field of 50 MB, never terminated: the answer must not wait for the end of the head.
    started = time.monotonic()
    reply = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: ", then=b"h" * 50_000_000)
    assert b"larger than" in refused_by_server(reply, 431)
    assert time.monotonic() - started < 10


def test_too_many_header_fields(server: int) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(5000))
    reply = exchange(server, b"POST /token HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert b"more than %d header fields" % MAX_HEADER_FIELDS in refused_by_server(reply, 431)


def test_header_fields_over_the_total_size(server: int) -> None:
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 4000) for i in range(MAX_HEADER_BYTES // 4000 + 2))
    reply = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert b"larger than" in refused_by_server(reply, 431)


def test_a_too_long_target(server: int) -> None:
    reply = exchange(server, b"GET /authorize?state=" + b"s" * MAX_TARGET_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"longer than" in refused_by_server(reply, 414)


def test_requests_within_the_limits_are_served(server: int) -> None:
    base = f"http://127.0.0.1:{server}"
    # Large but legitimate: a 6 KB cookie, 60 fields, a 6 KB query string.
    headers = {f"X-Field-{i}": "v" * 20 for i in range(60)}
    headers["Cookie"] = "a=" + "c" * 6000
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{base}/healthz", headers=headers).status_code == 200
        assert http.get(f"{base}/healthz", params={"x": "q" * 6000}).status_code == 200
        # Keep-alive: a second request on the same connection, after the first was counted.
        assert http.get(f"{base}/healthz", headers=headers).json() == {"status": "ok"}
