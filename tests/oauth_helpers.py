"""Helpers for driving the IdP's flows in-process (Quart test client) in tests."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from sqlalchemy import update

from idp.accounts.users import NewUser, create_user
from idp.oauth.clients import ClientSpec, create_client
from idp.storage.models import User

PASSWORD = "meadow-lantern-orbit-2048"
SPA_REDIRECT = "http://127.0.0.1:8080/callback"
WEB_REDIRECT = "https://rp.example/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def query_of(location: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def basic(client_id: str, secret: str) -> dict[str, str]:
    from urllib.parse import quote

    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@dataclass
class World:
    user_id: str
    email: str
    spa_id: str
    web_id: str
    web_secret: str


async def make_world(runtime: Any, *, email: str = "alice@example.com") -> World:
    user = await create_user(
        runtime.db,
        runtime.passwords,
        runtime.events,
        NewUser(email=email, password=PASSWORD, name="Alice Example", email_verified=True),
    )
    spa = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="SPA",
            client_type="public",
            redirect_uris=[SPA_REDIRECT],
            post_logout_redirect_uris=["http://127.0.0.1:8080/"],
            web_origins=["http://127.0.0.1:8080"],
        ),
    )
    web = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="Web App",
            client_type="confidential",
            redirect_uris=[WEB_REDIRECT],
            post_logout_redirect_uris=["https://rp.example/bye"],
            grant_types=["authorization_code", "refresh_token", "client_credentials"],
        ),
    )
    assert web.client_secret is not None
    return World(user.id, email, spa.client.id, web.client.id, web.client_secret)


async def login(client: Any, email: str, password: str = PASSWORD, return_to: str = "/") -> Any:
    page = await client.get(f"/login?{urlencode({'return_to': return_to})}")
    token = csrf_from(await page.get_data(as_text=True))
    return await client.post(
        "/login", form={"email": email, "password": password, "csrf_token": token, "return_to": return_to}
    )


async def authorize(
    client: Any,
    client_id: str,
    redirect_uri: str | None,
    *,
    email: str | None = None,
    consent: bool = True,
    second_factor: Callable[[Any], Awaitable[Any]] | None = None,
    **params: str,
) -> tuple[Any, str | None]:
    """Run /authorize, signing in and consenting through the real forms as needed.
    ``second_factor(client)`` answers the step after the password (/login/mfa) when it comes.
    Returns the final response (the redirect to the client) and the PKCE verifier used. A
    ``redirect_uri`` of None leaves the parameter out."""
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid profile email offline_access",
        "state": "st-123",
        "nonce": "n-456",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    query.update(params)
    query = {key: value for key, value in query.items() if value is not None}
    response = await client.get(f"/authorize?{urlencode(query)}")
    for _ in range(6):
        location = response.headers.get("Location", "")
        if response.status_code not in (302, 303) or not location.startswith("/"):
            break
        if location.startswith("/login/setup-mfa"):
            break  # enrolment required: the caller drives it
        if location.startswith("/login/mfa"):
            assert second_factor is not None, "a second factor is asked for but none given"
            response = await second_factor(client)
            continue
        if location.startswith("/login"):
            assert email is not None, "login needed but no email given"
            response = await login(client, email, return_to=query_of(location)["return_to"])
            continue
        if location.startswith("/authorize/consent/"):
            page = await client.get(location)
            if not consent:
                return page, verifier
            response = await client.post(
                location, form={"csrf_token": csrf_from(await page.get_data(as_text=True)), "decision": "allow"}
            )
            continue
        response = await client.get(location)
    return response, verifier


def authorization_url(client_id: str, redirect_uri: str, **params: str) -> str:
    """A minimal code-flow request (PKCE S256, scope openid) as a local URL; ``params`` add to it."""
    _, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **params,
    }
    return f"/authorize?{urlencode(query)}"


async def code_flow(
    client: Any,
    world: World,
    *,
    confidential: bool = True,
    second_factor: Callable[[Any], Awaitable[Any]] | None = None,
    **params: str,
) -> dict[str, Any]:
    client_id = world.web_id if confidential else world.spa_id
    redirect_uri = WEB_REDIRECT if confidential else SPA_REDIRECT
    response, verifier = await authorize(
        client, client_id, redirect_uri, email=world.email, second_factor=second_factor, **params
    )
    assert response.status_code == 303, await response.get_data(as_text=True)
    result = query_of(response.headers["Location"])
    form = {
        "grant_type": "authorization_code",
        "code": result["code"],
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    headers = basic(world.web_id, world.web_secret) if confidential else {}
    if not confidential:
        form["client_id"] = world.spa_id
    token = await client.post("/token", form=form, headers=headers)
    assert token.status_code == 200, await token.get_data(as_text=True)
    return {**(await token.get_json()), "_authorization": result, "_verifier": verifier}


# -- additions for the authorization and token endpoint tests ------------------------------------


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, unverified (for assertions about what was issued)."""

    def decode(segment: str) -> dict[str, Any]:
        data = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        assert isinstance(data, dict)
        return data

    header, payload, _ = token.split(".")
    return decode(header), decode(payload)


def cookie_value(client: Any, name: str) -> str | None:
    """The value of a cookie in a test client's jar (None when absent)."""
    for cookie in client.cookie_jar or []:
        if cookie.name == name:
            return str(cookie.value)
    return None


async def add_user(runtime: Any, email: str, *, verified: bool = True, disabled: bool = False) -> str:
    """Another user with the shared test password; returns the user id."""
    user = await create_user(
        runtime.db,
        runtime.passwords,
        runtime.events,
        NewUser(email=email, password=PASSWORD, name=email.split("@")[0].title(), email_verified=verified),
    )
    if disabled:
        async with runtime.db.session() as session:
            await session.execute(update(User).where(User.id == user.id).values(disabled=True))
    return str(user.id)


async def add_client(runtime: Any, spec: ClientSpec) -> tuple[str, str | None]:
    """Register a client; returns (client_id, client_secret or None)."""
    created = await create_client(runtime.db, runtime.events, spec)
    return created.client.id, created.client_secret


async def age_session(runtime: Any, client: Any, seconds: int) -> None:
    """Pretend the browser's IdP session signed in ``seconds`` earlier (instead of sleeping)."""
    # idp.web.session_cookie_name(): the __Host- prefix only when the issuer is https.
    name = "__Host-idp_session" if runtime.settings.issuer_is_https else "idp_session"
    session = await runtime.sessions.load(cookie_value(client, name))
    assert session is not None, "no IdP session in this browser"
    session.auth_time -= seconds
    session.created_at -= seconds
    await runtime.sessions._save(session, int(session.last_seen))
