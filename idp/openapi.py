"""The OpenAPI 3.1 document of idp's JSON APIs (/openapi.json), generated from the code by
quart-schema, and the page that documents it (/api/docs), served by idp itself: no script or
style from a CDN (the CSP forbids it, and operators run offline).

Described: the account API (/api/account/, typed models in idp.accounts.api_models) and the admin
API (/api/admin/, idp.admin.models), each operation with its summary (the view's docstring), its
request and answer bodies and its error answers (idp.api_errors). The OAuth and OpenID Connect
endpoints are specified by their RFCs and advertised by discovery; the HTML pages are for people.

What quart-schema can't say from a model is added here from marks on the views: a 204 with no
body (``no_content``), a body or an answer that is not a JSON model (``raw_request``, the picture
upload; ``raw_response``, a CSV export) and a JSON body that may be left out (``optional_body``);
every other body is required.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from quart import Blueprint, Response, current_app, render_template
from quart_schema import HttpSecurityScheme, Info, OpenAPIProvider, QuartSchema, hide
from werkzeug.routing import Rule

from idp.http import IdPApp

DOCUMENTED_PREFIXES = ("/api/account/", "/api/admin/")
pages = Blueprint("api_docs", __name__)

View = TypeVar("View", bound=Callable[..., Any])
_NO_CONTENT = "_idp_openapi_no_content"
_RAW_REQUEST = "_idp_openapi_raw_request"
_OPTIONAL_BODY = "_idp_openapi_optional_body"
_RAW_RESPONSES = "_idp_openapi_raw_responses"


def no_content(view: View) -> View:
    """The operation succeeds with 204 No Content."""
    setattr(view, _NO_CONTENT, True)
    return view


def raw_request(content: dict[str, Any]) -> Callable[[View], View]:
    """The request body is not a JSON model: ``content`` is its OpenAPI content map."""

    def decorate(view: View) -> View:
        setattr(view, _RAW_REQUEST, content)
        return view

    return decorate


def raw_response(status: int, content: dict[str, Any], description: str = "") -> Callable[[View], View]:
    """An answer that is not a JSON model (a CSV export): ``content`` is its OpenAPI content map."""

    def decorate(view: View) -> View:
        answer = {"description": description, "content": content}
        setattr(view, _RAW_RESPONSES, {**getattr(view, _RAW_RESPONSES, {}), status: answer})
        return view

    return decorate


def optional_body(view: View) -> View:
    """The JSON body may be left out."""
    setattr(view, _OPTIONAL_BODY, True)
    return view


class ApiOnly(OpenAPIProvider):
    def generate_rules(self) -> Iterable[Rule]:
        return (rule for rule in super().generate_rules() if f"{rule.rule}/".startswith(DOCUMENTED_PREFIXES))

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        view = self._app.view_functions[rule.endpoint]
        for item in paths.values():
            for method, operation in item.items():
                # quart-schema shares one operation object between a rule's methods: copy first.
                operation = item[method] = {**operation, "responses": dict(operation["responses"])}
                operation["responses"].update(getattr(view, _RAW_RESPONSES, {}))
                if getattr(view, _NO_CONTENT, False):
                    operation["responses"][204] = {"description": "Done; no content."}
                if (content := getattr(view, _RAW_REQUEST, None)) is not None:
                    operation["requestBody"] = {"content": content}
                if "requestBody" in operation:
                    operation["requestBody"] = {
                        **operation["requestBody"],
                        "required": not getattr(view, _OPTIONAL_BODY, False),
                    }
        return paths, components


def install(app: IdPApp) -> QuartSchema:
    schema = QuartSchema(
        app,
        openapi_path="/openapi.json",
        # quart-schema's own documentation pages load their scripts from CDNs: /api/docs instead.
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
        info=Info(
            title="idp APIs",
            version="1",
            description=(
                "The account API (/api/account/): the signed-in user's own profile, address, picture, "
                "activity, export, second factors, passkeys and sessions, for first-party applications "
                "with the user's access token. The admin API (/api/admin/): accounts, clients, signing "
                "keys and the audit log, for administrators and machine clients with the admin scope. "
                "Both answer errors as {error, error_description}, invalid requests naming each bad "
                "member in fields (the first also in field)."
            ),
        ),
        security_schemes={"bearer": HttpSecurityScheme(scheme="bearer", bearer_format="JWT")},
        security=[{"bearer": []}],
        openapi_provider_class=ApiOnly,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # quart-schema installs its own provider
    return schema


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Each operation of the document, in path order, as the docs page lists it."""
    found = []
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            found.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": (operation.get("summary") or "").strip(),
                    "description": (operation.get("description") or "").strip(),
                    "parameters": operation.get("parameters", []),
                    "request": (operation.get("requestBody") or {}).get("content", {}),
                    "responses": operation.get("responses", {}),
                    "anchor": f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
                }
            )
    return found


@pages.get("/api/docs")
@hide
async def api_docs() -> Response:
    """The APIs' reference, rendered on the server from the same document as /openapi.json."""
    schema: QuartSchema = current_app.extensions["QUART_SCHEMA"]
    document = schema.openapi_provider.schema()
    html = await render_template(
        "api_docs.html",
        info=document.get("info", {}),
        operations=_operations(document),
        schemas=document.get("components", {}).get("schemas", {}),
    )
    return Response(html, content_type="text/html; charset=utf-8")
