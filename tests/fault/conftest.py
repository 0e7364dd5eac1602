"""The fault, race and scale-out stage (issue 15): tests that start and stop real processes
(idp nodes, a private Redis, an SMTP server, a relying party's logout endpoint, nginx) on their
own loopback ports, so CI's shared PostgreSQL and Redis are never stopped.

They run only when ``IDP_TEST_FAULTS=1`` (the third stage of ``.ci/run``): each one takes seconds
to tens of seconds, which the fast suite must not pay. Everything here is marked ``fault``.
"""

from __future__ import annotations

import os

import pytest

RUN_FAULTS = os.environ.get("IDP_TEST_FAULTS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    skip = pytest.mark.skip(reason="the fault stage runs with IDP_TEST_FAULTS=1 (.ci/run stage 3)")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.fault)
            if not RUN_FAULTS:
                item.add_marker(skip)
