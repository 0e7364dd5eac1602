// The account API client (docs/account-api.md): Bearer token in the Authorization header only,
// no cookies. A 401 invalid_token gets one refresh and one retry; a second one signs out.

export class ApiError extends Error {
  constructor(status, body, headers) {
    const description = typeof body?.error_description === "string" ? body.error_description : `HTTP ${status}`;
    super(description);
    this.name = "ApiError";
    this.status = status;
    this.error = typeof body?.error === "string" ? body.error : "server_error";
    this.field = typeof body?.field === "string" ? body.field : null;
    // {"fields": {"name": "too long"}}; older answers name one field only
    this.fields = body?.fields && typeof body.fields === "object" ? { ...body.fields } : {};
    if (this.field && !this.fields[this.field]) this.fields[this.field] = description.replace(/^[^:]+:\s*/, "");
    this.retryAfter = Number(headers?.get?.("Retry-After")) || null;
    this.challenge = parseChallenge(headers?.get?.("WWW-Authenticate") ?? "");
  }
}

/** The parameters of a Bearer challenge (RFC 6750 §3): {error, error_description, max_age, scope}. */
export function parseChallenge(header) {
  const out = {};
  if (!/^\s*Bearer\b/i.test(header)) return out;
  for (const match of header.matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) out[match[1]] = match[2].replace(/\\(.)/g, "$1");
  return out;
}

export class AccountApi {
  /** refresher: { fresh({force, refused}) → record, signOut(reason) }. */
  constructor({ issuer, fetch, refresher }) {
    this.base = `${issuer.replace(/\/$/, "")}/api/account`;
    this.fetch = fetch;
    this.refresher = refresher;
  }

  async #send(method, path, { json, body, contentType }, record) {
    const headers = { Authorization: `Bearer ${record.access_token}`, Accept: "application/json" };
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (contentType) {
      headers["Content-Type"] = contentType;
    }
    return this.fetch(`${this.base}${path}`, { method, headers, body, credentials: "omit", cache: "no-store" });
  }

  /** A request; answers the Response when ok (status < 400), else throws ApiError. */
  async request(method, path, options = {}) {
    let record = await this.refresher.fresh();
    let response = await this.#send(method, path, options, record);
    if (response.status === 401 && (await isInvalidToken(response))) {
      record = await this.refresher.fresh({ force: true, refused: record.access_token });
      response = await this.#send(method, path, options, record);
      if (response.status === 401 && (await isInvalidToken(response))) {
        this.refresher.signOut("invalid_token");
        throw await toError(response);
      }
    }
    if (!response.ok) throw await toError(response);
    return response;
  }

  async json(method, path, options) {
    const response = await this.request(method, path, options);
    return response.status === 204 ? null : response.json();
  }

  profile() {
    return this.json("GET", "/profile");
  }
  updateProfile(changes) {
    return this.json("PATCH", "/profile", { json: changes });
  }
  changeEmail(email) {
    return this.json("POST", "/email", { json: { email } });
  }
  changePassword(currentPassword, newPassword) {
    return this.json("POST", "/password", { json: { current_password: currentPassword, new_password: newPassword } });
  }
  uploadPicture(file) {
    return this.json("PUT", "/picture", { body: file, contentType: file.type || "application/octet-stream" });
  }
  removePicture() {
    return this.json("DELETE", "/picture");
  }
  sessions() {
    return this.json("GET", "/sessions");
  }
  endSession(sid, password) {
    return this.json("DELETE", `/sessions/${encodeURIComponent(sid)}`, password ? { json: { password } } : {});
  }
  mfa() {
    return this.json("GET", "/mfa");
  }
  activity({ before, limit = 20 } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before !== undefined && before !== null) query.set("before", String(before));
    return this.json("GET", `/activity?${query}`);
  }
  async exportBlob() {
    return (await this.request("GET", "/export")).blob();
  }
  deleteAccount(password) {
    return this.json("DELETE", "", { json: { password } });
  }
}

async function isInvalidToken(response) {
  const challenge = parseChallenge(response.headers.get("WWW-Authenticate") ?? "");
  if (challenge.error) return challenge.error === "invalid_token";
  try {
    return (await response.clone().json()).error === "invalid_token";
  } catch {
    return false;
  }
}

async function toError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON */
  }
  return new ApiError(response.status, body, response.headers);
}
