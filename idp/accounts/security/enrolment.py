"""Adding a second factor, written once for the three places that do it: enrolment during sign-in
when policy requires a factor (``/login/setup-mfa``), the security page (``/account/security``) and
the account API (``/api/account/mfa/totp``, ``/api/account/passkeys``).

The callers differ in whom they are sure of (a pending sign-in, a signed-in browser, a Bearer
token), in what they check first and in how they answer. What an enrolment is stays here: a TOTP
secret shown once and turned on by a code from the app, and a passkey ceremony bound to the caller
(``binding``). Re-authenticating the user before a change and counting code attempts are the
callers' (idp.accounts.security.mfa, idp.accounts.security.passkeys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from idp.accounts.security import mfa, passkeys
from idp.accounts.security.relying_party import RelyingParty
from idp.events import EventBus
from idp.security.encryption import Encryptor
from idp.security.passwords import PasswordHasher
from idp.storage.db import Database
from idp.storage.kv import KeyValueStore
from idp.storage.models import User

# Bounds on what a caller passes through from a request (a credential id is 36 characters).
_MAX_INPUT = 64


@dataclass(frozen=True)
class Enrolment:
    """What adding a factor needs from the runtime (``Runtime.enrolment``)."""

    db: Database
    kv: KeyValueStore
    encryptor: Encryptor
    events: EventBus
    hasher: PasswordHasher
    relying_party: RelyingParty
    totp_issuer: str  # the name authenticator apps show next to the code

    # -- TOTP ------------------------------------------------------------------------------------

    async def start_totp(self, user: User, *, retry: str | None = None) -> mfa.TotpEnrolment:
        """A new unconfirmed TOTP (raises AccountError("totp", …) while one is on). With ``retry``,
        the unconfirmed setup of that credential id again if it still exists: after a mistyped
        code, the entry the user already made in the app stays valid."""
        if retry:
            found = await mfa.pending_totp_enrolment(
                self.db, self.encryptor, user.id, retry, issuer_name=self.totp_issuer, account_name=user.email
            )
            if found is not None:
                return found
        return await mfa.start_totp_enrolment(
            self.db, self.encryptor, user.id, issuer_name=self.totp_issuer, account_name=user.email
        )

    async def confirm_totp(self, user_id: str, credential_id: str, code: str) -> list[str]:
        """Turn the setup ``credential_id`` on with a current ``code``; the new recovery codes, once
        (mfa.confirm_totp_enrolment)."""
        return await mfa.confirm_totp_enrolment(
            self.db,
            self.encryptor,
            self.events,
            user_id,
            credential_id[:_MAX_INPUT],
            code[:_MAX_INPUT],
            hasher=self.hasher,
        )

    # -- passkeys --------------------------------------------------------------------------------

    async def passkey_options(self, user: User, *, binding: str) -> dict[str, Any]:
        """Start adding a passkey: ``ceremony`` (its id) and ``publicKey`` (the creation options for
        navigator.credentials.create()), the ceremony bound to ``binding``."""
        ceremony, options = await passkeys.registration_options(
            self.db,
            self.kv,
            self.relying_party,
            user_id=user.id,
            user_name=user.email,
            display_name=user.name or user.email,
            binding=binding,
        )
        return {"ceremony": ceremony, "publicKey": options}

    async def add_passkey(
        self, user_id: str, *, binding: str, ceremony: str, credential: str | dict[str, Any], name: str
    ) -> passkeys.Passkey:
        """Finish adding a passkey (passkeys.register_passkey); PasskeyError when it fails."""
        return await passkeys.register_passkey(
            self.db,
            self.kv,
            self.events,
            self.relying_party,
            user_id=user_id,
            ceremony_id=ceremony,
            binding=binding,
            credential=credential,
            name=name,
        )
