"""`idp clients show | update | disable | enable | delete` and `idp audit tail | export`: the rest
of the operator's CLI, each with what it changed and the refusals named by their option."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import pytest
from joserfc.jwk import ECKey

from idp.admin import audit as admin_audit
from idp.oauth.clients import ClientValidationError, new_client_id, update_client
from idp.storage.models import AuditEvent, OAuthClient, utcnow
from tests.integration.test_cli_user_admin import run, run_error, run_json, with_runtime
from tests.oauth_helpers import World, basic, code_flow, make_world


def register(env: dict[str, str], *args: str) -> dict[str, Any]:
    return run_json(env, "clients", "create", "--name", "Reports", "--confidential",
                    "--redirect-uri", "https://rp.example/cb", *args)  # fmt: skip


def test_show_lists_every_field_but_the_secret(cli_env: dict[str, str]) -> None:
    created = register(cli_env)
    shown = run_json(cli_env, "clients", "show", created["client_id"])
    assert shown == {name: value for name, value in created.items() if name != "client_secret"}
    assert (
        run_error(cli_env, "clients", "show", "nope-client")
        == "idp: error: CLIENT_ID: 'nope-client' is not a registered client"
    )


def test_update_changes_what_is_given_and_keeps_the_rest(cli_env: dict[str, str], settings: Any) -> None:
    created = register(cli_env, "--web-origin", "https://rp.example")
    changes = ["--name", "Reports 2", "--redirect-uri", "https://rp.example/cb2", "--scope", "openid"]
    updated = run_json(cli_env, "clients", "update", created["client_id"], *changes, "--clear", "web-origins")
    assert (updated["name"], updated["redirect_uris"], updated["scopes"], updated["web_origins"]) == (
        "Reports 2",
        ["https://rp.example/cb2"],
        ["openid"],
        [],
    )
    assert updated["grant_types"] == created["grant_types"] and updated["client_secret"] is None

    async def trail(rt: Any) -> list[dict[str, Any]]:
        where = admin_audit.audit_filter(client_id=created["client_id"], event="client_updated")
        return await admin_audit.newest(rt.db, where)

    [row] = with_runtime(settings, trail)
    assert row["details"]["fields"] == ["name", "redirect_uris", "scopes", "web_origins"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--redirect-uri", "http://evil.example/cb"], "idp: error: --redirect-uri: "),
        (["--auth-method", "none"], "idp: error: --auth-method: confidential clients must authenticate"),
        (["--auth-method", "private_key_jwt"], "idp: error: --jwks-file: private_key_jwt needs the client's"),
        ([], "idp: error: nothing to change"),
        (["--web-origin", "https://a.example", "--clear", "web-origins"], "idp: error: --clear web-origins: also"),
    ],
)
def test_update_refusals_name_the_option_and_change_nothing(
    cli_env: dict[str, str], args: list[str], message: str
) -> None:
    created = register(cli_env)
    assert run_error(cli_env, "clients", "update", created["client_id"], *args).startswith(message)
    assert run_json(cli_env, "clients", "show", created["client_id"]) == {
        name: value for name, value in created.items() if name != "client_secret"
    }


def test_moving_to_a_secret_method_prints_a_secret_once(cli_env: dict[str, str], tmp_path: Any) -> None:
    jwks = tmp_path / "jwks.json"
    key = ECKey.generate_key("P-256").as_dict(private=False)
    jwks.write_text(json.dumps({"keys": [key]}))
    created = register(cli_env, "--auth-method", "private_key_jwt", "--jwks-file", str(jwks))
    assert created["client_secret"] is None
    moved = run_json(cli_env, "clients", "update", created["client_id"], "--auth-method", "client_secret_post")
    assert moved["token_endpoint_auth_method"] == "client_secret_post" and len(moved["client_secret"]) > 30
    again = run_json(cli_env, "clients", "update", created["client_id"], "--auth-method", "client_secret_basic")
    assert again["client_secret"] is None  # the secret stays; it is never shown again


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"client_type": "public"}, "client_type", "can't be changed: register a new client instead"),
        ({"client_id": "other-id"}, "client_id", "can't be changed: register a new client instead"),
        ({"subject_type": "pairwise"}, "subject_type", "can't change once issued: register a new client instead"),
    ],
)
async def test_the_identity_of_a_client_does_not_change(
    runtime: Any, changes: dict[str, Any], field: str, message: str
) -> None:
    world = await make_world(runtime)
    with pytest.raises(ClientValidationError) as caught:
        await update_client(runtime.db, runtime.events, world.web_id, changes)
    assert (caught.value.field, caught.value.message) == (field, message)
    async with runtime.db.session() as session:
        stored = await session.get(OAuthClient, world.web_id)
    assert (stored.client_type, stored.subject_type) == ("confidential", "public")


def test_generated_client_ids_never_read_as_an_option() -> None:
    assert not any(new_client_id().startswith("-") for _ in range(2000))


async def test_disable_delete_and_what_happens_to_the_tokens(
    client: Any, runtime: Any, cli_env: dict[str, str]
) -> None:
    world: World = await make_world(runtime)
    tokens = await code_flow(client, world, scope="openid offline_access")
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get("/userinfo", headers=bearer)).status_code == 200

    def cli(*args: str) -> Any:
        return asyncio.to_thread(run_json, cli_env, "clients", *args, world.web_id)

    async def userinfo_answers(status: int) -> None:
        """The serving process hears the command line's change within a second (the client it
        holds in memory is forgotten: through Redis, or the database's announcements)."""
        for _ in range(50):
            if (await client.get("/userinfo", headers=bearer)).status_code == status:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"userinfo still does not answer {status} after a second")

    assert (await cli("disable"))["changed"] is True
    await userinfo_answers(401)
    assert (await cli("disable"))["changed"] is False
    assert (await cli("enable"))["changed"] is True
    await userinfo_answers(200)

    refused = await asyncio.to_thread(run_error, cli_env, "clients", "delete", world.web_id)
    assert refused.startswith("idp: error: --yes: required")
    assert await cli("delete", "--yes") == {"client_id": world.web_id, "deleted": True}
    await userinfo_answers(401)
    refresh = await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(world.web_id, world.web_secret),
    )
    assert (await refresh.get_json())["error"] == "invalid_client"
    async with runtime.db.session() as session:
        assert await session.get(OAuthClient, world.web_id) is None
    # Idempotent: deleting it again says so and succeeds.
    assert (await cli("delete", "--yes"))["deleted"] is False


# -- audit -------------------------------------------------------------------------------------------


def seed_events(settings: Any, count: int) -> None:
    async def add(rt: Any) -> None:
        async with rt.db.session() as session:
            for number in range(count):
                session.add(
                    AuditEvent(
                        occurred_at=utcnow(),
                        event="login_failed" if number % 2 else "login_succeeded",
                        outcome="failure" if number % 2 else "success",
                        subject_id=f"user-{number % 3}",
                        user_agent='=HYPERLINK("https://evil.example")' if number == 1 else "curl",
                        details={"n": number},
                    )
                )

    with_runtime(settings, add)


def test_export_streams_every_matching_event_as_csv_in_batches(
    cli_env: dict[str, str], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_audit, "EXPORT_BATCH", 7)  # several batches for a small log
    seed_events(settings, 30)
    result = run(cli_env, "audit", "export", "--event", "login_failed")
    exported = result.stdout_bytes.decode()
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 15 and {row["event"] for row in rows} == {"login_failed"}
    assert [json.loads(row["details"])["n"] for row in rows] == list(range(1, 30, 2))
    # A cell a spreadsheet would run as a formula is quoted (OWASP CSV injection).
    assert rows[0]["user_agent"] == '\'=HYPERLINK("https://evil.example")'
    assert exported.startswith("id,occurred_at,event,outcome,")
    assert "\r\n" in exported


def test_export_as_json_lines_and_time_bounds(cli_env: dict[str, str], settings: Any) -> None:
    seed_events(settings, 4)
    lines = run(cli_env, "audit", "export", "--format", "json", "--user", "user-0").stdout.splitlines()
    assert [json.loads(line)["details"]["n"] for line in lines] == [0, 3]
    assert run(cli_env, "audit", "export", "--since", "2999-01-01").stdout.splitlines() == [
        "id,occurred_at,event,outcome,actor_id,subject_id,client_id,ip,user_agent,request_id,details"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--since", "yesterday"],
            "idp: error: --since: must be an ISO 8601 date or date-time, e.g. 2026-12-01T08:00:00Z",
        ),
        (["--since", "2026-12-02", "--until", "2026-12-01"], "idp: error: --until: must be later than since"),
        (["--outcome", "maybe"], "idp: error: --outcome: must be one of success, failure"),
        (["--user", "u" * 65], "idp: error: --user: must be 1 to 64 characters"),
    ],
)
def test_bad_audit_filters_are_named(cli_env: dict[str, str], args: list[str], message: str) -> None:
    assert run_error(cli_env, "audit", "export", *args) == message


def test_tail_shows_the_latest_oldest_first(cli_env: dict[str, str], settings: Any) -> None:
    seed_events(settings, 6)
    rows = [json.loads(line) for line in run(cli_env, "audit", "tail", "--lines", "3", "--json").stdout.splitlines()]
    assert [row["details"]["n"] for row in rows] == [3, 4, 5]
    text = run(cli_env, "audit", "tail", "--lines", "1").stdout
    assert "login_failed" in text and "user user-2" in text


async def test_follow_yields_events_as_they_are_written(runtime: Any) -> None:
    where = admin_audit.audit_filter(event="login_failed")
    seen: list[int] = []

    async def write(number: int) -> None:
        async with runtime.db.session() as session:
            session.add(
                AuditEvent(occurred_at=utcnow(), event="login_failed", outcome="failure", details={"n": number})
            )

    await write(0)
    async for row in admin_audit.follow(runtime.db, where, after_id=None, interval=0.01, stop=lambda: len(seen) >= 3):
        seen.append(row["details"]["n"])
        if len(seen) < 3:
            await write(len(seen))
    assert seen == [0, 1, 2]
