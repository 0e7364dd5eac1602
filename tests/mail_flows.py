"""Shared by the account-flow tests that mail through a real SMTP server on loopback.

Import the fixtures into a test module to make its app send mail there:
``from tests.mail_flows import closed_smtp_port, hanging_smtp_port, settings_overrides``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from idp.http import EXTENSION
from tests.oauth_helpers import query_of
from tests.smtp import ReceivedMessage, SmtpServer

SENDER = "idp <no-reply@idp.test>"


@pytest.fixture
def closed_smtp_port() -> Iterator[int]:
    """A loopback port held (bound, never listening) for the test, so connections are refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


@pytest.fixture
def hanging_smtp_port() -> Iterator[int]:
    """A loopback port whose connections the kernel accepts (listen backlog) but nobody answers:
    a mail server that hangs until the client's timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


@pytest.fixture
def settings_overrides(
    settings_overrides: dict[str, Any], smtp_server: SmtpServer, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """conftest's settings, mailing through the loopback SMTP server; indirect params add to them
    (``smtp_hanging``: mail to a server that never answers instead; ``smtp_closed``: to a closed port)."""
    extra: dict[str, Any] = dict(getattr(request, "param", {}))
    port = smtp_server.port
    for option, fixture in [("smtp_hanging", "hanging_smtp_port"), ("smtp_closed", "closed_smtp_port")]:
        if extra.pop(option, False):
            port = request.getfixturevalue(fixture)
    mail = {
        "backend": "smtp",
        "smtp_host": smtp_server.host,
        "smtp_port": port,
        "smtp_security": "none",
        "sender": SENDER,
        "timeout": 5,
        **extra.pop("mail", {}),
    }
    return {**settings_overrides, **extra, "mail": mail}


def text_of(received: ReceivedMessage) -> str:
    part = received.message.get_body(("plain",))
    assert part is not None, "no text/plain part"
    return str(part.get_content())


def token_of(path: str) -> str:
    return query_of(path)["token"]


async def body(response: Any) -> str:
    return str(await response.get_data(as_text=True))


async def settle(app: Any) -> None:
    """Wait for what the app does after answering: the outbox's worker resolves the resend and
    forgot-password requests and sends every queued mail (one attempt each: a failed one waits for
    its backoff, as in production)."""
    while app.background_tasks:
        await asyncio.gather(*list(app.background_tasks))
    await app.extensions[EXTENSION].outbox.drain()


async def take_new_device_notice(server: SmtpServer, to: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """The "new sign-in" notice a further browser's sign-in sends (the account's first device sends
    none): waited for, checked, then removed, so a test can go on counting the mail of its flow."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := [m for m in server.messages if m.message["Subject"] == "New sign-in to your account"]):
        if loop.time() > deadline:
            raise AssertionError(f"no new-device notice within {timeout}s")
        await asyncio.sleep(0.01)
    [notice] = found
    assert notice.rcpt_tos == [to]
    assert "a browser it had not used before" in text_of(notice)
    server.messages.remove(notice)
