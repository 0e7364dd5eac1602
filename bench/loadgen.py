"""The Python load generator of bench/run.py: concurrent workers over keep-alive HTTP/1.1 connections,
for the scenarios wrk can't drive (each request depends on the previous answer: a rotated refresh
token, an authorization code, a CSRF token).

The HTTP client is a few lines over asyncio streams (on uvloop), not httpx: measured here, httpx
costs 1.5-1.8 ms of the load generator's CPU per request against about 0.07 ms for this one, and
on a 2-core machine every millisecond the generator spends is taken from the server under test
(the faster server loses the most, as with wrk's per-response Lua callback, issue 14). httpx is
still used for the one-off set-up flows in run.py.

A *step* is one operation of a scenario (a refresh; authorize + token; a sign-in form loaded and
posted); it raises LoadError when an answer is not the one expected. ``run_load`` runs one worker
per step function until the time is up and reports operations per second, p50 and p99 latency of
the operations, errors, and the generator's own CPU use.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import resource
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import uvloop

T = TypeVar("T")
Step = Callable[[], Awaitable[None]]


@dataclass
class Measurement:
    rps: float  # operations per second (for wrk: requests)
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int  # operations completed, errors included
    client_cpu: float | None = None  # the Python generator's CPU, in cores (None for wrk)


class LoadError(Exception):
    """An answer that is not the one the scenario expects."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(coro)


def pkce_pair() -> tuple[str, str]:
    """A code_verifier and its S256 code_challenge (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Connection:
    """One keep-alive HTTP/1.1 connection to ``base`` (http only), reopened after an error or a
    ``Connection: close``."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._host_header = f"{self.host}:{self.port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: str | bytes = b""
    ) -> Answer:
        data = body.encode() if isinstance(body, str) else body
        head = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if data or method == "POST":
            if not headers or "Content-Type" not in headers:
                head.append("Content-Type: application/x-www-form-urlencoded")
            head.append(f"Content-Length: {len(data)}")
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None and self._writer is not None
        try:
            self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
            answer = await self._read(self._reader)
        except BaseException:
            await self.close()
            raise
        if (answer.header("connection") or "").lower() == "close":
            await self.close()
        return answer

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Answer:
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
        fields = dict(headers)
        if "content-length" in fields:
            body = await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")  # the last chunk's blank line (no trailers expected)
            body = b"".join(chunks)
        else:
            body = b""
        return Answer(status, headers, body)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    def local_port(self) -> int | None:
        """The client side's port (to find which worker process accepted the connection)."""
        if self._writer is None:
            return None
        return int(self._writer.get_extra_info("sockname")[1])


@dataclass
class Browser:
    """A connection with a cookie jar (name -> value; path and expiry ignored but for deletions):
    enough for the sign-in form and the authorization endpoint of both servers."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.connection = Connection(self.base)

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: str | bytes = b""
    ) -> Answer:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        answer = await self.connection.request(method, path, headers=sent, body=body)
        for key, value in answer.headers:
            if key == "set-cookie":
                self._store(value)
        return answer

    def _store(self, header: str) -> None:
        pair, *attributes = header.split(";")
        name, _, value = pair.strip().partition("=")
        lowered = [attribute.strip().lower() for attribute in attributes]
        if not value or "max-age=0" in lowered or any(a.startswith("expires=thu, 01 jan 1970") for a in lowered):
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = value

    async def close(self) -> None:
        await self.connection.close()


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values (0 when there are none)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def run_load(
    duration: float,
    steps: list[Step],
    connections: list[Browser] | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> Measurement:
    """Each step function in a worker of its own, called again and again for ``duration`` seconds
    or until ``stop`` is set; ``connections`` (the steps') are closed at the end. A failed step is
    counted and its worker pauses 10 ms (no busy loop on a refusing server)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker(step: Step) -> None:
        nonlocal errors
        while (started := time.perf_counter()) < deadline and not (stop and stop.is_set()):
            try:
                await step()
            except (LoadError, OSError, asyncio.IncompleteReadError, ValueError, KeyError):
                errors += 1
                await asyncio.sleep(0.01)
                continue
            latencies.append(time.perf_counter() - started)

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(step) for step in steps))
    finally:
        for connection in connections or []:
            await connection.close()
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    ordered = sorted(latencies)
    return Measurement(
        rps=len(latencies) / elapsed,
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        errors=errors,
        requests=len(latencies) + errors,
        client_cpu=cpu / elapsed,
    )
