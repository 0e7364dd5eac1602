// Client-side checks that mirror the account API's rules (docs/account-api.md) and the password
// policy the IdP publishes at {issuer}/account/password-policy. They spare a round trip; the
// server stays the judge, and its field errors are shown where they differ.

// C0/C1 controls, line and paragraph separators: refused in every profile member.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/u;
// Invisible format characters (bidi overrides, zero-width spaces): refused in preferred_username.
const FORMAT = /\p{Cf}/u;
const LOCALE = /^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/;
const ZONE = /^[A-Za-z][A-Za-z0-9_+\-]*(\/[A-Za-z0-9_+\-]+)*$/;

const length = (text) => [...text].length; // characters are code points

export const PROFILE_LIMITS = { name: 200, given_name: 100, family_name: 100, preferred_username: 100 };

/** {member: message} for a profile patch (strings as typed; blank means clear). */
export function validateProfile(values) {
  const errors = {};
  for (const [member, max] of Object.entries(PROFILE_LIMITS)) {
    const value = (values[member] ?? "").trim();
    if (length(value.normalize("NFC")) > max) errors[member] = `must be at most ${max} characters`;
    else if (CONTROL.test(value)) errors[member] = "must not contain control characters or line breaks";
    else if (member === "preferred_username" && FORMAT.test(value)) errors[member] = "must not contain invisible characters";
  }
  const locale = (values.locale ?? "").trim();
  if (locale && (!LOCALE.test(locale) || locale.length > 35)) errors.locale = "must be a BCP 47 language tag such as en or fr-CA";
  const zone = (values.zoneinfo ?? "").trim();
  if (zone && !ZONE.test(zone)) errors.zoneinfo = "must be an IANA time zone name such as Europe/Paris";
  return errors;
}

/** The members that changed, as the PATCH body wants them: trimmed, blank → null. */
export function profileChanges(profile, values) {
  const changes = {};
  for (const member of [...Object.keys(PROFILE_LIMITS), "locale", "zoneinfo"]) {
    if (!(member in values)) continue;
    const value = values[member].trim() === "" ? null : values[member].trim();
    if (value !== (profile[member] ?? null)) changes[member] = value;
  }
  return changes;
}

export function validateEmail(value, current) {
  const email = value.trim();
  if (!email) return { email: "is required" };
  if (!/^[^\s@]+@[^\s@]+$/.test(email) || length(email) > 254) return { email: "must be an email address such as ada@example.com" };
  if (current && email.toLowerCase() === current.toLowerCase()) return { email: "is already your address" };
  return {};
}

const CLASSES = { lower: /\p{Ll}/u, upper: /\p{Lu}/u, digit: /\p{Nd}/u, other: /[^\p{L}\p{Nd}]/u };

/**
 * {member: message} for the password change form, with the published policy (null: length only
 * from the server). context: { email, name, hasSecondFactor }.
 */
export function validatePasswordChange({ current_password = "", new_password = "", confirm = "" }, policy, context = {}) {
  const errors = {};
  if (!current_password) errors.current_password = "is required";
  const folded = new_password.normalize("NFKC");
  const min = policy ? (context.hasSecondFactor ? policy.min_length_with_mfa : policy.min_length) : 8;
  if (!new_password) errors.new_password = "is required";
  else if (length(folded) < min) errors.new_password = `must be at least ${min} characters`;
  else if (policy?.max_length && length(folded) > policy.max_length) errors.new_password = `must be at most ${policy.max_length} characters`;
  else if (new_password === current_password) errors.new_password = "must differ from your current password";
  else if (policy?.required_character_classes) {
    const found = Object.values(CLASSES).filter((re) => re.test(new_password)).length;
    if (found < policy.required_character_classes) {
      errors.new_password = `must mix at least ${policy.required_character_classes} of: lower case, upper case, digits, other characters`;
    }
  }
  if (!errors.new_password && policy?.context) {
    const lower = folded.toLowerCase();
    const minPart = policy.context.min_part_length ?? 3;
    const personal = [
      ...(context.email ? [context.email.split("@")[0]] : []),
      ...String(context.name ?? "").split(/[\W_]+/u),
    ].filter((p) => length(p) >= minPart);
    if (personal.some((p) => lower.includes(p.toLowerCase()))) errors.new_password = "must not contain your email address or name";
    else if ((policy.context.words ?? []).some((w) => length(w) >= minPart && lower.includes(w.toLowerCase()))) {
      errors.new_password = "must not contain the name of this service";
    }
  }
  if (!errors.new_password && confirm !== new_password) errors.confirm = "does not match the new password";
  return errors;
}

export const PICTURE_TYPES = ["image/png", "image/jpeg", "image/webp"];

export function validatePicture(file) {
  if (!file) return { picture: "choose an image first" };
  if (!PICTURE_TYPES.includes(file.type)) return { picture: "must be a PNG, JPEG or WebP image" };
  return {};
}
