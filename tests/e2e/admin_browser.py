"""Becoming an administrator who signed in with a second factor, in a real browser: an
authenticator app set up on the security page (the key read from the page, the code computed as
an app would), then a sign-in with the password and one of the recovery codes the page showed
(a recovery code is a second factor too, and needs no wait for the next TOTP step)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlencode

import pyotp
from playwright.async_api import Page

ARTIFACTS = Path(os.environ.get("IDP_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts")


def artifacts(name: str) -> Path:
    """Where a browser test keeps its screenshots (``IDP_TEST_ARTIFACTS``, default test-artifacts/)."""
    directory = ARTIFACTS / name
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def enrol_totp(page: Page, base: str, password: str) -> list[str]:
    """Set up an authenticator app for the signed-in account; its recovery codes."""
    await page.goto(f"{base}/account/security")
    await page.fill("#totp-password", password)
    await page.click("#totp-start")
    secret = (await page.text_content("#totp-secret") or "").strip()
    await page.fill("#code", pyotp.TOTP(secret).now())
    await page.click("#totp-confirm")
    codes = [code.strip() for code in await page.locator("#recovery-codes li").all_text_contents()]
    assert len(codes) >= 5, "no recovery codes shown after turning the authenticator app on"
    return codes


async def sign_in_with_recovery_code(
    page: Page, base: str, email: str, password: str, code: str, return_to: str
) -> None:
    await page.goto(f"{base}/login?{urlencode({'return_to': return_to})}")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/login/mfa")
    await page.goto(f"{base}/login/mfa?method=recovery_code")
    await page.fill("#recovery-code", code)
    await page.click("#recovery-submit")
    await page.wait_for_url(f"{base}{return_to}")


async def become_mfa_administrator(page: Page, base: str, email: str, password: str) -> None:
    """The signed-in administrator sets up a second factor (the admin pages send them to) and
    signs in again with it; the browser is then on the dashboard."""
    await page.goto(f"{base}/admin/")
    assert page.url == f"{base}/account/security?notice=admin-needs-mfa", page.url
    codes = await enrol_totp(page, base, password)
    await page.goto(f"{base}/admin/")
    assert page.url.startswith(f"{base}/login?"), page.url  # signed in without the new factor
    await sign_in_with_recovery_code(page, base, email, password, codes[0], "/admin/")
