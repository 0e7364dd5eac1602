"""What a sign-in proved, as OpenID Connect tells relying parties: ``amr`` and ``acr``.

``amr`` uses the RFC 8176 values; ``acr`` one of three ordered classes (OIDC Core §2):

- ``urn:idp:acr:1fa`` — one factor (the password);
- ``urn:idp:acr:mfa`` — two factors (password and TOTP, recovery code or passkey; or a passkey
  that verified its user);
- ``phr`` — phishing-resistant (OpenID EAP ACR Values §2.1): a passkey took part, so the sign-in
  is bound to this origin.

A higher class satisfies a request for a lower one. Passkeys that may be synced between devices
(the authenticator reports them backup-eligible) count as software keys (``swk``), others as
hardware keys (``hwk``); which sensor verified the user (PIN, fingerprint) is not known, so neither
``pin`` nor ``fpt`` is claimed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ACR_SINGLE_FACTOR = "urn:idp:acr:1fa"
ACR_MFA = "urn:idp:acr:mfa"
ACR_PHISHING_RESISTANT = "phr"
ACR_VALUES = (ACR_SINGLE_FACTOR, ACR_MFA, ACR_PHISHING_RESISTANT)
_RANK = {value: rank for rank, value in enumerate(ACR_VALUES, start=1)}

# Second factors, as the login step and the audit log name them.
TOTP = "totp"
RECOVERY_CODE = "recovery_code"
WEBAUTHN = "webauthn"


@dataclass(frozen=True)
class Authentication:
    amr: tuple[str, ...]
    acr: str


def _key_kind(backup_eligible: bool) -> str:
    return "swk" if backup_eligible else "hwk"


def password_only() -> Authentication:
    return Authentication(("pwd",), ACR_SINGLE_FACTOR)


def password_and(factor: str, *, backup_eligible: bool = False) -> Authentication:
    """The password, then ``factor`` (TOTP, RECOVERY_CODE or WEBAUTHN)."""
    if factor == TOTP:
        return Authentication(("pwd", "otp", "mfa"), ACR_MFA)
    if factor == RECOVERY_CODE:
        # RFC 8176 has no value for a look-up secret; "mfa" alone says two factors were used.
        return Authentication(("pwd", "mfa"), ACR_MFA)
    if factor == WEBAUTHN:
        return Authentication(("pwd", _key_kind(backup_eligible), "mfa"), ACR_PHISHING_RESISTANT)
    raise ValueError(f"unknown factor {factor!r}")


def passkey_alone(*, backup_eligible: bool) -> Authentication:
    """Passwordless: a discoverable passkey whose authenticator verified the user (PIN or
    biometric), which is two factors in one (NIST SP 800-63B §5.1.9, multi-factor crypto)."""
    return Authentication((_key_kind(backup_eligible), "mfa"), ACR_PHISHING_RESISTANT)


def known_acr_values(requested: Iterable[str]) -> list[str]:
    return [value for value in requested if value in _RANK]


def satisfies(achieved: str | None, requested: Iterable[str]) -> bool:
    """Whether a sign-in of class ``achieved`` meets any of the known ``requested`` classes (true
    when none of them is known: acr_values is a voluntary request, OIDC Core §3.1.2.1)."""
    known = known_acr_values(requested)
    if not known:
        return True
    rank = _RANK.get(achieved or ACR_SINGLE_FACTOR, 1)
    return any(rank >= _RANK[value] for value in known)


def acr_claim(achieved: str | None, requested: Sequence[str]) -> str:
    """The ``acr`` to put in the ID token: the first requested class the sign-in meets (so a
    relying party comparing strings finds what it asked for), else what was achieved."""
    achieved = achieved or ACR_SINGLE_FACTOR
    rank = _RANK.get(achieved, 1)
    for value in known_acr_values(requested):
        if rank >= _RANK[value]:
            return value
    return achieved
