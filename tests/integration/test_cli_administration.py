"""`idp users list | show | grant-admin | revoke-admin | verify | reset-mfa | delete`: the admin use
cases of idp.admin.users through the CLI, each with what it changed in storage, the audit row it
wrote (via "cli"), and the refusals: bad input named by its option, and the last enabled
administrator kept."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from idp.accounts.security import mfa
from idp.admin import users as admin_users
from idp.cli import cli
from idp.config import Settings
from idp.storage.models import AuditEvent, MfaCredential, RecoveryCode, User, utcnow
from tests.integration.test_cli_user_admin import PASSWORD, run, run_error, run_json, with_runtime


def create(env: dict[str, str], email: str, *flags: str) -> str:
    created = run(env, "users", "create", "--email", email, "--password-stdin", *flags, "--json", input=PASSWORD + "\n")
    return str(json.loads(created.stdout)["id"])


def audit_of(settings: Settings, user_id: str) -> list[tuple[str, Any, Any]]:
    async def read(rt: Any) -> list[tuple[str, Any, Any]]:
        from sqlalchemy import select

        async with rt.db.session() as session:
            rows = await session.execute(
                select(AuditEvent).where(AuditEvent.subject_id == user_id).order_by(AuditEvent.id)
            )
            return [(row.event, row.details.get("via"), row.details) for row in rows.scalars()]

    return with_runtime(settings, read)


def user_row(settings: Settings, user_id: str) -> User | None:
    async def read(rt: Any) -> User | None:
        async with rt.db.session() as session:
            return await session.get(User, user_id)

    return with_runtime(settings, read)


@pytest.fixture
def accounts(cli_env: dict[str, str]) -> dict[str, str]:
    return {
        "admin": create(cli_env, "root@example.com", "--verified", "--admin"),
        "ada": create(cli_env, "ada@example.com", "--verified"),
        "bob": create(cli_env, "bob@example.com"),
    }


# -- list and show ---------------------------------------------------------------------------------


def test_list_pages_through_every_account_with_a_stable_cursor(cli_env: dict[str, str], accounts: dict) -> None:
    first = run_json(cli_env, "users", "list", "--limit", "2")
    assert [user["email"] for user in first["users"]] == ["root@example.com", "ada@example.com"]
    assert first["next_cursor"]
    create(cli_env, "zed@example.com")  # added while paging: it comes last, nothing is repeated
    second = run_json(cli_env, "users", "list", "--limit", "2", "--cursor", first["next_cursor"])
    assert [user["email"] for user in second["users"]] == ["bob@example.com", "zed@example.com"]
    assert second["next_cursor"] is None


def test_list_filters_by_text_status_and_role(cli_env: dict[str, str], accounts: dict) -> None:
    def emails(*args: str) -> list[str]:
        return [user["email"] for user in run_json(cli_env, "users", "list", *args)["users"]]

    assert emails("--query", "ADA") == ["ada@example.com"]
    assert emails("--query", "%") == []  # a wildcard is a character here, not a pattern
    assert emails("--status", "unverified") == ["bob@example.com"]
    assert emails("--admin") == ["root@example.com"]
    assert emails("--no-admin", "--status", "active") == ["ada@example.com"]
    assert emails("--no-mfa") == ["root@example.com", "ada@example.com", "bob@example.com"]
    assert emails("--mfa") == []
    run(cli_env, "users", "disable", "bob@example.com")
    assert emails("--status", "disabled") == ["bob@example.com"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cursor", "not-a-cursor"], "idp: error: --cursor: is not a cursor from this list"),
        (["--cursor", "a b"], "idp: error: --cursor: is not a cursor from this list"),
        (["--query", "x" * 321], "idp: error: --query: must be at most 320 characters"),
    ],
)
def test_bad_list_options_are_named(cli_env: dict[str, str], args: list[str], message: str) -> None:
    assert run_error(cli_env, "users", "list", *args).startswith(message)


def test_a_limit_out_of_range_is_refused_by_its_option(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["users", "list", "--limit", "0"], env=cli_env)
    assert result.exit_code == 2 and "--limit" in result.output


def test_show_gives_what_an_administrator_needs(cli_env: dict[str, str], accounts: dict) -> None:
    shown = run_json(cli_env, "users", "show", "ada@example.com")
    assert shown["id"] == accounts["ada"]
    assert (shown["email_verified"], shown["disabled"], shown["is_admin"], shown["has_password"]) == (
        True,
        False,
        False,
        True,
    )
    assert shown["second_factors"] == {"totp": False, "passkeys": 0, "recovery_codes_left": 0}
    assert shown["consents"] == []
    assert [row["event"] for row in shown["recent_activity"]] == ["user_created"]
    assert "password_hash" not in json.dumps(shown)


# -- the administrator role ------------------------------------------------------------------------


def test_grant_and_revoke_admin_are_audited(cli_env: dict[str, str], settings: Settings, accounts: dict) -> None:
    assert run_json(cli_env, "users", "grant-admin", "ada@example.com")["changed"] is True
    assert run_json(cli_env, "users", "grant-admin", "ada@example.com")["changed"] is False
    assert user_row(settings, accounts["ada"]).is_admin
    assert run_json(cli_env, "users", "revoke-admin", "ada@example.com")["changed"] is True
    assert not user_row(settings, accounts["ada"]).is_admin
    events = [(event, via) for event, via, _ in audit_of(settings, accounts["ada"])]
    assert events.count(("admin_granted", "cli")) == 1 and ("admin_revoked", "cli") in events


def test_the_last_enabled_administrator_stays(cli_env: dict[str, str], settings: Settings, accounts: dict) -> None:
    last = "idp: error: EMAIL: this is the last enabled administrator: make another account an administrator first"
    for command in (["revoke-admin"], ["disable"], ["delete", "--yes"]):
        assert run_error(cli_env, "users", *command, "root@example.com") == last
    row = user_row(settings, accounts["admin"])
    assert row is not None and row.is_admin and not row.disabled

    # With a second administrator either may go, but not both.
    run(cli_env, "users", "grant-admin", "ada@example.com")
    run(cli_env, "users", "disable", "root@example.com")
    assert run_error(cli_env, "users", "revoke-admin", "ada@example.com") == last
    assert user_row(settings, accounts["ada"]).is_admin


def test_an_install_without_administrators_can_still_disable_accounts(cli_env: dict[str, str]) -> None:
    create(cli_env, "solo@example.com")
    assert run_json(cli_env, "users", "disable", "solo@example.com")["disabled"] is True


async def test_two_administrators_demoting_each_other_at_once_leave_one(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import AsyncSession

    from idp.accounts.users import AccountError, NewUser, create_user

    one, two = [
        await create_user(runtime.db, runtime.passwords, runtime.events, NewUser(f"{n}@x.example", None, is_admin=True))
        for n in ("one", "two")
    ]
    # Each demotion pauses after its UPDATE and after counting who is left, before it commits:
    # without the lock on the administrators' rows both would count the other (not committed yet)
    # and both succeed.
    execute = AsyncSession.execute

    async def slow_after_update(self: AsyncSession, statement: Any, *args: Any, **kwargs: Any) -> Any:
        result = await execute(self, statement, *args, **kwargs)
        if getattr(statement, "is_update", False) and getattr(statement.table, "name", "") == "users":
            self.info["updated_users"] = True
        if self.info.get("updated_users"):
            await asyncio.sleep(0.3)
        return result

    monkeypatch.setattr(AsyncSession, "execute", slow_after_update)
    outcomes = await asyncio.gather(
        admin_users.revoke_admin(runtime.accounts, one),
        admin_users.revoke_admin(runtime.accounts, two),
        return_exceptions=True,
    )
    monkeypatch.undo()
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["AccountError", "bool"]
    assert any(isinstance(outcome, AccountError) for outcome in outcomes)
    async with runtime.db.session() as session:
        admins = await session.execute(select(func.count()).select_from(User).where(User.is_admin.is_(True)))
        assert admins.scalar_one() == 1


# -- verify, reset-mfa, delete ---------------------------------------------------------------------


def test_verify_marks_the_address_once(cli_env: dict[str, str], settings: Settings, accounts: dict) -> None:
    assert run_json(cli_env, "users", "verify", "bob@example.com")["changed"] is True
    assert run_json(cli_env, "users", "verify", "bob@example.com")["changed"] is False
    assert user_row(settings, accounts["bob"]).email_verified
    verified = [details for event, _, details in audit_of(settings, accounts["bob"]) if event == "email_verified"]
    assert verified == [{"by": "admin", "via": "cli"}]


def test_reset_mfa_removes_every_factor_and_tells_the_user(
    cli_env: dict[str, str], settings: Settings, accounts: dict
) -> None:
    async def enrol(rt: Any) -> None:
        async with rt.db.session() as session:
            now = utcnow()
            session.add(MfaCredential(user_id=accounts["ada"], type="totp", secret_encrypted="x", confirmed_at=now))
            session.add(
                MfaCredential(
                    user_id=accounts["ada"], type="webauthn", credential_id="c1", public_key="k", confirmed_at=now
                )
            )
            session.add(RecoveryCode(user_id=accounts["ada"], code_hash="h"))

    with_runtime(settings, enrol)
    assert run_error(cli_env, "users", "reset-mfa", "ada@example.com").startswith("idp: error: --yes: required")
    assert run_json(cli_env, "users", "reset-mfa", "ada@example.com", "--yes")["factors_removed"] == 2

    async def left(rt: Any) -> Any:
        return await mfa.factor_status(rt.db, accounts["ada"])

    status = with_runtime(settings, left)
    assert (status.totp, status.webauthn, status.recovery_codes) == (False, 0, 0)
    reset = [details for event, _, details in audit_of(settings, accounts["ada"]) if event == "second_factors_reset"]
    assert reset == [{"removed": 2, "via": "cli"}]
    notices = [
        message
        for path in sorted((Path(settings.data_dir) / "outbox").glob("*.eml"))
        if (message := message_from_bytes(path.read_bytes(), policy=policy.default))["To"] == "ada@example.com"
    ]
    [notice] = notices
    plain = notice.get_body(("plain",))
    assert plain is not None
    assert "An administrator removed the second factors of your account" in plain.get_content()


def test_delete_purges_the_account(cli_env: dict[str, str], settings: Settings, accounts: dict) -> None:
    assert run_error(cli_env, "users", "delete", "ada@example.com").startswith("idp: error: --yes: required")
    assert user_row(settings, accounts["ada"]) is not None
    deleted = run_json(cli_env, "users", "delete", "ada@example.com", "--yes")
    assert deleted["id"] == accounts["ada"] and deleted["rows_deleted"]["users"] == 1
    assert user_row(settings, accounts["ada"]) is None
    assert run_error(cli_env, "users", "show", "ada@example.com") == (
        "idp: error: EMAIL: there is no account with the address 'ada@example.com'"
    )
