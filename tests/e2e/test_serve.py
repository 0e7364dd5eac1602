"""The production server (uvicorn) and the README's run command, over real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import IDP, free_port, running

pytestmark = pytest.mark.server


def test_idp_serve_answers_over_http(cli_env) -> None:
    port = free_port()
    # Several workers only with Redis: without it each would keep its own state (refused, H1).
    workers = "2" if cli_env["IDP_REDIS_URL"] else "1"
    env = {**cli_env, "IDP_SERVER__PORT": str(port), "IDP_SERVER__WORKERS": workers, "IDP_LOG__FORMAT": "json"}
    migrated = subprocess.run([IDP, "db", "upgrade"], env={**env}, capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    with running([IDP, "serve"], env, port) as process:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5) as http:
            discovery = http.get("/.well-known/openid-configuration")
            assert discovery.status_code == 200
            assert discovery.json()["issuer"] == cli_env["IDP_ISSUER"]
            jwks = http.get("/jwks").json()
            assert {key["alg"] for key in jwks["keys"]} == {"RS256", "ES256", "Ed25519"}
            ready = http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            missing = http.get("/missing", headers={"Accept": "application/json"})
            assert missing.status_code == 404 and missing.json()["error"] == "not_found"
            assert "server" not in missing.headers  # no server banner
    output = process.output()
    access = [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"idp.access"' in line]
    assert {line["path"] for line in access} >= {"/.well-known/openid-configuration", "/jwks", "/readyz"}
    # A graceful stop: the supervisor of several workers exits 0; a single uvicorn process
    # re-raises the SIGTERM it handled once it has shut down.
    assert process.returncode == (0 if workers == "2" else -signal.SIGTERM)


def test_readme_run_command_starts_the_demo_on_embedded_defaults(tmp_path: Path) -> None:
    """`idp demo` in an empty directory: SQLite under var/, seeded, serving; and again after a restart."""
    port = free_port()
    for attempt in range(2):
        with running([IDP, "demo", "--port", str(port)], {}, port, cwd=tmp_path, timeout=60) as process:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                discovery = http.get("/.well-known/openid-configuration").json()
                assert discovery["issuer"] == f"http://127.0.0.1:{port}"
                assert http.get("/readyz").json()["checks"] == {"database": "ok", "kv_store": "ok"}
                kids = sorted(key["kid"] for key in http.get("/jwks").json()["keys"])
        output = process.output()
        assert "demo@example.com" in output
        assert ("demo-web secret " in output) == (attempt == 0)  # the demo client secret is shown once
        if attempt == 0:
            first_kids = kids
    assert kids == first_kids  # same encrypted keys, decrypted with the persisted dev secrets
    assert (tmp_path / "var" / "idp.sqlite3").exists()
    assert (tmp_path / "var" / "dev-secrets.json").exists()


def test_websockets_work_under_the_chosen_server_options(tmp_path: Path) -> None:
    """The options `idp serve` gives uvicorn (uvloop, httptools, sans-io websockets) carry WebSockets."""
    port = free_port()
    script = tmp_path / "ws_app.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import uvicorn
            from quart import Quart, websocket
            from idp.server import uvicorn_options
            from idp.config import load_settings

            app = Quart("ws")

            @app.get("/healthz")
            async def health():
                return "ok"

            @app.websocket("/ws")
            async def ws():
                while True:
                    message = await websocket.receive()
                    await websocket.send("echo:" + message)

            settings = load_settings(environ={{"IDP_DEV_MODE": "true", "IDP_DATA_DIR": {str(tmp_path)!r}}})
            uvicorn.run(app, host="127.0.0.1", port={port}, **uvicorn_options(settings))
            """
        )
    )
    with running([sys.executable, str(script)], {}, port):
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "echo:ping"
