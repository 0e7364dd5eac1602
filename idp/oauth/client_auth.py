"""Client authentication at the token, introspection and revocation endpoints.

``authenticate_request`` is what the endpoints call: it counts the attempt against the rate
limits, parses what the request carried (``parse_client_credentials``), then
``authenticate_client`` returns the registered, enabled client or raises ``InvalidClient`` /
``InvalidRequest``. Supported methods: ``client_secret_basic``, ``client_secret_post``,
``private_key_jwt`` and ``none`` (public clients). A client must use exactly the method it is
registered for. Every failure that depends on what is registered for the client (its method, its
secret, its keys) gets the same generic answer as an unknown client. No Quart here: plain
arguments in, a client out.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, InvalidKeyCurveError, JoseError, UnsupportedKeyAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import Key, KeySet, OKPKey
from joserfc.jws import JWSRegistry

from idp.oauth.errors import InvalidClient, InvalidRequest, OAuthError
from idp.oauth.params import single_value
from idp.oauth.store import Authenticate, Clients
from idp.security.ratelimit import RateLimits
from idp.security.tokens import verify_secret
from idp.storage.kv import KeyValueStore
from idp.storage.models import OAuthClient

__all__ = (
    "ASSERTION_ALGS",
    "ASSERTION_LEEWAY",
    "ASSERTION_MAX_LIFETIME",
    "ASSERTION_TYPE",
    "CLIENT_AUTH_ENDPOINTS",
    "ClientCredentials",
    "JWKSFetcher",
    "authenticate_client",
    "authenticate_request",
    "parse_client_credentials",
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Asymmetric only: an HMAC or "none" alg would let anyone holding the public key forge assertions
# (key confusion, ASVS 9.1.2). "EdDSA" is the RFC 8037 name of what RFC 9864 calls "Ed25519".
ASSERTION_ALGS = ("RS256", "PS256", "ES256", "Ed25519", "EdDSA")
# Clock skew tolerated on exp / iat / nbf, in seconds.
ASSERTION_LEEWAY = 60
# An assertion is a short-lived credential; a far-away exp would make the jti replay cache hold it
# for as long (RFC 7523 §3 lets the server reject an exp "unreasonably far in the future").
ASSERTION_MAX_LIFETIME = 3600

JWKSFetcher = Callable[[str], Awaitable[Mapping[str, Any]]]
"""Fetches a client's ``jwks_uri`` and returns the JWK Set; raises on any failure."""

# The endpoints where clients authenticate, and what the 429 says was attempted too often. Each
# has counters of its own (a resource server introspecting a lot can't starve the same client's
# token requests) under the [rate_limits] token_per_ip / token_per_client settings.
CLIENT_AUTH_ENDPOINTS = {
    "/token": "token requests",
    "/introspect": "introspection requests",
    "/revoke": "revocation requests",
}

SECRET_METHODS = ("client_secret_basic", "client_secret_post")
ASSERTION_METHOD = "private_key_jwt"

# RFC 6749 Appendix A.1 / A.2: client-id and client-secret are *VSCHAR (%x20-7E). Anything else
# cannot be registered, so it is refused as an unknown client without a database look-up.
_VSCHAR = re.compile(r"[\x20-\x7E]{1,255}")
_MAX_JTI_LENGTH = 256
_KEY_TYPE_FOR_ALG = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC", "Ed25519": "OKP", "EdDSA": "OKP"}
_JTI_KEY = "client_assertion_jti:{client_id}:{jti}"

log = logging.getLogger("idp.client_auth")


# -- what the request carried ------------------------------------------------------------------


@dataclass(frozen=True)
class ClientCredentials:
    """The client credentials of one request, as presented (nothing verified yet).

    ``method`` is the detected method name, or None when the request carried no client
    identification at all. The secret and the assertion stay out of ``repr`` (and so out of logs).
    """

    client_id: str | None
    client_secret: str | None = field(default=None, repr=False)
    client_assertion: str | None = field(default=None, repr=False)
    client_assertion_type: str | None = None
    method: str | None = None


def _form_value(form: Mapping[str, str], name: str) -> str | None:
    # RFC 6749 §3.2: parameters sent without a value are treated as if omitted, and none may be
    # repeated (the first of two client_ids would otherwise win).
    return single_value(form, name)


def _parse_basic(authorization_header: str) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` from a Basic header; None when the scheme is not Basic."""
    scheme, _, encoded = authorization_header.strip().partition(" ")
    if scheme.lower() != "basic":  # RFC 7235 §2.1: the auth-scheme is case-insensitive
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise InvalidClient("the Basic authorization header is not valid base64 of UTF-8 text") from None
    raw_id, colon, raw_secret = decoded.partition(":")
    if not colon:
        raise InvalidClient("the Basic authorization header must carry client_id:client_secret")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before joining, so decode "+" as a space too.
    client_id = unquote_plus(raw_id)
    if not client_id:
        raise InvalidClient("the Basic authorization header has an empty client_id")
    return client_id, unquote_plus(raw_secret)


def parse_client_credentials(authorization_header: str | None, form: Mapping[str, str]) -> ClientCredentials:
    """Detect the method the request used; refuse a request that uses more than one.

    Raises InvalidClient for a malformed Basic header, InvalidRequest for a repeated parameter
    (RFC 6749 §3.2) and for several methods at once (RFC 6749 §2.3: "MUST NOT use more than one
    authentication method in each request").
    Authorization schemes other than Basic are not client authentication and are ignored.
    """
    basic = _parse_basic(authorization_header) if authorization_header else None
    form_id = _form_value(form, "client_id")
    form_secret = _form_value(form, "client_secret")
    assertion = _form_value(form, "client_assertion")
    assertion_type = _form_value(form, "client_assertion_type")

    used = [
        name
        for name, present in (
            ("client_secret_basic", basic is not None),
            ("client_secret_post", form_secret is not None),
            (ASSERTION_METHOD, assertion is not None or assertion_type is not None),
        )
        if present
    ]
    if len(used) > 1:
        raise InvalidRequest("use exactly one client authentication method")

    if basic is not None:
        basic_id, basic_secret = basic
        if form_id is not None and form_id != basic_id:
            raise InvalidClient("client_id in the body does not match the Basic authorization header")
        return ClientCredentials(client_id=basic_id, client_secret=basic_secret, method="client_secret_basic")
    if used:
        return ClientCredentials(
            client_id=form_id,
            client_secret=form_secret,
            client_assertion=assertion,
            client_assertion_type=assertion_type,
            method=used[0],
        )
    return ClientCredentials(client_id=form_id, method="none" if form_id is not None else None)


# -- authentication ----------------------------------------------------------------------------


def authenticator(
    endpoint: str,
    authorization_header: str | None,
    form: Mapping[str, str],
    *,
    kv: KeyValueStore,
    issuer: str,
    ip: str,
    enforce_limits: RateLimits,
) -> Authenticate:
    """The request's client authentication, run against the clients of the endpoint's unit of
    work (what the token, introspection and revocation endpoints take; idp.oauth.store)."""

    async def authenticate(clients: Clients) -> OAuthClient:
        return await authenticate_request(
            endpoint,
            authorization_header,
            form,
            clients=clients,
            kv=kv,
            issuer=issuer,
            ip=ip,
            enforce_limits=enforce_limits,
        )

    return authenticate


async def authenticate_request(
    endpoint: str,
    authorization_header: str | None,
    form: Mapping[str, str],
    *,
    clients: Clients,
    kv: KeyValueStore,
    issuer: str,
    ip: str,
    enforce_limits: RateLimits,
) -> OAuthClient:
    """Client authentication at the token (RFC 6749 §2.3), introspection (RFC 7662 §2.1) and
    revocation (RFC 7009 §2.1) endpoints, with their rate limits (ASVS 6.3.1, 15.2.2)."""
    what = CLIENT_AUTH_ENDPOINTS[endpoint]
    endpoint_url = f"{issuer}{endpoint}"
    # Every attempt counts against its address: secret guessing is limited. Only an authenticated
    # client spends its own budget: client ids are public, so failures counted per client would
    # let anyone lock a client out.
    per_ip: dict[str, str | None] = {"token_per_ip": f"{endpoint} {ip}"}
    try:
        credentials = parse_client_credentials(authorization_header, form)
    except OAuthError:
        await enforce_limits(per_ip, what)  # an address over its limit is told 429 first
        raise
    if not _in_memory(clients, credentials):
        # Counted first, so an address over its limit costs no client look-up (random ids are
        # never cached). (An assertion refused with 429 afterwards is spent: its jti was recorded
        # while authenticating, so a replayed one can't use the budget.)
        await enforce_limits(per_ip, what)
        client = await authenticate_client(clients, kv, credentials, issuer=issuer, endpoint_url=endpoint_url)
        await enforce_limits({"token_per_client": f"{endpoint} {client.id}"}, what)
        return client
    # A secret or public client that is in memory costs no look-up, and checking it costs no I/O
    # (a digest compared): it is checked first and both limits are counted in one round trip
    # (issue 14). A refusal is still answered only once the address was counted, so an address
    # over its limit is told 429 whatever it sent, as on the path above.
    try:
        client = await authenticate_client(clients, kv, credentials, issuer=issuer, endpoint_url=endpoint_url)
    except Exception:
        await enforce_limits(per_ip, what)
        raise
    await enforce_limits({**per_ip, "token_per_client": f"{endpoint} {client.id}"}, what)
    return client


def _in_memory(clients: Clients, credentials: ClientCredentials) -> bool:
    """Whether the credentials name, by a secret or no client authentication, a client that
    ``clients`` holds in memory (authenticating it needs no I/O)."""
    if credentials.client_id is None or credentials.method not in (*SECRET_METHODS, "none"):
        return False
    return clients.in_memory(credentials.client_id) is not None


async def authenticate_client(
    clients: Clients,
    kv: KeyValueStore,
    credentials: ClientCredentials,
    *,
    issuer: str,
    endpoint_url: str,
    now: float | None = None,
    http_fetch_jwks: JWKSFetcher | None = None,
) -> OAuthClient:
    """The registered, enabled client the credentials authenticate, or an OAuth error.

    ``endpoint_url`` is the URL of the endpoint being called (an accepted assertion ``aud``
    besides ``issuer``). ``http_fetch_jwks`` enables ``private_key_jwt`` for clients registered
    with a ``jwks_uri`` instead of ``jwks``; caching and rate limiting are the fetcher's job.
    """
    method = credentials.method
    if method is None:
        raise InvalidClient("client authentication is required")
    _check_single_method(credentials)
    if method in SECRET_METHODS:
        return await _authenticate_with_secret(clients, credentials, method)
    if method == ASSERTION_METHOD:
        return await _authenticate_with_assertion(
            clients,
            kv,
            credentials,
            issuer=issuer,
            endpoint_url=endpoint_url,
            now=time.time() if now is None else now,
            http_fetch_jwks=http_fetch_jwks,
        )
    if method == "none":
        return await _authenticate_public(clients, credentials)
    raise InvalidClient("unsupported client authentication method")


def _check_single_method(credentials: ClientCredentials) -> None:
    """Credentials built without ``parse_client_credentials`` still carry one method only."""
    has_secret = credentials.client_secret is not None
    has_assertion = credentials.client_assertion is not None or credentials.client_assertion_type is not None
    consistent = {
        "client_secret_basic": not has_assertion,
        "client_secret_post": not has_assertion,
        ASSERTION_METHOD: not has_secret,
        "none": not (has_secret or has_assertion),
    }.get(credentials.method or "", True)
    if not consistent:
        raise InvalidRequest("use exactly one client authentication method")


async def _load_client(clients: Clients, client_id: str | None) -> OAuthClient | None:
    """The client, or None when it is unknown or disabled (callers must not tell which)."""
    if client_id is None or not _VSCHAR.fullmatch(client_id):
        return None
    client = await clients.get(client_id)
    if client is None or client.disabled:
        return None
    return client


def _registered_for(client: OAuthClient | None, method: str) -> OAuthClient | None:
    """The client when it is registered for ``method``, else None.

    The registered method is a security decision (a key-based client must never be accepted with
    a secret), so there is no fallback to another one (OIDC Registration §2). A client presented
    with another method is refused exactly like an unknown client or a wrong secret: naming the
    registered method would tell anyone which ids exist and how they authenticate."""
    if client is None or client.token_endpoint_auth_method != method:
        return None
    return client


def _refused(client_id: str | None, reason: str) -> InvalidClient:
    """The generic refusal for a failure that depends on what is registered for the client (it
    tells the caller nothing); the reason goes to the log for the operator."""
    log.info("client authentication failed", extra={"client_id": client_id, "reason": reason})
    return InvalidClient()


async def _authenticate_with_secret(clients: Clients, credentials: ClientCredentials, method: str) -> OAuthClient:
    secret = credentials.client_secret
    if credentials.client_id is None or secret is None:
        raise InvalidClient(f"{method} needs both client_id and client_secret")
    client = _registered_for(await _load_client(clients, credentials.client_id), method)
    # Compare even for an unknown client or a wrong method (against no digest: the same work), so
    # the response time doesn't tell which ids exist or what they are registered for.
    matches = verify_secret(secret, client.secret_digest if client is not None else None)
    if client is None or not matches:
        raise InvalidClient()
    return client


async def _authenticate_public(clients: Clients, credentials: ClientCredentials) -> OAuthClient:
    client = _registered_for(await _load_client(clients, credentials.client_id), "none")
    if client is None:
        raise InvalidClient()
    return client


# -- private_key_jwt (RFC 7523 §2.2 and §3, OIDC Core §9) ---------------------------------------


class _Ed25519Signature(JWSAlgModel):
    """EdDSA pinned to the Ed25519 curve, under either name ("Ed25519" or the older "EdDSA").

    joserfc's own "EdDSA" accepts Ed448 too and warns on every use because RFC 9864 deprecates the
    name as ambiguous; pinning the curve removes the ambiguity, so both names verify the same way.
    """

    key_type = "OKP"

    def __init__(self, name: str) -> None:
        self.name = name
        self.description = f"{name} (EdDSA on Ed25519) for client assertions"

    def check_key(self, key: Any) -> None:
        key.check_use("sig")
        if not isinstance(key, OKPKey) or key.curve_name != "Ed25519":
            raise InvalidKeyCurveError(f"{self.name} needs an Ed25519 key")
        if key.get("alg") not in (None, "Ed25519", "EdDSA"):
            raise UnsupportedKeyAlgorithmError(f"this key is registered for {key.get('alg')}")

    def sign(self, msg: bytes, key: Any) -> bytes:
        op_key = key.get_op_key("sign")
        if not isinstance(op_key, Ed25519PrivateKey):
            raise InvalidKeyCurveError(f"{self.name} needs an Ed25519 key")
        return op_key.sign(msg)

    def verify(self, msg: bytes, sig: bytes, key: Any) -> bool:
        op_key = key.get_op_key("verify")
        if not isinstance(op_key, Ed25519PublicKey):
            raise InvalidKeyCurveError(f"{self.name} needs an Ed25519 key")
        try:
            op_key.verify(sig, msg)
        except InvalidSignature:
            return False
        return True


class _AssertionRegistry(JWSRegistry):
    """Only the algorithms ASSERTION_ALGS names exist here: HS* and none can't even be looked up."""

    algorithms: dict[str, JWSAlgModel] = {
        **{name: JWSRegistry.algorithms[name] for name in ("RS256", "PS256", "ES256")},
        "Ed25519": _Ed25519Signature("Ed25519"),
        "EdDSA": _Ed25519Signature("EdDSA"),
    }
    recommended: list[str] = []


def _canonical_alg(alg: object) -> object:
    return "Ed25519" if alg == "EdDSA" else alg


def _peek_assertion(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, unverified: only to find the client and its key."""
    try:
        obj = jws.extract_compact(assertion.encode("ascii"))
        claims = json.loads(obj.payload)
    except (JoseError, ValueError):  # UnicodeError and JSONDecodeError are ValueErrors
        raise InvalidClient("client_assertion is not a well-formed signed JWT") from None
    if not isinstance(claims, dict):
        raise InvalidClient("client_assertion payload is not a JSON object")
    return dict(obj.headers()), claims


async def _authenticate_with_assertion(
    clients: Clients,
    kv: KeyValueStore,
    credentials: ClientCredentials,
    *,
    issuer: str,
    endpoint_url: str,
    now: float,
    http_fetch_jwks: JWKSFetcher | None,
) -> OAuthClient:
    if credentials.client_assertion_type != ASSERTION_TYPE:
        raise InvalidClient(f"client_assertion_type must be {ASSERTION_TYPE}")
    assertion = credentials.client_assertion
    if assertion is None:
        raise InvalidClient("client_assertion is missing")

    header, unverified = _peek_assertion(assertion)
    alg = header.get("alg")
    if alg not in ASSERTION_ALGS:
        raise InvalidClient(f"client assertion alg is not allowed (use one of {', '.join(ASSERTION_ALGS)})")
    # RFC 7523 §3 / OIDC Core §9: iss and sub are both the client_id.
    client_id = unverified.get("sub")
    if not isinstance(client_id, str) or not client_id or unverified.get("iss") != client_id:
        raise InvalidClient("client assertion iss and sub must both be the client_id")
    if credentials.client_id is not None and credentials.client_id != client_id:
        raise InvalidClient("client_id does not match the client assertion's sub")

    client = _registered_for(await _load_client(clients, client_id), ASSERTION_METHOD)
    if client is None:
        raise InvalidClient()

    # Until the signature verifies nothing proves the caller is the client, so failures that
    # depend on its registration (keys, kids, jwks_uri) read like an unknown client's.
    keys = await _client_keys(client, http_fetch_jwks)
    claims = _verify_signature(client.id, assertion, alg, header.get("kid"), keys)
    jti, exp = _check_assertion_claims(claims, client_id, issuer=issuer, endpoint_url=endpoint_url, now=now)

    # RFC 7523 §3 item 7 / OIDC Core §9: a jti is single use. The record lives as long as the
    # assertion could still be accepted; SET NX makes two concurrent uses resolve to one winner.
    ttl = exp - now + ASSERTION_LEEWAY
    if not await kv.set_if_absent(_JTI_KEY.format(client_id=client_id, jti=jti), "1", ttl=ttl):
        raise InvalidClient("client assertion has already been used")
    return client


async def _client_keys(client: OAuthClient, http_fetch_jwks: JWKSFetcher | None) -> KeySet:
    data: Mapping[str, Any]
    if client.jwks is not None:
        data = client.jwks
    elif client.jwks_uri:
        if http_fetch_jwks is None:
            raise _refused(client.id, "the client's jwks_uri is not supported yet; register its jwks instead")
        try:
            data = await http_fetch_jwks(client.jwks_uri)
        except Exception as exc:  # whatever the fetcher raises, the client can't be authenticated
            raise _refused(client.id, "the client's jwks_uri could not be fetched") from exc
    else:
        raise _refused(client.id, "the client has no registered keys")
    entries = data.get("keys") if isinstance(data, Mapping) else None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise _refused(client.id, "the client's JWK Set is malformed")
    try:
        return KeySet.import_key_set({"keys": entries})
    except (JoseError, ValueError, TypeError) as exc:
        raise _refused(client.id, "the client's JWK Set cannot be imported") from exc


def _candidate_keys(keys: KeySet, alg: str, kid: object) -> list[Key]:
    usable = [
        key
        for key in keys
        if key.key_type == _KEY_TYPE_FOR_ALG[alg]
        and key.get("use") in (None, "sig")
        and _canonical_alg(key.get("alg")) in (None, _canonical_alg(alg))
    ]
    if kid is not None:
        usable = [key for key in usable if key.kid == kid]
    return usable


def _verify_signature(client_id: str, assertion: str, alg: str, kid: object, keys: KeySet) -> dict[str, Any]:
    candidates = _candidate_keys(keys, alg, kid)
    if not candidates:
        if kid is not None:
            raise _refused(client_id, f"no registered key of the client has the assertion's kid and suits {alg}")
        raise _refused(client_id, f"the client has no registered key for {alg}")
    registry = _AssertionRegistry(algorithms=[alg])
    # Without a kid several keys may fit; try each (the set is the client's own and small).
    for key in candidates:
        try:
            token = jwt.decode(assertion, key, registry=registry)
        except BadSignatureError:
            continue
        except JoseError as exc:
            # The error code names the check (unsupported_header, invalid_key_curve, ...) without
            # echoing anything from the assertion.
            raise _refused(client_id, f"client assertion could not be verified ({exc.error})") from None
        return dict(token.claims)
    raise _refused(client_id, "client assertion signature does not verify with the client's registered keys")


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """RFC 7519 §2: a NumericDate is a JSON number. Python's json accepts NaN and ±Infinity, which
    are not JSON (RFC 8259 §6): NaN passes every comparison below and would reach the jti record's
    TTL. Integers beyond a float's range don't convert. All are refused (ASVS 2.2.1)."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClient(f"client assertion {name} must be a NumericDate")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidClient(f"client assertion {name} must be a NumericDate") from None
    if not math.isfinite(number):
        raise InvalidClient(f"client assertion {name} must be a NumericDate")
    return number


def _check_assertion_claims(
    claims: Mapping[str, Any], client_id: str, *, issuer: str, endpoint_url: str, now: float
) -> tuple[str, float]:
    """RFC 7523 §3 checks on the verified claims; returns (jti, exp)."""
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidClient("client assertion iss and sub must both be the client_id")

    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    # RFC 7523 §3 item 3: the audience identifies this server: its issuer or the endpoint URL.
    if not any(value in (issuer, endpoint_url) for value in audiences if isinstance(value, str)):
        raise InvalidClient("client assertion aud must be the issuer or the endpoint URL")

    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise InvalidClient("client assertion exp is required")
    if exp <= now - ASSERTION_LEEWAY:
        raise InvalidClient("client assertion has expired")
    if exp > now + ASSERTION_MAX_LIFETIME + ASSERTION_LEEWAY:
        raise InvalidClient("client assertion exp is more than 1 hour in the future")
    for name in ("iat", "nbf"):
        moment = _numeric_date(claims, name)
        if moment is not None and moment > now + ASSERTION_LEEWAY:
            raise InvalidClient(f"client assertion {name} is in the future")

    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidClient("client assertion jti is required")
    if len(jti) > _MAX_JTI_LENGTH:
        raise InvalidClient(f"client assertion jti is longer than {_MAX_JTI_LENGTH} characters")
    return jti, exp
