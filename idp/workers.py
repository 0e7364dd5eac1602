"""Several worker processes of `idp serve`, each with a listening socket of its own.

uvicorn's own supervisor binds one socket and shares it: every worker accepts from the same
queue, and whichever wakes first takes the connection, so long-lived connections or a burst of
new ones all land on one process while the others idle (issue 14 measured a 100/0 CPU split).
Here every worker binds the address itself with ``SO_REUSEPORT``, and the kernel spreads new
connections over the workers' sockets by a hash of each connection's addresses.

The supervisor reserves the port first (a bound socket that never listens, so no connection can
wait on it), starts the workers, restarts one that dies, and on SIGINT or SIGTERM stops them all
gracefully (uvicorn's own shutdown in each: in-flight requests finish, lifespan shutdown runs).
A worker that fails at startup (exit status 3, uvicorn's STARTUP_FAILURE) stops the whole server:
it would fail the same way again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn

log = logging.getLogger("idp.server")

STARTUP_FAILURE = 3  # uvicorn.config.STARTUP_FAILURE
_BACKLOG = 2048
_STOP_TIMEOUT = 20.0


def reuse_port_available() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def reserve(host: str, port: int) -> socket.socket:
    """Bind (never listen on) the address with SO_REUSEPORT: the port is ours, a port of 0 gets
    its number, and an address in use fails here with one clear error (OSError)."""
    return _reuse_port_socket(host, port)


def _worker(options: dict[str, Any], host: str, port: int) -> None:  # pragma: no cover - a child process
    sock = _reuse_port_socket(host, port)
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    config = uvicorn.Config("idp.asgi:create", factory=True, host=host, port=port, **options)
    uvicorn.Server(config).run(sockets=[sock])


class Workers:
    """Start ``count`` workers on ``host:port`` and keep them running until told to stop."""

    def __init__(self, count: int, host: str, port: int, options: dict[str, Any]) -> None:
        self._count = count
        self._host = host
        self._port = port
        self._options = options
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[BaseProcess] = []
        self._stopping = threading.Event()
        self.exit_code = 0

    def _start_one(self) -> BaseProcess:
        process = self._context.Process(target=_worker, args=(self._options, self._host, self._port), name="idp-worker")
        process.start()
        return process

    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _sig, _frame: self._stopping.set())
        self._processes = [self._start_one() for _ in range(self._count)]
        log.info("workers started", extra={"workers": [p.pid for p in self._processes], "reuse_port": True})
        if on_ready is not None:
            on_ready()
        while not self._stopping.wait(0.5):
            self._keep_alive()
        self._stop_all()
        return self.exit_code

    def _keep_alive(self) -> None:
        for index, process in enumerate(self._processes):
            if process.is_alive():
                continue
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                log.error("a worker failed to start; stopping", extra={"pid": process.pid})
                self.exit_code = 1
                self._stopping.set()
                return
            log.warning("a worker died; starting another", extra={"pid": process.pid, "exitcode": process.exitcode})
            self._processes[index] = self._start_one()

    def _stop_all(self) -> None:
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)  # uvicorn's graceful shutdown
        for process in self._processes:
            process.join(_STOP_TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()
