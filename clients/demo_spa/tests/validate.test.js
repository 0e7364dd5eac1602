import assert from "node:assert/strict";
import { test } from "node:test";

import { profileChanges, validateEmail, validatePasswordChange, validateProfile } from "../js/validate.js";

const POLICY = {
  min_length: 15, min_length_with_mfa: 8, max_length: 128, required_character_classes: 0,
  context: { words: ["idp", "identity", "openid"], min_part_length: 3 },
};

test("profile rules of the account API", () => {
  assert.deepEqual(validateProfile({ name: "Ada Lovelace", locale: "fr-CA", zoneinfo: "America/Toronto" }), {});
  assert.deepEqual(Object.keys(validateProfile({ name: "x".repeat(201), locale: "english", zoneinfo: "not a zone" })).sort(), ["locale", "name", "zoneinfo"]);
  assert.ok(validateProfile({ given_name: "a\nb" }).given_name);
  assert.ok(validateProfile({ preferred_username: "ada\u200b" }).preferred_username);
  assert.deepEqual(validateProfile({ name: "<img src=x onerror=alert(1)>" }), {}); // text is text
});

test("only changed members are sent; blank clears", () => {
  const profile = { name: "Ada", given_name: null, locale: "en" };
  assert.deepEqual(profileChanges(profile, { name: " Ada ", given_name: "", locale: "", zoneinfo: "Europe/Paris" }),
    { locale: null, zoneinfo: "Europe/Paris" });
});

test("email", () => {
  assert.deepEqual(validateEmail("ada@example.net", "ada@example.com"), {});
  assert.ok(validateEmail("ada", "").email);
  assert.ok(validateEmail("ADA@example.com", "ada@example.com").email);
});

test("password change with the published policy", () => {
  const ok = { current_password: "old one", new_password: "correct horse battery", confirm: "correct horse battery" };
  assert.deepEqual(validatePasswordChange(ok, POLICY, { email: "ada@example.com", name: "Ada" }), {});
  assert.match(validatePasswordChange({ ...ok, new_password: "short", confirm: "short" }, POLICY).new_password, /at least 15/);
  assert.deepEqual(validatePasswordChange({ ...ok, new_password: "eightchr", confirm: "eightchr" }, POLICY, { hasSecondFactor: true }), {});
  assert.match(validatePasswordChange({ ...ok, new_password: "lovelace-rocks-forever", confirm: "lovelace-rocks-forever" }, POLICY, { name: "Ada Lovelace" }).new_password, /name/);
  assert.match(validatePasswordChange({ ...ok, new_password: "my openid password!", confirm: "my openid password!" }, POLICY).new_password, /service/);
  assert.equal(validatePasswordChange({ ...ok, confirm: "other" }, POLICY).confirm, "does not match the new password");
  assert.equal(validatePasswordChange({ ...ok, current_password: "" }, POLICY).current_password, "is required");
  const classes = { ...POLICY, required_character_classes: 3 };
  assert.match(validatePasswordChange(ok, classes).new_password, /mix at least 3/);
});
