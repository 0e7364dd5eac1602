// Test helpers: real keys from crypto.subtle.generateKey, real JWTs signed with them, and fakes
// of the browser's storage, locks and fetch.

import { base64url } from "../js/pkce.js";

export const ISSUER = "http://127.0.0.1:8000";
export const CLIENT_ID = "demo-spa";
const encoder = new TextEncoder();

const PARAMS = {
  RS256: {
    generate: { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
    sign: { name: "RSASSA-PKCS1-v1_5" },
  },
  ES256: { generate: { name: "ECDSA", namedCurve: "P-256" }, sign: { name: "ECDSA", hash: "SHA-256" } },
  EdDSA: { generate: { name: "Ed25519" }, sign: { name: "Ed25519" } },
};

export async function supportsEd25519() {
  try {
    await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    return true;
  } catch {
    return false;
  }
}

/** { alg, kid, privateKey, jwk (public, with kid/alg/use) } */
export async function makeKey(alg, kid = `${alg}-1`) {
  const pair = await crypto.subtle.generateKey(PARAMS[alg].generate, true, ["sign", "verify"]);
  const exported = await crypto.subtle.exportKey("jwk", pair.publicKey);
  const { kty, crv, n, e, x, y } = exported;
  const jwk = Object.fromEntries(Object.entries({ kty, crv, n, e, x, y, kid, alg, use: "sig" }).filter(([, v]) => v !== undefined));
  return { alg, kid, privateKey: pair.privateKey, jwk };
}

export async function signJwt(key, payload, headerExtra = {}) {
  const header = { alg: key.alg, typ: "JWT", kid: key.kid, ...headerExtra };
  const input = `${base64url(encoder.encode(JSON.stringify(header)))}.${base64url(encoder.encode(JSON.stringify(payload)))}`;
  const signature = await crypto.subtle.sign(PARAMS[key.alg].sign, key.privateKey, encoder.encode(input));
  return `${input}.${base64url(new Uint8Array(signature))}`;
}

export function idClaims(now, extra = {}) {
  const seconds = Math.floor(now / 1000);
  return { iss: ISSUER, sub: "user-1", aud: CLIENT_ID, exp: seconds + 300, iat: seconds, nonce: "n-0S6_WzA2Mj", sid: "sid-1", ...extra };
}

/** A Storage backed by a Map; two "tabs" share one by passing the same instance. */
export class FakeStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
  }
  removeItem(key) {
    this.items.delete(key);
  }
}

/** navigator.locks as a real mutex per name (exclusive mode), as the Web Locks API behaves. */
export class FakeLocks {
  constructor() {
    this.tails = new Map();
    this.held = 0;
    this.maxHeld = 0;
  }
  request(name, options, callback) {
    if (typeof options === "function") callback = options;
    const previous = this.tails.get(name) ?? Promise.resolve();
    const run = previous.then(async () => {
      this.held += 1;
      this.maxHeld = Math.max(this.maxHeld, this.held);
      try {
        return await callback({ name, mode: "exclusive" });
      } finally {
        this.held -= 1;
      }
    });
    this.tails.set(name, run.catch(() => {}));
    return run;
  }
}

/** A BroadcastChannel bus: a message posted on one channel reaches every other one. */
export class FakeBus {
  constructor() {
    this.channels = [];
  }
  channel() {
    const bus = this;
    const ch = {
      onmessage: null,
      postMessage(data) {
        for (const other of bus.channels) if (other !== ch) queueMicrotask(() => other.onmessage?.({ data: structuredClone(data) }));
      },
    };
    this.channels.push(ch);
    return ch;
  }
}

export function jsonResponse(status, body, headers = {}) {
  return new Response(body === null ? null : JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
