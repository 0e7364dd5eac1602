"""Prometheus metrics (``idp_*``) at ``/metrics``: requests, latency, tokens, sign-ins, limits, keys.

Counters are derived, not sprinkled through the domain code: requests, latency and rate-limit hits
(429s) from one after-request hook beside the access log; tokens issued and revoked, sign-ins and
account locks from the event bus, as the audit log subscribes to it. Gauges that describe shared
state (signing-key age, the outbox) are computed when a scrape arrives, by *gauge sources*::

    metrics_of(app).register_gauge_source(
        "idp_outbox_depth", "Messages waiting in the outbox.", outbox_depth, label="kind"
    )

A source is an async function returning one number, or ``{label value: number}`` when ``label``
is given. A source that fails or takes longer than two seconds leaves its gauge out of that scrape
and sets ``idp_metrics_source_up{source=...}`` to 0. Every node computes the same shared gauges:
aggregate them with ``max``, not ``sum``.

Several workers (``[server] workers``): ``idp serve`` runs prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, see ``idp.server``): each worker adds to memory-mapped files of its
own, and a scrape answered by any worker adds up every worker's files. Request counts are
tallied in memory and written once a second: another worker's last second may be missing from a
scrape, and a worker killed with SIGKILL loses at most its last second.

Access: with ``[metrics] bearer_token`` a scraper must present it (RFC 6750 §2.1); without one only
loopback callers that came through no proxy are answered (idp.config refuses a server.host beyond
loopback without a token outside dev mode). Anyone else gets 404, as if there were no such page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from quart import Blueprint, Quart, Response, current_app, g, request

from idp.config import MetricsSettings
from idp.errors import NotFound
from idp.events import (
    AccountLocked,
    Event,
    EventBus,
    EventContext,
    LoginFailed,
    LoginSucceeded,
    TokenIssued,
    TokenRevoked,
)
from idp.outbox.operations import OutboxStats, outbox_stats
from idp.security.hosts import is_loopback_host
from idp.server import release_metrics_directory
from idp.storage.db import Database

log = logging.getLogger("idp.metrics")

# app.extensions key of this app's Metrics.
METRICS = "idp.metrics"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

GaugeValue = float | Mapping[str, float]
GaugeSource = Callable[[], Awaitable[GaugeValue]]

_SOURCE_TIMEOUT = 2.0
# A method outside these is counted as "other": a caller must not be able to invent label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Latency buckets in seconds, finer at the low end where issue 14's targets (a few ms) are.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BOUNDS = (*_BUCKETS, math.inf)  # the histogram's buckets, +Inf last
_FLUSH_INTERVAL = 1.0
# Headers a proxy adds: a request carrying one is not "local", whatever its peer address.
_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


@dataclass(frozen=True)
class _Gauge:
    name: str
    documentation: str
    source: GaugeSource
    label: str | None


class _Snapshot(Collector):
    """The gauges computed for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class Metrics:
    """This process's metrics. Metric objects live in a registry of their own (not the module-wide
    default one), so any number of apps can exist in one process, as the tests make them."""

    def __init__(self, settings: MetricsSettings) -> None:
        self.settings = settings
        # What prometheus-client chose when it was imported, not what the environment says now.
        multiprocess = values.ValueClass is not values.MutexValue
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_DIR) if multiprocess else None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "idp_http_requests", "HTTP requests answered, by route template and status.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "idp_http_request_duration_seconds", "Time to answer a request, by route template.",
            ["route"], buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.rate_limited = Counter(
            "idp_rate_limited", "Requests refused by a rate limit (429), by route template.", ["route"], registry=r
        )
        self.tokens_issued = Counter("idp_tokens_issued", "Tokens issued, by grant type.", ["grant_type"], registry=r)
        self.tokens_revoked = Counter(
            "idp_tokens_revoked", "Tokens and grants revoked, by reason.", ["reason", "token_type"], registry=r
        )
        self.sign_ins = Counter(
            "idp_sign_ins", "Sign-in attempts, by outcome (success or the refusal's reason) and factor.",
            ["outcome", "factor"], registry=r,
        )  # fmt: skip
        self.lockouts = Counter(
            "idp_account_locks", "Account locks switched on by repeated failures, by scope.", ["scope"], registry=r
        )
        # Requests are tallied in plain Python numbers (the hot path: one dict lookup and a few
        # additions; the event loop is one thread, so no lock) and added to the metrics once a
        # second and before each scrape (flush): prometheus-client takes a lock for every
        # increment, and in multiprocess mode writes the memory-mapped file too (measured in
        # docs/deployment.md "Metrics").
        self._pending: dict[tuple[str, str, int], list[float]] = {}
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any | None]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._gauges: dict[str, _Gauge] = {}

    # -- requests -----------------------------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method if method in _METHODS else "other", route, status)
        tally = self._pending.get(key)
        if tally is None:
            tally = self._pending[key] = [0.0] * (2 + len(_BOUNDS))
        tally[0] += 1  # requests
        tally[1] += seconds  # their total duration
        tally[2 + bisect_left(_BOUNDS, seconds)] += 1  # the first bucket whose bound >= seconds

    def flush(self) -> None:
        """Add the requests tallied since the last flush to the metrics (and, in multiprocess
        mode, to this worker's files, where a scrape answered by any worker reads them)."""
        pending, self._pending = self._pending, {}
        for key, tally in pending.items():
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = self._children_for(*key)
            counter, histogram, limited = children
            counter.inc(tally[0])
            if limited is not None:
                limited.inc(tally[0])
            # A second's observations at once, into the histogram child's own values: its
            # observe() is one sum and one bucket increment per call, which is what this adds up.
            histogram._sum.inc(tally[1])
            for bucket, count in zip(histogram._buckets, tally[2:], strict=True):
                if count:
                    bucket.inc(count)

    def _children_for(self, method: str, route: str, status: int) -> tuple[Any, Any, Any | None]:
        return (
            self.requests.labels(method, route, str(status)),
            self.latency.labels(route),
            self.rate_limited.labels(route) if status == 429 else None,
        )

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_INTERVAL)
            self.flush()

    def start(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._flush_every_second())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.flush()
        if self.multiprocess_dir:
            # prometheus-client's clean-up of this worker's live gauges (we keep none; counters stay)
            mark_process_dead(os.getpid(), self.multiprocess_dir)
        if directory := os.environ.get(MULTIPROCESS_DIR):
            release_metrics_directory(directory)  # if this process made it (it served alone)

    # -- domain events ------------------------------------------------------------------------------

    def subscribe_to(self, bus: EventBus) -> None:
        bus.subscribe(self._on_event, TokenIssued, TokenRevoked, LoginSucceeded, LoginFailed, AccountLocked)

    async def _on_event(self, event: Event, context: EventContext) -> None:
        if isinstance(event, TokenIssued):
            self.tokens_issued.labels(event.grant_type).inc()
        elif isinstance(event, TokenRevoked):
            self.tokens_revoked.labels(event.reason, event.token_type or "grant").inc()
        elif isinstance(event, LoginSucceeded):
            self.sign_ins.labels("success", "+".join(event.amr) or "password").inc()
        elif isinstance(event, LoginFailed):
            self.sign_ins.labels(event.reason, event.factor).inc()
        elif isinstance(event, AccountLocked):
            self.lockouts.labels(event.scope).inc()

    # -- gauges computed at scrape time -------------------------------------------------------------

    def register_gauge_source(
        self, name: str, documentation: str, source: GaugeSource, *, label: str | None = None
    ) -> None:
        """Report ``source()`` as the gauge ``name`` at every scrape (see the module docstring)."""
        if not name.startswith("idp_"):
            raise ValueError(f"gauge {name!r}: idp's metrics are named idp_*")
        if name in self._gauges:
            raise ValueError(f"gauge {name!r} has a source already")
        self._gauges[name] = _Gauge(name, documentation, source, label)

    async def _gauge_families(self) -> list[Metric]:
        gauges = list(self._gauges.values())
        results = await asyncio.gather(*(self._read(gauge) for gauge in gauges))
        up = GaugeMetricFamily(
            "idp_metrics_source_up", "Whether a gauge source answered this scrape.", labels=["source"]
        )
        families: list[Metric] = [up]
        for gauge, value in zip(gauges, results, strict=True):
            up.add_metric([gauge.name], 0.0 if value is None else 1.0)
            if value is None:
                continue
            family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=[gauge.label] if gauge.label else None)
            if isinstance(value, Mapping):
                for label_value, number in sorted(value.items()):
                    family.add_metric([label_value], float(number))
            else:
                family.add_metric([], float(value))
            families.append(family)
        return families

    async def _read(self, gauge: _Gauge) -> GaugeValue | None:
        try:
            async with asyncio.timeout(_SOURCE_TIMEOUT):
                value = await gauge.source()
        except Exception as exc:  # one broken source must not cost the whole scrape
            log.warning("gauge source failed", extra={"gauge": gauge.name, "error": type(exc).__name__})
            return None
        if isinstance(value, Mapping) != (gauge.label is not None):
            log.warning("gauge source answered the wrong shape", extra={"gauge": gauge.name})
            return None
        return value

    # -- exposition ---------------------------------------------------------------------------------

    async def exposition(self) -> bytes:
        """The text format (Prometheus exposition format 0.0.4): every worker's counters, and the
        gauges computed now. This worker's requests are flushed first; another worker's reach
        its files within a second."""
        self.flush()
        if self.multiprocess_dir:
            counters = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(counters, path=self.multiprocess_dir)
        else:
            counters = self.registry
        gauges = CollectorRegistry(auto_describe=True)
        gauges.register(_Snapshot(await self._gauge_families()))
        return generate_latest(counters) + generate_latest(gauges)

    # -- access ---------------------------------------------------------------------------------

    def may_scrape(self, authorization: str | None, remote_addr: str | None, forwarded: bool) -> bool | None:
        """True: answer. False: a token is configured and was not presented (401). None: 404."""
        if not self.settings.enabled:
            return None
        token = self.settings.bearer_token
        if token is not None:
            expected = f"Bearer {token.get_secret_value()}".encode()
            return hmac.compare_digest((authorization or "").encode(), expected)
        if forwarded or not is_loopback_host(remote_addr or ""):
            return None
        return True


def metrics_of(app: Quart) -> Metrics | None:
    found = app.extensions.get(METRICS)
    return found if isinstance(found, Metrics) else None


blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
async def scrape() -> Response:
    metrics = metrics_of(current_app)
    forwarded = any(name in request.headers for name in _FORWARDING_HEADERS)
    verdict = (
        None
        if metrics is None
        else metrics.may_scrape(request.headers.get("Authorization"), request.remote_addr, forwarded)
    )
    if verdict is None or metrics is None:
        raise NotFound()
    if verdict is False:
        # RFC 6750 §3: a protected resource without valid credentials answers 401 with a challenge.
        return Response(
            "A bearer token is required.\n",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"', "Cache-Control": "no-store"},
            mimetype="text/plain",
        )
    return Response(
        await metrics.exposition(), headers={"Cache-Control": "no-store"}, content_type=CONTENT_TYPE_PLAIN_0_0_4
    )


def signing_key_ages(app: Quart) -> GaugeSource:
    """Seconds since the active signing key of each algorithm was made (a rotation resets it)."""

    async def ages() -> dict[str, float]:
        keys = app.extensions["idp"].keys
        now = datetime.now(UTC)
        result: dict[str, float] = {}
        for alg in keys.algorithms:
            created = keys.signing_key(alg).created_at
            created = created if created.tzinfo else created.replace(tzinfo=UTC)
            result[alg] = max(0.0, (now - created).total_seconds())
        return result

    return ages


class OutboxGauges:
    """The outbox's depth, oldest pending age and dead letters (idp.outbox.operations), read with
    one grouped query per scrape however many of its gauges ask."""

    def __init__(self, db: Database, max_age: float = 1.0) -> None:
        self._db = db
        self._max_age = max_age
        self._read_at = -math.inf
        self._stats: OutboxStats | None = None
        self._lock = asyncio.Lock()

    async def stats(self) -> OutboxStats:
        async with self._lock:
            if self._stats is None or time.monotonic() - self._read_at > self._max_age:
                self._stats = await outbox_stats(self._db)
                self._read_at = time.monotonic()
            return self._stats

    async def depth(self) -> dict[str, float]:
        return {kind: by_status.get("pending", 0) for kind, by_status in (await self.stats()).counts.items()}

    async def dead_letters(self) -> dict[str, float]:
        return {kind: by_status.get("dead", 0) for kind, by_status in (await self.stats()).counts.items()}

    async def oldest_age(self) -> float:
        return (await self.stats()).oldest_pending_age or 0.0

    def register(self, metrics: Metrics) -> None:
        for name, documentation, source, label in (
            ("idp_outbox_depth", "Messages waiting for delivery, by kind.", self.depth, "kind"),
            (
                "idp_outbox_dead_letters",
                "Messages given up on after the last retry, by kind.",
                self.dead_letters,
                "kind",
            ),
            ("idp_outbox_oldest_age_seconds", "Age of the oldest message waiting (0: none).", self.oldest_age, None),
        ):
            metrics.register_gauge_source(name, documentation, source, label=label)


def install(app: Quart, settings: MetricsSettings) -> None:
    """Count every answered request, subscribe to the event bus once the runtime is up, serve
    /metrics, and let the worker's files go at the end (multiprocess mode)."""
    metrics = app.extensions[METRICS] = Metrics(settings)
    app.register_blueprint(blueprint)
    if not settings.enabled:
        return

    @app.before_serving
    async def _subscribe() -> None:
        metrics.start()
        metrics.subscribe_to(app.extensions["idp"].events)
        if "idp_signing_key_age_seconds" not in metrics._gauges:
            metrics.register_gauge_source(
                "idp_signing_key_age_seconds",
                "Age of the active signing key, by algorithm.",
                signing_key_ages(app),
                label="alg",
            )
            OutboxGauges(app.extensions["idp"].db).register(metrics)

    @app.after_serving
    async def _release() -> None:
        await metrics.stop()

    @app.after_request
    async def _count(response: Response) -> Response:
        started = g.get("started")
        rule = request.url_rule
        metrics.observe_request(
            request.method,
            rule.rule if rule is not None else "unmatched",  # never the raw path: unbounded labels
            response.status_code,
            time.perf_counter() - started if started is not None else 0.0,
        )
        return response
