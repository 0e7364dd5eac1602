"""Quart's signed-cookie session is switched off (idp.http.NoFrameworkSession): sessions are
server-side behind idp's own cookie, so no request opens or saves the framework's, none sets its
cookie, and code that wrote to ``quart.session`` by mistake fails instead of sending data to the
browser in a cookie."""

from __future__ import annotations

from typing import Any

import pytest
from quart import session

from tests.oauth_helpers import login, make_world


async def test_writing_to_the_framework_session_fails(app: Any) -> None:
    async with app.test_request_context("/"):
        with pytest.raises(RuntimeError):
            session["user"] = "someone"


async def test_no_response_sets_the_framework_session_cookie(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    responses = [await client.get("/"), await client.get("/login")]
    responses.append(await login(client, world.email))
    for response in responses:
        cookies = response.headers.getlist("Set-Cookie")
        assert not [cookie for cookie in cookies if cookie.startswith("session=")]
    assert any(
        cookie.startswith(("idp_session=", "__Host-idp_session="))
        for cookie in responses[-1].headers.getlist("Set-Cookie")
    )
