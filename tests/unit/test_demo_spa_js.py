"""The demo SPA's JavaScript unit tests (clients/demo_spa/tests/, node's built-in runner), run as
part of the suite so the README's one test command covers them. Without node the test skips,
unless IDP_TEST_REQUIRE_NODE=1 (CI) says a missing node is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SPA = Path(__file__).resolve().parents[2] / "clients" / "demo_spa"


def test_the_spa_javascript_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        message = "node is not installed: the demo SPA's JavaScript tests need it (node --test)"
        if os.environ.get("IDP_TEST_REQUIRE_NODE") == "1":
            pytest.fail(message + " (IDP_TEST_REQUIRE_NODE=1)")
        pytest.skip(message)
    done = subprocess.run(
        [node, "--test", str(SPA / "tests")], capture_output=True, text=True, timeout=120, cwd=SPA, check=False
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout
