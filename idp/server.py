"""How `idp serve` runs the application: uvicorn's options and its HTTP protocol with head limits.

uvicorn's httptools protocol reads a request head of any size: httptools buffers a header value
until it ends, so one 50 MB header (or 5,000 small ones) is read, kept and parsed before the
application can refuse it. ``LimitedHttpToolsProtocol`` applies ``idp.security.request_limits``
while the head arrives and answers 414 or 431 without dispatching the request.
"""

from __future__ import annotations

import asyncio
import atexit
import http
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from idp.config import Settings
from idp.security import request_limits
from idp.security.request_limits import HeadRefusal


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head that is over a limit."""


class _OneSendPerAnswer:
    """The transport a response cycle writes to: what it writes within one turn of the event loop
    goes out in one send.

    uvicorn writes a response's head when the application starts it and the body when it is
    sent: two system calls and two TCP segments for every small answer, which the client then
    reads as two. Here the first write is held until the next write or the end of the loop's
    turn, whichever comes first, so a head and the body sent right after it leave together and a
    head whose body comes later (a streamed answer, HEAD) waits no longer than one turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            held, self._held = self._held, None
            self._transport.write(held + data)

    def _flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads over the limits as they arrive."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_complete = False
        # Bytes received while a head was incomplete: catches a single huge field, whose
        # callback httptools makes only once the whole value has arrived.
        self._head_bytes = 0
        self._field_bytes = 0
        self._refusal: HeadRefusal | None = None

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # answered already; the connection is closing
        if not self._head_complete:
            self._head_bytes += len(data)
        super().data_received(data)
        limit = request_limits.MAX_TARGET_BYTES + request_limits.MAX_HEADER_BYTES
        if self._refusal is None and not self._head_complete and self._head_bytes > limit:
            self._refuse(request_limits.HEADERS_TOO_LARGE)

    # -- parser callbacks (each raises to stop the parser at the first limit crossed) -------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_complete = False
        self._field_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > request_limits.MAX_TARGET_BYTES:
            self._stop(request_limits.TARGET_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._field_bytes += request_limits.field_size(name, value)
        if len(self.headers) > request_limits.MAX_HEADER_FIELDS:
            self._stop(request_limits.TOO_MANY_HEADERS)
        if self._field_bytes > request_limits.MAX_HEADER_BYTES:
            self._stop(request_limits.HEADERS_TOO_LARGE)

    def on_headers_complete(self) -> None:
        self._head_complete = True
        self._head_bytes = 0
        super().on_headers_complete()
        # The cycle uvicorn just made for this request (an upgrade makes none: the one kept is the
        # previous request's, already given its own).
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _OneSendPerAnswer):
            cycle.transport = _OneSendPerAnswer(self.transport, self.loop)  # type: ignore[assignment]

    # -- refusing ----------------------------------------------------------------------------------

    def _stop(self, refusal: HeadRefusal) -> None:
        # httptools turns the exception into HttpParserError; uvicorn's data_received then calls
        # send_400_response, which answers with this refusal instead.
        self._refusal = refusal
        raise _HeadRefused(refusal.message)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._write_refusal(self._refusal)

    def _refuse(self, refusal: HeadRefusal) -> None:
        self._refusal = refusal
        self._write_refusal(refusal)

    def _write_refusal(self, refusal: HeadRefusal) -> None:
        body = refusal.message.encode("ascii")
        reason = http.HTTPStatus(refusal.status).phrase.encode("ascii")
        lines = [b"HTTP/1.1 %d %s\r\n" % (refusal.status, reason)]
        lines += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        lines += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(lines))
        self.transport.close()


# prometheus-client reads this when it is first imported (by each worker): its multiprocess mode.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


_PRIVATE_PREFIX = "idp-metrics-"
_OWNER_FILE = "owner.pid"  # in a private directory: the pid of the process that made it


def prepare_metrics_directory(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Give the workers about to start one directory for prometheus-client's multiprocess mode.

    Each worker writes its counters to memory-mapped files named by its pid, and a scrape
    answered by any worker adds up all of them, so the numbers do not depend on which worker the
    scraper reached. An operator's own PROMETHEUS_MULTIPROC_DIR is emptied first (files of an
    earlier run would be counted again); otherwise a fresh private directory is made under the
    temporary directory, removed when its maker ends (``release_metrics_directory``), and private
    ones whose maker died without removing them (SIGKILL) are removed here. Never data_dir: nodes
    may share it, and two containers both have a pid 1."""
    given = environ.get(METRICS_DIR_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return directory
    _remove_abandoned(Path(tempfile.gettempdir()))
    directory = Path(tempfile.mkdtemp(prefix=_PRIVATE_PREFIX))
    (directory / _OWNER_FILE).write_text(str(os.getpid()))
    # A supervisor of several workers exits normally; one process serving alone is ended by
    # uvicorn with the signal it received (atexit never runs), and releases it when it stops.
    atexit.register(release_metrics_directory, str(directory))
    environ[METRICS_DIR_ENV] = str(directory)
    return directory


def release_metrics_directory(directory: str) -> None:
    """Remove a private metrics directory if this process made it (a worker's is its maker's)."""
    if _owner_of(Path(directory)) == os.getpid():
        shutil.rmtree(directory, ignore_errors=True)


def _owner_of(directory: Path) -> int | None:
    try:
        return int((directory / _OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None  # not one of ours (an operator's, or half made)


def _remove_abandoned(parent: Path) -> None:
    for candidate in parent.glob(_PRIVATE_PREFIX + "*"):
        owner = _owner_of(candidate)
        if owner is not None and not _alive(owner):
            shutil.rmtree(candidate, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How idp runs under uvicorn: uvloop + httptools (about twice Hypercorn's throughput here,
    see bench/README.md) with the request-head limits, sans-io websockets, and our own access log
    (no query strings). With metrics on, the workers' metrics directory is prepared here, in the
    process that starts them, whatever their number (one, or --workers overriding the setting)."""
    if settings.metrics.enabled:
        prepare_metrics_directory()
    return {
        "loop": "uvloop",
        "http": LimitedHttpToolsProtocol,
        "ws": "websockets-sansio",
        # The notification socket's messages are small JSON: per-message compression would cost
        # each socket a zlib context (most of its memory) for nothing, and sockets are held open.
        "ws_per_message_deflate": False,
        "ws_max_size": 64 * 1024,
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "log_config": None,
        "proxy_headers": bool(settings.server.forwarded_allow_ips),
        "forwarded_allow_ips": settings.server.forwarded_allow_ips or None,
        "timeout_graceful_shutdown": 10,
    }
