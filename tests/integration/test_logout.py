"""RP-Initiated Logout 1.0 and Back-Channel Logout 1.0.

The RP-initiated cases follow the OpenID conformance plan (happy path plus the negatives where
the OP must not redirect back); each asserts the status, the absence or exact value of
``Location``, whether the server-side session survived, the session cookie and the audit trail.
Back-channel deliveries go to an ``httpx.MockTransport``; logout tokens are verified with the
published JWKS.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from sqlalchemy import select

from idp.accounts.users import NewUser, create_user
from idp.oauth.clients import ClientSpec, create_client
from idp.oauth.tokens import BACKCHANNEL_LOGOUT_EVENT, ID_TOKEN_TYP, LOGOUT_TOKEN_TYP, TokenService
from idp.storage.models import AuditEvent
from tests.backchannel_helpers import (
    BCL_URI,
    BYE,
    COOKIE,
    Recorder,
    bcl_client,
    bcl_setup,
    install_notifier,
    outbox_statuses,
    session_cookie,
    verify_logout_token,
)
from tests.oauth_helpers import (
    PASSWORD,
    WEB_REDIRECT,
    World,
    authorize,
    code_flow,
    csrf_from,
    make_world,
    query_of,
)

# -- helpers ---------------------------------------------------------------------------------------


async def signed_in(client: Any, runtime: Any) -> tuple[World, dict[str, Any], str]:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    cookie = session_cookie(client)
    assert cookie is not None
    assert await runtime.sessions.load(cookie) is not None
    return world, tokens, cookie


async def logout(client: Any, **params: str) -> Any:
    return await client.get(f"/logout?{urlencode(params)}")


async def assert_error_page(response: Any, fragment: str) -> None:
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    html = await response.get_data(as_text=True)
    assert '<code id="error-code">invalid_request</code>' in html
    assert fragment in html


def assert_cookie_cleared(response: Any) -> None:
    cleared = [value for value in response.headers.getlist("Set-Cookie") if value.startswith(f"{COOKIE}=")]
    assert len(cleared) == 1
    assert cleared[0].startswith(f"{COOKIE}=;")
    assert "Max-Age=0" in cleared[0] or "Expires=Thu, 01 Jan 1970" in cleared[0]


async def logged_out_events(runtime: Any) -> list[AuditEvent]:
    async with runtime.db.session() as session:
        result = await session.execute(select(AuditEvent).where(AuditEvent.event == "logged_out"))
        return list(result.scalars())


async def assert_prompt_none_needs_login(client: Any, world: World) -> None:
    response, _ = await authorize(client, world.web_id, WEB_REDIRECT, prompt="none")
    assert response.status_code == 303
    assert response.headers["Location"].startswith(WEB_REDIRECT + "?")
    assert query_of(response.headers["Location"])["error"] == "login_required"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def resigned_as_none(token: str) -> str:
    header_b64, payload_b64, _ = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    return f"{b64url(json.dumps({**header, 'alg': 'none'}).encode())}.{payload_b64}."


# -- RP-initiated logout: happy path -------------------------------------------------------------


async def test_logout_with_hint_redirects_with_state(client: Any, runtime: Any) -> None:
    world, tokens, cookie = await signed_in(client, runtime)
    response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=BYE, state="s-789")
    assert response.status_code == 303
    assert response.headers["Location"] == f"{BYE}?state=s-789"
    assert_cookie_cleared(response)
    # The server-side session is gone, not just the cookie.
    assert await runtime.sessions.load(cookie) is None
    assert session_cookie(client) is None
    await assert_prompt_none_needs_login(client, world)

    events = await logged_out_events(runtime)
    assert len(events) == 1
    assert events[0].subject_id == world.user_id
    assert events[0].client_id == world.web_id
    assert events[0].details["initiated_by"] == "client"


async def test_logout_without_state_redirects_to_the_bare_uri(client: Any, runtime: Any) -> None:
    _, tokens, cookie = await signed_in(client, runtime)
    response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=BYE)
    assert response.status_code == 303
    assert response.headers["Location"] == BYE
    assert await runtime.sessions.load(cookie) is None


async def test_expired_id_token_hint_is_accepted(client: Any, runtime: Any) -> None:
    # RP-Initiated Logout §2: the OP accepts an expired hint if it issued it (the RP may log out late).
    _, tokens, cookie = await signed_in(client, runtime)
    claims = runtime.tokens.peek_claims(tokens["id_token"])
    ttl = runtime.settings.tokens.id_token_ttl
    past = TokenService(
        runtime.keys,
        runtime.tokens.denylist,
        runtime.settings.issuer,
        access_token_ttl=runtime.settings.tokens.access_token_ttl,
        id_token_ttl=ttl,
        clock=lambda: time.time() - 2 * ttl,
    )
    expired = past.issue_id_token(
        subject=claims["sub"], client_id=claims["aud"], alg=None, auth_time=claims["auth_time"], sid=claims["sid"]
    )
    assert runtime.tokens.peek_claims(expired)["exp"] < time.time() - ttl
    response = await logout(client, id_token_hint=expired, post_logout_redirect_uri=BYE, state="late")
    assert response.status_code == 303
    assert response.headers["Location"] == f"{BYE}?state=late"
    assert await runtime.sessions.load(cookie) is None


async def test_logout_with_hint_only_shows_signed_out_page(client: Any, runtime: Any) -> None:
    _, tokens, cookie = await signed_in(client, runtime)
    response = await logout(client, id_token_hint=tokens["id_token"], state="only-state")
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert 'id="logged-out"' in await response.get_data(as_text=True)
    assert await runtime.sessions.load(cookie) is None
    assert_cookie_cleared(response)


async def test_logout_with_post_and_hint(client: Any, runtime: Any) -> None:
    # RP-Initiated Logout §2: the OP supports POST (form-encoded) as well as GET.
    _, tokens, cookie = await signed_in(client, runtime)
    response = await client.post(
        "/logout", form={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": BYE, "state": "p"}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == f"{BYE}?state=p"
    assert await runtime.sessions.load(cookie) is None


async def test_logout_with_hint_and_no_session_still_redirects(client: Any, runtime: Any) -> None:
    _, tokens, cookie = await signed_in(client, runtime)
    await runtime.sessions.end(await runtime.sessions.load(cookie), reason="logout")
    response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=BYE, state="x")
    assert response.status_code == 303
    assert response.headers["Location"] == f"{BYE}?state=x"
    assert await logged_out_events(runtime) == []


# -- RP-initiated logout: negatives (the OP must not redirect) ----------------------------------


async def test_unregistered_post_logout_redirect_uri_is_an_error_page(client: Any, runtime: Any) -> None:
    world, tokens, cookie = await signed_in(client, runtime)
    for uri in ("https://attacker.example/bye", "https://rp.example/bye/", "https://rp.example/", WEB_REDIRECT):
        response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=uri, state="s")
        await assert_error_page(response, "post_logout_redirect_uri is not registered")
    assert await runtime.sessions.load(cookie) is not None
    assert await logged_out_events(runtime) == []
    # Still signed in: a prompt=none request succeeds.
    response, _ = await authorize(client, world.web_id, WEB_REDIRECT, prompt="none")
    assert "code" in query_of(response.headers["Location"])


async def test_query_added_to_post_logout_redirect_uri_is_an_error_page(client: Any, runtime: Any) -> None:
    _, tokens, cookie = await signed_in(client, runtime)
    response = await logout(
        client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=f"{BYE}?foo=bar", state="s"
    )
    await assert_error_page(response, "post_logout_redirect_uri is not registered")
    assert await runtime.sessions.load(cookie) is not None


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param(f"{BYE}#frag", id="fragment"),
        pytest.param(f"{BYE}#", id="empty-fragment"),
        pytest.param("https://evil@rp.example/bye", id="userinfo"),
        pytest.param("https://rp.example:443/bye", id="explicit-default-port"),
        pytest.param("https://rp.example:8443/bye", id="other-port"),
        pytest.param("HTTPS://rp.example/bye", id="scheme-case"),
        pytest.param("https://RP.example/bye", id="host-case"),
        pytest.param(f"{BYE}\n", id="trailing-newline"),
        pytest.param(f"{BYE}%20", id="encoded-space"),
    ],
)
async def test_post_logout_redirect_uri_is_matched_exactly(client: Any, runtime: Any, uri: str) -> None:
    """[10.4.1] [§2.1] RP-Initiated Logout §3: no normalisation, no fragment (RFC 6749 §3.1.2); an
    error page, the session kept."""
    _, tokens, cookie = await signed_in(client, runtime)
    response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=uri, state="s")
    await assert_error_page(response, "post_logout_redirect_uri is not registered")
    assert await runtime.sessions.load(cookie) is not None
    assert await logged_out_events(runtime) == []


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("http://127.0.0.1:5555/bye", id="other-port"),
        pytest.param("http://evil@127.0.0.1/bye", id="userinfo"),
        pytest.param("http://127.0.0.1/bye#frag", id="fragment"),
        pytest.param("http://127.0.0.1:notaport/bye", id="port-not-a-number"),
    ],
)
async def test_native_post_logout_loopback_uri_gets_no_port_freedom(client: Any, runtime: Any, uri: str) -> None:
    """RFC 8252 §7.3's port freedom is for the authorization response's redirect URI; a post-logout
    redirect URI is compared exactly (RP-Initiated Logout §3)."""
    _, _, cookie = await signed_in(client, runtime)
    created = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="Native",
            client_type="public",
            application_type="native",
            redirect_uris=["http://127.0.0.1/cb"],
            post_logout_redirect_uris=["http://127.0.0.1/bye"],
        ),
    )
    response = await logout(client, client_id=created.client.id, post_logout_redirect_uri=uri)
    await assert_error_page(response, "post_logout_redirect_uri is not registered")
    assert await runtime.sessions.load(cookie) is not None


async def test_modified_id_token_hint_is_an_error_page(client: Any, runtime: Any) -> None:
    _, tokens, cookie = await signed_in(client, runtime)
    header_b64, payload_b64, signature = tokens["id_token"].split(".")
    tampered_payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    tampered_payload["sub"] = "someone-else"
    for hint in (
        resigned_as_none(tokens["id_token"]),
        f"{header_b64}.{b64url(json.dumps(tampered_payload).encode())}.{signature}",
        tokens["access_token"],  # a valid JWT of ours, but not an ID token
        "not-a-jwt",
    ):
        response = await logout(client, id_token_hint=hint, post_logout_redirect_uri=BYE, state="s")
        await assert_error_page(response, "id_token_hint is not a valid ID token")
    assert await runtime.sessions.load(cookie) is not None


async def test_redirect_uri_without_hint_or_client_id_is_an_error_page(client: Any, runtime: Any) -> None:
    _, _, cookie = await signed_in(client, runtime)
    response = await logout(client, post_logout_redirect_uri=BYE, state="s")
    await assert_error_page(response, "needs an id_token_hint or client_id")
    assert await runtime.sessions.load(cookie) is not None


async def test_client_id_not_matching_the_hint_is_an_error_page(client: Any, runtime: Any) -> None:
    world, tokens, cookie = await signed_in(client, runtime)
    response = await logout(
        client, id_token_hint=tokens["id_token"], client_id=world.spa_id, post_logout_redirect_uri=BYE
    )
    await assert_error_page(response, "client_id does not match")
    assert await runtime.sessions.load(cookie) is not None


async def test_unknown_client_id_is_an_error_page(client: Any, runtime: Any) -> None:
    _, _, cookie = await signed_in(client, runtime)
    response = await logout(client, client_id="no-such-client", post_logout_redirect_uri=BYE)
    await assert_error_page(response, "client is unknown")
    assert await runtime.sessions.load(cookie) is not None


@pytest.mark.parametrize("name", ["id_token_hint", "post_logout_redirect_uri", "state", "client_id"])
async def test_a_repeated_parameter_is_an_error_page(client: Any, runtime: Any, name: str) -> None:
    """RFC 6749 §3.1, as at every protocol endpoint (idp.oauth.params): which hint, client or
    redirect URI would be trusted is not left to which copy is read. Nothing ends."""
    world, tokens, cookie = await signed_in(client, runtime)
    params = {
        "id_token_hint": tokens["id_token"],
        "post_logout_redirect_uri": BYE,
        "state": "s",
        "client_id": world.web_id,
    }
    response = await client.get(f"/logout?{urlencode([*params.items(), (name, params[name])])}")
    await assert_error_page(response, f"{name} is repeated")
    assert await runtime.sessions.load(cookie) is not None
    assert await logged_out_events(runtime) == []


# -- RP-initiated logout: confirmation (ASVS 10.6.2) --------------------------------------------


async def test_client_id_without_hint_asks_for_confirmation(client: Any, runtime: Any) -> None:
    world, _, cookie = await signed_in(client, runtime)
    page = await logout(client, client_id=world.web_id, post_logout_redirect_uri=BYE, state="c-1")
    assert page.status_code == 200
    assert "Location" not in page.headers
    assert page.headers["Cache-Control"] == "no-store"
    html = await page.get_data(as_text=True)
    assert 'id="logout-form"' in html and "Web App" in html
    assert await runtime.sessions.load(cookie) is not None  # nothing happened yet

    response = await client.post(
        "/logout",
        form={
            "csrf_token": csrf_from(html),
            "confirm": "yes",
            "client_id": world.web_id,
            "post_logout_redirect_uri": BYE,
            "state": "c-1",
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"] == f"{BYE}?state=c-1"
    assert_cookie_cleared(response)
    assert await runtime.sessions.load(cookie) is None
    await assert_prompt_none_needs_login(client, world)
    events = await logged_out_events(runtime)
    assert [(event.subject_id, event.details["initiated_by"]) for event in events] == [(world.user_id, "client")]


async def test_confirmation_without_csrf_is_forbidden(client: Any, runtime: Any) -> None:
    world, _, cookie = await signed_in(client, runtime)
    page = await logout(client, client_id=world.web_id, post_logout_redirect_uri=BYE)
    assert page.status_code == 200
    for form in (
        {"confirm": "yes", "client_id": world.web_id, "post_logout_redirect_uri": BYE},
        {"confirm": "yes", "csrf_token": "forged-token-value-0000000000", "client_id": world.web_id},
    ):
        response = await client.post("/logout", form=form)
        assert response.status_code == 403
        assert "Location" not in response.headers
    assert await runtime.sessions.load(cookie) is not None
    assert await logged_out_events(runtime) == []


async def test_a_repeated_confirmation_is_an_error_page(client: Any, runtime: Any) -> None:
    world, _, cookie = await signed_in(client, runtime)
    page = await logout(client, client_id=world.web_id)
    token = csrf_from(await page.get_data(as_text=True))
    body = urlencode([("csrf_token", token), ("client_id", world.web_id), ("confirm", "yes"), ("confirm", "yes")])
    response = await client.post("/logout", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    await assert_error_page(response, "confirm is repeated")
    assert await runtime.sessions.load(cookie) is not None
    assert await logged_out_events(runtime) == []


async def test_no_params_with_session_asks_for_confirmation(client: Any, runtime: Any) -> None:
    _, _, cookie = await signed_in(client, runtime)
    page = await client.get("/logout")
    assert page.status_code == 200
    html = await page.get_data(as_text=True)
    assert 'id="logout-form"' in html
    assert await runtime.sessions.load(cookie) is not None
    response = await client.post("/logout", form={"csrf_token": csrf_from(html), "confirm": "yes"})
    assert response.status_code == 200
    assert 'id="logged-out"' in await response.get_data(as_text=True)
    assert await runtime.sessions.load(cookie) is None
    events = await logged_out_events(runtime)
    assert len(events) == 1 and events[0].details["initiated_by"] == "user"


async def test_hint_of_another_user_asks_for_confirmation(app: Any, client: Any, runtime: Any) -> None:
    # A valid hint that does not describe this browser's session is no proof the user wants out.
    world, _, cookie = await signed_in(client, runtime)
    bob = await create_user(
        runtime.db,
        runtime.passwords,
        runtime.events,
        NewUser(email="bob@example.com", password=PASSWORD, name="Bob", email_verified=True),
    )
    bob_tokens = await code_flow(app.test_client(), replace(world, user_id=bob.id, email="bob@example.com"))
    response = await logout(client, id_token_hint=bob_tokens["id_token"], post_logout_redirect_uri=BYE)
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert 'id="logout-form"' in await response.get_data(as_text=True)
    assert await runtime.sessions.load(cookie) is not None


async def test_no_session_shows_signed_out_page(client: Any, runtime: Any) -> None:
    response = await client.get("/logout")
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert 'id="logged-out"' in await response.get_data(as_text=True)
    assert await logged_out_events(runtime) == []


# -- Back-channel logout -------------------------------------------------------------------------
# (the recording endpoint and the client come from tests.backchannel_helpers)


async def test_backchannel_logout_token(client: Any, runtime: Any) -> None:
    recorder = Recorder()
    world, client_id, tokens, cookie = await bcl_setup(client, runtime, recorder)
    id_claims = runtime.tokens.verify(tokens["id_token"], typ=ID_TOKEN_TYP, audience=client_id)

    response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=BYE, state="b")
    assert response.status_code == 303
    await runtime.backchannel.drain()

    assert len(recorder.requests) == 1
    request = recorder.requests[0]
    assert request.method == "POST"
    assert str(request.url) == BCL_URI
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.content.decode())
    assert list(form) == ["logout_token"] and len(form["logout_token"]) == 1

    header, claims = await verify_logout_token(client, form["logout_token"][0])
    assert header["typ"] == LOGOUT_TOKEN_TYP
    assert claims["iss"] == runtime.settings.issuer
    assert claims["aud"] == client_id
    assert isinstance(claims["iat"], int)
    assert claims["iat"] < claims["exp"] <= claims["iat"] + 120
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert claims["sid"] == id_claims["sid"]
    assert claims["sub"] == id_claims["sub"] == world.user_id
    assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}
    assert "nonce" not in claims
    assert await runtime.sessions.load(cookie) is None


async def test_backchannel_logout_token_uses_the_pairwise_sub(client: Any, runtime: Any) -> None:
    recorder = Recorder()
    world, client_id, tokens, _ = await bcl_setup(client, runtime, recorder, subject_type="pairwise")
    id_claims = runtime.tokens.verify(tokens["id_token"], typ=ID_TOKEN_TYP, audience=client_id)
    assert id_claims["sub"] != world.user_id
    response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=BYE)
    assert response.status_code == 303
    await runtime.backchannel.drain()
    _, claims = await verify_logout_token(client, parse_qs(recorder.requests[0].content.decode())["logout_token"][0])
    assert claims["sub"] == id_claims["sub"]
    assert claims["sid"] == id_claims["sid"]


async def test_only_clients_of_the_session_are_notified(client: Any, runtime: Any) -> None:
    recorder = Recorder()
    await install_notifier(runtime, recorder)
    world = await make_world(runtime)
    await bcl_client(runtime)  # registered with a back-channel URI, but never used in this session
    tokens = await code_flow(client, world)
    response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=BYE)
    assert response.status_code == 303
    await runtime.backchannel.drain()
    assert recorder.requests == []


async def test_backchannel_retries_server_errors(client: Any, runtime: Any, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder([503, 503, 200])
    _, _, tokens, _ = await bcl_setup(client, runtime, recorder)
    with caplog.at_level(logging.INFO, logger="idp.backchannel"):
        response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=BYE)
        assert response.status_code == 303
        await runtime.backchannel.drain()
    assert len(recorder.requests) == 3
    tokens_sent = {parse_qs(request.content.decode())["logout_token"][0] for request in recorder.requests}
    assert len(tokens_sent) == 1  # the same token each time
    messages = [record.getMessage() for record in caplog.records if record.name == "idp.backchannel"]
    assert messages == ["back-channel logout delivered"]
    assert [record.attempt for record in caplog.records if record.name == "idp.backchannel"] == [3]


async def test_backchannel_does_not_retry_a_client_error(
    client: Any, runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder([400, 200])
    _, _, tokens, _ = await bcl_setup(client, runtime, recorder)
    with caplog.at_level(logging.WARNING, logger="idp.backchannel"):
        response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=BYE)
        assert response.status_code == 303
        await runtime.backchannel.drain()
    assert len(recorder.requests) == 1
    failures = [record for record in caplog.records if record.getMessage() == "back-channel logout failed"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.WARNING
    assert failures[0].reason == "HTTP 400"
    assert failures[0].attempts == 1


async def test_backchannel_gives_up_after_the_last_attempt(
    client: Any, runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Retried (here without the backoff, by drain) until [outbox] max_attempts, then kept as a
    dead letter (idp.outbox; tests/integration/test_outbox.py covers the schedule)."""
    runtime.outbox.retry = replace(runtime.outbox.retry, max_attempts=3)
    recorder = Recorder([httpx.ConnectError("refused")] * 5)
    world, client_id, tokens, cookie = await bcl_setup(client, runtime, recorder)
    with caplog.at_level(logging.WARNING, logger="idp.backchannel"):
        response = await logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=BYE, state="t")
        # The user's logout completed regardless of the relying party.
        assert response.status_code == 303
        assert response.headers["Location"] == f"{BYE}?state=t"
        await runtime.backchannel.drain()
    assert len(recorder.requests) == 3
    assert await runtime.sessions.load(cookie) is None
    failures = [record for record in caplog.records if record.getMessage() == "back-channel logout failed"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.WARNING
    assert failures[0].client_id == client_id
    assert failures[0].reason == "ConnectError"
    assert failures[0].attempts == 3
    assert await outbox_statuses(runtime) == {("backchannel_logout", "dead"): 1}
    assert len(await logged_out_events(runtime)) == 1
    await assert_prompt_none_needs_login(client, world)


async def test_logout_response_does_not_wait_for_delivery(client: Any, runtime: Any) -> None:
    recorder = Recorder()
    recorder.release = asyncio.Event()
    _, _, tokens, cookie = await bcl_setup(client, runtime, recorder)
    # If the logout awaited the delivery this would time out: the handler blocks until released.
    response = await asyncio.wait_for(
        logout(client, id_token_hint=tokens["id_token"], post_logout_redirect_uri=BYE), timeout=5
    )
    assert response.status_code == 303
    assert recorder.requests == []
    assert await runtime.sessions.load(cookie) is None
    recorder.release.set()
    await runtime.backchannel.drain()
    assert len(recorder.requests) == 1
