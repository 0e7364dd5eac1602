"""The admin pages about the system: clients (their registrations), signing keys and the audit
log. Each action calls the same domain function as the admin API and the CLI (idp.oauth.clients,
the key manager, idp.admin.audit).

A client's form takes every registration field the CLI knows; lists of URIs are one per line,
scopes separated by spaces. A new client's secret (or a rotated one) is shown once, on the page
that answers the POST, and never again.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from quart import Response, render_template, request, url_for

from idp.accounts.users import AccountError
from idp.accounts.web import page
from idp.admin import audit as admin_audit
from idp.admin.keys import describe_keys
from idp.admin.web import Confirmation, admin_page, admin_pages, confirm_then
from idp.errors import NotFound
from idp.http import runtime
from idp.oauth.clients import (
    UPDATABLE_FIELDS,
    ClientSpec,
    ClientValidationError,
    create_client,
    delete_client,
    describe_client,
    rotate_client_secret,
    set_client_disabled,
    update_client,
)
from idp.storage.models import OAuthClient
from idp.storage.repositories import ClientRepository
from idp.web import csrf_token, require_csrf, see_other

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
LIST_FIELDS = ("redirect_uris", "post_logout_redirect_uris", "web_origins")
MAX_FIELD = 20_000
AUDIT_PAGE = 50


# -- clients ---------------------------------------------------------------------------------------


async def _client(client_id: str) -> OAuthClient:
    client = None
    if len(client_id) <= 64:
        async with runtime().db.session() as session:
            client = await ClientRepository(session).get(client_id)
    if client is None:
        raise NotFound("There is no such client.")
    return client


@admin_pages.get("/clients")
async def clients_page() -> Response:
    wanted = (request.args.get("q") or "")[:200].strip()
    async with runtime().db.session() as session:
        registered = await ClientRepository(session).list()
    needle = wanted.casefold()
    clients = [
        describe_client(client)
        for client in registered
        if not needle or needle in client.id.casefold() or needle in client.name.casefold()
    ]
    return await admin_page("admin/clients.html", clients=clients, q=wanted, section="clients")


@admin_pages.get("/clients/<client_id>")
async def client_page(client_id: str) -> Response:
    client = await _client(client_id)
    notice = {
        "updated": "The registration was saved.",
        "disabled": "The client is disabled: it can't authenticate and its tokens are refused.",
        "enabled": "The client is enabled again.",
        "unchanged": "Nothing changed.",
    }.get(request.args.get("notice", ""))
    return await admin_page(
        "admin/client.html", client=describe_client(client), jwks=client.jwks, notice=notice, section="clients"
    )


class FormProblem(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _fields_from(form: Any, *, new: bool) -> dict[str, Any]:
    """A registration from the form's text: every field the form has, typed for ClientSpec."""
    for name, value in form.items():
        if len(value) > MAX_FIELD:
            raise FormProblem(name, f"must be at most {MAX_FIELD} characters")
    fields: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "application_type": form.get("application_type", "web"),
        "token_endpoint_auth_method": form.get("token_endpoint_auth_method") or None,
        "grant_types": [grant for grant in GRANT_TYPES if form.get(f"grant_{grant}")],
        "scopes": form.get("scopes", "").split(),
        "id_token_signed_response_alg": form.get("id_token_signed_response_alg") or None,
        "first_party": form.get("first_party") == "yes",
        "jwks_uri": form.get("jwks_uri", "").strip() or None,
        "backchannel_logout_uri": form.get("backchannel_logout_uri", "").strip() or None,
        **{name: _lines(form.get(name, "")) for name in LIST_FIELDS},
    }
    jwks_text = form.get("jwks", "").strip()
    try:
        fields["jwks"] = json.loads(jwks_text) if jwks_text else None
    except json.JSONDecodeError as exc:
        raise FormProblem("jwks", f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise FormProblem("jwks", "is nested too deeply") from None
    if fields["jwks"] is not None and not isinstance(fields["jwks"], dict):
        raise FormProblem("jwks", "must be a JSON object with a keys member")
    if new:
        fields["client_type"] = form.get("client_type", "")
        fields["subject_type"] = form.get("subject_type", "public")
        fields["client_id"] = form.get("client_id", "").strip() or None
        if fields["client_type"] not in ("public", "confidential"):
            raise FormProblem("client_type", "must be public or confidential")
    return fields


def _form_values(client: dict[str, Any] | None, jwks: Any = None) -> dict[str, Any]:
    if client is None:
        return {"client_type": "confidential", "application_type": "web", "subject_type": "public", "scopes": ""}
    values = dict(client)
    values["scopes"] = " ".join(client["scopes"])
    values["jwks"] = json.dumps(jwks, indent=2) if jwks else ""
    return values


async def _client_form(
    *, values: dict[str, Any], new: bool, error: FormProblem | None = None, status: int = 200
) -> Response:
    html = await render_template(
        "admin/client_form.html",
        values=values,
        new=new,
        error=error,
        grant_types=GRANT_TYPES,
        auth_methods=AUTH_METHODS,
        algorithms=runtime().settings.keys.algorithms,
        csrf_token=csrf_token(),
        section="clients",
    )
    return page(html, status)


def _echo(form: Any) -> dict[str, Any]:
    """What was submitted, to show back in the form after a refusal."""
    values: dict[str, Any] = {name: form.get(name, "")[:MAX_FIELD] for name in form}
    values["grant_types"] = [grant for grant in GRANT_TYPES if form.get(f"grant_{grant}")]
    values["first_party"] = form.get("first_party") == "yes"
    for name in LIST_FIELDS:
        values[name] = _lines(values.get(name, ""))
    return values


@admin_pages.route("/clients/new", methods=["GET", "POST"])
async def client_new() -> Response:
    if request.method == "GET":
        return await _client_form(values=_form_values(None), new=True)
    await require_csrf()
    rt = runtime()
    form = await request.form
    try:
        spec = ClientSpec(**_fields_from(form, new=True))
        created = await create_client(rt.db, rt.events, spec, pairwise_available=rt.subjects.pairwise_available)
    except FormProblem as exc:
        return await _client_form(values=_echo(form), new=True, error=exc, status=400)
    except ClientValidationError as exc:
        return await _client_form(values=_echo(form), new=True, error=FormProblem(exc.field, exc.message), status=400)
    return await _secret_page(describe_client(created.client), created.client_secret, created=True)


async def _secret_page(client: dict[str, Any], secret: str | None, *, created: bool) -> Response:
    html = await render_template(
        "admin/client_secret.html", client=client, secret=secret, created=created, section="clients"
    )
    return page(html, 201 if created else 200)


@admin_pages.route("/clients/<client_id>/edit", methods=["GET", "POST"])
async def client_edit(client_id: str) -> Response:
    client = await _client(client_id)
    if request.method == "GET":
        return await _client_form(values=_form_values(describe_client(client), client.jwks), new=False)
    await require_csrf()
    rt = runtime()
    form = await request.form
    echoed = {**_echo(form), "client_id": client.id, "client_type": client.client_type}
    echoed["subject_type"] = client.subject_type
    try:
        changes = {name: value for name, value in _fields_from(form, new=False).items() if name in UPDATABLE_FIELDS}
        updated = await update_client(rt.db, rt.events, client.id, changes)
    except FormProblem as exc:
        return await _client_form(values=echoed, new=False, error=exc, status=400)
    except ClientValidationError as exc:
        return await _client_form(values=echoed, new=False, error=FormProblem(exc.field, exc.message), status=400)
    if updated.client_secret is not None:  # moved to a secret method: the new secret, once
        return await _secret_page(describe_client(updated.client), updated.client_secret, created=False)
    return see_other(url_for("admin.client_page", client_id=client.id, notice="updated"))


@admin_pages.route("/clients/<client_id>/rotate-secret", methods=["GET", "POST"])
async def client_rotate_secret(client_id: str) -> Response:
    client = await _client(client_id)

    async def rotate() -> Response:
        rt = runtime()
        secret = await rotate_client_secret(rt.db, rt.events, client.id)
        return await _secret_page(describe_client(client), secret, created=False)

    return await confirm_then(
        Confirmation(
            title="Rotate this client's secret?",
            text=f"{client.name}: the current secret stops working at once; the new one is shown once.",
            button="Rotate the secret",
            back=url_for("admin.client_page", client_id=client.id),
            danger=True,
        ),
        rotate,
    )


def _toggle_view(disabled: bool) -> Any:
    verb = "Disable" if disabled else "Enable"
    explanation = (
        "it can't authenticate, and its tokens are refused, until it is enabled again."
        if disabled
        else "it can authenticate and get tokens again."
    )

    async def view(client_id: str) -> Response:
        client = await _client(client_id)

        async def toggle() -> Response:
            rt = runtime()
            changed = await set_client_disabled(rt.db, rt.events, client.id, disabled)
            notice = ("disabled" if disabled else "enabled") if changed else "unchanged"
            return see_other(url_for("admin.client_page", client_id=client.id, notice=notice))

        confirmation = Confirmation(
            title=f"{verb} this client?",
            text=f"{client.name}: {explanation}",
            button=verb,
            back=url_for("admin.client_page", client_id=client.id),
            danger=disabled,
        )
        return await confirm_then(confirmation, toggle)

    view.__name__ = "client_disable" if disabled else "client_enable"
    return view


for _disabled in (True, False):
    admin_pages.add_url_rule(
        f"/clients/<client_id>/{'disable' if _disabled else 'enable'}",
        view_func=_toggle_view(_disabled),
        methods=["GET", "POST"],
    )


@admin_pages.route("/clients/<client_id>/delete", methods=["GET", "POST"])
async def client_delete(client_id: str) -> Response:
    client = await _client(client_id)

    async def delete() -> Response:
        rt = runtime()
        await delete_client(rt.grants, rt.db, rt.events, client.id)
        return see_other(url_for("admin.clients_page", deleted="1"))

    return await confirm_then(
        Confirmation(
            title="Delete this client?",
            text=f"{client.name}: every token it holds is revoked, and its registration, codes, refresh "
            "tokens and consents are deleted. Its users stay.",
            button="Delete the client",
            back=url_for("admin.client_page", client_id=client.id),
            needs_fresh=True,
            danger=True,
        ),
        delete,
    )


# -- signing keys ----------------------------------------------------------------------------------


@admin_pages.get("/keys")
async def keys_page() -> Response:
    notice = {
        "rotated": "New keys are active; the previous ones stay published until their tokens expire.",
        "purged": "Expired keys were deleted.",
        "none-purged": "No key had expired.",
    }.get(request.args.get("notice", ""))
    return await admin_page("admin/keys.html", keys=await describe_keys(runtime().db), notice=notice, section="keys")


@admin_pages.route("/keys/rotate", methods=["GET", "POST"])
async def keys_rotate() -> Response:
    rt = runtime()

    async def rotate() -> Response:
        await rt.keys.rotate()
        return see_other(url_for("admin.keys_page", notice="rotated"))

    return await confirm_then(
        Confirmation(
            title="Rotate the signing keys?",
            text=f"A new key per algorithm ({', '.join(rt.settings.keys.algorithms)}) is published now and "
            f"signs in {rt.settings.keys.publish_ahead // 60} minutes, once relying parties have fetched it; "
            "the current ones sign until then and stay published until every token they signed has expired. "
            "For a compromised key, use idp keys rotate --now.",
            button="Rotate the keys",
            back=url_for("admin.keys_page"),
            needs_fresh=True,
            danger=True,
        ),
        rotate,
    )


@admin_pages.route("/keys/purge", methods=["GET", "POST"])
async def keys_purge() -> Response:
    async def purge() -> Response:
        removed = await runtime().keys.purge_expired()
        return see_other(url_for("admin.keys_page", notice="purged" if removed else "none-purged"))

    return await confirm_then(
        Confirmation(
            title="Delete expired keys?",
            text="Retired keys whose publication window has ended are deleted; nothing they signed is still valid.",
            button="Delete expired keys",
            back=url_for("admin.keys_page"),
        ),
        purge,
    )


# -- audit log -------------------------------------------------------------------------------------

AUDIT_FILTERS = ("user", "client", "event", "outcome", "since", "until")


def _audit_args() -> dict[str, str]:
    return {name: request.args.get(name, "").strip()[:200] for name in AUDIT_FILTERS}


def _audit_where(args: dict[str, str]) -> Any:
    return admin_audit.audit_filter(
        user_id=args["user"] or None,
        client_id=args["client"] or None,
        event=args["event"] or None,
        outcome=args["outcome"] or None,
        since=args["since"] or None,
        until=args["until"] or None,
    )


@admin_pages.get("/audit")
async def audit_page() -> Response:
    args = _audit_args()
    before_text = request.args.get("before", "")
    error, rows, next_page = None, [], None
    try:
        if before_text and not (before_text.isascii() and before_text.isdigit() and len(before_text) <= 19):
            raise AccountError("before", "must be the id of an event (use the link as given)")
        where = _audit_where(args)
        rows = await admin_audit.newest(
            runtime().db, where, limit=AUDIT_PAGE + 1, before_id=int(before_text) if before_text else None
        )
    except AccountError as exc:
        error = f"{exc.field}: {exc.message}"
    if len(rows) > AUDIT_PAGE:
        rows = rows[:AUDIT_PAGE]
        next_page = f"{url_for('admin.audit_page')}?{urlencode({**args, 'before': rows[-1]['id']})}"
    export = f"{url_for('admin.audit_export')}?{urlencode({k: v for k, v in args.items() if v})}"
    response = await admin_page(
        "admin/audit.html",
        rows=rows,
        filters=args,
        outcomes=admin_audit.OUTCOMES,
        next_page=next_page,
        export=export,
        error=error,
        section="audit",
    )
    if error:
        response.status_code = 400
    return response


@admin_pages.get("/audit/export.csv")
async def audit_export() -> Response:
    """Every matching event oldest first, as CSV (RFC 4180), streamed in batches."""
    try:
        where = _audit_where(_audit_args())
    except AccountError as exc:
        return Response(f"{exc.field}: {exc.message}\n", status=400, content_type="text/plain; charset=utf-8")
    response = Response(admin_audit.export_lines(runtime().db, where, csv_format=True), mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="audit.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response
