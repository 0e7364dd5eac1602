"""Backups are tested by restoring them (issue 15, docs/deployment.md "Backups and restore"):
pg_dump a database with a user, a client and signing keys in it, pg_restore it into a fresh
database, start idp on the copy, and sign in and get tokens signed by the key that was backed up.

Both databases are this test's own (created and dropped here); CI's server is never touched
otherwise. Needs PostgreSQL (IDP_TEST_DATABASE_URL) and its client tools.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.e2e.server import IDP, free_port, run_idp, running
from tests.e2e.test_two_instances import APP_ORIGIN, EMAIL, PASSWORD, REDIRECT, Cluster, authorization_code, redeem
from tests.e2e.test_two_instances import sign_in as sign_in_at

TEST_DATABASE_URL = os.environ.get("IDP_TEST_DATABASE_URL", "")


def libpq_url(url: str, database: str) -> str:
    """The same server as a libpq URL (pg_dump, psql), for another database."""
    return make_url(url).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


def psql(admin: str, statement: str) -> None:
    done = subprocess.run(["psql", admin, "-v", "ON_ERROR_STOP=1", "-qc", statement], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def two_databases() -> Iterator[tuple[str, str]]:
    """Names of two empty databases made for this test (the original and the restored copy)."""
    if not TEST_DATABASE_URL:
        pytest.skip("restoring a PostgreSQL backup needs IDP_TEST_DATABASE_URL")
    for tool in ("pg_dump", "pg_restore", "psql"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    admin = libpq_url(TEST_DATABASE_URL, make_url(TEST_DATABASE_URL).database or "postgres")
    run = uuid.uuid4().hex[:10]
    names = (f"idp_backup_{run}_original", f"idp_backup_{run}_restored")
    created: list[str] = []
    try:
        for name in names:
            psql(admin, f'CREATE DATABASE "{name}"')
            created.append(name)
        yield names
    finally:
        for name in created:  # only the two made above
            psql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_restored_backup_signs_users_in(
    two_databases: tuple[str, str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    original, restored = two_databases
    port = free_port()
    env = {
        **cli_env,
        "IDP_ISSUER": f"http://127.0.0.1:{port}",
        "IDP_SERVER__PORT": str(port),
        "IDP_DATABASE_URL": make_url(TEST_DATABASE_URL).set(database=original).render_as_string(hide_password=False),
    }
    # -- the original: schema, a user, a client, signing keys ---------------------------------------
    run_idp(env, "db", "upgrade")
    run_idp(env, "users", "create", "--email", EMAIL, "--password-stdin", "--verified", stdin=PASSWORD + "\n")
    created = json.loads(
        run_idp(
            env, "clients", "create", "--name", "Restored RP", "--confidential", "--first-party",
            "--redirect-uri", REDIRECT, "--web-origin", APP_ORIGIN, "--grant", "authorization_code", "--json",
        )
    )  # fmt: skip
    run_idp(env, "keys", "rotate")  # the keys exist (made at first use) and one more
    kids_before = {key["kid"] for key in json.loads(run_idp(env, "keys", "list", "--json"))}
    assert kids_before

    # -- backup (the documented command), restore into a fresh database ------------------------------
    dump = tmp_path / "idp.dump"
    backup = ["pg_dump", "--format=custom", "--no-owner", "--file", str(dump), libpq_url(TEST_DATABASE_URL, original)]
    done = subprocess.run(backup, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    restore = ["pg_restore", "--no-owner", "--exit-on-error", "--dbname", libpq_url(TEST_DATABASE_URL, restored)]
    done = subprocess.run([*restore, str(dump)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    # -- idp on the copy: same secrets (the key-encryption key opens the restored signing keys) ------
    env["IDP_DATABASE_URL"] = make_url(TEST_DATABASE_URL).set(database=restored).render_as_string(hide_password=False)
    run_idp(env, "db", "upgrade")  # at head already: nothing to do, and it says so by succeeding
    base = env["IDP_ISSUER"]
    cluster = Cluster(base, base, created["client_id"], created["client_secret"])
    with running([IDP, "serve"], env, port) as server, httpx.Client(timeout=10) as browser, httpx.Client() as rp:
        published = {key["kid"] for key in httpx.get(f"{base}/jwks").json()["keys"]}
        assert published and published <= kids_before  # the backed-up keys, no new ones
        assert sign_in_at(browser, base).status_code == 303
        assert browser.get(f"{base}/account").status_code == 200
        code, verifier = authorization_code(browser, cluster, base)
        tokens = redeem(rp, cluster, base, code, verifier)
        assert tokens.status_code == 200, tokens.text
        header = tokens.json()["id_token"].split(".")[0]
        kid = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
        assert kid in kids_before  # signed by a key from the backup, not a new one
    assert "Traceback" not in server.output(), server.output()
