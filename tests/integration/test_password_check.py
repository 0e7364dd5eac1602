"""POST /account/password-check: the verdict the sign-up and password forms show as the user types.
The same check the submission makes (tests/integration/test_registration.py covers each rule);
here: what it is checked against (typed email and name, the signed-in user, a reset link's user),
its guards (CSRF header, rate limit, bad input), and that the candidate never reaches a log."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.oauth_helpers import csrf_from, login, make_world

GOOD = "copper-walrus-violin-tundra"
URL = "/account/password-check"


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**settings_overrides, **getattr(request, "param", {})}


async def csrf_header(client: Any, page: str = "/register") -> dict[str, str]:
    return {"X-CSRF-Token": csrf_from(await (await client.get(page)).get_data(as_text=True))}


async def verdict(client: Any, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    response = await client.post(URL, json=body, headers=headers)
    return response.status_code, await response.get_json()


@pytest.mark.parametrize(
    ("body", "rule", "fragment"),
    [
        ({"password": "short phrase"}, "too_short", "at least 15 characters"),
        ({"password": "passwordstandard"}, "common", "commonly used or leaked"),
        ({"password": "violin-lovelace-orbit-harbour", "name": "Ada Lovelace"}, "personal", "your name"),
        (
            {"password": "marguerite.duras-writes-novels", "email": "marguerite.duras@example.com"},
            "personal",
            "email address",
        ),
    ],
)
async def test_a_refused_password_says_why(client: Any, body: dict[str, Any], rule: str, fragment: str) -> None:
    status, answer = await verdict(client, body, await csrf_header(client))
    assert status == 200 and answer["acceptable"] is False and answer["rule"] == rule
    assert fragment in answer["message"]


async def test_a_good_password_is_acceptable_and_the_answer_is_not_cached(client: Any) -> None:
    response = await client.post(
        URL, json={"password": GOOD, "email": "ada@example.com"}, headers=await csrf_header(client)
    )
    assert await response.get_json() == {"acceptable": True, "rule": None, "message": None}
    assert response.headers["Cache-Control"] == "no-store"


async def test_signed_in_the_accounts_own_details_are_used(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)  # Alice Example, alice@example.com
    await login(client, world.email)
    headers = await csrf_header(client, "/account/password")
    # Typed details are ignored: the account's name is what a change is checked against.
    status, answer = await verdict(client, {"password": "alice-example-rocks-42", "name": "Bob"}, headers)
    assert (status, answer["acceptable"], answer["rule"]) == (200, False, "personal")


async def test_without_the_csrf_header_nothing_is_judged(client: Any) -> None:
    await client.get("/register")
    response = await client.post(URL, json={"password": GOOD})
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "password is required"),
        ({"password": ""}, "password is required"),
        ({"password": 42}, "password must be a string of at most 4096"),
        ({"password": GOOD, "email": ["a"]}, "email must be a string of at most 4096"),
        ({"password": "x" * 4097}, "password must be a string of at most 4096"),
    ],
)
async def test_bad_input_is_a_named_400(client: Any, body: dict[str, Any], message: str) -> None:
    status, answer = await verdict(client, body, await csrf_header(client))
    assert (status, answer["error"]) == (400, "invalid_request")
    assert answer["error_description"] == message


@pytest.mark.parametrize(
    "settings_overrides", [{"rate_limits": {"password_check_per_ip": {"requests": 3, "window": 60}}}], indirect=True
)
async def test_checks_are_rate_limited_per_address(client: Any) -> None:
    headers = await csrf_header(client)
    for _ in range(3):
        assert (await client.post(URL, json={"password": GOOD}, headers=headers)).status_code == 200
    refused = await client.post(URL, json={"password": GOOD}, headers=headers)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


async def test_the_candidate_never_reaches_a_log(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    candidate = "unique-candidate-zebra-quartz-9931"
    await verdict(client, {"password": candidate}, await csrf_header(client))
    await verdict(client, {"password": candidate, "email": 5}, await csrf_header(client))
    assert candidate not in caplog.text
