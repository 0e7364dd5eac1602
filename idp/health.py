"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from quart import Blueprint, Response, current_app, jsonify, request

from idp.errors import NotFound
from idp.http import runtime
from idp.security.hosts import is_loopback_host
from idp.storage.db import DatabaseUnavailable
from idp.storage.kv import KeyValueUnavailable

blueprint = Blueprint("health", __name__)
# app.extensions key of the running LoopLagProbe ([server] loop_lag_probe).
LOOP_LAG = "idp.loop_lag"

_CHECK_TIMEOUT = 2.0


@blueprint.get("/healthz")
async def healthz() -> Response:
    """The process is alive and serving; says nothing about its dependencies."""
    response = jsonify(status="ok")
    response.headers["Cache-Control"] = "no-store"
    return response


async def _check(name: str, probe: asyncio.Future[None] | object) -> tuple[str, str]:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await probe  # type: ignore[misc]
    except (TimeoutError, DatabaseUnavailable, KeyValueUnavailable, OSError):
        return name, "unavailable"
    return name, "ok"


@blueprint.get("/readyz")
async def readyz() -> tuple[Response, int]:
    """Ready to take traffic: the database and (when configured) Redis answer. 503 names what failed."""
    rt = runtime()
    kv_name = "redis" if rt.kv.backend_name == "redis" else "kv_store"
    results = dict(
        await asyncio.gather(
            _check("database", rt.db.ping(within=_CHECK_TIMEOUT)),
            _check(kv_name, rt.kv.ping()),
        )
    )
    failed = sorted(name for name, state in results.items() if state != "ok")
    body: dict[str, object] = {"status": "unavailable" if failed else "ready", "checks": results}
    if failed:
        body["failed"] = failed
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 503 if failed else 200


@blueprint.get("/debug/loop-lag")
async def loop_lag() -> Response:
    """The longest event-loop stall of this worker since the last read ([server] loop_lag_probe;
    loopback callers only). 404 when the probe is off or the caller is not local."""
    probe = current_app.extensions.get(LOOP_LAG)
    if probe is None or not is_loopback_host(request.remote_addr or ""):
        raise NotFound()
    response = jsonify(probe.read_and_reset())
    response.headers["Cache-Control"] = "no-store"
    return response
