"""Security headers on every response (ASVS V3.4; RFC 9700 §4.16 clickjacking)."""

from __future__ import annotations

import secrets
from typing import Any, Protocol


class HeaderSet(Protocol):
    """What is needed of a response's headers (werkzeug's Headers, a dict …)."""

    def setdefault(self, key: str, default: Any) -> Any: ...


# Pages are server-rendered HTML with no inline script. Scripts run only with this response's
# nonce ('strict-dynamic' lets them load nothing else on their own terms); `frame-ancestors 'none'`
# stops clickjacking of login and consent pages (ASVS 3.4.3, 3.4.6).
#
# ``form_action=None`` leaves form-action out. Chromium applies form-action to every redirect that
# follows a form submission (w3c/webappsec-csp#8), so a sign-in, consent or logout form whose POST
# ends, through 303s, at a client's redirect URI (and wherever the client sends the browser next,
# possibly a custom scheme) would be blocked by any list we could write. Only pages in such a flow
# drop it; form-action does not fall back to default-src, and script-src still allows no injected
# script.
def content_security_policy(
    nonce: str | None, *, form_action: str | None = "'self'", default_src: str = "'self'"
) -> str:
    scripts = f"'nonce-{nonce}' 'strict-dynamic'" if nonce else "'none'"
    forms = f"form-action {form_action}; " if form_action else ""
    return (
        f"default-src {default_src}; script-src {scripts}; style-src 'self'; img-src 'self' data:; "
        f"object-src 'none'; base-uri 'none'; {forms}frame-ancestors 'none'"
    )


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


DEFAULT_CSP = content_security_policy(None)


def apply_security_headers(
    headers: HeaderSet,
    mimetype: str | None,
    *,
    https: bool,
    nonce: str | None = None,
    form_action: str | None = "'self'",
) -> None:
    """Add the headers every response carries to ``headers`` (a response's, whatever the
    framework), keeping any the route set itself; ``mimetype`` is the body's."""
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if mimetype == "text/html":
        headers.setdefault("Content-Security-Policy", content_security_policy(nonce, form_action=form_action))
        # Every page of an identity provider is personal and some show secrets once (recovery
        # codes, a TOTP seed): no browser or shared cache keeps them (ASVS 14.3.2). A route that
        # chose its own caching keeps it.
        headers.setdefault("Cache-Control", "no-store")
    if https:
        headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
