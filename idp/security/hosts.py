"""Which hosts are this machine: the one rule for every place plain http or "none" TLS is allowed.

Loopback IP literals (127.0.0.0/8, ::1) and the name ``localhost`` only (RFC 9700 §2.6, RFC 8252
§7.3). A name that merely starts with "127." (``127.evil.example``) resolves wherever its owner
wants.
"""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
