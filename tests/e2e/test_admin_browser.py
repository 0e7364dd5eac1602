"""An administrator at work in a real browser (Chromium), against a real `idp serve`: signs in with
a second factor, finds a user, disables them; the user's browser session has ended and their
tokens stopped working (userinfo, refresh, introspection). A screenshot of each step is kept in
test-artifacts/admin-disable/ (or $IDP_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from playwright.async_api import expect

from tests.e2e.admin_browser import artifacts, become_mfa_administrator
from tests.e2e.browser import chromium, new_page, require_chromium
from tests.e2e.server import IDP, free_port, production_env, run_idp, running
from tests.oauth_helpers import pkce_pair

# Its own server on the embedded defaults, whatever the suite's backend: CI runs it once (stage 1).
pytestmark = [pytest.mark.server, pytest.mark.embedded]

ADMIN, ADMIN_PASSWORD = "grace.hopper@example.com", "compass-harbor-violet-1906"
USER, USER_PASSWORD = "bob.builder@example.com", "granite-meadow-lantern-42"
REDIRECT = "https://rp.example/cb"


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_chromium()
    data_dir = tmp_path_factory.mktemp("admin-browser")
    port = free_port()
    env = production_env(data_dir, port)
    run_idp(env, "db", "upgrade")
    run_idp(env, "users", "create", "--email", ADMIN, "--password-stdin", "--verified", "--admin",
            "--name", "Grace", stdin=ADMIN_PASSWORD + "\n")  # fmt: skip
    run_idp(env, "users", "create", "--email", USER, "--password-stdin", "--verified", "--name", "Bob",
            stdin=USER_PASSWORD + "\n")  # fmt: skip
    client = json.loads(run_idp(env, "clients", "create", "--name", "Bob's App", "--confidential",
                                "--redirect-uri", REDIRECT, "--json"))  # fmt: skip
    with running([IDP, "serve"], env, port):
        yield {"base": env["IDP_ISSUER"], "client": client}


async def users_tokens(page: Any, base: str, client: dict[str, str]) -> dict[str, Any]:
    """The user signs in to an application (code flow with PKCE) in their own browser."""
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": REDIRECT,
        "scope": "openid profile offline_access",
        "state": "st",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "prompt": "consent",
    }
    reached: list[str] = []

    async def the_app(route: Any) -> None:
        reached.append(route.request.url)
        await route.fulfill(status=200, content_type="text/plain", body="the application")

    await page.route(f"{REDIRECT}*", the_app)
    await page.goto(f"{base}/authorize?{urlencode(query)}")
    await page.fill("input[name=email]", USER)
    await page.fill("input[name=password]", USER_PASSWORD)
    await page.click("button[type=submit]")
    if await page.locator("#consent-scopes").count():
        await page.click("button[name=decision][value=allow]")
    await page.wait_for_url(f"{REDIRECT}*")
    code = parse_qs(urlsplit(reached[-1]).query)["code"][0]
    async with httpx.AsyncClient(base_url=base) as http:
        answer = await http.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            },
            auth=(client["client_id"], client["client_secret"]),
        )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_an_administrator_disables_a_user_and_their_sessions_and_tokens_end(server: dict[str, Any]) -> None:
    base, client = server["base"], server["client"]
    shots = artifacts("admin-disable")
    async with chromium() as browser, new_page(browser) as (_, admin), new_page(browser) as (_, user):
        tokens = await users_tokens(user, base, client)
        assert "refresh_token" in tokens
        await user.goto(f"{base}/account")
        assert user.url == f"{base}/account"  # the user's browser is signed in

        # 1. The administrator signs in; the admin pages ask for a second factor first.
        await admin.goto(f"{base}/login?return_to=/admin/")
        await admin.fill("input[name=email]", ADMIN)
        await admin.fill("input[name=password]", ADMIN_PASSWORD)
        await admin.click("button[type=submit]")
        await become_mfa_administrator(admin, base, ADMIN, ADMIN_PASSWORD)
        assert await admin.locator("#sign-in-chart").count() == 1
        await admin.screenshot(path=str(shots / "1-dashboard.png"), full_page=True)

        # 2. Finds the user.
        await admin.click("#nav-users")
        await admin.fill("#q", "bob.builder")
        await admin.click("#search-submit")
        # Waits for the results page (a click starts the navigation; the table may not be there yet).
        await expect(admin.locator("#users tbody tr")).to_have_count(1)
        await admin.screenshot(path=str(shots / "2-search.png"), full_page=True)
        await admin.click(f"#users a:has-text('{USER}')")
        await expect(admin.locator("#user-status")).to_have_text(re.compile(r"^\s*active"))
        await expect(admin.locator("#user-sessions tbody tr")).to_have_count(1)
        await admin.screenshot(path=str(shots / "3-user.png"), full_page=True)

        # 3. Disables them, after confirming.
        await admin.click("#action-disable")
        assert "Disable this account?" in (await admin.text_content("h1") or "")
        await admin.screenshot(path=str(shots / "4-confirm.png"), full_page=True)
        await admin.click("#confirm-submit")
        await expect(admin.locator("#notice")).to_contain_text("is disabled")
        assert (await admin.text_content("#user-status") or "").startswith("disabled")
        assert await admin.locator("#user-sessions").count() == 0
        await admin.screenshot(path=str(shots / "5-disabled.png"), full_page=True)

        # The user's browser session ended...
        await user.goto(f"{base}/account")
        assert user.url.startswith(f"{base}/login"), user.url
        await user.screenshot(path=str(shots / "6-user-signed-out.png"), full_page=True)

    # ...and their tokens stopped working.
    async with httpx.AsyncClient(base_url=base) as http:
        userinfo = await http.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert userinfo.status_code == 401 and 'error="invalid_token"' in userinfo.headers["WWW-Authenticate"]
        refreshed = await http.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            auth=(client["client_id"], client["client_secret"]),
        )
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
        introspected = await http.post(
            "/introspect", data={"token": tokens["access_token"]}, auth=(client["client_id"], client["client_secret"])
        )
        assert introspected.json() == {"active": False}
    assert sorted(path.name for path in shots.iterdir()) == [
        "1-dashboard.png",
        "2-search.png",
        "3-user.png",
        "4-confirm.png",
        "5-disabled.png",
        "6-user-signed-out.png",
    ]
