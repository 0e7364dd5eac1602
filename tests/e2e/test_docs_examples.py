"""The curl examples of docs/ run against a real `idp serve`: each ```sh block of a guide, in
order, in one bash session with `set -euo pipefail` (so a variable one block sets serves the next,
and any failing command fails the test), with the issuer and a client's credentials set."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import IDP, free_port, production_env, run_idp, running

pytestmark = pytest.mark.server

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def examples(guide: str) -> list[str]:
    return BLOCK.findall((DOCS / guide).read_text())


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
    script = "set -euo pipefail\n" + "\n".join(blocks)
    shell_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "IDP": env["IDP_ISSUER"],
        "CLIENT_ID": robot["client_id"],
        "CLIENT_SECRET": robot["client_secret"],
    }
    with running([IDP, "serve"], env, port):
        done = subprocess.run(
            ["bash", "-c", script], env=shell_env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, f"an example failed:\n{done.stderr}\n{done.stdout}"
    assert '"ada@example.com"' in done.stdout
    exported = (tmp_path / "audit.csv").read_text()
    assert exported.startswith("id,occurred_at,event,") and "account_disabled" in exported
    deleted = run_idp(env, "users", "list", "--json")
    assert "ada@example.com" not in deleted  # the last example deleted the account
