"""Provider metadata (OpenID Connect Discovery 1.0, RFC 8414): every value is one the server honours.

The document is validated with Authlib's metadata models, each advertised endpoint is called
with its method, and the advertised lists are compared with what the code actually accepts.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata

from idp.oauth import client_auth
from idp.oauth.clients import AUTH_METHODS, GRANT_TYPES
from tests.oauth_helpers import basic, code_flow, make_world

OPENID = "/.well-known/openid-configuration"
OAUTH = "/.well-known/oauth-authorization-server"

# Every URL the document advertises, with the method used to call it and the statuses it may
# answer without parameters or credentials (anything but 404 / 405).
ENDPOINTS = {
    "authorization_endpoint": ("GET", {400}),
    "token_endpoint": ("POST", {400, 401}),
    "userinfo_endpoint": ("GET", {401}),
    "jwks_uri": ("GET", {200}),
    "end_session_endpoint": ("GET", {200}),
    "introspection_endpoint": ("POST", {401}),
    "revocation_endpoint": ("POST", {401}),
}


async def metadata(client: Any, path: str = OPENID) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return dict(await response.get_json())


async def test_document_validates_with_authlib(client: Any, runtime: Any) -> None:
    data = await metadata(client)
    OpenIDProviderMetadata(data).validate()
    AuthorizationServerMetadata(data).validate()


async def test_both_well_known_documents_are_identical(client: Any, runtime: Any) -> None:
    openid = await client.get(OPENID)
    oauth = await client.get(OAUTH)
    assert oauth.status_code == openid.status_code == 200
    assert await oauth.get_json() == await openid.get_json()
    for name in ("Cache-Control", "Access-Control-Allow-Origin", "Content-Type"):
        assert oauth.headers[name] == openid.headers[name]
    assert openid.headers["Access-Control-Allow-Origin"] == "*"


async def test_issuer_and_endpoints_live_under_it(client: Any, runtime: Any) -> None:
    data = await metadata(client)
    issuer = runtime.settings.issuer
    assert data["issuer"] == issuer
    assert not issuer.endswith("/")
    advertised = {key for key, value in data.items() if key.endswith(("_endpoint", "_uri", "_iframe"))}
    assert advertised == set(ENDPOINTS)
    for key in ENDPOINTS:
        assert data[key].startswith(issuer + "/"), key


async def test_every_advertised_endpoint_answers_with_its_method(client: Any, runtime: Any) -> None:
    data = await metadata(client)
    for key, (method, statuses) in ENDPOINTS.items():
        path = urlsplit(data[key]).path
        response = await client.open(path, method=method, form={} if method == "POST" else None)
        assert response.status_code in statuses, (key, response.status_code)
    # The POST-only endpoints say so to other methods.
    for key in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        response = await client.get(urlsplit(data[key]).path)
        assert response.status_code == 405, key
        assert "POST" in response.headers["Allow"]
    # UserInfo and end_session accept POST too (OIDC Core §5.3.1, RP-Initiated Logout §2).
    for key in ("userinfo_endpoint", "end_session_endpoint"):
        response = await client.post(urlsplit(data[key]).path, form={})
        assert response.status_code not in (404, 405), key


async def test_response_types_and_pkce(client: Any, runtime: Any) -> None:
    data = await metadata(client)
    assert data["response_types_supported"] == ["code"]
    assert data["code_challenge_methods_supported"] == ["S256"]
    assert data["response_modes_supported"] == ["query", "form_post"]
    assert data["authorization_response_iss_parameter_supported"] is True


async def test_grant_types_exclude_implicit_and_password(client: Any, runtime: Any) -> None:
    data = await metadata(client)
    grants = data["grant_types_supported"]
    assert "implicit" not in grants and "password" not in grants
    assert grants == list(GRANT_TYPES)


async def test_token_endpoint_auth_methods_are_what_client_auth_accepts(client: Any, runtime: Any) -> None:
    data = await metadata(client)
    accepted = {*client_auth.SECRET_METHODS, client_auth.ASSERTION_METHOD, "none"}
    assert set(data["token_endpoint_auth_methods_supported"]) == accepted == set(AUTH_METHODS)
    assert len(data["token_endpoint_auth_methods_supported"]) == len(accepted)
    algs = set(data["token_endpoint_auth_signing_alg_values_supported"])
    assert algs <= set(client_auth.ASSERTION_ALGS)
    assert "none" not in algs and not any(alg.startswith("HS") for alg in algs)


async def test_revocation_and_introspection_auth_methods_match_behaviour(client: Any, runtime: Any) -> None:
    data = await metadata(client)
    # Public clients revoke their own tokens with client_id alone (RFC 7009 §2.1) ...
    world = await make_world(runtime)
    tokens = await code_flow(client, world, confidential=False)
    revoked = await client.post("/revoke", form={"token": tokens["refresh_token"], "client_id": world.spa_id})
    assert revoked.status_code == 200
    assert "none" in data["revocation_endpoint_auth_methods_supported"]
    # ... and every advertised revocation method is one client_auth accepts.
    assert set(data["revocation_endpoint_auth_methods_supported"]) <= set(AUTH_METHODS)
    # Introspection is for authenticated clients only.
    assert "none" not in data["introspection_endpoint_auth_methods_supported"]
    assert set(data["introspection_endpoint_auth_methods_supported"]) == {
        *client_auth.SECRET_METHODS,
        client_auth.ASSERTION_METHOD,
    }
    answer = await client.post(
        "/introspect", form={"token": tokens["access_token"]}, headers=basic(world.web_id, world.web_secret)
    )
    assert answer.status_code == 200


async def test_id_token_signing_algs_are_the_jwks_algs(client: Any, runtime: Any) -> None:
    data = await metadata(client)
    jwks_response = await client.get(urlsplit(data["jwks_uri"]).path)
    assert jwks_response.status_code == 200
    assert jwks_response.mimetype == "application/jwk-set+json"
    jwks = await jwks_response.get_json()
    assert sorted(data["id_token_signing_alg_values_supported"]) == sorted({key["alg"] for key in jwks["keys"]})
    assert "RS256" in data["id_token_signing_alg_values_supported"]
    assert "none" not in data["id_token_signing_alg_values_supported"]
    for key in jwks["keys"]:
        assert key["use"] == "sig" and key["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key), "private key material published"


async def test_subjects_scopes_claims_and_logout(client: Any, runtime: Any) -> None:
    data = await metadata(client)
    assert data["subject_types_supported"] == ["public", "pairwise"]
    assert {"openid", "profile", "email", "offline_access"} <= set(data["scopes_supported"])
    assert {"sub", "name", "email", "email_verified", "updated_at", "sid"} <= set(data["claims_supported"])
    assert data["backchannel_logout_supported"] is True
    assert data["backchannel_logout_session_supported"] is True
    assert data["request_parameter_supported"] is False
    assert data["request_uri_parameter_supported"] is False
    assert data["claims_parameter_supported"] is False


async def test_discovery_and_jwks_carry_an_etag_and_answer_304_to_a_client_that_has_them(
    client: Any, runtime: Any
) -> None:
    """RFC 9110 §13.1.2: a relying party revalidating its cached copy gets 304 and no body; a new
    key set (rotation) is a new ETag, so the cached copy is not kept by mistake."""
    for path in ("/.well-known/openid-configuration", "/jwks"):
        first = await client.get(path)
        etag = first.headers["ETag"]
        assert first.status_code == 200 and etag.startswith('"') and etag.endswith('"')
        assert first.headers["Access-Control-Allow-Origin"] == "*" and "max-age=" in first.headers["Cache-Control"]
        again = await client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and await again.get_data() == b""
        assert again.headers["ETag"] == etag
        other = await client.get(path, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200 and await other.get_json() == await first.get_json()
    before = await client.get("/jwks")
    await runtime.keys.rotate(["ES256"])
    after = await client.get("/jwks", headers={"If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200 and after.headers["ETag"] != before.headers["ETag"]
    kids = {key["kid"] for key in (await after.get_json())["keys"]}
    assert kids > {key["kid"] for key in (await before.get_json())["keys"]}  # old keys stay published
