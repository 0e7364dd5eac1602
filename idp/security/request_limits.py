"""Limits on the request head (target URL and header fields), one rule for every layer.

Without them a client can make a worker read, keep and parse a 50 MB header or thousands of
fields before any route runs (ASVS 15.2.2, CWE-770). The server's HTTP protocol
(``idp.server``) refuses such a request while it is still arriving; the application checks the
same rule again, so it also holds under any other ASGI server and in-process.

The sizes leave room for every legitimate request idp serves: an authorization request with a
long ``state``, ``id_token_hint`` and ``redirect_uri`` is a few kilobytes, browsers send a few
dozen headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# RFC 9112 §3 recommends supporting request lines of at least 8,000 octets.
MAX_TARGET_BYTES = 16 * 1024
# All header fields together (names, values and their framing, not the request line).
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADER_FIELDS = 100
# Each field costs its name and value plus ": " and CRLF on the wire.
FIELD_OVERHEAD = 4


@dataclass(frozen=True)
class HeadRefusal:
    """Why a request head is refused: 414 (RFC 9110 §15.5.15) or 431 (RFC 6585 §5)."""

    status: int
    message: str


TARGET_TOO_LONG = HeadRefusal(414, f"The request target is longer than {MAX_TARGET_BYTES} bytes.")
HEADERS_TOO_LARGE = HeadRefusal(431, f"The request header fields are larger than {MAX_HEADER_BYTES} bytes in all.")
TOO_MANY_HEADERS = HeadRefusal(431, f"The request has more than {MAX_HEADER_FIELDS} header fields.")


def field_size(name: bytes | str, value: bytes | str) -> int:
    return len(name) + len(value) + FIELD_OVERHEAD


def head_refusal(target_length: int, fields: Iterable[tuple[bytes | str, bytes | str]]) -> HeadRefusal | None:
    """The refusal for a request head, or None when it is within every limit."""
    if target_length > MAX_TARGET_BYTES:
        return TARGET_TOO_LONG
    count = size = 0
    for name, value in fields:
        count += 1
        size += field_size(name, value)
    if count > MAX_HEADER_FIELDS:
        return TOO_MANY_HEADERS
    if size > MAX_HEADER_BYTES:
        return HEADERS_TOO_LARGE
    return None
