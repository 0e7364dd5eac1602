"""The `idp` command: serve, demo, db, seed, users, clients, audit, keys, secrets, config.

Every command that reports something has ``--json`` for scripts. Errors are one line on stderr
naming the bad flag or setting, with exit status 1 (2 for usage errors, as click does).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import click

from idp.config import ConfigError, Settings, generate_secrets, load_settings

T = TypeVar("T")

CLIENT_FIELD_FLAGS = {
    "name": "--name",
    "client_type": "--public/--confidential",
    "client_id": "--client-id",
    "redirect_uris": "--redirect-uri",
    "post_logout_redirect_uris": "--post-logout-redirect-uri",
    "grant_types": "--grant",
    "scopes": "--scope",
    "token_endpoint_auth_method": "--auth-method",
    "web_origins": "--web-origin",
    "id_token_signed_response_alg": "--id-token-alg",
    "subject_type": "--subject-type",
    "jwks": "--jwks-file",
    "jwks_uri": "--jwks-uri",
    "backchannel_logout_uri": "--backchannel-logout-uri",
    "application_type": "--native",
}
USER_FIELD_FLAGS = {"email": "--email", "password": "--password-stdin", "name": "--name"}


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"idp: error: {message}", err=True)
    sys.exit(code)


class CliState:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path

    def settings(self, overrides: dict[str, Any] | None = None) -> Settings:
        try:
            return load_settings(self.config_path, overrides=overrides)
        except ConfigError as exc:
            fail(f"config: {exc}")


def emit(data: Any, as_json: bool, text: str | Callable[[], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text() if callable(text) else text)


def run_with_runtime(
    settings: Settings,
    action: Callable[[Any], Awaitable[T]],
    *,
    ensure_keys: bool = True,
) -> T:
    """Open the runtime (database, store, keys), run ``action(runtime)``, close; errors as one line."""
    from idp.runtime import StartupError, open_runtime

    async def main() -> T:
        # One attempt, not the server's startup_wait: an operator at a prompt wants the error now.
        rt = await open_runtime(settings, ensure_keys=ensure_keys, wait=0)
        try:
            return await action(rt)
        finally:
            await rt.close()

    try:
        return asyncio.run(main())
    except StartupError as exc:
        fail(str(exc))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML configuration file (default: $IDP_CONFIG). Environment IDP_* variables override it.",
)
@click.version_option(package_name="idp")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """idp: an OpenID Connect identity provider."""
    if config_path and not Path(config_path).is_file():
        fail(f"--config: {config_path}: no such file")
    ctx.obj = CliState(config_path)
    if config_path:
        # Worker processes of `serve` read the same file.
        os.environ["IDP_CONFIG"] = str(Path(config_path).resolve())


# --------------------------------------------------------------------------------------------------
# serve / demo


def _serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> None:
    import uvicorn

    from idp.config import workers_without_shared_state
    from idp.observability import configure_logging
    from idp.server import uvicorn_options
    from idp.workers import Workers, reserve, reuse_port_available

    if workers is not None and (problem := workers_without_shared_state(workers, settings.redis_url)):
        fail(f"--workers: {problem}")
    configure_logging(settings.log.level, settings.log_format)
    # Fail fast, with one clear line, before any worker starts: database, Redis, schema, keys.
    run_with_runtime(settings, lambda rt: asyncio.sleep(0))
    bind_host = host or settings.server.host
    bind_port = settings.server.port if port is None else port
    count = workers or settings.server.workers
    if count > 1 and reuse_port_available():
        # One listening socket per worker (idp.workers): the kernel spreads the connections.
        try:
            reservation = reserve(bind_host, bind_port)
        except OSError as exc:
            fail(f"server.port: cannot listen on {bind_host}:{bind_port} ({exc.strerror or type(exc).__name__})")
        bind_port = reservation.getsockname()[1]
        click.echo(f"idp: serving {settings.issuer} on http://{bind_host}:{bind_port} ({count} workers)", err=True)
        code = Workers(count, bind_host, bind_port, uvicorn_options(settings)).run()
        reservation.close()
        raise SystemExit(code)
    click.echo(f"idp: serving {settings.issuer} on http://{bind_host}:{bind_port}", err=True)
    uvicorn.run(
        "idp.asgi:create",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=count,
        **uvicorn_options(settings),
    )


@cli.command()
@click.option("--host", default=None, help="Bind address (default: server.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default: server.port).")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes (default: server.workers).")
@click.pass_obj
def serve(state: CliState, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the IdP under uvicorn (uvloop, httptools)."""
    _serve(state.settings(), host, port, workers)


@cli.command()
@click.option("--host", default=None, help="Bind address (default: server.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default: server.port).")
@click.pass_obj
def demo(state: CliState, host: str | None, port: int | None) -> None:
    """Dev mode on the embedded defaults: migrate, seed the demo data, print the URLs, serve."""
    # Workers re-read settings from the environment, so the forced values go there.
    os.environ["IDP_DEV_MODE"] = "true"
    if port is not None and "IDP_ISSUER" not in os.environ:
        os.environ["IDP_ISSUER"] = f"http://{host or '127.0.0.1'}:{port}"
    settings = state.settings()
    from idp.demo import seed_demo
    from idp.storage import migrate

    _migrate(lambda: migrate.upgrade(settings.database_url))
    result = run_with_runtime(settings, seed_demo)
    data = result.as_dict(settings.issuer)
    lines = [
        "",
        "idp demo is starting (dev mode: generated secrets in "
        f"{settings.data_dir}/dev-secrets.json, never use them in production)",
        f"  issuer / discovery : {data['discovery']}",
        f"  health             : {settings.issuer}/healthz  {settings.issuer}/readyz",
        f"  demo login         : {data['login']['email']} / {data['login']['password']}",
        f"  public SPA client  : {data['spa_client']['client_id']} (redirect {data['spa_client']['redirect_uri']})",
        f"  confidential client: {data['web_client']['client_id']}"
        + (
            f" secret {data['web_client']['client_secret']}"
            if data["web_client"]["client_secret"]
            else " (secret shown when first created; new one: idp clients rotate-secret demo-web)"
        ),
        "",
    ]
    from idp.demo import DEMO_SPA_ORIGIN, SPA_DIRECTORY, serve_spa

    if (SPA_DIRECTORY / "index.html").is_file():
        spa = urlsplit(DEMO_SPA_ORIGIN)
        try:
            serve_spa(settings.issuer, spa.hostname or "127.0.0.1", spa.port or 8080)
            lines.insert(-1, f"  demo SPA           : {DEMO_SPA_ORIGIN}/ (its own origin; sign in there)")
        except OSError as exc:
            lines.insert(-1, f"  demo SPA           : not served ({DEMO_SPA_ORIGIN} is busy: {exc.strerror})")
    click.echo("\n".join(lines), err=True)
    _serve(settings, host, port, 1)


# --------------------------------------------------------------------------------------------------
# db


@cli.group()
def db() -> None:
    """Database schema migrations (Alembic)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_obj
def db_upgrade(state: CliState, revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    settings = state.settings()
    _migrate(lambda: _alembic("upgrade", settings.database_url, revision))
    click.echo(f"database at {_current_revision(settings) or 'base'}")


@db.command("downgrade")
@click.argument("revision")
@click.pass_obj
def db_downgrade(state: CliState, revision: str) -> None:
    """Downgrade the schema to REVISION ("base" removes every table)."""
    settings = state.settings()
    _migrate(lambda: _alembic("downgrade", settings.database_url, revision))
    click.echo(f"database at {_current_revision(settings) or 'base'}")


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def db_current(state: CliState, as_json: bool) -> None:
    """Show the schema revision and the one this version needs."""
    from idp.storage import migrate

    settings = state.settings()
    current, head = _current_revision(settings), migrate.head_revision()
    emit(
        {"current": current, "head": head, "up_to_date": current == head},
        as_json,
        f"current {current or 'base'}, head {head}" + ("" if current == head else " (run: idp db upgrade)"),
    )


@db.command("cleanup")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def db_cleanup(state: CliState, as_json: bool) -> None:
    """Delete expired authorization codes, refresh tokens, revocations, signing keys, forgotten
    devices and announcements every process has read (safe to run any time)."""
    from datetime import timedelta

    from idp.accounts.sessions.devices import DEVICE_COOKIE_MAX_AGE
    from idp.storage.models import utcnow
    from idp.storage.repositories import MaintenanceRepository

    async def action(rt: Any) -> dict[str, int]:
        async with rt.db.session() as session:
            counts = await MaintenanceRepository(session).delete_expired(
                utcnow(), device_lifetime=timedelta(seconds=DEVICE_COOKIE_MAX_AGE)
            )
        counts["signing_keys"] = await rt.keys.purge_expired()
        return counts

    counts = run_with_runtime(state.settings(), action)
    emit(counts, as_json, lambda: "deleted " + ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items()))


def _alembic(action: str, url: str, revision: str) -> None:
    from idp.storage import migrate

    if action == "upgrade":
        migrate.upgrade(url, revision)
    else:
        migrate.downgrade(url, revision)


def _migrate(step: Callable[[], None]) -> None:
    from alembic.util.exc import CommandError

    from idp.storage.db import DATABASE_ERRORS, describe_error

    try:
        step()
    except CommandError as exc:
        fail(f"revision: {exc}")
    except DATABASE_ERRORS as exc:
        fail(f"database_url: {describe_error(exc)}")


def _current_revision(settings: Settings) -> str | None:
    from idp.storage.db import Database, DatabaseUnavailable

    async def read() -> str | None:
        database = Database(settings.database_url)
        try:
            await database.ping()
            return await database.schema_revision()
        finally:
            await database.close()

    try:
        return _run(read())
    except DatabaseUnavailable as exc:
        fail(f"database_url: {exc}")


# --------------------------------------------------------------------------------------------------
# seed


@cli.group()
def seed() -> None:
    """Load sample data."""


@seed.command("demo")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def seed_demo_command(state: CliState, as_json: bool) -> None:
    """Create the demo user and clients if missing (idempotent)."""
    from idp.demo import seed_demo

    settings = state.settings()
    result = run_with_runtime(settings, seed_demo)
    data = result.as_dict(settings.issuer)

    def text() -> str:
        web = data["web_client"]
        secret = f"client_secret {web['client_secret']} (shown once)" if web["client_secret"] else "existing"
        return "\n".join(
            [
                f"demo user     {data['login']['email']} / {data['login']['password']}"
                f" ({'created' if data['login']['created'] else 'existing'})",
                f"SPA client    {data['spa_client']['client_id']}"
                f" ({'created' if data['spa_client']['created'] else 'existing'})",
                f"web client    {web['client_id']} {secret}",
                f"log in via    {data['discovery']}",
            ]
        )

    emit(data, as_json, text)


# --------------------------------------------------------------------------------------------------
# users


@cli.group()
def users() -> None:
    """Manage user accounts."""


@users.command("create")
@click.option("--email", required=True, help="The user's email address (their login).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--name", default=None, help="Display name.")
@click.option("--verified", is_flag=True, help="Mark the email address as verified.")
@click.option("--admin", is_flag=True, help="Grant administrator rights.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_create(
    state: CliState,
    email: str,
    password_stdin: bool,
    name: str | None,
    verified: bool,
    admin: bool,
    as_json: bool,
) -> None:
    """Create a user. Without --password-stdin the account has no password (passkey or reset only)."""
    from idp.accounts.users import AccountError, NewUser, check_new_user, create_user

    password = None
    if password_stdin:
        try:
            line = sys.stdin.readline()
        except UnicodeDecodeError:
            fail("--password-stdin: the password is not text in the terminal's encoding")
        # Only the line ending is removed: passwords are used exactly as typed.
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            fail("--password-stdin: no password on standard input")
    settings = state.settings()
    new = NewUser(email=email, password=password, name=name, email_verified=verified, is_admin=admin)

    from idp.accounts.password_policy import PasswordPolicy

    try:
        policy = PasswordPolicy(settings.password_policy)
    except ValueError as exc:
        fail(f"config: {exc}")

    async def action(rt: Any) -> Any:
        return await create_user(rt.db, rt.passwords, rt.events, new, policy)

    try:
        # Input checks first: opening the runtime writes (first signing keys), a rejected user must not.
        check_new_user(new, policy)
        user = run_with_runtime(settings, action)
    except AccountError as exc:
        fail(f"{USER_FIELD_FLAGS.get(exc.field, exc.field)}: {exc.message}")
    emit(
        {
            "id": user.id,
            "email": user.email,
            "email_verified": user.email_verified,
            "is_admin": user.is_admin,
        },
        as_json,
        f"created user {user.id} <{user.email}>",
    )


def _read_jwks_file(path: str) -> Any:
    from idp.security.inputs import unusable_in_json

    try:
        jwks = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        fail(f"--jwks-file: cannot read a JSON JWK Set ({type(exc).__name__})")
    if (unusable := unusable_in_json(jwks)) is not None:
        fail(f"--jwks-file: {unusable[0][:60]} contains {unusable[1]}, which is not allowed")
    return jwks


def _with_user(
    state: CliState, email: str, action: Callable[[Any, Any], Awaitable[T]], *, shared_state: bool = False
) -> T:
    """Run ``action(runtime, user)`` for the account with address ``email``; a one-line error when
    there is none. Events are audited as done through the CLI. ``shared_state``: the command acts
    on sessions or sign-in locks, which a running server only shares through Redis."""
    from idp.accounts.account_status import find_user
    from idp.accounts.users import AccountError
    from idp.events import EventContext, set_context

    settings = state.settings()
    if shared_state and not settings.redis_url:
        fail(
            "redis_url: not set, so sessions and sign-in locks live in the running server's own memory, out of "
            "this command's reach; set redis_url (as the server has it), or act from the server itself"
        )

    async def run(rt: Any) -> T:
        set_context(EventContext(via="cli"))
        user = await find_user(rt.accounts, email)
        return await action(rt, user)

    try:
        return run_with_runtime(settings, run)
    except AccountError as exc:
        fail(f"EMAIL: {exc.message}")


@users.command("disable")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_disable(state: CliState, email: str, as_json: bool) -> None:
    """Stop EMAIL from signing in: ends its sessions (with back-channel logout) and revokes its tokens.

    Without Redis the server's sessions are out of reach: each ends at its next request."""
    from idp.accounts import account_status

    async def action(rt: Any, user: Any) -> dict[str, Any]:
        ended = await account_status.disable(rt.accounts, user.id)
        return {"id": user.id, "disabled": True, "sessions_ended": ended}

    data = _with_user(state, email, action)
    emit(data, as_json, f"disabled {data['id']}; {data['sessions_ended']} session(s) ended")


@users.command("enable")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_enable(state: CliState, email: str, as_json: bool) -> None:
    """Let a disabled account sign in again."""
    from idp.accounts import account_status

    async def action(rt: Any, user: Any) -> dict[str, Any]:
        await account_status.enable(rt.accounts, user.id)
        return {"id": user.id, "disabled": False}

    data = _with_user(state, email, action)
    emit(data, as_json, f"enabled {data['id']}")


@users.command("sessions")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_sessions(state: CliState, email: str, as_json: bool) -> None:
    """List where EMAIL is signed in (session id, browser, IP, times, applications)."""
    from idp.accounts.sessions.store import describe_all

    async def action(rt: Any, user: Any) -> list[dict[str, Any]]:
        return await describe_all(rt.sessions, rt.db, user.id, current_sid=None)

    rows = _with_user(state, email, action, shared_state=True)

    def text() -> str:
        if not rows:
            return "no sessions"
        return "\n".join(
            f"{row['id']}  {row['device']}  {row['ip'] or '-'}  signed in {row['signed_in_at']}"
            f"  last seen {row['last_seen_at']}  {', '.join(row['applications'])}"
            for row in rows
        )

    emit(rows, as_json, text)


@users.command("end-sessions")
@click.argument("email")
@click.option("--session", "sid", default=None, help="End only this session (its id, from `idp users sessions`).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_end_sessions(state: CliState, email: str, sid: str | None, as_json: bool) -> None:
    """Sign EMAIL out everywhere (or of one session): those browsers are signed out at their next request."""
    from idp.accounts import account_status

    if sid is not None and not 1 <= len(sid) <= 64:
        fail("--session: not a session id (see `idp users sessions EMAIL`)")

    async def action(rt: Any, user: Any) -> int:
        return await account_status.end_sessions(rt.accounts, user.id, sid)

    ended = _with_user(state, email, action, shared_state=True)
    if sid is not None and not ended:
        fail(f"--session: {email} has no live session {sid}")
    emit({"sessions_ended": ended}, as_json, f"{ended} session(s) ended")


@users.command("end-all-sessions")
@click.option("--yes", is_flag=True, help="Confirm: every user of this IdP is signed out.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_end_all_sessions(state: CliState, yes: bool, as_json: bool) -> None:
    """Sign every user out everywhere (after a suspected compromise); needs redis_url."""
    from idp.events import EventContext, set_context
    from idp.storage.repositories import UserRepository

    if not yes:
        fail("--yes: required, to confirm that every user is signed out")
    settings = state.settings()
    if not settings.redis_url:
        fail("redis_url: not set, so sessions live in the running server's own memory; restarting it ends them all")

    async def action(rt: Any) -> dict[str, int]:
        set_context(EventContext(via="cli"))
        async with rt.db.session() as session:
            user_ids = await UserRepository(session).all_ids()
        ended = 0
        for user_id in user_ids:
            ended += len(await rt.sessions.end_all_for_user(user_id, reason="ended_by_admin"))
        return {"users": len(user_ids), "sessions_ended": ended}

    data = run_with_runtime(settings, action)
    emit(data, as_json, f"{data['sessions_ended']} session(s) of {data['users']} user(s) ended")


@users.command("unlock")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_unlock(state: CliState, email: str, as_json: bool) -> None:
    """Lift the sign-in locks of EMAIL after repeated failed passwords (from every address)."""
    from idp.accounts import account_status

    async def action(rt: Any, user: Any) -> dict[str, Any]:
        locked_for = await rt.lockout.locked_for(user.email_normalized)
        lifted = await account_status.unlock(rt.accounts, rt.lockout, rt.limits, user)
        return {"id": user.id, "was_locked_for": locked_for, "cleared": lifted}

    data = _with_user(state, email, action, shared_state=True)
    emit(
        data,
        as_json,
        f"unlocked {data['id']}" if data["cleared"] else f"{data['id']} had no failed sign-ins to clear",
    )


@users.command("list")
@click.option("--query", "text", default=None, help="Part of the address or name (case-insensitive).")
@click.option(
    "--status",
    type=click.Choice(["active", "unverified", "disabled", "locked"]),
    default=None,
    help="locked: under an account-wide sign-in lock now (needs the shared key-value store, Redis).",
)
@click.option("--admin/--no-admin", "admin", default=None, help="Only administrators, or only others.")
@click.option("--mfa/--no-mfa", "second_factor", default=None, help="With a second factor, or without.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--cursor", default=None, help="The next_cursor of the page before.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_list(
    state: CliState,
    text: str | None,
    status: str | None,
    admin: bool | None,
    second_factor: bool | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List accounts in the order they were created, a page at a time."""
    from idp.accounts.users import AccountError
    from idp.admin.users import UserQuery, find_users

    query = UserQuery(text, status, admin, second_factor, cursor, limit)

    async def action(rt: Any) -> Any:
        return await find_users(rt.accounts, query)

    try:
        page = run_with_runtime(state.settings(), action)
    except AccountError as exc:
        fail(f"--{exc.field}: {exc.message}")
    data = {"users": page.users, "next_cursor": page.next_cursor}

    def lines() -> str:
        rows = [
            f"{user['id']}  {user['email']}"
            + "".join(
                f"  [{flag}]"
                for flag, on in (
                    ("admin", user["is_admin"]),
                    ("disabled", user["disabled"]),
                    ("unverified", not user["email_verified"]),
                )
                if on
            )
            for user in page.users
        ]
        if page.next_cursor:
            rows.append(f"more: --cursor {page.next_cursor}")
        return "\n".join(rows) or "no accounts"

    emit(data, as_json, lines)


@users.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_show(state: CliState, email: str, as_json: bool) -> None:
    """Everything an administrator sees of EMAIL: profile, status, second factors, sessions (with
    redis_url, where the server keeps them), consents and the latest activity."""
    from idp.admin.users import user_detail

    reachable = bool(state.settings().redis_url)

    async def action(rt: Any, user: Any) -> dict[str, Any]:
        return await user_detail(rt.accounts, user, sessions=reachable)

    data = _with_user(state, email, action)

    def text() -> str:
        factors = data["second_factors"]
        sessions = data.get("sessions")
        lines = [
            f"{data['id']}  {data['email']}  {data['name'] or ''}".rstrip(),
            f"status        {'disabled' if data['disabled'] else 'enabled'}, "
            f"{'verified' if data['email_verified'] else 'unverified'}{', administrator' if data['is_admin'] else ''}",
            f"second factor totp {'yes' if factors['totp'] else 'no'}, {factors['passkeys']} passkey(s), "
            f"{factors['recovery_codes_left']} recovery code(s) left",
            f"created       {data['created_at']}; last sign-in {data['last_login_at'] or 'never'}",
            f"sessions      {len(sessions) if sessions is not None else 'out of reach without redis_url'}",
            f"consents      {', '.join(c['client'] for c in data['consents']) or 'none'}",
        ]
        lines += [f"  {row['occurred_at']}  {row['event']}  {row['outcome']}" for row in data["recent_activity"]]
        return "\n".join(lines)

    emit(data, as_json, text)


@users.command("grant-admin")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_grant_admin(state: CliState, email: str, as_json: bool) -> None:
    """Make EMAIL an administrator."""
    from idp.admin.users import grant_admin

    async def action(rt: Any, user: Any) -> dict[str, Any]:
        return {"id": user.id, "is_admin": True, "changed": await grant_admin(rt.accounts, user)}

    data = _with_user(state, email, action)
    emit(data, as_json, f"{data['id']} is an administrator" + ("" if data["changed"] else " (already)"))


@users.command("revoke-admin")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_revoke_admin(state: CliState, email: str, as_json: bool) -> None:
    """Take the administrator role from EMAIL (refused for the last enabled administrator)."""
    from idp.admin.users import revoke_admin

    async def action(rt: Any, user: Any) -> dict[str, Any]:
        return {"id": user.id, "is_admin": False, "changed": await revoke_admin(rt.accounts, user)}

    data = _with_user(state, email, action)
    emit(data, as_json, f"{data['id']} is not an administrator" + ("" if data["changed"] else " (was not)"))


@users.command("verify")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_verify(state: CliState, email: str, as_json: bool) -> None:
    """Mark the address of EMAIL verified (its owner proved it another way)."""
    from idp.admin.users import verify_email

    async def action(rt: Any, user: Any) -> dict[str, Any]:
        return {"id": user.id, "email_verified": True, "changed": await verify_email(rt.accounts, user)}

    data = _with_user(state, email, action)
    emit(data, as_json, f"{data['id']}: address verified" + ("" if data["changed"] else " (already)"))


@users.command("reset-mfa")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Confirm: every second factor and recovery code of EMAIL is removed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_reset_mfa(state: CliState, email: str, yes: bool, as_json: bool) -> None:
    """Remove the second factors of EMAIL (a lost authenticator); they are mailed about it."""
    from idp.admin.users import reset_second_factors

    if not yes:
        fail("--yes: required, to confirm that every second factor of the account is removed")

    async def action(rt: Any, user: Any) -> dict[str, Any]:
        return {"id": user.id, "factors_removed": await reset_second_factors(rt.accounts, user)}

    data = _with_user(state, email, action)
    emit(data, as_json, f"{data['id']}: {data['factors_removed']} second factor(s) removed")


@users.command("delete")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Confirm: the account and everything it owns is deleted.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def users_delete(state: CliState, email: str, yes: bool, as_json: bool) -> None:
    """Delete EMAIL with the full purge of a self-deletion (sessions, tokens, rows, audit details)."""
    from idp.admin.users import delete_user

    if not yes:
        fail("--yes: required, to confirm that the account and everything it owns is deleted")

    async def action(rt: Any, user: Any) -> dict[str, Any]:
        report = await delete_user(rt.accounts, user, actor_id=None, delete_blob=rt.delete_picture)
        return {
            "id": report.user_id,
            "deleted": True,
            "sessions_ended": report.sessions_ended,
            "rows_deleted": report.rows_deleted,
            "audit_rows_scrubbed": report.audit_rows_scrubbed,
        }

    data = _with_user(state, email, action)
    emit(data, as_json, f"deleted {data['id']}; {data['sessions_ended']} session(s) ended")


# --------------------------------------------------------------------------------------------------
# clients


@cli.group()
def clients() -> None:
    """Manage OAuth clients (relying parties)."""


@clients.command("create")
@click.option("--name", required=True, help="Display name shown on consent pages.")
@click.option(
    "--public", "client_type", flag_value="public", help="A public client (SPA, native app): PKCE, no secret."
)
@click.option(
    "--confidential",
    "client_type",
    flag_value="confidential",
    help="A confidential client with a secret or keys.",
)
@click.option("--client-id", default=None, help="Choose the client id (default: random).")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Registered redirect URI (repeatable).")
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True, help="Repeatable.")
@click.option(
    "--grant",
    "grant_types",
    multiple=True,
    type=click.Choice(["authorization_code", "refresh_token", "client_credentials"]),
    help="Allowed grant (repeatable; default authorization_code + refresh_token).",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="Allowed scope (repeatable; default openid profile email offline_access).",
)
@click.option(
    "--auth-method",
    type=click.Choice(["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]),
    default=None,
    help="Token endpoint authentication (default: none / client_secret_basic).",
)
@click.option("--web-origin", "web_origins", multiple=True, help="Origin allowed for CORS (repeatable).")
@click.option(
    "--id-token-alg",
    type=click.Choice(["RS256", "ES256", "Ed25519", "EdDSA"]),
    default=None,
    help="ID token signing algorithm (default: the server's first configured).",
)
@click.option("--subject-type", type=click.Choice(["public", "pairwise"]), default="public")
@click.option(
    "--jwks-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="JWK Set file with the client's public keys (private_key_jwt).",
)
@click.option("--jwks-uri", default=None, help="URL of the client's JWK Set (private_key_jwt).")
@click.option("--backchannel-logout-uri", default=None, help="Back-Channel Logout endpoint of the client.")
@click.option("--native", is_flag=True, help="A native app (RFC 8252): loopback ports and private-use schemes.")
@click.option("--first-party", is_flag=True, help="Trusted first-party client: consent is not asked.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def clients_create(
    state: CliState,
    client_type: str | None,
    jwks_file: str | None,
    native: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Register a client; prints its id and, once, its secret."""
    from idp.oauth.clients import ClientSpec, ClientValidationError, create_client, describe_client, validate_spec

    if client_type is None:
        fail("--public/--confidential: choose one")
    jwks = _read_jwks_file(jwks_file) if jwks_file else None
    spec = ClientSpec(
        name=options["name"],
        client_type=client_type,
        client_id=options["client_id"],
        redirect_uris=list(options["redirect_uris"]),
        post_logout_redirect_uris=list(options["post_logout_redirect_uris"]),
        grant_types=list(options["grant_types"]),
        scopes=list(options["scopes"]),
        token_endpoint_auth_method=options["auth_method"],
        web_origins=list(options["web_origins"]),
        id_token_signed_response_alg=options["id_token_alg"],
        subject_type=options["subject_type"],
        jwks=jwks,
        jwks_uri=options["jwks_uri"],
        backchannel_logout_uri=options["backchannel_logout_uri"],
        application_type="native" if native else "web",
        first_party=options["first_party"],
    )
    settings = state.settings()
    try:
        # Input checks first: opening the runtime writes (first signing keys), a rejected client must not.
        validate_spec(spec)
        created = run_with_runtime(
            settings,
            lambda rt: create_client(rt.db, rt.events, spec, pairwise_available=rt.subjects.pairwise_available),
        )
    except ClientValidationError as exc:
        fail(f"{CLIENT_FIELD_FLAGS.get(exc.field, exc.field)}: {exc.message}")
    data = describe_client(created.client)
    data["client_secret"] = created.client_secret
    text = f"client_id     {created.client.id}"
    if created.client_secret:
        text += f"\nclient_secret {created.client_secret}\n(the secret is shown only now; store it safely)"
    emit(data, as_json, text)


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def clients_list(state: CliState, as_json: bool) -> None:
    """List registered clients."""
    from idp.oauth.clients import describe_client
    from idp.storage.repositories import ClientRepository

    async def action(rt: Any) -> list[dict[str, Any]]:
        async with rt.db.session() as session:
            return [describe_client(client) for client in await ClientRepository(session).list()]

    rows = run_with_runtime(state.settings(), action)

    def text() -> str:
        if not rows:
            return "no clients registered"
        return "\n".join(
            f"{row['client_id']:<28} {row['client_type']:<12} {row['token_endpoint_auth_method']:<20} {row['name']}"
            for row in rows
        )

    emit(rows, as_json, text)


@clients.command("rotate-secret")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def clients_rotate_secret(state: CliState, client_id: str, as_json: bool) -> None:
    """Issue a new secret for CLIENT_ID; the old one stops working at once."""
    from idp.oauth.clients import ClientValidationError, rotate_client_secret

    try:
        secret = run_with_runtime(state.settings(), lambda rt: rotate_client_secret(rt.db, rt.events, client_id))
    except ClientValidationError as exc:
        fail(f"CLIENT_ID: {exc.message}")
    emit(
        {"client_id": client_id, "client_secret": secret},
        as_json,
        f"client_secret {secret}\n(the secret is shown only now; store it safely)",
    )


def _run_client_command(state: CliState, client_id: str, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``action(runtime)`` on CLIENT_ID; a registration error as one line naming its option."""
    from idp.events import EventContext, set_context
    from idp.oauth.clients import ClientValidationError

    async def run(rt: Any) -> T:
        set_context(EventContext(via="cli"))
        return await action(rt)

    try:
        return run_with_runtime(state.settings(), run)
    except ClientValidationError as exc:
        flag = "CLIENT_ID" if exc.field == "client_id" else CLIENT_FIELD_FLAGS.get(exc.field, exc.field)
        fail(f"{flag}: {exc.message}")


@clients.command("show")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def clients_show(state: CliState, client_id: str, as_json: bool) -> None:
    """Every registration field of CLIENT_ID (never its secret)."""
    from idp.oauth.clients import ClientValidationError, describe_client
    from idp.storage.repositories import ClientRepository

    async def action(rt: Any) -> dict[str, Any]:
        async with rt.db.session() as session:
            client = await ClientRepository(session).get(client_id)
        if client is None:
            raise ClientValidationError("client_id", f"{client_id[:64]!r} is not a registered client")
        return describe_client(client)

    data = _run_client_command(state, client_id, action)
    emit(data, as_json, lambda: "\n".join(f"{name:<28} {value}" for name, value in data.items()))


@clients.command("update")
@click.argument("client_id")
@click.option("--name", default=None, help="Display name shown on consent pages.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Replaces the redirect URIs (repeatable).")
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True, help="Replaces them.")
@click.option(
    "--grant",
    "grant_types",
    multiple=True,
    type=click.Choice(["authorization_code", "refresh_token", "client_credentials"]),
    help="Replaces the allowed grants (repeatable).",
)
@click.option("--scope", "scopes", multiple=True, help="Replaces the allowed scopes (repeatable).")
@click.option(
    "--auth-method",
    type=click.Choice(["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]),
    default=None,
    help="Token endpoint authentication; moving to a secret method prints a new secret once.",
)
@click.option("--web-origin", "web_origins", multiple=True, help="Replaces the CORS origins (repeatable).")
@click.option("--id-token-alg", type=click.Choice(["RS256", "ES256", "Ed25519", "EdDSA"]), default=None)
@click.option("--jwks-file", type=click.Path(dir_okay=False, exists=True), default=None, help="Replaces the keys.")
@click.option("--jwks-uri", default=None, help="URL of the client's JWK Set (private_key_jwt).")
@click.option("--backchannel-logout-uri", default=None, help="Back-Channel Logout endpoint of the client.")
@click.option("--first-party/--third-party", "first_party", default=None, help="Whether consent is asked.")
@click.option(
    "--clear",
    "cleared",
    multiple=True,
    type=click.Choice(
        ["post-logout-redirect-uris", "web-origins", "id-token-alg", "jwks", "jwks-uri", "backchannel-logout-uri"]
    ),
    help="Remove a value (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def clients_update(
    state: CliState,
    client_id: str,
    jwks_file: str | None,
    cleared: tuple[str, ...],
    as_json: bool,
    **options: Any,
) -> None:
    """Change fields of CLIENT_ID; what is not given stays. Validated like a new registration."""
    from idp.oauth.clients import describe_client, update_client

    changes: dict[str, Any] = {}
    renamed = {"id_token_alg": "id_token_signed_response_alg", "auth_method": "token_endpoint_auth_method"}
    for name in ("name", "id_token_alg", "jwks_uri", "backchannel_logout_uri", "first_party", "auth_method"):
        if options[name] is not None:
            changes[renamed.get(name, name)] = options[name]
    for name in ("redirect_uris", "post_logout_redirect_uris", "grant_types", "scopes", "web_origins"):
        if options[name]:
            changes[name] = list(options[name])
    if jwks_file:
        changes["jwks"] = _read_jwks_file(jwks_file)
    for name in cleared:
        field = {"id-token-alg": "id_token_signed_response_alg"}.get(name, name.replace("-", "_"))
        if field in changes:
            fail(f"--clear {name}: also given a new value")
        changes[field] = [] if field.endswith("s") else None
    if not changes:
        fail("nothing to change: give at least one option (see --help)")

    async def action(rt: Any) -> Any:
        return await update_client(rt.db, rt.events, client_id, changes)

    updated = _run_client_command(state, client_id, action)
    data = describe_client(updated.client)
    data["client_secret"] = updated.client_secret
    text = f"updated {client_id}"
    if updated.client_secret:
        text += f"\nclient_secret {updated.client_secret}\n(the secret is shown only now; store it safely)"
    emit(data, as_json, text)


def _set_client_disabled(state: CliState, client_id: str, disabled: bool, as_json: bool) -> None:
    from idp.oauth.clients import set_client_disabled

    async def action(rt: Any) -> bool:
        return await set_client_disabled(rt.db, rt.events, client_id, disabled)

    changed = _run_client_command(state, client_id, action)
    word = "disabled" if disabled else "enabled"
    emit({"client_id": client_id, "disabled": disabled, "changed": changed}, as_json,
         f"{client_id} {word}" + ("" if changed else " (already)"))  # fmt: skip


@clients.command("disable")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def clients_disable(state: CliState, client_id: str, as_json: bool) -> None:
    """CLIENT_ID can't authenticate, and its tokens are refused, until it is enabled again."""
    _set_client_disabled(state, client_id, True, as_json)


@clients.command("enable")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def clients_enable(state: CliState, client_id: str, as_json: bool) -> None:
    """Let a disabled CLIENT_ID authenticate again."""
    _set_client_disabled(state, client_id, False, as_json)


@clients.command("delete")
@click.argument("client_id")
@click.option("--yes", is_flag=True, help="Confirm: the client, its tokens and its users' consents are deleted.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def clients_delete(state: CliState, client_id: str, yes: bool, as_json: bool) -> None:
    """Delete CLIENT_ID: every grant is revoked first (access tokens included), then its codes,
    refresh tokens and consents go with it. Deleting it again is not an error."""
    from idp.oauth.clients import delete_client

    if not yes:
        fail("--yes: required, to confirm that the client and everything issued to it is deleted")

    async def action(rt: Any) -> bool:
        return await delete_client(rt.grants, rt.db, rt.events, client_id)

    deleted = _run_client_command(state, client_id, action)
    emit({"client_id": client_id, "deleted": deleted}, as_json,
         f"deleted {client_id}" if deleted else f"{client_id} was not registered")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# audit


@cli.group()
def audit() -> None:
    """Read the audit log."""


def _audit_filter(**given: str | None) -> Any:
    from idp.accounts.users import AccountError
    from idp.admin.audit import audit_filter

    try:
        return audit_filter(**given)
    except AccountError as exc:
        fail(f"--{exc.field}: {exc.message}")


def _audit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--user", "user_id", default=None, help="Only events about this user id."),
            click.option("--client", "client_id", default=None, help="Only events of this client id."),
            click.option("--event", default=None, help="Only this event name (e.g. login_failed)."),
            click.option("--outcome", default=None, help="success or failure."),
        ]
    ):
        command = option(command)
    return command


@audit.command("tail")
@_audit_options
@click.option("--lines", "count", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--follow", is_flag=True, help="Keep printing events as they are written (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.pass_obj
def audit_tail(state: CliState, count: int, follow: bool, as_json: bool, **given: str | None) -> None:
    """The latest events, oldest of them first; with --follow, then every new one."""
    from idp.admin.audit import follow as follow_events
    from idp.admin.audit import json_line, newest

    where = _audit_filter(**given)

    def show(row: dict[str, Any]) -> None:
        if as_json:
            click.echo(json_line(row), nl=False)
        else:
            where_from = row["ip"] or row["details"].get("via", "-")
            click.echo(
                f"{row['occurred_at']}  {row['event']:<24} {row['outcome']:<8} "
                f"user {row['subject_id'] or '-'}  client {row['client_id'] or '-'}  {where_from}"
            )

    async def action(rt: Any) -> None:
        rows = list(reversed(await newest(rt.db, where, limit=count)))
        for row in rows:
            show(row)
        if follow:
            async for row in follow_events(rt.db, where, after_id=rows[-1]["id"] if rows else None):
                show(row)

    try:
        run_with_runtime(state.settings(), action, ensure_keys=False)
    except KeyboardInterrupt:
        pass


@audit.command("export")
@_audit_options
@click.option("--since", default=None, help="From this ISO 8601 date or time (UTC unless it says).")
@click.option("--until", default=None, help="Before this ISO 8601 date or time.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.pass_obj
def audit_export(state: CliState, fmt: str, **given: str | None) -> None:
    """Every matching event, oldest first, to standard output: CSV (RFC 4180, a header line;
    cells a spreadsheet would run as formulas are quoted) or JSON lines. Streamed in batches."""
    from idp.admin.audit import csv_header, csv_line, json_line, oldest_first

    where = _audit_filter(**given)

    async def action(rt: Any) -> None:
        if fmt == "csv":
            click.echo(csv_header(), nl=False)
        async for row in oldest_first(rt.db, where):
            click.echo(csv_line(row) if fmt == "csv" else json_line(row), nl=False)

    run_with_runtime(state.settings(), action, ensure_keys=False)


# --------------------------------------------------------------------------------------------------
# keys


def _keys_text(rows: list[dict[str, Any]]) -> str:
    return (
        "\n".join(
            f"{row['kid']}  {row['alg']:<8} {row['status']:<8} created {row['created_at']}"
            + (f"  published until {row['publish_until']}" if row["publish_until"] else "")
            for row in rows
        )
        or "no keys"
    )


async def _all_keys(rt: Any) -> list[dict[str, Any]]:
    from idp.admin.keys import describe_keys

    return await describe_keys(rt.db)


@cli.group()
def keys() -> None:
    """Manage token signing keys."""


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def keys_list(state: CliState, as_json: bool) -> None:
    """List signing keys (active, and retired ones still published)."""
    rows = run_with_runtime(state.settings(), _all_keys)
    emit(rows, as_json, lambda: _keys_text(rows))


@keys.command("rotate")
@click.option(
    "--alg",
    "algorithms",
    multiple=True,
    type=click.Choice(["RS256", "ES256", "Ed25519"]),
    help="Rotate only these algorithms (default: all configured).",
)
@click.option(
    "--now",
    "immediately",
    is_flag=True,
    help="Sign with the new key at once (a compromised key), instead of after keys.publish_ahead.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def keys_rotate(state: CliState, algorithms: tuple[str, ...], immediately: bool, as_json: bool) -> None:
    """Add a new key, published at once and signing after keys.publish_ahead (or --now); the old
    one signs until then and stays published until its tokens expire."""
    settings = state.settings()
    unknown = [alg for alg in algorithms if alg not in settings.keys.algorithms]
    if unknown:
        fail(f"--alg: {', '.join(unknown)} is not in keys.algorithms")

    async def action(rt: Any) -> dict[str, Any]:
        created = await rt.keys.rotate(list(algorithms) or None, immediately=immediately)
        return {"created": created, "keys": await _all_keys(rt)}

    result = run_with_runtime(settings, action)
    emit(
        result,
        as_json,
        lambda: "new keys: " + ", ".join(result["created"]) + "\n" + _keys_text(result["keys"]),
    )


@keys.command("purge")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def keys_purge(state: CliState, as_json: bool) -> None:
    """Delete retired keys whose publication window has ended."""
    removed = run_with_runtime(state.settings(), lambda rt: rt.keys.purge_expired())
    emit({"removed": removed}, as_json, f"removed {removed} expired key(s)")


# --------------------------------------------------------------------------------------------------
# secrets / config


@cli.group("secrets")
def secrets_group() -> None:
    """Secrets for the configuration file."""


@secrets_group.command("generate")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def secrets_generate(as_json: bool) -> None:
    """Print fresh values for the [secrets] section."""
    values = generate_secrets()
    emit(values, as_json, "[secrets]\n" + "\n".join(f'{key} = "{value}"' for key, value in values.items()))


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the effective settings (secrets masked).")
@click.pass_obj
def config_check(state: CliState, as_json: bool) -> None:
    """Validate the configuration and show the effective values (secrets masked)."""
    settings = state.settings()
    emit(
        settings.redacted(),
        as_json,
        lambda: "configuration is valid\n" + json.dumps(settings.redacted(), indent=2),
    )


# The outbox commands (idp.outbox_cli: like the commands here, they load no database code until run).
from idp.outbox_cli import outbox_commands  # noqa: E402

cli.add_command(outbox_commands)


def main() -> None:
    # Undecodable bytes in argv arrive as lone surrogates (PEP 383), and a NUL can't be stored:
    # refuse them here, naming the argument, rather than fail inside a query.
    from idp.security.inputs import unusable_character

    for position, argument in enumerate(sys.argv[1:], start=1):
        if (problem := unusable_character(argument)) is not None:
            fail(f"argument {position} contains {problem}, which is not allowed")
    cli(prog_name="idp")


if __name__ == "__main__":
    main()
