// Words for the IdP's event names and dates, for lists and toasts.

export const EVENT_LABELS = {
  login_succeeded: "Signed in",
  login_failed: "Failed sign-in attempt",
  new_device_sign_in: "Signed in from a new device",
  password_changed: "Password changed",
  email_changed: "Email address changed",
  mfa_enabled: "Second factor turned on",
  mfa_disabled: "Second factor turned off",
  passkey_registered: "Passkey added",
  passkey_removed: "Passkey removed",
  session_ended: "A session was ended",
  profile_updated: "Profile updated",
  picture_changed: "Profile picture changed",
  consent_withdrawn: "Access withdrawn from an application",
  account_locked: "Account locked after too many attempts",
  second_factors_reset: "Second factors reset by an administrator",
  account_disabled: "Account disabled",
};

export function eventLabel(name) {
  return EVENT_LABELS[name] ?? String(name).replace(/_/g, " ");
}

/** A short detail from an event's data: the device, the reason, the fields. */
export function eventDetail(data = {}) {
  const parts = [];
  if (typeof data.device === "string") parts.push(data.device);
  if (typeof data.reason === "string") parts.push(data.reason.replace(/_/g, " "));
  if (Array.isArray(data.fields)) parts.push(data.fields.join(", "));
  return parts.join(" · ");
}

export function formatTime(value) {
  if (value === null || value === undefined) return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}
