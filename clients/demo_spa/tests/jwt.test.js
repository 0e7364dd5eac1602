// ID-token verification with real keys: valid tokens pass; a forged signature, a wrong aud, an
// expired token and a wrong nonce are each refused with their own error code.
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";

import { JwtError, decodeJwt, selectKey, validateIdTokenClaims, verifyJws } from "../js/jwt.js";
import { base64url } from "../js/pkce.js";
import { CLIENT_ID, ISSUER, idClaims, makeKey, signJwt, supportsEd25519 } from "./helpers.js";

const NOW = Date.parse("2026-12-01T16:00:00Z");
const nowSeconds = Math.floor(NOW / 1000);
const checks = { issuer: ISSUER, clientId: CLIENT_ID, now: nowSeconds, nonce: "n-0S6_WzA2Mj" };

async function verifyIdToken(token, jwks, options = checks) {
  const { header } = decodeJwt(token);
  const { payload } = await verifyJws(token, selectKey(jwks, header));
  return validateIdTokenClaims(payload, options);
}

function refusedWith(code) {
  return (error) => {
    assert.ok(error instanceof JwtError, `expected a JwtError, got ${error}`);
    assert.equal(error.code, code);
    return true;
  };
}

const ALGS = ["RS256", "ES256"];
if (await supportsEd25519()) ALGS.push("EdDSA");

for (const alg of ALGS) {
  describe(`${alg} ID tokens`, () => {
    let key;
    let other;
    let jwks;
    before(async () => {
      key = await makeKey(alg);
      other = await makeKey(alg, key.kid); // same kid, another private key: a forger's
      jwks = { keys: [key.jwk] };
    });

    test("a valid token passes", async () => {
      const claims = await verifyIdToken(await signJwt(key, idClaims(NOW)), jwks);
      assert.equal(claims.sub, "user-1");
      assert.equal(claims.sid, "sid-1");
    });

    test("a forged signature is refused", async () => {
      const forged = await signJwt(other, idClaims(NOW));
      await assert.rejects(verifyIdToken(forged, jwks), refusedWith("bad_signature"));
    });

    test("a payload changed after signing is refused", async () => {
      const [h, , s] = (await signJwt(key, idClaims(NOW))).split(".");
      const p = base64url(new TextEncoder().encode(JSON.stringify(idClaims(NOW, { sub: "admin" }))));
      await assert.rejects(verifyIdToken(`${h}.${p}.${s}`, jwks), refusedWith("bad_signature"));
    });

    test("a wrong aud is refused", async () => {
      const token = await signJwt(key, idClaims(NOW, { aud: "another-app" }));
      await assert.rejects(verifyIdToken(token, jwks), refusedWith("wrong_audience"));
    });

    test("an expired token is refused (beyond 60 s of skew)", async () => {
      const token = await signJwt(key, idClaims(NOW, { iat: nowSeconds - 400, exp: nowSeconds - 61 }));
      await assert.rejects(verifyIdToken(token, jwks), refusedWith("expired"));
      const justExpired = await signJwt(key, idClaims(NOW, { iat: nowSeconds - 400, exp: nowSeconds - 30 }));
      assert.equal((await verifyIdToken(justExpired, jwks)).sub, "user-1"); // within the skew
    });

    test("a wrong nonce is refused", async () => {
      const token = await signJwt(key, idClaims(NOW, { nonce: "replayed" }));
      await assert.rejects(verifyIdToken(token, jwks), refusedWith("wrong_nonce"));
      const none = await signJwt(key, idClaims(NOW, { nonce: undefined }));
      await assert.rejects(verifyIdToken(none, jwks), refusedWith("wrong_nonce"));
    });
  });
}

describe("claims", () => {
  const base = idClaims(NOW);
  test("wrong issuer", () => {
    assert.throws(() => validateIdTokenClaims({ ...base, iss: "http://evil" }, checks), refusedWith("wrong_issuer"));
  });
  test("several audiences need azp = client_id", () => {
    const aud = [CLIENT_ID, "other"];
    assert.throws(() => validateIdTokenClaims({ ...base, aud }, checks), refusedWith("wrong_azp"));
    assert.throws(() => validateIdTokenClaims({ ...base, aud, azp: "other" }, checks), refusedWith("wrong_azp"));
    assert.equal(validateIdTokenClaims({ ...base, aud, azp: CLIENT_ID }, checks).sub, "user-1");
  });
  test("iat in the future", () => {
    assert.throws(() => validateIdTokenClaims({ ...base, iat: nowSeconds + 120 }, checks), refusedWith("bad_iat"));
  });
  test("a refreshed ID token must be about the same user", () => {
    const options = { ...checks, nonce: undefined, subject: "user-2" };
    assert.throws(() => validateIdTokenClaims(base, options), refusedWith("wrong_subject"));
  });
});

describe("algorithms and keys", () => {
  test("alg none, HS256 and an RSA key claimed as ES256 are refused", async () => {
    const rsa = await makeKey("RS256");
    const token = await signJwt(rsa, idClaims(NOW));
    const [, p, s] = token.split(".");
    for (const alg of ["none", "HS256"]) {
      const h = base64url(new TextEncoder().encode(JSON.stringify({ alg, kid: rsa.kid })));
      assert.throws(() => selectKey({ keys: [rsa.jwk] }, decodeJwt(`${h}.${p}.${s}`).header), refusedWith("unsupported_alg"));
    }
    assert.throws(() => selectKey({ keys: [rsa.jwk] }, { alg: "ES256", kid: rsa.kid }), refusedWith("unknown_kid"));
  });

  test("the key is chosen by kid", async () => {
    const a = await makeKey("ES256", "a");
    const b = await makeKey("ES256", "b");
    assert.equal(selectKey({ keys: [a.jwk, b.jwk] }, { alg: "ES256", kid: "b" }).kid, "b");
    assert.throws(() => selectKey({ keys: [a.jwk] }, { alg: "ES256", kid: "c" }), refusedWith("unknown_kid"));
  });

  test("an Ed25519 key WebCrypto cannot import is refused with a clear error", async () => {
    const subtle = { importKey: async () => { throw new DOMException("Unrecognized name.", "NotSupportedError"); } };
    const jwk = { kty: "OKP", crv: "Ed25519", x: base64url(new Uint8Array(32)), kid: "ed" };
    const h = base64url(new TextEncoder().encode(JSON.stringify({ alg: "EdDSA", kid: "ed" })));
    const p = base64url(new TextEncoder().encode("{}"));
    const token = `${h}.${p}.${base64url(new Uint8Array(64))}`;
    await assert.rejects(verifyJws(token, jwk, subtle), (error) => {
      refusedWith("unsupported_key")(error);
      assert.match(error.message, /cannot verify Ed25519/);
      return true;
    });
  });

  test("malformed tokens", () => {
    assert.throws(() => decodeJwt("a.b"), refusedWith("malformed"));
    assert.throws(() => decodeJwt("!!.e30.AA"), refusedWith("malformed"));
  });
});
