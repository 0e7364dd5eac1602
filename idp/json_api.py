"""What the JSON APIs (/api/account/, /api/admin/) share: one error shape and its model for
/openapi.json, pydantic's verdict on a body or query turned into it, and ``json_request``, a JSON
body read strictly (idp.accounts.web.json_body) and validated by a model.

An invalid request is ``400 {"error": "invalid_request", "error_description", "field", "fields"}``:
``fields`` names each bad member with its problem, ``field`` is the first of them, and
``error_description`` starts with it (``"limit: Input should be less than or equal to 100"``).
Neither pydantic's internals nor the input are echoed back, only the (bounded) member names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from quart import Response, request
from quart_schema import RequestSchemaValidationError, document_request, document_response

from idp.accounts.profile.profile import field_label
from idp.accounts.web import InvalidField, json_body
from idp.error_responses import render_error
from idp.errors import InvalidRequest
from idp.openapi import optional_body

View = TypeVar("View", bound=Callable[..., Any])
Body = TypeVar("Body", bound=BaseModel)


class ErrorOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="A stable code: invalid_request, invalid_token, forbidden, not_found, ...")
    error_description: str
    field: str | None = Field(default=None, description="For invalid_request: the first bad member (or body).")
    fields: dict[str, str] | None = Field(default=None, description="For invalid_request: each bad member's problem.")


class InvalidFields(InvalidRequest):
    """400 invalid_request naming each bad member (``fields``), the first also as ``field``."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields) or {"body": "is not valid"}
        self.field = next(iter(self.fields))
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in self.fields.items()))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field, "fields": self.fields}


def problems(validation_error: Exception, *, refused: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each bad member of a pydantic ValidationError and what is wrong with it, in pydantic's
    order. ``refused`` explains members a model leaves out on purpose (read-only ones) better than
    "Extra inputs are not permitted"."""
    found: dict[str, str] = {}
    errors: Callable[[], list[Any]] = getattr(validation_error, "errors", list)
    for problem in errors():
        loc = [field_label(str(part)) for part in problem.get("loc", ())]
        where = ".".join(loc) or "body"
        message = str(problem.get("msg", "is not valid"))
        if problem.get("type") == "extra_forbidden" and refused and len(loc) == 1 and loc[0] in refused:
            message = refused[loc[0]]
        found.setdefault(where, message)
    return found or {"body": "is not valid"}


async def render_schema_error(error: RequestSchemaValidationError) -> Response:
    """The error handler for quart-schema's validate_request / validate_querystring."""
    return await render_error(InvalidFields(problems(error.validation_error)))


def document_errors(*statuses: int) -> Callable[[View], View]:
    """Document the error answers of an operation in /openapi.json (the shape above)."""

    def decorate(view: View) -> View:
        for status in statuses:
            view = document_response(ErrorOut, status)(view)
        return view

    return decorate


def json_request(model: type[Body], *, optional: bool = False) -> Callable[[View], View]:
    """The view receives its JSON body as ``data``, a ``model``: read strictly by json_body (UTF-8
    application/json of at most 16 KiB, no duplicate members, NaN or absurd nesting: 413/415/400),
    then validated by the model (400 naming each bad member). With ``optional``, no body at all
    counts as ``{}``. Run after authentication (a before_request hook), never before it."""

    def decorate(view: View) -> View:
        @wraps(view)
        async def validated(*args: Any, **kwargs: Any) -> Any:
            return await view(*args, data=await read_body(model, optional=optional), **kwargs)

        document_request(model)(validated)
        documented = document_errors(400, 413, 415)(validated)
        return optional_body(documented) if optional else documented  # type: ignore[return-value]

    return decorate


async def read_body(model: type[Body], *, optional: bool = False) -> Body:
    if optional and not (request.content_length or request.mimetype):
        raw: dict[str, Any] = {}
    else:
        try:
            raw = await json_body()
        except InvalidField as exc:
            raise InvalidFields({exc.field: exc.description.removeprefix(f"{exc.field}: ")}) from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidFields(problems(exc, refused=getattr(model, "read_only", None))) from None
