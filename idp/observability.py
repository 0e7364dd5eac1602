"""Structured logging with request ids, and redaction of anything secret.

JSON lines in production, one readable line per record in dev. Every record carries the request
id of the request it belongs to (taken from a well-formed ``X-Request-ID`` or generated, and
echoed back in the response). A filter scrubs credentials from messages and extra fields before
any handler sees them: passwords, tokens, codes, secrets, cookies and JWTs never reach a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import sys
import time
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("idp_request_id", default=None)

REDACTED = "[redacted]"

# Field names whose values are credentials, wherever they appear (extra fields, query strings,
# form bodies, JSON). Compared case-insensitively after removing "-" and "_".
_SENSITIVE_KEYS = {
    "password",
    "passwd",
    "newpassword",
    "currentpassword",
    "secret",
    "clientsecret",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "idtokenhint",
    "logouttoken",
    "code",
    "codeverifier",
    "assertion",
    "clientassertion",
    "authorization",
    "cookie",
    "setcookie",
    "otp",
    "totp",
    "recoverycode",
    "cookiesecret",
    "keyencryptionkey",
    "privatekey",
    "d",
    "csrftoken",
    "state",
}
_RESERVED_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_KEY_VALUE = re.compile(
    r"(?i)\b(password|passwd|secret|client_secret|token|access_token|refresh_token|id_token|"
    r"id_token_hint|code|code_verifier|client_assertion|assertion|otp|recovery_code|csrf_token)"
    r"(\s*[=:]\s*|\"\s*:\s*\")([^\s&\"',;]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")


# Every pattern above needs one of these in the text ("eyJ", bearer / basic, the "=" or ":" of a
# key-value pair or URL): a text without any, like most of an access line, is left as it is
# after one search instead of four substitutions (issue 14: redaction was 40 % of a log line).
_MAY_HOLD_A_SECRET = re.compile(r"(?i)eyJ|bearer|basic|[=:]")


def _normalise_key(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "")


@functools.lru_cache(maxsize=1024)
def is_sensitive_key(key: str) -> bool:
    return _normalise_key(key) in _SENSITIVE_KEYS


def redact_text(text: str) -> str:
    if _MAY_HOLD_A_SECRET.search(text) is None:
        return text
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}***@", text)


def redact_value(value: Any, key: str | None = None) -> Any:
    if key is not None and is_sensitive_key(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


class RedactionFilter(logging.Filter):
    """Scrub credentials from the message, its arguments and extra fields, in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed format string must not break logging
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _RESERVED_ATTRS:
                setattr(record, key, redact_value(value, key))
        if record.exc_info:
            # Keep the exception's type and where it was raised; drop the traceback text,
            # which can carry SQL, parameters and secrets.
            record.error_summary = summarize_exception(record.exc_info[1])
            record.exc_info = None
            record.exc_text = None
        record.request_id = request_id_var.get()
        return True


def summarize_exception(exc: BaseException | None) -> str:
    """``TypeName at module.py:123 in function``: enough to find the bug, nothing to leak."""
    if exc is None:
        return ""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    filename = last.filename.rsplit("/site-packages/", 1)[-1].rsplit("/idp/", 1)[-1]
    return f"{type(exc).__name__} at {filename}:{last.lineno} in {last.name}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            # Which worker process (server.workers > 1): each has a listening socket of its own.
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _RESERVED_ATTRS and value is not None:
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        # Access lines already say everything in their message.
        extras = (
            ""
            if record.name == "idp.access"
            else " ".join(
                f"{key}={value}"
                for key, value in vars(record).items()
                if key not in _RESERVED_ATTRS and key != "request_id" and value is not None
            )
        )
        rid = getattr(record, "request_id", None)
        parts = [stamp, f"{record.levelname:<7}", record.name, record.getMessage()]
        if extras:
            parts.append(extras)
        if rid:
            parts.append(f"rid={rid}")
        return " ".join(parts)


class LinesPerLoopTurn(logging.StreamHandler[Any]):
    """A stream handler that writes the access lines logged during one turn of the event loop
    together, at the end of that turn: one write (a system call) for all the requests a worker
    answered in it, instead of one a line (issue 14: the access line's write was 13 % of a JWKS
    answer). Any other line (a warning, the server's own "shutdown complete" before the process
    ends on its signal, where no end of turn comes) and any line logged where no loop runs
    (another thread, the command line) is written at once, after whatever is held. Nothing waits
    longer than the turn it was logged in; ``flush`` (logging's shutdown) writes what is held."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._held: list[str] = []
        self._last: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._last = record
        if record.name == _access_log.name:
            self.hold(line)
        else:
            self._held.append(line)
            self._write_held()

    def hold(self, line: str) -> None:
        """Hold an access line (terminated) for the end of this turn; written at once where no
        loop runs."""
        self._held.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write_held()
            return
        if len(self._held) == 1:
            loop.call_soon(self._end_of_turn)

    def _end_of_turn(self) -> None:
        with self.lock or contextlib.nullcontext():
            self._write_held()

    def _write_held(self) -> None:
        if not self._held:
            return
        text = "".join(self._held)
        self._held.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            if self._last is not None:
                self.handleError(self._last)

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            self._write_held()
        super().flush()


def configure_logging(
    level: str = "info", fmt: str = "json", stream: Any = None, *, per_loop_turn: bool = False
) -> None:
    """Route the root logger (and uvicorn's) through one redacting handler; ``per_loop_turn``
    (serving workers): :class:`LinesPerLoopTurn`'s."""
    # Where a record was logged from (file, line, function, thread) is never written by either
    # formatter: not looked up (the logging HOWTO's "Optimization"; 10 % of an access line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler: logging.StreamHandler[Any] = (LinesPerLoopTurn if per_loop_turn else logging.StreamHandler)(
        stream or sys.stderr
    )
    handler.addFilter(RedactionFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_idp_handler", False):
            root.removeHandler(existing)
    handler._idp_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    _AccessLines.sink = handler if isinstance(handler, LinesPerLoopTurn) and fmt == "json" else None
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "hypercorn.error", "quart.app", "quart.serving"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # Access lines come from our own middleware, which leaves out query strings.
    for name in ("uvicorn.access", "hypercorn.access"):
        logging.getLogger(name).disabled = True
    # Database drivers log statements with their parameters (hashes, encrypted keys) at debug
    # level, and HTTP clients log full URLs: keep them quiet whatever the root level is.
    for name in ("sqlalchemy.engine", "sqlalchemy.pool", "aiosqlite", "asyncpg", "httpx", "httpcore", "redis"):
        logging.getLogger(name).setLevel(logging.WARNING)


# fullmatch: "^...$" with match() would let a trailing newline into every log line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")


def accept_request_id(header_value: str | None) -> str | None:
    """A caller's X-Request-ID is kept only if it is a sane token (no log injection)."""
    if header_value and _REQUEST_ID.fullmatch(header_value):
        return header_value
    return None


_access_log = logging.getLogger("idp.access")


class _Answered:
    """Requests this process has answered, whichever path answered them (one access-log line
    each): the loop-lag probe reports them per worker, so a benchmark sees how load spread."""

    count = 0


class _AccessLines:
    """Where a serving worker's access lines may go without a log record (``configure_logging``
    with JSON lines per loop turn): the handler they would reach anyway."""

    sink: LinesPerLoopTurn | None = None

    @classmethod
    def direct(cls) -> LinesPerLoopTurn | None:
        """The sink, while an access record would reach it and nothing else: the root's only
        handler, redacting, at a level that passes it, the access logger enabled and without
        handlers of its own. Anything else (a test capturing logs, a handler added by an
        operator, a raised level) takes the record path."""
        sink = cls.sink
        if (
            sink is None
            or _access_log.handlers
            or _access_log.filters
            or not _access_log.propagate
            or not _access_log.isEnabledFor(logging.INFO)
            or sink.level > logging.INFO
            or logging.getLogger().handlers != [sink]
            or [type(each) for each in sink.filters] != [RedactionFilter]
        ):
            return None
        return sink


def access_line(
    method: str, path: str, status: int, duration_ms: float | None, remote_addr: str | None, *, now: float
) -> str:
    """The JSON line that :class:`JsonFormatter` writes for an access record after
    :class:`RedactionFilter`, built without the record (issue 14: logging's record, filter and
    formatter were 40 % of a JWKS answer's CPU); tests hold the two equal."""
    entry: dict[str, Any] = {
        "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "level": "info",
        "logger": _access_log.name,
        "msg": redact_text(f"{method} {path} {status} {duration_ms}ms"),
        "pid": os.getpid() if logging.logProcesses else None,
        "method": redact_text(method),
        "path": redact_text(path),
        "status": status,
    }
    if duration_ms is not None:
        entry["duration_ms"] = duration_ms
    if remote_addr is not None:
        entry["remote_addr"] = redact_text(remote_addr)
    if (request_id := request_id_var.get()) is not None:
        entry["request_id"] = request_id
    return json.dumps(entry, default=str, ensure_ascii=False)


def log_access(method: str, path: str, status: int, duration_ms: float | None, remote_addr: str | None) -> None:
    """The access log line of one request. The path only, never the query string: it can carry
    codes and tokens."""
    _Answered.count += 1
    sink = _AccessLines.direct()
    if sink is not None:
        line = access_line(method, path, status, duration_ms, remote_addr, now=time.time()) + sink.terminator
        with sink.lock or contextlib.nullcontext():  # as logging holds it around emit
            sink.hold(line)
        return
    _access_log.info(
        "%s %s %s %sms",
        method,
        path,
        status,
        duration_ms,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "remote_addr": remote_addr,
        },
    )


class LoopLagProbe:
    """How long the event loop stalls: a task asks to wake every ``interval`` seconds and records
    how late it wakes (a stall delays every request of the worker by as much). Debugging and
    benchmarks only (``[server] loop_lag_probe``)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.max_stall = 0.0
        self.samples = 0
        self.since = time.time()
        self._answered_before = _Answered.count

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            stall = time.perf_counter() - started - self.interval
            self.samples += 1
            self.max_stall = max(self.max_stall, stall)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def read_and_reset(self) -> dict[str, float | int]:
        """The longest stall since the last read (this worker's: ``pid`` says which), then start over."""
        report = {
            "pid": os.getpid(),
            "max_stall_ms": round(self.max_stall * 1000, 3),
            "samples": self.samples,
            "seconds": round(time.time() - self.since, 3),
            # Requests this worker answered meanwhile (this read is counted in the next one).
            "requests": _Answered.count - self._answered_before,
        }
        self._reset()
        return report
