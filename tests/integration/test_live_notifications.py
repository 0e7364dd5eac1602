"""The live notification socket (/ws/notifications): who may connect (the token in the first
message only, a first-party origin and client), what it hears (the user's events, with the audit
log's ids), and when it closes (the token expired or revoked, too many sockets, the server going
away), each with its documented close code."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from quart.testing.connections import WebsocketDisconnectError
from sqlalchemy import select

from idp.accounts.live import hub
from idp.oauth.clients import ClientSpec, create_client
from idp.storage.models import AuditEvent
from tests.oauth_helpers import add_user, login

ORIGIN = "https://app.example"


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**settings_overrides, **getattr(request, "param", {})}


@pytest.fixture
async def parties(runtime: Any) -> dict[str, Any]:
    user_id = await add_user(runtime, "live@example.com")
    first = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="App", client_type="public", redirect_uris=[f"{ORIGIN}/cb"], web_origins=[ORIGIN], first_party=True
        ),
    )
    third = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="Other",
            client_type="public",
            redirect_uris=["https://o.example/cb"],
            web_origins=["https://o.example"],
        ),
    )
    return {"user_id": user_id, "client": first.client.id, "third": third.client.id}


def token_for(runtime: Any, parties: dict[str, Any], *, client: str | None = None, **claims: Any) -> str:
    issued = runtime.tokens.issue_access_token(
        subject=parties["user_id"], client_id=client or parties["client"], scope="openid profile", **claims
    )
    return str(issued.value)


async def closed_with(ws: Any) -> int:
    """Read until the server closes; its close code."""
    with pytest.raises(WebsocketDisconnectError) as closed:
        for _ in range(50):
            await asyncio.wait_for(ws.receive(), 5)
    return int(closed.value.args[0])


async def connect(client: Any, runtime: Any, parties: dict[str, Any], token: str | None = None) -> Any:
    ws = client.websocket("/ws/notifications", headers={"Origin": ORIGIN})
    socket = await ws.__aenter__()
    await socket.send(json.dumps({"type": "auth", "access_token": token or token_for(runtime, parties)}))
    ready = json.loads(await asyncio.wait_for(socket.receive(), 5))
    assert ready == {"type": "ready", "sub": parties["user_id"], "heartbeat": 25}
    return ws, socket


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "origin", "first_message", "code"),
    [
        ("/ws/notifications?access_token=x", ORIGIN, None, hub.CLOSE_UNAUTHENTICATED),  # never in the URL
        ("/ws/notifications", "https://evil.example", "auth", hub.CLOSE_FORBIDDEN),
        ("/ws/notifications", "https://o.example", "auth", hub.CLOSE_FORBIDDEN),  # a third party's origin
        ("/ws/notifications", None, "auth", hub.CLOSE_FORBIDDEN),
        (
            "/ws/notifications",
            ORIGIN,
            '{"type": "auth", "access_token": "forged.jwt.value"}',
            hub.CLOSE_UNAUTHENTICATED,
        ),
        ("/ws/notifications", ORIGIN, '{"type": "auth"}', hub.CLOSE_UNAUTHENTICATED),
        ("/ws/notifications", ORIGIN, '{"type": "pong"}', hub.CLOSE_UNAUTHENTICATED),
        ("/ws/notifications", ORIGIN, "not json", hub.CLOSE_BAD_MESSAGE),
        ("/ws/notifications", ORIGIN, '{"type": "subscribe", "user": "someone"}', hub.CLOSE_BAD_MESSAGE),
    ],
)
async def test_refused_connections_close_with_their_code(
    client: Any,
    runtime: Any,
    parties: dict[str, Any],
    path: str,
    origin: str | None,
    first_message: str | None,
    code: int,
) -> None:
    headers = {"Origin": origin} if origin else {}
    async with client.websocket(path, headers=headers) as ws:
        if first_message is not None:
            message = first_message
            if first_message == "auth":
                message = json.dumps({"type": "auth", "access_token": token_for(runtime, parties)})
            await ws.send(message)
        assert await closed_with(ws) == code
    assert runtime.live.connections == 0


async def test_a_third_party_clients_token_is_refused(client: Any, runtime: Any, parties: dict[str, Any]) -> None:
    async with client.websocket("/ws/notifications", headers={"Origin": ORIGIN}) as ws:
        await ws.send(
            json.dumps({"type": "auth", "access_token": token_for(runtime, parties, client=parties["third"])})
        )
        assert await closed_with(ws) == hub.CLOSE_FORBIDDEN


@pytest.mark.parametrize("settings_overrides", [{"notifications": {"auth_timeout": 1}}], indirect=True)
async def test_a_socket_that_never_authenticates_is_closed(client: Any, parties: dict[str, Any]) -> None:
    started = time.monotonic()
    async with client.websocket("/ws/notifications", headers={"Origin": ORIGIN}) as ws:
        assert await closed_with(ws) == hub.CLOSE_UNAUTHENTICATED
    assert time.monotonic() - started < 4


# -- what it hears ---------------------------------------------------------------------------------


async def test_the_users_events_arrive_with_their_audit_ids(
    app: Any, client: Any, runtime: Any, parties: dict[str, Any]
) -> None:
    ws, socket = await connect(client, runtime, parties)
    await add_user(runtime, "someone.else@example.com")
    browser = app.test_client()
    assert (await login(browser, "someone.else@example.com")).status_code == 303  # not this user's
    assert (await login(browser, "live@example.com")).status_code == 303
    message = json.loads(await asyncio.wait_for(socket.receive(), 5))
    async with runtime.db.session() as session:
        [row] = (
            await session.execute(
                select(AuditEvent).where(
                    AuditEvent.event == "login_succeeded", AuditEvent.subject_id == parties["user_id"]
                )
            )
        ).scalars()
    assert message["type"] == "event" and message["event"] == "login_succeeded" and message["id"] == row.id
    assert message["occurred_at"].endswith("Z") and "sid" in message["data"] and "device" in message["data"]
    # The other user's sign-in, and the end of their session when this user signed in in the same
    # browser, came first: what this socket heard first is its own user's event.
    await ws.__aexit__(None, None, None)


async def test_pings_are_answered_and_a_fresh_token_extends_the_socket(
    client: Any, runtime: Any, parties: dict[str, Any]
) -> None:
    ws, socket = await connect(client, runtime, parties)
    await socket.send(json.dumps({"type": "pong"}))
    await socket.send(json.dumps({"type": "auth", "access_token": token_for(runtime, parties)}))
    # A token of another account on the same socket is refused.
    other_id = await add_user(runtime, "intruder@example.com")
    other = runtime.tokens.issue_access_token(subject=other_id, client_id=parties["client"], scope="openid").value
    await socket.send(json.dumps({"type": "auth", "access_token": other}))
    assert await closed_with(socket) == hub.CLOSE_FORBIDDEN
    await ws.__aexit__(None, None, None)


async def test_the_socket_closes_when_its_token_expires(
    client: Any, runtime: Any, parties: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_now = runtime.tokens.now
    monkeypatch.setattr(runtime.tokens, "now", lambda: int(time.time()) - runtime.tokens.access_token_ttl + 2)
    short_lived = token_for(runtime, parties)
    monkeypatch.setattr(runtime.tokens, "now", real_now)
    ws, socket = await connect(client, runtime, parties, short_lived)
    assert await closed_with(socket) == hub.CLOSE_TOKEN_LAPSED
    await ws.__aexit__(None, None, None)


async def test_the_socket_closes_soon_after_its_token_is_revoked(
    app: Any, client: Any, runtime: Any, parties: dict[str, Any]
) -> None:
    from idp.oauth.tokens import ACCESS_TOKEN_TYP

    token = token_for(runtime, parties)
    ws, socket = await connect(client, runtime, parties, token)
    claims = runtime.tokens.verify(token, typ=ACCESS_TOKEN_TYP, audience=runtime.tokens.access_token_audience)
    await runtime.tokens.revoke_access_token(claims["jti"], claims["exp"])
    browser = app.test_client()
    assert (await login(browser, "live@example.com")).status_code == 303
    await runtime.sessions.end_all_for_user(parties["user_id"], reason="ended_by_admin")  # a re-check, at once
    started = time.monotonic()
    assert await closed_with(socket) == hub.CLOSE_TOKEN_LAPSED
    assert time.monotonic() - started < 4  # not the minute of the regular re-check
    await ws.__aexit__(None, None, None)


@pytest.mark.parametrize("settings_overrides", [{"notifications": {"max_per_user": 2}}], indirect=True)
async def test_a_user_may_hold_a_bounded_number_of_sockets(client: Any, runtime: Any, parties: dict[str, Any]) -> None:
    first, _ = await connect(client, runtime, parties)
    second, _ = await connect(client, runtime, parties)
    async with client.websocket("/ws/notifications", headers={"Origin": ORIGIN}) as ws:
        await ws.send(json.dumps({"type": "auth", "access_token": token_for(runtime, parties)}))
        assert await closed_with(ws) == hub.CLOSE_TOO_MANY
    assert runtime.live.connections == 2
    await first.__aexit__(None, None, None)
    await second.__aexit__(None, None, None)


async def test_server_shutdown_closes_sockets_as_going_away(client: Any, runtime: Any, parties: dict[str, Any]) -> None:
    ws, socket = await connect(client, runtime, parties)
    await runtime.live.stop()
    assert await closed_with(socket) == hub.CLOSE_GOING_AWAY
    await ws.__aexit__(None, None, None)
