"""Logs are structured, carry request ids, and never contain a credential."""

from __future__ import annotations

import io
import json
import logging

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from idp import observability
from idp.cli import cli
from idp.observability import REDACTED, configure_logging, redact_text, redact_value


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("token request code=SplxlOBeZQQYbYS6WxSbIA&state=x", "SplxlOBeZQQYbYS6WxSbIA"),
        ('{"password": "hunter2-hunter2"}', "hunter2-hunter2"),
        ("Authorization: Bearer mF_9.B5f-4.1JqM", "mF_9.B5f-4.1JqM"),
        ("Authorization: Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW", "czZCaGRSa3F0MzpnWDFmQmF0M2JW"),
        ("hint eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl", "eyJzdWIiOiIxMjM0In0"),
        ("postgresql+asyncpg://idp:dbpass99@db/idp", "dbpass99"),
        ("client_secret=abcDEF123456&grant_type=client_credentials", "abcDEF123456"),
        ("code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
    ],
)
def test_redact_text(text: str, secret: str) -> None:
    assert secret not in redact_text(text)


# Fragments the redaction patterns look for, mixed with plain text: the quick check that skips the
# patterns for a text holding none of their triggers must never skip one that holds a secret.
_FRAGMENTS = st.sampled_from(
    [
        "eyJhbGciOiJ",
        ".eyJzdWIiOiIx",
        ".c2ln",
        "Bearer ",
        "BASIC ",
        "bearer\t",
        "token",
        "code",
        "=",
        ":",
        '": "',
        "://u:",
        "@host",
        "password",
        " ",
        "abcDEF123",
        "/introspect",
        "127.0.0.1",
        "&",
        '"',
        "é",
    ]
)


def _patterns_only(text: str) -> str:
    """The redaction's four substitutions, always run (what redact_text does when in doubt)."""
    text = observability._JWT.sub(REDACTED, text)
    text = observability._BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = observability._KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return observability._URL_PASSWORD.sub(lambda m: f"{m.group(1)}***@", text)


@settings(max_examples=400, deadline=None)
@given(st.lists(_FRAGMENTS | st.text(max_size=6), max_size=12).map("".join))
def test_the_quick_check_skips_only_texts_the_patterns_leave_alone(text: str) -> None:
    assert redact_text(text) == _patterns_only(text)


def test_redact_value_by_key() -> None:
    data = {"client_secret": "s3", "nested": {"refresh_token": "rt", "ok": "visible"}, "Set-Cookie": "sid=1"}
    assert redact_value(data) == {
        "client_secret": REDACTED,
        "nested": {"refresh_token": REDACTED, "ok": "visible"},
        "Set-Cookie": REDACTED,
    }


def test_full_flow_logs_contain_no_credentials(json_logs, cli_env) -> None:
    """Create a user and a client through the CLI, then hit the server with credentials in every
    place a request can carry them; grep everything that was logged."""
    runner = CliRunner()
    password = "orbit-lantern-meadow-9981"
    created = runner.invoke(
        cli,
        ["users", "create", "--email", "log@example.com", "--password-stdin", "--json"],
        input=password + "\n",
        env=cli_env,
        catch_exceptions=False,
    )
    assert created.exit_code == 0, created.output
    client_out = runner.invoke(
        cli,
        ["clients", "create", "--name", "Logs", "--confidential", "--redirect-uri", "https://rp.example/cb", "--json"],
        env=cli_env,
        catch_exceptions=False,
    )
    assert client_out.exit_code == 0, client_out.output
    secret = json.loads(client_out.output)["client_secret"]

    import asyncio

    from idp import create_app
    from idp.config import load_settings

    settings = load_settings(environ=cli_env)
    id_token_hint = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJsb2cifQ.c2lnbmF0dXJlLXZhbHVl"
    code = "SplxlOBeZQQYbYS6WxSbIA-auth-code"

    async def requests() -> None:
        app = create_app(settings)
        async with app.test_app():
            http = app.test_client()
            await http.get(f"/jwks?code={code}&id_token_hint={id_token_hint}&password={password}")
            await http.get("/healthz", headers={"Authorization": f"Bearer {id_token_hint}"})
            await http.post(
                "/.well-known/openid-configuration",
                form={"client_secret": secret, "code": code},
                headers={"Authorization": f"Basic {secret}"},
            )
            log = logging.getLogger("idp.test")
            log.info("login attempt password=%s secret=%s", password, secret)
            log.info("token issued", extra={"refresh_token": id_token_hint, "client_secret": secret})
            try:
                raise ValueError(f"bad code {code} for secret {secret}")
            except ValueError:
                log.exception("failure while exchanging")

    asyncio.run(requests())

    logged = json_logs.getvalue()
    assert logged, "the flow logged nothing"
    for credential in (password, secret, code, id_token_hint, "eyJzdWIiOiJsb2cifQ"):
        assert credential not in logged
    for credential in (cli_env["IDP_SECRETS__COOKIE_SECRET"], cli_env["IDP_SECRETS__KEY_ENCRYPTION_KEY"]):
        assert credential not in logged
    lines = [json.loads(line) for line in logged.splitlines()]
    access = [line for line in lines if line["logger"] == "idp.access"]
    assert {line["path"] for line in access} == {"/jwks", "/healthz", "/.well-known/openid-configuration"}
    assert all(len(line["request_id"]) == 32 for line in access)
    failure = next(line for line in lines if line["msg"] == "failure while exchanging")
    assert failure["error_summary"].startswith("ValueError at ")
    assert "Traceback" not in logged


def test_text_format_is_one_readable_line(capsys) -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)
    try:
        logging.getLogger("idp.test").info("hello %s", "world", extra={"client_id": "abc"})
    finally:
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "_idp_handler", False):
                logging.getLogger().removeHandler(handler)
    line = stream.getvalue().strip()
    assert line.count("\n") == 0
    assert "INFO" in line and "idp.test hello world" in line and "client_id=abc" in line


async def test_oauth_flow_logs_contain_no_credentials(json_logs, client, runtime) -> None:
    """Login through the form, code + PKCE, token exchange, refresh, userinfo, revocation, logout:
    none of the password, code, verifier, tokens or client secret may appear in any log line."""
    from tests.oauth_helpers import PASSWORD, basic, code_flow, make_world

    world = await make_world(runtime, email="grep@example.com")
    tokens = await code_flow(client, world)
    refreshed = await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(world.web_id, world.web_secret),
    )
    assert refreshed.status_code == 200
    new_tokens = await refreshed.get_json()
    await client.get("/userinfo", headers={"Authorization": f"Bearer {new_tokens['access_token']}"})
    await client.post(
        "/revoke", form={"token": new_tokens["refresh_token"]}, headers=basic(world.web_id, world.web_secret)
    )
    # A failed client authentication and a failed login are logged too, without their secrets.
    await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic(world.web_id, "wrong-secret-x")
    )
    await client.get(f"/logout?id_token_hint={tokens['id_token']}&post_logout_redirect_uri=https://rp.example/bye")

    logged = json_logs.getvalue()
    assert "idp.access" in logged
    secrets_seen = [
        PASSWORD,
        world.web_secret,
        "wrong-secret-x",
        tokens["_authorization"]["code"],
        tokens["_verifier"],
        tokens["access_token"],
        tokens["refresh_token"],
        tokens["id_token"],
        new_tokens["access_token"],
        new_tokens["refresh_token"],
    ]
    for value in secrets_seen:
        assert value not in logged
    # Not even the signature part of a token.
    assert tokens["id_token"].rsplit(".", 1)[1] not in logged


async def test_account_flows_log_no_links_tokens_or_passwords(json_logs, client, runtime, settings) -> None:
    """Registration, verification and password reset (mail to the .eml outbox): the links' tokens,
    the passwords and the recipient's address never reach a log line."""
    import asyncio
    import email
    import email.policy
    import re
    from pathlib import Path

    from tests.oauth_helpers import csrf_from

    outbox = Path(settings.data_dir) / "outbox"

    async def link_in_mail(number: int, path: str) -> str:
        # Mail is sent after the response (no timing difference between known and unknown addresses).
        for _ in range(100):
            files = sorted(outbox.glob("*.eml"))
            if len(files) >= number:
                break
            await asyncio.sleep(0.02)
        message = email.message_from_bytes(files[number - 1].read_bytes(), policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",)).get_content()
        return re.search(rf"{path}\?token=([\w-]+)", text).group(1)

    async def post_form(path: str, page_path: str, **fields: str):
        page = await client.get(page_path)
        return await client.post(path, form={**fields, "csrf_token": csrf_from(await page.get_data(as_text=True))})

    password, new_password = "quiet-harbor-lantern-5521", "amber-glacier-compass-7730"
    registered = await post_form(
        "/register", "/register", email="logflow@example.com", password=password, name="Log Flow"
    )
    assert registered.status_code == 200
    verify_token = await link_in_mail(1, "/verify-email")
    await post_form("/verify-email", f"/verify-email?token={verify_token}", token=verify_token)
    await post_form("/forgot-password", "/forgot-password", email="logflow@example.com")
    reset_token = await link_in_mail(2, "/reset-password")
    done = await post_form(
        "/reset-password", f"/reset-password?token={reset_token}", token=reset_token, new_password=new_password
    )
    assert done.status_code == 200

    logged = json_logs.getvalue()
    assert "email written to outbox" in logged
    for secret in (verify_token, reset_token, password, new_password, "logflow@example.com"):
        assert secret not in logged
