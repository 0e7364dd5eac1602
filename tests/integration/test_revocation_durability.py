"""Security state survives the loss of the key-value store (issue 15): revocations and the
clients of each session are recorded in the database, and the key-value store (Redis, or the
in-process store) only caches them. "Emptying the store" here deletes every key of the test's
own prefix, what a Redis restart without persistence (or a new embedded process) leaves."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from idp.events import Event, EventContext, SessionEnded
from idp.oauth.denylist import RELOAD_EVERY, Denylist
from idp.storage.models import OAuthClient, RevokedAccessToken, RevokedGrant, SessionClient
from idp.storage.repositories import RevocationRepository
from tests.oauth_helpers import basic, code_flow, make_world

UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1


async def empty_the_store(runtime: Any) -> None:
    await runtime.kv.delete_prefix("")
    assert await runtime.kv.count_prefix("") == 0


async def first_party_world(runtime: Any) -> Any:
    from sqlalchemy import update

    world = await make_world(runtime)
    async with runtime.db.session() as session:
        await session.execute(update(OAuthClient).where(OAuthClient.id == world.web_id).values(first_party=True))
    return world


async def revoke(client: Any, world: Any, token: str) -> Any:
    return await client.post("/revoke", form={"token": token}, headers=basic(world.web_id, world.web_secret))


async def statuses(client: Any, world: Any, token: str) -> tuple[int, bool, int]:
    """What userinfo, introspection and the account API say of an access token."""
    bearer = {"Authorization": f"Bearer {token}"}
    userinfo = (await client.get("/userinfo", headers=bearer)).status_code
    introspection = await client.post(
        "/introspect", form={"token": token}, headers=basic(world.web_id, world.web_secret)
    )
    active = (await introspection.get_json())["active"]
    account = (await client.get("/api/account/profile", headers=bearer)).status_code
    return userinfo, active, account


async def count(runtime: Any, model: Any) -> int:
    async with runtime.db.session() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.fixture
async def store_path(runtime: Any) -> None:
    """This node checks the key-value store, as a node does that doesn't hold the revocations in
    memory (not subscribed, or the in-process store): what these tests are about. The memory
    path is tests/integration/test_denylist_in_memory.py's."""
    await runtime.tokens.denylist.stop()


@pytest.mark.usefixtures("store_path")
async def test_a_revoked_access_token_stays_refused_after_the_store_is_emptied(client: Any, runtime: Any) -> None:
    world = await first_party_world(runtime)
    revoked = (await code_flow(client, world))["access_token"]
    kept = (await code_flow(client, world))["access_token"]
    assert await statuses(client, world, revoked) == (200, True, 200)
    assert (await revoke(client, world, revoked)).status_code == 200
    # The record: the database has it before the key-value store is told.
    async with runtime.db.session() as session:
        [row] = (await session.execute(select(RevokedAccessToken))).scalars()
    claims = runtime.tokens.peek_claims(revoked)
    assert row.jti == claims["jti"] and row.expires_at.timestamp() == claims["exp"] + 60

    reloads = runtime.tokens.denylist.reloads  # one already: the store started empty, too
    await empty_the_store(runtime)
    assert await statuses(client, world, revoked) == (401, False, 401)
    assert await statuses(client, world, kept) == (200, True, 200)
    # One reload put the denylist back; the next checks answer from the key-value store alone.
    assert runtime.tokens.denylist.reloads == reloads + 1
    assert await runtime.kv.get("revoked_jti:" + claims["jti"]) == "1"
    # The marker expires, so whatever the store lost some other way is reloaded within a minute.
    assert 0 < (await runtime.kv.ttl("revocations_loaded") or 0) <= RELOAD_EVERY
    assert await statuses(client, world, revoked) == (401, False, 401)
    assert runtime.tokens.denylist.reloads == reloads + 1


async def test_a_grant_revoked_after_the_store_was_emptied_still_kills_its_access_tokens(
    client: Any, runtime: Any
) -> None:
    world = await first_party_world(runtime)
    tokens = await code_flow(client, world)
    rotated = await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(world.web_id, world.web_secret),
    )
    second = await rotated.get_json()
    other = (await code_flow(client, world))["access_token"]

    await empty_the_store(runtime)  # no index of the grant's access tokens survives this
    assert (await revoke(client, world, second["refresh_token"])).status_code == 200
    assert await count(runtime, RevokedGrant) == 1
    for access in (tokens["access_token"], second["access_token"]):
        assert await statuses(client, world, access) == (401, False, 401)
    assert await statuses(client, world, other) == (200, True, 200)
    # And emptied once more, the grant's revocation comes back from the database.
    await empty_the_store(runtime)
    assert await statuses(client, world, tokens["access_token"]) == (401, False, 401)


async def test_revocation_with_the_database_down_answers_503_and_records_nothing(client: Any, runtime: Any) -> None:
    world = await first_party_world(runtime)
    tokens = await code_flow(client, world)
    dead = create_async_engine(UNREACHABLE)
    working = runtime.db._sessionmaker
    runtime.db._sessionmaker = async_sessionmaker(dead, expire_on_commit=False)
    try:
        for token in (tokens["access_token"], tokens["refresh_token"]):
            response = await revoke(client, world, token)
            body = await response.get_json()
            assert response.status_code == 503 and body["error"] == "temporarily_unavailable", body
            assert response.headers["Retry-After"]
    finally:
        runtime.db._sessionmaker = working
        await dead.dispose()
    # Nothing was revoked, anywhere: the client was not told it was, and it was not.
    assert (await count(runtime, RevokedAccessToken), await count(runtime, RevokedGrant)) == (0, 0)
    assert await runtime.kv.count_prefix("revoked_") == 0
    assert await statuses(client, world, tokens["access_token"]) == (200, True, 200)


@pytest.fixture
def reads_of_everything(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each time the whole denylist is read from the database (what a reload does)."""
    reads: list[int] = []
    read = RevocationRepository.live

    async def counted(self: RevocationRepository, now: Any) -> Any:
        reads.append(1)
        return await read(self, now)

    monkeypatch.setattr(RevocationRepository, "live", counted)
    return reads


@pytest.mark.usefixtures("store_path")
async def test_the_store_is_reloaded_once_for_many_concurrent_requests(
    client: Any, runtime: Any, reads_of_everything: list[int]
) -> None:
    world = await first_party_world(runtime)
    revoked = [(await code_flow(client, world))["access_token"] for _ in range(3)]
    for token in revoked:
        assert (await revoke(client, world, token)).status_code == 200
    await empty_the_store(runtime)

    bearer = [{"Authorization": f"Bearer {token}"} for token in revoked]
    answers = await asyncio.gather(*(client.get("/userinfo", headers=bearer[index % 3]) for index in range(30)))
    # Every request was refused, whether it came before, during or after the reload.
    assert [answer.status_code for answer in answers] == [401] * 30
    assert runtime.tokens.denylist.reloads == 1 and len(reads_of_everything) == 1
    assert await runtime.kv.count_prefix("revoked_jti:") == 3


async def test_two_nodes_reload_the_shared_store_once(runtime: Any, reads_of_everything: list[int]) -> None:
    other_node = Denylist(runtime.kv, runtime.db)
    await runtime.tokens.revoke_access_token("jti-1", 2_000_000_000)
    await empty_the_store(runtime)
    results = await asyncio.gather(runtime.tokens.denylist.reload(), other_node.reload(), other_node.reload())
    assert sorted(results) == [False, False, True] and len(reads_of_everything) == 1
    assert await runtime.kv.get("revoked_jti:jti-1") == "1"
    assert await runtime.tokens.denylist.is_revoked("jti-1", None) is True


# -- sessions the key-value store lost ----------------------------------------------------------


@pytest.fixture
def ended(runtime: Any) -> list[SessionEnded]:
    seen: list[SessionEnded] = []

    async def record(event: Event, _context: EventContext) -> None:
        assert isinstance(event, SessionEnded)
        seen.append(event)

    runtime.events.subscribe(record, SessionEnded)
    return seen


async def test_logging_out_of_a_lost_session_still_ends_it_for_its_clients(
    client: Any, runtime: Any, ended: list[SessionEnded]
) -> None:
    world = await first_party_world(runtime)
    tokens = await code_flow(client, world, scope="openid profile")  # online: ends with the session
    sid = runtime.tokens.peek_claims(tokens["id_token"])["sid"]
    async with runtime.db.session() as session:
        [row] = (await session.execute(select(SessionClient))).scalars()
    assert (row.sid, row.client_id, row.user_id, row.ended_at) == (sid, world.web_id, world.user_id, None)

    await empty_the_store(runtime)  # the browser's session is gone with it
    response = await client.get("/logout?" + urlencode({"id_token_hint": tokens["id_token"]}))
    assert response.status_code == 200
    [event] = ended
    assert (event.sid, event.user_id, event.clients, event.reason) == (sid, world.user_id, (world.web_id,), "logout")
    # The session's grants went with it (sessions.end_revokes_refresh_tokens = "online").
    assert await statuses(client, world, tokens["access_token"]) == (401, False, 401)
    async with runtime.db.session() as session:
        assert (await session.execute(select(SessionClient.ended_at))).scalar_one() is not None
    # Once ended it stays ended: the same hint again ends nothing.
    await client.get("/logout?" + urlencode({"id_token_hint": tokens["id_token"]}))
    assert len(ended) == 1


async def test_a_hint_of_a_client_outside_the_lost_session_ends_nothing(
    client: Any, runtime: Any, ended: list[SessionEnded]
) -> None:
    world = await first_party_world(runtime)
    tokens = await code_flow(client, world, scope="openid profile")
    sid = runtime.tokens.peek_claims(tokens["id_token"])["sid"]
    async with runtime.db.session() as session:
        await session.execute(SessionClient.__table__.delete().where(SessionClient.sid == sid))
    await empty_the_store(runtime)
    await client.get("/logout?" + urlencode({"id_token_hint": tokens["id_token"]}))
    assert ended == []
    assert await statuses(client, world, tokens["access_token"]) == (200, True, 200)


async def test_a_session_ended_normally_is_marked_ended_with_every_recorded_client(
    client: Any, runtime: Any, ended: list[SessionEnded]
) -> None:
    world = await first_party_world(runtime)
    tokens = await code_flow(client, world, scope="openid profile")
    await code_flow(client, world, confidential=False, scope="openid")  # the SPA joins the same session
    sid = runtime.tokens.peek_claims(tokens["id_token"])["sid"]
    # The key-value copy forgot the SPA (say, written before a restart): the database still knows.
    session = await runtime.sessions.by_sid(sid)
    session.clients = [world.web_id]
    assert await runtime.sessions.end(session, reason="ended_by_user")
    [event] = ended
    assert set(event.clients) == {world.web_id, world.spa_id}
    async with runtime.db.session() as db_session:
        rows = (await db_session.execute(select(SessionClient).where(SessionClient.sid == sid))).scalars()
        assert {row.client_id for row in rows if row.ended_at is not None} == {world.web_id, world.spa_id}


async def test_a_session_ends_for_its_clients_even_with_the_database_down(
    client: Any, runtime: Any, ended: list[SessionEnded]
) -> None:
    world = await first_party_world(runtime)
    tokens = await code_flow(client, world, scope="openid profile")
    session = await runtime.sessions.by_sid(runtime.tokens.peek_claims(tokens["id_token"])["sid"])
    dead = create_async_engine(UNREACHABLE)
    working = runtime.db._sessionmaker
    runtime.db._sessionmaker = async_sessionmaker(dead, expire_on_commit=False)
    try:
        assert await runtime.sessions.end(session, reason="ended_by_user")
    finally:
        runtime.db._sessionmaker = working
        await dead.dispose()
    [event] = ended
    assert event.clients == (world.web_id,)  # from the key-value copy of the session


async def test_serving_nodes_resync_the_store_before_the_marker_expires(runtime: Any) -> None:
    """In steady state no request meets a missing marker: a node re-syncs from the database when
    less than half of the marker's lifetime is left, putting back what the store lost meanwhile."""
    await runtime.tokens.revoke_access_token("jti-kept", 2_000_000_000)
    assert await runtime.tokens.denylist.reload(resync=True)
    await runtime.kv.delete("revoked_jti:jti-kept")  # lost some other way (evicted)
    await runtime.kv.set("revocations_loaded", "1", ttl=RELOAD_EVERY / 2 - 1)
    before = runtime.tokens.denylist.reloads
    keeper = asyncio.create_task(runtime.tokens.denylist.keep_loaded(check_every=0.02))
    try:
        for _ in range(200):
            if runtime.tokens.denylist.reloads > before:
                break
            await asyncio.sleep(0.02)
    finally:
        keeper.cancel()
    assert runtime.tokens.denylist.reloads == before + 1
    assert await runtime.kv.get("revoked_jti:jti-kept") == "1"
    assert (await runtime.kv.ttl("revocations_loaded") or 0) > RELOAD_EVERY / 2
