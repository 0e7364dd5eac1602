"""Back-channel logout in tests: a recording relying-party endpoint (httpx.MockTransport) in place
of the runtime's notifier, a client registered with a back-channel URI, and logout-token checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.oauth.clients import ClientSpec, create_client
from idp.oauth.logout import BackchannelNotifier
from tests.oauth_helpers import WEB_REDIRECT, World, authorize, basic, make_world, query_of

BYE = "https://rp.example/bye"
COOKIE = "idp_session"  # http issuer in tests: no __Host- prefix


def session_cookie(client: Any) -> str | None:
    for cookie in client.cookie_jar:
        if cookie.name == COOKIE:
            return str(cookie.value)
    return None


BCL_URI = "https://rp.example/bcl"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Recorder:
    def __init__(self, answers: list[int | Exception] | None = None) -> None:
        self.answers = list(answers or [])
        self.requests: list[httpx.Request] = []
        self.release: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.release is not None:
            await self.release.wait()
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)


async def install_notifier(runtime: Any, recorder: Recorder) -> None:
    await runtime.backchannel.close()
    runtime.backchannel = BackchannelNotifier(
        runtime.db, runtime.tokens, runtime.outbox, transport=httpx.MockTransport(recorder)
    )


async def bcl_client(runtime: Any, *, subject_type: str = "public") -> tuple[str, str]:
    created = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name="BCL RP",
            client_type="confidential",
            redirect_uris=[WEB_REDIRECT],
            post_logout_redirect_uris=[BYE],
            backchannel_logout_uri=BCL_URI,
            subject_type=subject_type,
        ),
    )
    assert created.client_secret is not None
    return created.client.id, created.client_secret


async def sign_in_through(client: Any, world: World, client_id: str, secret: str, **params: str) -> dict[str, Any]:
    """Sign in through an authorization request of ``client_id`` (``params`` override the helper's
    defaults, e.g. ``scope``) and redeem the code; the token response."""
    response, verifier = await authorize(client, client_id, WEB_REDIRECT, email=world.email, **params)
    assert response.status_code == 303
    token = await client.post(
        "/token",
        form={
            "grant_type": "authorization_code",
            "code": query_of(response.headers["Location"])["code"],
            "redirect_uri": WEB_REDIRECT,
            "code_verifier": verifier,
        },
        headers=basic(client_id, secret),
    )
    assert token.status_code == 200
    return dict(await token.get_json())


async def bcl_setup(
    client: Any, runtime: Any, recorder: Recorder, *, subject_type: str = "public"
) -> tuple[World, str, dict[str, Any], str]:
    await install_notifier(runtime, recorder)
    world = await make_world(runtime)
    client_id, secret = await bcl_client(runtime, subject_type=subject_type)
    tokens = await sign_in_through(client, world, client_id, secret)
    cookie = session_cookie(client)
    assert cookie is not None
    return world, client_id, tokens, cookie


async def verify_logout_token(client: Any, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    jwks = await (await client.get("/jwks")).get_json()
    keys = KeySet.import_key_set(jwks)
    algs = [key["alg"] for key in jwks["keys"]]
    decoded = jwt.decode(token, keys, algorithms=algs)
    return dict(decoded.header), dict(decoded.claims)


async def outbox_statuses(runtime: Any) -> dict[tuple[str, str], int]:
    """How many outbox rows there are of each (kind, status)."""
    from idp.storage.repositories.outbox import OutboxRepository

    async with runtime.db.session() as session:
        counts = await OutboxRepository(session).counts()
    return {(row.kind, row.status): row.count for row in counts}
