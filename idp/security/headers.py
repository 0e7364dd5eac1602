"""Security headers on every response (ASVS V3.4; RFC 9700 §4.16 clickjacking)."""

from __future__ import annotations

from quart import Response

# Pages are plain server-rendered HTML with no inline script; `frame-ancestors 'none'` stops
# clickjacking of login and consent pages.
DEFAULT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def apply_security_headers(response: Response, *, https: bool) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if response.mimetype == "text/html":
        headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
    if https:
        headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
