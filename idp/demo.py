"""Trying idp on one laptop: demo data (a user, a public SPA client and a confidential client),
and the demo SPA (clients/demo_spa/) served on its own origin next to the IdP.

Seeding is idempotent: running it again creates only what is missing and never changes existing rows.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from idp.accounts.users import NewUser, create_user, normalize_email
from idp.oauth.clients import ClientSpec, create_client
from idp.runtime import Runtime
from idp.storage.repositories import ClientRepository, UserRepository

DEMO_EMAIL = "demo@example.com"
# Long enough for the single-factor minimum and not on common-password lists.
DEMO_PASSWORD = "lantern-orbit-meadow-42"  # noqa: S105 - published demo credential, dev only
DEMO_SPA_CLIENT_ID = "demo-spa"
DEMO_WEB_CLIENT_ID = "demo-web"
DEMO_SPA_ORIGIN = "http://127.0.0.1:8080"
DEMO_WEB_ORIGIN = "http://127.0.0.1:8081"


@dataclass(frozen=True)
class SeedResult:
    user_id: str
    user_created: bool
    spa_client_id: str
    spa_created: bool
    web_client_id: str
    web_created: bool
    web_client_secret: str | None

    def as_dict(self, issuer: str) -> dict[str, Any]:
        return {
            "issuer": issuer,
            "login": {
                "email": DEMO_EMAIL,
                "password": DEMO_PASSWORD,
                "user_id": self.user_id,
                "created": self.user_created,
            },
            "spa_client": {
                "client_id": self.spa_client_id,
                "created": self.spa_created,
                "redirect_uri": f"{DEMO_SPA_ORIGIN}/callback",
            },
            "web_client": {
                "client_id": self.web_client_id,
                "created": self.web_created,
                "client_secret": self.web_client_secret,
                "redirect_uri": f"{DEMO_WEB_ORIGIN}/callback",
            },
            "discovery": f"{issuer}/.well-known/openid-configuration",
        }


async def seed_demo(rt: Runtime) -> SeedResult:
    async with rt.db.session() as session:
        existing_user = await UserRepository(session).get_by_email_normalized(normalize_email(DEMO_EMAIL))
        clients = ClientRepository(session)
        has_spa = await clients.get(DEMO_SPA_CLIENT_ID) is not None
        has_web = await clients.get(DEMO_WEB_CLIENT_ID) is not None

    if existing_user is None:
        user = await create_user(
            rt.db,
            rt.passwords,
            rt.events,
            # An administrator, so the demo shows the admin pages too (they ask for a second
            # factor first, as [admin] require_mfa does by default).
            NewUser(email=DEMO_EMAIL, password=DEMO_PASSWORD, name="Demo User", email_verified=True, is_admin=True),
        )
        user_id, user_created = user.id, True
    else:
        user_id, user_created = existing_user.id, False

    if not has_spa:
        await create_client(
            rt.db,
            rt.events,
            ClientSpec(
                client_id=DEMO_SPA_CLIENT_ID,
                name="Demo SPA",
                client_type="public",
                redirect_uris=[f"{DEMO_SPA_ORIGIN}/callback"],
                post_logout_redirect_uris=[f"{DEMO_SPA_ORIGIN}/"],
                web_origins=[DEMO_SPA_ORIGIN],
                first_party=True,
            ),
        )

    web_secret = None
    if not has_web:
        created = await create_client(
            rt.db,
            rt.events,
            ClientSpec(
                client_id=DEMO_WEB_CLIENT_ID,
                name="Demo web app",
                client_type="confidential",
                redirect_uris=[f"{DEMO_WEB_ORIGIN}/callback"],
                post_logout_redirect_uris=[f"{DEMO_WEB_ORIGIN}/"],
                grant_types=["authorization_code", "refresh_token", "client_credentials"],
            ),
        )
        web_secret = created.client_secret

    return SeedResult(
        user_id=user_id,
        user_created=user_created,
        spa_client_id=DEMO_SPA_CLIENT_ID,
        spa_created=not has_spa,
        web_client_id=DEMO_WEB_CLIENT_ID,
        web_created=not has_web,
        web_client_secret=web_secret,
    )


# -- serving the demo SPA on its own origin ----------------------------------------------------------

SPA_DIRECTORY = Path(__file__).resolve().parents[1] / "clients" / "demo_spa"
SPA_SCOPE = "openid profile email offline_access"
# Files the SPA's server hands out (anything else is 404): what a browser loads.
_SPA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


def spa_config(issuer: str, origin: str = DEMO_SPA_ORIGIN, client_id: str = DEMO_SPA_CLIENT_ID) -> dict[str, str]:
    """What the SPA reads from /config.json: who it is and where its IdP is (endpoints come from
    discovery)."""
    parts = urlsplit(issuer)
    socket_scheme = "wss" if parts.scheme == "https" else "ws"
    return {
        "issuer": issuer,
        "client_id": client_id,
        "redirect_uri": f"{origin}/callback",
        "post_logout_redirect_uri": f"{origin}/",
        "scope": SPA_SCOPE,
        "notifications_url": f"{socket_scheme}://{parts.netloc}/ws/notifications",
        "token_store": "localStorage",
    }


def spa_headers(issuer: str) -> dict[str, str]:
    """The SPA's own CSP: scripts and styles from its origin only, no inline script, every DOM
    write through its Trusted Types policy; it talks to the IdP (fetch, WebSocket) and nothing else."""
    parts = urlsplit(issuer)
    socket_origin = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}"
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data: blob: {issuer}",
            f"connect-src 'self' {issuer} {socket_origin}",
            f"form-action 'self' {issuer}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "require-trusted-types-for 'script'",
            "trusted-types idp-spa",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


def spa_file(directory: Path, path: str) -> Path | None:
    """The file for a request path: a file of the SPA, index.html for its routes (a path without
    a dot: /callback, /profile), None for anything else (and for anything outside ``directory``)."""
    clean = unquote(urlsplit(path).path)
    if "\x00" in clean or "\\" in clean:
        return None
    if "." not in clean.rsplit("/", 1)[-1]:
        return directory / "index.html"
    target = (directory / clean.lstrip("/")).resolve()
    if not target.is_relative_to(directory.resolve()) or not target.is_file() or target.suffix not in _SPA_TYPES:
        return None
    if any(part.startswith(".") or part in ("tests", "node_modules") for part in target.relative_to(directory).parts):
        return None
    return target


def serve_spa(
    issuer: str,
    host: str,
    port: int,
    directory: Path = SPA_DIRECTORY,
    *,
    client_id: str = DEMO_SPA_CLIENT_ID,
    token_store: str = "localStorage",  # noqa: S107 - where the SPA keeps tokens, not a secret
) -> ThreadingHTTPServer:
    """Serve the demo SPA (and its /config.json) on its own origin, in a background thread."""
    config = json.dumps({**spa_config(issuer, f"http://{host}:{port}", client_id), "token_store": token_store}).encode()
    headers = spa_headers(issuer)

    class Handler(BaseHTTPRequestHandler):
        server_version = "idp-demo-spa"
        sys_version = ""

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/config.json":
                self._answer(200, "application/json", config)
                return
            found = spa_file(directory, self.path)
            if found is None:
                self._answer(404, "text/plain; charset=utf-8", b"not found\n")
                return
            self._answer(200, _SPA_TYPES[found.suffix], found.read_bytes())

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the IdP's own log is the one to read."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="demo-spa", daemon=True).start()
    return server
