"""A bounded schemathesis run against a real `idp serve`: every operation of the account and admin
APIs that /openapi.json describes, with generated bodies, queries and path parameters, a valid
token for each API (a first-party user's access token for /api/account/, a client_credentials
token with the admin scope for /api/admin/). No answer may be a 5xx, and every answer must be one
the document describes: a documented status, its content type, a body matching its schema.

Deterministic (derandomized, no example database) and bounded (a few examples per operation).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.server import IDP, free_port, production_env, run_idp, running

# Its own server on the embedded defaults, whatever the suite's backend: CI runs it once (stage 1).
pytestmark = [pytest.mark.server, pytest.mark.embedded]

EMAIL = "fuzz@example.com"
PASSWORD = "velvet-harbor-quill-27"
REDIRECT_URI = "http://127.0.0.1:9000/cb"
MAX_EXAMPLES = 12  # per operation and generation mode: about 1000 requests, 15 s
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Live:
    base: str
    user_token: str
    admin_token: str


def create_client(env: dict[str, str], name: str, *args: str) -> dict[str, str]:
    return dict(json.loads(run_idp(env, "clients", "create", "--name", name, *args, "--json")))


def user_token(base: str, client_id: str) -> str:
    """The code flow with PKCE through the real sign-in form (a first-party client: no consent)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile email",
        "state": "fuzz",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    with httpx.Client(base_url=base, follow_redirects=False) as browser:
        response = browser.get(f"/authorize?{urlencode(query)}")
        for _ in range(6):
            location = response.headers.get("Location", "")
            if location.startswith(REDIRECT_URI):
                break
            if location.startswith("/login"):
                return_to = parse_qs(urlsplit(location).query)["return_to"][0]
                page = browser.get(location)
                match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
                assert match, page.text
                form = {"email": EMAIL, "password": PASSWORD, "csrf_token": match.group(1), "return_to": return_to}
                response = browser.post("/login", data=form)
                continue
            assert response.status_code in (302, 303), response.text
            response = browser.get(location)
        code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_id": client_id,
        }
        token = browser.post("/token", data=form)
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


def admin_token(base: str, robot: dict[str, str]) -> str:
    answer = httpx.post(
        f"{base}/token",
        data={"grant_type": "client_credentials", "scope": "admin"},
        auth=(robot["client_id"], robot["client_secret"]),
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = production_env(data_dir, port)
    run_idp(env, "db", "upgrade")
    run_idp(env, "users", "create", "--email", EMAIL, "--password-stdin", "--verified", stdin=PASSWORD + "\n")
    app = create_client(env, "Fuzzed account app", "--public", "--first-party", "--redirect-uri", REDIRECT_URI)
    robot = create_client(env, "Fuzzer", "--confidential", "--grant", "client_credentials", "--scope", "admin")
    with running([IDP, "serve"], env, port):
        base = env["IDP_ISSUER"]
        yield Live(base, user_token(base, app["client_id"]), admin_token(base, robot))


def fuzz(operation: Any, mode: GenerationMode, live: Live, statuses: set[int]) -> None:
    """MAX_EXAMPLES generated requests to one operation (their statuses into ``statuses``); the
    first answer a check refuses raises."""
    token = live.admin_token if operation.path.startswith("/api/admin/") else live.user_token

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(base_url=live.base, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        statuses.add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    run()


def test_the_apis_answer_as_documented(live: Live) -> None:
    # From the document alone (not its URL, whose port changes each run): the same cases every run.
    loaded = schemathesis.openapi.from_dict(httpx.get(f"{live.base}/openapi.json").json())
    # Left out on purpose, as they would make the rest of the run meaningless: deleting the account
    # whose token every other account call uses, and rotating the signing keys (it needs a recent
    # sign-in, which a client_credentials token never has, and would change the keys mid-run).
    schema = loaded.exclude(method="DELETE", path="/api/account").exclude(method="POST", path="/api/admin/keys/rotate")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 40, "the document lost operations"
    failures: list[str] = []
    seen: dict[str, set[int]] = {}
    for operation in operations:
        seen[operation.label] = statuses = set[int]()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, live, statuses)
            except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all failures reported
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
    # The tokens worked: every operation answered something other than 401 at least once.
    assert [label for label, statuses in seen.items() if statuses <= {401}] == []
