"""What goes through the outbox, end to end: a reset request is recorded before "Check your email"
(and answered 503 when it can't be), the worker resolves it in one transaction; back-channel
logout follows Back-Channel Logout 1.0 §2.8; `idp outbox list|retry|purge`."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from idp.config import Settings
from idp.outbox.operations import outbox_stats
from idp.storage.models import OneTimeToken, OutboxMessage, User, utcnow
from tests.backchannel_helpers import BYE, Recorder, bcl_setup, outbox_statuses
from tests.integration.test_cli_user_admin import run_error, run_json, with_runtime
from tests.oauth_helpers import make_world

UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1
CHECK_EMAIL = "Check your email"


async def forgot(client: Any, email: str) -> Any:
    page = await client.get("/forgot-password")
    csrf = (await page.get_data(as_text=True)).split('name="csrf_token" value="')[1].split('"')[0]
    return await client.post("/forgot-password", form={"csrf_token": csrf, "email": email})


async def log_out(client: Any, tokens: dict[str, Any]) -> Any:
    query = {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": BYE}
    return await client.get("/logout", query_string=query)


async def messages(runtime: Any) -> list[OutboxMessage]:
    async with runtime.db.session() as session:
        return list((await session.scalars(select(OutboxMessage).order_by(OutboxMessage.created_at))).all())


async def reset_links(runtime: Any) -> list[OneTimeToken]:
    async with runtime.db.session() as session:
        query = select(OneTimeToken).where(OneTimeToken.purpose == "reset_password")
        return list((await session.scalars(query)).all())


async def test_a_reset_request_is_recorded_before_the_answer_and_resolved_by_the_worker(
    client: Any, runtime: Any
) -> None:
    world = await make_world(runtime)
    await runtime.outbox.stop()  # to look at what the answer left behind
    known, unknown = await forgot(client, world.email), await forgot(client, "nobody@example.com")
    assert known.status_code == unknown.status_code == 200
    assert await known.get_data(as_text=True) == await unknown.get_data(as_text=True)
    # The same durable row for both addresses (ASVS 6.3.8), the address sealed; nothing else yet.
    queued = await messages(runtime)
    assert [(row.kind, row.status) for row in queued] == [("password_reset_request", "pending")] * 2
    assert all(world.email not in row.payload and "nobody" not in row.payload for row in queued)
    assert await reset_links(runtime) == []

    await runtime.outbox.drain()
    [link] = await reset_links(runtime)
    assert link.user_id == world.user_id
    statuses = await outbox_statuses(runtime)
    assert statuses == {("password_reset_request", "delivered"): 2, ("mail", "delivered"): 1}


async def test_a_reset_requested_while_the_database_is_down_is_a_503_not_a_promise(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    page = await client.get("/forgot-password")
    csrf = (await page.get_data(as_text=True)).split('name="csrf_token" value="')[1].split('"')[0]
    dead = create_async_engine(UNREACHABLE)
    working = runtime.db._sessionmaker, runtime.db.engine
    runtime.db._sessionmaker = async_sessionmaker(dead, expire_on_commit=False)
    try:
        response = await client.post("/forgot-password", form={"csrf_token": csrf, "email": world.email})
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        text = await response.get_data(as_text=True)
        assert CHECK_EMAIL not in text and world.email not in text and "127.0.0.1:1" not in text
    finally:
        runtime.db._sessionmaker, runtime.db.engine = working
        await dead.dispose()
    await runtime.outbox.drain()
    assert await messages(runtime) == [] and await reset_links(runtime) == []


# -- back-channel logout (Back-Channel Logout 1.0 §2.8) -------------------------------------------------


@pytest.mark.parametrize(("answers", "requests", "status"), [([429, 204], 2, "delivered"), ([410], 1, "dead")])
async def test_backchannel_answers_decide_retry_or_dead_letter(
    client: Any, runtime: Any, answers: list[int], requests: int, status: str
) -> None:
    """429 asks to come back later (retried); another 4xx refuses the token (dead at once)."""
    recorder = Recorder(list(answers))
    _, _, tokens, _ = await bcl_setup(client, runtime, recorder)
    page = await log_out(client, tokens)
    assert page.status_code == 303
    await runtime.backchannel.drain()
    assert len(recorder.requests) == requests
    assert await outbox_statuses(runtime) == {("backchannel_logout", status): 1}


async def test_a_stale_logout_token_is_replaced_by_a_fresh_one(client: Any, runtime: Any) -> None:
    recorder = Recorder([httpx.ConnectError("refused"), 200])
    _, client_id, tokens, _ = await bcl_setup(client, runtime, recorder)
    await runtime.outbox.stop()
    page = await log_out(client, tokens)
    assert page.status_code == 303
    await runtime.outbox.drain()  # the first attempt fails
    clock = runtime.tokens.now
    runtime.tokens.now = lambda: clock() + 600  # delivered ten minutes later
    try:
        async with runtime.db.session() as session:
            await session.execute(update(OutboxMessage).values(available_at=utcnow()))
        await runtime.outbox.drain()
    finally:
        runtime.tokens.now = clock
    first, second = (request.content.decode().split("=", 1)[1] for request in recorder.requests)
    assert first != second
    claims = runtime.tokens.peek_claims(second)
    assert claims["aud"] == client_id and claims["exp"] > clock() + 600


# -- the operator's commands --------------------------------------------------------------------------


def test_outbox_list_retry_and_purge(cli_env: dict[str, str], settings: Settings) -> None:
    async def fill(rt: Any) -> list[str]:
        ids = [await rt.outbox.send("mail", {"to": "x@example.org"}) for _ in range(3)]
        now = utcnow()
        async with rt.db.session() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == ids[0])
                .values(status="dead", dead_at=now, attempts=30, last_error="SMTPConnectError")
            )
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == ids[1])
                .values(status="delivered", delivered_at=now - timedelta(days=10), payload="")
            )
            await session.execute(
                update(OutboxMessage).where(OutboxMessage.id == ids[2]).values(available_at=now + timedelta(hours=1))
            )
        rt.outbox._mine.clear()  # left queued, as a server's would be
        return ids

    dead, _, pending = with_runtime(settings, fill)
    listed = run_json(cli_env, "outbox", "list")
    assert listed["counts"] == {"mail": {"pending": 1, "delivered": 1, "dead": 1}}
    assert listed["oldest_pending_age"] >= 0
    [letter] = listed["dead_letters"]
    assert (letter["id"], letter["attempts"], letter["last_error"]) == (dead, 30, "SMTPConnectError")
    assert "x@example.org" not in str(listed)

    assert run_error(cli_env, "outbox", "retry").startswith("idp: error: give one message ID or --dead")
    assert "not an outbox message id" in run_error(cli_env, "outbox", "retry", "nope")
    assert f"{pending} is not a dead letter" in run_error(cli_env, "outbox", "retry", pending)
    assert run_json(cli_env, "outbox", "retry", dead) == {"retried": 1}
    assert run_json(cli_env, "outbox", "list")["counts"]["mail"] == {"pending": 2, "delivered": 1, "dead": 0}

    assert run_error(cli_env, "outbox", "purge").startswith("idp: error: give --delivered-before DAYS")
    assert run_json(cli_env, "outbox", "purge", "--delivered-before", "30", "--dead") == {"delivered": 0, "dead": 0}
    assert run_json(cli_env, "outbox", "purge", "--delivered-before", "7") == {"delivered": 1, "dead": 0}

    async def left(rt: Any) -> dict[str, dict[str, int]]:
        return (await outbox_stats(rt.db)).counts

    assert with_runtime(settings, left) == {"mail": {"pending": 2, "delivered": 0, "dead": 0}}


async def test_a_cli_command_delivers_what_it_queued_before_it_exits(runtime: Any) -> None:
    """No worker runs in a CLI process: closing the outbox tries what it queued once."""
    delivered: list[str] = []

    class Channel:
        async def deliver(self, payload: Any, attempt: int) -> None:
            delivered.append(payload["n"])

        def gave_up(self, payload: Any, reason: str, attempts: int) -> None:
            raise AssertionError("not expected")

    from idp.outbox import Outbox

    await runtime.outbox.stop()
    cli_outbox = Outbox(runtime.db, runtime.encryptor, runtime.settings.outbox)
    cli_outbox.register("test", Channel())
    await cli_outbox.send("test", {"n": "mine"})
    await runtime.outbox.send("test", {"n": "the server's"})  # another process's: left to its workers
    await asyncio.wait_for(cli_outbox.close(), timeout=10)
    assert delivered == ["mine"]


async def test_a_new_verification_link_is_asked_for_the_same_way(client: Any, runtime: Any) -> None:
    """ "Send the link again" records the request (503 when it can't), the worker mails a link to an
    unverified account only."""
    await runtime.outbox.stop()
    waiting = await make_world(runtime, email="waiting@example.org")
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == waiting.user_id).values(email_verified=False))
    active = await make_world(runtime, email="active@example.org")
    for address in (waiting.email, active.email, "nobody@example.org"):
        page = await client.get("/verify-email/resend")
        csrf = (await page.get_data(as_text=True)).split('name="csrf_token" value="')[1].split('"')[0]
        answer = await client.post("/verify-email/resend", form={"csrf_token": csrf, "email": address})
        assert answer.status_code == 200 and CHECK_EMAIL in await answer.get_data(as_text=True)
    assert [row.kind for row in await messages(runtime)] == ["verification_resend_request"] * 3
    await runtime.outbox.drain()
    async with runtime.db.session() as session:
        links = (await session.scalars(select(OneTimeToken).where(OneTimeToken.purpose == "verify_email"))).all()
    assert [link.user_id for link in links] == [waiting.user_id]
    assert await outbox_statuses(runtime) == {
        ("verification_resend_request", "delivered"): 3,
        ("mail", "delivered"): 1,
    }

    dead = create_async_engine(UNREACHABLE)
    working = runtime.db._sessionmaker
    runtime.db._sessionmaker = async_sessionmaker(dead, expire_on_commit=False)
    try:
        answer = await client.post("/verify-email/resend", form={"csrf_token": csrf, "email": waiting.email})
        assert answer.status_code == 503 and CHECK_EMAIL not in await answer.get_data(as_text=True)
    finally:
        runtime.db._sessionmaker = working
        await dead.dispose()
