"""The Content-Security-Policy on real responses: scripts only with the response's nonce, and
form-action 'self' except on pages whose forms end, through redirects, at a client."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from tests.mfa_helpers import enable_totp, text
from tests.oauth_helpers import WEB_REDIRECT, World, add_user, authorization_url, authorize, csrf_from, login


def directives(response: Any) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    parsed: dict[str, str] = {}
    for part in policy.split(";"):
        name, _, value = part.strip().partition(" ")
        assert name not in parsed, f"{name} twice in {policy}"
        parsed[name] = value
    return parsed


def script_nonces(html: str) -> set[str]:
    return set(re.findall(r'<script nonce="([^"]+)"', html))


async def start_authorization(client: Any, world: World) -> str:
    """GET /authorize without a session; the login page URL it sends the browser to."""
    response = await client.get(authorization_url(world.web_id, WEB_REDIRECT))
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.startswith("/login?return_to=%2Fauthorize%2Fresume%2F")
    return str(location)


async def test_a_page_with_a_script_names_its_nonce_and_nothing_else_runs(client: Any) -> None:
    first = await client.get("/login")
    second = await client.get("/login")
    (nonce,) = script_nonces(await text(first))
    policy = directives(first)
    assert policy["script-src"] == f"'nonce-{nonce}' 'strict-dynamic'"
    assert "'unsafe-inline'" not in first.headers["Content-Security-Policy"]
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    # A fresh nonce per response: one seen once can't be reused by injected markup.
    (other,) = script_nonces(await text(second))
    assert other != nonce and len(nonce) >= 22


async def test_a_page_without_scripts_allows_none(client: Any, world: World) -> None:
    await login(client, world.email)
    page = await client.get("/account")
    assert page.status_code == 200
    assert script_nonces(await text(page)) == set()
    assert directives(page)["script-src"] == "'none'"
    assert directives(page)["form-action"] == "'self'"


async def test_sign_in_for_an_account_page_keeps_form_action_self(client: Any) -> None:
    page = await client.get("/login?return_to=/account/security")
    assert directives(page)["form-action"] == "'self'"


async def test_sign_in_for_a_client_lets_the_form_end_at_the_client(client: Any, world: World) -> None:
    """Chromium applies form-action to the redirects after a POST: the login form's 303s end at the
    client's redirect URI, so a page in an authorization flow must not restrict form-action."""
    page = await client.get(await start_authorization(client, world))
    policy = directives(page)
    assert "form-action" not in policy
    assert policy["frame-ancestors"] == "'none'"  # the rest of the policy is unchanged
    nonce = script_nonces(await text(page))
    assert policy["script-src"] == f"'nonce-{nonce.pop()}' 'strict-dynamic'"

    # A failed attempt re-renders the same form, still in the flow.
    return_to = re.search(r'name="return_to" value="([^"]+)"', await text(page))
    assert return_to is not None
    failed = await client.post(
        "/login",
        form={
            "email": world.email,
            "password": "not the password",
            "csrf_token": csrf_from(await text(page)),
            "return_to": return_to.group(1),
        },
    )
    assert failed.status_code == 401
    assert "form-action" not in directives(failed)


async def test_second_factor_page_in_a_flow_lets_the_form_end_at_the_client(
    client: Any, world: World, runtime: Any, clock: Any
) -> None:
    await enable_totp(runtime, world.user_id, clock)
    login_url = await start_authorization(client, world)
    return_to = login_url.split("return_to=", 1)[1].replace("%2F", "/")
    answered = await login(client, world.email, return_to=return_to)
    assert answered.headers["Location"] == "/login/mfa"
    assert "form-action" not in directives(await client.get("/login/mfa"))

    # The same step for an account page, in another browser, keeps the restriction.
    fresh = client.app.test_client()
    answered = await login(fresh, world.email, return_to="/account/security")
    assert answered.headers["Location"] == "/login/mfa"
    assert directives(await fresh.get("/login/mfa"))["form-action"] == "'self'"


async def test_consent_page_lets_its_form_end_at_the_client(client: Any, world: World) -> None:
    page, _ = await authorize(client, world.web_id, WEB_REDIRECT, email=world.email, consent=False)
    assert page.status_code == 200 and 'name="decision"' in await text(page)
    assert "form-action" not in directives(page)


async def test_logout_confirmation_for_a_client_redirect_lets_the_form_leave(client: Any, world: World) -> None:
    await login(client, world.email)
    query = urlencode({"client_id": world.web_id, "post_logout_redirect_uri": "https://rp.example/bye"})
    confirm = await client.get(f"/logout?{query}")
    assert confirm.status_code == 200
    assert "form-action" not in directives(confirm)
    # Without a redirect URI the confirmation ends here.
    plain = await client.get("/logout")
    assert plain.status_code == 200
    assert directives(plain)["form-action"] == "'self'"


async def test_json_responses_carry_no_page_policy(client: Any) -> None:
    response = await client.get("/.well-known/openid-configuration")
    assert "Content-Security-Policy" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_address_confirmation_of_a_registration_for_a_client_lets_its_form_leave(
    client: Any, runtime: Any
) -> None:
    """Confirming the address signs the registering browser in and carries on to the client that
    asked for the registration (prompt=create): the POST's redirects end at the client."""
    from idp.accounts import links

    user_id = await add_user(runtime, "new@example.com", verified=False)
    for return_to, leaves in (("/authorize/resume/abc", True), ("/account", False), (None, False)):
        token = await links.issue(
            runtime.db, purpose=links.VERIFY_EMAIL, user_id=user_id, ttl=600, email="new@example.com",
            return_to=return_to, browser_binding=None,
        )  # fmt: skip
        page = await client.get(f"/verify-email?token={token}")
        assert page.status_code == 200
        assert ("form-action" not in directives(page)) is leaves, return_to
