// PKCE (RFC 7636) with S256, and the random values of the round trip (state, nonce).

const encoder = new TextEncoder();

export function base64url(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function base64urlDecode(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw new TypeError("not base64url");
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** byteLength random bytes from crypto.getRandomValues, base64url: 32 bytes give 43 characters. */
export function randomToken(byteLength = 32, cryptoImpl = globalThis.crypto) {
  return base64url(cryptoImpl.getRandomValues(new Uint8Array(byteLength)));
}

const VERIFIER = /^[A-Za-z0-9\-._~]{43,128}$/; // RFC 7636 §4.1

/** A code_verifier: 48 random bytes → 64 unreserved characters (RFC 7636 §4.1: 43–128). */
export function createVerifier(cryptoImpl = globalThis.crypto) {
  return randomToken(48, cryptoImpl);
}

/** code_challenge = BASE64URL(SHA256(ASCII(code_verifier))) (RFC 7636 §4.2). */
export async function challengeS256(verifier, cryptoImpl = globalThis.crypto) {
  if (!VERIFIER.test(verifier)) throw new RangeError("code_verifier must be 43-128 unreserved characters");
  const digest = await cryptoImpl.subtle.digest("SHA-256", encoder.encode(verifier));
  return base64url(new Uint8Array(digest));
}
