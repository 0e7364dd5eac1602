"""Client authentication: secrets (Basic and post), public clients, and private_key_jwt assertions.

Each failure asserts the error class, its ``error`` code and a description fragment; successes
assert the client returned and, for assertions, the jti recorded in the key-value store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import pytest
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from sqlalchemy import update
from werkzeug.datastructures import MultiDict

import idp.oauth.client_auth as client_auth
from idp.errors import IdPError
from idp.oauth.client_auth import (
    ASSERTION_TYPE,
    ClientCredentials,
    authenticate_client,
    parse_client_credentials,
)
from idp.oauth.clients import ClientSpec, CreatedClient, create_client
from idp.oauth.errors import InvalidClient, InvalidRequest
from idp.security.tokens import secret_digest, sha256_digest
from idp.storage.models import AuthorizationCode, OAuthClient
from idp.storage.repositories import ClientRepository

REDIRECT = "https://app.example.com/callback"
TOKEN_PATH = "/token"


# -- helpers ---------------------------------------------------------------------------------------


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode each part, then Basic-encode ``id:secret``."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def endpoint(runtime: Any) -> str:
    return runtime.settings.issuer + TOKEN_PATH


async def authenticate(
    runtime: Any, authorization: str | None = None, form: dict[str, str] | None = None, **kwargs: Any
) -> OAuthClient:
    credentials = parse_client_credentials(authorization, form or {})
    async with runtime.units() as uow:
        return await authenticate_client(
            uow.clients,
            runtime.kv,
            credentials,
            issuer=runtime.settings.issuer,
            endpoint_url=endpoint(runtime),
            **kwargs,
        )


async def expect_error(
    runtime: Any,
    error_cls: type[IdPError],
    fragment: str,
    authorization: str | None = None,
    form: dict[str, str] | None = None,
) -> IdPError:
    with pytest.raises(error_cls) as caught:
        await authenticate(runtime, authorization, form)
    exc = caught.value
    assert type(exc) is error_cls
    assert fragment in exc.description
    if error_cls is InvalidClient:
        assert exc.error == "invalid_client"
        assert exc.status_code == 401
        assert exc.headers["WWW-Authenticate"] == 'Basic realm="idp"'
    else:
        assert exc.error == "invalid_request"
        assert exc.status_code == 400
    return exc


async def confidential(runtime: Any, method: str = "client_secret_basic", **spec: Any) -> CreatedClient:
    return await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name=f"app-{method}",
            client_type="confidential",
            redirect_uris=[REDIRECT],
            token_endpoint_auth_method=method,
            **spec,
        ),
    )


async def public(runtime: Any) -> CreatedClient:
    return await create_client(
        runtime.db, runtime.events, ClientSpec(name="spa", client_type="public", redirect_uris=[REDIRECT])
    )


class Keys:
    """The client's private keys; only the public halves are registered."""

    def __init__(self) -> None:
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})
        self.ec = ECKey.generate_key("P-256")  # registered without a kid: found by key type
        self.ed = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"})

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [self.rsa.as_dict(private=False), self.ec.as_dict(private=False), self.ed.as_dict()]}


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
async def jwt_client(runtime: Any, keys: Keys) -> OAuthClient:
    created = await confidential(runtime, "private_key_jwt", jwks=keys.public_jwks())
    assert created.client_secret is None
    return created.client


def assertion_claims(runtime: Any, client_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": endpoint(runtime),
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def sign(claims: dict[str, Any], key: Any, alg: str = "RS256", kid: str | None = None) -> str:
    header: dict[str, Any] = {"alg": alg}
    if kid is not None:
        header["kid"] = kid
    return jwt.encode(header, claims, key, algorithms=[alg])


def assertion_form(assertion: str, **extra: str) -> dict[str, str]:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion, **extra}


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- client_secret_basic / client_secret_post ----------------------------------------------------


async def test_basic_authenticates(runtime: Any) -> None:
    created = await confidential(runtime)
    assert created.client_secret is not None

    client = await authenticate(runtime, basic(created.client.id, created.client_secret))

    assert client.id == created.client.id
    assert client.token_endpoint_auth_method == "client_secret_basic"


async def test_basic_decodes_form_urlencoded_id_and_secret(runtime: Any) -> None:
    # Neither the registry nor random_token produces such characters, so store the row directly.
    client_id = "svc one+two:3"  # a space, a plus and a colon
    secret = "p@ss w+rd:%/=&?#~"
    async with runtime.db.session() as session:
        await ClientRepository(session).add(
            OAuthClient(
                id=client_id,
                name="special",
                client_type="confidential",
                secret_digest=secret_digest(secret),
                token_endpoint_auth_method="client_secret_basic",
            )
        )
    header = basic(client_id, secret)
    # quote_plus turns the space into "+" and the plus into "%2B": a plain unquote would differ.
    assert base64.b64decode(header.split()[1]).decode().startswith("svc+one%2Btwo%3A3:")

    client = await authenticate(runtime, header)

    assert client.id == client_id
    credentials = parse_client_credentials(header, {})
    assert (credentials.client_id, credentials.client_secret) == (client_id, secret)


async def test_basic_scheme_is_case_insensitive_and_body_client_id_may_repeat_it(runtime: Any) -> None:
    created = await confidential(runtime)
    assert created.client_secret is not None
    header = basic(created.client.id, created.client_secret).replace("Basic", "bAsIc")

    client = await authenticate(runtime, header, {"client_id": created.client.id})

    assert client.id == created.client.id


async def test_post_authenticates(runtime: Any) -> None:
    created = await confidential(runtime, "client_secret_post")
    assert created.client_secret is not None

    client = await authenticate(runtime, form={"client_id": created.client.id, "client_secret": created.client_secret})

    assert client.id == created.client.id
    assert parse_client_credentials(None, {"client_id": "x", "client_secret": "y"}).method == "client_secret_post"


async def test_none_authenticates_public_client(runtime: Any) -> None:
    created = await public(runtime)
    assert created.client_secret is None

    client = await authenticate(runtime, form={"client_id": created.client.id})

    assert client.id == created.client.id
    assert client.client_type == "public"


async def test_wrong_secret_is_refused_without_echoing_it(runtime: Any) -> None:
    created = await confidential(runtime)
    wrong = "not-the-secret-" + uuid.uuid4().hex

    exc = await expect_error(runtime, InvalidClient, "Client authentication failed", basic(created.client.id, wrong))

    assert wrong not in exc.description
    assert wrong not in repr(parse_client_credentials(basic(created.client.id, wrong), {}))


async def test_wrong_secret_post_is_refused(runtime: Any) -> None:
    created = await confidential(runtime, "client_secret_post")

    await expect_error(
        runtime,
        InvalidClient,
        "Client authentication failed",
        form={"client_id": created.client.id, "client_secret": "x"},
    )


async def test_unknown_client_is_refused_like_a_wrong_secret_and_still_compares(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[str, str | None]] = []
    real = client_auth.verify_secret

    def spy(secret: str, stored: str | None) -> bool:
        compared.append((secret, stored))
        return real(secret, stored)

    monkeypatch.setattr(client_auth, "verify_secret", spy)

    await expect_error(runtime, InvalidClient, "Client authentication failed", basic("no-such-client", "whatever"))

    assert compared == [("whatever", None)]


async def test_unknown_public_client_is_refused(runtime: Any) -> None:
    await expect_error(runtime, InvalidClient, "Client authentication failed", form={"client_id": "no-such-client"})


@pytest.mark.parametrize(
    "client_id", ["bad\x00id", "caf\u00e9", "x" * 200, "x" * 300], ids=["nul", "non-ascii", "200", "300"]
)
async def test_odd_client_ids_are_unknown_clients(runtime: Any, client_id: str) -> None:
    # RFC 6749 Appendix A.1 (VSCHAR); NUL bytes never reach PostgreSQL, long ids are just unknown.
    await expect_error(runtime, InvalidClient, "Client authentication failed", basic(client_id, "x"))
    await expect_error(runtime, InvalidClient, "Client authentication failed", form={"client_id": client_id})


async def test_disabled_client_is_refused_like_an_unknown_one(runtime: Any) -> None:
    created = await confidential(runtime)
    assert created.client_secret is not None
    async with runtime.db.session() as session:
        await session.execute(update(OAuthClient).where(OAuthClient.id == created.client.id).values(disabled=True))

    exc = await expect_error(
        runtime, InvalidClient, "Client authentication failed", basic(created.client.id, created.client_secret)
    )

    assert exc.description == InvalidClient().description


# A client presented with a method it isn't registered for is answered exactly like an unknown
# client or a wrong secret: naming the registered method would tell a caller which ids exist and
# how they authenticate before any credential was checked (OIDC Registration §2:
# token_endpoint_auth_method is fixed at registration, so there is no fallback either).


async def expect_generic(runtime: Any, authorization: str | None = None, form: dict[str, str] | None = None) -> None:
    exc = await expect_error(runtime, InvalidClient, "Client authentication failed", authorization, form)
    assert exc.description == InvalidClient().description


async def test_basic_client_using_post_is_refused(runtime: Any) -> None:
    created = await confidential(runtime, "client_secret_basic")
    assert created.client_secret is not None

    await expect_generic(runtime, form={"client_id": created.client.id, "client_secret": created.client_secret})


async def test_post_client_using_basic_is_refused(runtime: Any) -> None:
    created = await confidential(runtime, "client_secret_post")
    assert created.client_secret is not None

    await expect_generic(runtime, basic(created.client.id, created.client_secret))


async def test_confidential_client_without_its_secret_is_refused(runtime: Any) -> None:
    created = await confidential(runtime)

    await expect_generic(runtime, form={"client_id": created.client.id})


async def test_public_client_presenting_a_secret_is_refused(runtime: Any) -> None:
    created = await public(runtime)

    await expect_generic(runtime, basic(created.client.id, "anything"))
    await expect_generic(runtime, form={"client_id": created.client.id, "client_secret": "anything"})


async def test_secret_client_using_an_assertion_is_refused(runtime: Any, keys: Keys) -> None:
    created = await confidential(runtime)
    assertion = sign(assertion_claims(runtime, created.client.id), keys.rsa, kid="rsa-1")

    await expect_generic(runtime, form=assertion_form(assertion))


async def test_jwt_client_using_a_secret_is_refused(runtime: Any, jwt_client: OAuthClient) -> None:
    await expect_generic(runtime, basic(jwt_client.id, "guess"))
    await expect_generic(runtime, form={"client_id": jwt_client.id, "client_secret": "guess"})


@pytest.mark.parametrize(
    ("registered", "presented"),
    [
        ("client_secret_basic", "client_secret_post"),
        ("client_secret_post", "client_secret_basic"),
        ("private_key_jwt", "client_secret_basic"),
        ("private_key_jwt", "client_secret_post"),
        ("none", "client_secret_basic"),
        ("none", "client_secret_post"),
    ],
)
async def test_a_secret_under_the_wrong_method_is_still_compared(
    runtime: Any, keys: Keys, monkeypatch: pytest.MonkeyPatch, registered: str, presented: str
) -> None:
    # Same work as a wrong secret (the dummy comparison), so timing doesn't tell the method either.
    if registered == "none":
        client_id = (await public(runtime)).client.id
    else:
        client_id = (
            await confidential(
                runtime, registered, jwks=keys.public_jwks() if registered == "private_key_jwt" else None
            )
        ).client.id
    compared: list[tuple[str, str | None]] = []
    real = client_auth.verify_secret

    def spy(secret: str, stored: str | None) -> bool:
        compared.append((secret, stored))
        return real(secret, stored)

    monkeypatch.setattr(client_auth, "verify_secret", spy)
    if presented == "client_secret_basic":
        await expect_generic(runtime, basic(client_id, "some-secret"))
    else:
        await expect_generic(runtime, form={"client_id": client_id, "client_secret": "some-secret"})

    assert compared == [("some-secret", None)]


@pytest.mark.parametrize(
    ("with_basic", "form"),
    [
        (True, {"client_secret": "s"}),
        (True, {"client_assertion_type": ASSERTION_TYPE, "client_assertion": "a.b.c"}),
        (False, {"client_id": "c", "client_secret": "s", "client_assertion": "a.b.c"}),
        (False, {"client_id": "c", "client_secret": "s", "client_assertion_type": ASSERTION_TYPE}),
    ],
    ids=["basic+post", "basic+assertion", "post+assertion", "post+assertion_type"],
)
async def test_two_methods_at_once_is_invalid_request(runtime: Any, with_basic: bool, form: dict[str, str]) -> None:
    created = await confidential(runtime)
    assert created.client_secret is not None
    header = basic(created.client.id, created.client_secret) if with_basic else None

    await expect_error(runtime, InvalidRequest, "use exactly one client authentication method", header, form)


async def test_inconsistent_credentials_built_by_hand_are_invalid_request(runtime: Any) -> None:
    credentials = ClientCredentials(client_id="c", client_secret="s", client_assertion="a.b.c", method="none")

    with pytest.raises(InvalidRequest, match="use exactly one client authentication method"):
        async with runtime.units() as uow:
            await authenticate_client(
                uow.clients, runtime.kv, credentials, issuer=runtime.settings.issuer, endpoint_url=endpoint(runtime)
            )


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("Basic !!!not-base64!!!", "not valid base64"),
        ("Basic " + base64.b64encode(b"no-colon-here").decode(), "client_id:client_secret"),
        ("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "not valid base64 of UTF-8"),
        ("Basic " + base64.b64encode(b":secret").decode(), "empty client_id"),
        ("Basic", "client_id:client_secret"),
    ],
    ids=["not-base64", "no-colon", "not-utf8", "empty-id", "empty"],
)
async def test_malformed_basic_header_is_invalid_client(runtime: Any, header: str, fragment: str) -> None:
    await expect_error(runtime, InvalidClient, fragment, header)


async def test_body_client_id_contradicting_basic_is_refused(runtime: Any) -> None:
    created = await confidential(runtime)
    assert created.client_secret is not None

    await expect_error(
        runtime,
        InvalidClient,
        "does not match the Basic authorization header",
        basic(created.client.id, created.client_secret),
        {"client_id": "someone-else"},
    )


async def test_no_credentials_at_all_is_invalid_client(runtime: Any) -> None:
    await expect_error(runtime, InvalidClient, "client authentication is required")
    # RFC 6749 §3.2: empty parameters count as absent; other schemes are not client auth.
    await expect_error(runtime, InvalidClient, "client authentication is required", "Bearer abc", {"client_id": ""})


# -- private_key_jwt -------------------------------------------------------------------------------


async def test_assertion_signed_with_rsa_authenticates_and_records_the_jti(
    runtime: Any, jwt_client: OAuthClient, keys: Keys
) -> None:
    claims = assertion_claims(runtime, jwt_client.id)
    assertion = sign(claims, keys.rsa, "RS256", kid="rsa-1")

    client = await authenticate(runtime, form=assertion_form(assertion, client_id=jwt_client.id))

    assert client.id == jwt_client.id
    key = f"client_assertion_jti:{jwt_client.id}:{claims['jti']}"
    assert await runtime.kv.get(key) == "1"
    ttl = await runtime.kv.ttl(key)
    assert ttl is not None and 300 < ttl <= 360  # until exp, plus the 60 s leeway


async def test_assertion_signed_with_ec_key_found_without_kid(
    runtime: Any, jwt_client: OAuthClient, keys: Keys
) -> None:
    assertion = sign(assertion_claims(runtime, jwt_client.id, aud=[runtime.settings.issuer]), keys.ec, "ES256")

    client = await authenticate(runtime, form=assertion_form(assertion))

    assert client.id == jwt_client.id


async def test_assertion_signed_with_rsa_pss_authenticates(runtime: Any, jwt_client: OAuthClient, keys: Keys) -> None:
    assertion = sign(assertion_claims(runtime, jwt_client.id), keys.rsa, "PS256", kid="rsa-1")

    assert (await authenticate(runtime, form=assertion_form(assertion))).id == jwt_client.id


async def test_assertion_signed_with_ed25519_under_both_names(
    runtime: Any, jwt_client: OAuthClient, keys: Keys
) -> None:
    modern = sign(assertion_claims(runtime, jwt_client.id), keys.ed, "Ed25519", kid="ed-1")
    # Only the client-side signing warns; verification maps "EdDSA" to Ed25519 without a warning.
    with pytest.warns(SecurityWarning, match="EdDSA"):
        legacy = sign(assertion_claims(runtime, jwt_client.id), keys.ed, "EdDSA", kid="ed-1")

    assert (await authenticate(runtime, form=assertion_form(modern))).id == jwt_client.id
    assert (await authenticate(runtime, form=assertion_form(legacy))).id == jwt_client.id


async def test_assertion_replay_is_refused(runtime: Any, jwt_client: OAuthClient, keys: Keys) -> None:
    assertion = sign(assertion_claims(runtime, jwt_client.id), keys.rsa, kid="rsa-1")
    await authenticate(runtime, form=assertion_form(assertion))

    await expect_error(runtime, InvalidClient, "client assertion has already been used", form=assertion_form(assertion))


async def test_jti_is_scoped_to_the_client(runtime: Any, keys: Keys) -> None:
    first = (await confidential(runtime, "private_key_jwt", jwks=keys.public_jwks())).client
    second = (await confidential(runtime, "private_key_jwt", jwks=keys.public_jwks())).client

    for client in (first, second):
        assertion = sign(assertion_claims(runtime, client.id, jti="shared-jti"), keys.rsa, kid="rsa-1")
        assert (await authenticate(runtime, form=assertion_form(assertion))).id == client.id


async def test_expired_assertion_is_refused(runtime: Any, jwt_client: OAuthClient, keys: Keys) -> None:
    now = int(time.time())
    assertion = sign(assertion_claims(runtime, jwt_client.id, iat=now - 600, exp=now - 61), keys.rsa, kid="rsa-1")

    await expect_error(runtime, InvalidClient, "client assertion has expired", form=assertion_form(assertion))


async def test_assertion_within_leeway_is_accepted(runtime: Any, jwt_client: OAuthClient, keys: Keys) -> None:
    now = int(time.time())
    assertion = sign(assertion_claims(runtime, jwt_client.id, exp=now - 30, iat=now + 30), keys.rsa, kid="rsa-1")

    assert (await authenticate(runtime, form=assertion_form(assertion))).id == jwt_client.id


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"jti": None}, "client assertion jti is required"),
        ({"jti": ""}, "client assertion jti is required"),
        ({"exp": None}, "client assertion exp is required"),
        ({"exp": "tomorrow"}, "client assertion exp must be a NumericDate"),
        ({"exp": int(time.time()) + 7200}, "more than 1 hour in the future"),
        ({"iat": int(time.time()) + 600}, "client assertion iat is in the future"),
        ({"nbf": int(time.time()) + 600}, "client assertion nbf is in the future"),
        ({"aud": "https://evil.example/token"}, "aud must be the issuer or the endpoint URL"),
        ({"aud": None}, "aud must be the issuer or the endpoint URL"),
        # ASVS 2.2.1 / RFC 7519 §2: a NumericDate is a finite JSON number. NaN passes every
        # comparison and overflowing integers break float(); neither may reach the jti TTL.
        ({"exp": float("nan")}, "client assertion exp must be a NumericDate"),
        ({"exp": float("inf")}, "client assertion exp must be a NumericDate"),
        ({"exp": float("-inf")}, "client assertion exp must be a NumericDate"),
        ({"exp": 10**400}, "client assertion exp must be a NumericDate"),
        ({"exp": True}, "client assertion exp must be a NumericDate"),
        ({"iat": float("nan")}, "client assertion iat must be a NumericDate"),
        ({"iat": float("-inf")}, "client assertion iat must be a NumericDate"),
        ({"iat": -(10**400)}, "client assertion iat must be a NumericDate"),
        ({"nbf": float("nan")}, "client assertion nbf must be a NumericDate"),
        ({"nbf": float("-inf")}, "client assertion nbf must be a NumericDate"),
        ({"nbf": False}, "client assertion nbf must be a NumericDate"),
    ],
    ids=[
        "missing-jti",
        "empty-jti",
        "missing-exp",
        "text-exp",
        "far-exp",
        "future-iat",
        "future-nbf",
        "wrong-aud",
        "no-aud",
        "nan-exp",
        "infinite-exp",
        "minus-infinite-exp",
        "overflowing-exp",
        "boolean-exp",
        "nan-iat",
        "minus-infinite-iat",
        "overflowing-iat",
        "nan-nbf",
        "minus-infinite-nbf",
        "boolean-nbf",
    ],
)
async def test_assertion_claims_are_checked(
    runtime: Any, jwt_client: OAuthClient, keys: Keys, overrides: dict[str, Any], fragment: str
) -> None:
    claims = assertion_claims(runtime, jwt_client.id, **overrides)
    assertion = sign(claims, keys.rsa, kid="rsa-1")

    await expect_error(runtime, InvalidClient, fragment, form=assertion_form(assertion))

    if claims.get("jti"):
        assert not await runtime.kv.exists(f"client_assertion_jti:{jwt_client.id}:{claims['jti']}")


async def test_token_request_with_a_nan_exp_is_invalid_client_not_a_server_error(
    client: Any, runtime: Any, keys: Keys
) -> None:
    """Security test 2026-12-01 L8 (ASVS 2.2.1, 9.2.1): signed with the registered key, "exp": NaN."""
    created = await confidential(
        runtime, "private_key_jwt", jwks=keys.public_jwks(), grant_types=["client_credentials"]
    )
    claims = assertion_claims(runtime, created.client.id, exp=float("nan"))
    assertion = sign(claims, keys.rsa, kid="rsa-1")

    response = await client.post("/token", form=assertion_form(assertion, grant_type="client_credentials"))

    body = await response.get_json()
    assert response.status_code == 401, body
    assert body == {"error": "invalid_client", "error_description": "client assertion exp must be a NumericDate"}
    assert response.headers["WWW-Authenticate"] == 'Basic realm="idp"'
    assert not await runtime.kv.exists(f"client_assertion_jti:{created.client.id}:{claims['jti']}")


async def test_iss_differing_from_sub_is_refused(runtime: Any, jwt_client: OAuthClient, keys: Keys) -> None:
    assertion = sign(assertion_claims(runtime, jwt_client.id, iss="someone-else"), keys.rsa, kid="rsa-1")

    await expect_error(runtime, InvalidClient, "iss and sub must both be the client_id", form=assertion_form(assertion))


async def test_body_client_id_differing_from_sub_is_refused(runtime: Any, jwt_client: OAuthClient, keys: Keys) -> None:
    assertion = sign(assertion_claims(runtime, jwt_client.id), keys.rsa, kid="rsa-1")

    await expect_error(
        runtime,
        InvalidClient,
        "client_id does not match the client assertion's sub",
        form=assertion_form(assertion, client_id="someone-else"),
    )


async def test_hs256_signed_with_the_client_secret_is_refused(runtime: Any) -> None:
    created = await confidential(runtime)
    assert created.client_secret is not None
    assertion = sign(assertion_claims(runtime, created.client.id), OctKey.import_key(created.client_secret), "HS256")

    await expect_error(runtime, InvalidClient, "client assertion alg is not allowed", form=assertion_form(assertion))


async def test_hs256_signed_with_the_public_key_is_refused(runtime: Any, jwt_client: OAuthClient, keys: Keys) -> None:
    # Key confusion (ASVS 9.1.2): the registered public key, which anyone can read, as an HMAC secret.
    # joserfc refuses to build such an oct key, so sign by hand as an attacker would.
    signing_input = f"{b64url({'alg': 'HS256', 'kid': 'rsa-1'})}.{b64url(assertion_claims(runtime, jwt_client.id))}"
    mac = hmac.new(keys.rsa.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    assertion = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    await expect_error(runtime, InvalidClient, "client assertion alg is not allowed", form=assertion_form(assertion))


async def test_alg_none_is_refused(runtime: Any, jwt_client: OAuthClient) -> None:
    unsigned = f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(assertion_claims(runtime, jwt_client.id))}."

    await expect_error(runtime, InvalidClient, "client assertion alg is not allowed", form=assertion_form(unsigned))


# Until the signature verifies, nothing proves the caller is the client: failures that depend on
# what is registered for it (its keys, its kids, its jwks_uri) are answered like an unknown client
# (a wrong secret, in effect); the reason goes to the log for the operator.


def logged_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(getattr(record, "reason", "")) for record in caplog.records if record.name == "idp.client_auth"]


async def test_assertion_signed_by_an_unregistered_key_is_refused(
    runtime: Any, jwt_client: OAuthClient, caplog: pytest.LogCaptureFixture
) -> None:
    impostor = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    assertion = sign(assertion_claims(runtime, jwt_client.id), impostor, kid="rsa-1")

    with caplog.at_level("INFO", logger="idp.client_auth"):
        await expect_generic(runtime, form=assertion_form(assertion))

    assert logged_reasons(caplog) == ["client assertion signature does not verify with the client's registered keys"]


async def test_assertion_naming_an_unregistered_kid_is_refused(
    runtime: Any, jwt_client: OAuthClient, caplog: pytest.LogCaptureFixture
) -> None:
    impostor = ECKey.generate_key("P-256")
    assertion = sign(assertion_claims(runtime, jwt_client.id), impostor, "ES256", kid="not-registered")

    with caplog.at_level("INFO", logger="idp.client_auth"):
        await expect_generic(runtime, form=assertion_form(assertion))

    assert logged_reasons(caplog) == ["no registered key of the client has the assertion's kid and suits ES256"]


@pytest.mark.parametrize(
    ("assertion_type", "fragment"),
    [
        ("urn:ietf:params:oauth:client-assertion-type:saml2-bearer", "client_assertion_type must be"),
        (None, "client_assertion_type must be"),
    ],
    ids=["saml", "missing"],
)
async def test_wrong_assertion_type_is_refused(
    runtime: Any, jwt_client: OAuthClient, keys: Keys, assertion_type: str | None, fragment: str
) -> None:
    assertion = sign(assertion_claims(runtime, jwt_client.id), keys.rsa, kid="rsa-1")
    form = {"client_assertion": assertion}
    if assertion_type is not None:
        form["client_assertion_type"] = assertion_type

    exc = await expect_error(runtime, InvalidClient, fragment, form=form)

    assert assertion not in exc.description


async def test_malformed_assertion_is_refused(runtime: Any, jwt_client: OAuthClient) -> None:
    await expect_error(
        runtime, InvalidClient, "not a well-formed signed JWT", form=assertion_form("definitely-not-a-jwt")
    )
    await expect_error(
        runtime, InvalidClient, "client_assertion is missing", form={"client_assertion_type": ASSERTION_TYPE}
    )


async def test_assertion_for_an_unknown_client_is_refused(runtime: Any, keys: Keys) -> None:
    assertion = sign(assertion_claims(runtime, "no-such-client"), keys.rsa, kid="rsa-1")

    exc = await expect_error(runtime, InvalidClient, "Client authentication failed", form=assertion_form(assertion))

    assert exc.description == InvalidClient().description


async def test_jwks_uri_needs_a_fetcher(runtime: Any, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    created = await confidential(runtime, "private_key_jwt", jwks_uri="https://app.example.com/jwks")
    assertion = sign(assertion_claims(runtime, created.client.id), keys.rsa, kid="rsa-1")

    with caplog.at_level("INFO", logger="idp.client_auth"):
        await expect_generic(runtime, form=assertion_form(assertion))

    assert logged_reasons(caplog) == ["the client's jwks_uri is not supported yet; register its jwks instead"]

    fetched: list[str] = []

    async def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        return keys.public_jwks()

    client = await authenticate(runtime, form=assertion_form(assertion), http_fetch_jwks=fetch)

    assert client.id == created.client.id
    assert fetched == ["https://app.example.com/jwks"]


async def test_jwks_uri_fetch_failure_is_invalid_client(
    runtime: Any, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    created = await confidential(runtime, "private_key_jwt", jwks_uri="https://app.example.com/jwks")
    assertion = sign(assertion_claims(runtime, created.client.id), keys.rsa, kid="rsa-1")

    async def fetch(url: str) -> dict[str, Any]:
        raise OSError("connection refused")

    with caplog.at_level("INFO", logger="idp.client_auth"), pytest.raises(InvalidClient) as caught:
        await authenticate(runtime, form=assertion_form(assertion), http_fetch_jwks=fetch)

    assert caught.value.description == InvalidClient().description
    assert logged_reasons(caplog) == ["the client's jwks_uri could not be fetched"]


# -- the client-authenticated endpoints over HTTP --------------------------------------------------


async def test_every_client_authentication_failure_reads_the_same(client: Any, runtime: Any, keys: Keys) -> None:
    """Unknown client, wrong secret and wrong method get one answer, byte for byte (ASVS 6.3.8 by
    analogy: nothing tells which client ids exist or how they authenticate)."""
    grants = {"grant_types": ["client_credentials"]}
    basic_client = await confidential(runtime, "client_secret_basic", **grants)
    post_client = await confidential(runtime, "client_secret_post", **grants)
    key_client = await confidential(runtime, "private_key_jwt", jwks=keys.public_jwks(), **grants)
    spa = (await public(runtime)).client.id
    basic_id, basic_secret = basic_client.client.id, str(basic_client.client_secret)
    post_id, post_secret = post_client.client.id, str(post_client.client_secret)
    key_id = key_client.client.id
    impostor = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})

    def signed(client_id: str, key: Any = keys.rsa) -> dict[str, str]:
        return assertion_form(sign(assertion_claims(runtime, client_id), key, kid="rsa-1"))

    cases: dict[str, tuple[dict[str, str], dict[str, str]]] = {
        "unknown client, basic": ({"Authorization": basic("no-such-client", "guess")}, {}),
        "unknown client, post": ({}, {"client_id": "no-such-client", "client_secret": "guess"}),
        "unknown client, none": ({}, {"client_id": "no-such-client"}),
        "unknown client, assertion": ({}, signed("no-such-client")),
        "wrong secret, basic": ({"Authorization": basic(basic_id, "guess")}, {}),
        "wrong secret, post": ({}, {"client_id": post_id, "client_secret": "guess"}),
        "basic client using post": ({}, {"client_id": basic_id, "client_secret": basic_secret}),
        "basic client using none": ({}, {"client_id": basic_id}),
        "basic client using an assertion": ({}, signed(basic_id)),
        "post client using basic": ({"Authorization": basic(post_id, post_secret)}, {}),
        "post client using none": ({}, {"client_id": post_id}),
        "key client using basic": ({"Authorization": basic(key_id, "guess")}, {}),
        "key client using post": ({}, {"client_id": key_id, "client_secret": "guess"}),
        "key client using none": ({}, {"client_id": key_id}),
        "key client, key not registered": ({}, signed(key_id, impostor)),
        "public client using basic": ({"Authorization": basic(spa, "guess")}, {}),
        "public client using post": ({}, {"client_id": spa, "client_secret": "guess"}),
        "public client using an assertion": ({}, signed(spa)),
    }
    answers = {}
    for name, (headers, form) in cases.items():
        response = await client.post("/token", form={"grant_type": "client_credentials", **form}, headers=headers)
        answers[name] = (response.status_code, await response.get_json(), response.headers.get("WWW-Authenticate"))

    generic = {"error": "invalid_client", "error_description": "Client authentication failed."}
    assert answers == {name: (401, generic, 'Basic realm="idp"') for name in cases}


# RFC 6749 §3.1 / §3.2: request parameters MUST NOT be included more than once. Refused at every
# client-authenticated endpoint (and /userinfo's access_token), before client authentication and
# before the request is counted against a rate limit (token_per_ip is 1 here) or changes anything.
REPEATED = [
    ("/token", "client_id"),
    ("/token", "client_secret"),
    ("/token", "client_assertion"),
    ("/token", "client_assertion_type"),
    ("/token", "grant_type"),
    ("/token", "code"),
    ("/introspect", "token"),
    ("/introspect", "token_type_hint"),
    ("/introspect", "client_id"),
    ("/revoke", "token"),
    ("/revoke", "token_type_hint"),
    ("/revoke", "client_secret"),
    ("/userinfo", "access_token"),
]


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**settings_overrides, **getattr(request, "param", {})}


@dataclass
class Probe:
    path: str
    params: list[tuple[str, str]]
    repeat: str
    headers: dict[str, str]
    unchanged: Callable[[], Awaitable[None]]


async def repeated_parameter_probe(client: Any, runtime: Any, keys: Keys, path: str, name: str) -> Probe:
    from tests.oauth_helpers import WEB_REDIRECT, authorize, code_flow, make_world, query_of

    world = await make_world(runtime)
    web = {"Authorization": basic(world.web_id, world.web_secret)}
    cc = {"grant_type": "client_credentials"}
    tokens = await code_flow(client, world, scope="openid profile")  # the one /token hit of 127.0.0.1
    access_token = str(tokens["access_token"])

    async def still_active() -> None:
        await runtime.tokens.verify_access_token(access_token)

    async def nothing() -> None:
        return None

    if path == "/token" and name == "client_id":
        return Probe(path, [*cc.items(), ("client_id", world.web_id)], world.spa_id, web, nothing)
    if path == "/token" and name == "client_secret":
        created = await confidential(runtime, "client_secret_post", grant_types=["client_credentials"])
        params = [*cc.items(), ("client_id", created.client.id), ("client_secret", str(created.client_secret))]
        return Probe(path, params, "wrong-secret", {}, nothing)
    if path == "/token" and name in ("client_assertion", "client_assertion_type"):
        created = await confidential(
            runtime, "private_key_jwt", jwks=keys.public_jwks(), grant_types=["client_credentials"]
        )
        claims = assertion_claims(runtime, created.client.id)
        jti_key = f"client_assertion_jti:{created.client.id}:{claims['jti']}"

        async def jti_unused() -> None:
            assert not await runtime.kv.exists(jti_key)

        params = [*cc.items(), *assertion_form(sign(claims, keys.rsa, kid="rsa-1")).items()]
        return Probe(path, params, "x.y.z" if name == "client_assertion" else ASSERTION_TYPE, {}, jti_unused)
    if path == "/token" and name == "grant_type":
        return Probe(path, list(cc.items()), "client_credentials", web, nothing)
    if path == "/token" and name == "code":
        response, verifier = await authorize(client, world.web_id, WEB_REDIRECT, email=world.email)
        code = query_of(response.headers["Location"])["code"]
        params = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", WEB_REDIRECT),
            ("code_verifier", str(verifier)),
        ]

        async def code_unused() -> None:
            async with runtime.db.session() as session:
                row = await session.get(AuthorizationCode, sha256_digest(code))
            assert row is not None and row.consumed_at is None

        return Probe(path, params, code, web, code_unused)
    if path in ("/introspect", "/revoke") and name in ("token", "token_type_hint", "client_id"):
        params = [("token", access_token), ("token_type_hint", "access_token")]
        if name == "client_id":
            params.append(("client_id", world.web_id))
        repeat = {"token": access_token, "token_type_hint": "refresh_token", "client_id": world.spa_id}[name]
        return Probe(path, params, repeat, web, still_active)
    if path == "/revoke" and name == "client_secret":
        created = await confidential(runtime, "client_secret_post", grant_types=["client_credentials"])
        own = runtime.tokens.issue_access_token(subject=created.client.id, client_id=created.client.id, scope="")

        async def own_active() -> None:
            await runtime.tokens.verify_access_token(own.value)

        params = [("client_id", created.client.id), ("client_secret", str(created.client_secret)), ("token", own.value)]
        return Probe(path, params, str(created.client_secret), {}, own_active)
    assert (path, name) == ("/userinfo", "access_token")
    return Probe(path, [("access_token", access_token)], access_token, {}, nothing)


@pytest.mark.parametrize(
    "settings_overrides", [{"rate_limits": {"token_per_ip": {"requests": 1, "window": 60}}}], indirect=True
)
@pytest.mark.parametrize(("path", "name"), REPEATED, ids=[f"{path}-{name}" for path, name in REPEATED])
async def test_a_repeated_parameter_is_invalid_request(
    client: Any, runtime: Any, keys: Keys, path: str, name: str
) -> None:
    probe = await repeated_parameter_probe(client, runtime, keys, path, name)
    form = "application/x-www-form-urlencoded"
    at_ip = {"scope_base": {"client": ("192.0.2.50", 40000)}}

    repeated = urlencode([*probe.params, (name, probe.repeat)])
    refused = await client.post(path, data=repeated, headers={"Content-Type": form, **probe.headers}, **at_ip)

    assert refused.status_code == 400, await refused.get_data(as_text=True)
    assert await refused.get_json() == {"error": "invalid_request", "error_description": f"{name} is repeated"}
    await probe.unchanged()
    # Not counted either: the same request sent once is the one request this address may make.
    single = await client.post(
        path, data=urlencode(probe.params), headers={"Content-Type": form, **probe.headers}, **at_ip
    )
    assert single.status_code == 200, await single.get_data(as_text=True)


def test_parsing_refuses_repeated_client_credentials() -> None:
    # The protocol module holds the rule too, for callers that hand it a multi-valued form.
    given = [("client_id", "c"), ("client_secret", "s"), ("client_assertion", "a"), ("client_assertion_type", "t")]
    for name in ("client_id", "client_secret", "client_assertion", "client_assertion_type"):
        form = MultiDict([*given, (name, "again")])
        with pytest.raises(InvalidRequest) as caught:
            parse_client_credentials(None, form)
        assert caught.value.description == f"{name} is repeated"


@pytest.mark.parametrize(
    "settings_overrides", [{"rate_limits": {"token_per_ip": {"requests": 1, "window": 60}}}], indirect=True
)
@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke", "/userinfo"])
async def test_two_authorization_headers_are_invalid_request(client: Any, runtime: Any, path: str) -> None:
    # The header carries credentials too, and is not a list (RFC 9110 §5.3): the first of two
    # must not win any more than the first of two client_ids does.
    from werkzeug.datastructures import Headers

    from tests.oauth_helpers import code_flow, make_world

    world = await make_world(runtime)
    access_token = str((await code_flow(client, world, scope="openid"))["access_token"])
    if path == "/userinfo":
        first, second = f"Bearer {access_token}", f"Bearer {access_token}"
    else:
        first, second = basic(world.web_id, world.web_secret), basic(world.spa_id, "guess")
    form = {"grant_type": "client_credentials"} if path == "/token" else {"token": access_token}
    headers = Headers([("Authorization", first), ("Authorization", second)])
    at_ip = {"scope_base": {"client": ("192.0.2.51", 40000)}}

    refused = await client.post(path, form=form, headers=headers, **at_ip)

    assert refused.status_code == 400, await refused.get_data(as_text=True)
    assert await refused.get_json() == {
        "error": "invalid_request",
        "error_description": "the Authorization header is repeated",
    }
    await runtime.tokens.verify_access_token(access_token)  # not revoked
    single = await client.post(path, form=form, headers={"Authorization": first}, **at_ip)
    assert single.status_code == 200, await single.get_data(as_text=True)


async def test_a_client_id_with_a_trailing_newline_is_unknown_without_a_lookup() -> None:
    """RFC 6749 A.1 VSCHAR, matched on the whole value (L5: `$` also matches before a final newline)."""
    from idp.oauth.client_auth import _load_client

    class NoDatabase:
        def session(self) -> None:
            raise AssertionError("looked up a client id that can't be registered")

    for client_id in ("svc\n", "svc\r\n", "\nsvc", "s\x00vc"):
        assert await _load_client(NoDatabase(), client_id) is None  # type: ignore[arg-type]
