"""The authorization endpoint, sign-in and consent, driven through the real pages.

Fatal errors (unknown client, unverified redirect URI) are rendered by the IdP and never redirect
(RFC 6749 §4.1.2.1, RFC 9700 §4.11.2); every other error goes back to the verified redirect URI with
``state`` and ``iss`` (RFC 9207), after the user has signed in unless the request says prompt=none
(RFC 9700 §4.11.2). Each test asserts the error code, the status and, where there is one, the
storage side effect.
"""

from __future__ import annotations

import base64
import html
import json
import re
import types
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import func, select, update

import idp.oauth.interactions as interactions_module
from idp.accounts.sessions.store import BrowserSession
from idp.oauth.clients import ClientSpec
from idp.storage.models import AuthorizationCode, Consent, OAuthClient, User
from tests.oauth_helpers import (
    PASSWORD,
    SPA_REDIRECT,
    WEB_REDIRECT,
    World,
    add_client,
    add_user,
    age_session,
    authorize,
    basic,
    code_flow,
    cookie_value,
    csrf_from,
    jwt_parts,
    login,
    make_world,
    pkce_pair,
    query_of,
)

SESSION_COOKIE = "idp_session"  # the issuer under test is http: no __Host- prefix


# -- helpers ---------------------------------------------------------------------------------------


def auth_params(client_id: str, redirect_uri: str | None = WEB_REDIRECT, **overrides: str | None) -> dict[str, str]:
    """A valid authorization request; ``None`` in overrides removes a parameter."""
    _, challenge = pkce_pair()
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid profile",
        "state": "st-123",
        "nonce": "n-456",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {key: value for key, value in params.items() if value is not None}


async def get_authorize(client: Any, params: dict[str, str] | list[tuple[str, str]]) -> Any:
    return await client.get(f"/authorize?{urlencode(params)}")


async def text_of(response: Any) -> str:
    return str(await response.get_data(as_text=True))


async def assert_error_page(response: Any, error: str) -> str:
    """An error the IdP shows itself: 400, HTML, never a redirect."""
    body = await text_of(response)
    assert response.status_code == 400, body
    assert response.mimetype == "text/html"
    assert "Location" not in response.headers
    assert f'<code id="error-code">{error}</code>' in body
    return body


def assert_redirect_to(response: Any, redirect_uri: str) -> dict[str, str]:
    assert response.status_code == 303, response.status_code
    location = response.headers["Location"]
    base, _, _ = location.partition("?")
    assert base == redirect_uri.partition("?")[0], location
    return query_of(location)


def assert_error_redirect(
    response: Any, runtime: Any, error: str, *, redirect_uri: str = WEB_REDIRECT, state: str | None = "st-123"
) -> dict[str, str]:
    result = assert_redirect_to(response, redirect_uri)
    assert result["error"] == error, result
    assert result["iss"] == runtime.settings.issuer
    assert "code" not in result
    if state is None:
        assert "state" not in result
    else:
        assert result["state"] == state
    return result


async def code_count(runtime: Any) -> int:
    async with runtime.db.session() as session:
        return int((await session.execute(select(func.count()).select_from(AuthorizationCode))).scalar_one())


async def exchange(client: Any, world: World, code: str, verifier: str | None) -> dict[str, Any]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": WEB_REDIRECT}
    if verifier:
        form["code_verifier"] = verifier
    response = await client.post("/token", form=form, headers=basic(world.web_id, world.web_secret))
    assert response.status_code == 200, await text_of(response)
    return dict(await response.get_json())


async def current_session(runtime: Any, client: Any) -> BrowserSession | None:
    session: BrowserSession | None = await runtime.sessions.load(cookie_value(client, SESSION_COOKIE))
    return session


@pytest.fixture
async def world(runtime: Any) -> World:
    return await make_world(runtime)


# -- phase one: client and redirect URI (fatal errors, never a redirect) ----------------------------


async def test_unknown_client_id_shows_an_error_page(client: Any, world: World) -> None:
    """RFC 6749 §4.1.2.1: without a verified client the IdP must not redirect."""
    response = await get_authorize(client, auth_params("no-such-client"))
    await assert_error_page(response, "invalid_client")


async def test_missing_client_id_shows_an_error_page(client: Any, world: World) -> None:
    params = auth_params(world.web_id)
    del params["client_id"]
    response = await get_authorize(client, params)
    await assert_error_page(response, "invalid_client")


async def test_repeated_client_id_shows_an_error_page(client: Any, world: World, runtime: Any) -> None:
    """RFC 6749 §3.1: parameters must not repeat; the first value must not silently win."""
    params = [*auth_params(world.web_id).items(), ("client_id", world.spa_id)]
    response = await get_authorize(client, params)
    await assert_error_page(response, "invalid_request")
    assert await code_count(runtime) == 0


async def test_disabled_client_shows_an_error_page(client: Any, world: World, runtime: Any) -> None:
    async with runtime.db.session() as session:
        await session.execute(update(OAuthClient).where(OAuthClient.id == world.web_id).values(disabled=True))
    response = await get_authorize(client, auth_params(world.web_id))
    await assert_error_page(response, "invalid_client")


async def test_unregistered_redirect_uri_shows_an_error_page(client: Any, world: World) -> None:
    """OIDCCEnsureRegisteredRedirectUri; RFC 9700 §2.1 exact matching."""
    response = await get_authorize(client, auth_params(world.web_id, "https://evil.example/callback"))
    await assert_error_page(response, "invalid_request")


async def test_redirect_uri_with_an_added_query_shows_an_error_page(client: Any, world: World) -> None:
    """OIDCCRedirectUriQueryAdded: ``?foo=bar`` appended is not the registered URI."""
    response = await get_authorize(client, auth_params(world.web_id, WEB_REDIRECT + "?foo=bar"))
    await assert_error_page(response, "invalid_request")


async def test_missing_redirect_uri_with_two_registered_shows_an_error_page(client: Any, runtime: Any) -> None:
    """OIDCCEnsureRedirectUriInAuthorizationRequest (OIDC Core §3.1.2.1: redirect_uri is required)."""
    client_id, _ = await add_client(
        runtime,
        ClientSpec(
            name="Two URIs",
            client_type="confidential",
            redirect_uris=["https://rp.example/a", "https://rp.example/b"],
        ),
    )
    response = await get_authorize(client, auth_params(client_id, None))
    await assert_error_page(response, "invalid_request")


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("openid", id="openid"),
        pytest.param("profile openid email", id="openid-among-others"),
        pytest.param("openid admin", id="openid-and-an-invalid-scope"),
    ],
)
async def test_openid_request_without_redirect_uri_shows_an_error_page(
    client: Any, world: World, runtime: Any, scope: str
) -> None:
    """L3, OIDC Core §3.1.2.1: redirect_uri is REQUIRED in an OpenID request, even when the
    client has a single registered URI. Fatal: nothing was verified to redirect to."""
    await code_flow(client, world)  # signed in and consented: a valid request would get a code at once
    before = await code_count(runtime)
    response = await get_authorize(client, auth_params(world.web_id, None, scope=scope))
    body = await assert_error_page(response, "invalid_request")
    assert "redirect_uri" in body
    assert await code_count(runtime) == before


async def test_openid_request_with_a_repeated_scope_and_no_redirect_uri_shows_an_error_page(
    client: Any, world: World, runtime: Any
) -> None:
    """A repeated scope is invalid anyway; one of its values asking for openid still makes the
    missing redirect_uri fatal rather than a redirect to the registered URI."""
    params = [*auth_params(world.web_id, None, scope="profile").items(), ("scope", "openid")]
    await assert_error_page(await get_authorize(client, params), "invalid_request")


async def test_plain_oauth_request_may_omit_redirect_uri_with_one_registered(
    client: Any, world: World, runtime: Any
) -> None:
    """RFC 6749 §3.1.2.3: without openid, a single registered URI may be left out; the code goes
    to it and records that the request did not carry it (RFC 6749 §4.1.3)."""
    response, _ = await authorize(client, world.web_id, None, email=world.email, scope="profile")
    result = assert_redirect_to(response, WEB_REDIRECT)
    async with runtime.db.session() as session:
        row = (await session.execute(select(AuthorizationCode))).scalar_one()
    assert row.redirect_uri == WEB_REDIRECT
    assert row.redirect_uri_in_request is False
    assert result["code"]


async def test_fatal_errors_are_not_redirected_even_with_other_errors(client: Any, world: World) -> None:
    """An invalid response_type must not turn an unregistered redirect_uri into a redirect."""
    response = await get_authorize(
        client, auth_params(world.web_id, "https://evil.example/cb", response_type="token", scope=None)
    )
    await assert_error_page(response, "invalid_request")


async def test_registered_redirect_uri_with_a_query_is_kept_and_the_code_appended(
    client: Any, world: World, runtime: Any
) -> None:
    """OIDCCRedirectUriQueryOK: the registered query stays, the response is appended with ``&``."""
    redirect_uri = "https://rp.example/cb?x=1"
    client_id, _ = await add_client(
        runtime, ClientSpec(name="Query", client_type="confidential", redirect_uris=[redirect_uri])
    )
    response, _ = await authorize(client, client_id, redirect_uri, email=world.email)
    location = response.headers["Location"]
    assert response.status_code == 303
    assert location.startswith(redirect_uri + "&code=")
    result = query_of(location)
    assert result["x"] == "1" and result["code"] and result["state"] == "st-123"


async def test_native_client_may_use_any_port_on_the_loopback_ip(client: Any, world: World, runtime: Any) -> None:
    """RFC 8252 §7.3: the port of a loopback IP redirect URI is chosen at run time."""
    client_id, _ = await add_client(
        runtime,
        ClientSpec(
            name="Native", client_type="public", application_type="native", redirect_uris=["http://127.0.0.1/cb"]
        ),
    )
    redirect_uri = "http://127.0.0.1:53127/cb"
    response, verifier = await authorize(client, client_id, redirect_uri, email=world.email)
    result = assert_redirect_to(response, redirect_uri)
    assert response.headers["Location"].startswith(redirect_uri + "?")
    token = await client.post(
        "/token",
        form={
            "grant_type": "authorization_code",
            "code": result["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier or "",
            "client_id": client_id,
        },
    )
    assert token.status_code == 200, await text_of(token)
    # Only the port is free: another path is still refused.
    other_path = await get_authorize(client, auth_params(client_id, "http://127.0.0.1:53127/other"))
    await assert_error_page(other_path, "invalid_request")


async def test_web_client_gets_no_port_freedom_on_loopback(client: Any, runtime: Any) -> None:
    client_id, _ = await add_client(
        runtime, ClientSpec(name="Web loopback", client_type="public", redirect_uris=["http://127.0.0.1/cb"])
    )
    response = await get_authorize(client, auth_params(client_id, "http://127.0.0.1:53127/cb"))
    await assert_error_page(response, "invalid_request")


async def test_localhost_gets_no_port_freedom(client: Any, runtime: Any) -> None:
    """RFC 8252 §8.3: ``localhost`` is not recommended; only loopback IP literals get any port."""
    client_id, _ = await add_client(
        runtime,
        ClientSpec(
            name="Native localhost",
            client_type="public",
            application_type="native",
            redirect_uris=["http://localhost/cb"],
        ),
    )
    response = await get_authorize(client, auth_params(client_id, "http://localhost:53127/cb"))
    await assert_error_page(response, "invalid_request")


NATIVE_LOOPBACK = "http://127.0.0.1/cb"

# [10.4.1] [§2.1] RFC 9700 §2.1, RFC 8252 §7.3: for a native client's loopback IP redirect URI only
# the port may differ, and it must be a port: 1-65535 in ASCII digits. RFC 6749 §3.1.2: never a
# fragment. Everything else is compared as an exact string.
NOT_THE_REGISTERED_LOOPBACK_URI = [
    pytest.param("http://evil@127.0.0.1:5555/cb", id="userinfo"),
    pytest.param("http://evil@127.0.0.1/cb", id="userinfo-no-port"),
    pytest.param("http://evil:pw@127.0.0.1:5555/cb", id="userinfo-with-password"),
    pytest.param("http://127.0.0.1:5555@evil.example/cb", id="port-then-userinfo"),
    pytest.param("http://127.0.0.1:5555/cb#frag", id="fragment"),
    pytest.param("http://127.0.0.1/cb#frag", id="fragment-no-port"),
    pytest.param("http://127.0.0.1:5555/cb#", id="empty-fragment"),
    pytest.param("http://127.0.0.1:notaport/cb", id="port-not-a-number"),
    pytest.param("http://127.0.0.1:99999/cb", id="port-out-of-range"),
    pytest.param("http://127.0.0.1:65536/cb", id="port-65536"),
    pytest.param("http://127.0.0.1:0/cb", id="port-zero"),
    pytest.param("http://127.0.0.1:/cb", id="port-empty"),
    pytest.param("http://127.0.0.1:+5555/cb", id="port-plus"),
    pytest.param("http://127.0.0.1:05555/cb", id="port-leading-zero"),
    pytest.param("http://127.0.0.1:\u0665\u0665\u0665\u0665/cb", id="port-arabic-indic-digits"),
    pytest.param("http://127.0.0.1:5555 /cb", id="port-trailing-space"),
    pytest.param("http://127.0.0.1:5555/cb?x=1", id="query-added"),
    pytest.param("http://127.0.0.1:5555/cb/", id="path-differs"),
    pytest.param("http://127.0.0.1:5555/CB", id="path-case-differs"),
    pytest.param("https://127.0.0.1:5555/cb", id="scheme-differs"),
    pytest.param("HTTP://127.0.0.1:5555/cb", id="scheme-case-differs"),
    pytest.param("http://127.0.0.2:5555/cb", id="another-loopback-address"),
    pytest.param("http://[::1]:5555/cb", id="ipv6-loopback-for-ipv4-registration"),
    pytest.param("http://localhost:5555/cb", id="localhost"),
]


@pytest.mark.parametrize("redirect_uri", NOT_THE_REGISTERED_LOOPBACK_URI)
async def test_native_loopback_redirect_uri_may_differ_only_in_a_valid_port(
    client: Any, world: World, runtime: Any, redirect_uri: str
) -> None:
    """L1: fatal (an error page, never a redirect), even for a signed-in user who has consented,
    for whom a matching URI would get a code at once."""
    client_id, _ = await add_client(
        runtime,
        ClientSpec(name="Native", client_type="public", application_type="native", redirect_uris=[NATIVE_LOOPBACK]),
    )
    first_party = await add_client(
        runtime,
        ClientSpec(
            name="Native own",
            client_type="public",
            application_type="native",
            redirect_uris=[NATIVE_LOOPBACK],
            first_party=True,
        ),
    )
    await login(client, world.email)
    for cid in (client_id, first_party[0]):
        response = await get_authorize(client, auth_params(cid, redirect_uri))
        await assert_error_page(response, "invalid_request")
        response = await client.post("/authorize", form=auth_params(cid, redirect_uri))
        await assert_error_page(response, "invalid_request")
    assert await code_count(runtime) == 0


@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        pytest.param(NATIVE_LOOPBACK, "http://127.0.0.1:1/cb", id="port-1"),
        pytest.param(NATIVE_LOOPBACK, "http://127.0.0.1:65535/cb", id="port-65535"),
        pytest.param(NATIVE_LOOPBACK, NATIVE_LOOPBACK, id="exact"),
        pytest.param("http://127.0.0.1:8000/cb?app=1", "http://127.0.0.1:49152/cb?app=1", id="registered-port-query"),
        pytest.param("http://127.0.0.1:8000/cb", "http://127.0.0.1/cb", id="port-omitted"),
        pytest.param("http://[::1]/cb", "http://[::1]:49152/cb", id="ipv6"),
    ],
)
async def test_native_loopback_redirect_uri_with_another_port_gets_the_code(
    client: Any, world: World, runtime: Any, registered: str, requested: str
) -> None:
    """RFC 8252 §7.3: any port on the registered loopback IP literal; the code goes exactly there."""
    client_id, _ = await add_client(
        runtime,
        ClientSpec(
            name="Native", client_type="public", application_type="native", redirect_uris=[registered], first_party=True
        ),
    )
    response, _ = await authorize(client, client_id, requested, email=world.email)
    separator = "&" if "?" in requested else "?"
    assert response.status_code == 303
    assert response.headers["Location"].startswith(requested + separator + "code="), response.headers["Location"]


async def test_a_redirect_uri_with_a_fragment_is_never_accepted(client: Any, world: World, runtime: Any) -> None:
    """[§2.1] RFC 6749 §3.1.2: the redirection endpoint URI MUST NOT include a fragment, whatever
    is registered (a row written before registration refused them, or by hand)."""
    async with runtime.db.session() as session:
        await session.execute(
            update(OAuthClient)
            .where(OAuthClient.id == world.web_id)
            .values(redirect_uris=[WEB_REDIRECT, WEB_REDIRECT + "#frag"])
        )
    await login(client, world.email)
    response = await get_authorize(client, auth_params(world.web_id, WEB_REDIRECT + "#frag"))
    await assert_error_page(response, "invalid_request")
    assert await code_count(runtime) == 0


# -- phase two: redirectable errors ----------------------------------------------------------------


REDIRECTED_ERRORS = [
    pytest.param({"response_type": None}, "invalid_request", id="response_type-missing"),
    pytest.param({"response_type": "token"}, "unsupported_response_type", id="response_type-token"),
    pytest.param({"response_type": "code id_token"}, "unsupported_response_type", id="response_type-hybrid"),
    pytest.param({"scope": "openid admin"}, "invalid_scope", id="scope-not-allowed"),
    pytest.param({"scope": None}, "invalid_scope", id="scope-missing"),
    pytest.param({"code_challenge": None, "code_challenge_method": None}, "invalid_request", id="pkce-missing"),
    pytest.param({"code_challenge_method": "plain"}, "invalid_request", id="pkce-plain"),
    pytest.param({"code_challenge": "a" * 42}, "invalid_request", id="pkce-challenge-too-short"),
    pytest.param({"code_challenge": "a" * 129}, "invalid_request", id="pkce-challenge-too-long"),
    # [10.4.6] RFC 7636 §4.2 ABNF: "$" would also match before a trailing newline (L5).
    pytest.param({"code_challenge": "A" * 43 + "\n"}, "invalid_request", id="pkce-challenge-trailing-newline"),
    pytest.param({"code_challenge": "\n" + "A" * 43}, "invalid_request", id="pkce-challenge-leading-newline"),
    pytest.param({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported", id="request"),
    pytest.param({"request_uri": "https://rp.example/request.jwt"}, "request_uri_not_supported", id="request_uri"),
    pytest.param({"prompt": "sometimes"}, "invalid_request", id="prompt-unknown"),
    pytest.param({"max_age": "abc"}, "invalid_request", id="max_age-not-a-number"),
    pytest.param({"max_age": "-1"}, "invalid_request", id="max_age-negative"),
    # ASVS 2.2.1: ASCII digits only; str.isdigit() and int() take other scripts' digits (M5).
    pytest.param({"max_age": "\u00b2"}, "invalid_request", id="max_age-superscript-two"),
    pytest.param({"max_age": "\u0663"}, "invalid_request", id="max_age-arabic-indic-three"),
    pytest.param({"max_age": "\uff11"}, "invalid_request", id="max_age-fullwidth-one"),
    pytest.param({"max_age": "1\u00b2"}, "invalid_request", id="max_age-ascii-then-superscript"),
    pytest.param({"max_age": "+1"}, "invalid_request", id="max_age-plus"),
    pytest.param({"max_age": " 1"}, "invalid_request", id="max_age-leading-space"),
    pytest.param({"max_age": "1 "}, "invalid_request", id="max_age-trailing-space"),
    pytest.param({"max_age": "1\n"}, "invalid_request", id="max_age-trailing-newline"),
    pytest.param({"max_age": "1_0"}, "invalid_request", id="max_age-underscore"),
    pytest.param({"max_age": "1" * 11}, "invalid_request", id="max_age-eleven-digits"),
    pytest.param({"response_mode": "fragment"}, "invalid_request", id="response_mode-fragment"),
]


async def sign_in_for_the_parked_error(client: Any, world: World, runtime: Any, response: Any) -> Any:
    """[§4.11.2] L2: without a signed-in session the error is not sent to the client yet: the browser
    goes to the sign-in page with a resume URL bound to it, and nothing reaches the client. Signs in
    and returns the resume route's answer."""
    assert response.status_code == 303, await text_of(response)
    location = response.headers["Location"]
    assert location.startswith("/login?"), location
    resume = query_of(location)["return_to"]
    assert re.fullmatch(r"/authorize/resume/[A-Za-z0-9_-]+", resume), resume
    # Bound like a parked request: the interaction cookie, for the interaction's lifetime.
    binding = [value for value in response.headers.getlist("Set-Cookie") if value.startswith("idp_interaction=")]
    assert len(binding) == 1 and f"Max-Age={runtime.interactions.ttl}" in binding[0], binding
    assert await code_count(runtime) == 0
    signed_in = await login(client, world.email, return_to=resume)
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == resume
    return await client.get(resume)


@pytest.mark.parametrize(("overrides", "error"), REDIRECTED_ERRORS)
async def test_invalid_requests_are_redirected_with_state_and_iss_after_sign_in(
    client: Any, world: World, runtime: Any, overrides: dict[str, str | None], error: str
) -> None:
    """RFC 6749 §4.1.2.1 / OIDC Core §3.1.2.6 error codes, with ``iss`` (RFC 9207 §2). [§4.11.2]
    RFC 9700 §4.11.2 (L2): the user authenticates first, even for an error response."""
    response = await get_authorize(client, auth_params(world.web_id, **overrides))
    final = await sign_in_for_the_parked_error(client, world, runtime, response)
    assert_error_redirect(final, runtime, error)
    assert await code_count(runtime) == 0
    # Delivered once: the parked error is gone.
    replay = await client.get(query_of(response.headers["Location"])["return_to"])
    await assert_error_page(replay, "invalid_request")


@pytest.mark.parametrize(("overrides", "error"), REDIRECTED_ERRORS)
async def test_invalid_requests_of_a_signed_in_user_are_redirected_at_once(
    client: Any, world: World, runtime: Any, overrides: dict[str, str | None], error: str
) -> None:
    """[§4.11.2] The user is authenticated already: the error goes straight back, with state and iss."""
    await login(client, world.email)
    response = await get_authorize(client, auth_params(world.web_id, **overrides))
    assert_error_redirect(response, runtime, error)
    assert await code_count(runtime) == 0


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        pytest.param({"prompt": "none", "scope": "openid admin"}, "invalid_scope", id="scope-not-allowed"),
        pytest.param({"prompt": "none", "response_type": "token"}, "unsupported_response_type", id="response_type"),
        pytest.param({"prompt": "none", "max_age": "\u00b2"}, "invalid_request", id="max_age-superscript"),
        pytest.param({"prompt": "none", "code_challenge": None}, "invalid_request", id="pkce-missing"),
    ],
)
async def test_prompt_none_errors_are_redirected_at_once_without_a_session(
    client: Any, world: World, runtime: Any, overrides: dict[str, str | None], error: str
) -> None:
    """[§4.11.2] The prompt=none exception: the client asked for no user interaction, so the error
    (like login_required) goes back at once. The raw prompt decides: validation may have failed."""
    response = await get_authorize(client, auth_params(world.web_id, **overrides))
    assert_error_redirect(response, runtime, error)
    assert cookie_value(client, "idp_interaction") is None  # nothing parked
    assert await code_count(runtime) == 0


async def test_repeated_prompt_with_none_is_redirected_at_once(client: Any, world: World, runtime: Any) -> None:
    params = [*auth_params(world.web_id, prompt="none").items(), ("prompt", "login")]
    assert_error_redirect(await get_authorize(client, params), runtime, "invalid_request")


async def test_invalid_post_request_waits_for_sign_in(client: Any, world: World, runtime: Any) -> None:
    """[§4.11.2] POST /authorize (OIDC Core §3.1.2.1) follows the same rule; 303 (RFC 9700 §4.12)."""
    response = await client.post("/authorize", form=auth_params(world.web_id, scope="openid admin"))
    final = await sign_in_for_the_parked_error(client, world, runtime, response)
    assert_error_redirect(final, runtime, "invalid_scope")


async def test_a_disabled_users_session_does_not_count_as_signed_in(client: Any, world: World, runtime: Any) -> None:
    """[§4.11.2] Only a signed-in session of an enabled user releases the error at once."""
    await login(client, world.email)
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == world.user_id).values(disabled=True))
    response = await get_authorize(client, auth_params(world.web_id, response_type="token"))
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?"), response.headers["Location"]
    assert await current_session(runtime, client) is None  # and the session has ended
    assert await code_count(runtime) == 0


async def test_parked_error_needs_a_sign_in_at_resume(client: Any, world: World, runtime: Any) -> None:
    """Opening the resume URL without signing in goes back to the sign-in page, not to the client."""
    response = await get_authorize(client, auth_params(world.web_id, scope="openid admin"))
    resume = query_of(response.headers["Location"])["return_to"]
    again = await client.get(resume)
    assert again.status_code == 303
    assert again.headers["Location"] == response.headers["Location"]
    await login(client, world.email, return_to=resume)
    assert_error_redirect(await client.get(resume), runtime, "invalid_scope")


async def test_parked_error_is_bound_to_the_browser(app: Any, world: World, runtime: Any) -> None:
    """The resume URL of a parked error is useless in another browser, even a signed-in one: it
    can't be used to make the IdP redirect someone else (RFC 9700 §4.11.2)."""
    browser_a, browser_b = app.test_client(), app.test_client()
    response = await get_authorize(browser_a, auth_params(world.web_id, response_type="token"))
    resume = query_of(response.headers["Location"])["return_to"]
    await login(browser_b, world.email)
    await get_authorize(browser_b, auth_params(world.web_id, response_type="token"))  # its own binding
    await assert_error_page(await browser_b.get(resume), "invalid_request")
    await assert_error_page(await browser_b.get(resume.replace("resume", "consent")), "invalid_request")
    # Browser A still gets its error after signing in.
    await login(browser_a, world.email, return_to=resume)
    assert_error_redirect(await browser_a.get(resume), runtime, "unsupported_response_type")


async def test_parked_error_has_no_consent_step(client: Any, world: World, runtime: Any) -> None:
    response = await get_authorize(client, auth_params(world.web_id, scope="openid admin"))
    resume = query_of(response.headers["Location"])["return_to"]
    await login(client, world.email, return_to=resume)
    consent = resume.replace("resume", "consent")
    await assert_error_page(await client.get(consent), "invalid_request")
    await assert_error_page(await client.post(consent, form={"decision": "allow"}), "invalid_request")
    assert await code_count(runtime) == 0
    assert_error_redirect(await client.get(resume), runtime, "invalid_scope")


async def test_parked_error_of_a_client_disabled_meanwhile_is_an_error_page(
    client: Any, world: World, runtime: Any
) -> None:
    response = await get_authorize(client, auth_params(world.web_id, scope="openid admin"))
    resume = query_of(response.headers["Location"])["return_to"]
    async with runtime.db.session() as session:
        await session.execute(update(OAuthClient).where(OAuthClient.id == world.web_id).values(disabled=True))
    await login(client, world.email, return_to=resume)
    await assert_error_page(await client.get(resume), "invalid_client")


async def test_invalid_id_token_hint_without_a_session_waits_for_sign_in(
    app: Any, client: Any, world: World, runtime: Any
) -> None:
    """[§4.11.2] The id_token_hint check runs after parsing (it needs the keys), but is held back
    the same way; with prompt=none it goes back at once."""
    first = await code_flow(app.test_client(), world)
    header, payload, signature = first["id_token"].split(".")
    forged = f"{header}.{payload[:-4]}AAAA.{signature}"
    params = auth_params(world.web_id, scope="openid profile email", id_token_hint=forged)
    silent = await get_authorize(client, {**params, "prompt": "none"})
    assert_error_redirect(silent, runtime, "invalid_request")
    before = await code_count(runtime)  # the code of the flow that got the ID token
    response = await get_authorize(client, params)
    assert response.status_code == 303 and response.headers["Location"].startswith("/login?")
    resume = query_of(response.headers["Location"])["return_to"]
    await login(client, world.email, return_to=resume)
    assert_error_redirect(await client.get(resume), runtime, "invalid_request")
    assert await code_count(runtime) == before


async def test_public_client_without_pkce_is_refused(client: Any, world: World, runtime: Any) -> None:
    """RFC 9700 §2.1.1: PKCE is required of public clients (reported after sign-in, RFC 9700 §4.11.2)."""
    params = auth_params(world.spa_id, SPA_REDIRECT, code_challenge=None, code_challenge_method=None)
    response = await get_authorize(client, params)
    final = await sign_in_for_the_parked_error(client, world, runtime, response)
    assert_error_redirect(final, runtime, "invalid_request", redirect_uri=SPA_REDIRECT)


async def test_a_repeated_parameter_is_invalid_request(client: Any, world: World, runtime: Any) -> None:
    """RFC 6749 §3.1: request parameters MUST NOT be included more than once."""
    params = [*auth_params(world.web_id).items(), ("scope", "openid email")]
    response = await get_authorize(client, params)
    final = await sign_in_for_the_parked_error(client, world, runtime, response)
    assert_error_redirect(final, runtime, "invalid_request")


async def test_error_redirect_without_state_carries_none(client: Any, world: World, runtime: Any) -> None:
    response = await get_authorize(client, auth_params(world.web_id, state=None, response_type="token"))
    final = await sign_in_for_the_parked_error(client, world, runtime, response)
    assert_error_redirect(final, runtime, "unsupported_response_type", state=None)


async def test_error_in_form_post_mode_is_posted(client: Any, world: World, runtime: Any) -> None:
    response = await get_authorize(client, auth_params(world.web_id, response_mode="form_post", scope="admin"))
    final = await sign_in_for_the_parked_error(client, world, runtime, response)
    assert final.status_code == 200
    assert "Location" not in final.headers
    fields = form_post_fields(await text_of(final), WEB_REDIRECT)
    assert fields["error"] == "invalid_scope"
    assert fields["state"] == "st-123" and fields["iss"] == runtime.settings.issuer


# -- successful responses --------------------------------------------------------------------------


def form_post_fields(body: str, action: str) -> dict[str, str]:
    form = re.search(r'<form method="post" action="([^"]*)"', body)
    assert form, body
    assert html.unescape(form.group(1)) == action
    return {
        html.unescape(name): html.unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', body)
    }


async def test_success_carries_code_state_and_iss(client: Any, world: World, runtime: Any) -> None:
    """RFC 6749 §4.1.2 and RFC 9207: a long state (1,000 characters) comes back unchanged."""
    state = ("aZ09-._~ +&=?/%é" * 63)[:1000]
    assert len(state) == 1000
    response, _ = await authorize(client, world.web_id, WEB_REDIRECT, email=world.email, state=state)
    result = assert_redirect_to(response, WEB_REDIRECT)
    assert result["state"] == state
    assert result["iss"] == runtime.settings.issuer
    assert len(result["code"]) >= 32
    assert await code_count(runtime) == 1


async def test_unknown_parameters_are_ignored(client: Any, world: World, runtime: Any) -> None:
    """OIDCCEnsureRequestWithUnknownParameterSucceeds (OIDC Core §3.1.2.1)."""
    response, _ = await authorize(
        client, world.web_id, WEB_REDIRECT, email=world.email, extra="value", claims_locales="fr", ui_locales="de"
    )
    result = assert_redirect_to(response, WEB_REDIRECT)
    assert result["code"] and "error" not in result


async def test_post_to_authorize_works_like_get(client: Any, world: World, runtime: Any) -> None:
    """OIDCCEnsurePostRequestSucceeds (OIDC Core §3.1.2.1: GET and POST must be supported)."""
    await login(client, world.email)
    await code_flow(client, world)  # consent is remembered
    verifier, challenge = pkce_pair()
    response = await client.post(
        "/authorize", form=auth_params(world.web_id, scope="openid profile email", code_challenge=challenge)
    )
    result = assert_redirect_to(response, WEB_REDIRECT)
    tokens = await exchange(client, world, result["code"], verifier)
    assert tokens["token_type"] == "Bearer"


async def test_form_post_response_mode(client: Any, world: World, runtime: Any) -> None:
    """OAuth 2.0 Form Post Response Mode §2: an auto-submitting form to the redirect URI."""
    state = 'form <post> & "state"'
    response, verifier = await authorize(
        client, world.web_id, WEB_REDIRECT, email=world.email, response_mode="form_post", state=state
    )
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "Location" not in response.headers
    fields = form_post_fields(await text_of(response), WEB_REDIRECT)
    assert set(fields) == {"code", "state", "iss"}
    assert fields["state"] == state and fields["iss"] == runtime.settings.issuer
    csp = response.headers["Content-Security-Policy"]
    assert "form-action https://rp.example;" in csp or csp.endswith("form-action https://rp.example")
    assert "frame-ancestors 'none'" in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert (await exchange(client, world, fields["code"], verifier))["access_token"]


# -- prompt, max_age, id_token_hint ----------------------------------------------------------------


async def test_prompt_none_without_a_session_is_login_required(client: Any, world: World, runtime: Any) -> None:
    """OIDCCPromptNoneNotLoggedIn (OIDC Core §3.1.2.6)."""
    state = "x" * 1000
    response = await get_authorize(client, auth_params(world.web_id, prompt="none", state=state))
    assert_error_redirect(response, runtime, "login_required", state=state)
    assert await code_count(runtime) == 0


async def test_prompt_none_with_a_session_but_no_consent_is_consent_required(
    client: Any, world: World, runtime: Any
) -> None:
    await login(client, world.email)
    response = await get_authorize(client, auth_params(world.web_id, prompt="none"))
    assert_error_redirect(response, runtime, "consent_required")
    assert await code_count(runtime) == 0


async def test_prompt_none_with_session_and_consent_returns_a_code_without_any_page(
    client: Any, world: World, runtime: Any
) -> None:
    """OIDCCPromptNoneLoggedIn: no UI; the same ``sub`` in both ID tokens."""
    first = await code_flow(client, world)
    verifier, challenge = pkce_pair()
    params = auth_params(world.web_id, prompt="none", scope="openid profile email", code_challenge=challenge)
    response = await get_authorize(client, params)
    result = assert_redirect_to(response, WEB_REDIRECT)
    second = await exchange(client, world, result["code"], verifier)
    assert jwt_parts(second["id_token"])[1]["sub"] == jwt_parts(first["id_token"])[1]["sub"] == world.user_id


async def test_prompt_login_forces_a_new_sign_in_with_a_later_auth_time(
    client: Any, world: World, runtime: Any
) -> None:
    """OIDCCPromptLogin (OIDC Core §3.1.2.1): re-authentication, later ``auth_time``."""
    await login(client, world.email)
    await age_session(runtime, client, 30)
    first = await code_flow(client, world)
    first_auth_time = jwt_parts(first["id_token"])[1]["auth_time"]
    old_cookie = cookie_value(client, SESSION_COOKIE)

    response = await get_authorize(client, auth_params(world.web_id, prompt="login", scope="openid profile email"))
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?")

    second = await code_flow(client, world, prompt="login")
    assert jwt_parts(second["id_token"])[1]["auth_time"] >= first_auth_time + 30
    assert cookie_value(client, SESSION_COOKIE) != old_cookie


async def test_prompt_login_is_not_satisfied_by_the_old_session_in_the_same_second(
    client: Any, world: World, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prompt=login: going straight to the resume URL without signing in again must not yield a
    code, even when the interaction starts in the same second as the existing sign-in."""
    await code_flow(client, world)  # signed in and consented
    session = await current_session(runtime, client)
    assert session is not None
    # Pin the interaction's clock to the second of the existing sign-in.
    monkeypatch.setattr(interactions_module, "time", types.SimpleNamespace(time=lambda: session.auth_time))
    response = await get_authorize(client, auth_params(world.web_id, prompt="login", scope="openid profile email"))
    assert response.headers["Location"].startswith("/login?")
    resume = query_of(response.headers["Location"])["return_to"]
    again = await client.get(resume)
    assert again.status_code == 303
    assert again.headers["Location"].startswith("/login?"), again.headers["Location"]
    assert await code_count(runtime) == 1  # only the first flow's code


async def test_max_age_elapsed_forces_sign_in_and_the_id_token_has_auth_time(
    client: Any, world: World, runtime: Any
) -> None:
    """OIDCCMaxAge1 (OIDC Core §3.1.2.1): after max_age the user signs in again; auth_time present."""
    await code_flow(client, world)
    await age_session(runtime, client, 5)
    response = await get_authorize(client, auth_params(world.web_id, max_age="1", scope="openid profile email"))
    assert response.headers["Location"].startswith("/login?")
    tokens = await code_flow(client, world, max_age="1")
    claims = jwt_parts(tokens["id_token"])[1]
    assert "auth_time" in claims
    assert claims["auth_time"] >= claims["iat"] - 5


async def test_max_age_zero_is_prompt_login(client: Any, world: World, runtime: Any) -> None:
    """OIDC Core §3.1.2.1: "max_age=0 is equivalent to prompt=login", even right after a sign-in."""
    await code_flow(client, world)
    response = await get_authorize(client, auth_params(world.web_id, max_age="0", scope="openid profile email"))
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?")
    tokens = await code_flow(client, world, max_age="0")  # signing in again satisfies it
    assert "auth_time" in jwt_parts(tokens["id_token"])[1]


async def test_max_age_not_elapsed_needs_no_sign_in(client: Any, world: World, runtime: Any) -> None:
    """OIDCCMaxAge10000."""
    await code_flow(client, world)
    response = await get_authorize(client, auth_params(world.web_id, max_age="10000", scope="openid profile email"))
    result = assert_redirect_to(response, WEB_REDIRECT)
    assert result["code"]


async def test_id_token_hint_for_the_current_user_needs_no_sign_in(client: Any, world: World, runtime: Any) -> None:
    """OIDCCIdTokenHint (OIDC Core §3.1.2.1): an expired hint is fine, the user matches."""
    first = await code_flow(client, world)
    params = auth_params(world.web_id, prompt="none", scope="openid profile email", id_token_hint=first["id_token"])
    response = await get_authorize(client, params)
    assert assert_redirect_to(response, WEB_REDIRECT)["code"]
    response = await get_authorize(client, {**params, "prompt": ""})
    assert assert_redirect_to(response, WEB_REDIRECT)["code"]


async def test_id_token_hint_for_another_user_requires_sign_in(
    app: Any, client: Any, world: World, runtime: Any
) -> None:
    await add_user(runtime, "bob@example.com")
    bob_browser = app.test_client()
    bob_tokens = await code_flow(
        bob_browser, World("", "bob@example.com", world.spa_id, world.web_id, world.web_secret)
    )
    await code_flow(client, world)  # alice is signed in here

    hint = bob_tokens["id_token"]
    params = auth_params(world.web_id, scope="openid profile email", id_token_hint=hint)
    response = await get_authorize(client, {**params, "prompt": "none"})
    assert_error_redirect(response, runtime, "login_required")
    response = await get_authorize(client, params)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?")


async def test_tampered_id_token_hint_is_invalid_request(client: Any, world: World, runtime: Any) -> None:
    first = await code_flow(client, world)
    header, _, signature = first["id_token"].split(".")
    claims = jwt_parts(first["id_token"])[1]
    forged = dict(claims, sub="someone-else")
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    hint = f"{header}.{forged_payload}.{signature}"
    response = await get_authorize(client, auth_params(world.web_id, scope="openid profile email", id_token_hint=hint))
    assert_error_redirect(response, runtime, "invalid_request")
    assert await code_count(runtime) == 1


async def test_an_access_token_is_not_an_id_token_hint(client: Any, world: World, runtime: Any) -> None:
    """ASVS 9.2.2: a token of another type is refused even though we signed it."""
    first = await code_flow(client, world)
    params = auth_params(world.web_id, scope="openid profile email", id_token_hint=first["access_token"])
    response = await get_authorize(client, params)
    assert_error_redirect(response, runtime, "invalid_request")


# -- single sign-on and consent --------------------------------------------------------------------


async def test_second_client_reuses_the_session(client: Any, world: World, runtime: Any) -> None:
    """SSO: the second client sees no sign-in page, only its own consent."""
    await code_flow(client, world)
    response = await get_authorize(client, auth_params(world.spa_id, SPA_REDIRECT))
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/authorize/consent/")
    final, _ = await authorize(client, world.spa_id, SPA_REDIRECT)  # no email: must not need sign-in
    assert assert_redirect_to(final, SPA_REDIRECT)["code"]


async def test_consent_is_remembered_and_stored(client: Any, world: World, runtime: Any) -> None:
    await code_flow(client, world, scope="openid profile")
    async with runtime.db.session() as session:
        rows = (await session.execute(select(Consent))).scalars().all()
    assert [(row.user_id, row.client_id, sorted(row.scopes)) for row in rows] == [
        (world.user_id, world.web_id, ["openid", "profile"])
    ]
    # The same scopes (or fewer) again: straight back to the client.
    for scope in ("openid profile", "openid"):
        response = await get_authorize(client, auth_params(world.web_id, scope=scope))
        assert assert_redirect_to(response, WEB_REDIRECT)["code"]


async def test_a_scope_not_yet_consented_asks_again(client: Any, world: World, runtime: Any) -> None:
    await code_flow(client, world, scope="openid profile")
    response = await get_authorize(client, auth_params(world.web_id, scope="openid profile email"))
    assert response.headers["Location"].startswith("/authorize/consent/")
    page = await client.get(response.headers["Location"])
    assert 'data-scope="email"' in await text_of(page)


async def test_prompt_consent_always_asks(client: Any, world: World, runtime: Any) -> None:
    await code_flow(client, world, scope="openid profile")
    response = await get_authorize(client, auth_params(world.web_id, scope="openid profile", prompt="consent"))
    assert response.headers["Location"].startswith("/authorize/consent/")


async def test_denying_consent_is_access_denied(client: Any, world: World, runtime: Any) -> None:
    """OIDC Core §3.1.2.6 / RFC 6749 §4.1.2.1: access_denied, with state and iss."""
    await login(client, world.email)
    response = await get_authorize(client, auth_params(world.web_id))
    location = response.headers["Location"]
    page = await client.get(location)
    denied = await client.post(location, form={"csrf_token": csrf_from(await text_of(page)), "decision": "deny"})
    assert_error_redirect(denied, runtime, "access_denied")
    async with runtime.db.session() as session:
        assert (await session.execute(select(Consent))).first() is None
    assert await code_count(runtime) == 0
    # The interaction is finished: the consent page can't be replayed to allow after all.
    again = await client.get(location)
    await assert_error_page(again, "invalid_request")


async def test_a_repeated_consent_decision_is_refused(client: Any, world: World, runtime: Any) -> None:
    """Read through idp.oauth.params like every parameter here: the first copy does not win."""
    await login(client, world.email)
    response = await get_authorize(client, auth_params(world.web_id))
    location = response.headers["Location"]
    page = await client.get(location)
    form = [("csrf_token", csrf_from(await text_of(page))), ("decision", "allow"), ("decision", "deny")]
    refused = await client.post(
        location, data=urlencode(form), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert "decision is repeated" in await assert_error_page(refused, "invalid_request")
    assert await code_count(runtime) == 0
    async with runtime.db.session() as session:
        assert (await session.execute(select(Consent))).first() is None


async def test_first_party_clients_skip_consent(client: Any, world: World, runtime: Any) -> None:
    client_id, _ = await add_client(
        runtime,
        ClientSpec(name="Own app", client_type="confidential", redirect_uris=[WEB_REDIRECT], first_party=True),
    )
    await login(client, world.email)
    response = await get_authorize(client, auth_params(client_id))
    assert assert_redirect_to(response, WEB_REDIRECT)["code"]
    response = await get_authorize(client, auth_params(client_id, prompt="none"))
    assert assert_redirect_to(response, WEB_REDIRECT)["code"]


@pytest.mark.parametrize("token", [None, "0" * 64, "not-a-token"])
async def test_consent_post_needs_the_csrf_token(client: Any, world: World, runtime: Any, token: str | None) -> None:
    """ASVS 3.5.1: a forged consent post is refused and yields no code."""
    await login(client, world.email)
    response = await get_authorize(client, auth_params(world.web_id))
    location = response.headers["Location"]
    await client.get(location)
    form = {"decision": "allow"}
    if token is not None:
        form["csrf_token"] = token
    refused = await client.post(location, form=form)
    assert refused.status_code == 403
    assert "Location" not in refused.headers
    assert await code_count(runtime) == 0
    async with runtime.db.session() as session:
        assert (await session.execute(select(Consent))).first() is None


# -- the sign-in form ------------------------------------------------------------------------------


async def login_page_text(response: Any) -> str:
    body = await text_of(response)
    match = re.search(r'<p class="error" id="login-error" role="alert">([^<]*)</p>', body)
    assert match, body
    return match.group(1)


async def test_wrong_password_and_unknown_email_look_the_same(client: Any, world: World) -> None:
    """ASVS 6.3.8: no user enumeration through the sign-in answer."""
    wrong = await login(client, world.email, password="not-the-password-at-all")
    unknown = await login(client, "nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert await login_page_text(wrong) == await login_page_text(unknown)
    assert cookie_value(client, SESSION_COOKIE) is None


@pytest.mark.parametrize(("verified", "disabled"), [(True, True), (False, False)], ids=["disabled", "unverified"])
async def test_disabled_and_unverified_users_are_refused(
    client: Any, runtime: Any, verified: bool, disabled: bool
) -> None:
    await add_user(runtime, "carol@example.com", verified=verified, disabled=disabled)
    response = await login(client, "carol@example.com")
    assert response.status_code == 401
    assert "Location" not in response.headers
    assert cookie_value(client, SESSION_COOKIE) is None


async def test_login_post_needs_the_csrf_token(client: Any, world: World) -> None:
    await client.get("/login")
    response = await client.post("/login", form={"email": world.email, "password": PASSWORD, "return_to": "/"})
    assert response.status_code == 403
    assert cookie_value(client, SESSION_COOKIE) is None


@pytest.mark.parametrize(
    "return_to", ["https://evil.example/", "//evil.example/", "/\\evil.example", "http:/evil.example", "evil"]
)
async def test_return_to_outside_the_site_is_ignored(client: Any, world: World, return_to: str) -> None:
    """RFC 9700 §4.11: no open redirector after sign-in."""
    response = await login(client, world.email, return_to=return_to)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


async def test_login_issues_a_new_session_cookie(client: Any, world: World, runtime: Any) -> None:
    """ASVS 7.2.4 (session fixation): a new session at each sign-in; the old one ends. ASVS 3.3."""
    client.set_cookie("localhost", SESSION_COOKIE, "planted-by-an-attacker-" + "x" * 20)
    first = await login(client, world.email)
    first_value = cookie_value(client, SESSION_COOKIE)
    assert first_value and not first_value.startswith("planted")
    set_cookie = next(
        header for header in first.headers.getlist("Set-Cookie") if header.startswith(f"{SESSION_COOKIE}=")
    )
    attributes = [part.strip().lower() for part in set_cookie.split(";")]
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    assert not any(part.startswith("domain=") for part in attributes)

    await login(client, world.email)
    second_value = cookie_value(client, SESSION_COOKIE)
    assert second_value and second_value != first_value
    assert await runtime.sessions.load(first_value) is None
    assert await runtime.sessions.load(second_value) is not None


async def test_login_page_is_not_cached(client: Any) -> None:
    response = await client.get("/login")
    assert response.headers["Cache-Control"] == "no-store"


# -- interactions are bound to the browser ---------------------------------------------------------


async def test_resume_url_from_another_browser_is_refused(app: Any, world: World, runtime: Any) -> None:
    browser_a = app.test_client()
    browser_b = app.test_client()
    response = await get_authorize(browser_a, auth_params(world.web_id))
    resume = query_of(response.headers["Location"])["return_to"]
    assert resume.startswith("/authorize/resume/")

    # B, even signed in as the same user and with an interaction cookie of its own, can't use it.
    await login(browser_b, world.email)
    await get_authorize(browser_b, auth_params(world.web_id))
    for attempt in (await browser_b.get(resume), await browser_b.get(resume.replace("resume", "consent"))):
        await assert_error_page(attempt, "invalid_request")
    assert await code_count(runtime) == 0

    # A still can.
    await login(browser_a, world.email, return_to=resume)
    final = await browser_a.get(resume)
    assert final.headers["Location"].startswith("/authorize/consent/")


async def test_interactions_in_two_tabs_and_no_replay(client: Any, world: World, runtime: Any) -> None:
    """Two authorization requests in two tabs of one browser: finishing one leaves the other
    usable; a finished interaction can't be resumed again (single use)."""
    response = await get_authorize(client, auth_params(world.web_id))
    resume = query_of(response.headers["Location"])["return_to"]
    done, _ = await authorize(client, world.web_id, WEB_REDIRECT, email=world.email)
    assert assert_redirect_to(done, WEB_REDIRECT)["code"]
    await login(client, world.email, return_to=resume)
    first = await client.get(resume)
    assert assert_redirect_to(first, WEB_REDIRECT)["code"]
    replay = await client.get(resume)
    await assert_error_page(replay, "invalid_request")
    assert await code_count(runtime) == 2


# -- headers ---------------------------------------------------------------------------------------


def assert_anti_framing(response: Any) -> None:
    """RFC 9700 §4.16, ASVS 3.4: pages can't be framed; no referrer leaks codes or state."""
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_login_consent_and_error_pages_cannot_be_framed(client: Any, world: World) -> None:
    error_page = await get_authorize(client, auth_params("no-such-client"))
    response = await get_authorize(client, auth_params(world.web_id))
    login_page = await client.get(response.headers["Location"])
    assert login_page.status_code == 200
    await login(client, world.email, return_to=query_of(response.headers["Location"])["return_to"])
    resumed = await client.get(query_of(response.headers["Location"])["return_to"])
    consent_page = await client.get(resumed.headers["Location"])
    assert consent_page.status_code == 200 and "consent-form" in await text_of(consent_page)
    for page in (error_page, login_page, consent_page):
        assert_anti_framing(page)
        assert page.headers["Cache-Control"] == "no-store"


async def test_authorize_sends_no_cors_headers(client: Any, world: World) -> None:
    """RFC 9700 §2.6: the authorization endpoint is not for cross-origin scripts."""
    headers = {"Origin": "http://127.0.0.1:8080"}
    for response in (
        await client.get(f"/authorize?{urlencode(auth_params(world.spa_id, SPA_REDIRECT))}", headers=headers),
        await client.post("/authorize", form=auth_params(world.spa_id, SPA_REDIRECT), headers=headers),
        await client.options("/authorize", headers={**headers, "Access-Control-Request-Method": "GET"}),
    ):
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_redirects_after_post_are_303(client: Any, world: World, runtime: Any) -> None:
    """RFC 9700 §4.12: 307 would re-post the credentials to the client."""
    response = await client.post("/authorize", form=auth_params(world.web_id))
    assert response.status_code == 303
    return_to = query_of(response.headers["Location"])["return_to"]
    signed_in = await login(client, world.email, return_to=return_to)
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == return_to
    resumed = await client.get(return_to)
    location = resumed.headers["Location"]
    page = await client.get(location)
    allowed = await client.post(location, form={"csrf_token": csrf_from(await text_of(page)), "decision": "allow"})
    assert allowed.status_code == 303
    assert urlsplit(allowed.headers["Location"]).netloc == "rp.example"


async def test_login_return_to_with_a_nul_is_refused(client, runtime) -> None:
    """A NUL can't be stored (PostgreSQL text), so it is bad input anywhere: refused, nothing signed in."""
    from tests.oauth_helpers import csrf_from, make_world

    world = await make_world(runtime)
    assert (await client.get("/login?return_to=%2Faccount%00")).status_code == 400
    token = csrf_from(await (await client.get("/login")).get_data(as_text=True))
    response = await client.post(
        "/login", form={"email": world.email, "password": PASSWORD, "csrf_token": token, "return_to": "/account\x00"}
    )
    assert response.status_code == 400
    assert "'return_to' contains a NUL character" in html.unescape(await response.get_data(as_text=True))
    assert "Set-Cookie" not in response.headers or "idp_session" not in response.headers["Set-Cookie"]


@pytest.mark.parametrize("target", ["/a\r\nX-Injected: y", "/\x7f"])
async def test_login_return_to_with_control_characters_is_ignored(client, runtime, target) -> None:
    from tests.oauth_helpers import login, make_world

    world = await make_world(runtime)
    response = await login(client, world.email, return_to=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
