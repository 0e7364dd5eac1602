"""The demo SPA (clients/demo_spa/) in a real browser (Chromium) against a real `idp serve`
(production settings, SQLite, mail over SMTP to a test server), the SPA served on its own origin
by ``idp.demo.serve_spa`` with its CSP: the journey from sign-up to a session ended from another
browser (heard on the notification socket), two tabs sharing one refresh, server data rendered as
text, axe-core's WCAG 2.2 AA rules on every view at two widths, and the CSP with Trusted Types.

The journey keeps a screenshot of each step in test-artifacts/spa-journey/ (or $IDP_TEST_ARTIFACTS).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from axe_playwright_python.async_playwright import Axe
from PIL import Image
from playwright.async_api import Page, Request, Route

from tests.e2e.admin_browser import artifacts
from tests.e2e.browser import TIMEOUT_MS, chromium, new_page, require_chromium
from tests.e2e.spa_browser import (
    SIGNED_OUT_HEADING,
    Stack,
    enrol_totp_on_idp,
    fill_password_login,
    mail_link,
    running_stack,
    sign_in_spa,
    spa_signed_in,
    stored_tokens,
)

# Its own server on the embedded defaults, whatever the suite's backend: CI runs it once (stage 1).
pytestmark = [pytest.mark.server, pytest.mark.embedded]

JOURNEY_EMAIL, JOURNEY_PASSWORD = "marie.curie@example.com", "polonium-harbor-velvet-1898"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_chromium()
    with running_stack(tmp_path_factory.mktemp("demo-spa")) as running:
        yield running


def small_png(path: Path) -> Path:
    Image.new("RGB", (64, 64), (200, 40, 90)).save(path, format="PNG")
    return path


async def test_the_journey_from_sign_up_to_a_session_ended_elsewhere(stack: Stack, tmp_path: Path) -> None:
    issuer, spa = stack.issuer, stack.spa
    shots = artifacts("spa-journey")
    for old in shots.glob("*.png"):
        old.unlink()
    steps: list[str] = []

    async def shot(tab: Page, name: str) -> None:
        await tab.screenshot(path=str(shots / f"{name}.png"), full_page=True)
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

        # 2. The verification mail; its link opened in the same browser and confirmed: that signs
        # the browser in and carries on with the SPA's authorization request (a first-party
        # client: no consent), back to the SPA signed in.
        link = await mail_link(stack.smtp, JOURNEY_EMAIL, "/verify-email")
        assert link.startswith(f"{issuer}/verify-email?token="), link
        await page.goto(link)
        await shot(page, "04-confirm-email")
        await page.click("#email-submit")
        await spa_signed_in(page, spa)
        tokens = await stored_tokens(page)
        assert tokens is not None and tokens["refresh_token"] and tokens["claims"]["sid"]
        await shot(page, "05-signed-in")

        # 3. The profile's name, edited in the SPA.
        await page.fill("#profile-name", "Marie Skłodowska Curie")
        await page.click("#profile-form button[type=submit]")
        await page.locator("#toasts", has_text="Your profile was saved.").wait_for()
        await page.reload()
        await page.locator("main .lead strong", has_text="Marie Skłodowska Curie").wait_for()
        await shot(page, "06-profile-saved")

        # 4. A picture, uploaded from the SPA (previewed first), then shown from the IdP.
        await page.set_input_files("#picture-picture", small_png(tmp_path / "me.png"))
        await page.locator("#picture-preview").wait_for()
        await page.click("#picture-form button[type=submit]")
        await page.locator("#toasts", has_text="Your picture was updated.").wait_for()
        current = page.locator("#picture-current")
        await current.wait_for()
        assert (await current.get_attribute("src") or "").startswith(f"{issuer}/pictures/")
        await page.wait_for_function("() => document.querySelector('#picture-current').naturalWidth > 0")
        await shot(page, "07-picture")

        # 5. An authenticator app, turned on at the IdP (the SPA links there).
        await page.click("#nav a[href='/security']")
        await page.locator("main h1", has_text="Security").wait_for()
        await page.click(f"main a[href='{issuer}/account/security']")
        await page.wait_for_url(f"{issuer}/account/security")
        secret, codes = await enrol_totp_on_idp(page, issuer, JOURNEY_PASSWORD)
        await shot(page, "08-totp-on")
        await page.goto(spa + "/security")
        await page.locator("main .facts li", has_text="Authenticator app: on").wait_for()
        await shot(page, "09-spa-security")

        # 6. Signed out in the SPA (and at the IdP), then in again with the password and a code.
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
        # The notification socket is up (it says so on the notifications page).
        await page.click("#nav a[href='/notifications']")
        await page.locator("main .lead strong", has_text="Live").wait_for()
        await shot(page, "12-signed-in-again")

        # 7. In another browser, the same person ends the first browser's session at the IdP; the
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
            assert "The session was ended" in (await other.text_content("#sessions-notice") or "")
            assert await other.locator(f"#sessions li[data-session-id='{sid}']").count() == 0
            await shot(other, "14-other-browser-ended")
        await shot(page, "15-spa-signed-out-by-notification")

    assert sorted(path.name for path in shots.iterdir()) == sorted(steps)
    assert len(steps) == 15


# -- two tabs, one refresh ------------------------------------------------------------------------

# The stored record made due for refresh: a 600 s lifetime with 30 s left (refreshAt is 60 s before
# expiry), so the next call for an access token in either tab refreshes.
MAKE_DUE = """() => {
  const record = JSON.parse(localStorage.getItem("idp-spa.tokens"));
  record.issued_at = Date.now() - 570_000;
  record.expires_at = Date.now() + 30_000;
  localStorage.setItem("idp-spa.tokens", JSON.stringify(record));
}"""


async def test_two_tabs_whose_tokens_are_due_make_one_refresh_and_both_use_it(stack: Stack) -> None:
    email, password = "rosalind.franklin@example.com", "helix-lantern-orchard-1952"
    stack.create_user(email, password, "Rosalind")
    refreshes: list[str] = []  # which tab asked
    tabs: list[Page] = []
    bearer: dict[str, set[str]] = {"first": set(), "second": set()}

    async def slow_token_endpoint(route: Route) -> None:
        # Held for a moment so that the second tab asks while the first tab's refresh is in flight.
        if "grant_type=refresh_token" in (route.request.post_data or ""):
            refreshes.append("first" if route.request.frame.page == tabs[0] else "second")
            await asyncio.sleep(0.5)
        await route.continue_()

    def watch(page: Page, name: str) -> None:
        def seen(request: Request) -> None:
            authorization = request.headers.get("authorization", "")
            if request.url.startswith(f"{stack.issuer}/api/account/") and authorization.startswith("Bearer "):
                bearer[name].add(authorization.removeprefix("Bearer "))

        page.on("request", seen)

    async with chromium() as browser, new_page(browser) as (context, first):
        await sign_in_spa(first, stack, email, password)
        second = await context.new_page()
        tabs += [first, second]
        await second.goto(stack.spa + "/profile")
        await second.locator("main h1", has_text="Profile").wait_for()
        before = await stored_tokens(first)
        assert before is not None and before == await stored_tokens(second)

        await context.route(f"{stack.issuer}/token", slow_token_endpoint)
        await first.evaluate(MAKE_DUE)
        watch(first, "first"), watch(second, "second")
        # Both tabs open a page of the app at once: four calls for an access token (two per view),
        # all finding it due.
        await asyncio.gather(first.click("#nav a[href='/security']"), second.click("#nav a[href='/security']"))
        # Each tab shows the view, or is signed out (a reused refresh token revokes the grant).
        settled = "(headings) => headings.includes(document.querySelector('main h1')?.textContent)"
        for page in (first, second):
            await page.wait_for_function(settled, arg=["Security", SIGNED_OUT_HEADING])
        assert len(refreshes) == 1, refreshes
        for page in (first, second):
            await page.locator("#h-sessions").wait_for()

        after_first, after_second = await stored_tokens(first), await stored_tokens(second)
        assert after_first is not None and after_first == after_second
        assert after_first["access_token"] != before["access_token"]
        assert after_first["refresh_token"] != before["refresh_token"]  # rotated
        # Every account API call of both tabs carried the new access token, none the old one.
        assert bearer == {"first": {after_first["access_token"]}, "second": {after_first["access_token"]}}
        # The grant lives on (a reused refresh token would have revoked it): a reload still works.
        await second.reload()
        await second.locator("#h-sessions").wait_for()
        assert len(refreshes) == 1, refreshes


# -- server data is text --------------------------------------------------------------------------

MARKUP = '<img src=x onerror="window.__pwned=1">'
HOSTILE_AGENT = (
    f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) {MARKUP} Chrome/120.0.0.0 Safari/537.36"
)


async def assert_inert(page: Page) -> None:
    assert await page.locator("img[src='x']").count() == 0
    assert await page.evaluate("typeof window.__pwned") == "undefined"


async def test_markup_from_the_server_is_shown_as_text(stack: Stack) -> None:
    email, password = "hedy.lamarr@example.com", "torpedo-violet-compass-1942"
    stack.create_user(email, password, "Hedy")
    async with chromium() as browser:
        context = await browser.new_context(user_agent=HOSTILE_AGENT)
        try:
            context.set_default_timeout(TIMEOUT_MS)
            page = await context.new_page()
            # The IdP's session (and the sign-in event) has the crafted User-Agent.
            await sign_in_spa(page, stack, email, password)
            tokens = await stored_tokens(page)
            assert tokens is not None
            async with httpx.AsyncClient(base_url=stack.issuer, headers={"User-Agent": HOSTILE_AGENT}) as http:
                answer = await http.patch(
                    "/api/account/profile",
                    json={"name": MARKUP, "preferred_username": MARKUP},
                    headers={"Authorization": f"Bearer {tokens['access_token']}"},
                )
            assert answer.status_code == 200, answer.text
            assert answer.json()["name"] == MARKUP

            await page.reload()
            await page.locator("main h1", has_text="Profile").wait_for()
            assert await page.text_content("main .lead strong") == MARKUP
            assert await page.input_value("#profile-name") == MARKUP
            assert await page.input_value("#profile-preferred_username") == MARKUP
            await assert_inert(page)

            await page.click("#nav a[href='/activity']")
            await page.locator("main h1", has_text="Activity").wait_for()
            agents = await page.locator("#activity-list p.small").all_text_contents()
            assert HOSTILE_AGENT in agents, agents
            await assert_inert(page)

            await page.click("#nav a[href='/security']")
            await page.locator("#h-sessions").wait_for()
            # The IdP labels a device from the parsed User-Agent, so no markup reaches the label;
            # whatever it is, it is the text of the row.
            [session] = await stack_sessions(stack, tokens["access_token"])
            device = page.locator("main .rows .row-main strong").first
            assert await device.text_content() == session["device"]
            await assert_inert(page)

            await page.click("#nav a[href='/notifications']")
            await page.locator("main h1", has_text="Notifications").wait_for()
            await assert_inert(page)
        finally:
            await context.close()


async def stack_sessions(stack: Stack, access_token: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=stack.issuer) as http:
        answer = await http.get("/api/account/sessions", headers={"Authorization": f"Bearer {access_token}"})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["sessions"])


# -- accessibility --------------------------------------------------------------------------------

WIDTHS = (1280, 375)
WCAG_22_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": WCAG_22_AA}, "resultTypes": ["violations"]}
VIEWS = {"/profile": "Profile", "/security": "Security", "/activity": "Activity",
         "/notifications": "Notifications", "/data": "Your data"}  # fmt: skip


async def axe_findings(page: Page, axe: Axe, label: str, found: dict[str, Any]) -> None:
    results = await axe.run(page, options=AXE_OPTIONS)
    violations = [f"{item['id']}: {item['nodes'][0]['target']}" for item in results.response["violations"]]
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if violations or overflow > 0:
        found[label] = {"violations": violations, "overflow_px": overflow}


async def test_every_view_passes_axe_and_fits_a_phone(stack: Stack) -> None:
    email, password = "grace.murray@example.com", "cobol-harbor-meadow-1906"
    stack.create_user(email, password, "Grace")
    axe, found, checked = Axe(), {}, []
    async with chromium() as browser, new_page(browser) as (_, page):
        for width in WIDTHS:
            await page.set_viewport_size({"width": width, "height": 900})
            await page.goto(stack.spa + "/")
            await page.locator("main h1", has_text=SIGNED_OUT_HEADING).wait_for()
            await axe_findings(page, axe, f"signed out at {width}px", found)
            checked.append(f"/ {width}")
        await sign_in_spa(page, stack, email, password)
        for path, title in VIEWS.items():
            for width in WIDTHS:
                await page.set_viewport_size({"width": width, "height": 900})
                await page.goto(stack.spa + path)
                await page.locator("main h1", has_text=title).wait_for()
                await page.locator("main:not([aria-busy])").wait_for()
                await axe_findings(page, axe, f"{path} at {width}px", found)
                checked.append(f"{path} {width}")
        # The app's one dialog that opens without a server error first: deleting the account.
        for width in WIDTHS:
            await page.set_viewport_size({"width": width, "height": 900})
            await page.goto(stack.spa + "/data")
            await page.click("[data-action=delete]")
            await page.locator("#delete-dialog[open]").wait_for()
            await axe_findings(page, axe, f"/data with the deletion dialog open at {width}px", found)
            checked.append(f"/data dialog {width}")
    assert len(checked) == 2 * (2 + len(VIEWS))
    assert found == {}, json.dumps(found, indent=2)


# -- the CSP --------------------------------------------------------------------------------------


async def test_the_csp_is_sent_and_trusted_types_are_enforced(stack: Stack) -> None:
    async with chromium() as browser, new_page(browser) as (_, page):
        answer = await page.goto(stack.spa + "/")
        assert answer is not None and answer.ok
        policy = (await answer.all_headers())["content-security-policy"]
        directives = {part.strip().split(" ", 1)[0]: part.strip() for part in policy.split(";")}
        assert directives["script-src"] == "script-src 'self'"
        assert directives["require-trusted-types-for"] == "require-trusted-types-for 'script'"
        assert directives["trusted-types"] == "trusted-types idp-spa"
        assert f"connect-src 'self' {stack.issuer}" in directives["connect-src"]
        await page.locator("main h1", has_text=SIGNED_OUT_HEADING).wait_for()  # the app runs under it

        outcome = await page.evaluate("""() => {
          try {
            document.body.innerHTML = "<b>x</b>";
            return "assigned";
          } catch (error) {
            return `${error.constructor.name}: ${error.message}`;
          }
        }""")
        assert outcome.startswith("TypeError: "), outcome
        assert "TrustedHTML" in outcome, outcome
        assert await page.locator("b", has_text="x").count() == 0
        assert await page.locator("main h1", has_text=SIGNED_OUT_HEADING).count() == 1  # the page is untouched
        # No second policy can be made: the CSP names only the app's.
        other = await page.evaluate("""() => {
          try {
            trustedTypes.createPolicy("attacker", { createHTML: (s) => s });
            return "created";
          } catch (error) {
            return error.constructor.name;
          }
        }""")
        assert other == "TypeError"
