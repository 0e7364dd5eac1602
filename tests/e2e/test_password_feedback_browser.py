"""The sign-up and password forms judge what is typed before it is sent (static/password_check.js),
in Chromium against a real `idp serve`: a too-short, a common and a good password each get their
verdict while typing, tied to the field for assistive technology; and with JavaScript off the same
page still signs up, the server giving the verdicts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.async_api import expect

from tests.e2e.browser import TIMEOUT_MS, chromium, new_page, require_chromium
from tests.e2e.server import IDP, free_port, production_env, run_idp, running

# Its own server on the embedded defaults, whatever the suite's backend: CI runs it once (stage 1).
pytestmark = [pytest.mark.server, pytest.mark.embedded]

GOOD = "copper-walrus-violin-tundra"


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    require_chromium()
    port = free_port()
    env = production_env(tmp_path_factory.mktemp("feedback"), port)
    run_idp(env, "db", "upgrade")
    with running([IDP, "serve"], env, port):
        yield env


@pytest.fixture(scope="module")
def base(server_env: dict[str, str]) -> str:
    return server_env["IDP_ISSUER"]


async def test_each_verdict_shows_while_typing(base: str) -> None:
    async with chromium() as browser, new_page(browser) as (_, page):
        await page.goto(f"{base}/register")
        password, verdict = page.locator("#password"), page.locator("#password-verdict")
        await expect(password).to_have_attribute("aria-describedby", "password-rules password-verdict")

        await page.fill("#email", "ada@example.com")
        await password.press_sequentially("short phrase")
        await expect(verdict).to_contain_text("Use at least 15 characters", timeout=TIMEOUT_MS)
        await expect(password).to_have_attribute("aria-invalid", "true")

        await password.fill("")
        await password.press_sequentially("passwordstandard")
        await expect(verdict).to_contain_text("commonly used or leaked")
        await expect(password).to_have_attribute("aria-invalid", "true")

        await password.fill("")
        await password.press_sequentially(GOOD)
        await expect(verdict).to_have_text("This password can be used.")
        await expect(password).not_to_have_attribute("aria-invalid", "true")

        await page.fill("#email", "not-an-address")
        await page.locator("#name").focus()  # leaving the field judges it
        await expect(page.locator("#email-verdict")).to_contain_text("name@example.com")
        await expect(page.locator("#email")).to_have_attribute("aria-invalid", "true")
        assert page.url == f"{base}/register"  # all of it before anything was submitted


async def test_without_javascript_the_server_judges_and_the_form_works(base: str) -> None:
    async with chromium() as browser:
        context = await browser.new_context(java_script_enabled=False)
        try:
            context.set_default_timeout(TIMEOUT_MS)
            page = await context.new_page()
            await page.goto(f"{base}/register")
            await page.fill("#email", "grace@example.com")
            await page.fill("#password", "short phrase")
            await page.click("#register-submit")
            await expect(page.locator("#register-errors")).to_contain_text("at least 15 characters")
            await expect(page.locator("#password-verdict")).to_have_text("")  # no script ran

            await page.fill("#password", GOOD)
            await page.click("#register-submit")
            await expect(page.locator("h1")).to_have_text("Check your email")
        finally:
            await context.close()


async def test_the_change_form_judges_against_the_signed_in_account(base: str, server_env: dict[str, str]) -> None:
    run_idp(server_env, "users", "create", "--email", "hedy@example.com", "--password-stdin", "--verified",
            "--name", "Hedy Lamarr", stdin=GOOD + "\n")  # fmt: skip
    async with chromium() as browser, new_page(browser) as (_, page):
        await page.goto(f"{base}/login")
        await page.fill("input[name=email]", "hedy@example.com")
        await page.fill("input[name=password]", GOOD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{base}/account")
        await page.goto(f"{base}/account/password")
        await page.locator("#new_password").press_sequentially("hedy-lamarr-invents-radio")
        await expect(page.locator("#password-verdict")).to_contain_text("your name")
        await expect(page.locator("#new_password")).to_have_attribute("aria-invalid", "true")
