"""The request-head limits as the application applies them, whatever ASGI server runs it.

`idp serve` refuses over-limit heads in its HTTP protocol (tests/e2e/test_request_limits_real_server.py);
the app applies the same rule (idp.security.request_limits), so `uvicorn --factory idp.asgi:create`
or any other server can't hand it a head of any size either (M7; ASVS 15.2.2, CWE-770).
"""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.datastructures import Headers

from idp.security.request_limits import MAX_HEADER_BYTES, MAX_HEADER_FIELDS, MAX_TARGET_BYTES, head_refusal


def test_the_rule() -> None:
    assert head_refusal(100, [("Host", "x")]) is None
    assert head_refusal(MAX_TARGET_BYTES + 1, []).status == 414  # type: ignore[union-attr]
    many = [(f"X-{i}", "v") for i in range(MAX_HEADER_FIELDS + 1)]
    assert head_refusal(10, many).status == 431  # type: ignore[union-attr]
    assert head_refusal(10, many[:-1]) is None
    large = [("X-Big", "v" * (MAX_HEADER_BYTES - 8))]  # name + value + ": " + CRLF = limit + 1
    assert head_refusal(10, large).status == 431  # type: ignore[union-attr]
    assert head_refusal(10, [("X-Big", "v" * (MAX_HEADER_BYTES - 9))]) is None


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/token", "json"), ("/healthz", "json"), ("/api/account/profile", "json"), ("/login", "html")],
)
async def test_too_large_or_too_many_header_fields_are_431(client: Any, path: str, kind: str) -> None:
    for headers in (
        Headers([("X-Junk", "h" * (MAX_HEADER_BYTES + 1))]),
        Headers([(f"X-F{i}", "v") for i in range(MAX_HEADER_FIELDS + 1)]),
    ):
        response = await client.get(path, headers=headers)
        assert response.status_code == 431
        if kind == "json":
            body = await response.get_json()
            assert body["error"] == "request_header_fields_too_large"
            assert "header" in body["error_description"]
        else:
            assert response.mimetype == "text/html"
            assert "header fields" in await response.get_data(as_text=True)


async def test_a_too_long_target_is_414(client: Any) -> None:
    response = await client.get("/authorize", query_string={"state": "s" * MAX_TARGET_BYTES})
    assert response.status_code == 414
    assert "longer than" in await response.get_data(as_text=True)
    response = await client.post("/token", query_string={"x": "s" * MAX_TARGET_BYTES})
    assert (await response.get_json())["error"] == "uri_too_long"


async def test_heads_within_the_limits_pass(client: Any) -> None:
    headers = Headers([(f"X-F{i}", "v" * 100) for i in range(MAX_HEADER_FIELDS - 5)])
    response = await client.get("/healthz", headers=headers, query_string={"x": "q" * (MAX_TARGET_BYTES // 2)})
    assert response.status_code == 200
