"""The OpenAPI 3.1 document of idp's JSON APIs (/openapi.json), generated from the code by
quart-schema, and the page that documents it (/api/docs), served by idp itself: no script or
style from a CDN (the CSP forbids it, and operators run offline).

Only the admin API is described so far (the account API's hand-written validation moves onto the
same typed models next); the OAuth and OpenID Connect endpoints are specified by their RFCs and
advertised by discovery; the HTML pages are for people.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from quart import Blueprint, Response, current_app, render_template
from quart_schema import HttpSecurityScheme, Info, OpenAPIProvider, QuartSchema, hide
from werkzeug.routing import Rule

from idp.http import IdPApp

DOCUMENTED_PREFIX = "/api/admin/"
pages = Blueprint("api_docs", __name__)


class ApiOnly(OpenAPIProvider):
    def generate_rules(self) -> Iterable[Rule]:
        return (rule for rule in super().generate_rules() if rule.rule.startswith(DOCUMENTED_PREFIX))


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
            description="The admin API: accounts and the audit log, for administrators and machine clients.",
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
