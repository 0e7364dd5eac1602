"""Subject identifiers (OIDC Core §8): public (the user's id) or pairwise per sector.

Pairwise identifiers are the user id encrypted deterministically (AES-SIV) under a key derived
from ``secrets.pairwise_secret`` with the sector host as associated data: stable per sector,
unlinkable across sectors, and reversible only by the IdP — so tokens carrying a pairwise `sub`
can still be resolved at userinfo without a mapping table.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from idp.storage.models import OAuthClient


def sector_of(client: OAuthClient) -> str:
    """OIDC Core §8.1: the host of the redirect URIs (pairwise clients register a single host)."""
    hosts = {urlsplit(uri).hostname or "" for uri in client.redirect_uris}
    return sorted(hosts)[0] if hosts else client.id


class SubjectResolver:
    def __init__(self, pairwise_secret: str | None) -> None:
        self._siv: AESSIV | None = None
        if pairwise_secret:
            key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"idp pairwise subject").derive(
                pairwise_secret.encode()
            )
            self._siv = AESSIV(key)

    @property
    def pairwise_available(self) -> bool:
        return self._siv is not None

    def subject_for(self, client: OAuthClient, user_id: str) -> str:
        if client.subject_type != "pairwise":
            return user_id
        if self._siv is None:
            raise RuntimeError("secrets.pairwise_secret is not configured")
        sealed = self._siv.encrypt(user_id.encode(), [sector_of(client).encode()])
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def user_id_for(self, client: OAuthClient | None, subject: str) -> str | None:
        """The local user id behind a `sub` this IdP issued to ``client`` (None if it isn't one)."""
        if client is None or client.subject_type != "pairwise":
            return subject
        if self._siv is None or len(subject) > 400:
            return None
        try:
            sealed = base64.urlsafe_b64decode(subject + "=" * (-len(subject) % 4))
            return self._siv.decrypt(sealed, [sector_of(client).encode()]).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            return None
