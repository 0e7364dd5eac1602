"""Rate limits on the endpoints that can be abused besides the password form: sign-up, password
reset, verification resend, passwordless passkey sign-in and the endpoints where clients
authenticate (token, introspection, revocation). Over a limit the answer is 429 with Retry-After
and a message naming what was attempted too often, and the refused request does nothing (no
account, no mail, no token, no revocation)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from idp.storage.models import User
from tests.mfa_helpers import outbox_subjects, text
from tests.oauth_helpers import World, basic, csrf_from, make_world

WINDOW = 120
PW = "quiet-violet-lantern-93"


def limits(**names: int) -> dict[str, Any]:
    return {"rate_limits": {name: {"requests": count, "window": WINDOW} for name, count in names.items()}}


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**settings_overrides, **getattr(request, "param", {})}


def at(ip: str) -> dict[str, Any]:
    return {"scope_base": {"client": (ip, 40000)}}


async def form_post(client: Any, page_path: str, path: str, ip: str, **fields: str) -> Any:
    page = await client.get(page_path, **at(ip))
    return await client.post(path, form={"csrf_token": csrf_from(await text(page)), **fields}, **at(ip))


async def assert_limited(response: Any, what: str) -> None:
    assert response.status_code == 429, await text(response)
    assert response.headers["Retry-After"] == str(WINDOW)
    body = await text(response)
    assert f"Too many {what}. Wait 2 minutes before trying again." in body


async def user_count(runtime: Any) -> int:
    async with runtime.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)


@pytest.mark.parametrize("settings_overrides", [limits(registration_per_ip=2)], indirect=True)
async def test_sign_ups_per_ip(app: Any, runtime: Any) -> None:
    client = app.test_client()
    for n in range(2):
        done = await form_post(
            client,
            "/register",
            "/register",
            "192.0.2.1",
            email=f"new{n}@example.com",
            password="quiet-violet-lantern-93",
        )
        assert done.status_code == 200
    refused = await form_post(
        client, "/register", "/register", "192.0.2.1", email="new9@example.com", password="quiet-violet-lantern-93"
    )
    await assert_limited(refused, "sign-ups from your network")
    assert await user_count(runtime) == 2
    # Another network may still sign up.
    other = await form_post(
        client, "/register", "/register", "192.0.2.2", email="new9@example.com", password="quiet-violet-lantern-93"
    )
    assert other.status_code == 200 and await user_count(runtime) == 3


@pytest.mark.parametrize(
    "settings_overrides", [limits(password_reset_per_ip=3, password_reset_per_account=1)], indirect=True
)
async def test_password_reset_requests_per_address_and_ip(app: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    client = app.test_client()
    first = await form_post(client, "/forgot-password", "/forgot-password", "192.0.2.1", email=world.email)
    assert first.status_code == 200
    # The same address again, even from elsewhere and spelled differently: refused, no second mail.
    again = await form_post(client, "/forgot-password", "/forgot-password", "192.0.2.9", email=world.email.upper())
    await assert_limited(again, "password reset requests")
    # Per IP: two more addresses pass, the fourth request from that IP doesn't.
    for email in ("a@example.com", "b@example.com"):
        ok = await form_post(client, "/forgot-password", "/forgot-password", "192.0.2.1", email=email)
        assert ok.status_code == 200
    over = await form_post(client, "/forgot-password", "/forgot-password", "192.0.2.1", email="c@example.com")
    await assert_limited(over, "password reset requests")
    await _settle(app)
    assert (await outbox_subjects(runtime)) == ["Reset your password"]


@pytest.mark.parametrize("settings_overrides", [limits(verification_resend_per_account=1)], indirect=True)
async def test_verification_resends_per_address(app: Any, runtime: Any) -> None:
    client = app.test_client()
    path = "/verify-email/resend"
    assert (await form_post(client, path, path, "192.0.2.1", email="pending@example.com")).status_code == 200
    refused = await form_post(client, path, path, "192.0.2.2", email="pending@example.com")
    await assert_limited(refused, "requests for a confirmation link")


@pytest.mark.parametrize("settings_overrides", [limits(passkey_login_per_ip=2)], indirect=True)
async def test_passwordless_attempts_per_ip(app: Any) -> None:
    client = app.test_client()
    page = await client.get("/login", **at("192.0.2.1"))
    headers = {"X-CSRF-Token": csrf_from(await text(page))}
    for _ in range(2):
        # Not a valid assertion: refused by the ceremony, but counted.
        attempt = await client.post("/login/passkey", json={"id": "x"}, headers=headers, **at("192.0.2.1"))
        assert attempt.status_code in (400, 401) and "error" in await attempt.get_json()
    limited = await client.post("/login/passkey", json={"id": "x"}, headers=headers, **at("192.0.2.1"))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == str(WINDOW)
    assert (await limited.get_json())["error"] == "rate_limited"


@pytest.mark.parametrize("settings_overrides", [limits(token_per_client=2, token_per_ip=1000)], indirect=True)
async def test_token_requests_per_client(app: Any, runtime: Any) -> None:
    world: World = await make_world(runtime)
    client = app.test_client()
    form = {"grant_type": "client_credentials", "scope": ""}
    for _ in range(2):
        ok = await client.post("/token", form=form, headers=basic(world.web_id, world.web_secret))
        assert ok.status_code == 200, await text(ok)
    # A wrong secret is not the client: it is counted per address only (it used to count against
    # the client, so anyone could use up a client's budget with its public id: security test M2).
    wrong = await client.post("/token", form=form, headers=basic(world.web_id, "wrong-secret"))
    assert wrong.status_code == 401 and (await wrong.get_json())["error"] == "invalid_client"
    limited = await client.post("/token", form=form, headers=basic(world.web_id, world.web_secret))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == str(WINDOW)
    body = await limited.get_json()
    assert body["error"] == "rate_limited" and "token requests" in body["error_description"]
    assert limited.headers["Cache-Control"] == "no-store" and "access_token" not in body
    # Other clients are not affected.
    other = await client.post(
        "/token", form={"grant_type": "refresh_token", "refresh_token": "x", "client_id": world.spa_id}
    )
    assert other.status_code == 400


# Token, introspection and revocation authenticate clients the same way, so they share one rule
# (ASVS 6.3.1, 15.2.2): before authentication a request counts against `token_per_ip` only;
# once authenticated, against `token_per_client` of that client. Each endpoint counts separately.
CLIENT_ENDPOINTS = {
    "/token": "token requests",
    "/introspect": "introspection requests",
    "/revoke": "revocation requests",
}


def endpoint_form(path: str, token: str = "a.b.c") -> dict[str, str]:
    return {"grant_type": "client_credentials", "scope": ""} if path == "/token" else {"token": token}


@pytest.mark.parametrize("path", list(CLIENT_ENDPOINTS))
@pytest.mark.parametrize("settings_overrides", [limits(token_per_client=2, token_per_ip=1000)], indirect=True)
async def test_failed_authentications_never_use_up_the_clients_budget(app: Any, runtime: Any, path: str) -> None:
    """Security test M2: 1,205 `-u svc:wrong` requests made the real client get 429 elsewhere."""
    world = await make_world(runtime)
    client = app.test_client()
    for _ in range(5):
        guess = await client.post(
            path, form=endpoint_form(path), headers=basic(world.web_id, "wrong"), **at("192.0.2.66")
        )
        assert guess.status_code == 401, await text(guess)
        assert (await guess.get_json())["error"] == "invalid_client"
        assert guess.headers["WWW-Authenticate"] == 'Basic realm="idp"'
    # From elsewhere, the real client still has its whole budget, and then meets its own limit.
    real = basic(world.web_id, world.web_secret)
    for _ in range(2):
        ok = await client.post(path, form=endpoint_form(path), headers=real, **at("192.0.2.7"))
        assert ok.status_code == 200, await text(ok)
    over = await client.post(path, form=endpoint_form(path), headers=real, **at("192.0.2.8"))
    assert over.status_code == 429 and over.headers["Retry-After"] == str(WINDOW)
    assert await over.get_json() == {
        "error": "rate_limited",
        "error_description": f"Too many {CLIENT_ENDPOINTS[path]}. Wait 2 minutes before trying again.",
    }


@pytest.mark.parametrize("path", list(CLIENT_ENDPOINTS))
@pytest.mark.parametrize("settings_overrides", [limits(token_per_ip=3)], indirect=True)
async def test_secret_guessing_is_limited_per_address(app: Any, runtime: Any, path: str) -> None:
    """Security test L7: 1,300 wrong secrets at /introspect or /revoke were all answered 401."""
    world = await make_world(runtime)
    client = app.test_client()
    victim = runtime.tokens.issue_access_token(subject=world.web_id, client_id=world.web_id, scope="")
    form = endpoint_form(path, victim.value)
    for n in range(3):
        guess = await client.post(path, form=form, headers=basic(world.web_id, f"guess-{n}"), **at("192.0.2.1"))
        assert guess.status_code == 401, await text(guess)
    limited = await client.post(path, form=form, headers=basic(world.web_id, "guess-3"), **at("192.0.2.1"))
    await assert_limited(limited, CLIENT_ENDPOINTS[path])
    assert (await limited.get_json())["error"] == "rate_limited"
    # Over the limit even the right secret is refused, and the refused request changes nothing.
    refused = await client.post(path, form=form, headers=basic(world.web_id, world.web_secret), **at("192.0.2.1"))
    assert refused.status_code == 429 and "access_token" not in await refused.get_json()
    await runtime.tokens.verify_access_token(victim.value)  # not revoked
    # Another address is not affected.
    other = await client.post(path, form=form, headers=basic(world.web_id, world.web_secret), **at("192.0.2.2"))
    assert other.status_code == 200, await text(other)


@pytest.mark.parametrize("settings_overrides", [limits(token_per_client=2, token_per_ip=1000)], indirect=True)
async def test_each_client_endpoint_counts_on_its_own(app: Any, runtime: Any) -> None:
    # A resource server introspecting heavily can't starve the same client's token requests.
    world = await make_world(runtime)
    client = app.test_client()
    real = basic(world.web_id, world.web_secret)
    for _ in range(2):
        assert (await client.post("/introspect", form=endpoint_form("/introspect"), headers=real)).status_code == 200
    over = await client.post("/introspect", form=endpoint_form("/introspect"), headers=real)
    assert over.status_code == 429
    for path in ("/token", "/revoke"):
        ok = await client.post(path, form=endpoint_form(path), headers=real)
        assert ok.status_code == 200, await text(ok)


@pytest.mark.parametrize("settings_overrides", [limits(token_per_ip=1)], indirect=True)
async def test_token_requests_per_ip_answer_cors_with_retry_after(app: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    client = app.test_client()
    spa = {"Origin": "http://127.0.0.1:8080"}
    form = {"grant_type": "refresh_token", "refresh_token": "x", "client_id": world.spa_id}
    assert (await client.post("/token", form=form, headers=spa, **at("192.0.2.1"))).status_code == 400
    limited = await client.post("/token", form=form, headers=spa, **at("192.0.2.1"))
    assert limited.status_code == 429
    # A browser app can read the answer and when to retry.
    assert limited.headers["Access-Control-Allow-Origin"] == spa["Origin"]
    assert "Retry-After" in limited.headers["Access-Control-Expose-Headers"]


async def _settle(app: Any) -> None:
    from tests.mail_flows import settle

    await settle(app)
