"""The demo SPA (clients/demo_spa/) in a real browser (Chromium) against a real `idp serve`
(production settings, SQLite, mail over SMTP to a test server), the SPA served on its own origin
by ``idp.demo.serve_spa`` with its CSP.

The journey keeps a screenshot of each step in test-artifacts/spa-journey/ (or $IDP_TEST_ARTIFACTS).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from PIL import Image
from playwright.async_api import Page

from tests.e2e.admin_browser import artifacts
from tests.e2e.browser import chromium, new_page, require_chromium
from tests.e2e.spa_browser import (
    SIGNED_OUT_HEADING,
    Stack,
    enrol_totp_on_idp,
    fill_password_login,
    mail_link,
    running_stack,
    spa_signed_in,
    stored_tokens,
)

pytestmark = pytest.mark.server

JOURNEY_EMAIL, JOURNEY_PASSWORD = "marie.curie@example.com", "polonium-harbor-velvet-1898"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_chromium()
    with running_stack(tmp_path_factory.mktemp("demo-spa")) as running:
        yield running


def small_png(path: Path) -> Path:
    Image.new("RGB", (64, 64), (200, 40, 90)).save(path, format="PNG")
    return path


async def sign_up_from_the_spa(page: Page, stack: Stack, email: str, password: str) -> None:
    """From the SPA's start page to the IdP's "Check your email" (prompt=create)."""
    await page.goto(stack.spa + "/")
    await page.click("[data-action=sign-up]")
    await page.wait_for_url(f"{stack.issuer}/register*")
    await page.fill("#email", email)
    await page.fill("#password", password)
    await page.click("#register-submit")
    assert (await page.text_content("#message-title") or "").strip() == "Check your email"


async def test_the_journey_from_sign_up_to_a_session_ended_elsewhere(stack: Stack, tmp_path: Path) -> None:
    issuer, spa = stack.issuer, stack.spa
    shots = artifacts("spa-journey")
    for old in shots.glob("*.png"):
        old.unlink()
    steps: list[str] = []

    async def shot(page_: object, name: str) -> None:
        await page_.screenshot(path=str(shots / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]
        steps.append(f"{name}.png")

    async with chromium() as browser, new_page(browser) as (_, page):
        # 1. Sign up from the SPA: the IdP's registration (prompt=create).
        await page.goto(spa + "/")
        await page.locator("main h1", has_text=SIGNED_OUT_HEADING).wait_for()
        await shot(page, "01-signed-out")
        await page.click("[data-action=sign-up]")
        await page.wait_for_url(f"{issuer}/register*")
        await page.fill("#name", "Marie")
        await page.fill("#email", JOURNEY_EMAIL)
        await page.fill("#password", JOURNEY_PASSWORD)
        await shot(page, "02-register")
        await page.click("#register-submit")
        assert (await page.text_content("#message-title") or "").strip() == "Check your email"
        await shot(page, "03-check-your-email")

        # 2. The verification mail; its link opened in the same browser and confirmed. That signs
        # this browser in to the IdP. (Confirming does not carry on to the SPA by itself: see
        # test_confirming_the_address_carries_on_to_the_spa.)
        link = await mail_link(stack.smtp, JOURNEY_EMAIL, "/verify-email")
        assert link.startswith(f"{issuer}/verify-email?token="), link
        await page.goto(link)
        await shot(page, "04-confirm-email")
        async with page.expect_response(f"{issuer}/verify-email") as answer:
            await page.click("#email-submit")
        confirmed = await answer.value
        assert (confirmed.request.method, confirmed.status) == ("POST", 303)

        # 3. Signed in from the SPA: the IdP's session answers at once (a first-party client: no consent).
        await page.goto(spa + "/")
        await page.click("[data-action=sign-in]")
        await spa_signed_in(page, spa)
        tokens = await stored_tokens(page)
        assert tokens is not None and tokens["refresh_token"] and tokens["claims"]["sid"]
        await shot(page, "05-signed-in")

        # 4. The profile's name, edited in the SPA.
        await page.fill("#profile-name", "Marie Skłodowska Curie")
        await page.click("#profile-form button[type=submit]")
        await page.locator("#toasts", has_text="Your profile was saved.").wait_for()
        await page.reload()
        await page.locator("main .lead strong", has_text="Marie Skłodowska Curie").wait_for()
        await shot(page, "06-profile-saved")

        # 5. A picture, uploaded from the SPA (previewed first), then shown from the IdP.
        await page.set_input_files("#picture-picture", small_png(tmp_path / "me.png"))
        await page.locator("#picture-preview").wait_for()
        await page.click("#picture-form button[type=submit]")
        await page.locator("#toasts", has_text="Your picture was updated.").wait_for()
        current = page.locator("#picture-current")
        await current.wait_for()
        assert (await current.get_attribute("src") or "").startswith(f"{issuer}/pictures/")
        await page.wait_for_function("document.querySelector('#picture-current').naturalWidth > 0")
        await shot(page, "07-picture")

        # 6. An authenticator app, turned on at the IdP (the SPA links there).
        await page.click("#nav a[href='/security']")
        await page.locator("main h1", has_text="Security").wait_for()
        await page.click(f"main a[href='{issuer}/account/security']")
        await page.wait_for_url(f"{issuer}/account/security")
        secret, codes = await enrol_totp_on_idp(page, issuer, JOURNEY_PASSWORD)
        await shot(page, "08-totp-on")
        await page.goto(spa + "/security")
        await page.locator("main .facts li", has_text="Authenticator app: on").wait_for()
        await shot(page, "09-spa-security")

        # 7. Signed out in the SPA (and at the IdP), then in again with the password and a code.
        await page.click("#nav [data-action=sign-out]")
        await page.wait_for_url(spa + "/")
        await page.locator("main h1", has_text=SIGNED_OUT_HEADING).wait_for()
        assert await stored_tokens(page) is None
        await shot(page, "10-signed-out")
        await page.click("[data-action=sign-in]")
        await page.wait_for_url(f"{issuer}/login*")
        await fill_password_login(page, JOURNEY_EMAIL, JOURNEY_PASSWORD)
        await page.wait_for_url(f"{issuer}/login/mfa*")
        # The enrolment spent this step's code (a code is good once); the server accepts one step
        # of drift, so the next step's code is good now.
        await page.fill("#code", pyotp.TOTP(secret).at(time.time() + 30))
        await shot(page, "11-second-factor")
        await page.click("#totp-submit")
        await spa_signed_in(page, spa)
        tokens = await stored_tokens(page)
        assert tokens is not None
        sid = tokens["claims"]["sid"]
        await shot(page, "12-signed-in-again")

        # 8. In another browser, the same person ends the first browser's session at the IdP; the
        # SPA hears it on its notification socket and shows itself signed out.
        async with new_page(browser) as (_, other):
            await other.goto(f"{issuer}/login?return_to=/account/sessions")
            await fill_password_login(other, JOURNEY_EMAIL, JOURNEY_PASSWORD)
            await other.wait_for_url(f"{issuer}/login/mfa*")
            await other.goto(f"{issuer}/login/mfa?method=recovery_code")
            await other.fill("#recovery-code", codes[0])
            await other.click("#recovery-submit")
            await other.wait_for_url(f"{issuer}/account/sessions")
            await other.click(f"#sessions li[data-session-id='{sid}'] a.end-session")
            await other.locator("#confirm-form").wait_for()
            if await other.locator("#confirm-form #password").count():
                await other.fill("#confirm-form #password", JOURNEY_PASSWORD)
            await shot(other, "13-other-browser-confirm")
            started = time.monotonic()
            await other.click("#confirm-submit")
            await page.locator("main h1", has_text=SIGNED_OUT_HEADING).wait_for(timeout=2_000)
            await page.locator("main .notice", has_text="Your session was ended").wait_for(timeout=2_000)
            elapsed = time.monotonic() - started
            print(f"session ended elsewhere -> SPA signed out: {elapsed:.3f} s")
            assert elapsed < 2.0, f"the SPA showed itself signed out {elapsed:.2f} s after the session ended"
            assert await stored_tokens(page) is None
            await shot(other, "14-other-browser-ended")
        await shot(page, "15-spa-signed-out-by-notification")

    assert sorted(path.name for path in shots.iterdir()) == sorted(steps)
    assert len(steps) == 15


@pytest.mark.xfail(
    strict=True,
    reason="server: GET /verify-email sends form-action 'self', and Chromium applies it to the redirects "
    "after the POST (303 to /authorize/resume/..., then the SPA's /callback), so the confirmation stops "
    "at the IdP instead of carrying on to the application that asked for the registration",
)
async def test_confirming_the_address_carries_on_to_the_spa(stack: Stack) -> None:
    email = "lise.meitner@example.com"
    async with chromium() as browser, new_page(browser) as (_, page):
        await sign_up_from_the_spa(page, stack, email, JOURNEY_PASSWORD)
        await page.goto(await mail_link(stack.smtp, email, "/verify-email"))
        await page.click("#email-submit")
        await page.wait_for_url(f"{stack.spa}/profile", timeout=3_000)
