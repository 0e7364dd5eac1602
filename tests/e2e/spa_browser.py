"""The demo SPA (clients/demo_spa/) in a real browser against a real `idp serve`: the stack (an SMTP
test server, the IdP with the SMTP mail backend, the SPA's public first-party client and the SPA
served on its own origin by ``idp.demo.serve_spa``) and the steps a person takes in it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
from playwright.async_api import Page

from idp.demo import serve_spa
from tests.e2e.server import IDP, free_port, production_env, run_idp, running
from tests.smtp import SmtpServer, running_smtp_server

SPA_CLIENT_ID = "demo-spa-e2e"
SIGNED_OUT_HEADING = "Your account, in one place"


@dataclass
class Stack:
    issuer: str
    spa: str  # the SPA's origin
    env: dict[str, str]
    smtp: SmtpServer

    def create_user(self, email: str, password: str, name: str = "") -> None:
        args = ["users", "create", "--email", email, "--password-stdin", "--verified"]
        run_idp(self.env, *args, *(["--name", name] if name else []), stdin=password + "\n")


@contextmanager
def running_stack(data_dir: Path) -> Iterator[Stack]:
    port, spa_port = free_port(), free_port()
    spa_origin = f"http://127.0.0.1:{spa_port}"
    with running_smtp_server() as smtp:
        env = {
            **production_env(data_dir, port),
            "IDP_MAIL__BACKEND": "smtp",
            "IDP_MAIL__SMTP_HOST": smtp.host,
            "IDP_MAIL__SMTP_PORT": str(smtp.port),
            "IDP_MAIL__SMTP_SECURITY": "none",
            "IDP_MAIL__SENDER": "idp <no-reply@id.test>",
        }
        run_idp(env, "db", "upgrade")
        client = json.loads(
            run_idp(env, "clients", "create", "--name", "Demo SPA", "--public", "--first-party",
                    "--client-id", SPA_CLIENT_ID, "--redirect-uri", f"{spa_origin}/callback",
                    "--post-logout-redirect-uri", f"{spa_origin}/", "--web-origin", spa_origin, "--json")
        )  # fmt: skip
        assert client["client_id"] == SPA_CLIENT_ID, client
        with running([IDP, "serve"], env, port):
            issuer = env["IDP_ISSUER"]
            spa = serve_spa(issuer, "127.0.0.1", spa_port, client_id=SPA_CLIENT_ID)
            try:
                yield Stack(issuer=issuer, spa=spa_origin, env=env, smtp=smtp)
            finally:
                spa.shutdown()
                spa.server_close()


async def mail_link(smtp: SmtpServer, to: str, path: str, timeout: float = 5.0) -> str:  # noqa: ASYNC109
    """The ``{issuer}{path}?token=…`` link of the first mail to ``to`` that has one."""
    pattern = re.compile(rf"https?://[^\s\"'<>]+{re.escape(path)}\?token=[A-Za-z0-9_\-.%]+")
    count = 1
    while True:
        messages = await smtp.wait_for(count, timeout=timeout)
        for received in messages:
            if to not in received.rcpt_tos:
                continue
            body = received.message.get_body(("plain",))
            found = pattern.search(body.get_content() if body is not None else "")
            if found:
                return found.group(0)
        count = len(messages) + 1


async def spa_signed_in(page: Page, spa: str) -> None:
    """The SPA is back from the callback and shows the profile."""
    await page.wait_for_url(f"{spa}/profile")
    await page.locator("main h1", has_text="Profile").wait_for()


async def sign_in_spa(page: Page, stack: Stack, email: str, password: str) -> None:
    """Sign in from the SPA's start page with a password (an account without a second factor)."""
    await page.goto(stack.spa + "/")
    await page.click("[data-action=sign-in]")
    await page.wait_for_url(f"{stack.issuer}/login*")
    await fill_password_login(page, email, password)
    await spa_signed_in(page, stack.spa)


async def fill_password_login(page: Page, email: str, password: str) -> None:
    await page.fill("#email", email)
    await page.fill("#password", password)
    await page.click("#login-submit")


async def enrol_totp_on_idp(page: Page, issuer: str, password: str) -> tuple[str, list[str]]:
    """On the IdP's security page (already open, signed in): turn an authenticator app on. Its key
    and the recovery codes shown."""
    assert page.url == f"{issuer}/account/security", page.url
    await page.fill("#totp-password", password)
    await page.click("#totp-start")
    secret = (await page.text_content("#totp-secret") or "").strip()
    await page.fill("#code", pyotp.TOTP(secret).now())
    await page.click("#totp-confirm")
    codes = [code.strip() for code in await page.locator("#recovery-codes li").all_text_contents()]
    assert len(codes) >= 5, "no recovery codes shown after turning the authenticator app on"
    return secret, codes


async def stored_tokens(page: Page) -> dict[str, Any] | None:
    """The SPA's token record in the page's localStorage."""
    text = await page.evaluate("localStorage.getItem('idp-spa.tokens')")
    return json.loads(text) if text else None
