"""The OpenID Connect code flow end to end, as a real relying party sees it.

A real `idp serve` process; users, clients and key rotation through the `idp` command; the relying
party is Authlib's httpx client (PKCE S256), the browser a cookie-keeping httpx client that fills in
the login and consent forms. Nothing is read from the server's internals: endpoints come from
discovery, keys from the published JWKS.
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.oidc.core import CodeIDToken
from joserfc import jwt as jose_jwt
from joserfc.errors import InvalidClaimError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from tests.e2e.server import IDP, Server, free_port, run_idp, running

with warnings.catch_warnings():
    # Authlib 1.9 prefers its "httpx2" fork and warns once, at import, when it falls back to httpx
    # (a supported configuration: the client is the same). Only that one warning is silenced.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated", category=AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

pytestmark = pytest.mark.server

EMAIL = "river.rp@example.com"
PASSWORD = "granite-lantern-meadow-4096"
SCOPE = "openid profile email offline_access"
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LEEWAY = 5
BACKCHANNEL_WAIT = 5.0


# --------------------------------------------------------------------------------------------------
# The relying party's back-channel logout endpoint


class LogoutReceiver:
    """A tiny RP back-channel logout endpoint (stdlib HTTP server in a thread): records what is POSTed."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, str]] = []  # (content type, logout_token)
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a stuck connection can't hold the server (or its shutdown) for long

            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
                body = self.rfile.read(length).decode("ascii", "replace")
                token = parse_qs(body).get("logout_token", [""])[0]
                with receiver._changed:
                    receiver.deliveries.append((self.headers.get("Content-Type", ""), token))
                    receiver._changed.notify_all()
                self.send_response(200)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.uri = f"http://127.0.0.1:{self.port}/bcl"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="bcl-receiver", daemon=True
        )

    def _wait(self, count: int, within: float) -> list[tuple[str, str]]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.deliveries) >= count, timeout=within)
            return list(self.deliveries)

    async def wait_for(self, count: int, within: float = BACKCHANNEL_WAIT) -> list[tuple[str, str]]:
        """The deliveries so far, once there are ``count`` of them or ``within`` seconds have passed."""
        return await asyncio.to_thread(self._wait, count, within)

    def __enter__(self) -> LogoutReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()  # also joins the request threads (each bounded by Handler.timeout)
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "the back-channel receiver did not stop"


# --------------------------------------------------------------------------------------------------
# The provider: a served idp with one user and two clients, all made with the `idp` command


@dataclass(frozen=True)
class Client:
    kind: str
    client_id: str
    client_secret: str | None
    auth_method: str
    rp_origin: str
    backchannel: bool  # registered with a back-channel logout URI

    @property
    def redirect_uri(self) -> str:
        return f"{self.rp_origin}/cb"

    @property
    def post_logout_redirect_uri(self) -> str:
        return f"{self.rp_origin}/bye"


@dataclass
class Provider:
    issuer: str
    env: dict[str, str]
    server: Server
    clients: dict[str, Client]
    receiver: LogoutReceiver


@contextmanager
def _provider(cli_env: dict[str, str], **extra_env: str) -> Iterator[Provider]:
    port, rp_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {
        **cli_env,
        "IDP_ISSUER": issuer,
        "IDP_SERVER__PORT": str(port),
        "IDP_SERVER__WORKERS": "1",
        "IDP_LOG__FORMAT": "json",
        **extra_env,
    }
    rp = f"http://127.0.0.1:{rp_port}"
    with LogoutReceiver() as receiver, ThreadPoolExecutor(max_workers=2) as pool:
        run_idp(env, "db", "upgrade")
        # The first command to open the runtime creates the signing keys; the rest may run side by side.
        user = ["users", "create", "--email", EMAIL, "--name", "River Example", "--password-stdin", "--verified"]
        run_idp(env, *user, stdin=PASSWORD + "\n")
        common = ["--redirect-uri", f"{rp}/cb", "--post-logout-redirect-uri", f"{rp}/bye", "--json"]
        common += ["--grant", "authorization_code", "--grant", "refresh_token"]
        web_args = ["--confidential", "--auth-method", "client_secret_basic", "--backchannel-logout-uri", receiver.uri]
        spa_args = ["--public", "--auth-method", "none", "--id-token-alg", "ES256"]
        web_created = pool.submit(run_idp, env, "clients", "create", "--name", "Web RP", *web_args, *common)
        spa_created = pool.submit(run_idp, env, "clients", "create", "--name", "SPA RP", *spa_args, *common)
        with running([IDP, "serve"], env, port) as server:
            web, spa = json.loads(web_created.result()), json.loads(spa_created.result())
            assert web["client_secret"] and spa["client_secret"] is None
            assert web["backchannel_logout_uri"] == receiver.uri
            secret = web["client_secret"]
            clients = {
                "confidential": Client("confidential", web["client_id"], secret, "client_secret_basic", rp, True),
                "public": Client("public", spa["client_id"], None, "none", rp, False),
            }
            yield Provider(issuer, env, server, clients, receiver)
        # Graceful stop on SIGTERM (a single uvicorn worker re-raises the signal once it has shut down).
        assert server.returncode in (0, -signal.SIGTERM), server.output()
        output = server.output()
        assert "Application shutdown complete." in output
        assert "Traceback" not in output and '"level": "error"' not in output, output


@pytest.fixture
def provider(cli_env: dict[str, str]) -> Iterator[Provider]:
    with _provider(cli_env) as value:
        yield value


PUBLISH_AHEAD = 3  # seconds a rotated-in key is published before it signs, in this provider


@pytest.fixture
def fast_reload_provider(cli_env: dict[str, str]) -> Iterator[Provider]:
    """Re-reads the signing keys from the database every second (instead of every minute), and a
    rotated-in key signs 3 seconds after it is published (instead of 15 minutes)."""
    with _provider(cli_env, IDP_KEYS__RELOAD_INTERVAL="1", IDP_KEYS__PUBLISH_AHEAD=str(PUBLISH_AHEAD)) as value:
        yield value


# --------------------------------------------------------------------------------------------------
# Browser and relying-party helpers


class _Form(HTMLParser):
    """The first form of a page: its action and its hidden fields, as a browser would submit them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._forms = 0
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._forms += 1
            if self._forms == 1:
                self.action = values.get("action", "")
        elif tag == "input" and self._forms == 1 and values.get("type") == "hidden":
            self.fields[values["name"]] = html.unescape(values.get("value", ""))


def query_of(location: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def _location(response: httpx.Response) -> str:
    assert response.status_code == 303, f"{response.request.url}: {response.status_code} {response.text[:500]}"
    return urljoin(str(response.request.url), response.headers["location"])


async def sign_in_and_consent(browser: httpx.AsyncClient, issuer: str, authorization_url: str) -> str:
    """Drive a first authorization through the real pages; returns the final redirect to the RP."""
    login_url = _location(await browser.get(authorization_url))
    assert login_url.startswith(f"{issuer}/login?")
    page = await browser.get(login_url)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    form = _Form(page.text)
    assert set(form.fields) == {"csrf_token", "return_to"}
    assert form.fields["return_to"] == query_of(login_url)["return_to"]
    credentials = {**form.fields, "email": EMAIL, "password": PASSWORD}
    resume_url = _location(await browser.post(urljoin(login_url, form.action or login_url), data=credentials))
    assert resume_url.startswith(f"{issuer}/authorize/resume/")
    consent_url = _location(await browser.get(resume_url))
    assert consent_url.startswith(f"{issuer}/authorize/consent/")
    page = await browser.get(consent_url)
    assert page.status_code == 200
    consent = _Form(page.text)
    assert "csrf_token" in consent.fields
    decision = {**consent.fields, "decision": "allow"}
    final = _location(await browser.post(urljoin(consent_url, consent.action or consent_url), data=decision))
    assert not final.startswith(issuer), final
    return final


def authorization_request(rp: AsyncOAuth2Client, endpoint: str, **params: str) -> tuple[str, str, str, str]:
    """(url, state, nonce, code_verifier) for a new code flow request with PKCE S256."""
    verifier = generate_token(64)
    nonce = secrets.token_urlsafe(16)
    url, state = rp.create_authorization_url(endpoint, code_verifier=verifier, nonce=nonce, scope=SCOPE, **params)
    return url, state, nonce, verifier


def assert_code_response(location: str, client: Client, state: str, issuer: str) -> dict[str, str]:
    assert location.startswith(client.redirect_uri + "?"), location
    result = query_of(location)
    assert result["state"] == state
    assert result["iss"] == issuer  # RFC 9207
    assert "error" not in result and result["code"]
    return result


def kid_of(token: str) -> str:
    return str(extract_compact(token.encode()).protected["kid"])


def validate_id_token(
    id_token: str,
    jwks: dict[str, Any],
    discovery: dict[str, Any],
    client: Client,
    *,
    access_token: str,
    nonce: str | None,
) -> CodeIDToken:
    """Validate as an RP must (OIDC Core §3.1.3.7): signature with a published key, iss, aud, times, nonce, at_hash."""
    assert kid_of(id_token) in {key["kid"] for key in jwks["keys"]}
    decoded = jose_jwt.decode(
        id_token, KeySet.import_key_set(jwks), algorithms=discovery["id_token_signing_alg_values_supported"]
    )
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        options={
            "iss": {"essential": True, "value": discovery["issuer"]},
            "aud": {"essential": True, "value": client.client_id},
            "sub": {"essential": True},
            "auth_time": {"essential": True},
            "sid": {"essential": True},
            "at_hash": {"essential": True},
        },
        params={"nonce": nonce, "access_token": access_token, "client_id": client.client_id},
    )
    claims.validate(now=int(time.time()), leeway=LEEWAY)
    now = time.time()
    assert claims["iat"] <= now + LEEWAY and claims["exp"] > now
    assert claims["auth_time"] <= claims["iat"] + LEEWAY
    return claims


async def get_json(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(url)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def userinfo(http: httpx.AsyncClient, url: str, access_token: str) -> httpx.Response:
    return await http.get(url, headers={"Authorization": f"Bearer {access_token}"})


def relying_party(client: Client) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=client.client_id,
        client_secret=client.client_secret,
        token_endpoint_auth_method=client.auth_method,
        revocation_endpoint_auth_method=client.auth_method,
        redirect_uri=client.redirect_uri,
        code_challenge_method="S256",
        timeout=10,
    )


# --------------------------------------------------------------------------------------------------
# The flow


@pytest.mark.parametrize("kind", ["confidential", "public"])
async def test_code_flow_as_a_relying_party(provider: Provider, kind: str) -> None:
    client = provider.clients[kind]
    async with (
        httpx.AsyncClient(timeout=10) as http,
        httpx.AsyncClient(timeout=10, follow_redirects=False) as browser,
        relying_party(client) as rp,
    ):
        token_responses: list[httpx.Response] = []

        def record(response: httpx.Response) -> httpx.Response:
            token_responses.append(response)
            return response

        rp.register_compliance_hook("access_token_response", record)

        # 1. Discovery; every endpoint below comes from it.
        discovery = await get_json(http, f"{provider.issuer}/.well-known/openid-configuration")
        assert discovery["issuer"] == provider.issuer
        assert discovery["authorization_response_iss_parameter_supported"] is True
        assert "S256" in discovery["code_challenge_methods_supported"]
        assert client.auth_method in discovery["token_endpoint_auth_methods_supported"]
        jwks = await get_json(http, discovery["jwks_uri"])
        assert jwks["keys"] and all("d" not in key and key["kid"] for key in jwks["keys"])

        # 2. Authorization: login and consent through the pages, back to the RP with code, state and iss.
        url, state, nonce, verifier = authorization_request(rp, discovery["authorization_endpoint"])
        signed_in_from = int(time.time())
        location = await sign_in_and_consent(browser, provider.issuer, url)
        assert_code_response(location, client, state, provider.issuer)

        # 3. Token request (the client authenticates as registered; PKCE verifier).
        token = dict(
            await rp.fetch_token(
                discovery["token_endpoint"], authorization_response=location, code_verifier=verifier, state=state
            )
        )
        assert token["token_type"] == "Bearer" and token["scope"] == SCOPE and token["expires_in"] > 0
        assert {"access_token", "id_token", "refresh_token"} <= set(token)
        assert token_responses[-1].headers["cache-control"] == "no-store"

        # 4. The ID token.
        id_claims = validate_id_token(
            token["id_token"], jwks, discovery, client, access_token=token["access_token"], nonce=nonce
        )
        assert signed_in_from - LEEWAY <= id_claims["auth_time"] <= time.time() + LEEWAY
        assert id_claims["nonce"] == nonce
        if kind == "public":
            assert extract_compact(token["id_token"].encode()).protected["alg"] == "ES256"  # its registered alg
        # Those checks have teeth: another nonce, or another access token (at_hash), is refused.
        with pytest.raises(InvalidClaimError, match="nonce"):
            validate_id_token(token["id_token"], jwks, discovery, client, access_token=token["access_token"], nonce="n")
        with pytest.raises(InvalidClaimError, match="at_hash"):
            validate_id_token(token["id_token"], jwks, discovery, client, access_token="another-token", nonce=nonce)

        # 5. UserInfo with the access token (sent by the RP client).
        info = await rp.get(discovery["userinfo_endpoint"])
        assert info.status_code == 200, info.text
        assert info.json()["sub"] == id_claims["sub"]
        assert info.json()["email"] == EMAIL and info.json()["email_verified"] is True

        # 6. Refresh with rotation; replaying the rotated token revokes the whole family.
        first_refresh = token["refresh_token"]
        refreshed = dict(await rp.refresh_token(discovery["token_endpoint"], refresh_token=first_refresh))
        assert refreshed["refresh_token"] != first_refresh
        assert refreshed["access_token"] != token["access_token"]
        refreshed_claims = validate_id_token(
            refreshed["id_token"], jwks, discovery, client, access_token=refreshed["access_token"], nonce=None
        )
        for name in ("iss", "sub", "aud", "auth_time", "sid"):  # OIDC Core §12.2
            assert refreshed_claims[name] == id_claims[name], name
        refreshed_info = await userinfo(http, discovery["userinfo_endpoint"], refreshed["access_token"])
        assert refreshed_info.status_code == 200 and refreshed_info.json()["sub"] == id_claims["sub"]
        with pytest.raises(OAuthError) as replayed:
            await rp.refresh_token(discovery["token_endpoint"], refresh_token=first_refresh)
        assert replayed.value.error == "invalid_grant"
        with pytest.raises(OAuthError) as after_replay:
            await rp.refresh_token(discovery["token_endpoint"], refresh_token=refreshed["refresh_token"])
        assert after_replay.value.error == "invalid_grant"
        revoked_family = await userinfo(http, discovery["userinfo_endpoint"], refreshed["access_token"])
        assert revoked_family.status_code == 401  # the grant's access tokens went with it

        # Single sign-on: a silent request (prompt=none) gets a new grant without any page.
        url, state, nonce, verifier = authorization_request(rp, discovery["authorization_endpoint"], prompt="none")
        location = _location(await browser.get(url))
        assert_code_response(location, client, state, provider.issuer)
        token = dict(
            await rp.fetch_token(
                discovery["token_endpoint"], authorization_response=location, code_verifier=verifier, state=state
            )
        )
        sso_claims = validate_id_token(
            token["id_token"], jwks, discovery, client, access_token=token["access_token"], nonce=nonce
        )
        assert (sso_claims["sub"], sso_claims["sid"]) == (id_claims["sub"], id_claims["sid"])
        assert sso_claims["auth_time"] == id_claims["auth_time"]  # no new sign-in happened

        # 7. Introspection and revocation (RFC 7662, RFC 7009): confidential clients only.
        introspection = discovery["introspection_endpoint"]
        if kind == "confidential":  # the public client's refusal is checked last, below
            active = await rp.introspect_token(
                introspection, token=token["access_token"], token_type_hint="access_token"
            )
            assert active.status_code == 200, active.text
            body = active.json()
            assert body["active"] is True
            assert (body["client_id"], body["sub"], body["iss"]) == (
                client.client_id,
                id_claims["sub"],
                provider.issuer,
            )
            assert body["scope"] == SCOPE and body["exp"] > time.time()
            revoked = await rp.revoke_token(
                discovery["revocation_endpoint"], token=token["access_token"], token_type_hint="access_token"
            )
            assert revoked.status_code == 200, revoked.text
            inactive = await rp.introspect_token(
                introspection, token=token["access_token"], token_type_hint="access_token"
            )
            assert inactive.status_code == 200 and inactive.json() == {"active": False}
            rejected = await userinfo(http, discovery["userinfo_endpoint"], token["access_token"])
            assert rejected.status_code == 401
            assert 'error="invalid_token"' in rejected.headers["www-authenticate"]

        # 8. RP-initiated logout with the ID token as hint, back to the registered URI with state.
        logout_state = secrets.token_urlsafe(12)
        logged_out = await browser.get(
            discovery["end_session_endpoint"],
            params={
                "id_token_hint": token["id_token"],
                "post_logout_redirect_uri": client.post_logout_redirect_uri,
                "state": logout_state,
            },
        )
        location = _location(logged_out)
        assert location.startswith(client.post_logout_redirect_uri + "?")
        assert query_of(location) == {"state": logout_state}
        url, state, _, _ = authorization_request(rp, discovery["authorization_endpoint"], prompt="none")
        location = _location(await browser.get(url))
        assert location.startswith(client.redirect_uri + "?")
        silent = query_of(location)
        assert silent["error"] == "login_required"
        assert (silent["state"], silent["iss"]) == (state, provider.issuer)
        assert "code" not in silent

        # Back-Channel Logout 1.0: the confidential client's endpoint got a logout token for the session.
        if client.backchannel:
            deliveries = await provider.receiver.wait_for(1)
            assert len(deliveries) == 1, deliveries
            content_type, logout_token = deliveries[0]
            assert content_type.startswith("application/x-www-form-urlencoded")
            header = extract_compact(logout_token.encode()).protected
            assert header["typ"] == "logout+jwt" and header["kid"] in {key["kid"] for key in jwks["keys"]}
            claims = jose_jwt.decode(logout_token, KeySet.import_key_set(jwks)).claims
            assert claims["iss"] == provider.issuer
            assert claims["aud"] == client.client_id
            assert claims["sid"] == id_claims["sid"]
            assert claims["sub"] == id_claims["sub"]
            assert BACKCHANNEL_LOGOUT_EVENT in claims["events"]
            assert "nonce" not in claims and claims["jti"]
            assert claims["iat"] <= time.time() + LEEWAY and claims["exp"] > time.time()

        # A public client has no credentials, so it can't use an endpoint that requires client
        # authentication: discovery offers no "none" for introspection, and RFC 7662 §2.1 requires
        # authorization there. (Last, so that a failure here leaves every step above checked.)
        if kind == "public":
            assert "none" not in discovery["introspection_endpoint_auth_methods_supported"]
            refused = await rp.introspect_token(
                introspection, token=token["access_token"], token_type_hint="access_token"
            )
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"] == "invalid_client"


async def test_key_rotation_keeps_issued_tokens_valid(fast_reload_provider: Provider) -> None:
    provider = fast_reload_provider
    client = provider.clients["confidential"]
    async with (
        httpx.AsyncClient(timeout=10) as http,
        httpx.AsyncClient(timeout=10, follow_redirects=False) as browser,
        relying_party(client) as rp,
    ):
        discovery = await get_json(http, f"{provider.issuer}/.well-known/openid-configuration")
        old_jwks = await get_json(http, discovery["jwks_uri"])
        old_kids = {key["kid"] for key in old_jwks["keys"]}

        url, state, nonce, verifier = authorization_request(rp, discovery["authorization_endpoint"])
        location = await sign_in_and_consent(browser, provider.issuer, url)
        assert_code_response(location, client, state, provider.issuer)
        token = dict(
            await rp.fetch_token(
                discovery["token_endpoint"], authorization_response=location, code_verifier=verifier, state=state
            )
        )
        validate_id_token(
            token["id_token"], old_jwks, discovery, client, access_token=token["access_token"], nonce=nonce
        )
        assert {kid_of(token["access_token"]), kid_of(token["id_token"])} <= old_kids

        rotated = json.loads(await asyncio.to_thread(run_idp, provider.env, "keys", "rotate", "--json"))
        new_kids = set(rotated["created"])
        assert len(new_kids) == len(old_kids) and not new_kids & old_kids
        # The server re-reads the key set once keys.reload_interval (1 s here) has passed.
        for _ in range(50):
            jwks = await get_json(http, discovery["jwks_uri"])
            if new_kids <= {key["kid"] for key in jwks["keys"]}:
                break
            await asyncio.sleep(0.1)
        assert {key["kid"] for key in jwks["keys"]} == old_kids | new_kids  # old keys stay published

        # Published first: until keys.publish_ahead has passed, new tokens are still signed with
        # the old keys, so relying parties holding the old key set meet no unknown kid.
        early = dict(await rp.refresh_token(discovery["token_endpoint"], refresh_token=token["refresh_token"]))
        assert kid_of(early["access_token"]) in old_kids and kid_of(early["id_token"]) in old_kids
        token = {**token, "refresh_token": early["refresh_token"]}
        await asyncio.sleep(PUBLISH_AHEAD + 0.5)

        # Tokens signed before the rotation keep working, everywhere.
        info = await userinfo(http, discovery["userinfo_endpoint"], token["access_token"])
        assert info.status_code == 200, info.text
        introspected = await rp.introspect_token(discovery["introspection_endpoint"], token=token["access_token"])
        assert introspected.json()["active"] is True
        id_claims = validate_id_token(
            token["id_token"], jwks, discovery, client, access_token=token["access_token"], nonce=nonce
        )

        # New tokens are signed with the new keys (the refresh token itself was signed with an old one).
        refreshed = dict(await rp.refresh_token(discovery["token_endpoint"], refresh_token=token["refresh_token"]))
        assert kid_of(refreshed["access_token"]) in new_kids
        assert kid_of(refreshed["id_token"]) in new_kids
        assert kid_of(refreshed["refresh_token"]) in new_kids
        refreshed_claims = validate_id_token(
            refreshed["id_token"], jwks, discovery, client, access_token=refreshed["access_token"], nonce=None
        )
        assert refreshed_claims["sub"] == id_claims["sub"]
        info = await userinfo(http, discovery["userinfo_endpoint"], refreshed["access_token"])
        assert info.status_code == 200 and info.json()["sub"] == id_claims["sub"]
