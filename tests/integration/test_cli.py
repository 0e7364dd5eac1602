"""The `idp` command line against a real (migrated, empty) database.

Commands run in-process through click's CliRunner with the test settings as IDP_* variables;
those tests are plain functions because the commands call ``asyncio.run``. Start-up failures
(bad configuration, unreachable database) run in a subprocess, as an operator would see them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner, Result
from sqlalchemy import func, pool, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from idp.cli import cli
from idp.config import load_settings
from idp.security.tokens import verify_secret
from idp.storage.models import Base, OAuthClient, SigningKey, User

PASSWORD = "correct-horse-battery-staple-7"
CONFIGURED_ALGS = {"RS256", "ES256", "Ed25519"}


# --------------------------------------------------------------------------------------------------
# helpers


def run(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    """Invoke `idp ARGS` expecting success; returns the result (stdout and stderr kept apart)."""
    result = CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)
    assert result.exit_code == 0, f"idp {' '.join(args)} exited {result.exit_code}: {result.output}"
    return result


def run_json(env: dict[str, str], *args: str, input: str | None = None) -> Any:
    return json.loads(run(env, *args, input=input).stdout)


def run_error(env: dict[str, str], *args: str, input: str | None = None) -> str:
    """Invoke `idp ARGS` expecting a reported error; returns its single stderr line."""
    result = CliRunner().invoke(cli, list(args), env=env, input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, f"exit {result.exit_code}: {result.output}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("idp: error: ")
    return lines[0]


def query(url: str, work: Callable[[AsyncSession], Any]) -> Any:
    """Run ``await work(session)`` against the test database, outside the CLI."""

    async def main() -> Any:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def row_counts(url: str) -> dict[str, int]:
    async def count(session: AsyncSession) -> dict[str, int]:
        return {
            table.name: (await session.execute(select(func.count()).select_from(table))).scalar_one()
            for table in Base.metadata.sorted_tables
        }

    return query(url, count)


def get_user(url: str, email: str) -> User | None:
    async def work(session: AsyncSession) -> User | None:
        return (await session.execute(select(User).where(User.email_normalized == email.lower()))).scalar_one_or_none()

    return query(url, work)


def get_client(url: str, client_id: str) -> OAuthClient | None:
    async def work(session: AsyncSession) -> OAuthClient | None:
        return await session.get(OAuthClient, client_id)

    return query(url, work)


def all_clients(url: str) -> list[tuple[str, str | None]]:
    async def work(session: AsyncSession) -> list[tuple[str, str | None]]:
        rows = await session.execute(select(OAuthClient.id, OAuthClient.secret_digest).order_by(OAuthClient.id))
        return [(row[0], row[1]) for row in rows]

    return query(url, work)


def all_keys(url: str) -> dict[str, tuple[str, str]]:
    async def work(session: AsyncSession) -> dict[str, tuple[str, str]]:
        rows = await session.execute(select(SigningKey.kid, SigningKey.alg, SigningKey.status))
        return {row[0]: (row[1], row[2]) for row in rows}

    return query(url, work)


def create_confidential(env: dict[str, str], client_id: str = "rp-web") -> dict[str, Any]:
    return run_json(
        env,
        "clients",
        "create",
        "--name",
        "RP web",
        "--confidential",
        "--client-id",
        client_id,
        "--redirect-uri",
        "https://rp.example/cb",
        "--json",
    )


# --------------------------------------------------------------------------------------------------
# users


def test_users_create_stores_an_argon2id_hash(cli_env: dict[str, str], database_url: str) -> None:
    data = run_json(
        cli_env,
        "users",
        "create",
        "--email",
        "Alice@Example.COM",
        "--password-stdin",
        "--verified",
        "--admin",
        "--name",
        "Alice",
        "--json",
        input=PASSWORD + "\n",
    )
    assert set(data) == {"id", "email", "email_verified", "is_admin"}
    assert data["email_verified"] is True
    assert data["is_admin"] is True
    assert data["email"].lower() == "alice@example.com"

    user = get_user(database_url, "alice@example.com")
    assert user is not None
    assert user.id == data["id"]
    assert user.email_verified is True
    assert user.is_admin is True
    assert user.name == "Alice"
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert PasswordHasher().verify(user.password_hash, PASSWORD)
    assert user.password_changed_at is not None


def test_users_create_never_echoes_the_password(cli_env: dict[str, str], database_url: str) -> None:
    for args in (["--json"], []):
        email = f"bob{len(args)}@example.com"
        result = run(cli_env, "users", "create", "--email", email, "--password-stdin", *args, input=PASSWORD + "\n")
        assert PASSWORD not in result.output
        assert email in result.output
        assert get_user(database_url, email) is not None


def test_users_create_uses_the_password_exactly_as_typed(cli_env: dict[str, str], database_url: str) -> None:
    password = "  spaces count too, really  "
    run(cli_env, "users", "create", "--email", "carol@example.com", "--password-stdin", input=password + "\r\n")
    user = get_user(database_url, "carol@example.com")
    assert user is not None and user.password_hash is not None
    assert PasswordHasher().verify(user.password_hash, password)


def test_users_create_without_password_has_no_hash(cli_env: dict[str, str], database_url: str) -> None:
    data = run_json(cli_env, "users", "create", "--email", "passkey@example.com", "--json")
    assert data["email_verified"] is False
    assert data["is_admin"] is False
    user = get_user(database_url, "passkey@example.com")
    assert user is not None
    assert user.password_hash is None


@pytest.mark.parametrize(
    ("email", "stdin", "expected"),
    [
        ("short@example.com", "too-short\n", "--password-stdin: Use at least 15 characters"),
        ("short@example.com", "\n", "--password-stdin:"),
        ("not-an-email", PASSWORD + "\n", "--email:"),
        ("two@@example.com", PASSWORD + "\n", "--email:"),
    ],
)
def test_users_create_rejects_bad_input(
    cli_env: dict[str, str], database_url: str, email: str, stdin: str, expected: str
) -> None:
    before = row_counts(database_url)
    line = run_error(cli_env, "users", "create", "--email", email, "--password-stdin", "--json", input=stdin)
    assert line.startswith(f"idp: error: {expected}"), line
    assert stdin.strip() == "" or stdin.strip() not in line
    assert row_counts(database_url) == before


def test_users_create_rejects_a_duplicate_email(cli_env: dict[str, str], database_url: str) -> None:
    run(cli_env, "users", "create", "--email", "dana@example.com", "--password-stdin", input=PASSWORD + "\n")
    before = row_counts(database_url)
    line = run_error(
        cli_env, "users", "create", "--email", "DANA@example.com", "--password-stdin", input=PASSWORD + "x\n"
    )
    assert line.startswith("idp: error: --email:")
    assert "already exists" in line
    assert row_counts(database_url) == before


# --------------------------------------------------------------------------------------------------
# clients


def test_clients_create_confidential_shows_the_secret_once(cli_env: dict[str, str], database_url: str) -> None:
    data = create_confidential(cli_env)
    secret = data["client_secret"]
    assert isinstance(secret, str) and len(secret) >= 43  # 256 bits, base64url
    assert data["client_id"] == "rp-web"
    assert data["client_type"] == "confidential"
    assert data["token_endpoint_auth_method"] == "client_secret_basic"
    assert data["redirect_uris"] == ["https://rp.example/cb"]
    assert "secret_digest" not in data

    row = get_client(database_url, "rp-web")
    assert row is not None
    assert row.secret_digest is not None
    assert row.secret_digest.startswith("sha256$")
    assert secret not in row.secret_digest
    assert verify_secret(secret, row.secret_digest)
    assert not verify_secret(secret + "x", row.secret_digest)

    listing = run(cli_env, "clients", "list", "--json").stdout
    assert secret not in listing
    assert row.secret_digest not in listing
    assert row.secret_digest.removeprefix("sha256$") not in listing
    assert "secret_digest" not in listing
    assert [item["client_id"] for item in json.loads(listing)] == ["rp-web"]

    text_listing = run(cli_env, "clients", "list").stdout
    assert "rp-web" in text_listing
    assert secret not in text_listing


def test_clients_create_text_output_shows_the_secret(cli_env: dict[str, str], database_url: str) -> None:
    result = run(
        cli_env, "clients", "create", "--name", "Text", "--confidential", "--redirect-uri", "https://rp.example/cb"
    )
    (client_id, digest) = all_clients(database_url)[0]
    assert client_id in result.stdout
    secret = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("client_secret"))
    assert verify_secret(secret, digest)


def test_clients_create_public_has_no_secret(cli_env: dict[str, str], database_url: str) -> None:
    data = run_json(
        cli_env,
        "clients",
        "create",
        "--name",
        "SPA",
        "--public",
        "--client-id",
        "spa",
        "--redirect-uri",
        "http://127.0.0.1:5173/cb",
        "--web-origin",
        "http://127.0.0.1:5173",
        "--json",
    )
    assert data["client_secret"] is None
    assert data["client_type"] == "public"
    assert data["token_endpoint_auth_method"] == "none"
    assert data["web_origins"] == ["http://127.0.0.1:5173"]
    row = get_client(database_url, "spa")
    assert row is not None
    assert row.secret_digest is None
    assert row.require_pkce is True


def test_clients_create_private_key_jwt_with_a_jwks_file(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})
    )
    data = run_json(
        cli_env,
        "clients",
        "create",
        "--name",
        "Service",
        "--confidential",
        "--auth-method",
        "private_key_jwt",
        "--jwks-file",
        str(jwks),
        "--grant",
        "client_credentials",
        "--json",
    )
    assert data["client_secret"] is None
    assert data["token_endpoint_auth_method"] == "private_key_jwt"
    row = get_client(database_url, data["client_id"])
    assert row is not None
    assert row.secret_digest is None
    assert row.jwks is not None and len(row.jwks["keys"]) == 1


BAD_CLIENTS = [
    pytest.param(
        ["--confidential", "--redirect-uri", "http://evil.example/cb"], "--redirect-uri:", id="http-not-loopback"
    ),
    pytest.param(["--confidential", "--redirect-uri", "https://rp.example/cb#frag"], "--redirect-uri:", id="fragment"),
    pytest.param(["--confidential", "--redirect-uri", "/cb"], "--redirect-uri:", id="relative"),
    pytest.param(["--confidential"], "--redirect-uri:", id="no-redirect-uri"),
    pytest.param(
        ["--public", "--grant", "client_credentials", "--redirect-uri", "https://rp.example/cb"],
        "--grant:",
        id="public-client-credentials",
    ),
    pytest.param(["--redirect-uri", "https://rp.example/cb"], "--public/--confidential:", id="no-type"),
    pytest.param(
        ["--confidential", "--auth-method", "private_key_jwt", "--redirect-uri", "https://rp.example/cb"],
        "--jwks-file:",
        id="private-key-jwt-without-keys",
    ),
    pytest.param(
        ["--public", "--auth-method", "client_secret_basic", "--redirect-uri", "https://rp.example/cb"],
        "--auth-method:",
        id="public-with-secret",
    ),
    pytest.param(
        ["--confidential", "--client-id", "a b", "--redirect-uri", "https://rp.example/cb"],
        "--client-id:",
        id="bad-client-id",
    ),
    # L5: a "^...$" pattern used with .match() also accepts a trailing newline.
    pytest.param(
        ["--confidential", "--client-id", "abc\n", "--redirect-uri", "https://rp.example/cb"],
        "--client-id:",
        id="client-id-trailing-newline",
    ),
    pytest.param(
        ["--confidential", "--scope", "api.read\n", "--redirect-uri", "https://rp.example/cb"],
        "--scope:",
        id="scope-trailing-newline",
    ),
    pytest.param(
        ["--public", "--native", "--redirect-uri", "com.example.app\n:/cb"],
        "--redirect-uri:",
        id="private-scheme-trailing-newline",
    ),
    pytest.param(
        ["--public", "--redirect-uri", "https://rp.example/cb", "--web-origin", "https://rp.example/path"],
        "--web-origin:",
        id="web-origin-with-path",
    ),
]


@pytest.mark.parametrize(("args", "expected"), BAD_CLIENTS)
def test_clients_create_rejects_bad_input(
    cli_env: dict[str, str], database_url: str, args: list[str], expected: str
) -> None:
    create_confidential(cli_env, "existing")
    before_clients, before_counts = all_clients(database_url), row_counts(database_url)
    line = run_error(cli_env, "clients", "create", "--name", "Bad", *args, "--json")
    assert line.startswith(f"idp: error: {expected}"), line
    assert all_clients(database_url) == before_clients
    assert row_counts(database_url) == before_counts


def test_clients_create_rejects_a_bad_redirect_uri_before_touching_the_database(
    cli_env: dict[str, str], database_url: str
) -> None:
    before = row_counts(database_url)
    line = run_error(
        cli_env, "clients", "create", "--name", "Bad", "--confidential", "--redirect-uri", "http://evil.example/cb"
    )
    assert line.startswith("idp: error: --redirect-uri:")
    assert "https" in line
    assert row_counts(database_url) == before


def test_clients_create_rejects_a_duplicate_client_id(cli_env: dict[str, str], database_url: str) -> None:
    first = create_confidential(cli_env, "taken")
    before = all_clients(database_url)
    line = run_error(
        cli_env,
        "clients",
        "create",
        "--name",
        "Other",
        "--public",
        "--client-id",
        "taken",
        "--redirect-uri",
        "https://other.example/cb",
    )
    assert line.startswith("idp: error: --client-id:")
    assert "taken" in line
    assert all_clients(database_url) == before
    # The original registration, and its secret, are untouched.
    row = get_client(database_url, "taken")
    assert row is not None and row.name == "RP web"
    assert verify_secret(first["client_secret"], row.secret_digest)


def test_clients_rotate_secret(cli_env: dict[str, str], database_url: str) -> None:
    old = create_confidential(cli_env)["client_secret"]
    data = run_json(cli_env, "clients", "rotate-secret", "rp-web", "--json")
    assert data["client_id"] == "rp-web"
    new = data["client_secret"]
    assert new and new != old
    row = get_client(database_url, "rp-web")
    assert row is not None
    assert verify_secret(new, row.secret_digest)
    assert not verify_secret(old, row.secret_digest)
    assert new not in run(cli_env, "clients", "list", "--json").stdout


def test_clients_rotate_secret_refuses_public_and_unknown_clients(cli_env: dict[str, str], database_url: str) -> None:
    run(
        cli_env,
        "clients",
        "create",
        "--name",
        "SPA",
        "--public",
        "--client-id",
        "spa",
        "--redirect-uri",
        "https://spa.example/cb",
    )
    before = row_counts(database_url)
    line = run_error(cli_env, "clients", "rotate-secret", "spa")
    assert "spa" in line and "none" in line
    line = run_error(cli_env, "clients", "rotate-secret", "no-such-client")
    assert "no-such-client" in line
    assert row_counts(database_url) == before
    row = get_client(database_url, "spa")
    assert row is not None and row.secret_digest is None


# --------------------------------------------------------------------------------------------------
# keys


def test_keys_list_creates_one_active_key_per_algorithm(cli_env: dict[str, str], database_url: str) -> None:
    rows = run_json(cli_env, "keys", "list", "--json")
    assert len(rows) == 3
    assert {row["alg"] for row in rows} == CONFIGURED_ALGS
    assert {row["status"] for row in rows} == {"active"}
    assert all(row["publish_until"] is None and row["retired_at"] is None for row in rows)
    # Listing again does not create more.
    assert run_json(cli_env, "keys", "list", "--json") == rows
    assert len(all_keys(database_url)) == 3


def test_keys_rotate_all(cli_env: dict[str, str], database_url: str) -> None:
    old = {row["kid"] for row in run_json(cli_env, "keys", "list", "--json")}
    result = run_json(cli_env, "keys", "rotate", "--json")
    created = set(result["created"])
    assert len(created) == 3
    assert not created & old
    by_kid = {row["kid"]: row for row in result["keys"]}
    assert set(by_kid) == old | created
    # Published now, signing after keys.publish_ahead: until then the old keys sign on.
    assert {by_kid[kid]["status"] for kid in created} == {"next"}
    assert {by_kid[kid]["alg"] for kid in created} == CONFIGURED_ALGS
    for kid in old:
        assert by_kid[kid]["status"] == "active"
        assert by_kid[kid]["retired_at"] is not None and by_kid[kid]["retired_at"] > by_kid[kid]["created_at"]
        assert by_kid[kid]["publish_until"] is not None
        assert by_kid[kid]["publish_until"] > by_kid[kid]["retired_at"]  # published until its tokens expire
    assert run_json(cli_env, "keys", "list", "--json") == result["keys"]


def test_keys_rotate_one_algorithm(cli_env: dict[str, str], database_url: str) -> None:
    before = {row["kid"]: row for row in run_json(cli_env, "keys", "list", "--json")}
    result = run_json(cli_env, "keys", "rotate", "--alg", "ES256", "--now", "--json")  # hands over at once
    assert len(result["created"]) == 1
    after = {row["kid"]: row for row in result["keys"]}
    new = after[result["created"][0]]
    assert new["alg"] == "ES256" and new["status"] == "active"
    for kid, row in before.items():
        expected = "retiring" if row["alg"] == "ES256" else "active"
        assert after[kid]["status"] == expected, (row["alg"], after[kid])
    assert sum(row["status"] == "active" for row in after.values()) == 3


def test_keys_rotate_rejects_an_unconfigured_algorithm(cli_env: dict[str, str], database_url: str) -> None:
    run(cli_env, "keys", "list")
    before = all_keys(database_url)
    env = {**cli_env, "IDP_KEYS__ALGORITHMS": '["RS256", "ES256"]'}
    line = run_error(env, "keys", "rotate", "--alg", "Ed25519", "--json")
    assert line.startswith("idp: error: --alg:")
    assert "Ed25519" in line
    assert all_keys(database_url) == before


def test_keys_rotate_text_output(cli_env: dict[str, str], database_url: str) -> None:
    result = run(cli_env, "keys", "rotate", "--alg", "RS256")
    assert "new keys:" in result.stdout
    assert "RS256" in result.stdout


# --------------------------------------------------------------------------------------------------
# seed


def test_seed_demo_is_idempotent(cli_env: dict[str, str], database_url: str) -> None:
    first = run_json(cli_env, "seed", "demo", "--json")
    assert first["login"]["email"] == "demo@example.com"
    assert first["login"]["created"] is True
    assert first["spa_client"] == {**first["spa_client"], "client_id": "demo-spa", "created": True}
    assert first["web_client"]["client_id"] == "demo-web"
    assert first["web_client"]["created"] is True
    secret = first["web_client"]["client_secret"]
    assert secret

    user = get_user(database_url, "demo@example.com")
    assert user is not None and user.email_verified and user.is_admin  # the demo shows /admin too
    assert PasswordHasher().verify(user.password_hash, first["login"]["password"])
    spa, web = get_client(database_url, "demo-spa"), get_client(database_url, "demo-web")
    assert spa is not None and spa.client_type == "public" and spa.token_endpoint_auth_method == "none"
    assert spa.secret_digest is None
    assert web is not None and web.client_type == "confidential"
    assert verify_secret(secret, web.secret_digest)

    counts = row_counts(database_url)
    clients_before = all_clients(database_url)
    second = run_json(cli_env, "seed", "demo", "--json")
    assert second["login"]["created"] is False
    assert second["spa_client"]["created"] is False
    assert second["web_client"]["created"] is False
    assert second["web_client"]["client_secret"] is None
    assert second["login"]["user_id"] == first["login"]["user_id"]
    assert row_counts(database_url) == counts
    assert all_clients(database_url) == clients_before  # the secret was not replaced


# --------------------------------------------------------------------------------------------------
# secrets / config


def test_secrets_generate(tmp_path: Path) -> None:
    first = run_json({}, "secrets", "generate", "--json")
    second = run_json({}, "secrets", "generate", "--json")
    assert {"cookie_secret", "key_encryption_key"} <= set(first)
    assert set(second) == set(first)
    assert all(first[name] != second[name] for name in first)
    assert len(first["cookie_secret"]) >= 32
    kek = first["key_encryption_key"]
    assert len(base64.urlsafe_b64decode(kek + "=" * (-len(kek) % 4))) == 32
    assert set(kek) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    settings = load_settings(environ={}, overrides={"secrets": first, "data_dir": str(tmp_path)})
    assert settings.secrets.key_encryption_key is not None
    assert settings.secrets.key_encryption_key.get_secret_value() == kek

    text = run({}, "secrets", "generate").stdout
    assert text.startswith("[secrets]")


def test_config_check_masks_secrets(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "IDP_DATABASE_URL": "postgresql+asyncpg://idp:hunter2@db.internal:5432/idp"}
    secret_values = [value for name, value in env.items() if name.startswith("IDP_SECRETS__")]
    assert env["IDP_SECRETS__COOKIE_SECRET"] in secret_values
    assert env["IDP_SECRETS__KEY_ENCRYPTION_KEY"] in secret_values
    for args in (["--json"], []):
        output = run(env, "config", "check", *args).output
        for value in secret_values:
            assert value not in output
        assert "hunter2" not in output
    data = run_json(env, "config", "check", "--json")
    assert data["database_url"] == "postgresql+asyncpg://idp:***@db.internal:5432/idp"
    assert data["secrets"]["cookie_secret"] != env["IDP_SECRETS__COOKIE_SECRET"]
    assert data["issuer"] == cli_env["IDP_ISSUER"]
    assert data["password_hash"]["time_cost"] == 1


# --------------------------------------------------------------------------------------------------
# start-up failures, as an operator sees them (a real process)


def run_idp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {name: value for name, value in os.environ.items() if not name.startswith("IDP_")}
    return subprocess.run(
        [sys.executable, "-m", "idp.cli", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(process: subprocess.CompletedProcess[str]) -> str:
    assert process.returncode == 1, (process.returncode, process.stdout, process.stderr)
    assert "Traceback" not in process.stderr
    assert process.stdout == ""
    lines = process.stderr.splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("idp: error: ")
    return lines[0]


def test_unknown_key_in_config_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "idp.toml"
    config.write_text('[server]\nport = 8080\nbogus = "x"\n')
    line = assert_one_line_error(run_idp(cli_env, "--config", str(config), "config", "check"))
    assert "server.bogus" in line
    assert str(config) in line


def test_bad_value_in_environment(cli_env: dict[str, str]) -> None:
    line = assert_one_line_error(run_idp({**cli_env, "IDP_SERVER__PORT": "abc"}, "config", "check"))
    assert "server.port" in line
    assert "IDP_SERVER__PORT" in line


def test_several_workers_without_redis_are_refused(cli_env: dict[str, str]) -> None:
    """H1 (RFC 7009 §2.2, RFC 7523 §3, ASVS 7.4.1): `idp config check` and `idp serve` refuse
    several workers without Redis, in one line naming both settings, before anything starts."""
    cli_env = {**cli_env, "IDP_REDIS_URL": ""}
    line = assert_one_line_error(run_idp({**cli_env, "IDP_SERVER__WORKERS": "4"}, "config", "check"))
    assert "server.workers: 4 worker processes need redis_url" in line
    for args in (["serve", "--port", "0", "--workers", "2"], ["serve", "--workers=3"]):
        process = run_idp(cli_env, *args)
        line = assert_one_line_error(process)
        assert line.startswith("idp: error: --workers:"), line
        assert "need redis_url" in line
        assert "serving" not in process.stderr


def test_undecodable_arguments_are_refused_by_position(cli_env: dict[str, str]) -> None:
    """A byte that isn't UTF-8 in argv arrives as a lone surrogate (PEP 383), which no database
    driver can encode: refused before any query, naming the argument (ASVS 2.2.1)."""
    process = run_idp(cli_env, "users", "create", "--email", "ada\udcff@example.com")
    line = assert_one_line_error(process)
    assert line == "idp: error: argument 4 contains a lone surrogate (not Unicode text), which is not allowed"


def test_unreachable_database(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "IDP_DATABASE_URL": "postgresql+asyncpg://u:hunter2@127.0.0.1:1/x"}
    line = assert_one_line_error(run_idp(env, "keys", "list"))
    assert "database_url" in line
    assert "hunter2" not in line


def test_missing_secrets_outside_dev_mode(cli_env: dict[str, str]) -> None:
    env = {name: value for name, value in cli_env.items() if not name.startswith("IDP_SECRETS__")}
    line = assert_one_line_error(run_idp(env, "keys", "list"))
    assert "secrets.cookie_secret" in line


def test_missing_config_file(cli_env: dict[str, str]) -> None:
    line = assert_one_line_error(run_idp(cli_env, "--config", "/nonexistent.toml", "config", "check"))
    assert "--config" in line
    assert "/nonexistent.toml" in line


def test_pairwise_clients_need_one_sector_host(cli_env) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "clients",
            "create",
            "--name",
            "P",
            "--confidential",
            "--subject-type",
            "pairwise",
            "--redirect-uri",
            "https://a.example/cb",
            "--redirect-uri",
            "https://b.example/cb",
        ],
        env=cli_env,
    )
    assert result.exit_code == 1
    assert "--subject-type: pairwise clients must register redirect URIs on a single host" in result.output


def test_pairwise_clients_need_the_pairwise_secret(cli_env) -> None:
    env = {key: value for key, value in cli_env.items() if key != "IDP_SECRETS__PAIRWISE_SECRET"}
    result = CliRunner().invoke(
        cli,
        [
            "clients",
            "create",
            "--name",
            "P",
            "--confidential",
            "--subject-type",
            "pairwise",
            "--redirect-uri",
            "https://a.example/cb",
        ],
        env={**env, "IDP_SECRETS__PAIRWISE_SECRET": ""},
    )
    assert result.exit_code == 1
    assert "--subject-type: pairwise subjects need secrets.pairwise_secret" in result.output


def test_users_create_applies_the_password_policy(cli_env: dict[str, str], database_url: str) -> None:
    """The CLI refuses what registration refuses: a long but common or personal password."""
    before = row_counts(database_url)
    line = run_error(
        cli_env,
        "users",
        "create",
        "--email",
        "carol.jones@example.com",
        "--password-stdin",
        input="carol.jones-is-my-password-2024\n",
    )
    assert line.startswith("idp: error: --password-stdin: ")
    assert "email" in line.lower() or "name" in line.lower()
    assert row_counts(database_url) == before
