import assert from "node:assert/strict";
import { test } from "node:test";

import { AccountApi, ApiError, parseChallenge } from "../js/api.js";
import { ISSUER, jsonResponse } from "./helpers.js";

const INVALID_TOKEN = { "WWW-Authenticate": 'Bearer realm="idp", error="invalid_token", error_description="The access token expired."' };

function fakeRefresher(tokens) {
  const r = { forced: [], signedOut: [], current: tokens.shift() };
  r.fresh = async ({ force = false, refused } = {}) => {
    if (force) {
      r.forced.push(refused);
      r.current = tokens.shift();
    }
    return { access_token: r.current };
  };
  r.signOut = (reason) => r.signedOut.push(reason);
  return r;
}

test("Bearer in the header only, never cookies", async () => {
  const seen = [];
  const api = new AccountApi({
    issuer: ISSUER,
    fetch: async (url, init) => (seen.push({ url, init }), jsonResponse(200, { sub: "u" })),
    refresher: fakeRefresher(["at-1"]),
  });
  assert.deepEqual(await api.profile(), { sub: "u" });
  assert.equal(seen[0].url, `${ISSUER}/api/account/profile`);
  assert.equal(seen[0].init.headers.Authorization, "Bearer at-1");
  assert.equal(seen[0].init.credentials, "omit");
});

test("401 invalid_token: one refresh, one retry", async () => {
  const tokens = [];
  const api = new AccountApi({
    issuer: ISSUER,
    fetch: async (url, init) => {
      tokens.push(init.headers.Authorization);
      return init.headers.Authorization === "Bearer at-1" ? jsonResponse(401, { error: "invalid_token" }, INVALID_TOKEN) : jsonResponse(200, { ok: 1 });
    },
    refresher: fakeRefresher(["at-1", "at-2"]),
  });
  assert.deepEqual(await api.profile(), { ok: 1 });
  assert.deepEqual(tokens, ["Bearer at-1", "Bearer at-2"]);
});

test("401 invalid_token twice: signed out", async () => {
  const refresher = fakeRefresher(["at-1", "at-2"]);
  let calls = 0;
  const api = new AccountApi({ issuer: ISSUER, fetch: async () => (calls += 1, jsonResponse(401, { error: "invalid_token" }, INVALID_TOKEN)), refresher });
  await assert.rejects(api.profile(), (e) => e instanceof ApiError && e.error === "invalid_token" && e.status === 401);
  assert.equal(calls, 2);
  assert.deepEqual(refresher.forced, ["at-1"]);
  assert.deepEqual(refresher.signedOut, ["invalid_token"]);
});

test("401 insufficient_user_authentication is not a refresh: the caller sees max_age", async () => {
  const refresher = fakeRefresher(["at-1"]);
  const api = new AccountApi({
    issuer: ISSUER,
    fetch: async () => jsonResponse(401, { error: "insufficient_user_authentication", error_description: "Sign in again." },
      { "WWW-Authenticate": 'Bearer realm="idp", error="insufficient_user_authentication", error_description="Sign in again.", max_age="900"' }),
    refresher,
  });
  await assert.rejects(api.changeEmail("a@example.com"), (e) => e.error === "insufficient_user_authentication" && e.challenge.max_age === "900");
  assert.deepEqual(refresher.forced, []);
});

test("field errors: field and fields", async () => {
  const api = new AccountApi({
    issuer: ISSUER,
    fetch: async () => jsonResponse(400, {
      error: "invalid_request", error_description: "locale: must be a BCP 47 language tag such as en or fr-CA",
      field: "locale", fields: { locale: "must be a BCP 47 language tag such as en or fr-CA", zoneinfo: "unknown zone" },
    }),
    refresher: fakeRefresher(["at-1"]),
  });
  await assert.rejects(api.updateProfile({ locale: "english" }), (e) => {
    assert.equal(e.field, "locale");
    assert.deepEqual(Object.keys(e.fields).sort(), ["locale", "zoneinfo"]);
    return true;
  });
  const only = new ApiError(400, { error: "invalid_request", error_description: "email: is malformed", field: "email" });
  assert.deepEqual(only.fields, { email: "is malformed" });
});

test("parseChallenge", () => {
  assert.deepEqual(parseChallenge('Bearer realm="idp", error="insufficient_scope", scope="openid profile"'),
    { realm: "idp", error: "insufficient_scope", scope: "openid profile" });
  assert.deepEqual(parseChallenge("Basic realm=x"), {});
});
