"""How many database sessions a request at the token, introspection and revocation endpoints opens.

One unit of work per request: the client, the code or refresh token, the user and what the grant
issues are read and written in one database session (one connection checkout, one transaction).
The audit trail writes each event in a session of its own (idp.audit), so a request opens one
session plus one per event it published. Before the repositories, a code redemption opened four
(client, code, the redemption, the audit row) and a replay five.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event

from tests.oauth_helpers import WEB_REDIRECT, World, authorize, basic, make_world, query_of


@dataclass
class Counts:
    sessions: int = 0
    checkouts: int = 0
    events: list[str] = field(default_factory=list)


@contextmanager
def counting(runtime: Any) -> Iterator[Counts]:
    counts = Counts()
    original = runtime.db.session

    @asynccontextmanager
    async def session() -> AsyncIterator[Any]:
        counts.sessions += 1
        async with original() as opened:
            yield opened

    def on_checkout(*_: Any) -> None:
        counts.checkouts += 1

    async def on_event(published: Any, _context: Any) -> None:
        counts.events.append(published.name)

    pool = runtime.db.engine.sync_engine.pool
    event.listen(pool, "checkout", on_checkout)
    runtime.events.subscribe(on_event)
    runtime.db.session = session
    try:
        yield counts
    finally:
        runtime.db.session = original
        runtime.events._catch_all.remove(on_event)
        event.remove(pool, "checkout", on_checkout)


def assert_one_unit_of_work(counts: Counts, *events: str) -> None:
    assert counts.events == list(events)
    assert counts.sessions == counts.checkouts == 1 + len(events), counts


@pytest.fixture
async def world(runtime: Any) -> World:
    return await make_world(runtime)


@pytest.fixture
async def redeemed(client: Any, world: World) -> dict[str, Any]:
    response, verifier = await authorize(client, world.web_id, WEB_REDIRECT, email=world.email)
    form = {
        "grant_type": "authorization_code",
        "code": query_of(response.headers["Location"])["code"],
        "redirect_uri": WEB_REDIRECT,
        "code_verifier": verifier,
    }
    return {"form": form}


async def test_a_code_redemption_and_its_replay_are_one_unit_of_work_each(
    client: Any, runtime: Any, world: World, redeemed: dict[str, Any]
) -> None:
    auth = basic(world.web_id, world.web_secret)
    with counting(runtime) as counts:
        response = await client.post("/token", form=redeemed["form"], headers=auth)
    assert response.status_code == 200
    assert_one_unit_of_work(counts, "token_issued")

    with counting(runtime) as counts:
        replay = await client.post("/token", form=redeemed["form"], headers=auth)
    assert replay.status_code == 400
    assert_one_unit_of_work(counts, "token_revoked")


async def test_a_refresh_and_a_client_credentials_grant_are_one_unit_of_work_each(
    client: Any, runtime: Any, world: World, redeemed: dict[str, Any]
) -> None:
    auth = basic(world.web_id, world.web_secret)
    tokens = await (await client.post("/token", form=redeemed["form"], headers=auth)).get_json()
    with counting(runtime) as counts:
        response = await client.post(
            "/token", form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, headers=auth
        )
    assert response.status_code == 200
    assert_one_unit_of_work(counts, "token_issued")

    with counting(runtime) as counts:
        response = await client.post("/token", form={"grant_type": "client_credentials"}, headers=auth)
    assert response.status_code == 200
    assert_one_unit_of_work(counts, "token_issued")


async def test_introspection_and_revocation_are_one_unit_of_work_each(
    client: Any, runtime: Any, world: World, redeemed: dict[str, Any]
) -> None:
    auth = basic(world.web_id, world.web_secret)
    tokens = await (await client.post("/token", form=redeemed["form"], headers=auth)).get_json()
    for token in (tokens["access_token"], tokens["refresh_token"]):
        with counting(runtime) as counts:
            response = await client.post("/introspect", form={"token": token}, headers=auth)
        assert (await response.get_json())["active"] is True
        assert_one_unit_of_work(counts)

    with counting(runtime) as counts:
        response = await client.post("/revoke", form={"token": tokens["refresh_token"]}, headers=auth)
    assert response.status_code == 200
    assert_one_unit_of_work(counts, "token_revoked")
