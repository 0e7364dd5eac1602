"""Connection URLs in messages and logs: their passwords masked."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

# ``scheme://user:password@host``: the greedy password part runs to the last "@" of the authority.
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)[^/?#]*@")
# redis-py also accepts ``?password=...`` in the query string.
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def redact_url(url: str) -> str:
    """Hide the password of a connection URL (``user:password@`` -> ``user:***@``) for messages/logs.

    Plain pattern substitution rather than parse-and-rebuild, so the rest of the URL is shown
    exactly as configured and a malformed URL cannot make redaction itself fail.
    """
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", url))


def url_secrets(url: str) -> tuple[str, ...]:
    """Every spelling of the URL's password(s), to scrub from error reasons we pass on."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() == "password"]
    except ValueError:
        return ()
    spellings = {s for p in found for s in (p, unquote(p))}
    return tuple(sorted((s for s in spellings if s), key=len, reverse=True))
