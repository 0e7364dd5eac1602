"""Nothing a user was told is lost when a mail server or a relying party is down, or the node is
killed (issue 15, idp.outbox): real `idp serve` processes, a loopback SMTP server (tests.smtp) and a
back-channel logout receiver, each taken away and brought back on its own port. The outbox is
configured to retry every fraction of a second so each test stays within its deadline."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import IDP, free_port, run_idp, running
from tests.fault.test_redis_loss import EMAIL, PASSWORD, REDIRECT, LogoutReceiver, claims_of, code_flow, csrf, sign_in
from tests.smtp import SmtpServer, running_smtp_server

DEADLINE = 90.0  # each test, processes included
NEW_PASSWORD = "quiet-meadow-copper-4471"
FAST_RETRIES = {
    "IDP_OUTBOX__POLL_INTERVAL": "0.5",
    "IDP_OUTBOX__BASE_DELAY": "0.2",
    "IDP_OUTBOX__MAX_DELAY": "1",
    "IDP_OUTBOX__MAX_ATTEMPTS": "100",
    "IDP_OUTBOX__LEASE": "2",
    "IDP_SERVER__WORKERS": "1",
}


def node_env(cli_env: dict[str, str], port: int, smtp_port: int) -> dict[str, str]:
    return {
        **cli_env,
        **FAST_RETRIES,
        "IDP_ISSUER": f"http://127.0.0.1:{port}",
        "IDP_SERVER__PORT": str(port),
        "IDP_MAIL__BACKEND": "smtp",
        "IDP_MAIL__SMTP_HOST": "127.0.0.1",
        "IDP_MAIL__SMTP_PORT": str(smtp_port),
        "IDP_MAIL__SMTP_SECURITY": "none",
        "IDP_MAIL__SENDER": "idp <no-reply@idp.test>",
        "IDP_MAIL__TIMEOUT": "2",
    }


def register(node: str, email: str) -> None:
    with httpx.Client(timeout=10) as browser:
        page = browser.get(f"{node}/register")
        form = {"csrf_token": csrf(page.text), "email": email, "password": NEW_PASSWORD}
        answer = browser.post(f"{node}/register", data=form)
        assert answer.status_code == 200 and "Check your email" in answer.text, answer.text


def forgot(node: str, email: str) -> None:
    with httpx.Client(timeout=10) as browser:
        page = browser.get(f"{node}/forgot-password")
        answer = browser.post(f"{node}/forgot-password", data={"csrf_token": csrf(page.text), "email": email})
        assert answer.status_code == 200 and "Check your email" in answer.text, answer.text


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def received(server: SmtpServer) -> list[tuple[str, str]]:
    return sorted((message.rcpt_tos[0], str(message.message["Subject"])) for message in list(server.messages))


def queue(env: dict[str, str]) -> dict[str, Any]:
    return dict(json.loads(run_idp(env, "outbox", "list", "--json")))


def expected_mail(addresses: list[str]) -> list[tuple[str, str]]:
    verify, reset = "Confirm your email address", "Reset your password"
    return sorted([(address, verify) for address in addresses] + [(address, reset) for address in addresses])


def test_mail_queued_while_the_mail_server_is_down_arrives_when_it_is_back(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    port, smtp_port = free_port(), free_port()
    node, env = f"http://127.0.0.1:{port}", node_env(cli_env, port, free_port())
    env["IDP_MAIL__SMTP_PORT"] = str(smtp_port)
    addresses = [f"smtp-down-{n}@example.org" for n in range(6)]
    run_idp(env, "db", "upgrade")
    with running([IDP, "serve"], env, port) as server:
        # No mail server: every answer is still "Check your email", and every mail is queued.
        for address in addresses:
            register(node, address)
            forgot(node, address)
        wait_until(lambda: queue(env)["counts"].get("mail", {}).get("pending") == 12, 20, "12 mails queued")
        pending = queue(env)
        assert pending["dead"] == 0 and pending["counts"]["mail"]["delivered"] == 0
        time.sleep(1.5)  # several failed attempts each
        with running_smtp_server(port=smtp_port) as smtp:
            wait_until(lambda: len(smtp.messages) >= 12, 30, "every mail delivered")
            time.sleep(1.0)  # nothing more arrives: each mail once
            assert received(smtp) == expected_mail(addresses)
        after = queue(env)
        assert after["pending"] == 0 and after["dead"] == 0, after
    output = server.output()
    assert "Traceback" not in output and "smtp-down-" not in output, output
    assert time.monotonic() - started < DEADLINE


def test_a_killed_node_delivers_everything_after_a_restart(cli_env: dict[str, str], tmp_path: Path) -> None:
    started = time.monotonic()
    port, smtp_port = free_port(), free_port()
    node, env = f"http://127.0.0.1:{port}", node_env(cli_env, port, smtp_port)
    addresses = [f"killed-{n}@example.org" for n in range(5)]
    run_idp(env, "db", "upgrade")
    with running([IDP, "serve"], env, port) as server:
        for address in addresses:
            register(node, address)
            forgot(node, address)
        wait_until(lambda: queue(env)["counts"].get("mail", {}).get("pending") == 10, 20, "10 mails queued")
        server.process.send_signal(signal.SIGKILL)  # mid-retry, some messages claimed (leased)
        server.process.wait(timeout=10)
    with running_smtp_server(port=smtp_port) as smtp:
        assert smtp.messages == []
        with running([IDP, "serve"], env, port) as restarted:
            wait_until(lambda: len(smtp.messages) >= 10, 30, "every mail delivered after the restart")
            time.sleep(1.0)
            assert received(smtp) == expected_mail(addresses)
            assert queue(env)["pending"] == 0
    assert "Traceback" not in restarted.output(), restarted.output()
    assert time.monotonic() - started < DEADLINE


def test_logout_tokens_reach_a_receiver_that_was_down(cli_env: dict[str, str], tmp_path: Path) -> None:
    started = time.monotonic()
    port = free_port()
    node, env = f"http://127.0.0.1:{port}", node_env(cli_env, port, free_port())
    receiver = LogoutReceiver()
    run_idp(env, "db", "upgrade")
    run_idp(env, "users", "create", "--email", EMAIL, "--password-stdin", "--verified", stdin=PASSWORD + "\n")
    client = json.loads(
        run_idp(
            env,
            *("clients", "create", "--name", "Outbox RP", "--confidential", "--first-party"),
            *("--redirect-uri", REDIRECT, "--backchannel-logout-uri", receiver.uri, "--json"),
        )
    )
    sessions = 5
    with running([IDP, "serve"], env, port) as server, httpx.Client(timeout=10) as rp:
        sids = []
        for _ in range(sessions):  # the receiver is down: every logout still completes
            with httpx.Client(timeout=10) as browser:
                sign_in(browser, node)
                tokens = code_flow(browser, rp, node, client)
                sids.append(claims_of(tokens["id_token"])["sid"])
                bye = browser.get(f"{node}/logout", params={"id_token_hint": tokens["id_token"]})
                assert bye.status_code == 200, bye.text
        wait_until(
            lambda: queue(env)["counts"].get("backchannel_logout", {}).get("pending") == sessions, 20, "tokens queued"
        )
        time.sleep(1.5)  # refused connections, retried
        with receiver.serving():
            wait_until(lambda: len(receiver.tokens) >= sessions, 30, "every logout token delivered")
            time.sleep(1.0)
        assert sorted(str(claims_of(token)["sid"]) for token in receiver.tokens) == sorted(map(str, sids))
        assert all(claims_of(token)["exp"] > time.time() for token in receiver.tokens)  # fresh, not stale
        assert queue(env)["counts"]["backchannel_logout"] == {"pending": 0, "delivered": sessions, "dead": 0}
    assert "Traceback" not in server.output(), server.output()
    assert time.monotonic() - started < DEADLINE
