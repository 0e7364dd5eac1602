"""The admin API (``/api/admin/…``): the operations of the admin pages and the CLI as JSON, for an
administrator's Bearer token with the ``admin`` scope (idp.admin.access). Bodies and query strings
are typed models (idp.admin.models) that quart-schema validates and documents in /openapi.json.

Errors are JSON: ``{"error", "error_description"}``, with ``fields`` naming each bad field of an
invalid request. Deletes are idempotent (204 whether or not the account was there).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, g, request
from quart_schema import (
    RequestSchemaValidationError,
    validate_querystring,
    validate_response,
)

from idp.accounts import account_status
from idp.accounts.users import AccountError
from idp.admin import audit as admin_audit
from idp.admin import users as admin_users
from idp.admin.access import Administrator, authenticate_admin, require_fresh
from idp.admin.keys import describe_keys
from idp.admin.models import (
    ActionResult,
    AuditExportQuery,
    AuditPage,
    AuditQuery,
    ClientChanged,
    ClientIn,
    ClientList,
    ClientOut,
    ClientPatch,
    ClientQuery,
    EndSessions,
    FactorsReset,
    KeyList,
    KeysPurged,
    KeysRotated,
    RotateKeys,
    SecretOut,
    SessionsEnded,
    UserDetail,
    UserPage,
    UserQuery,
)
from idp.errors import NotFound
from idp.events import set_actor
from idp.http import runtime
from idp.json_api import InvalidFields, document_errors, json_request, render_schema_error
from idp.oauth.clients import (
    ClientSpec,
    ClientValidationError,
    create_client,
    delete_client,
    describe_client,
    rotate_client_secret,
    set_client_disabled,
    update_client,
)
from idp.oauth.resource import BearerProtector, StoredParties
from idp.openapi import no_content, raw_response
from idp.storage.models import OAuthClient, User
from idp.storage.repositories import ClientRepository, UserRepository

blueprint = Blueprint("admin_api", __name__, url_prefix="/api/admin")


def _documented_errors(*statuses: int) -> Any:
    """The error answers of an operation in /openapi.json (by default 400, 401 and 403)."""
    return document_errors(*(statuses or (400, 401, 403)))


# A query string pydantic refuses: the same 400 naming each bad member as a bad body.
blueprint.register_error_handler(RequestSchemaValidationError, render_schema_error)


@blueprint.before_request
async def _authenticate() -> None:
    """Who calls is settled first, for every route alike (before any body or query is read or
    validated): an anonymous or unauthorised caller learns nothing about the request it sent."""
    g.administrator = await _administrator()


def _admin() -> Administrator:
    admin: Administrator = g.administrator
    return admin


async def _administrator() -> Administrator:
    rt = runtime()
    parties = StoredParties(rt.units)
    admin = await authenticate_admin(
        BearerProtector(rt.tokens, rt.subjects, parties),
        parties,
        request.headers.getlist("Authorization"),
        require_mfa=rt.settings.admin.require_mfa,
    )
    set_actor(admin.actor_id, via="admin_api")
    return admin


async def _user(user_id: str) -> User:
    if len(user_id) > 64:
        raise NotFound("There is no such account.")
    async with runtime().db.session() as session:
        user = await UserRepository(session).get(user_id)
    if user is None:
        raise NotFound("There is no such account.")
    return user


def _refused(exc: AccountError) -> InvalidFields:
    return InvalidFields({exc.field: exc.message})


@blueprint.after_request
async def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


# -- users -----------------------------------------------------------------------------------------


@blueprint.get("/users")
@validate_querystring(UserQuery)
@validate_response(UserPage)
@_documented_errors()
async def list_users(query_args: UserQuery) -> UserPage:
    """Accounts in the order they were created, filtered, a page at a time (a stable cursor)."""
    query = admin_users.UserQuery(
        query_args.q, query_args.status, query_args.admin, query_args.mfa, query_args.cursor, query_args.limit
    )
    try:
        page = await admin_users.find_users(runtime().accounts, query)
    except AccountError as exc:
        raise _refused(exc) from None
    return UserPage.model_validate({"items": page.users, "next_cursor": page.next_cursor})


@blueprint.get("/users/<user_id>")
@validate_response(UserDetail)
@_documented_errors(401, 403, 404)
async def get_user(user_id: str) -> UserDetail:
    """Profile, status, second factors, sessions with their devices, consents and recent activity."""
    detail = await admin_users.user_detail(runtime().accounts, await _user(user_id))
    return UserDetail.model_validate(detail)


async def _act(user_id: str, change: Any) -> ActionResult:
    """Apply ``change`` (a domain function of the account context and the account that says
    whether anything changed) to the account; its refusal as a field error."""
    user = await _user(user_id)
    try:
        changed = await change(runtime().accounts, user)
    except AccountError as exc:
        raise _refused(exc) from None
    return ActionResult(id=user.id, changed=changed)


@blueprint.post("/users/<user_id>/disable")
@validate_response(ActionResult)
@_documented_errors(400, 401, 403, 404)
async def disable_user(user_id: str) -> ActionResult:
    """The account can't sign in: its sessions end (back-channel logout) and its grants are revoked."""
    return await _act(user_id, lambda ctx, user: admin_users.set_disabled(ctx, user, True))


@blueprint.post("/users/<user_id>/enable")
@validate_response(ActionResult)
@_documented_errors(401, 403, 404)
async def enable_user(user_id: str) -> ActionResult:
    return await _act(user_id, lambda ctx, user: admin_users.set_disabled(ctx, user, False))


@blueprint.post("/users/<user_id>/verify-email")
@validate_response(ActionResult)
@_documented_errors(401, 403, 404)
async def verify_user_email(user_id: str) -> ActionResult:
    return await _act(user_id, admin_users.verify_email)


@blueprint.post("/users/<user_id>/grant-admin")
@validate_response(ActionResult)
@_documented_errors(401, 403, 404)
async def grant_admin(user_id: str) -> ActionResult:
    """Make the account an administrator (needs a recent sign-in)."""
    admin = _admin()
    require_fresh(admin, runtime().settings.admin.fresh_auth_max_age)
    return await _act(user_id, admin_users.grant_admin)


@blueprint.post("/users/<user_id>/revoke-admin")
@validate_response(ActionResult)
@_documented_errors(400, 401, 403, 404)
async def revoke_admin(user_id: str) -> ActionResult:
    """Take the role away; refused (400) for the last enabled administrator."""
    return await _act(user_id, admin_users.revoke_admin)


@blueprint.post("/users/<user_id>/reset-mfa")
@validate_response(FactorsReset)
@_documented_errors(401, 403, 404)
async def reset_mfa(user_id: str) -> FactorsReset:
    """Remove every second factor and recovery code (the user is mailed; needs a recent sign-in)."""
    admin = _admin()
    require_fresh(admin, runtime().settings.admin.fresh_auth_max_age)
    user = await _user(user_id)
    removed = await admin_users.reset_second_factors(runtime().accounts, user)
    return FactorsReset(id=user.id, factors_removed=removed)


@blueprint.post("/users/<user_id>/end-sessions")
@json_request(EndSessions, optional=True)
@validate_response(SessionsEnded)
@_documented_errors(400, 401, 403, 404)
async def end_sessions(user_id: str, data: EndSessions) -> SessionsEnded:
    """Sign the account out everywhere, or of one session (``session_id``)."""
    user = await _user(user_id)
    ended = await account_status.end_sessions(runtime().accounts, user.id, data.session_id)
    return SessionsEnded(id=user.id, sessions_ended=ended)


@blueprint.post("/users/<user_id>/unlock")
@validate_response(ActionResult)
@_documented_errors(401, 403, 404)
async def unlock_user(user_id: str) -> ActionResult:
    """Lift the account's sign-in locks and failure counts."""
    rt = runtime()
    user = await _user(user_id)
    changed = await account_status.unlock(rt.accounts, rt.lockout, rt.limits, user)
    return ActionResult(id=user.id, changed=changed)


@blueprint.delete("/users/<user_id>")
@no_content
@_documented_errors(400, 401, 403)
async def delete_user(user_id: str) -> Response:
    """Delete the account with the full purge of a self-deletion (needs a recent sign-in).
    Idempotent: 204 whether or not it existed."""
    admin = _admin()
    rt = runtime()
    require_fresh(admin, rt.settings.admin.fresh_auth_max_age)
    try:
        user = await _user(user_id)
    except NotFound:
        return Response(status=204)
    actor = admin.user.id if admin.user is not None else None
    try:
        await admin_users.delete_user(rt.accounts, user, actor_id=actor, delete_blob=rt.delete_picture)
    except AccountError as exc:
        raise _refused(exc) from None
    return Response(status=204)


# -- audit -----------------------------------------------------------------------------------------


def _audit_filter(query: AuditQuery | AuditExportQuery) -> Any:
    try:
        return admin_audit.audit_filter(
            user_id=query.user,
            client_id=query.client,
            event=query.event,
            outcome=query.outcome,
            since=query.since,
            until=query.until,
        )
    except AccountError as exc:
        raise _refused(exc) from None


@blueprint.get("/audit")
@validate_querystring(AuditQuery)
@validate_response(AuditPage)
@_documented_errors()
async def audit_log(query_args: AuditQuery) -> AuditPage:
    """Events newest first, filtered; ``before`` pages back (ids only grow, so pages are stable)."""
    where = _audit_filter(query_args)
    rows = await admin_audit.newest(runtime().db, where, limit=query_args.limit + 1, before_id=query_args.before)
    page, more = rows[: query_args.limit], len(rows) > query_args.limit
    return AuditPage.model_validate({"items": page, "next_before": page[-1]["id"] if more and page else None})


@blueprint.get("/audit/export")
@validate_querystring(AuditExportQuery)
@raw_response(
    200,
    {"text/csv": {"schema": {"type": "string"}}, "application/x-ndjson": {"schema": {"type": "string"}}},
    "The events, oldest first: CSV (RFC 4180) with a header line, or one JSON object per line.",
)
@_documented_errors()
async def audit_export(query_args: AuditExportQuery) -> Response:
    """Every matching event oldest first, streamed as CSV (RFC 4180) or JSON lines."""
    where = _audit_filter(query_args)
    csv = query_args.format == "csv"
    lines = admin_audit.export_lines(runtime().db, where, csv_format=csv)
    response = Response(lines, mimetype="text/csv" if csv else "application/x-ndjson")
    response.headers["Content-Disposition"] = f'attachment; filename="audit.{"csv" if csv else "jsonl"}"'
    return response


# -- clients ---------------------------------------------------------------------------------------


def _client_refused(exc: ClientValidationError) -> InvalidFields:
    return InvalidFields({exc.field: exc.message})


async def _client(client_id: str) -> OAuthClient:
    if len(client_id) > 64:
        raise NotFound("There is no such client.")
    async with runtime().db.session() as session:
        client = await ClientRepository(session).get(client_id)
    if client is None:
        raise NotFound("There is no such client.")
    return client


@blueprint.get("/clients")
@validate_querystring(ClientQuery)
@validate_response(ClientList)
@_documented_errors()
async def list_clients(query_args: ClientQuery) -> ClientList:
    """Every registered client, oldest first; ``q`` finds a part of the id or the name."""
    async with runtime().db.session() as session:
        registered = await ClientRepository(session).list()
    wanted = (query_args.q or "").strip().casefold()
    items = [
        describe_client(client)
        for client in registered
        if not wanted or wanted in client.id.casefold() or wanted in client.name.casefold()
    ]
    return ClientList.model_validate({"items": items})


@blueprint.post("/clients")
@json_request(ClientIn)
@validate_response(ClientOut, 201)
@_documented_errors()
async def create_client_route(data: ClientIn) -> tuple[ClientOut, int, dict[str, str]]:
    """Register a client; the answer carries its secret, once, and its URL in Location."""
    rt = runtime()
    spec = ClientSpec(**data.model_dump())
    try:
        created = await create_client(rt.db, rt.events, spec, pairwise_available=rt.subjects.pairwise_available)
    except ClientValidationError as exc:
        raise _client_refused(exc) from None
    body = ClientOut.model_validate({**describe_client(created.client), "client_secret": created.client_secret})
    return body, 201, {"Location": f"{rt.settings.issuer}/api/admin/clients/{created.client.id}"}


@blueprint.get("/clients/<client_id>")
@validate_response(ClientOut)
@_documented_errors(401, 403, 404)
async def get_client(client_id: str) -> ClientOut:
    return ClientOut.model_validate(describe_client(await _client(client_id)))


@blueprint.patch("/clients/<client_id>")
@json_request(ClientPatch)
@validate_response(ClientOut)
@_documented_errors(400, 401, 403, 404)
async def update_client_route(client_id: str, data: ClientPatch) -> ClientOut:
    """Change the fields given; moving to a secret method returns a new secret once."""
    rt = runtime()
    await _client(client_id)
    changes = {name: getattr(data, name) for name in data.model_fields_set}
    for name in ("redirect_uris", "post_logout_redirect_uris", "grant_types", "scopes", "web_origins"):
        if name in changes and changes[name] is None:
            changes[name] = []
    try:
        updated = await update_client(rt.db, rt.events, client_id, changes)
    except ClientValidationError as exc:
        raise _client_refused(exc) from None
    return ClientOut.model_validate({**describe_client(updated.client), "client_secret": updated.client_secret})


@blueprint.post("/clients/<client_id>/rotate-secret")
@validate_response(SecretOut)
@_documented_errors(400, 401, 403, 404)
async def rotate_secret(client_id: str) -> SecretOut:
    rt = runtime()
    await _client(client_id)
    try:
        secret = await rotate_client_secret(rt.db, rt.events, client_id)
    except ClientValidationError as exc:
        raise _client_refused(exc) from None
    return SecretOut(client_id=client_id, client_secret=secret)


@blueprint.post("/clients/<client_id>/disable")
@validate_response(ClientChanged)
@_documented_errors(401, 403, 404)
async def disable_client(client_id: str) -> ClientChanged:
    """The client can't authenticate, and its tokens are refused, until it is enabled again."""
    await _client(client_id)
    rt = runtime()
    return ClientChanged(client_id=client_id, changed=await set_client_disabled(rt.db, rt.events, client_id, True))


@blueprint.post("/clients/<client_id>/enable")
@validate_response(ClientChanged)
@_documented_errors(401, 403, 404)
async def enable_client(client_id: str) -> ClientChanged:
    await _client(client_id)
    rt = runtime()
    return ClientChanged(client_id=client_id, changed=await set_client_disabled(rt.db, rt.events, client_id, False))


@blueprint.delete("/clients/<client_id>")
@no_content
@_documented_errors(401, 403)
async def delete_client_route(client_id: str) -> Response:
    """Revoke every grant of the client, then delete it with its codes, refresh tokens and
    consents (needs a recent sign-in). Idempotent: 204 whether or not it existed."""
    admin = _admin()
    rt = runtime()
    require_fresh(admin, rt.settings.admin.fresh_auth_max_age)
    if len(client_id) <= 64:
        await delete_client(rt.grants, rt.db, rt.events, client_id)
    return Response(status=204)


# -- signing keys ----------------------------------------------------------------------------------


@blueprint.get("/keys")
@validate_response(KeyList)
@_documented_errors(401, 403)
async def list_keys() -> KeyList:
    return KeyList.model_validate({"items": await describe_keys(runtime().db)})


@blueprint.post("/keys/rotate")
@json_request(RotateKeys, optional=True)
@validate_response(KeysRotated)
@_documented_errors()
async def rotate_keys(data: RotateKeys) -> KeysRotated:
    """A new active key per algorithm; the old one stays published until its tokens expire
    (needs a recent sign-in)."""
    admin = _admin()
    rt = runtime()
    require_fresh(admin, rt.settings.admin.fresh_auth_max_age)
    unknown = [alg for alg in data.algorithms or () if alg not in rt.settings.keys.algorithms]
    if unknown:
        raise InvalidFields({"algorithms": f"{', '.join(unknown)} is not in keys.algorithms"})
    created = await rt.keys.rotate(list(data.algorithms) if data.algorithms else None)
    return KeysRotated.model_validate({"created": created, "items": await describe_keys(rt.db)})


@blueprint.post("/keys/purge")
@validate_response(KeysPurged)
@_documented_errors(401, 403)
async def purge_keys() -> KeysPurged:
    """Delete retired keys whose publication window has ended."""
    return KeysPurged(removed=await runtime().keys.purge_expired())
