"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from quart import Blueprint, Response, jsonify

from idp.http import runtime
from idp.storage.db import DatabaseUnavailable
from idp.storage.kv import KeyValueUnavailable

blueprint = Blueprint("health", __name__)

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
