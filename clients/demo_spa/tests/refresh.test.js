// Refresh serialization: two tabs sharing one localStorage, both seeing expiry near, make exactly
// one token request under the Web Lock and both end with the new tokens.
import assert from "node:assert/strict";
import { test } from "node:test";

import { LOCK_NAME, Refresher, SignedOut, refreshAt } from "../js/refresh.js";
import { TokenStore } from "../js/store.js";
import { FakeBus, FakeLocks, FakeStorage, sleep } from "./helpers.js";

const T0 = 1_800_000_000_000;

function record(n, { issuedAt = T0, lifetime = 600_000 } = {}) {
  return {
    access_token: `at-${n}`, refresh_token: `rt-${n}`, id_token: "id", scope: "openid",
    issued_at: issuedAt, expires_at: issuedAt + lifetime, claims: { sub: "u", sid: "s1" },
  };
}

/** A token endpoint with rotation: each refresh token works once (a reuse would revoke the grant). */
function fakeOidc(clock) {
  const oidc = { calls: 0, spent: new Set(), reused: false };
  oidc.refresh = async (previous) => {
    oidc.calls += 1;
    if (oidc.spent.has(previous.refresh_token)) oidc.reused = true;
    oidc.spent.add(previous.refresh_token);
    await sleep(20); // the network: the other tab is waiting on the lock meanwhile
    return record(oidc.calls + 1, { issuedAt: clock.now });
  };
  return oidc;
}

function tab({ storage, locks, oidc, clock, bus }) {
  const t = { signedOut: [], refreshed: [] };
  t.store = new TokenStore(storage);
  t.refresher = new Refresher({
    store: t.store, oidc, locks, channel: bus?.channel() ?? null, now: () => clock.now,
    onSignedOut: (reason) => t.signedOut.push(reason), onRefreshed: (r) => t.refreshed.push(r.access_token),
    timers: { setTimeout: () => 0, clearTimeout: () => {} },
  });
  return t;
}

test("refresh is due 60 s before expiry, or at 90 % of a short lifetime", () => {
  assert.equal(refreshAt(record(1)), T0 + 540_000);
  assert.equal(refreshAt(record(1, { lifetime: 100_000 })), T0 + 90_000);
});

test("tokens not yet due are used as they are", async () => {
  const clock = { now: T0 + 1000 };
  const storage = new FakeStorage();
  const oidc = fakeOidc(clock);
  const a = tab({ storage, locks: new FakeLocks(), oidc, clock });
  a.store.set(record(1));
  assert.equal(await a.refresher.accessToken(), "at-1");
  assert.equal(oidc.calls, 0);
});

test("two tabs near expiry: one token request, under the lock, and both get the new tokens", async () => {
  const clock = { now: T0 + 570_000 }; // 30 s left
  const storage = new FakeStorage(); // the localStorage both tabs see
  const locks = new FakeLocks();
  const bus = new FakeBus();
  const oidc = fakeOidc(clock);
  const a = tab({ storage, locks, oidc, clock, bus });
  const b = tab({ storage, locks, oidc, clock, bus });
  a.store.set(record(1));
  const requested = [];
  const realRequest = locks.request.bind(locks);
  locks.request = (name, options, cb) => (requested.push(name), realRequest(name, options, cb));
  // Wire the channel as the app does.
  bus.channels[0].onmessage = (e) => a.refresher.handleMessage(e.data);
  bus.channels[1].onmessage = (e) => b.refresher.handleMessage(e.data);

  const [ra, rb] = await Promise.all([a.refresher.fresh(), b.refresher.fresh()]);
  assert.equal(oidc.calls, 1);
  assert.equal(oidc.reused, false);
  assert.equal(ra.access_token, "at-2");
  assert.equal(rb.access_token, "at-2");
  assert.equal(a.store.get().refresh_token, "rt-2");
  assert.equal(b.store.get().refresh_token, "rt-2");
  assert.deepEqual(requested, [LOCK_NAME, LOCK_NAME]);
  assert.equal(locks.maxHeld, 1);
  await sleep(0);
  assert.ok(b.refreshed.includes("at-2")); // the tab that did not refresh was told
});

test("without the lock both tabs would spend the refresh token (the test can see it)", async () => {
  const clock = { now: T0 + 570_000 };
  const storage = new FakeStorage();
  const oidc = fakeOidc(clock);
  const a = tab({ storage, locks: null, oidc, clock });
  const b = tab({ storage, locks: null, oidc, clock });
  a.store.set(record(1));
  await Promise.all([a.refresher.fresh(), b.refresher.fresh()]);
  assert.equal(oidc.calls, 2);
  assert.equal(oidc.reused, true);
});

test("forced refresh after invalid_token is skipped when another tab already replaced the token", async () => {
  const clock = { now: T0 + 1000 };
  const storage = new FakeStorage();
  const locks = new FakeLocks();
  const oidc = fakeOidc(clock);
  const a = tab({ storage, locks, oidc, clock });
  a.store.set(record(5));
  assert.equal((await a.refresher.fresh({ force: true, refused: "at-4" })).access_token, "at-5");
  assert.equal(oidc.calls, 0);
  assert.equal((await a.refresher.fresh({ force: true, refused: "at-5" })).access_token, "at-2");
  assert.equal(oidc.calls, 1);
});

test("a refresh error clears the store, signs out and tells the other tabs", async () => {
  const clock = { now: T0 + 590_000 };
  const storage = new FakeStorage();
  const bus = new FakeBus();
  const oidc = { refresh: async () => { throw Object.assign(new Error("invalid_grant"), { code: "invalid_grant" }); } };
  const a = tab({ storage, locks: new FakeLocks(), oidc, clock, bus });
  const b = tab({ storage, locks: new FakeLocks(), oidc, clock, bus });
  bus.channels[1].onmessage = (e) => b.refresher.handleMessage(e.data);
  a.store.set(record(1));
  await assert.rejects(a.refresher.fresh(), SignedOut);
  assert.equal(storage.getItem("idp-spa.tokens"), null);
  assert.deepEqual(a.signedOut, ["refresh_failed"]);
  await sleep(0);
  assert.deepEqual(b.signedOut, ["refresh_failed"]);
  await assert.rejects(a.refresher.fresh(), { reason: "no_tokens" });
});

test("with per-tab stores, a sign-out elsewhere ends only the same IdP session", async () => {
  const clock = { now: T0 };
  const a = tab({ storage: new FakeStorage(), locks: null, oidc: fakeOidc(clock), clock });
  a.store.set(record(1));
  a.refresher.handleMessage({ type: "signed_out", sid: "another-session" });
  assert.equal(a.store.get().access_token, "at-1");
  a.refresher.handleMessage({ type: "signed_out", sid: "s1" });
  assert.equal(a.store.get(), null);
  assert.equal(a.signedOut.length, 1);
});
