"""Helpers shared by the HTML blueprints: cookies, the IdP session's cookie, CSRF, redirects.

Signing in and checking a session are the accounts domain's (idp.accounts.signin.finish); here is
only what HTTP adds to them: which cookie carries what, and the session cached for the request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from quart import Response, g, redirect, request

from idp.accounts.sessions.devices import DEVICE_COOKIE, DEVICE_COOKIE_MAX_AGE
from idp.accounts.sessions.store import BrowserSession
from idp.accounts.signin.authn import Authentication
from idp.accounts.signin.finish import Browser, previous_session, resume_session, start_session
from idp.accounts.signin.password import PasswordChecked
from idp.errors import Forbidden, TooManyRequests
from idp.events import set_actor
from idp.http import runtime, settings
from idp.security import csrf
from idp.security.ratelimit import RateLimited, RateLimiter, RateLimits
from idp.storage.models import User


def secure_cookies() -> bool:
    return settings().issuer_is_https


SESSION_COOKIE = "idp_session"


def cookie_name(base: str) -> str:
    """ASVS 3.3.1/3.3.3: every cookie of ours takes the __Host- prefix (Secure, Path=/, no Domain)
    whenever served over https, so a sibling subdomain can neither plant nor overwrite it (cookie
    tossing would otherwise defeat the CSRF binding or fix a session)."""
    return f"__Host-{base}" if secure_cookies() else base


def read_cookie(base: str) -> str | None:
    return request.cookies.get(cookie_name(base))


def session_cookie_name() -> str:
    return cookie_name(SESSION_COOKIE)


def set_cookie(response: Response, base: str, value: str, *, max_age: int | None = None) -> None:
    response.set_cookie(
        cookie_name(base), value, max_age=max_age, path="/", secure=secure_cookies(), httponly=True, samesite="Lax"
    )


def clear_cookie(response: Response, base: str) -> None:
    response.delete_cookie(cookie_name(base), path="/", secure=secure_cookies(), httponly=True, samesite="Lax")


async def current_session() -> BrowserSession | None:
    """The signed-in browser session, if any (cached for the request); one whose account may no
    longer sign in ends (idp.accounts.signin.finish.resume_session)."""
    if not hasattr(g, "idp_session"):
        session = await resume_session(runtime().accounts, read_cookie(SESSION_COOKIE))
        g.idp_session = session
        if session is not None:
            set_actor(session.user_id)
    return cast(BrowserSession | None, g.idp_session)


def csrf_binding() -> str:
    """The browser's CSRF binding value; created (and set as a cookie after the request) if absent."""
    binding = read_cookie(csrf.COOKIE_NAME)
    if binding and 20 <= len(binding) <= 100:
        return binding
    if not getattr(g, "new_csrf_binding", None):
        g.new_csrf_binding = csrf.new_binding()
    return cast(str, g.new_csrf_binding)


def csrf_token() -> str:
    return csrf.form_token(_secret(), csrf_binding())


def _secret() -> str:
    secret = settings().secrets.cookie_secret
    if secret is None:
        raise RuntimeError("secrets.cookie_secret is not set")
    return secret.get_secret_value()


async def require_csrf() -> None:
    """Reject a state-changing form post without a valid CSRF token (ASVS 3.5.1)."""
    form = await request.form
    if not csrf.verify(_secret(), read_cookie(csrf.COOKIE_NAME), form.get("csrf_token")):
        raise Forbidden("The form has expired or did not come from this site. Go back, reload and try again.")


async def require_csrf_header() -> None:
    """The same check for a page's fetch() calls, which send the token in ``X-CSRF-Token``."""
    if not csrf.verify(_secret(), read_cookie(csrf.COOKIE_NAME), request.headers.get("X-CSRF-Token")):
        raise Forbidden("The page has expired or the request did not come from this site. Reload and try again.")


def client_ip() -> str:
    return request.remote_addr or "unknown"


def enforcing(limits: RateLimiter) -> RateLimits:
    """Count a request against the named rate limits ({limit: subject}); over any of them, a 429
    with Retry-After whose message names what was attempted too often (``what``)."""

    async def enforce(attempts: dict[str, str | None], what: str) -> None:
        try:
            await limits.hit_all(attempts)
        except RateLimited as exc:
            wait = f"{exc.retry_after} seconds" if exc.retry_after < 90 else f"{round(exc.retry_after / 60)} minutes"
            raise TooManyRequests(exc.retry_after, f"Too many {what}. Wait {wait} before trying again.") from None

    return enforce


async def enforce_limits(attempts: dict[str, str | None], what: str) -> None:
    """:func:`enforcing` with this application's limits."""
    await enforcing(runtime().limits)(attempts, what)


def device_token() -> str | None:
    """This browser's device cookie: it shows a browser that signed in to an account before."""
    return read_cookie(DEVICE_COOKIE)


def _this_browser() -> Browser:
    return Browser(ip=request.remote_addr, user_agent=request.headers.get("User-Agent"), device_token=device_token())


async def start_browser_session(
    user: User, proved: Authentication, response: Response, *, password: PasswordChecked | None = None
) -> BrowserSession:
    """Sign this browser in as ``user`` (idp.accounts.signin.finish.start_session: a new session
    cookie value, the session limit, the device, LoginSucceeded; with what the ``password`` check
    learnt); the cookies are set on ``response``."""
    rt = runtime()
    if hasattr(g, "idp_session"):
        previous = g.idp_session
    else:
        previous = await previous_session(rt.accounts, read_cookie(SESSION_COOKIE), user)
        if previous is not None:
            set_actor(previous.user_id)
    signed_in = await start_session(
        rt.accounts, user, proved, previous=previous, browser=_this_browser(), password=password
    )
    g.idp_session = signed_in.session
    set_cookie(response, DEVICE_COOKIE, signed_in.device_cookie, max_age=DEVICE_COOKIE_MAX_AGE)
    set_cookie(response, SESSION_COOKIE, signed_in.session_cookie, max_age=rt.settings.sessions.absolute_ttl)
    return signed_in.session


async def rotate_browser_session(response: Response) -> BrowserSession | None:
    """A new cookie value for the signed-in session after a privilege change (ASVS 7.2.4)."""
    session = await current_session()
    if session is None:
        return None
    rt = runtime()
    renewed = await rt.sessions.rotate(session)
    if renewed is None:  # ended from elsewhere while this request ran: signed out
        g.idp_session = None
        clear_cookie(response, SESSION_COOKIE)
        return None
    cookie_value, rotated = renewed
    g.idp_session = rotated
    set_cookie(response, SESSION_COOKIE, cookie_value, max_age=rt.settings.sessions.absolute_ttl)
    return rotated


def attach_csrf_cookie(response: Response) -> None:
    binding = getattr(g, "new_csrf_binding", None)
    if binding:
        set_cookie(response, csrf.COOKIE_NAME, binding)


def local_path(target: str | None, default: str = "/") -> str:
    """Only same-origin paths are followed after sign-in: no open redirector (RFC 9700 §4.11)."""
    if not target or len(target) > 2048 or not target.startswith("/") or target.startswith("//"):
        return default
    # Control characters: a CR/LF can't go into a Location header, a NUL can't be stored.
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return default
    return target


# Where a flow may leave this site after a form's POST: the authorization endpoint answers the
# client's redirect URI, logout its post-logout redirect URI.
_FLOWS_LEAVING_SITE = ("/authorize", "/logout")


def let_forms_leave_site(return_to: str | None = None) -> None:
    """This page's forms may end (through redirects) at another site: its CSP then omits
    form-action (see idp.security.headers). With ``return_to``, only when that local path is part
    of a flow that leaves the site; pages that stay here keep ``form-action 'self'``."""
    if return_to is None or return_to.startswith(_FLOWS_LEAVING_SITE):
        g.forms_leave_site = True


F = TypeVar("F", bound=Callable[..., Any])


def validates_own_form_text(view: F) -> F:
    """Mark a form route whose handler refuses NUL and lone surrogates in every form field itself,
    with its own field errors: the app's request hook then leaves its form fields to it (query,
    path and headers are still checked there). tests/integration/test_input_walk.py sends every
    route such characters, on both databases."""
    view.validates_own_form_text = True  # type: ignore[attr-defined]
    return view


def see_other(location: str) -> Response:
    # RFC 9700 §4.12: 303 after a POST so credentials are never re-posted to the target.
    return cast(Response, redirect(location, code=303))
