import assert from "node:assert/strict";
import { test } from "node:test";

import { base64url, base64urlDecode, challengeS256, createVerifier, randomToken } from "../js/pkce.js";

test("S256 challenge of RFC 7636 Appendix B", async () => {
  // The RFC's value (also: printf %s VERIFIER | openssl dgst -sha256 -binary | base64url).
  assert.equal(
    await challengeS256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
  );
});

test("verifier: 43-128 unreserved characters, random each time", async () => {
  const a = createVerifier();
  const b = createVerifier();
  assert.match(a, /^[A-Za-z0-9\-._~]{43,128}$/);
  assert.notEqual(a, b);
  assert.equal(randomToken(32).length, 43);
  await assert.rejects(challengeS256("too-short"), RangeError);
  await assert.rejects(challengeS256("a".repeat(129)), RangeError);
  await assert.rejects(challengeS256("a".repeat(42) + "+"), RangeError);
});

test("verifier uses crypto.getRandomValues", () => {
  let asked = 0;
  const fake = { getRandomValues: (bytes) => { asked += bytes.length; return bytes.fill(0); } };
  assert.equal(createVerifier(fake), "A".repeat(64));
  assert.equal(asked, 48);
});

test("base64url round trip, no padding", () => {
  const bytes = new Uint8Array([251, 255, 0, 1]);
  assert.equal(base64url(bytes), "-_8AAQ");
  assert.deepEqual(base64urlDecode("-_8AAQ"), bytes);
  assert.throws(() => base64urlDecode("a+b/"), TypeError);
});
