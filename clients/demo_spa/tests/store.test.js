import assert from "node:assert/strict";
import { test } from "node:test";

import { MemoryStorage, TOKENS_KEY, TokenStore, recordFromTokenResponse, storageFor } from "../js/store.js";
import { FakeStorage } from "./helpers.js";

const NOW = 1_800_000_000_000;
const RESPONSE = { access_token: "at", token_type: "Bearer", expires_in: 600, refresh_token: "rt", id_token: "id", scope: "openid" };

test("a record keeps the absolute expiry", () => {
  const record = recordFromTokenResponse(RESPONSE, { now: NOW, idClaims: { sub: "u", sid: "s" } });
  assert.equal(record.expires_at, NOW + 600_000);
  assert.equal(record.issued_at, NOW);
  assert.deepEqual(record.claims, { sub: "u", sid: "s" });
});

test("a refresh answer without refresh or ID token keeps the previous ones", () => {
  const first = recordFromTokenResponse(RESPONSE, { now: NOW, idClaims: { sub: "u" } });
  const next = recordFromTokenResponse({ access_token: "at2", token_type: "bearer", expires_in: 60 }, { now: NOW + 1, previous: first });
  assert.equal(next.refresh_token, "rt");
  assert.equal(next.id_token, "id");
  assert.deepEqual(next.claims, { sub: "u" });
  assert.throws(() => recordFromTokenResponse({ access_token: "x", token_type: "DPoP" }, { now: NOW }), TypeError);
});

test("set, get and clear through the chosen storage", () => {
  const storage = new FakeStorage();
  const store = new TokenStore(storage);
  assert.equal(store.get(), null);
  const record = recordFromTokenResponse(RESPONSE, { now: NOW });
  store.set(record);
  assert.deepEqual(JSON.parse(storage.getItem(TOKENS_KEY)), record);
  assert.deepEqual(new TokenStore(storage).get(), record); // another tab sharing localStorage
  store.clear();
  assert.equal(storage.getItem(TOKENS_KEY), null);
});

test("a corrupted or foreign value is removed, not trusted", () => {
  const storage = new FakeStorage();
  storage.setItem(TOKENS_KEY, "{not json");
  assert.equal(new TokenStore(storage).get(), null);
  assert.equal(storage.getItem(TOKENS_KEY), null);
  storage.setItem(TOKENS_KEY, JSON.stringify({ access_token: 1 }));
  assert.equal(new TokenStore(storage).get(), null);
  assert.throws(() => new TokenStore(storage).set({ nope: true }), TypeError);
});

test("storage that throws (disabled by the browser) reads as signed out", () => {
  const broken = { getItem() { throw new Error("SecurityError"); }, removeItem() { throw new Error("SecurityError"); } };
  const store = new TokenStore(broken);
  assert.equal(store.get(), null);
  store.clear();
});

test("token_store selects localStorage, sessionStorage or memory", () => {
  const globals = { localStorage: new FakeStorage(), sessionStorage: new FakeStorage() };
  assert.equal(storageFor("localStorage", globals), globals.localStorage);
  assert.equal(storageFor("sessionStorage", globals), globals.sessionStorage);
  const memory = storageFor("memory", globals);
  assert.ok(memory instanceof MemoryStorage);
  assert.notEqual(storageFor("memory", globals), memory); // a page's own: nothing shared
  assert.throws(() => storageFor("cookie", globals), RangeError);
});
