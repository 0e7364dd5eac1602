import assert from "node:assert/strict";
import { test } from "node:test";

import { OidcClient, OidcError, PENDING_KEY } from "../js/oidc.js";
import { challengeS256 } from "../js/pkce.js";
import { CLIENT_ID, FakeStorage, ISSUER, idClaims, jsonResponse, makeKey, signJwt } from "./helpers.js";

const CONFIG = {
  issuer: ISSUER,
  client_id: CLIENT_ID,
  redirect_uri: "http://127.0.0.1:8080/callback",
  post_logout_redirect_uri: "http://127.0.0.1:8080/",
  scope: "openid profile email offline_access",
};
const METADATA = {
  issuer: ISSUER,
  authorization_endpoint: `${ISSUER}/authorize`,
  token_endpoint: `${ISSUER}/token`,
  jwks_uri: `${ISSUER}/jwks.json`,
  revocation_endpoint: `${ISSUER}/revoke`,
  end_session_endpoint: `${ISSUER}/logout`,
  authorization_response_iss_parameter_supported: true,
};

/** An IdP in a fetch: discovery, JWKS (whose keys can change) and a token endpoint. */
async function fakeIdp({ metadata = METADATA, claims = {} } = {}) {
  const idp = { key: await makeKey("ES256", "k1"), requests: [], jwksFetches: 0, metadata };
  idp.jwks = { keys: [idp.key.jwk] };
  idp.fetch = async (url, init = {}) => {
    idp.requests.push({ url: String(url), init });
    if (url === `${ISSUER}/.well-known/openid-configuration`) return jsonResponse(200, idp.metadata);
    if (url === METADATA.jwks_uri) {
      idp.jwksFetches += 1;
      return jsonResponse(200, idp.jwks);
    }
    if (url === METADATA.token_endpoint) {
      const form = new URLSearchParams(init.body);
      idp.lastForm = form;
      if (form.get("grant_type") === "authorization_code" && (await challengeS256(form.get("code_verifier"))) !== idp.challenge) {
        return jsonResponse(400, { error: "invalid_grant", error_description: "PKCE verification failed." });
      }
      const payload = idClaims(Date.now(), { nonce: idp.nonce, ...claims });
      return jsonResponse(200, {
        access_token: "at-1", token_type: "Bearer", expires_in: 600, refresh_token: "rt-1",
        scope: CONFIG.scope, id_token: await signJwt(idp.key, payload),
      });
    }
    return jsonResponse(404, { error: "not_found" });
  };
  return idp;
}

async function startSignIn(idp, extra) {
  const sessionStorage = new FakeStorage();
  const client = new OidcClient(CONFIG, { fetch: idp.fetch, sessionStorage });
  const url = new URL(await client.authorizationUrl(extra));
  idp.challenge = url.searchParams.get("code_challenge");
  idp.nonce = url.searchParams.get("nonce");
  return { client, url, sessionStorage, state: url.searchParams.get("state") };
}

const callback = (params) => `${CONFIG.redirect_uri}?${new URLSearchParams(params)}`;

test("authorization URL: code + PKCE S256, random state and nonce, kept for the callback", async () => {
  const idp = await fakeIdp();
  const { url, sessionStorage } = await startSignIn(idp, { prompt: "create" });
  assert.equal(url.origin + url.pathname, METADATA.authorization_endpoint);
  const p = Object.fromEntries(url.searchParams);
  assert.equal(p.response_type, "code");
  assert.equal(p.client_id, CLIENT_ID);
  assert.equal(p.code_challenge_method, "S256");
  assert.equal(p.prompt, "create");
  assert.match(p.state, /^[A-Za-z0-9_-]{43}$/);
  assert.match(p.nonce, /^[A-Za-z0-9_-]{43}$/);
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY));
  assert.equal(pending.state, p.state);
  assert.equal(await challengeS256(pending.code_verifier), p.code_challenge);
});

test("callback: the code is exchanged with the verifier and the ID token verified", async () => {
  const idp = await fakeIdp();
  const { client, state, sessionStorage } = await startSignIn(idp);
  const { record } = await client.handleCallback(callback({ code: "c1", state, iss: ISSUER }));
  assert.equal(record.access_token, "at-1");
  assert.equal(record.refresh_token, "rt-1");
  assert.equal(record.claims.sid, "sid-1");
  assert.ok(record.expires_at > Date.now() + 590_000);
  assert.equal(idp.lastForm.get("client_id"), CLIENT_ID);
  assert.equal(idp.lastForm.get("client_secret"), null);
  assert.equal(sessionStorage.getItem(PENDING_KEY), null); // one use
});

for (const [name, params, code] of [
  ["a wrong state", (s) => ({ code: "c1", state: `${s}x`, iss: ISSUER }), "state_mismatch"],
  ["no state", () => ({ code: "c1", iss: ISSUER }), "missing_state"],
  ["another issuer (RFC 9207)", (s) => ({ code: "c1", state: s, iss: "http://evil.example" }), "wrong_issuer"],
  ["no iss where the provider sends it", (s) => ({ code: "c1", state: s }), "wrong_issuer"],
  ["an error answer", (s) => ({ error: "access_denied", state: s, iss: ISSUER }), "access_denied"],
]) {
  test(`callback with ${name} is refused before any token request`, async () => {
    const idp = await fakeIdp();
    const { client, state } = await startSignIn(idp);
    await assert.rejects(client.handleCallback(callback(params(state))), (e) => e instanceof OidcError && e.code === code);
    assert.ok(!idp.requests.some((r) => r.url === METADATA.token_endpoint));
  });
}

test("callback: a replayed callback (state used already) is refused", async () => {
  const idp = await fakeIdp();
  const { client, state } = await startSignIn(idp);
  await client.handleCallback(callback({ code: "c1", state, iss: ISSUER }));
  await assert.rejects(client.handleCallback(callback({ code: "c1", state, iss: ISSUER })), { code: "missing_state" });
});

test("callback: an ID token for another audience is refused", async () => {
  const idp = await fakeIdp({ claims: { aud: "someone-else" } });
  const { client, state } = await startSignIn(idp);
  await assert.rejects(client.handleCallback(callback({ code: "c1", state, iss: ISSUER })), { code: "wrong_audience" });
});

test("callback: a token error is reported with its code", async () => {
  const idp = await fakeIdp();
  const { client, state } = await startSignIn(idp);
  idp.challenge = "something-else";
  await assert.rejects(client.handleCallback(callback({ code: "c1", state, iss: ISSUER })), { code: "invalid_grant" });
});

test("discovery naming another issuer is refused", async () => {
  const idp = await fakeIdp({ metadata: { ...METADATA, issuer: "http://evil.example" } });
  const client = new OidcClient(CONFIG, { fetch: idp.fetch, sessionStorage: new FakeStorage() });
  await assert.rejects(client.discover(), { code: "wrong_issuer" });
});

test("an unknown kid refetches the JWKS once (key rotation), then refuses", async () => {
  const idp = await fakeIdp();
  const client = new OidcClient(CONFIG, { fetch: idp.fetch, sessionStorage: new FakeStorage() });
  await client.verifyIdToken(await signJwt(idp.key, idClaims(Date.now())), { nonce: "n-0S6_WzA2Mj" });
  assert.equal(idp.jwksFetches, 1);
  const rotated = await makeKey("RS256", "k2");
  idp.jwks = { keys: [idp.key.jwk, rotated.jwk] };
  const claims = await client.verifyIdToken(await signJwt(rotated, idClaims(Date.now())), { nonce: "n-0S6_WzA2Mj" });
  assert.equal(claims.sub, "user-1");
  assert.equal(idp.jwksFetches, 2);
  const stranger = await makeKey("RS256", "k3");
  await assert.rejects(client.verifyIdToken(await signJwt(stranger, idClaims(Date.now()))), { code: "unknown_kid" });
  assert.equal(idp.jwksFetches, 3);
});

test("refresh: rotation keeps the new refresh token; revoke and end-session requests", async () => {
  const idp = await fakeIdp();
  const client = new OidcClient(CONFIG, { fetch: idp.fetch, sessionStorage: new FakeStorage() });
  idp.nonce = undefined;
  const next = await client.refresh({ refresh_token: "rt-0", claims: { sub: "user-1" } });
  assert.equal(idp.lastForm.get("grant_type"), "refresh_token");
  assert.equal(idp.lastForm.get("refresh_token"), "rt-0");
  assert.equal(next.refresh_token, "rt-1");
  await client.revoke("rt-1");
  const revoke = idp.requests.at(-1);
  assert.equal(revoke.url, METADATA.revocation_endpoint);
  assert.deepEqual(Object.fromEntries(new URLSearchParams(revoke.init.body)), { token: "rt-1", token_type_hint: "refresh_token", client_id: CLIENT_ID });
  const logout = new URL(await client.endSessionUrl("id.token.here"));
  assert.equal(logout.searchParams.get("id_token_hint"), "id.token.here");
  assert.equal(logout.searchParams.get("post_logout_redirect_uri"), CONFIG.post_logout_redirect_uri);
  assert.equal(logout.searchParams.get("client_id"), CLIENT_ID);
  assert.ok(logout.searchParams.get("state"));
});
