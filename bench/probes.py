"""What bench/run.py reads from the servers' processes: which processes serve a port, their
resident memory, and idp's event-loop stall probe per worker.

idp's ``/debug/loop-lag`` (``[server] loop_lag_probe``) answers for the worker that accepted the
connection and does not say which one that is, so the worker is found from /proc: the server side
of the connection is the socket whose local port is the server's and whose remote port is ours,
and its inode is among the open files of exactly one worker. With ``SO_REUSEPORT`` each new
connection lands on a worker by a hash of its addresses, so fresh connections are opened until
every worker has answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path

import uvloop
from loadgen import Connection, run

LISTEN = "0A"  # /proc/net/tcp state of a listening socket
ESTABLISHED = "01"


def _sockets(port: int, state: str, remote_port: int | None = None) -> set[str]:
    """Inodes of the TCP sockets (IPv4 and IPv6) bound to local ``port`` in ``state``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, st, inode = fields[1], fields[2], fields[3], fields[9]
                if st != state or int(local.rsplit(":", 1)[1], 16) != port:
                    continue
                if remote_port is not None and int(remote.rsplit(":", 1)[1], 16) != remote_port:
                    continue
                inodes.add(inode)
    return inodes


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _owners(pids: list[int], inodes: set[str]) -> list[int]:
    """The processes among ``pids`` with one of the socket ``inodes`` open."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    owners = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in wanted:
                        owners.append(pid)
                        break
    return owners


def serving_pids(root: int, port: int) -> list[int]:
    """The processes under ``root`` (a server's process tree) that listen on ``port``: idp's workers
    (the supervisor only holds the port, bound but not listening), or the one node process."""
    return sorted(_owners(_descendants(root), _sockets(port, LISTEN)))


def rss_mib(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


async def _read_workers(base: str, port: int, workers: list[int], attempts: int) -> dict[int, tuple[float, int]]:
    readings: dict[int, tuple[float, int]] = {}
    for _ in range(attempts):
        connection = Connection(base)
        try:
            answer = await connection.request("GET", "/debug/loop-lag")
            if answer.status != 200:
                raise SystemExit(f"{base}/debug/loop-lag: {answer.status} (is [server] loop_lag_probe on?)")
            local = connection.local_port()
            owner = _owners(workers, _sockets(port, ESTABLISHED, local)) if local else []
        finally:
            await connection.close()
        if len(owner) == 1:
            # Every read resets the worker's counts, so a second read of one worker covers only
            # the moments since the first: the larger stall of the two, the sum of the requests.
            stall, served = readings.get(owner[0], (0.0, 0))
            body = answer.json()
            readings[owner[0]] = (max(stall, float(body["max_stall_ms"])), served + int(body.get("requests", 0)))
        if len(readings) == len(workers):
            break
    return readings


def read_workers(base: str, root: int, port: int, attempts: int = 64) -> dict[int, tuple[float, int]]:
    """Each worker's longest event-loop stall (ms) and the requests it answered since its last
    read, which this resets; the workers that no fresh connection reached in ``attempts`` tries
    are missing."""
    return run(_read_workers(base, port, serving_pids(root, port), attempts))


def read_loop_lag(base: str, root: int, port: int, attempts: int = 64) -> dict[int, float]:
    """Each worker's longest event-loop stall (ms) since its last read (see read_workers)."""
    return {pid: stall for pid, (stall, _) in read_workers(base, root, port, attempts).items()}


def _reference_loop(connection: PipeEnd) -> None:  # pragma: no cover - a child process
    """idp's LoopLagProbe (uvloop, as idp serve) in a process that does nothing else: how late a
    5 ms timer wakes on this machine when no work of its own delays it (the scheduling noise under
    the same load; a mostly sleeping process is woken sooner than a busy one, so a lower bound)."""

    async def probe() -> None:
        worst = 0.0
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, time.perf_counter() - started - 0.005)
            if connection.poll():
                connection.recv()
                connection.send(round(worst * 1000, 3))
                worst = 0.0

    uvloop.run(probe())


class ReferenceLoop:
    """A do-nothing event loop beside the servers, read and reset like idp's probe."""

    def __init__(self) -> None:
        ours, theirs = multiprocessing.get_context("spawn").Pipe()
        self._connection = ours
        self._process = multiprocessing.get_context("spawn").Process(
            target=_reference_loop, args=(theirs,), daemon=True
        )
        self._process.start()

    def read(self) -> float:
        """The longest stall (ms) since the last read."""
        self._connection.send("read")
        if not self._connection.poll(10):
            raise SystemExit("the reference loop does not answer")
        return float(self._connection.recv())

    def close(self) -> None:
        self._process.terminate()
        self._process.join(5)
