"""`uvicorn --factory idp.asgi:create` (what `idp serve` runs in each worker): the application
behind the constant documents' fast path, with everything built at start-up moved out of the
garbage collector's sight (gc.freeze), so a full collection doesn't walk the worker's ~180,000
long-lived objects with the event loop stopped (85-100 ms measured, issue 14)."""

from __future__ import annotations

import gc

import pytest

from idp.constant_routes import ConstantRoutes


def test_the_worker_application_freezes_what_start_up_built(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from idp import asgi

    monkeypatch.setattr(asgi, "configure_logging", lambda *_, **__: None)  # the test process keeps its logging
    for name, value in cli_env.items():
        monkeypatch.setenv(name, value)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        app = asgi.create()
        assert isinstance(app, ConstantRoutes)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the test process's own heap goes back to the collector
