"""A real browser for end-to-end tests: Debian's Chromium driven through Playwright's async API.

Playwright's own browser download is not used; the system Chromium is launched by path. Without it
the browser tests skip, unless ``IDP_TEST_REQUIRE_BROWSER=1`` says a missing browser is a failure
(CI images that are meant to have one).

WebAuthn runs against Chromium's virtual authenticators (Chrome DevTools Protocol, ``WebAuthn``
domain): a CTAP2 platform authenticator that verifies its user and approves every request at once,
so passkey ceremonies complete without a person or a security key.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, CDPSession, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # "localhost" is a secure context (WebAuthn works over plain http there); never let it be ::1,
    # where the test server does not listen.
    "--host-resolver-rules=MAP localhost 127.0.0.1",
)
# Every wait (navigation, element, expectation) gives up after this long instead of Playwright's 30 s.
TIMEOUT_MS = 10_000


def require_chromium() -> Path:
    """The Chromium binary; skips the test when there is none (fails under IDP_TEST_REQUIRE_BROWSER=1)."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM}: the real-browser tests need it"
    if os.environ.get("IDP_TEST_REQUIRE_BROWSER") == "1":
        pytest.fail(message + " (IDP_TEST_REQUIRE_BROWSER=1)")
    pytest.skip(message)


@asynccontextmanager
async def chromium(executable: Path = CHROMIUM) -> AsyncIterator[Browser]:
    """A headless Chromium, closed (with Playwright's driver) however the block ends."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(executable), args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def new_page(browser: Browser) -> AsyncIterator[tuple[BrowserContext, Page]]:
    """A fresh profile (no cookies) with one tab, and short timeouts."""
    context = await browser.new_context()
    try:
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        yield context, await context.new_page()
    finally:
        await context.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class Credential:
    """A credential as the virtual authenticator holds it (CDP ``WebAuthn.Credential``)."""

    credential_id: bytes
    rp_id: str
    user_handle: bytes | None
    sign_count: int
    resident: bool
    private_key: bytes  # PKCS#8: the authenticator's secret, which a test may copy elsewhere

    @classmethod
    def from_cdp(cls, data: dict[str, Any]) -> Credential:
        handle = data.get("userHandle")
        return cls(
            credential_id=base64.b64decode(data["credentialId"]),
            rp_id=data.get("rpId", ""),
            user_handle=base64.b64decode(handle) if handle else None,
            sign_count=int(data["signCount"]),
            resident=bool(data["isResidentCredential"]),
            private_key=base64.b64decode(data["privateKey"]),
        )


class VirtualAuthenticator:
    """One of Chromium's virtual authenticators, attached to a tab through a CDP session."""

    def __init__(self, cdp: CDPSession, authenticator_id: str) -> None:
        self.cdp = cdp
        self.id = authenticator_id

    @classmethod
    async def attach(cls, context: BrowserContext, page: Page, **options: Any) -> VirtualAuthenticator:
        """A CTAP2 platform authenticator with resident keys and user verification that answers
        every request without a gesture; ``options`` override any of those settings."""
        cdp = await context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable", {"enableUI": False})
        settings = {
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": True,
            "hasUserVerification": True,
            "isUserVerified": True,
            "automaticPresenceSimulation": True,
            **options,
        }
        added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": settings})
        return cls(cdp, added["authenticatorId"])

    async def credentials(self) -> list[Credential]:
        found = await self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})
        return [Credential.from_cdp(item) for item in found["credentials"]]

    async def add_credential(
        self, *, credential_id: bytes, rp_id: str, private_key_pkcs8: bytes, user_handle: bytes, sign_count: int = 0
    ) -> None:
        """Plant a resident credential the authenticator will offer for ``rp_id``."""
        credential = {
            "credentialId": _b64(credential_id),
            "isResidentCredential": True,
            "rpId": rp_id,
            "privateKey": _b64(private_key_pkcs8),
            "userHandle": _b64(user_handle),
            "signCount": sign_count,
        }
        await self.cdp.send("WebAuthn.addCredential", {"authenticatorId": self.id, "credential": credential})

    async def clear(self) -> None:
        await self.cdp.send("WebAuthn.clearCredentials", {"authenticatorId": self.id})

    async def remove(self) -> None:
        await self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.id})
