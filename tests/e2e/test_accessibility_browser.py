"""Every server-rendered page in a real browser: axe-core's WCAG 2.2 A and AA rules find nothing,
and no page scrolls sideways, at 1280 px and on a 375 px wide phone.

The pages are not listed by hand: every GET route of the application without URL parameters is
visited signed out and signed in, and each answer that is an HTML page is checked, so a new page
is covered the day it is added. The consent page, reached only through an authorization request,
is visited through one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page

from idp import create_app
from idp.config import load_settings
from tests.e2e.admin_browser import become_mfa_administrator
from tests.e2e.browser import chromium, new_page, require_chromium
from tests.e2e.server import IDP, free_port, production_env, run_idp, running
from tests.oauth_helpers import pkce_pair

# Its own server on the embedded defaults, whatever the suite's backend: CI runs it once (stage 1).
pytestmark = [pytest.mark.server, pytest.mark.embedded]

EMAIL = "ada.lovelace@example.com"
PASSWORD = "orchid-lantern-velvet-5150"
WIDTHS = (1280, 375)
WCAG_22_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": WCAG_22_AA}, "resultTypes": ["violations"]}
# Routes that are not pages for a person: protocol and API endpoints, files, redirects.
NOT_PAGES = ("/api/", "/.well-known/", "/static/", "/pictures/", "/ws/")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_chromium()
    data_dir = tmp_path_factory.mktemp("a11y")
    port = free_port()
    env = production_env(data_dir, port)
    run_idp(env, "db", "upgrade")
    run_idp(env, "users", "create", "--email", EMAIL, "--password-stdin", "--verified", "--name", "Ada",
            "--admin", stdin=PASSWORD + "\n")  # fmt: skip
    client = run_idp(env, "clients", "create", "--name", "Third Party App", "--confidential",
                     "--redirect-uri", "https://rp.example/cb", "--json")  # fmt: skip
    with running([IDP, "serve"], env, port):
        [ada] = json.loads(run_idp(env, "users", "list", "--json"))["users"]
        yield {
            "base": env["IDP_ISSUER"],
            "env": env,
            "client_id": json.loads(client)["client_id"],
            "user_id": ada["id"],
        }


def page_paths(env: dict[str, str]) -> list[str]:
    """Every GET route without URL parameters, from the application's own URL map."""
    app = create_app(load_settings(environ=env))
    paths = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if "GET" in (rule.methods or ())
        and not rule.arguments
        and (rule.rule == "/api/docs" or not rule.rule.startswith(NOT_PAGES))
    }
    return sorted(paths)


def admin_paths(env: dict[str, str], samples: dict[str, str]) -> list[str]:
    """Every GET route of the admin pages, URL parameters filled with ``samples`` (a route with a
    parameter that has none, a session id, is left out)."""
    app = create_app(load_settings(environ=env))
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("admin.") and "GET" in (rule.methods or ()) and rule.arguments <= set(samples):
            found.append(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda match: samples[match.group(1)], rule.rule))
    return sorted(found)


async def check(page: Page, axe: Axe, url: str, found: dict[str, Any]) -> bool:
    """Check ``url`` at each width when it is an HTML page; whether it was one."""
    answer = await page.request.get(url, max_redirects=0)
    if answer.status in (301, 302, 303, 307, 308) or "text/html" not in answer.headers.get("content-type", ""):
        return False
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        await page.goto(url)
        results = await axe.run(page, options=AXE_OPTIONS)
        violations = [f"{item['id']}: {item['nodes'][0]['target']}" for item in results.response["violations"]]
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if violations or overflow > 0:
            found[f"{url} at {width}px"] = {"violations": violations, "overflow_px": overflow}
    return True


async def sign_in(page: Page, base: str) -> None:
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(f"{base}/login")
    await page.fill("input[name=email]", EMAIL)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/account")


async def test_every_page_passes_axe_and_fits_a_phone(server: dict[str, Any], tmp_path: Path) -> None:
    base, axe = server["base"], Axe()
    paths = page_paths(server["env"])
    found: dict[str, Any] = {}
    checked: list[str] = []
    async with chromium() as browser, new_page(browser) as (_, page):
        for path in paths:
            if await check(page, axe, base + path, found):
                checked.append(f"signed out {path}")
        await sign_in(page, base)
        for path in paths:
            if path in ("/logout",):
                continue  # would end the session the rest of the walk needs; checked last
            if await check(page, axe, base + path, found):
                checked.append(f"signed in {path}")
        # The admin pages, as an administrator who signed in with a second factor (the walk above
        # was sent to set one up); every page, with the account and a client as samples.
        await become_mfa_administrator(page, base, EMAIL, PASSWORD)
        samples = {"user_id": server["user_id"], "client_id": server["client_id"]}
        for path in admin_paths(server["env"], samples):
            if await check(page, axe, base + path, found):
                checked.append(f"admin {path}")
        _, challenge = pkce_pair()
        query = {
            "response_type": "code",
            "client_id": server["client_id"],
            "redirect_uri": "https://rp.example/cb",
            "scope": "openid profile",
            "state": "s",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        await page.goto(f"{base}/authorize?{urlencode(query)}")
        assert await page.locator("#consent-scopes").count() == 1
        for width in WIDTHS:
            await page.set_viewport_size({"width": width, "height": 900})
            results = await axe.run(page, options=AXE_OPTIONS)
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            problems = [item["id"] for item in results.response["violations"]]
            if problems or overflow > 0:
                found[f"consent at {width}px"] = {"violations": problems, "overflow_px": overflow}
            await page.screenshot(path=str(tmp_path / f"consent-{width}.png"))
        checked.append("consent")
        if await check(page, axe, f"{base}/logout", found):
            checked.append("signed in /logout")
    # The walk reached the pages it must have: a regression in the walk itself would pass silently.
    expected_pages = (
        "signed out /api/docs",
        "signed out /login",
        "signed out /register",
        "signed in /account",
        "signed in /account/activity",
        "signed in /account/security",
        "signed in /account/sessions",
        "consent",
        "admin /admin/",
        "admin /admin/users",
        f"admin /admin/users/{server['user_id']}",
        f"admin /admin/users/{server['user_id']}/delete",
        "admin /admin/clients/new",
        f"admin /admin/clients/{server['client_id']}/edit",
        "admin /admin/keys",
        "admin /admin/audit",
    )
    for expected in expected_pages:
        assert expected in checked, checked
    print("\n".join(checked))
    assert found == {}
