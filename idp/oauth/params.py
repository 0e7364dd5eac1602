"""Request parameters of every protocol endpoint: authorization, token, introspection, revocation,
userinfo, logout.

RFC 6749 §3.1 and §3.2: "Request and response parameters MUST NOT be included more than once."
A repeated parameter is refused outright rather than resolved by taking the first or the last
value: two parts of the server (or the server and a proxy) could otherwise read different values
from one request. No Quart here: any mapping with werkzeug's ``getlist`` works.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from idp.oauth import errors

__all__ = ("all_values", "reject_repeated", "single_header", "single_value", "single_values")

# Names echoed in the error are the registered kind; anything else is named generically.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def all_values(params: Mapping[str, Any], name: str) -> list[Any]:
    """Every value of a parameter, repeated or not (for decisions that can't wait for the refusal)."""
    getlist = getattr(params, "getlist", None)
    if getlist is not None:
        return list(getlist(name))
    return [params[name]] if name in params else []


def _repeated(name: str) -> errors.InvalidRequest:
    shown = name if _PLAIN_NAME.fullmatch(name) else "a parameter"
    return errors.InvalidRequest(f"{shown} is repeated")


def reject_repeated(params: Mapping[str, Any]) -> None:
    """Raise InvalidRequest when any parameter occurs more than once (with or without a value)."""
    for name in params:
        if len(all_values(params, name)) > 1:
            raise _repeated(name)


def single_value(params: Mapping[str, Any], name: str) -> str | None:
    """The parameter's one value, or None when it is absent or empty (RFC 6749 §3.2: a parameter
    sent without a value is treated as omitted); InvalidRequest when it is repeated."""
    values = all_values(params, name)
    if len(values) > 1:
        raise _repeated(name)
    value = values[0] if values else None
    return str(value) if value else None


def single_values(params: Mapping[str, Any]) -> dict[str, str]:
    """Every parameter's one value, once none is repeated: a plain dict, so the framework's
    multi-valued mapping stops at the route (and nobody downstream can take "the first")."""
    reject_repeated(params)
    return {name: str(value) for name in params if (value := single_value(params, name)) is not None}


def single_header(values: Sequence[str], name: str = "Authorization") -> str | None:
    """A header that carries credentials, like a parameter does: two of them are refused, not
    resolved by taking the first (it is not a list-based field, RFC 9110 §5.3)."""
    if len(values) > 1:
        raise errors.InvalidRequest(f"the {name} header is repeated")
    return values[0] if values else None
