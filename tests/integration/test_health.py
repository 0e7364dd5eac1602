"""Liveness and readiness endpoints."""

from __future__ import annotations

from idp.storage.db import Database
from idp.storage.kv import RedisStore


async def test_healthz_answers_without_touching_dependencies(client, runtime) -> None:
    # The outbox worker holds a pooled connection while it looks for mail; stopped first, as at
    # shutdown, so closing the pool leaves no connection behind.
    await runtime.outbox.stop()
    await runtime.db.close()  # even with the pool gone, the process is alive
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


async def test_readyz_reports_each_dependency(client, runtime) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = await response.get_json()
    assert body["status"] == "ready"
    kv_name = "redis" if runtime.kv.backend_name == "redis" else "kv_store"
    assert body["checks"] == {"database": "ok", kv_name: "ok"}


async def test_readyz_names_an_unreachable_database(client, runtime) -> None:
    healthy = runtime.db
    runtime.db = Database("postgresql+asyncpg://idp:pw@127.0.0.1:1/none")
    try:
        response = await client.get("/readyz")
    finally:
        await runtime.db.close()
        runtime.db = healthy
    assert response.status_code == 503
    body = await response.get_json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["database"]
    assert body["checks"]["database"] == "unavailable"
    assert "pw" not in (await response.get_data(as_text=True)).replace("unavailable", "")


async def test_readyz_names_an_unreachable_redis(client, runtime) -> None:
    healthy = runtime.kv
    runtime.kv = RedisStore("redis://127.0.0.1:1/0", prefix="x:", socket_timeout=0.5)
    try:
        response = await client.get("/readyz")
    finally:
        await runtime.kv.close()
        runtime.kv = healthy
    assert response.status_code == 503
    body = await response.get_json()
    assert body["failed"] == ["redis"]
    assert body["checks"]["database"] == "ok"
