"""How many database sessions a request at the token, introspection and revocation endpoints opens.

One unit of work per request: the client, the code or refresh token, the user and what the grant
issues are read and written in one database session (one connection checkout, one transaction).
The audit trail writes each event in a session of its own (idp.audit), so a request opens one
session plus one per event it published. Before the repositories, a code redemption opened four
(client, code, the redemption, the audit row) and a replay five.

With Redis the client comes from the client cache (idp.storage.repositories.client_cache) and the
user behind an introspected token from the user cache: each read once in a session of its own,
then from memory, so these tests warm them first. With the in-process
store (no cache) the client is read in a session of its own on each request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    # Every session is made by the database's session maker (Database.session and the units of
    # work's lazy_session, which makes one only when a repository is first used).
    original = runtime.db._sessionmaker

    def session() -> Any:
        counts.sessions += 1
        return original()

    def on_checkout(*_: Any) -> None:
        counts.checkouts += 1

    async def on_event(published: Any, _context: Any) -> None:
        counts.events.append(published.name)

    pool = runtime.db.engine.sync_engine.pool
    event.listen(pool, "checkout", on_checkout)
    runtime.events.subscribe(on_event)
    runtime.db._sessionmaker = session
    try:
        yield counts
    finally:
        runtime.db._sessionmaker = original
        runtime.events._catch_all.remove(on_event)
        event.remove(pool, "checkout", on_checkout)


def client_reads(runtime: Any) -> int:
    """Sessions a request opens to read its client: none when cached (Redis), else one."""
    return 0 if runtime.client_cache.active else 1


def assert_one_unit_of_work(counts: Counts, *events: str, client_read: int = 0) -> None:
    assert counts.events == list(events)
    assert counts.sessions == counts.checkouts == 1 + len(events) + client_read, counts


@pytest.fixture
async def world(runtime: Any) -> World:
    # The outbox worker looks for mail in sessions of its own (on a poll or a wake-up); stopped,
    # so only the requests' sessions are counted.
    await runtime.outbox.stop()
    made = await make_world(runtime)
    assert await runtime.client_cache.get(made.web_id) is not None  # cached from here on (Redis)
    return made


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
    assert_one_unit_of_work(counts, "token_issued", client_read=client_reads(runtime))

    with counting(runtime) as counts:
        replay = await client.post("/token", form=redeemed["form"], headers=auth)
    assert replay.status_code == 400
    assert_one_unit_of_work(counts, "token_revoked", client_read=client_reads(runtime))


async def test_a_refresh_is_one_unit_of_work_and_its_audit_row_is_batched(
    client: Any, runtime: Any, world: World, redeemed: dict[str, Any]
) -> None:
    auth = basic(world.web_id, world.web_secret)
    tokens = await (await client.post("/token", form=redeemed["form"], headers=auth)).get_json()
    with counting(runtime) as counts:
        response = await client.post(
            "/token", form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, headers=auth
        )
        assert response.status_code == 200
        # The rotation is one session; the token_issued row waits for its batch (idp.audit).
        assert counts.events == ["token_issued"]
        assert counts.sessions == counts.checkouts == 1 + client_reads(runtime), counts
        await runtime.audit.flush()
    assert counts.sessions == counts.checkouts == 2 + client_reads(runtime), counts
    assert await audit_rows(runtime, "token_issued", "refresh_token") == 1


async def test_a_client_credentials_grant_touches_no_database_on_the_request_path(
    client: Any, runtime: Any, world: World
) -> None:
    auth = basic(world.web_id, world.web_secret)
    with counting(runtime) as counts:
        responses = [
            await client.post("/token", form={"grant_type": "client_credentials"}, headers=auth) for _ in range(3)
        ]
        assert [r.status_code for r in responses] == [200, 200, 200]
        # The client is cached, the grant stores nothing, the audit rows are queued: the unit of
        # work makes no session at all (Database.lazy_session), so none checks out a connection.
        reads = 3 * client_reads(runtime)
        assert counts.events == ["token_issued"] * 3
        assert (counts.sessions, counts.checkouts) == (reads, reads), counts
        await runtime.audit.flush()
    # One batch for the three rows.
    assert (counts.sessions, counts.checkouts) == (1 + reads, 1 + reads), counts
    assert await audit_rows(runtime, "token_issued", "client_credentials") == 3


async def audit_rows(runtime: Any, event_name: str, grant_type: str) -> int:
    from sqlalchemy import select

    from idp.storage.models import AuditEvent

    async with runtime.db.session() as session:
        rows = (await session.execute(select(AuditEvent).where(AuditEvent.event == event_name))).scalars().all()
    return sum(1 for row in rows if row.details.get("grant_type") == grant_type)


async def test_introspection_and_revocation_are_one_unit_of_work_each(
    client: Any, runtime: Any, world: World, redeemed: dict[str, Any]
) -> None:
    auth = basic(world.web_id, world.web_secret)
    tokens = await (await client.post("/token", form=redeemed["form"], headers=auth)).get_json()
    # The first check of a new key-value store loads the denylist from SQL (idp.oauth.denylist);
    # these tests count a request on a running node.
    assert await runtime.tokens.denylist.reload()
    # Cached from here on (Redis): the sign-in of the code flow changed the account (its last
    # sign-in), which forgot it.
    assert await runtime.user_cache.get(world.user_id) is not None
    for token, stored in ((tokens["access_token"], False), (tokens["refresh_token"], True)):
        with counting(runtime) as counts:
            response = await client.post("/introspect", form={"token": token}, headers=auth)
        assert (await response.get_json())["active"] is True
        if runtime.user_cache.active and not stored:
            # The client and the user from memory, the access token checked by its signature and
            # the denylist: the unit of work runs no statement and takes no connection.
            assert (counts.sessions, counts.checkouts) == (1, 0), counts
        else:
            assert_one_unit_of_work(counts, client_read=client_reads(runtime))

    with counting(runtime) as counts:
        response = await client.post("/revoke", form={"token": tokens["refresh_token"]}, headers=auth)
    assert response.status_code == 200
    assert_one_unit_of_work(counts, "token_revoked", client_read=client_reads(runtime))
