"""The curl examples of docs/ run against a real `idp serve`: each ```sh block of a guide, in
order, in one bash session with `set -euo pipefail` (so a variable one block sets serves the next,
and any failing command fails the test), with the issuer and the variables each guide tells its
reader to set (client ids and secrets, the user's credentials) in the environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import IDP, free_port, production_env, run_idp, running

# Its own server on the embedded defaults, whatever the suite's backend: CI runs it once (stage 1).
pytestmark = [pytest.mark.server, pytest.mark.embedded]

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def examples(guide: str) -> list[str]:
    return BLOCK.findall((DOCS / guide).read_text())


def run_guide(
    guide: str, env: dict[str, str], port: int, tmp_path: Path, variables: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Every example of ``guide`` in order, in one bash session, against a served idp; the reader's
    variables (the ones the guide says to set) in the environment."""
    script = "set -euo pipefail\n" + "\n".join(examples(guide))
    shell_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "IDP": env["IDP_ISSUER"], **variables}
    with running([IDP, "serve"], env, port):
        done = subprocess.run(
            ["bash", "-c", script], env=shell_env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, f"an example of {guide} failed:\n{done.stderr}\n{done.stdout}"
    return done


def create_client(env: dict[str, str], name: str, *args: str) -> dict[str, str]:
    return dict(json.loads(run_idp(env, "clients", "create", "--name", name, *args, "--json")))


def test_every_admin_api_example_runs(tmp_path: Path) -> None:
    blocks = examples("admin-api.md")
    assert len(blocks) >= 7, "the guide lost its examples"
    port = free_port()
    env = production_env(tmp_path, port)
    run_idp(env, "db", "upgrade")
    run_idp(env, "users", "create", "--email", "ada@example.com", "--password-stdin", stdin="velvet-harbor-quill-27\n")
    robot = json.loads(
        run_idp(
            env,
            "clients",
            "create",
            "--name",
            "Operator script",
            "--confidential",
            "--grant",
            "client_credentials",
            "--scope",
            "admin",
            "--json",
        )
    )
    variables = {"CLIENT_ID": robot["client_id"], "CLIENT_SECRET": robot["client_secret"]}
    done = run_guide("admin-api.md", env, port, tmp_path, variables)
    assert '"ada@example.com"' in done.stdout
    exported = (tmp_path / "audit.csv").read_text()
    assert exported.startswith("id,occurred_at,event,") and "account_disabled" in exported
    deleted = run_idp(env, "users", "list", "--json")
    assert "ada@example.com" not in deleted  # the last example deleted the account


def test_every_oauth_example_runs(tmp_path: Path) -> None:
    """docs/oauth.md: discovery, the code flow with PKCE through the real sign-in and consent
    pages, every grant, userinfo, introspection, revocation and RP-initiated logout."""
    blocks = examples("oauth.md")
    assert len(blocks) >= 15, "the guide lost its examples"
    port = free_port()
    env = production_env(tmp_path, port)
    run_idp(env, "db", "upgrade")
    password = "velvet-harbor-quill-27"
    user = ["users", "create", "--email", "ada@example.com", "--password-stdin", "--verified"]
    run_idp(env, *user, stdin=password + "\n")
    spa = create_client(
        env,
        "Docs SPA",
        "--public",
        "--redirect-uri",
        "http://127.0.0.1:9000/cb",
        "--post-logout-redirect-uri",
        "http://127.0.0.1:9000/bye",
    )
    web = create_client(
        env,
        "Docs Web",
        "--confidential",
        "--auth-method",
        "client_secret_basic",
        *("--grant", "authorization_code", "--grant", "refresh_token", "--grant", "client_credentials"),
        *("--scope", "openid", "--scope", "profile", "--scope", "email", "--scope", "offline_access"),
        *("--scope", "reports:read"),
        *("--redirect-uri", "https://app.example/cb", "--post-logout-redirect-uri", "https://app.example/bye"),
    )
    variables = {
        "SPA_CLIENT_ID": spa["client_id"],
        "WEB_CLIENT_ID": web["client_id"],
        "WEB_CLIENT_SECRET": web["client_secret"],
        "EMAIL": "ada@example.com",
        "PASSWORD": password,
    }
    out = run_guide("oauth.md", env, port, tmp_path, variables).stdout
    assert '"client_credentials"' in out  # discovery lists the third grant
    assert "http://127.0.0.1:9000/cb?code=" in out  # the code came from the redirect's Location
    reuse = json.loads((tmp_path / "reuse.json").read_text())
    assert reuse["error"] == "invalid_grant"  # the rotated refresh token was refused
    assert "\ninvalid_grant\n401\n" in out  # ... and the reuse revoked the grant's newer tokens
    assert '"scope": "reports:read"' in out  # client_credentials
    assert '{"active":false}' in out  # introspection after revocation
    assert "\n401\n" in out  # userinfo with the revoked grant's access token
    assert "303 https://app.example/bye?state=" in out  # RP-initiated logout redirected
    # signed out: the next authorization request goes to the sign-in page again
    assert out.rstrip().rsplit("\n", 1)[-1].startswith(f"{env['IDP_ISSUER']}/login?return_to=")


SOFT_AUTHENTICATOR = """\
import json, sys
sys.path.insert(0, {repo!r})
from tests.webauthn_soft import SoftAuthenticator
print(json.dumps(SoftAuthenticator().create(json.load(sys.stdin), origin={origin!r})))
"""


def test_every_account_api_example_runs(tmp_path: Path) -> None:
    """docs/account-api.md: a token through a first-party client, then every /api/account/ route
    (the address change confirmed from the outbox, a passkey from a software authenticator), the
    account's deletion last."""
    blocks = examples("account-api.md")
    assert len(blocks) >= 15, "the guide lost its examples"
    port = free_port()
    env = production_env(tmp_path, port)
    run_idp(env, "db", "upgrade")
    password = "velvet-harbor-quill-27"
    user = ["users", "create", "--email", "ada@example.com", "--password-stdin", "--verified"]
    run_idp(env, *user, stdin=password + "\n")
    app = create_client(env, "My account", "--public", "--first-party", "--redirect-uri", "http://127.0.0.1:9000/cb")
    authenticator = tmp_path / "webauthn-create"
    authenticator.write_text(
        f"#!{sys.executable}\n" + SOFT_AUTHENTICATOR.format(repo=str(DOCS.parent), origin=env["IDP_ISSUER"])
    )
    authenticator.chmod(0o755)
    variables = {
        "CLIENT_ID": app["client_id"],
        "EMAIL": "ada@example.com",
        "PASSWORD": password,
        "OUTBOX": str(tmp_path / "outbox"),
        "WEBAUTHN_CREATE": str(authenticator),
    }
    work = tmp_path / "work"
    work.mkdir()
    out = run_guide("account-api.md", env, port, work, variables).stdout
    exported = json.loads((work / "idp-account-export.json").read_text())
    assert exported["format"] == "idp-account-export/1"
    assert '{"email":"ada@example.net","email_verified":true,"pending_email":null}' in out  # confirmed
    assert '"passkeys":["Work laptop"]' in out and '"totp":true' in out
    assert '{"ended":1}' in out.replace(" ", "")  # end-others, after one session was ended by id
    assert '{"sessions_ended":1}' in out.replace(" ", "")  # the password change signed the other browser out
    assert out.rstrip().endswith("204\n401")  # the account was deleted, and its token with it
    assert "ada@example" not in run_idp(env, "users", "list", "--json")
