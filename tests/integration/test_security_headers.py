"""Security headers, caching and cookies on real responses (ASVS 3.3, 3.4, 14.3.2; RFC 6749 §5.1;
RFC 9700 §4.16), for an http issuer (development) and an https one.

Every page is walked, signed out and signed in; every value is asserted exactly.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import pyotp
import pytest

from idp import create_app
from idp.config import load_settings
from idp.oauth.routes import JWKS_MAX_AGE, METADATA_MAX_AGE
from idp.security import csrf
from tests.mfa_helpers import text
from tests.oauth_helpers import (
    PASSWORD,
    WEB_REDIRECT,
    World,
    authorization_url,
    authorize,
    basic,
    code_flow,
    csrf_from,
    login,
    make_world,
    query_of,
)

HTTPS_ISSUER = "https://login.example.test"
SPA_ORIGIN = "http://127.0.0.1:8080"  # a registered web origin (make_world): CORS is still not for pages
ON_EVERY_RESPONSE = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=63072000; includeSubDomains"
ONE_YEAR = 365 * 24 * 3600
NONCE_SOURCE = re.compile(r"^'nonce-([A-Za-z0-9_-]{22,})' 'strict-dynamic'$")


def directives(response: Any) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for part in response.headers["Content-Security-Policy"].split(";"):
        name, _, value = part.strip().partition(" ")
        assert name not in parsed, f"{name} twice"
        parsed[name] = value
    return parsed


def script_tags(html: str) -> list[str]:
    return re.findall(r"<script\b[^>]*>", html)


async def check_page(response: Any, *, https: bool = False) -> None:
    """What every HTML response of the IdP carries."""
    for name, value in ON_EVERY_RESPONSE.items():
        assert response.headers[name] == value, name
    assert response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    policy = directives(response)
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    assert policy["default-src"] in ("'self'", "'none'")  # 'none': the form_post page, with its own form-action
    if policy["default-src"] == "'self'":
        # Left out only on pages whose forms end at a client (see idp.security.headers).
        assert policy.get("form-action", "'self'") == "'self'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in response.headers["Content-Security-Policy"]
    # Scripts: none, or only this response's nonce, each loaded from a file (no inline script).
    html = await text(response)
    tags = script_tags(html)
    if policy["script-src"] == "'none'":
        assert tags == []
    else:
        match = NONCE_SOURCE.match(policy["script-src"])
        assert match, policy["script-src"]
        assert tags and all(f'nonce="{match.group(1)}"' in tag and " src=" in tag for tag in tags)
        assert re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S) == [""] * len(tags)
    if https:
        assert response.headers["Strict-Transport-Security"] == HSTS
    else:
        assert "Strict-Transport-Security" not in response.headers
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers


def page_paths(app: Any) -> list[str]:
    """Every GET route of the HTML blueprints that takes no URL variable."""
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.partition(".")[0] in set(app.blueprints) - set(app.json_blueprints)
        and "GET" in rule.methods
        and not rule.arguments
    )


def set_cookies(response: Any) -> dict[str, tuple[str, dict[str, str | bool]]]:
    """The response's Set-Cookie headers: name -> (value, attributes as sent: flags map to True)."""
    cookies: dict[str, tuple[str, dict[str, str | bool]]] = {}
    for header in response.headers.getlist("Set-Cookie"):
        first, *rest = header.split("; ")
        name, _, value = first.partition("=")
        attributes: dict[str, str | bool] = {}
        for attribute in rest:
            key, has_value, attribute_value = attribute.partition("=")
            attributes[key] = attribute_value if has_value else True
        assert name not in cookies, f"{name} set twice"
        cookies[name] = (value, attributes)
    return cookies


def check_every_cookie(response: Any, *, https: bool) -> dict[str, tuple[str, dict[str, str | bool]]]:
    """Whatever cookies a response sets (sessions, CSRF, devices, sign-in steps) are for this host
    only (no Domain), for the whole site, out of scripts' reach, not sent on cross-site
    subresource requests or posts, and Secure under https."""
    cookies = set_cookies(response)
    for name, (_, attributes) in cookies.items():
        flags = {key: value for key, value in attributes.items() if key not in ("Expires", "Max-Age")}
        expected: dict[str, str | bool] = {"HttpOnly": True, "Path": "/", "SameSite": "Lax"}
        assert flags == ({"Secure": True, **expected} if https else expected), name
        # Under https every cookie is __Host- (no sibling subdomain can plant or overwrite it).
        assert name.startswith("__Host-") == https, name
    return cookies


def expires_in(attributes: dict[str, str | bool]) -> float:
    expires = attributes.pop("Expires")
    assert isinstance(expires, str)
    return parsedate_to_datetime(expires).timestamp() - time.time()


@pytest.fixture
async def https_app(settings_overrides: dict[str, Any]) -> AsyncIterator[Any]:
    """The same IdP behind https (as in production, where TLS may end at a proxy)."""
    settings = load_settings(environ={}, overrides={**settings_overrides, "issuer": HTTPS_ISSUER})
    assert settings.issuer_is_https
    application = create_app(settings)
    async with application.test_app():
        yield application


# -- pages ------------------------------------------------------------------------------------------


async def test_every_page_carries_the_page_headers_signed_out_and_in(app: Any, client: Any, world: World) -> None:
    paths = page_paths(app)
    assert {"/login", "/register", "/account", "/account/security", "/logout", "/authorize"} <= set(paths)
    pages = 0
    for signed_in in (False, True):
        if signed_in:
            await login(client, world.email)
        for path in paths:
            response = await client.get(path, headers={"Origin": SPA_ORIGIN})
            if response.mimetype == "text/html":
                await check_page(response)
                pages += 1
            else:  # JSON from a page blueprint (the password policy, the export): still the basics
                for name, value in ON_EVERY_RESPONSE.items():
                    assert response.headers[name] == value, (path, name)
                assert "Content-Security-Policy" not in response.headers
    assert pages >= 2 * 15


async def test_redirects_and_error_pages_carry_the_page_headers(client: Any) -> None:
    redirect = await client.get("/account")
    assert redirect.status_code == 303 and redirect.headers["Location"] == "/login?return_to=/account"
    await check_page(redirect)
    missing = await client.get("/no-such-page", headers={"Accept": "text/html"})
    assert missing.status_code == 404
    await check_page(missing)
    wrong_method = await client.delete("/login")
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"]
    await check_page(wrong_method)
    forged = await client.post("/login", form={"email": "a@example.com", "password": PASSWORD})
    assert forged.status_code == 403
    await check_page(forged)


async def test_the_authenticator_seed_and_recovery_codes_are_never_stored(
    client: Any, world: World, clock: Any
) -> None:
    await login(client, world.email)
    security = await client.get("/account/security")
    setup = await client.post(
        "/account/security/totp", form={"csrf_token": csrf_from(await text(security)), "password": PASSWORD}
    )
    html = await text(setup)
    seed = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', html)
    credential = re.search(r'name="credential_id" value="([^"]+)"', html)
    assert setup.status_code == 200 and seed and credential
    assert setup.headers["Cache-Control"] == "no-store"
    await check_page(setup)

    codes = await client.post(
        "/account/security/totp/confirm",
        form={
            "csrf_token": csrf_from(html),
            "credential_id": credential.group(1),
            "code": pyotp.TOTP(seed.group(1)).at(clock.now),
        },
    )
    assert codes.status_code == 200 and len(re.findall(r"<li><code>", await text(codes))) == 10
    assert codes.headers["Cache-Control"] == "no-store"
    await check_page(codes)


async def test_a_fresh_nonce_on_every_response(client: Any, world: World) -> None:
    """A nonce seen once (in a page, a log, a cache) is no use to injected markup later."""
    nonces = []
    for _ in range(5):
        page = await client.get("/login")
        await check_page(page)
        (tag,) = script_tags(await text(page))
        nonce = NONCE_SOURCE.match(directives(page)["script-src"])
        assert nonce is not None and f'nonce="{nonce.group(1)}"' in tag
        nonces.append(nonce.group(1))
    await login(client, world.email)
    security = await client.get("/account/security")
    await check_page(security)
    nonce = NONCE_SOURCE.match(directives(security)["script-src"])
    assert nonce is not None
    nonces.append(nonce.group(1))
    assert len(set(nonces)) == len(nonces) == 6


# -- protocol and API responses --------------------------------------------------------------------


def assert_not_stored(response: Any) -> None:
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    for name, value in ON_EVERY_RESPONSE.items():
        assert response.headers[name] == value, name


async def test_token_userinfo_and_introspection_responses_are_never_stored(client: Any, world: World) -> None:
    response, verifier = await authorize(client, world.web_id, WEB_REDIRECT, email=world.email)
    assert response.status_code == 303
    token = await client.post(
        "/token",
        form={
            "grant_type": "authorization_code",
            "code": query_of(response.headers["Location"])["code"],
            "redirect_uri": WEB_REDIRECT,
            "code_verifier": verifier or "",
        },
        headers=basic(world.web_id, world.web_secret),
    )
    assert token.status_code == 200 and token.mimetype == "application/json"
    assert_not_stored(token)
    assert "Content-Security-Policy" not in token.headers
    tokens = await token.get_json()

    userinfo = await client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200
    assert_not_stored(userinfo)

    introspection = await client.post(
        "/introspect", form={"token": tokens["refresh_token"]}, headers=basic(world.web_id, world.web_secret)
    )
    assert introspection.status_code == 200 and (await introspection.get_json())["active"] is True
    assert_not_stored(introspection)

    revocation = await client.post(
        "/revoke", form={"token": tokens["refresh_token"]}, headers=basic(world.web_id, world.web_secret)
    )
    assert revocation.status_code == 200 and await revocation.get_data() == b""
    assert_not_stored(revocation)

    # Refusals are not cached either (render_error).
    refused = await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(world.web_id, world.web_secret),
    )
    assert refused.status_code == 400 and (await refused.get_json())["error"] == "invalid_grant"
    assert refused.headers["Cache-Control"] == "no-store"
    credentials = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic(world.web_id, world.web_secret)
    )
    assert credentials.status_code == 200
    assert_not_stored(credentials)


async def test_public_documents_keep_their_public_caching(client: Any) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        discovery = await client.get(path)
        assert discovery.status_code == 200
        assert discovery.headers["Cache-Control"] == f"public, max-age={METADATA_MAX_AGE}"
    jwks = await client.get("/jwks")
    assert jwks.headers["Cache-Control"] == f"public, max-age={JWKS_MAX_AGE}"
    policy = await client.get("/account/password-policy")
    assert policy.headers["Cache-Control"] == "public, max-age=300"
    for response in (discovery, jwks, policy):
        for name, value in ON_EVERY_RESPONSE.items():
            assert response.headers[name] == value, name
        assert "Content-Security-Policy" not in response.headers
        assert "Strict-Transport-Security" not in response.headers


# -- cookies -----------------------------------------------------------------------------------------


async def test_cookies_over_an_http_issuer(client: Any, runtime: Any, world: World) -> None:
    page = await client.get("/login")
    cookies = check_every_cookie(page, https=False)
    binding, attributes = cookies[csrf.COOKIE_NAME]
    assert len(binding) >= 40
    # A browser-session cookie: no Expires, no Max-Age, not Secure over http, never a Domain.
    assert attributes == {"HttpOnly": True, "Path": "/", "SameSite": "Lax"}
    assert csrf.COOKIE_NAME not in set_cookies(await client.get("/login"))  # set once, then reused

    signed_in = await login(client, world.email)
    assert signed_in.status_code == 303
    cookies = check_every_cookie(signed_in, https=False)
    assert "__Host-idp_session" not in cookies
    session, attributes = cookies["idp_session"]
    assert len(session) >= 40
    ttl = runtime.settings.sessions.absolute_ttl
    assert abs(expires_in(attributes) - ttl) < 60
    assert attributes == {"Max-Age": str(ttl), "HttpOnly": True, "Path": "/", "SameSite": "Lax"}

    confirm = await client.get("/logout")
    signed_out = await client.post("/logout", form={"csrf_token": csrf_from(await text(confirm)), "confirm": "yes"})
    assert signed_out.status_code == 200
    cleared, attributes = check_every_cookie(signed_out, https=False)["idp_session"]
    assert cleared == "" and expires_in(attributes) < 0
    assert attributes == {"Max-Age": "0", "HttpOnly": True, "Path": "/", "SameSite": "Lax"}


async def test_cookies_and_hsts_over_an_https_issuer(https_app: Any) -> None:
    world = await make_world(https_app.runtime)
    client = https_app.test_client()
    page = await client.get("/login", scheme="https")
    assert page.headers["Strict-Transport-Security"] == HSTS
    max_age = re.fullmatch(r"max-age=(\d+); includeSubDomains", HSTS)
    assert max_age is not None and int(max_age.group(1)) >= ONE_YEAR
    await check_page(page, https=True)
    cookies = check_every_cookie(page, https=True)
    assert cookies["__Host-" + csrf.COOKIE_NAME][1] == {
        "Secure": True,
        "HttpOnly": True,
        "Path": "/",
        "SameSite": "Lax",
    }

    signed_in = await client.post(
        "/login",
        form={"email": world.email, "password": PASSWORD, "csrf_token": csrf_from(await text(page)), "return_to": "/"},
        scheme="https",
    )
    assert signed_in.status_code == 303
    assert signed_in.headers["Strict-Transport-Security"] == HSTS
    cookies = check_every_cookie(signed_in, https=True)
    # RFC 6265bis §4.1.3.2: __Host- cookies are Secure, Path=/ and carry no Domain (host-only).
    assert "idp_session" not in cookies
    _, attributes = cookies["__Host-idp_session"]
    ttl = https_app.runtime.settings.sessions.absolute_ttl
    assert abs(expires_in(attributes) - ttl) < 60
    assert attributes == {"Max-Age": str(ttl), "Secure": True, "HttpOnly": True, "Path": "/", "SameSite": "Lax"}

    # Every response over https says so, JSON and errors included.
    account = await client.get("/account", scheme="https")
    assert account.status_code == 200
    await check_page(account, https=True)
    for response in (
        await client.get("/.well-known/openid-configuration", scheme="https"),
        await client.get("/jwks", scheme="https"),
        await client.post("/token", form={"grant_type": "client_credentials"}, scheme="https"),
        await client.get("/no-such-page", scheme="https", headers={"Accept": "text/html"}),
    ):
        assert response.headers["Strict-Transport-Security"] == HSTS, response.status_code

    # A sign-in started by a client sets its interaction binding cookie, as strictly.
    parked = await https_app.test_client().get(authorization_url(world.web_id, WEB_REDIRECT), scheme="https")
    assert parked.status_code == 303 and set_cookies(parked)
    check_every_cookie(parked, https=True)

    # Signing out clears the cookie with the same attributes: a browser ignores a __Host- deletion
    # that is not Secure with Path=/.
    confirm = await client.get("/logout", scheme="https")
    signed_out = await client.post(
        "/logout", form={"csrf_token": csrf_from(await text(confirm)), "confirm": "yes"}, scheme="https"
    )
    assert signed_out.status_code == 200
    cleared, attributes = check_every_cookie(signed_out, https=True)["__Host-idp_session"]
    assert cleared == "" and expires_in(attributes) < 0
    assert attributes == {"Max-Age": "0", "Secure": True, "HttpOnly": True, "Path": "/", "SameSite": "Lax"}


async def test_the_code_flow_works_over_the_https_issuer(https_app: Any) -> None:
    """The Secure, __Host- cookies make a whole sign-in, consent and code exchange."""
    world = await make_world(https_app.runtime)
    client = https_app.test_client()
    tokens = await code_flow(client, world)
    assert tokens["token_type"] == "Bearer"


async def test_the_csrf_cookie_is_host_only_under_https(https_app: Any) -> None:
    """Without the prefix a sibling subdomain could set idp_csrf (Domain=<parent>) in a victim's
    browser to a binding it holds a valid token for, and forge any form post (cookie tossing)."""
    client = https_app.test_client()
    page = await client.get("/login", scheme="https")
    assert "__Host-idp_csrf" in check_every_cookie(page, https=True)
    # A planted, unprefixed binding is not the one checked: the attacker's token for it fails.
    from idp.security.csrf import form_token, new_binding

    planted = new_binding()
    token = form_token(https_app.settings.secrets.cookie_secret.get_secret_value(), planted)
    client.set_cookie("login.example.test", "idp_csrf", planted)
    forged = await client.post(
        "/login", form={"email": "a@example.com", "password": "x", "csrf_token": token}, scheme="https"
    )
    assert forged.status_code == 403
