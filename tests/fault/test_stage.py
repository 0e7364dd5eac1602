"""The stage itself: it runs where CI says it does, with the tools its tests start."""

from __future__ import annotations

import shutil

from tests.fault.conftest import RUN_FAULTS


def test_the_fault_stage_has_its_processes_at_hand() -> None:
    assert RUN_FAULTS
    for program in ("redis-server", "nginx"):
        assert shutil.which(program) or shutil.which(f"/usr/sbin/{program}"), f"{program} is not installed"
