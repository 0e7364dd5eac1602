"""Every route, hostile input: no 5xx, and a Content-Type that tells the truth about the body.

The test walks the application's URL map, so a route added later is probed without anyone
listing it here. Each route and method is sent, from a signed-in browser that also holds a
first-party access token and a valid CSRF token:

- an empty body (with no type, as form and as JSON);
- a NUL byte in the query string, in every form field any page or handler reads, in JSON, and in
  each path segment (PostgreSQL can't store NUL: 500s on /login, /authorize, /logout and consent
  withdrawal in the 2026-12-01 test, M6);
- a lone UTF-16 surrogate in JSON (500 on nine account-API routes, L9);
- a Unicode digit in each numeric parameter (M5);
- an oversized header (M7).

Each answer must be below 500, and its Content-Type must match its body: none on an empty body
(RFC 9110 §8.3), no Content-Length on a 204 (§8.6), parseable JSON under a JSON type, a page under
text/html (L6). CI runs this file on SQLite and on PostgreSQL. Checklist: ASVS 2.2.1, 16.5.3 (input
validation, no unexpected errors), 15.2.2 (resource limits); RFC 9110 §8.3, §8.6.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from werkzeug.datastructures import Headers

from idp.security.request_limits import MAX_HEADER_BYTES
from tests.oauth_helpers import WEB_REDIRECT, csrf_from, pkce_pair

ROOT = Path(__file__).resolve().parents[2] / "idp"
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
UNICODE_DIGITS = ("\u00b2", "\u0663", "\uff11", "\u07c3")  # superscript two, Arabic-Indic, fullwidth, NKo
# Numeric request parameters, with the endpoints that read them and what the rest of a valid
# request looks like there (so the probe reaches the parameter's parser).
NUMERIC_PARAMETERS = {
    "oauth_pages.authorize": ("max_age",),
    "account_api.get_activity": ("limit", "before"),
    "accounts.activity_page": ("before",),
}


def _names_read_by_the_code() -> list[str]:
    """Every form field a template renders or a handler reads (so new fields are probed too)."""
    names: set[str] = set()
    for template in (ROOT / "templates").rglob("*.html"):
        names |= set(re.findall(r'name="([a-z_]+)"', template.read_text()))
    for module in ROOT.rglob("*.py"):
        names |= set(re.findall(r'(?:form|params|body)\.get\("([a-z_]+)"', module.read_text()))
        names |= set(re.findall(r'_single\(\w+, "([a-z_]+)"\)', module.read_text()))
    names |= {"given_name", "family_name", "preferred_username", "locale", "zoneinfo"}
    return sorted(names - {"csrf_token", "viewport", "referrer"})


FIELDS = _names_read_by_the_code()


class WireRecorder:
    """Keeps the headers of the last response as the app sent them over ASGI: the test client
    rebuilds a Response from them, which would add Quart's defaults (a type, a length) again."""

    def __init__(self, app: Any) -> None:
        self.inner = app.asgi_app
        self.headers = Headers()
        app.asgi_app = self

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]])
            await send(message)

        await self.inner(scope, receive, recording_send)


@dataclass
class Walker:
    client: Any
    runtime: Any
    world: Any
    token: str
    csrf: str
    wire: WireRecorder

    def url(self, rule: Any, *, path_value: str | None = None, query: dict[str, str] | None = None) -> str:
        path = rule.rule
        for argument in rule.arguments:
            value = path_value if path_value is not None else self.sample(argument)
            path = re.sub(rf"<(?:[a-z]+:)?{argument}>", quote(value, safe=""), path)
        return path + (f"?{urlencode(query)}" if query else "")

    def sample(self, argument: str) -> str:
        return {"client_id": self.world.web_id, "filename": "idp.css", "name": "none.png"}.get(argument, "x" * 22)

    def headers(self, extra: Headers | None = None, **more: str) -> Headers:
        headers = Headers({"Authorization": f"Bearer {self.token}", "X-CSRF-Token": self.csrf, **more})
        for name, value in (extra or Headers()).items():
            headers.add(name, value)
        return headers

    async def send(self, method: str, url: str, *, what: str, **kwargs: Any) -> Any:
        response = await self.client.open(url, method=method, **kwargs)
        await check_answer(response, self.wire.headers, f"{method} {url} ({what})")
        return response


async def check_answer(response: Any, sent: Headers, what: str) -> None:
    data = await response.get_data()
    assert response.status_code < 500, f"{what}: {response.status_code} {data[:300]!r}"
    content_type = sent.get("Content-Type")
    if not data:
        assert content_type is None, f"{what}: an empty body labelled {content_type}"
        if response.status_code == 204:
            assert "Content-Length" not in sent, f"{what}: a 204 with Content-Length"
        return
    assert content_type, f"{what}: a body without a Content-Type"
    mimetype = response.mimetype
    if mimetype == "application/json" or mimetype.endswith("+json"):
        json.loads(data)
    elif mimetype == "text/html":
        assert data.lstrip()[:1] == b"<", f"{what}: text/html that is not HTML: {data[:80]!r}"
    else:
        assert mimetype in ("text/css", "text/javascript", "application/javascript", "text/plain"), (what, mimetype)


@pytest.fixture
async def walker(client: Any, runtime: Any) -> Walker:
    from sqlalchemy import update

    from idp.storage.models import OAuthClient
    from tests.oauth_helpers import code_flow, make_world

    wire = WireRecorder(client.app)
    world = await make_world(runtime)
    async with runtime.db.session() as session:
        await session.execute(update(OAuthClient).where(OAuthClient.id == world.web_id).values(first_party=True))
    tokens = await code_flow(client, world, scope="openid profile email offline_access")
    csrf = csrf_from(await (await client.get("/account/profile")).get_data(as_text=True))
    return Walker(client, runtime, world, tokens["access_token"], csrf, wire)


def routes(app: Any) -> list[tuple[Any, str]]:
    found = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: (rule.rule, rule.endpoint)):
        for method in sorted(rule.methods - {"HEAD"}):
            found.append((rule, method))
    return found


def valid_authorization_query(world: Any) -> dict[str, str]:
    _, challenge = pkce_pair()
    return {
        "response_type": "code",
        "client_id": world.web_id,
        "redirect_uri": WEB_REDIRECT,
        "scope": "openid",
        "state": "walk",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }


async def test_every_route_answers_empty_bodies_truthfully(app: Any, walker: Walker) -> None:
    for rule, method in routes(app):
        url = walker.url(rule)
        if method in BODY_METHODS:
            await walker.send(method, url, what="no body", headers=walker.headers())
            form_type = {"Content-Type": "application/x-www-form-urlencoded"}
            await walker.send(method, url, what="empty form", headers=walker.headers(**form_type), data=b"")
            json_type = {"Content-Type": "application/json"}
            await walker.send(method, url, what="empty JSON", headers=walker.headers(**json_type), data=b"")
        else:
            await walker.send(method, url, what="plain", headers=walker.headers())


@pytest.mark.parametrize("bad", ["nul", "surrogate"])
async def test_every_route_refuses_unusable_text(app: Any, walker: Walker, bad: str) -> None:
    escaped = "\\u0000" if bad == "nul" else "\\ud800"
    json_body = ("{" + ", ".join(f'"{name}": "a{escaped}b"' for name in sorted({*FIELDS, "credential"})) + "}").encode()
    for rule, method in routes(app):
        url = walker.url(rule)
        if method in BODY_METHODS:
            await walker.send(
                method,
                url,
                what=f"{bad} in JSON",
                headers=walker.headers(**{"Content-Type": "application/json"}),
                data=json_body,
            )
        if bad != "nul":
            continue  # a form or a URL can't carry a lone surrogate: they are percent-encoded UTF-8
        await walker.send(method, walker.url(rule, query={"client_id": "web\x00app", "email": "\x00"}), what="query")
        if rule.arguments:
            await walker.send(method, walker.url(rule, path_value="a\x00b"), what="path", headers=walker.headers())
        if method in BODY_METHODS:
            form = urlencode({"csrf_token": walker.csrf, **{name: "a\x00b" for name in FIELDS}})
            await walker.send(
                method,
                url,
                what="form",
                headers=walker.headers(**{"Content-Type": "application/x-www-form-urlencoded"}),
                data=form.encode(),
            )


async def test_numeric_parameters_take_ascii_digits_only(app: Any, walker: Walker) -> None:
    endpoints = {rule.endpoint: rule for rule in app.url_map.iter_rules()}
    assert set(NUMERIC_PARAMETERS) <= set(endpoints), "a numeric parameter's endpoint was renamed"
    for endpoint, names in NUMERIC_PARAMETERS.items():
        rule = endpoints[endpoint]
        base = valid_authorization_query(walker.world) if endpoint == "oauth_pages.authorize" else {}
        for name in names:
            for digit in (*UNICODE_DIGITS, f"1{UNICODE_DIGITS[0]}", "+5", " 5", "1_0"):
                response = await walker.send(
                    "GET",
                    walker.url(rule, query={**base, name: digit}),
                    what=f"{name}={digit!r}",
                    headers=walker.headers(),
                )
                assert response.status_code in (303, 400), (endpoint, name, digit, response.status_code)
                if response.status_code == 303:  # a redirectable error, never a success
                    assert "error=invalid_request" in response.headers["Location"], response.headers["Location"]


async def test_every_route_refuses_an_oversized_header(app: Any, walker: Walker) -> None:
    junk = Headers([("X-Junk", "h" * (MAX_HEADER_BYTES + 1))])
    for rule, method in routes(app):
        response = await walker.send(method, walker.url(rule), what="oversized header", headers=walker.headers(junk))
        assert response.status_code == 431, (rule.rule, method)
