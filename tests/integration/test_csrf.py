"""CSRF on every state-changing route of the HTML blueprints (ASVS 3.5.1), found by walking the URL
map rather than listed by hand: a new POST/PUT/PATCH/DELETE page route (in any blueprint not
registered as a JSON API) fails here until it checks a CSRF token or is added to an exemption
below with its reason.

A signed-in victim browser (with a consent, TOTP and a passkey, so a forged request would have
something to change) sends every such request without a token and with tokens that are not its
own. Each must be refused with 403 and leave the database, the session, the pending authorization
and the outbox as they were. The account JSON API takes Bearer tokens only: the same browser's
cookies (and its CSRF token) get 401 with a Bearer challenge there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from sqlalchemy import select, update

from idp.accounts.apps import consents
from idp.accounts.security import mfa, passkeys
from idp.accounts.security.relying_party import RelyingParty
from idp.storage.models import Base, User
from tests.mfa_helpers import Clock, enable_totp, outbox_subjects, text, totp_answer
from tests.oauth_helpers import (
    PASSWORD,
    WEB_REDIRECT,
    World,
    code_flow,
    cookie_value,
    csrf_from,
    login,
    make_world,
    pkce_pair,
)
from tests.webauthn_soft import SoftAuthenticator

# Known page blueprints; the walk covers every blueprint that does not answer in JSON, these included.
PAGE_BLUEPRINTS = frozenset({"accounts", "mfa", "oauth_pages", "admin"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# State-changing page routes that take no CSRF token at all, and why.
EXEMPT: dict[str, str] = {
    "oauth_pages.authorize": (
        "POST /authorize is an OAuth 2.0 authorization request (OIDC Core §3.1.2.1 allows POST). "
        "It is sent cross-site by the client's own page by design, so no token of ours can be on it; "
        "it changes nothing the same request by GET wouldn't, and the client binds the answer to "
        "its own request with state and PKCE (RFC 9700 §4.7)."
    ),
}

# fetch() calls from static/passkeys.js (WebAuthn ceremonies, JSON bodies): they carry the token in
# the X-CSRF-Token header instead of a form field (idp.web.require_csrf_header).
HEADER_TOKEN: dict[str, str] = {
    endpoint: "WebAuthn ceremony called by fetch() from static/passkeys.js with a JSON body"
    for endpoint in (
        "mfa.passkey_login_options",
        "mfa.passkey_login",
        "mfa.second_factor_passkey_options",
        "mfa.second_factor_passkey",
        "mfa.setup_at_login_passkey_options",
        "mfa.setup_at_login_passkey",
        "mfa.security_passkey_options",
        "mfa.security_passkey_register",
    )
} | {"accounts.password_check": "password verdict asked by fetch() from static/password_check.js (JSON body)"}

# What a forged form would submit: values that would change something if the route accepted them.
BAIT_FORM = {
    "email": "mallory@evil.example",
    "password": PASSWORD,
    "current_password": PASSWORD,
    "new_password": "mallory-picked-this-password-9",
    "name": "Mallory",
    "confirm": "yes",
    "decision": "allow",
    "action": "remove",
    "end_other_sessions": "yes",
    "method": "recovery_code",
    "code": "000000",
    "credential_id": "forged",
    "token": "forged",
    "return_to": "/account",
}
BAIT_OVERRIDES: dict[str, dict[str, str]] = {"accounts.delete_account": {"confirm": "delete"}}
BAIT_JSON = {"password": PASSWORD, "ceremony": "forged", "credential": {}, "name": "Mallory's key"}

# Both refusals (require_csrf and require_csrf_header) say so.
REFUSAL = "did not come from this site"

_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@dataclass
class Victim:
    world: World
    browser: Any
    url_values: dict[str, str]  # samples for the URL variables of the routes under test


def html_blueprints(app: Any) -> set[str]:
    """The blueprints whose routes serve browsers with cookies (not registered as JSON APIs)."""
    return set(app.blueprints) - set(app.json_blueprints)


def state_changing_page_routes(app: Any) -> list[tuple[str, str, str]]:
    """(endpoint, method, rule) for every state-changing method of every HTML-blueprint route."""
    found: list[tuple[str, str, str]] = []
    pages = html_blueprints(app)
    for rule in app.url_map.iter_rules():
        if rule.endpoint.rpartition(".")[0] in pages:
            found.extend((rule.endpoint, method, rule.rule) for method in sorted(rule.methods & STATE_CHANGING))
    return sorted(found)


def fill(rule: str, values: dict[str, str]) -> str:
    missing = [name for name in _VARIABLE.findall(rule) if name not in values]
    assert not missing, f"{rule}: give Victim.url_values a sample for {missing} (an id the victim owns)"
    return _VARIABLE.sub(lambda match: quote(values[match.group(1)], safe=""), rule)


async def snapshot(runtime: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (rows sorted), to show a refused request changed nothing."""
    state: dict[str, list[tuple[Any, ...]]] = {}
    async with runtime.db.session() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(select(table))).all()
            state[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return state


async def still_signed_in(victim: Victim) -> bool:
    page = await victim.browser.get("/account")
    return page.status_code == 200 and victim.world.email in await text(page)


async def attacker_token(app: Any) -> str:
    """A genuine CSRF token, but for the attacker's own browser (the cookie it is bound to)."""
    page = await app.test_client().get("/login")
    return csrf_from(await text(page))


@pytest.fixture
async def victim(app: Any, runtime: Any, clock: Clock) -> Victim:
    world = await make_world(runtime)
    # An administrator signed in with a second factor, so that the admin pages' forms are within
    # a forged request's reach too (the admin pages refuse anyone else before any form is read).
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == world.user_id).values(is_admin=True))
    # Things a forged request could destroy: a consent, an authenticator app, a passkey.
    secret, _ = await enable_totp(runtime, world.user_id, clock)
    browser = app.test_client()
    assert (await login(browser, world.email)).headers["Location"] == "/login/mfa"
    signed_in = await totp_answer(secret, clock)(browser)
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/"
    await consents.grant(runtime.db, world.user_id, world.spa_id, ["openid", "profile"])
    rp = RelyingParty(id="localhost", name="idp test", origins=("http://localhost:8000",))
    ceremony, options = await passkeys.registration_options(
        runtime.db, runtime.kv, rp, user_id=world.user_id, user_name=world.email, display_name="Alice", binding="b"
    )
    passkey = await passkeys.register_passkey(
        runtime.db,
        runtime.kv,
        runtime.events,
        rp,
        user_id=world.user_id,
        ceremony_id=ceremony,
        binding="b",
        credential=SoftAuthenticator().create(options, origin="http://localhost:8000"),
        name="Phone",
    )
    # An authorization waiting at the consent page (the web client has no consent yet).
    _, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": world.web_id,
        "redirect_uri": WEB_REDIRECT,
        "scope": "openid profile",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    parked = await browser.get(f"/authorize?{urlencode(query)}")
    assert parked.status_code == 303 and parked.headers["Location"].startswith("/authorize/consent/")
    interaction_id = parked.headers["Location"].rsplit("/", 1)[1]
    session = await runtime.sessions.load(cookie_value(browser, "idp_session"))
    assert session is not None and await still_signed_in(Victim(world, browser, {}))
    samples = {
        "client_id": world.spa_id,
        "passkey_id": passkey.id,
        "interaction_id": interaction_id,
        "sid": session.sid,
        "user_id": world.user_id,
    }
    return Victim(world, browser, samples)


async def forge(victim: Victim, method: str, path: str, token: str | None, *, header: bool, endpoint: str) -> Any:
    """The victim's browser sends the request (with its cookies) as a forged page would."""
    if header:
        headers = {} if token is None else {"X-CSRF-Token": token}
        return await victim.browser.open(path, method=method, json=BAIT_JSON, headers=headers)
    form = {**BAIT_FORM, **BAIT_OVERRIDES.get(endpoint, {})}
    if token is not None:
        form["csrf_token"] = token
    return await victim.browser.open(path, method=method, form=form)


async def unprotected(app: Any, runtime: Any, victim: Victim, only: set[str] | None = None) -> list[str]:
    """What went wrong, route by route: accepted forgeries and state they changed."""
    forged_tokens = {
        "no token": None,
        "the attacker's own token": await attacker_token(app),
        "a made-up token": "0" * 64,
    }
    problems = []
    for endpoint, method, rule in state_changing_page_routes(app):
        if endpoint in EXEMPT or (only is not None and endpoint not in only):
            continue
        path = fill(rule, victim.url_values)
        # What was queued before goes out first: only then does a snapshot stay still.
        outbox = await outbox_subjects(runtime)
        before = await snapshot(runtime)
        for label, token in forged_tokens.items():
            response = await forge(victim, method, path, token, header=endpoint in HEADER_TOKEN, endpoint=endpoint)
            body = await text(response)
            if response.status_code != 403 or REFUSAL not in body:
                problems.append(f"{method} {rule} ({endpoint}) with {label}: {response.status_code}, not the CSRF 403")
        if await snapshot(runtime) != before:
            problems.append(f"{method} {rule} ({endpoint}): a refused request changed the database")
        if not await still_signed_in(victim):
            problems.append(f"{method} {rule} ({endpoint}): the victim's session did not survive")
        if (await outbox_subjects(runtime)) != outbox:
            problems.append(f"{method} {rule} ({endpoint}): mail went out")
    return problems


def test_exemptions_name_state_changing_page_routes(app: Any) -> None:
    """No stale entry: each exemption is a live state-changing route of an HTML blueprint."""
    endpoints = {endpoint for endpoint, _, _ in state_changing_page_routes(app)}
    assert set(EXEMPT) <= endpoints, set(EXEMPT) - endpoints
    assert set(HEADER_TOKEN) <= endpoints, set(HEADER_TOKEN) - endpoints
    assert not set(EXEMPT) & set(HEADER_TOKEN)
    assert all(reason.strip() for reason in [*EXEMPT.values(), *HEADER_TOKEN.values()])
    # The walk finds the routes this file was written against (and more, as they are added).
    assert {"accounts.login_submit", "accounts.delete_account", "oauth_pages.consent", "oauth_pages.end_session"} <= (
        endpoints
    )
    assert {"admin.user_disable", "admin.user_delete", "admin.client_new", "admin.keys_rotate"} <= endpoints
    assert PAGE_BLUEPRINTS <= {endpoint.partition(".")[0] for endpoint in endpoints}
    assert {"account_api", "oauth"} <= set(app.json_blueprints)  # Bearer or client auth, no cookies


async def test_every_state_changing_page_route_refuses_a_forged_request(app: Any, runtime: Any, victim: Victim) -> None:
    consent_page = f"/authorize/consent/{victim.url_values['interaction_id']}"
    problems = await unprotected(app, runtime, victim)
    assert not problems, "CSRF holes:\n" + "\n".join(problems)

    # Still as it was: the consent and the authorization waiting for it (a forged "allow" issued no
    # code), and the factors. The checks above were refusals of the token, not of a broken browser.
    assert await consents.granted_scopes(runtime.db, victim.world.user_id, victim.world.spa_id) == {"openid", "profile"}
    assert [key.name for key in await passkeys.list_passkeys(runtime.db, victim.world.user_id)] == ["Phone"]
    assert await mfa.factor_status(runtime.db, victim.world.user_id) == mfa.FactorStatus(
        totp=True, webauthn=1, recovery_codes=10
    )
    page = await victim.browser.get(consent_page)
    assert page.status_code == 200 and 'name="decision"' in await text(page)
    allowed = await victim.browser.post(
        consent_page, form={"csrf_token": csrf_from(await text(page)), "decision": "allow"}
    )
    assert allowed.status_code == 303 and allowed.headers["Location"].startswith(f"{WEB_REDIRECT}?code=")


async def test_header_token_routes_take_the_header_not_a_form_field(app: Any, victim: Victim) -> None:
    """The fetch() routes: the page's own token in a form field instead of the header is refused;
    in the header it gets past the check (here to the password check)."""
    own = csrf_from(await text(await victim.browser.get("/account/security")))
    as_field = await victim.browser.post(
        "/account/security/passkeys/options", form={"csrf_token": own, "password": PASSWORD}
    )
    assert as_field.status_code == 403 and REFUSAL in await text(as_field)
    in_header = await victim.browser.post(
        "/account/security/passkeys/options", json={"password": "not the password"}, headers={"X-CSRF-Token": own}
    )
    assert in_header.status_code == 400
    assert (await in_header.get_json())["error"] == "invalid_request"


@pytest.fixture
def canary(app: Any) -> list[str]:
    """An unprotected state-changing route added to the accounts blueprint's endpoints, as a new
    route in a feature's pages.py would be (before the first request, while routes may be added)."""
    calls: list[str] = []

    async def change_something() -> str:
        calls.append("changed")
        return "done"

    app.add_url_rule("/account/canary", "accounts.canary", change_something, methods=["POST"])
    return calls


async def test_a_new_route_without_protection_is_caught(
    canary: list[str], app: Any, runtime: Any, victim: Victim
) -> None:
    """The walk is what finds routes: an unprotected one in an HTML blueprint is reported."""
    problems = await unprotected(app, runtime, victim, only={"accounts.canary"})
    assert len(problems) == 3, problems
    assert all(problem.startswith("POST /account/canary (accounts.canary) with ") for problem in problems)
    assert canary == ["changed"] * 3


async def test_logout_asks_unless_the_relying_party_proves_the_session(app: Any, victim: Victim) -> None:
    """/logout is in the walk: a forged confirmation (``confirm=yes``) is refused there. A POST
    without ``confirm`` only shows the confirmation page. The one sign-out without our token is
    RP-Initiated Logout with an id_token_hint for this very session (OIDC RP-Initiated Logout 1.0
    §2-3), which only the relying party holds."""
    leave = {"client_id": victim.world.web_id, "post_logout_redirect_uri": "https://rp.example/bye"}
    unconfirmed = await victim.browser.post("/logout", form=leave)
    assert unconfirmed.status_code == 200 and 'name="confirm"' in await text(unconfirmed)
    assert await still_signed_in(victim)

    tokens = await code_flow(victim.browser, victim.world)
    by_the_rp = await victim.browser.post(
        "/logout",
        form={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://rp.example/bye"},
    )
    assert by_the_rp.status_code == 303 and by_the_rp.headers["Location"] == "https://rp.example/bye"
    assert not await still_signed_in(victim)


# -- the account API: Bearer tokens, never cookies ---------------------------------------------------


async def test_account_api_ignores_the_browser_session(app: Any, runtime: Any, victim: Victim) -> None:
    own = csrf_from(await text(await victim.browser.get("/account/security")))
    before = await snapshot(runtime)
    seen = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("account_api."):
            continue
        path = fill(rule.rule, victim.url_values)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            # Cookies, the page's CSRF token, a JSON body: everything but a Bearer token.
            response = await victim.browser.open(
                path, method=method, json={"name": "Mallory"}, headers={"X-CSRF-Token": own}
            )
            assert response.status_code == 401, (method, rule.rule, response.status_code)
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="idp"', (method, rule.rule)
            assert (await response.get_json())["error"] == "invalid_request"
            assert response.headers["Cache-Control"] == "no-store"
            seen.append(f"{method} {rule.rule}")
    assert {"GET /api/account/profile", "PATCH /api/account/profile", "DELETE /api/account"} <= set(seen)
    assert len(seen) >= 15
    assert await snapshot(runtime) == before
    assert await still_signed_in(victim)
