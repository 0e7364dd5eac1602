// JWS verification with WebCrypto and the ID token's claim checks (OpenID Connect Core §3.1.3.7).
// Every failure is a JwtError whose `code` says which check refused the token.

import { base64urlDecode } from "./pkce.js";

export class JwtError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "JwtError";
    this.code = code;
  }
}

const decoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

function decodeJson(part, what) {
  try {
    const value = JSON.parse(decoder.decode(base64urlDecode(part)));
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new TypeError();
    return value;
  } catch {
    throw new JwtError("malformed", `The token's ${what} is not base64url-encoded JSON.`);
  }
}

/** The header, payload and what is signed of a compact JWS; nothing is verified yet. */
export function decodeJwt(token) {
  if (typeof token !== "string") throw new JwtError("malformed", "The token is not a string.");
  const parts = token.split(".");
  if (parts.length !== 3) throw new JwtError("malformed", "The token is not a compact JWS (three parts).");
  const [h, p, s] = parts;
  let signature;
  try {
    signature = base64urlDecode(s);
  } catch {
    throw new JwtError("malformed", "The token's signature is not base64url.");
  }
  return {
    header: decodeJson(h, "header"),
    payload: decodeJson(p, "payload"),
    signingInput: encoder.encode(`${h}.${p}`),
    signature,
  };
}

// The algorithms accepted, with what the key must be and how WebCrypto names them. No "none",
// no HMAC (a public client has no secret; RFC 8725 §3.1: never let the token pick the family).
const ALGORITHMS = {
  RS256: {
    fits: (jwk) => jwk.kty === "RSA",
    importParams: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    verifyParams: { name: "RSASSA-PKCS1-v1_5" },
  },
  ES256: {
    fits: (jwk) => jwk.kty === "EC" && jwk.crv === "P-256",
    importParams: { name: "ECDSA", namedCurve: "P-256" },
    verifyParams: { name: "ECDSA", hash: "SHA-256" },
    signatureLength: 64, // JOSE: raw r||s, 32 bytes each (RFC 7518 §3.4), which is what WebCrypto takes
  },
  EdDSA: {
    fits: (jwk) => jwk.kty === "OKP" && jwk.crv === "Ed25519",
    importParams: { name: "Ed25519" },
    verifyParams: { name: "Ed25519" },
    signatureLength: 64,
  },
};
ALGORITHMS.Ed25519 = ALGORITHMS.EdDSA; // the fully-specified name (RFC 9864)

export const SUPPORTED_ALGORITHMS = Object.keys(ALGORITHMS);

/** The JWK of jwks that signed a token with this header: by kid, or the only fitting key. */
export function selectKey(jwks, header) {
  const spec = ALGORITHMS[header.alg];
  if (!spec) throw new JwtError("unsupported_alg", `The token's algorithm ${JSON.stringify(header.alg)} is not accepted.`);
  const keys = Array.isArray(jwks?.keys) ? jwks.keys : [];
  const usable = keys.filter(
    (k) => spec.fits(k) && (k.use === undefined || k.use === "sig") && (k.alg === undefined || k.alg === header.alg),
  );
  const found = header.kid === undefined ? (usable.length === 1 ? usable : []) : usable.filter((k) => k.kid === header.kid);
  if (found.length !== 1) {
    throw new JwtError("unknown_kid", `No ${header.alg} signing key with kid ${JSON.stringify(header.kid)} in the JWKS.`);
  }
  return found[0];
}

async function importKey(jwk, alg, subtle) {
  const spec = ALGORITHMS[alg];
  const { kty, crv, n, e, x, y } = jwk; // public members only: never import a private key by accident
  const publicJwk = Object.fromEntries(Object.entries({ kty, crv, n, e, x, y }).filter(([, v]) => v !== undefined));
  try {
    return await subtle.importKey("jwk", publicJwk, spec.importParams, false, ["verify"]);
  } catch (error) {
    if (alg === "EdDSA" || alg === "Ed25519") {
      throw new JwtError(
        "unsupported_key",
        `This browser's WebCrypto cannot verify Ed25519 signatures, so the key ${JSON.stringify(jwk.kid)} is refused.`,
      );
    }
    throw new JwtError("bad_key", `The JWKS key ${JSON.stringify(jwk.kid)} cannot be imported: ${error.message}`);
  }
}

/** Verify a compact JWS against a JWK; answers the decoded token or throws JwtError("bad_signature"). */
export async function verifyJws(token, jwk, subtle = globalThis.crypto.subtle) {
  const decoded = decodeJwt(token);
  const spec = ALGORITHMS[decoded.header.alg];
  if (!spec || !spec.fits(jwk)) throw new JwtError("unsupported_alg", "The token's algorithm does not fit the key.");
  if (decoded.header.crit !== undefined) throw new JwtError("malformed", "The token has critical header parameters.");
  const key = await importKey(jwk, decoded.header.alg, subtle);
  if (spec.signatureLength && decoded.signature.length !== spec.signatureLength) {
    throw new JwtError("bad_signature", "The token's signature has the wrong length.");
  }
  let valid = false;
  try {
    valid = await subtle.verify(spec.verifyParams, key, decoded.signature, decoded.signingInput);
  } catch {
    valid = false;
  }
  if (!valid) throw new JwtError("bad_signature", "The token's signature does not verify.");
  return decoded;
}

/**
 * The ID token's claims (OIDC Core §3.1.3.7). options: issuer, clientId, now (seconds), skew
 * (seconds, at most 60), nonce (required when given: undefined skips, as for a refreshed ID token).
 */
export function validateIdTokenClaims(claims, { issuer, clientId, now, skew = 60, nonce, subject }) {
  if (claims.iss !== issuer) throw new JwtError("wrong_issuer", `The ID token's issuer is not ${issuer}.`);
  const aud = typeof claims.aud === "string" ? [claims.aud] : claims.aud;
  if (!Array.isArray(aud) || !aud.includes(clientId)) {
    throw new JwtError("wrong_audience", "The ID token was not issued to this application (aud).");
  }
  if ((aud.length > 1 || claims.azp !== undefined) && claims.azp !== clientId) {
    throw new JwtError("wrong_azp", "The ID token's authorized party (azp) is not this application.");
  }
  if (typeof claims.sub !== "string" || claims.sub === "") throw new JwtError("malformed", "The ID token has no sub.");
  if (subject !== undefined && claims.sub !== subject) {
    throw new JwtError("wrong_subject", "The refreshed ID token is about another user (OIDC Core §12.2).");
  }
  if (typeof claims.exp !== "number") throw new JwtError("malformed", "The ID token has no exp.");
  if (now > claims.exp + skew) throw new JwtError("expired", "The ID token has expired.");
  if (typeof claims.iat !== "number") throw new JwtError("malformed", "The ID token has no iat.");
  if (claims.iat > now + skew || claims.iat > claims.exp) {
    throw new JwtError("bad_iat", "The ID token's issue time (iat) is in the future.");
  }
  if (nonce !== undefined && claims.nonce !== nonce) {
    throw new JwtError("wrong_nonce", "The ID token's nonce is not the one this sign-in sent.");
  }
  return claims;
}
