"""The demo SPA's own little server: its files and routes, nothing else of the checkout, with a
CSP of its own (no inline script, Trusted Types) and the /config.json the SPA starts from."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from idp.demo import serve_spa, spa_config, spa_file, spa_headers

ISSUER = "http://127.0.0.1:8000"


@pytest.fixture
def spa(tmp_path: Path) -> Path:
    (tmp_path / "js").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>SPA</title>")
    (tmp_path / "js" / "app.js").write_text("export {};")
    (tmp_path / "tests" / "x.test.js").write_text("secret test")
    (tmp_path / ".env").write_text("SECRET=1")
    (tmp_path / "notes.txt").write_text("not served")
    (tmp_path.parent / "outside.js").write_text("outside")
    return tmp_path


def test_routes_get_the_index_and_files_are_served_from_the_spa_only(spa: Path) -> None:
    assert spa_file(spa, "/") == spa / "index.html"
    assert spa_file(spa, "/callback?code=x&state=y") == spa / "index.html"
    assert spa_file(spa, "/js/app.js") == (spa / "js" / "app.js").resolve()
    for refused in ("/../outside.js", "/js/../../outside.js", "/%2e%2e/outside.js", "/tests/x.test.js",
                    "/.env", "/notes.txt", "/js/missing.js", "/js\\app.js", "/js/app.js%00.png"):  # fmt: skip
        assert spa_file(spa, refused) is None, refused


def test_the_config_points_at_the_issuer_and_its_socket() -> None:
    assert spa_config("https://id.example") == {
        "issuer": "https://id.example",
        "client_id": "demo-spa",
        "redirect_uri": "http://127.0.0.1:8080/callback",
        "post_logout_redirect_uri": "http://127.0.0.1:8080/",
        "scope": "openid profile email offline_access",
        "notifications_url": "wss://id.example/ws/notifications",
        "token_store": "localStorage",
    }
    assert spa_config(ISSUER)["notifications_url"] == "ws://127.0.0.1:8000/ws/notifications"


def test_the_csp_allows_no_inline_script_and_requires_trusted_types() -> None:
    policy = spa_headers(ISSUER)["Content-Security-Policy"]
    directives = dict(part.split(" ", 1) for part in policy.split("; "))
    assert directives["script-src"] == "'self'" and "unsafe" not in policy
    assert directives["require-trusted-types-for"] == "'script'" and directives["trusted-types"] == "idp-spa"
    assert directives["connect-src"] == f"'self' {ISSUER} ws://127.0.0.1:8000"
    assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"


def test_the_server_answers_with_its_headers(spa: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve_spa(ISSUER, "127.0.0.1", port, spa)
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/config.json", timeout=5) as answer:
            config = json.loads(answer.read())
            assert answer.headers["Content-Security-Policy"] == spa_headers(ISSUER)["Content-Security-Policy"]
        assert config["redirect_uri"] == f"{base}/callback"
        with urllib.request.urlopen(f"{base}/callback", timeout=5) as answer:
            assert answer.headers["Content-Type"] == "text/html; charset=utf-8" and b"<title>SPA" in answer.read()
        with urllib.request.urlopen(f"{base}/js/app.js", timeout=5) as answer:
            assert answer.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/tests/x.test.js", timeout=5)
        assert missing.value.code == 404
        missing.value.close()  # the error holds the answer's socket
    finally:
        server.shutdown()
        server.server_close()
