"""Pieces of the race tests (issue 15, "exactly once under races"): release many requests at the
same instant, and read back what the database holds afterwards.

``race`` starts ``n`` tasks that each wait on one :class:`asyncio.Barrier` and then make their
request, so they reach the server together rather than one after another; on PostgreSQL each
request holds its own pooled connection, on SQLite its own aiosqlite thread, so the database sees
them concurrently. Exceptions are returned, not raised: a race test classifies every outcome.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.sql.elements import ColumnElement

from idp.accounts.users import NewUser, create_user
from idp.config import PasswordHashSettings, generate_secrets
from idp.events import EventBus
from idp.oauth.clients import ClientSpec, create_client
from idp.security.passwords import PasswordHasher
from idp.storage.db import Database
from tests.oauth_helpers import pkce_pair

T = TypeVar("T")

# Concurrent requests in each race, and how many times each race is run: bounded so the whole
# file stays well under 90 s on two cores, enough to have caught each race fixed here.
CONCURRENCY = 20
ROUNDS = 3


async def race(n: int, attempt: Callable[[int], Awaitable[T]]) -> list[T | BaseException]:
    """Run ``attempt(0) … attempt(n-1)`` released together; each result or exception, in order."""
    barrier = asyncio.Barrier(n)

    async def one(index: int) -> T:
        await barrier.wait()
        return await attempt(index)

    async with asyncio.timeout(60):
        return await asyncio.gather(*(one(index) for index in range(n)), return_exceptions=True)


def unexpected(results: Sequence[object], *expected: type[BaseException]) -> list[BaseException]:
    """The exceptions among ``results`` that are not of an ``expected`` type (a race test fails
    on any of them: a crash is not a refusal)."""
    return [result for result in results if isinstance(result, BaseException) and not isinstance(result, expected)]


async def count_rows(db: Database, model: Any, *where: ColumnElement[bool]) -> int:
    async with db.session() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(query)).scalar_one())


async def fetch_rows(db: Database, model: Any, *where: ColumnElement[bool]) -> list[Any]:
    async with db.session() as session:
        return list((await session.execute(select(model).where(*where))).scalars())


# -- a real server ------------------------------------------------------------------------------

NODE_EMAIL = "racer@example.com"
NODE_PASSWORD = "copper-meadow-lantern-4471"
NODE_REDIRECT = "https://rp.example/cb"
NODE_SESSION_LIMIT = 3


@dataclass(frozen=True)
class Node:
    """A running `idp serve` (two worker processes when Redis is there to share their state)."""

    url: str
    client_id: str
    client_secret: str
    workers: int
    database_url: str


def node_env(database_url: str, data_dir: str, port: int, redis_url: str, redis_prefix: str) -> dict[str, str]:
    """IDP_* settings of a production-mode server on ``port`` with its own database, data
    directory, secrets and key prefix; every rate limit the races would hit raised out of the way."""
    secrets = generate_secrets()
    env = {
        "IDP_ISSUER": f"http://127.0.0.1:{port}",
        "IDP_DATABASE_URL": database_url,
        "IDP_DATA_DIR": data_dir,
        "IDP_SERVER__PORT": str(port),
        "IDP_REDIS_URL": redis_url,
        "IDP_REDIS_KEY_PREFIX": redis_prefix,
        "IDP_SERVER__WORKERS": "2" if redis_url else "1",
        "IDP_SESSIONS__MAX_PER_USER": str(NODE_SESSION_LIMIT),
        "IDP_SECRETS__COOKIE_SECRET": secrets["cookie_secret"],
        "IDP_SECRETS__KEY_ENCRYPTION_KEY": secrets["key_encryption_key"],
        "IDP_SECRETS__PAIRWISE_SECRET": secrets["pairwise_secret"],
        # Cheap hashing, as in the rest of the suite: the races are about the database.
        "IDP_PASSWORD_HASH__TIME_COST": "1",
        "IDP_PASSWORD_HASH__MEMORY_COST_KIB": "7168",
    }
    for limit in ("login_per_ip", "login_per_account", "registration_per_ip", "token_per_ip", "token_per_client"):
        env[f"IDP_RATE_LIMITS__{limit.upper()}__REQUESTS"] = "100000"
        env[f"IDP_RATE_LIMITS__{limit.upper()}__WINDOW"] = "60"
    return env


async def seed_node(database_url: str) -> tuple[str, str]:
    """One user and one first-party confidential client (no consent screen), written straight to
    the node's database (two `idp` commands would cost seconds of start-up); the client's
    (id, secret)."""
    db = Database(database_url)
    events = EventBus()
    try:
        hasher = PasswordHasher(PasswordHashSettings(time_cost=1, memory_cost_kib=7168, parallelism=1))
        await create_user(db, hasher, events, NewUser(email=NODE_EMAIL, password=NODE_PASSWORD, email_verified=True))
        created = await create_client(
            db,
            events,
            ClientSpec(
                name="Race RP",
                client_type="confidential",
                redirect_uris=[NODE_REDIRECT],
                grant_types=["authorization_code", "refresh_token"],
                first_party=True,
            ),
        )
    finally:
        await db.close()
    assert created.client_secret is not None
    return created.client.id, created.client_secret


def node_code(browser: httpx.Client, node: Node) -> tuple[str, str]:
    """A fresh authorization code (and its PKCE verifier) from the signed-in ``browser``."""
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": node.client_id,
        "redirect_uri": NODE_REDIRECT,
        "scope": "openid offline_access",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    response = browser.get(f"{node.url}/authorize?{urlencode(query)}")
    assert response.status_code == 303, response.text
    location = response.headers["Location"]
    assert location.startswith(NODE_REDIRECT + "?"), location
    return parse_qs(urlsplit(location).query)["code"][0], verifier


def csrf_of(html: str) -> str:
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token is not None, html
    return token.group(1)


async def node_form_post(http: httpx.AsyncClient, node: Node, path: str, form: dict[str, str]) -> httpx.Response:
    """GET the form page then POST it with its CSRF token, as a browser does (``http`` is that
    browser: its own cookies)."""
    page = await http.get(f"{node.url}{path}")
    return await http.post(f"{node.url}{path}", data={**form, "csrf_token": csrf_of(page.text)})


def node_sign_in(browser: httpx.Client, node: Node) -> None:
    page = browser.get(f"{node.url}/login", params={"return_to": "/account"})
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None, page.text
    form = {"email": NODE_EMAIL, "password": NODE_PASSWORD, "csrf_token": token.group(1), "return_to": "/account"}
    assert browser.post(f"{node.url}/login", data=form).status_code == 303
