"""The admin pages about people: the dashboard, finding accounts, one account, and the actions an
administrator takes on it. Each action calls the same domain function as the admin API and the
CLI (idp.admin.users, idp.accounts.account_status); its event names this administrator as the
actor ("via": admin_page), and the account's owner sees it in their own activity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from quart import Response, request, url_for

from idp.accounts import account_status
from idp.accounts.recovery.passwords import send_password_reset
from idp.accounts.users import AccountError
from idp.accounts.web import load_user
from idp.admin import users as admin_users
from idp.admin.chart import hourly_chart
from idp.admin.dashboard import dashboard
from idp.admin.web import Confirmation, admin_page, admin_pages, administrator, confirm_then
from idp.errors import NotFound
from idp.http import runtime
from idp.storage.models import User
from idp.web import see_other

MFA_FILTERS = {"": None, "with": True, "without": False}
ADMIN_FILTERS = {"": None, "yes": True, "no": False}


@admin_pages.get("/")
async def dashboard_page() -> Response:
    board = await dashboard(runtime().accounts)
    return await admin_page("admin/dashboard.html", board=board, chart=hourly_chart(board.hours), section="dashboard")


# -- finding accounts ------------------------------------------------------------------------------


@admin_pages.get("/users")
async def users_page() -> Response:
    args = request.args
    mfa, admin = args.get("mfa", ""), args.get("admin", "")
    query = admin_users.UserQuery(
        text=args.get("q") or None,
        status=args.get("status") or None,
        admin=ADMIN_FILTERS.get(admin),
        second_factor=MFA_FILTERS.get(mfa),
        cursor=args.get("cursor") or None,
        limit=admin_users.DEFAULT_PAGE,
    )
    error, found = None, admin_users.UserPage([], None)
    if mfa not in MFA_FILTERS or admin not in ADMIN_FILTERS:
        error = "mfa and admin take the values the form offers."
    else:
        try:
            found = await admin_users.find_users(runtime().accounts, query)
        except AccountError as exc:
            error = f"{exc.field}: {exc.message}"
    kept = {"q": query.text or "", "status": query.status or "", "mfa": mfa, "admin": admin}
    next_page = (
        f"{url_for('admin.users_page')}?{urlencode({**kept, 'cursor': found.next_cursor})}"
        if found.next_cursor
        else None
    )
    response = await admin_page(
        "admin/users.html",
        users=found.users,
        filters=kept,
        statuses=admin_users.STATUSES,
        next_page=next_page,
        error=error,
        section="users",
    )
    if error:
        response.status_code = 400
    return response


# -- one account -----------------------------------------------------------------------------------


async def _account(user_id: str) -> User:
    user = await load_user(user_id) if len(user_id) <= 64 else None
    if user is None:
        raise NotFound("There is no such account.")
    return user


_NOTICES = {
    "disable": "The account is disabled: its sessions ended and its tokens were revoked.",
    "enable": "The account is enabled again.",
    "verify-email": "The address is marked verified.",
    "send-reset": "A password-reset link was mailed to the account's address.",
    "reset-mfa": "Every second factor was removed; the user was mailed.",
    "end-sessions": "Every session of the account ended.",
    "end-session": "The session ended.",
    "unlock": "The sign-in locks were lifted.",
    "grant-admin": "The account is an administrator now.",
    "revoke-admin": "The account is no longer an administrator.",
    "unchanged": "Nothing changed: the account was in that state already.",
}


@admin_pages.get("/users/<user_id>")
async def user_page(user_id: str) -> Response:
    user = await _account(user_id)
    detail = await admin_users.user_detail(runtime().accounts, user)
    return await admin_page(
        "admin/user.html",
        user=detail,
        actions=[action for action in USER_ACTIONS if action.offered(user)],
        notice=_NOTICES.get(request.args.get("notice", "")),
        section="users",
    )


@dataclass(frozen=True)
class UserAction:
    slug: str
    label: str
    question: str
    explanation: str
    offered: Callable[[User], bool]
    run: Callable[[User], Awaitable[bool]]  # False: nothing changed
    needs_fresh: bool = False
    danger: bool = False


async def _disable(user: User) -> bool:
    return await admin_users.set_disabled(runtime().accounts, user, True)


async def _enable(user: User) -> bool:
    return await admin_users.set_disabled(runtime().accounts, user, False)


async def _send_reset(user: User) -> bool:
    # The same mail as "forgot password" (a disabled account gets none, as there), queued now.
    return await send_password_reset(runtime().accounts, user.email)


async def _reset_mfa(user: User) -> bool:
    return await admin_users.reset_second_factors(runtime().accounts, user) > 0


async def _end_sessions(user: User) -> bool:
    return await account_status.end_sessions(runtime().accounts, user.id) > 0


async def _unlock(user: User) -> bool:
    rt = runtime()
    return await account_status.unlock(rt.accounts, rt.lockout, rt.limits, user)


USER_ACTIONS = (
    UserAction(
        "disable",
        "Disable",
        "Disable this account?",
        "It can't sign in; every session ends (its applications are told) and its tokens are revoked.",
        lambda user: not user.disabled,
        _disable,
        danger=True,
    ),
    UserAction(
        "enable", "Enable", "Enable this account?", "It can sign in again.", lambda user: user.disabled, _enable
    ),
    UserAction(
        "verify-email",
        "Mark the address verified",
        "Mark this address verified?",
        "Do this only when the owner proved the address another way.",
        lambda user: not user.email_verified,
        lambda user: admin_users.verify_email(runtime().accounts, user),
    ),
    UserAction(
        "send-reset",
        "Send a password-reset mail",
        "Mail a password-reset link?",
        "The account's address gets a link to choose a new password; the current one keeps working until then.",
        lambda user: not user.disabled,
        _send_reset,
    ),
    UserAction(
        "reset-mfa",
        "Reset second factors",
        "Remove every second factor?",
        "The authenticator app, passkeys and recovery codes are removed; the user signs in with the "
        "password and sets one up again, and is mailed about it.",
        lambda user: True,
        _reset_mfa,
        needs_fresh=True,
        danger=True,
    ),
    UserAction(
        "end-sessions",
        "End every session",
        "Sign this account out everywhere?",
        "Every browser signed in to it is signed out, and the applications it used are told.",
        lambda user: True,
        _end_sessions,
    ),
    UserAction(
        "unlock",
        "Lift sign-in locks",
        "Lift the sign-in locks?",
        "Failed attempts are forgotten and a lock in force ends.",
        lambda user: True,
        _unlock,
    ),
    UserAction(
        "grant-admin",
        "Make administrator",
        "Make this account an administrator?",
        "It will be able to open these pages and use the admin API, and do everything you can.",
        lambda user: not user.is_admin,
        lambda user: admin_users.grant_admin(runtime().accounts, user),
        needs_fresh=True,
        danger=True,
    ),
    UserAction(
        "revoke-admin",
        "Remove administrator role",
        "Take the administrator role away?",
        "The account stays; it can no longer administer. The last administrator can't be removed.",
        lambda user: user.is_admin,
        lambda user: admin_users.revoke_admin(runtime().accounts, user),
        danger=True,
    ),
)


def _action_view(action: UserAction) -> Callable[[str], Awaitable[Response]]:
    async def view(user_id: str) -> Response:
        user = await _account(user_id)
        back = url_for("admin.user_page", user_id=user.id)

        async def act() -> Response:
            changed = await action.run(user)
            return see_other(f"{back}?notice={action.slug if changed else 'unchanged'}")

        confirmation = Confirmation(
            title=action.question,
            text=f"{user.email}: {action.explanation}",
            button=action.label,
            back=back,
            needs_fresh=action.needs_fresh,
            danger=action.danger,
        )
        return await confirm_then(confirmation, act)

    view.__name__ = f"user_{action.slug.replace('-', '_')}"
    return view


for _action in USER_ACTIONS:
    admin_pages.add_url_rule(
        f"/users/<user_id>/{_action.slug}",
        view_func=_action_view(_action),
        methods=["GET", "POST"],
    )


@admin_pages.route("/users/<user_id>/sessions/<sid>/end", methods=["GET", "POST"])
async def user_end_session(user_id: str, sid: str) -> Response:
    user = await _account(user_id)
    back = url_for("admin.user_page", user_id=user.id)

    async def end() -> Response:
        ended = await account_status.end_sessions(runtime().accounts, user.id, sid[:64])
        return see_other(f"{back}?notice={'end-session' if ended else 'unchanged'}")

    return await confirm_then(
        Confirmation(
            title="End this session?",
            text=f"{user.email}: that browser is signed out at its next request, and its applications are told.",
            button="End the session",
            back=back,
        ),
        end,
    )


@admin_pages.route("/users/<user_id>/delete", methods=["GET", "POST"])
async def user_delete(user_id: str) -> Response:
    user = await _account(user_id)

    async def delete() -> Response:
        rt = runtime()
        await admin_users.delete_user(rt.accounts, user, actor_id=administrator().id, delete_blob=rt.delete_picture)
        return see_other(url_for("admin.users_page", deleted="1"))

    return await confirm_then(
        Confirmation(
            title="Delete this account?",
            text=f"{user.email}: the account and everything it holds are deleted for good (sessions "
            "ended, tokens revoked, consents, factors, picture and activity removed), as when its owner "
            "deletes it.",
            button="Delete the account",
            back=url_for("admin.user_page", user_id=user.id),
            needs_fresh=True,
            danger=True,
        ),
        delete,
    )
