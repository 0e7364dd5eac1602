"""UserInfo endpoint (OIDC Core §5.3) as an RFC 6750 protected resource.

Every case asserts the status, the ``error`` code, the ``WWW-Authenticate`` challenge and
``Cache-Control: no-store``; the negative token cases each have a positive control built from the
same material, so a 401 proves the one property under test (expiry, type, signature, user state).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import delete, update

from idp.oauth.clients import ClientSpec, create_client
from idp.oauth.tokens import ACCESS_TOKEN_TYP, ID_TOKEN_TYP, TokenService
from idp.storage.models import User
from tests.oauth_helpers import authorize, basic, code_flow, make_world, query_of

BEARER_MISSING = 'Bearer realm="idp"'


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


def assert_invalid_token(response: Any, body: dict[str, Any]) -> None:
    assert response.status_code == 401
    assert body["error"] == "invalid_token"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert response.headers["Cache-Control"] == "no-store"


async def userinfo(client: Any, token: str) -> tuple[Any, dict[str, Any]]:
    response = await client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    return response, await response.get_json()


async def tokens_for(client: Any, runtime: Any, scope: str) -> tuple[Any, dict[str, Any]]:
    world = await make_world(runtime)
    return world, await code_flow(client, world, scope=scope)


# -- the three ways to present the token -------------------------------------------------------


async def test_get_with_bearer_header(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid profile email")
    response, body = await userinfo(client, tokens["access_token"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"
    assert body["sub"] == world.user_id
    assert body["email"] == world.email


async def test_post_with_bearer_header(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid email")
    response = await client.post("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.get_json() == {"sub": world.user_id, "email": world.email, "email_verified": True}


async def test_post_with_form_body(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid")
    response = await client.post("/userinfo", form={"access_token": tokens["access_token"]})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.get_json() == {"sub": world.user_id}


async def test_token_in_query_string_is_not_accepted(client: Any, runtime: Any) -> None:
    # RFC 6750 §2.3 is optional and leaks tokens into logs and Referer headers: not supported.
    _, tokens = await tokens_for(client, runtime, "openid")
    response = await client.get(f"/userinfo?access_token={tokens['access_token']}")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == BEARER_MISSING


# -- claims released by scope (OIDC Core §5.4) ------------------------------------------------


async def test_openid_scope_only_returns_just_sub(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid")
    response, body = await userinfo(client, tokens["access_token"])
    assert response.status_code == 200
    assert body == {"sub": world.user_id}


async def test_profile_scope_adds_name_and_updated_at(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid profile")
    response, body = await userinfo(client, tokens["access_token"])
    assert response.status_code == 200
    assert body["sub"] == world.user_id
    assert body["name"] == "Alice Example"
    assert isinstance(body["updated_at"], int)
    assert abs(body["updated_at"] - time.time()) < 120  # seconds since the epoch, UTC
    assert "email" not in body and "email_verified" not in body
    assert "picture" not in body  # empty claims are left out


async def test_picture_claim_is_a_usable_url(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid profile")
    issuer = runtime.settings.issuer
    for stored, released in (
        ("https://cdn.example/alice.png", "https://cdn.example/alice.png"),
        ("alice.png", f"{issuer}/pictures/alice.png"),
        ("../admin?x=1", f"{issuer}/pictures/..%2Fadmin%3Fx%3D1"),
    ):
        async with runtime.db.session() as session:
            await session.execute(update(User).where(User.id == world.user_id).values(picture=stored))
        response, body = await userinfo(client, tokens["access_token"])
        assert response.status_code == 200
        assert body["picture"] == released


async def test_email_scope_adds_email_and_verification(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid email")
    response, body = await userinfo(client, tokens["access_token"])
    assert response.status_code == 200
    assert body == {"sub": world.user_id, "email": world.email, "email_verified": True}


async def test_sub_equals_the_id_token_sub(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid profile email")
    id_claims = runtime.tokens.verify(tokens["id_token"], typ=ID_TOKEN_TYP, audience=world.web_id)
    _, body = await userinfo(client, tokens["access_token"])
    assert body["sub"] == id_claims["sub"] == world.user_id


# -- how the token is presented ------------------------------------------------------------------


async def test_missing_token_gets_a_bare_challenge(client: Any, runtime: Any) -> None:
    response = await client.get("/userinfo")
    assert response.status_code == 401
    # RFC 6750 §3.1: no error code when the request carried no authentication at all.
    assert response.headers["WWW-Authenticate"] == BEARER_MISSING
    assert "error=" not in response.headers["WWW-Authenticate"]
    assert response.headers["Cache-Control"] == "no-store"


async def test_other_scheme_is_invalid_token(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid")
    for header in (basic(world.web_id, world.web_secret)["Authorization"], f"Token {tokens['access_token']}", "Bearer"):
        response = await client.get("/userinfo", headers={"Authorization": header})
        assert_invalid_token(response, await response.get_json())


async def test_token_in_header_and_body_is_invalid_request(client: Any, runtime: Any) -> None:
    _, tokens = await tokens_for(client, runtime, "openid")
    response = await client.post(
        "/userinfo",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        form={"access_token": tokens["access_token"]},
    )
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_request"
    assert response.headers["Cache-Control"] == "no-store"


# -- token validity --------------------------------------------------------------------------------


def _token_service(runtime: Any, clock_offset: float) -> TokenService:
    return TokenService(
        runtime.keys,
        runtime.tokens.denylist,
        runtime.settings.issuer,
        access_token_ttl=runtime.settings.tokens.access_token_ttl,
        id_token_ttl=runtime.settings.tokens.id_token_ttl,
        clock=lambda: time.time() + clock_offset,
    )


async def test_expired_token_is_invalid(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    ttl = runtime.settings.tokens.access_token_ttl
    fresh = _token_service(runtime, 0).issue_access_token(subject=world.user_id, client_id=world.web_id, scope="openid")
    response, _ = await userinfo(client, fresh.value)
    assert response.status_code == 200  # control: the same token shape, only not expired
    # Expired more than the 60 s leeway ago.
    stale = _token_service(runtime, -(ttl + 120)).issue_access_token(
        subject=world.user_id, client_id=world.web_id, scope="openid"
    )
    assert stale.expires_at < fresh.claims["iat"] - 60
    response, body = await userinfo(client, stale.value)
    assert_invalid_token(response, body)


async def test_revoked_token_is_invalid(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid")
    response, _ = await userinfo(client, tokens["access_token"])
    assert response.status_code == 200
    revoke = await client.post(
        "/revoke",
        form={"token": tokens["access_token"], "token_type_hint": "access_token"},
        headers=basic(world.web_id, world.web_secret),
    )
    assert revoke.status_code == 200
    response, body = await userinfo(client, tokens["access_token"])
    assert_invalid_token(response, body)


async def test_client_credentials_token_has_insufficient_scope(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    token = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic(world.web_id, world.web_secret)
    )
    assert token.status_code == 200
    response, body = await userinfo(client, (await token.get_json())["access_token"])
    assert response.status_code == 403
    assert body["error"] == "insufficient_scope"
    assert response.headers["Cache-Control"] == "no-store"
    # RFC 6750 §3: a token that "does not enable access" gets a challenge naming the error.
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer ") and 'error="insufficient_scope"' in challenge


async def test_id_token_is_not_an_access_token(client: Any, runtime: Any) -> None:
    _, tokens = await tokens_for(client, runtime, "openid")
    assert jwt_parts(tokens["id_token"])[0]["typ"] == ID_TOKEN_TYP
    response, body = await userinfo(client, tokens["id_token"])
    assert_invalid_token(response, body)


async def test_refresh_token_is_not_an_access_token(client: Any, runtime: Any) -> None:
    _, tokens = await tokens_for(client, runtime, "openid offline_access")
    response, body = await userinfo(client, tokens["refresh_token"])
    assert_invalid_token(response, body)


async def test_access_token_with_alg_none_is_invalid(client: Any, runtime: Any) -> None:
    _, tokens = await tokens_for(client, runtime, "openid")
    header, claims = jwt_parts(tokens["access_token"])
    assert header["typ"] == ACCESS_TOKEN_TYP
    for alg in ("none", "None", "NONE"):
        forged = f"{b64url(json.dumps({**header, 'alg': alg}).encode())}.{b64url(json.dumps(claims).encode())}."
        response, body = await userinfo(client, forged)
        assert_invalid_token(response, body)


async def test_access_token_hmac_signed_with_public_key_is_invalid(client: Any, runtime: Any) -> None:
    # Key confusion (ASVS 9.1.2): HS256 keyed with the published RSA public key.
    _, tokens = await tokens_for(client, runtime, "openid")
    header, claims = jwt_parts(tokens["access_token"])
    key = runtime.keys.verification_key(header["kid"])
    assert key is not None and key.alg == "RS256"
    public_pem = key.key.as_pem(private=False)
    for secret in (public_pem, json.dumps(key.public_jwk).encode()):
        signing_input = (
            f"{b64url(json.dumps({**header, 'alg': 'HS256'}).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        response, body = await userinfo(client, f"{signing_input}.{b64url(signature)}")
        assert_invalid_token(response, body)


async def test_access_token_signed_by_an_embedded_or_foreign_key_is_invalid(client: Any, runtime: Any) -> None:
    # ASVS 9.1.3: only our own published keys verify; `jwk` / `jku` headers are never followed.
    _, tokens = await tokens_for(client, runtime, "openid")
    header, claims = jwt_parts(tokens["access_token"])
    attacker = RSAKey.generate_key(2048, private=True)
    attacker_public = attacker.as_dict(private=False)
    for forged_header in (
        {**header, "jwk": attacker_public},  # our kid, attacker's key embedded
        {**header, "kid": attacker.thumbprint(), "jwk": attacker_public},
        {**header, "jku": "https://attacker.example/jwks"},
    ):
        forged = jwt.encode(forged_header, claims, attacker, algorithms=["RS256"])
        response, body = await userinfo(client, forged)
        assert_invalid_token(response, body)


async def test_tampered_claims_are_invalid(client: Any, runtime: Any) -> None:
    _, tokens = await tokens_for(client, runtime, "openid")
    header_b64, _, signature = tokens["access_token"].split(".")
    _, claims = jwt_parts(tokens["access_token"])
    forged = f"{header_b64}.{b64url(json.dumps({**claims, 'sub': 'someone-else'}).encode())}.{signature}"
    response, body = await userinfo(client, forged)
    assert_invalid_token(response, body)


async def test_disabled_user_token_is_invalid(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid")
    async with runtime.db.session() as session:
        await session.execute(update(User).where(User.id == world.user_id).values(disabled=True))
    response, body = await userinfo(client, tokens["access_token"])
    assert_invalid_token(response, body)


async def test_deleted_user_token_is_invalid(client: Any, runtime: Any) -> None:
    world, tokens = await tokens_for(client, runtime, "openid")
    async with runtime.db.session() as session:
        await session.execute(delete(User).where(User.id == world.user_id))
    response, body = await userinfo(client, tokens["access_token"])
    assert_invalid_token(response, body)


# -- pairwise subjects (OIDC Core §8.1) ----------------------------------------------------------


async def _pairwise_client(runtime: Any, host: str) -> tuple[str, str, str]:
    redirect = f"https://{host}/callback"
    created = await create_client(
        runtime.db,
        runtime.events,
        ClientSpec(
            name=f"Pairwise {host}",
            client_type="confidential",
            redirect_uris=[redirect],
            subject_type="pairwise",
        ),
    )
    assert created.client_secret is not None
    return created.client.id, created.client_secret, redirect


async def _pairwise_tokens(client: Any, email: str, client_id: str, secret: str, redirect: str) -> dict[str, Any]:
    response, verifier = await authorize(client, client_id, redirect, email=email, scope="openid email")
    assert response.status_code == 303, await response.get_data(as_text=True)
    code = query_of(response.headers["Location"])["code"]
    token = await client.post(
        "/token",
        form={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "code_verifier": verifier},
        headers=basic(client_id, secret),
    )
    assert token.status_code == 200, await token.get_data(as_text=True)
    return dict(await token.get_json())


async def test_pairwise_subject_is_stable_unlinkable_and_resolved(app: Any, client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    first_id, first_secret, first_redirect = await _pairwise_client(runtime, "rp-one.example")
    second_id, second_secret, second_redirect = await _pairwise_client(runtime, "rp-two.example")

    tokens = await _pairwise_tokens(client, world.email, first_id, first_secret, first_redirect)
    subject = runtime.tokens.verify(tokens["id_token"], typ=ID_TOKEN_TYP, audience=first_id)["sub"]
    assert subject != world.user_id
    assert world.user_id not in subject

    # UserInfo resolves the pairwise sub back to the user and answers with the same sub.
    response, body = await userinfo(client, tokens["access_token"])
    assert response.status_code == 200
    assert body == {"sub": subject, "email": world.email, "email_verified": True}

    # Stable across logins: a new browser, a new sign-in, the same sub.
    other_browser = app.test_client()
    again = await _pairwise_tokens(other_browser, world.email, first_id, first_secret, first_redirect)
    assert runtime.tokens.verify(again["id_token"], typ=ID_TOKEN_TYP, audience=first_id)["sub"] == subject

    # Another sector (another host) gets another sub for the same user.
    other = await _pairwise_tokens(client, world.email, second_id, second_secret, second_redirect)
    other_subject = runtime.tokens.verify(other["id_token"], typ=ID_TOKEN_TYP, audience=second_id)["sub"]
    assert other_subject not in (subject, world.user_id)
    response, body = await userinfo(client, other["access_token"])
    assert response.status_code == 200
    assert body["sub"] == other_subject

    # A client with public subjects (the world's web app) still sees the plain user id.
    public = await code_flow(client, world, scope="openid")
    assert (await userinfo(client, public["access_token"]))[1]["sub"] == world.user_id


async def test_pairwise_sub_is_not_accepted_for_another_sector(client: Any, runtime: Any) -> None:
    # A token whose sub was sealed for one sector must not resolve under another client's sector.
    world = await make_world(runtime)
    first_id, first_secret, first_redirect = await _pairwise_client(runtime, "rp-one.example")
    second_id, _, _ = await _pairwise_client(runtime, "rp-two.example")
    tokens = await _pairwise_tokens(client, world.email, first_id, first_secret, first_redirect)
    subject = runtime.tokens.verify(tokens["id_token"], typ=ID_TOKEN_TYP, audience=first_id)["sub"]
    forged = runtime.tokens.issue_access_token(subject=subject, client_id=second_id, scope="openid")
    response, body = await userinfo(client, forged.value)
    assert_invalid_token(response, body)
