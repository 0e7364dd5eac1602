"""Text every input must be: characters PostgreSQL can store and that are Unicode text at all.

Two kinds of character get past HTTP parsing and blow up further down: NUL (``%00`` in a query,
a form, a path, ``\\u0000`` in JSON), which PostgreSQL ``text`` can't hold, and lone UTF-16
surrogates (``\\ud800`` in JSON), which no UTF-8 encoder (asyncpg, aiosqlite, argon2) accepts.
Both are refused as bad input, with the field named, before any query or hash sees them
(ASVS 2.2.1, 16.5.3): the application's request hook checks query strings, path segments and
forms; the JSON body reader and the CLI check what they parse.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

NUL = "a NUL character"
SURROGATE = "a lone surrogate (not Unicode text)"


def unusable_character(value: str) -> str | None:
    """What is wrong with ``value`` (``NUL`` or ``SURROGATE``), or None when it is usable text."""
    if "\x00" in value:
        return NUL
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE
    return None


def first_unusable(pairs: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The first ``(name, problem)`` among name/value pairs whose name or value is unusable."""
    for name, value in pairs:
        problem = unusable_character(name) or unusable_character(value)
        if problem is not None:
            return (name if unusable_character(name) is None else "a parameter name"), problem
    return None


def unusable_in_json(value: Any, path: str = "") -> tuple[str, str] | None:
    """The first ``(member path, problem)`` in parsed JSON, e.g. ``("credential.id", NUL)``;
    a bad member name is reported at the object holding it (``path`` or ``"body"``)."""
    if isinstance(value, str):
        problem = unusable_character(value)
        return (path or "body", problem) if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = unusable_character(key)
            if problem is not None:
                return (path or "body", f"{problem} in a member name")
            found = unusable_in_json(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = unusable_in_json(item, f"{path}[{index}]" if path else f"[{index}]")
            if found is not None:
                return found
    return None
