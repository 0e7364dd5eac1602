"""Passkeys in a real browser: Chromium, a virtual WebAuthn authenticator, a real `idp serve`.

What a relying party sees in the ID tokens it receives, one sign-in path at a time: the password
alone (``pwd``, one factor); the password then a passkey as second factor (``pwd`` + ``hwk`` +
``mfa``, phishing-resistant); the passkey alone, passwordless (``hwk`` + ``mfa``, phishing-resistant).
Around them, the account's security page adding the passkey, and sign-ins the browser or the server
refuses, which must show an error and leave no session behind.

The issuer is http://localhost:<port>: WebAuthn refuses IP addresses as relying-party ids, and
"localhost" is a secure context over plain http. Chromium's virtual authenticator is a CTAP2
platform authenticator whose keys are not backup-eligible, hence ``hwk`` rather than ``swk``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from playwright.async_api import Browser, BrowserContext, Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.e2e.browser import Credential, VirtualAuthenticator, chromium, new_page, require_chromium
from tests.e2e.server import IDP, Server, free_port, run_idp, running
from tests.oauth_helpers import pkce_pair, query_of

pytestmark = pytest.mark.server

EMAIL = "paz.passkey@example.com"
PASSWORD = "quartz-harbor-willow-8192"
PASSKEY_NAME = "Test laptop"
SESSION_COOKIE = "idp_session"  # over http the cookie has no __Host- prefix
ACR_1FA = "urn:idp:acr:1fa"
ACR_PHR = "phr"
LEEWAY = 5


# --------------------------------------------------------------------------------------------------
# The provider and its relying party


@dataclass(frozen=True)
class Provider:
    issuer: str  # http://localhost:<port>, what the browser uses
    backchannel: str  # http://127.0.0.1:<port>, what the relying party's server-side calls use
    client_id: str
    redirect_uri: str  # served by a CallbackReceiver
    server: Server


class CallbackReceiver:
    """The relying party's redirect URI: a stdlib HTTP server in a thread that answers any GET with a
    small page, so the browser's last navigation completes. The test reads the URL from the tab."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a stuck connection can't hold the server (or its shutdown) for long

            def do_GET(self) -> None:
                body = b"<!doctype html><title>RP</title><p id='rp'>Back at the client</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="rp-callback", daemon=True
        )

    def __enter__(self) -> CallbackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def chromium_path() -> Path:
    return require_chromium()


@pytest.fixture
def provider(chromium_path: Path, cli_env: dict[str, str]) -> Iterator[Provider]:
    # chromium_path first: without a browser the test skips before a server is started.
    port = free_port()
    issuer = f"http://localhost:{port}"
    env = {**cli_env, "IDP_ISSUER": issuer, "IDP_SERVER__PORT": str(port), "IDP_SERVER__WORKERS": "1"}
    run_idp(env, "db", "upgrade")
    run_idp(env, "users", "create", "--email", EMAIL, "--name", "Paz Passkey", "--password-stdin", "--verified",
         stdin=PASSWORD + "\n")  # fmt: skip
    with CallbackReceiver() as receiver, ThreadPoolExecutor(max_workers=1) as pool:
        # The user's creation made the signing keys; the client is registered while the server starts.
        created = pool.submit(
            run_idp, env, "clients", "create", "--name", "Passkey RP", "--public", "--auth-method", "none",
            "--first-party", "--redirect-uri", receiver.uri, "--grant", "authorization_code", "--json",
        )  # fmt: skip
        with running([IDP, "serve"], env, port) as server:
            client_id = json.loads(created.result())["client_id"]
            yield Provider(issuer, f"http://127.0.0.1:{port}", client_id, receiver.uri, server)
    output = server.output()
    assert "Traceback" not in output, output


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[Browser]:
    async with chromium(chromium_path) as value:
        yield value


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


def authorization_request(provider: Provider) -> AuthorizationRequest:
    """A code flow request with PKCE S256 (a first-party client: no consent page)."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": provider.redirect_uri,
        "scope": "openid",
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return AuthorizationRequest(f"{provider.issuer}/authorize?{urlencode(query)}", state, nonce, verifier)


async def redeem(provider: Provider, request: AuthorizationRequest, callback: str) -> dict[str, Any]:
    """What the relying party does with the redirect: check it, redeem the code, validate the ID
    token (signature against the published JWKS, iss, aud, nonce, times); the ID token's claims."""
    assert callback.startswith(provider.redirect_uri + "?"), callback
    response = query_of(callback)
    assert "error" not in response, response
    assert response["state"] == request.state
    assert response["iss"] == provider.issuer  # RFC 9207
    async with httpx.AsyncClient(base_url=provider.backchannel, timeout=10) as http:
        discovery = (await http.get("/.well-known/openid-configuration")).json()
        assert discovery["issuer"] == provider.issuer
        jwks = (await http.get(urlsplit(discovery["jwks_uri"]).path)).json()
        token = await http.post(
            urlsplit(discovery["token_endpoint"]).path,
            data={
                "grant_type": "authorization_code",
                "code": response["code"],
                "redirect_uri": provider.redirect_uri,
                "client_id": provider.client_id,
                "code_verifier": request.code_verifier,
            },
        )
    assert token.status_code == 200, token.text
    id_token = token.json()["id_token"]
    decoded = jose_jwt.decode(
        id_token, KeySet.import_key_set(jwks), algorithms=discovery["id_token_signing_alg_values_supported"]
    )
    claims = dict(decoded.claims)
    assert claims["iss"] == provider.issuer
    assert claims["aud"] in (provider.client_id, [provider.client_id])
    assert claims["nonce"] == request.nonce
    assert claims["exp"] > time.time() - LEEWAY and claims["iat"] <= time.time() + LEEWAY
    return claims


# --------------------------------------------------------------------------------------------------
# The browser side


class Tab:
    """One browser tab on the provider's pages; redirects to the relying party are answered by a
    CallbackReceiver and end the flow."""

    def __init__(self, provider: Provider, context: BrowserContext, page: Page) -> None:
        self.provider = provider
        self.context = context
        self.page = page
        self.errors: list[str] = []  # uncaught script errors
        self.console: list[str] = []  # console errors (CSP violations show here), for failure messages
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: self.console.append(message.text) if message.type == "error" else None)

    def at(self, path: str) -> Callable[[str], bool]:
        """A URL predicate: the provider's ``path``, any query."""
        prefix = self.provider.issuer + path
        return lambda url: url == prefix or url.startswith(prefix + "?")

    async def authorize(self, request: AuthorizationRequest) -> None:
        """Start the authorization request; without a session it lands on the sign-in page."""
        await self.page.goto(request.url)
        await self.page.wait_for_url(self.at("/login"))

    async def returned_to_client(self) -> str:
        try:
            await self.page.wait_for_url(lambda url: url.startswith(self.provider.redirect_uri + "?"))
        except PlaywrightTimeoutError:
            text = await self.page.locator("body").inner_text()
            console = "\n".join(self.console)
            raise AssertionError(
                f"not back at the client; at {self.page.url}:\n{text[:2000]}\nconsole errors:\n{console}"
            ) from None
        return self.page.url

    async def enter_password(self) -> None:
        await self.page.fill("#email", EMAIL)
        await self.page.fill("#password", PASSWORD)
        await self.page.click("#login-submit")

    async def sign_out(self) -> None:
        await self.page.goto(self.provider.issuer + "/account")
        await self.page.click("#sign-out")
        await expect(self.page.locator("#logged-out")).to_be_visible()
        assert await self.session_cookies() == []

    async def session_cookies(self) -> list[Any]:
        return [cookie for cookie in await self.context.cookies() if cookie["name"] == SESSION_COOKIE]

    async def assert_signed_out(self) -> None:
        """No session cookie, and the account page sends the browser to sign in."""
        assert await self.session_cookies() == []
        await self.page.goto(self.provider.issuer + "/account")
        await self.page.wait_for_url(self.at("/login"))


def _new_p256_pkcs8() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())


async def _only_credential(authenticator: VirtualAuthenticator) -> Credential:
    credentials = await authenticator.credentials()
    assert len(credentials) == 1, credentials
    return credentials[0]


# --------------------------------------------------------------------------------------------------
# The tests


async def test_password_sign_in_returns_to_the_client(provider: Provider, browser: Browser) -> None:
    """Before any passkey: the password alone, one factor. The sign-in form's POST ends, through two
    303s, at the client's redirect URI, which the page's CSP must let the browser follow."""
    async with new_page(browser) as (context, page):
        tab = Tab(provider, context, page)
        request = authorization_request(provider)
        await tab.authorize(request)
        await tab.enter_password()
        claims = await redeem(provider, request, await tab.returned_to_client())
        assert claims["amr"] == ["pwd"] and claims["acr"] == ACR_1FA
        assert len(await tab.session_cookies()) == 1
        assert tab.errors == []


async def test_passkeys_in_a_real_browser(provider: Provider, browser: Browser) -> None:
    async with new_page(browser) as (context, page):
        tab = Tab(provider, context, page)
        authenticator = await VirtualAuthenticator.attach(context, page)
        assert await authenticator.credentials() == []

        # 1. Signed in with the password (one factor), add a passkey on the security page: the
        #    password again, then the authenticator.
        await page.goto(provider.issuer + "/login?return_to=/account/security")
        await tab.enter_password()
        await page.wait_for_url(tab.at("/account/security"))
        await expect(page.locator("#no-passkeys")).to_be_visible()
        await page.fill("#passkey-name", PASSKEY_NAME)
        await page.fill("#passkey-password", PASSWORD)
        await page.click("#passkey-register")
        await page.wait_for_url(tab.at("/account/security?notice=passkey-added"))
        await expect(page.locator("#security-notice")).to_have_text("The passkey was added.")
        await expect(page.locator("#passkeys li")).to_have_count(1)
        await expect(page.locator("#passkeys li .passkey-name")).to_have_text(PASSKEY_NAME)
        # credProps told the server the credential is discoverable: it works without a password.
        await expect(page.locator("#passkeys li")).to_contain_text("signs in without a password")
        await expect(page.locator("#passkey-error")).to_be_hidden()
        created = await _only_credential(authenticator)
        assert created.resident and created.rp_id == "localhost"
        assert created.user_handle  # the account id (opaque), not the email address
        assert EMAIL.encode() not in created.user_handle

        # 2. Password, then the passkey as second factor: phishing-resistant, hardware key.
        await tab.sign_out()
        request = authorization_request(provider)
        await tab.authorize(request)
        await tab.enter_password()
        await page.wait_for_url(tab.at("/login/mfa"))
        assert await tab.session_cookies() == []  # no session before the second factor
        await page.click("#passkey-second-factor")
        claims = await redeem(provider, request, await tab.returned_to_client())
        subject = claims["sub"]
        assert sorted(claims["amr"]) == ["hwk", "mfa", "pwd"]  # not swk: the key is not backup-eligible
        assert claims["acr"] == ACR_PHR
        after_second_factor = await _only_credential(authenticator)
        assert after_second_factor.credential_id == created.credential_id
        assert after_second_factor.sign_count > created.sign_count

        # 3. Passwordless: the discoverable passkey alone (it verified the user: two factors).
        await tab.sign_out()
        request = authorization_request(provider)
        await tab.authorize(request)
        await page.click("#passkey-login")
        claims = await redeem(provider, request, await tab.returned_to_client())
        assert claims["sub"] == subject
        assert claims["amr"] == ["hwk", "mfa"] and claims["acr"] == ACR_PHR
        passwordless = await _only_credential(authenticator)
        assert passwordless.sign_count > after_second_factor.sign_count

        # 4. Refused in the browser: an authenticator with no passkey for this site.
        await tab.sign_out()
        await authenticator.remove()
        empty = await VirtualAuthenticator.attach(context, page)
        assert await empty.credentials() == []
        await tab.authorize(authorization_request(provider))
        await page.click("#passkey-login")
        await expect(page.locator("#passkey-error")).to_have_text("The passkey request was cancelled or timed out.")
        await expect(page.locator("#passkey-login")).to_be_enabled()  # the user may try again
        assert page.url.startswith(provider.issuer + "/login?")
        await tab.assert_signed_out()

        # 5. Refused by the server: a passkey it doesn't know, then a copy of the real one whose
        #    counter went backwards (a cloned authenticator, WebAuthn §6.1.1). The server's reason
        #    is shown; no session either way.
        await empty.add_credential(
            credential_id=secrets.token_bytes(32),
            rp_id="localhost",
            private_key_pkcs8=_new_p256_pkcs8(),
            user_handle=created.user_handle,
        )
        await tab.authorize(authorization_request(provider))
        await page.click("#passkey-login")
        await expect(page.locator("#passkey-error")).to_have_text(
            "This passkey is not registered here, or it was removed."
        )
        await tab.assert_signed_out()

        await empty.clear()
        assert passwordless.user_handle is not None
        await empty.add_credential(
            credential_id=passwordless.credential_id,
            rp_id=passwordless.rp_id,
            private_key_pkcs8=passwordless.private_key,
            user_handle=passwordless.user_handle,
            sign_count=created.sign_count,  # behind the count the server has seen
        )
        await tab.authorize(authorization_request(provider))
        await page.click("#passkey-login")
        await expect(page.locator("#passkey-error")).to_contain_text("unexpected use count")
        await tab.assert_signed_out()

        assert tab.errors == []
