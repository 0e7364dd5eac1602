"""The scenarios of bench/run.py that the Python load generator drives (bench/loadgen.py), and the
browser flows that set them up.

- Refresh grant with rotation: every worker owns a few token families and refreshes them in turn,
  always with the refresh token the previous answer carried (both servers rotate).
- Authorization-code exchange with an existing session: every worker is a browser signed in once
  (not measured); an operation is GET /authorize (no interaction needed: idp's client is
  first-party, the peer's grant already covers the scopes), the code from the redirect, and the
  code with its PKCE verifier at /token.
- Password sign-in (idp): every worker is a browser that loads the sign-in form and posts it with
  its CSRF token, as a browser does; between sign-ins it drops its session cookie and keeps its
  device and CSRF cookies (a known browser signing in again, not a new device each time).
- The bare argon2id rate: argon2-cffi's verify of a hash with idp's parameters, in as many
  processes and threads as idp hashes in (its workers, each with its [password_hash] pool of
  threads, at the pool's lower priority).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import inspect
import json
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from loadgen import Browser, LoadError, Measurement, Step, basic, percentile, pkce_pair, run, run_load

REDIRECT = "http://127.0.0.1:9/callback"
IDP_SESSION_COOKIE = "idp_session"  # idp.web.SESSION_COOKIE (no __Host- prefix over http)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Client:
    base: str
    client_id: str
    secret: str

    @property
    def authorization(self) -> str:
        return basic(self.client_id, self.secret)


def jwt_header(token: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==")))


# -- browser flows ---------------------------------------------------------------------------------


async def idp_sign_in(browser: Browser, email: str, password: str, return_to: str = "/account") -> None:
    """idp's password form, as a browser fills it: GET /login for the CSRF token, then POST."""
    page = await browser.request("GET", f"/login?{urlencode({'return_to': return_to})}")
    csrf = CSRF.search(page.text())
    if page.status != 200 or csrf is None:
        raise LoadError(f"GET /login: {page.status} {page.text()[:300]}")
    form = {"email": email, "password": password, "csrf_token": csrf.group(1), "return_to": return_to}
    answer = await browser.request("POST", "/login", body=urlencode(form))
    if answer.status != 303:
        raise LoadError(f"POST /login: {answer.status} {answer.text()[:300]}")


async def authorization_code(browser: Browser, client: Client, scope: str) -> tuple[str, str]:
    """GET /authorize, following the server's own redirects (the peer's interaction, which ends at
    once) until the one to the client: the code and its PKCE verifier."""
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    path = f"/authorize?{urlencode(query)}"
    for _ in range(6):
        answer = await browser.request("GET", path)
        location = answer.header("location") or ""
        if answer.status not in (302, 303) or not location:
            raise LoadError(f"GET {path[:60]}: {answer.status} {answer.text()[:300]}")
        if location.startswith(REDIRECT):
            codes = parse_qs(urlsplit(location).query).get("code")
            if not codes:
                raise LoadError(f"authorization error: {location}")
            return codes[0], verifier
        parts = urlsplit(location)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
    raise LoadError("too many redirects from /authorize")


async def exchange_code(browser: Browser, client: Client, code: str, verifier: str) -> dict[str, Any]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    answer = await browser.request(
        "POST", "/token", headers={"Authorization": client.authorization}, body=urlencode(form)
    )
    if answer.status != 200:
        raise LoadError(f"code exchange: {answer.status} {answer.text()[:300]}")
    tokens = answer.json()
    if "access_token" not in tokens or "id_token" not in tokens:
        raise LoadError(f"code exchange answered {sorted(tokens)}")
    return dict(tokens)


async def _idp_tokens(client: Client, email: str, password: str, families: int) -> tuple[str, list[str]]:
    browser = Browser(client.base)
    try:
        await idp_sign_in(browser, email, password)
        code, verifier = await authorization_code(browser, client, "openid profile email")
        user_token = str((await exchange_code(browser, client, code, verifier))["access_token"])
        refresh_tokens = []
        for _ in range(families):
            code, verifier = await authorization_code(browser, client, "openid profile email offline_access")
            refresh_tokens.append(str((await exchange_code(browser, client, code, verifier))["refresh_token"]))
    finally:
        await browser.close()
    return user_token, refresh_tokens


def idp_tokens(client: Client, email: str, password: str, families: int) -> tuple[str, list[str]]:
    """idp's user access token (the code flow through the sign-in form; a first-party client needs
    no consent) and ``families`` refresh tokens, each from a code flow of its own."""
    return run(_idp_tokens(client, email, password, families))


async def _sessions(client: Client, count: int, sign_in: Callable[[Browser], Awaitable[None]]) -> list[dict[str, str]]:
    jars = []
    for _ in range(count):
        browser = Browser(client.base)
        try:
            await sign_in(browser)
            await authorization_code(browser, client, "openid profile email")  # the session works
        finally:
            await browser.close()
        jars.append(browser.cookies)
    return jars


def idp_sessions(client: Client, count: int, email: str, password: str) -> list[dict[str, str]]:
    """``count`` browsers signed in through idp's form: their cookie jars."""
    return run(_sessions(client, count, lambda browser: idp_sign_in(browser, email, password)))


def peer_sessions(client: Client, count: int) -> list[dict[str, str]]:
    """``count`` browsers with a peer session: their first authorization request goes through the
    interaction (which signs the bench user in and grants the scopes at once)."""

    async def nothing(_browser: Browser) -> None:
        return None

    return run(_sessions(client, count, nothing))


# -- refresh --------------------------------------------------------------------------------------


@dataclass
class RefreshFamilies:
    """The current refresh token of each family; a family whose refresh failed is dropped."""

    client: Client
    tokens: list[str | None]

    def steps(self, workers: int) -> tuple[list[Step], list[Browser]]:
        connections = [Browser(self.client.base) for _ in range(workers)]
        return [self._step(connections[i], list(range(i, len(self.tokens), workers))) for i in range(workers)], (
            connections
        )

    def _step(self, connection: Browser, mine: list[int]) -> Step:
        turn = 0
        headers = {"Authorization": self.client.authorization}

        async def step() -> None:
            nonlocal turn
            live = [index for index in mine if self.tokens[index] is not None]
            if not live:
                raise LoadError("every token family of this worker has failed")
            index = live[turn % len(live)]
            turn += 1
            body = urlencode({"grant_type": "refresh_token", "refresh_token": self.tokens[index]})
            answer = await connection.request("POST", "/token", headers=headers, body=body)
            tokens = answer.json() if answer.status == 200 else {}
            if "refresh_token" not in tokens or "access_token" not in tokens:
                self.tokens[index] = None
                raise LoadError(f"refresh: {answer.status} {answer.text()[:300]}")
            self.tokens[index] = str(tokens["refresh_token"])

        return step


# -- authorization-code exchange ------------------------------------------------------------------


@dataclass
class CodeExchanges:
    client: Client
    jars: list[dict[str, str]]  # one signed-in browser's cookies per worker
    scope: str = "openid profile email"

    def steps(self, workers: int) -> tuple[list[Step], list[Browser]]:
        browsers = [Browser(self.client.base, self.jars[i % len(self.jars)]) for i in range(workers)]
        return [self._step(browser) for browser in browsers], browsers

    def _step(self, browser: Browser) -> Step:
        async def step() -> None:
            code, verifier = await authorization_code(browser, self.client, self.scope)
            await exchange_code(browser, self.client, code, verifier)

        return step


# -- password sign-in -----------------------------------------------------------------------------


@dataclass
class SignIns:
    """Browsers signing in again and again, browser i as user i mod len(emails)."""

    base: str
    emails: list[str]
    password: str
    jars: list[dict[str, str]] = field(default_factory=list)

    def steps(self, workers: int) -> tuple[list[Step], list[Browser]]:
        while len(self.jars) < workers:
            self.jars.append({})
        browsers = [Browser(self.base, self.jars[i]) for i in range(workers)]
        return [self._step(browser, self.emails[i % len(self.emails)]) for i, browser in enumerate(browsers)], browsers

    def _step(self, browser: Browser, email: str) -> Step:
        async def step() -> None:
            browser.cookies.pop(IDP_SESSION_COOKIE, None)  # a new session each time, not a re-check
            await idp_sign_in(browser, email, self.password)

        return step


def measure(load: RefreshFamilies | CodeExchanges | SignIns, duration: float, workers: int) -> Measurement:
    async def go() -> Measurement:
        steps, connections = load.steps(workers)
        return await run_load(duration, steps, connections)

    return run(go())


def check(load: RefreshFamilies | CodeExchanges | SignIns) -> None:
    """One operation before any load: it must succeed, so errors under load mean load."""

    async def go() -> None:
        steps, connections = load.steps(1)
        try:
            await steps[0]()
        finally:
            for connection in connections:
                await connection.close()

    run(go())


# -- the bare argon2id rate -----------------------------------------------------------------------


@dataclass(frozen=True)
class HashPool:
    """idp's password-hashing threads per worker, as its settings and code make them."""

    threads: int
    niceness: int  # added to the threads' nice value (Linux: per thread)
    description: str


def hash_pool(threads_setting: int, queue_limit: int) -> HashPool:
    """The pool idp.security.passwords.PasswordHasher hashes in: ``[password_hash] threads`` per
    worker (0: one per core) at HASH_THREAD_NICENESS. The constructor's ``threads`` parameter is
    checked, so a change of how idp hashes is reported instead of measured against the wrong shape."""
    from idp.security import passwords

    threads = threads_setting or os.cpu_count() or 1
    niceness = int(getattr(passwords, "HASH_THREAD_NICENESS", 0))
    described = (
        f"a pool of its own per worker, {threads} threads ([password_hash] threads = {threads_setting}"
        f"{': one per core' if not threads_setting else ''}) at nice +{niceness}, at most {queue_limit} hashes "
        "waiting (then 503)"
    )
    if "threads" not in inspect.signature(passwords.PasswordHasher.__init__).parameters:
        described = f"NOT CHECKED (idp.security.passwords.PasswordHasher takes no threads any more): {described}"
    return HashPool(threads, niceness, described)


def argon2id(params: dict[str, int]) -> Any:
    from argon2 import PasswordHasher, Type

    return PasswordHasher(params["time_cost"], params["memory_cost"], parallelism=params["parallelism"], type=Type.ID)


def _nice(niceness: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + niceness)


def _verify_for(
    params: dict[str, int], stored: str, password: str, pool: HashPool, start: float, duration: float
) -> list[float]:
    hasher = argon2id(params)
    time.sleep(max(0.0, start - time.time()))
    deadline = time.perf_counter() + duration

    def loop() -> list[float]:
        times = []
        while (begun := time.perf_counter()) < deadline:
            hasher.verify(stored, password)
            if (ended := time.perf_counter()) <= deadline:  # only what the window holds
                times.append(ended - begun)
        return times

    with concurrent.futures.ThreadPoolExecutor(pool.threads, initializer=_nice, initargs=(pool.niceness,)) as threads:
        return [t for part in threads.map(lambda _: loop(), range(pool.threads)) for t in part]


def argon2_rate(params: dict[str, int], processes: int, pool: HashPool, duration: float) -> Measurement:
    """Verifications per second of one argon2id hash with ``params`` (time_cost, memory_cost in KiB,
    parallelism), in ``processes`` processes with ``pool``'s threads each (at its niceness, as
    idp's: other work on the machine takes from both alike), all starting together."""
    password = "bench-password-of-a-typical-length"  # noqa: S105
    stored = argon2id(params).hash(password)
    start = time.time() + 1.5  # after every process has started (spawn imports argon2 anew)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as workers:
        futures = [
            workers.submit(_verify_for, params, stored, password, pool, start, duration) for _ in range(processes)
        ]
        times = sorted(t for future in futures for t in future.result())
    return Measurement(
        len(times) / duration, percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000, 0, len(times)
    )


# -- storm and soak --------------------------------------------------------------------------------


def storm(load: SignIns, workers: int, other: Callable[[], Any], lead: float = 1.0) -> tuple[Any, Measurement]:
    """``other`` (a blocking call: a wrk run) in a thread while ``load`` runs, from ``lead`` seconds
    after the load has started until ``lead`` seconds after ``other`` has returned."""

    async def go() -> tuple[Any, Measurement]:
        steps, connections = load.steps(workers)
        stop = asyncio.Event()

        async def the_other() -> Any:
            await asyncio.sleep(lead)
            try:
                return await asyncio.to_thread(other)
            finally:
                await asyncio.sleep(lead)
                stop.set()

        result, measured = await asyncio.gather(the_other(), run_load(24 * 3600, steps, connections, stop=stop))
        return result, measured

    return run(go())


@dataclass
class Requests:
    """One fixed request again and again (client_credentials, userinfo): for the mixed soak."""

    base: str
    method: str
    path: str
    headers: dict[str, str]
    body: str = ""

    def steps(self, workers: int) -> tuple[list[Step], list[Browser]]:
        connections = [Browser(self.base) for _ in range(workers)]
        return [self._step(connection) for connection in connections], connections

    def _step(self, connection: Browser) -> Step:
        async def step() -> None:
            answer = await connection.request(self.method, self.path, headers=self.headers, body=self.body)
            if answer.status != 200:
                raise LoadError(f"{self.method} {self.path}: {answer.status} {answer.text()[:300]}")

        return step


def soak(
    loads: dict[str, tuple[Requests | RefreshFamilies, int]],
    duration: float,
    interval: float,
    sample: Callable[[], dict[int, float | None]],
) -> tuple[dict[str, Measurement], list[tuple[float, dict[int, float | None]]]]:
    """Every load of ``loads`` (name -> (load, workers)) at once for ``duration`` seconds, calling
    ``sample`` (RSS per worker) at the start and every ``interval`` seconds until the end."""

    async def go() -> tuple[dict[str, Measurement], list[tuple[float, dict[int, float | None]]]]:
        samples: list[tuple[float, dict[int, float | None]]] = []
        began = time.perf_counter()
        done = asyncio.Event()

        async def sampler() -> None:
            while not done.is_set():
                samples.append((time.perf_counter() - began, sample()))
                try:
                    await asyncio.wait_for(done.wait(), interval)
                except TimeoutError:
                    pass
            samples.append((time.perf_counter() - began, sample()))

        async def all_loads() -> list[Measurement]:
            runs = []
            for load, workers in loads.values():
                steps, connections = load.steps(workers)
                runs.append(run_load(duration, steps, connections))
            try:
                return list(await asyncio.gather(*runs))
            finally:
                done.set()

        measured, _ = await asyncio.gather(all_loads(), sampler())
        return dict(zip(loads, measured, strict=True)), samples

    return run(go())
