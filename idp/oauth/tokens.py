"""Issuing and verifying the JWTs this server signs.

- Access tokens: RFC 9068 (`typ: at+jwt`), audience the IdP's own APIs, short-lived, with a `jti`
  and the id of their grant that the denylist (idp.oauth.denylist: recorded in SQL, cached in the
  key-value store, so every instance sees it) can revoke before expiry.
- ID tokens: OIDC Core §2, signed with the client's chosen algorithm.
- Refresh tokens: signed JWTs with their own `typ` and the IdP as audience; the `jti` is tracked
  in the database (rotation, reuse detection, revocation). Clients treat them as opaque.
- Logout tokens: OIDC Back-Channel Logout §2.4 (`typ: logout+jwt`).

Verification trusts only our own published keys, picks the algorithm from the key (never from
the token header alone), and checks `typ`, so one kind of token is never accepted as another
(ASVS 9.1.2, 9.2.2).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from idp.oauth.denylist import GRANT_CLAIM, Denylist
from idp.oauth.keys import KeyManager, LoadedKey, canonical_alg
from idp.security.tokens import TokenInvalid, random_token

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a JWT type, not a secret
REFRESH_TOKEN_TYP = "rt+jwt"  # noqa: S105 - a JWT type, not a secret
ID_TOKEN_TYP = "JWT"  # noqa: S105 - a JWT type, not a secret
LOGOUT_TOKEN_TYP = "logout+jwt"  # noqa: S105 - a JWT type, not a secret
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LEEWAY = 60
# Verified access tokens remembered per process (TokenService._verified): about 2 KiB each.
VERIFIED_ACCESS_TOKENS = 4096
__all__ = ["TokenInvalid", "TokenService"]


class UnknownKey(TokenInvalid):
    """The token names a key id this node doesn't (yet) know."""


@dataclass(frozen=True)
class IssuedToken:
    value: str
    jti: str
    claims: dict[str, Any]

    @property
    def expires_at(self) -> int:
        return int(self.claims["exp"])


def half_hash(value: str, alg: str) -> str:
    """at_hash / c_hash (OIDC Core §3.1.3.6): left half of the hash the signing alg uses."""
    digest = hashlib.sha512 if canonical_alg(alg) == "Ed25519" else hashlib.sha256
    raw = digest(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw[: len(raw) // 2]).rstrip(b"=").decode()


def _authentication_claims(
    auth_time: int | None, acr: str | None, amr: Sequence[str] | None, sid: str | None
) -> dict[str, Any]:
    """How and in which session the user signed in (OIDC Core §2), present only when known."""
    claims: dict[str, Any] = {}
    if auth_time is not None:
        claims["auth_time"] = auth_time
    if acr:
        claims["acr"] = acr
    if amr:
        claims["amr"] = list(amr)
    if sid:
        claims["sid"] = sid
    return claims


def _typ_matches(header_typ: Any, expected: str) -> bool:
    # RFC 9068 §2.1 / RFC 8725 §3.11: "at+jwt" or the full media type "application/at+jwt".
    if not isinstance(header_typ, str):
        return False
    value = header_typ.lower()
    return value in (expected.lower(), f"application/{expected.lower()}")


class TokenService:
    def __init__(
        self,
        keys: KeyManager,
        denylist: Denylist,
        issuer: str,
        *,
        access_token_ttl: int,
        id_token_ttl: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self.denylist = denylist
        self.issuer = issuer
        self.access_token_ttl = access_token_ttl
        self.id_token_ttl = id_token_ttl
        self._clock = clock
        # Access tokens whose signature and claims were verified: the token's exact bytes -> the
        # key that verified it and its claims. A resource server presents the same token again and
        # again; only its expiry and its revocation can change, and both are checked every time.
        self._verified: OrderedDict[str, tuple[LoadedKey, dict[str, Any]]] = OrderedDict()

    @property
    def access_token_audience(self) -> str:
        # The IdP's own resource endpoints (userinfo, account API) are the audience of its access
        # tokens; refresh tokens share the issuer as audience but differ in `typ`.
        return self.issuer

    def now(self) -> int:
        return int(self._clock())

    # -- signing ------------------------------------------------------------------------------

    def sign(self, claims: dict[str, Any], *, typ: str, alg: str | None = None) -> str:
        key = self._keys.signing_key(alg)
        header = {"alg": key.alg, "kid": key.kid, "typ": typ}
        return jwt.encode(header, claims, key.key, algorithms=[key.alg])

    def issue_access_token(
        self,
        *,
        subject: str,
        client_id: str,
        scope: str,
        auth_time: int | None = None,
        acr: str | None = None,
        amr: Sequence[str] | None = None,
        sid: str | None = None,
        grant_id: str | None = None,
    ) -> IssuedToken:
        """``grant_id``: the grant (refresh-token family) the token comes from, which revoking the
        grant refuses; None for a grant of the client's own (client_credentials)."""
        now = self.now()
        jti = random_token(16)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.access_token_audience,
            "client_id": client_id,
            "iat": now,
            "exp": now + self.access_token_ttl,
            "jti": jti,
            "scope": scope,
        }
        claims.update(_authentication_claims(auth_time, acr, amr, sid))
        if grant_id is not None:
            claims[GRANT_CLAIM] = grant_id
        return IssuedToken(self.sign(claims, typ=ACCESS_TOKEN_TYP), jti, claims)

    def issue_id_token(
        self,
        *,
        subject: str,
        client_id: str,
        alg: str | None,
        auth_time: int | None,
        nonce: str | None = None,
        acr: str | None = None,
        amr: Sequence[str] | None = None,
        sid: str | None = None,
        access_token: str | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        now = self.now()
        key_alg = self._keys.signing_key(alg).alg
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": client_id,
            "iat": now,
            "exp": now + self.id_token_ttl,
            "jti": random_token(12),
        }
        claims.update(_authentication_claims(auth_time, acr, amr, sid))
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["at_hash"] = half_hash(access_token, key_alg)
        if extra_claims:
            claims.update({key: value for key, value in extra_claims.items() if key not in claims})
        return self.sign(claims, typ=ID_TOKEN_TYP, alg=key_alg)

    def issue_refresh_token(
        self, *, jti: str, subject: str, client_id: str, scope: str, expires_at: int, sid: str | None
    ) -> str:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.issuer,
            "client_id": client_id,
            "iat": self.now(),
            "exp": expires_at,
            "jti": jti,
            "scope": scope,
        }
        if sid:
            claims["sid"] = sid
        return self.sign(claims, typ=REFRESH_TOKEN_TYP)

    def issue_logout_token(self, *, client_id: str, subject: str | None, sid: str | None, alg: str | None) -> str:
        now = self.now()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + 120,
            "jti": random_token(16),
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        }
        if subject:
            claims["sub"] = subject
        if sid:
            claims["sid"] = sid
        return self.sign(claims, typ=LOGOUT_TOKEN_TYP, alg=alg)

    # -- verification -------------------------------------------------------------------------

    def verify(
        self,
        token: str,
        *,
        typ: str | None,
        audience: str | None,
        check_expiry: bool = True,
    ) -> dict[str, Any]:
        """Verify signature, issuer, type, audience and (optionally) time claims of our own JWT."""
        return self._verify(token, typ=typ, audience=audience, check_expiry=check_expiry)[1]

    def _verify(
        self, token: str, *, typ: str | None, audience: str | None, check_expiry: bool
    ) -> tuple[LoadedKey, dict[str, Any]]:
        """:meth:`verify`, with the key that verified the token."""
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
            raise TokenInvalid("not a compact JWS")
        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError) as exc:
            raise TokenInvalid(f"malformed token ({type(exc).__name__})") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenInvalid("unknown or missing kid")
        key = self._keys.verification_key(kid)
        if key is None:
            raise UnknownKey("unknown or missing kid")
        if canonical_alg(str(header.get("alg"))) != key.alg:
            raise TokenInvalid("alg does not match the key")
        if typ is not None and not _typ_matches(header.get("typ"), typ):
            raise TokenInvalid(f"typ is not {typ}")
        try:
            decoded = jwt.decode(token, key.key, algorithms=[key.alg])
        except (JoseError, ValueError) as exc:
            raise TokenInvalid(f"signature or payload invalid ({type(exc).__name__})") from None
        claims = dict(decoded.claims)
        options: dict[str, Any] = {"iss": {"essential": True, "value": self.issuer}}
        if audience is not None:
            options["aud"] = {"essential": True, "value": audience}
        registry = JWTClaimsRegistry(now=self.now, leeway=LEEWAY, **options)
        if not check_expiry:
            claims_for_check = {k: v for k, v in claims.items() if k not in ("exp", "nbf", "iat")}
        else:
            claims_for_check = claims
            if "exp" not in claims:
                raise TokenInvalid("missing exp")
        try:
            registry.validate(claims_for_check)
        except JoseError as exc:
            raise TokenInvalid(f"claims invalid ({exc.error}: {exc.description})") from None
        return key, claims

    async def verify_current(
        self, token: str, *, typ: str | None, audience: str | None, check_expiry: bool = True
    ) -> dict[str, Any]:
        """:meth:`verify`, after one (rate-limited) reload of the key set when the token names a
        key this node doesn't know: one rotated in on another node whose announcement it missed."""
        return (await self._verify_current(token, typ=typ, audience=audience, check_expiry=check_expiry))[1]

    async def _verify_current(
        self, token: str, *, typ: str | None, audience: str | None, check_expiry: bool = True
    ) -> tuple[LoadedKey, dict[str, Any]]:
        try:
            return self._verify(token, typ=typ, audience=audience, check_expiry=check_expiry)
        except UnknownKey:
            if not await self._keys.reload_for_unknown_kid():
                raise
        return self._verify(token, typ=typ, audience=audience, check_expiry=check_expiry)

    def verify_id_token_hint(self, token: str) -> dict[str, Any]:
        """An ID token this server issued, to any client, expired or not: what an id_token_hint
        must be (OIDC Core §3.1.2.1; RP-Initiated Logout §2). Raises TokenInvalid."""
        return self.verify(token, typ=ID_TOKEN_TYP, audience=None, check_expiry=False)

    async def verify_access_token(self, token: str) -> dict[str, Any]:
        claims = self._verified_before(token)
        if claims is None:
            key, claims = await self._verify_current(token, typ=ACCESS_TOKEN_TYP, audience=self.access_token_audience)
            self._remember_verified(token, key, claims)
        jti, grant_id = claims.get("jti"), claims.get(GRANT_CLAIM)
        if not isinstance(jti, str) or (grant_id is not None and not isinstance(grant_id, str)):
            raise TokenInvalid("malformed jti or grant")
        if await self.denylist.is_revoked(jti, grant_id):
            raise TokenInvalid("revoked")
        return claims

    def _verified_before(self, token: str) -> dict[str, Any] | None:
        """The claims of an access token verified before, while its key is still published with
        the same material (a retired or reloaded key forgets it) and it has not expired since."""
        found = self._verified.get(token)
        if found is None:
            return None
        key, claims = found
        if self._keys.verification_key(key.kid) is not key or claims["exp"] <= self.now() - LEEWAY:
            del self._verified[token]
            return None
        self._verified.move_to_end(token)
        return dict(claims)

    def _remember_verified(self, token: str, key: LoadedKey, claims: dict[str, Any]) -> None:
        if not isinstance(claims.get("exp"), int):
            return
        self._verified[token] = (key, dict(claims))
        while len(self._verified) > VERIFIED_ACCESS_TOKENS:
            self._verified.popitem(last=False)

    # -- revocation (recorded by the caller's unit of work, then cached: idp.oauth.denylist) ---

    def access_token_end(self, exp: int) -> datetime:
        """When an access token expiring at ``exp`` is refused anyway (verification's leeway)."""
        return datetime.fromtimestamp(exp + LEEWAY, UTC)

    def grant_revocation_end(self) -> datetime:
        """When the last access token a grant revoked now could have issued is refused anyway: one
        more leeway for a token a request in flight issues while the revocation waits on its rows."""
        return datetime.fromtimestamp(self.now() + self.access_token_ttl + 2 * LEEWAY, UTC)

    async def deny_access_token(self, jti: str, expires_at: datetime) -> None:
        await self.denylist.deny_access_token(jti, expires_at)

    async def deny_grant(self, grant_id: str, until: datetime) -> None:
        await self.denylist.deny_grant(grant_id, until)

    async def revoke_access_token(self, jti: str, exp: int) -> None:
        """Revoke one access token outside any unit of work: recorded, then cached."""
        await self.denylist.revoke_access_token(jti, self.access_token_end(exp))

    def peek_claims(self, token: str) -> dict[str, Any] | None:
        """Claims of a token we signed, without time checks (for hints and revocation)."""
        try:
            return self.verify(token, typ=None, audience=None, check_expiry=False)
        except TokenInvalid:
            return None
