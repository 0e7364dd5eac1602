"""Client authentication (idp.oauth.client_auth) without a database: parsing what a request
carried, secrets and public clients against an in-memory client table, and private_key_jwt with
the in-process key-value store for the jti record. The full matrix over real rows and HTTP is in
tests/integration/test_client_auth.py."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from werkzeug.datastructures import MultiDict

from idp.oauth.client_auth import (
    ASSERTION_TYPE,
    ClientCredentials,
    authenticate_client,
    authenticate_request,
    parse_client_credentials,
)
from idp.oauth.errors import InvalidClient, InvalidRequest
from idp.security.tokens import secret_digest
from idp.storage.kv import MemoryStore
from tests.oauth_fakes import MemoryUnitOfWork, make_client

ISSUER = "https://idp.example"
TOKEN_URL = f"{ISSUER}/token"
SECRET = "s3cret-value"


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def authenticate(db: MemoryUnitOfWork, credentials: ClientCredentials, kv: MemoryStore | None = None) -> Any:
    return await authenticate_client(
        db.clients, kv or MemoryStore(), credentials, issuer=ISSUER, endpoint_url=TOKEN_URL
    )


# -- parse_client_credentials ------------------------------------------------------------------------


def test_basic_credentials() -> None:
    credentials = parse_client_credentials(basic("web", SECRET), {})
    assert (credentials.client_id, credentials.client_secret, credentials.method) == (
        "web",
        SECRET,
        "client_secret_basic",
    )
    assert SECRET not in repr(credentials)


def test_basic_parts_are_form_decoded() -> None:
    raw = base64.b64encode(b"my+app:a%3Ab").decode()
    credentials = parse_client_credentials(f"Basic {raw}", {})
    assert (credentials.client_id, credentials.client_secret) == ("my app", "a:b")


def test_post_credentials_and_public_clients() -> None:
    assert parse_client_credentials(None, {"client_id": "web", "client_secret": SECRET}).method == "client_secret_post"
    assert parse_client_credentials(None, {"client_id": "spa"}).method == "none"
    assert parse_client_credentials(None, {}).method is None
    assert parse_client_credentials("Bearer abc", {}).method is None  # not client authentication


def test_two_methods_at_once_are_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="exactly one client authentication method"):
        parse_client_credentials(basic("web", SECRET), {"client_secret": SECRET})
    with pytest.raises(InvalidRequest, match="exactly one client authentication method"):
        parse_client_credentials(None, {"client_secret": SECRET, "client_assertion": "x"})


def test_a_repeated_client_id_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_client_credentials(None, MultiDict([("client_id", "a"), ("client_id", "b")]))
    assert caught.value.description == "client_id is repeated"


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("Basic !!!", "not valid base64"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "client_id:client_secret"),
        ("Basic " + base64.b64encode(b":secret").decode(), "empty client_id"),
    ],
)
def test_a_malformed_basic_header_is_invalid_client(header: str, fragment: str) -> None:
    with pytest.raises(InvalidClient, match=fragment) as caught:
        parse_client_credentials(header, {})
    assert caught.value.headers["WWW-Authenticate"] == 'Basic realm="idp"'


def test_a_body_client_id_must_match_the_basic_header() -> None:
    with pytest.raises(InvalidClient, match="does not match the Basic"):
        parse_client_credentials(basic("web", SECRET), {"client_id": "other"})


# -- secrets and public clients ----------------------------------------------------------------------


def secret_client(**fields: Any) -> Any:
    return make_client(secret_digest=secret_digest(SECRET), **fields)


async def test_the_right_secret_authenticates_the_registered_client() -> None:
    db = MemoryUnitOfWork(
        secret_client(),
        make_client(id="post", token_endpoint_auth_method="client_secret_post", secret_digest=secret_digest(SECRET)),
    )
    assert (await authenticate(db, parse_client_credentials(basic("web", SECRET), {}))).id == "web"
    posted = parse_client_credentials(None, {"client_id": "post", "client_secret": SECRET})
    assert (await authenticate(db, posted)).id == "post"


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param(parse_client_credentials(basic("web", "wrong"), {}), id="wrong-secret"),
        pytest.param(parse_client_credentials(basic("nobody", SECRET), {}), id="unknown-client"),
        pytest.param(parse_client_credentials(None, {"client_id": "web", "client_secret": SECRET}), id="other-method"),
        pytest.param(parse_client_credentials(None, {"client_id": "web"}), id="no-secret"),
        pytest.param(parse_client_credentials(basic("off", SECRET), {}), id="disabled"),
    ],
)
async def test_every_refusal_that_depends_on_the_registration_reads_the_same(credentials: ClientCredentials) -> None:
    db = MemoryUnitOfWork(secret_client(), secret_client(id="off", disabled=True))
    with pytest.raises(InvalidClient) as caught:
        await authenticate(db, credentials)
    assert caught.value.description == InvalidClient.default_description


async def test_a_public_client_authenticates_with_its_id_only() -> None:
    db = MemoryUnitOfWork(
        make_client(id="spa", client_type="public", token_endpoint_auth_method="none"), secret_client()
    )
    assert (await authenticate(db, parse_client_credentials(None, {"client_id": "spa"}))).id == "spa"
    with pytest.raises(InvalidClient):
        await authenticate(db, parse_client_credentials(None, {"client_id": "web"}))


async def test_no_credentials_at_all_is_invalid_client() -> None:
    with pytest.raises(InvalidClient, match="client authentication is required"):
        await authenticate(MemoryUnitOfWork(), parse_client_credentials(None, {}))


async def test_an_id_that_cannot_be_registered_is_not_looked_up() -> None:
    db = MemoryUnitOfWork(secret_client())
    with pytest.raises(InvalidClient):
        await authenticate(db, parse_client_credentials(basic("web\n", SECRET), {}))
    assert db.clients.lookups == 0


# -- private_key_jwt ---------------------------------------------------------------------------------


@pytest.fixture
def key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "k1"})


def assertion(key: ECKey, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "jwt-app",
        "sub": "jwt-app",
        "aud": TOKEN_URL,
        "exp": now + 60,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    payload.update(claims)
    return jwt.encode({"alg": "ES256", "kid": "k1"}, {k: v for k, v in payload.items() if v is not None}, key)


def jwt_db(key: ECKey) -> MemoryUnitOfWork:
    public = key.as_dict(private=False)
    return MemoryUnitOfWork(
        make_client(id="jwt-app", token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public]})
    )


def assertion_credentials(value: str) -> ClientCredentials:
    return parse_client_credentials(None, {"client_assertion": value, "client_assertion_type": ASSERTION_TYPE})


async def test_a_signed_assertion_authenticates_once(key: ECKey) -> None:
    kv, value = MemoryStore(), assertion(key)
    assert (await authenticate(jwt_db(key), assertion_credentials(value), kv)).id == "jwt-app"
    with pytest.raises(InvalidClient, match="already been used"):
        await authenticate(jwt_db(key), assertion_credentials(value), kv)


@pytest.mark.parametrize(
    ("claims", "fragment"),
    [
        ({"aud": "https://elsewhere.example"}, "aud must be the issuer or the endpoint URL"),
        ({"exp": int(time.time()) - 3600}, "has expired"),
        ({"exp": int(time.time()) + 3 * 3600}, "more than 1 hour in the future"),
        ({"exp": None}, "exp is required"),
        ({"jti": None}, "jti is required"),
        ({"nbf": int(time.time()) + 3600}, "nbf is in the future"),
        ({"iss": "someone-else"}, "iss and sub must both be the client_id"),
    ],
)
async def test_assertion_claims_are_checked(key: ECKey, claims: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidClient, match=fragment):
        await authenticate(jwt_db(key), assertion_credentials(assertion(key, **claims)))


async def test_an_assertion_signed_by_another_key_reads_like_an_unknown_client(key: ECKey) -> None:
    other = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    with pytest.raises(InvalidClient) as caught:
        await authenticate(jwt_db(key), assertion_credentials(assertion(other)))
    assert caught.value.description == InvalidClient.default_description


async def test_the_assertion_type_must_be_jwt_bearer(key: ECKey) -> None:
    credentials = parse_client_credentials(None, {"client_assertion": assertion(key), "client_assertion_type": "saml"})
    with pytest.raises(InvalidClient, match="client_assertion_type must be"):
        await authenticate(jwt_db(key), credentials)


# -- authenticate_request: the rate limits around authentication -------------------------------------


class Limits:
    def __init__(self, refuse: str | None = None) -> None:
        self.counted: list[dict[str, str | None]] = []
        self.refuse = refuse

    async def __call__(self, attempts: dict[str, str | None], what: str) -> None:
        self.counted.append(attempts)
        if self.refuse in attempts:
            raise RuntimeError(f"too many {what}")


async def request_at(endpoint: str, authorization: str | None, limits: Limits, db: MemoryUnitOfWork) -> Any:
    return await authenticate_request(
        endpoint,
        authorization,
        {},
        clients=db.clients,
        kv=MemoryStore(),
        issuer=ISSUER,
        ip="192.0.2.1",
        enforce_limits=limits,
    )


async def test_the_address_is_counted_before_and_the_client_only_after_authentication() -> None:
    limits, db = Limits(), MemoryUnitOfWork(secret_client())
    assert (await request_at("/introspect", basic("web", SECRET), limits, db)).id == "web"
    assert limits.counted == [{"token_per_ip": "/introspect 192.0.2.1"}, {"token_per_client": "/introspect web"}]


async def test_a_failed_authentication_spends_no_client_budget() -> None:
    limits = Limits()
    with pytest.raises(InvalidClient):
        await request_at("/token", basic("web", "wrong"), limits, MemoryUnitOfWork(secret_client()))
    assert limits.counted == [{"token_per_ip": "/token 192.0.2.1"}]


async def test_an_address_over_its_limit_is_refused_before_any_look_up() -> None:
    limits, db = Limits(refuse="token_per_ip"), MemoryUnitOfWork(secret_client())
    with pytest.raises(RuntimeError, match="too many revocation requests"):
        await request_at("/revoke", basic("web", SECRET), limits, db)
    assert db.clients.lookups == 0


# A client held in memory (idp's client cache) is authenticated without I/O, so it is checked
# first and both limits are counted in one round trip (issue 14); a refusal still counts the address.


def cached(db: MemoryUnitOfWork) -> MemoryUnitOfWork:
    db.clients.cached = True
    return db


async def test_a_client_in_memory_is_counted_against_both_limits_at_once() -> None:
    limits, db = Limits(), cached(MemoryUnitOfWork(secret_client()))
    assert (await request_at("/token", basic("web", SECRET), limits, db)).id == "web"
    assert limits.counted == [{"token_per_ip": "/token 192.0.2.1", "token_per_client": "/token web"}]


async def test_a_public_client_in_memory_is_counted_against_both_limits_at_once() -> None:
    limits = Limits()
    db = cached(MemoryUnitOfWork(make_client(id="spa", client_type="public", token_endpoint_auth_method="none")))
    client = await authenticate_request(
        "/token",
        None,
        {"client_id": "spa"},
        clients=db.clients,
        kv=MemoryStore(),
        issuer=ISSUER,
        ip="192.0.2.1",
        enforce_limits=limits,
    )
    assert client.id == "spa"
    assert limits.counted == [{"token_per_ip": "/token 192.0.2.1", "token_per_client": "/token spa"}]


async def test_a_wrong_secret_for_a_client_in_memory_counts_the_address_only() -> None:
    limits = Limits()
    with pytest.raises(InvalidClient):
        await request_at("/token", basic("web", "wrong"), limits, cached(MemoryUnitOfWork(secret_client())))
    assert limits.counted == [{"token_per_ip": "/token 192.0.2.1"}]


@pytest.mark.parametrize("secret", [SECRET, "wrong"])
async def test_an_address_over_its_limit_is_refused_whatever_it_sent_for_a_client_in_memory(secret: str) -> None:
    limits = Limits(refuse="token_per_ip")
    with pytest.raises(RuntimeError, match="too many introspection requests"):
        await request_at("/introspect", basic("web", secret), limits, cached(MemoryUnitOfWork(secret_client())))


async def test_malformed_credentials_are_refused_after_the_address_is_counted_first() -> None:
    limits, db = Limits(refuse="token_per_ip"), cached(MemoryUnitOfWork(secret_client()))
    with pytest.raises(RuntimeError, match="too many"):
        await request_at("/token", "Basic !!not-base64", limits, db)
    assert db.clients.lookups == 0


async def test_an_assertion_client_in_memory_still_counts_the_address_before_any_look_up() -> None:
    # Authenticating an assertion writes its jti: that I/O waits until the address was counted.
    limits = Limits(refuse="token_per_ip")
    db = cached(jwt_db(ECKey.generate_key("P-256")))
    with pytest.raises(RuntimeError, match="too many"):
        await authenticate_request(
            "/token",
            None,
            {"client_id": "jwt-app", "client_assertion": "a.b.c", "client_assertion_type": ASSERTION_TYPE},
            clients=db.clients,
            kv=MemoryStore(),
            issuer=ISSUER,
            ip="192.0.2.1",
            enforce_limits=limits,
        )
    assert db.clients.lookups == 0
