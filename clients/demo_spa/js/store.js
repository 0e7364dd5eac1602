// The token store. Tokens are kept with their absolute expiry (ms since the epoch), under one key,
// in localStorage (the default), sessionStorage or memory (config `token_store`). See the README's
// "What localStorage costs".

export const TOKENS_KEY = "idp-spa.tokens";
export const STORE_KINDS = ["localStorage", "sessionStorage", "memory"];

/** A Storage-shaped map that lives as long as the page. */
export class MemoryStorage {
  #items = new Map();
  getItem(key) {
    return this.#items.has(key) ? this.#items.get(key) : null;
  }
  setItem(key, value) {
    this.#items.set(key, String(value));
  }
  removeItem(key) {
    this.#items.delete(key);
  }
}

/** The Storage for a `token_store` value; `globals` is window (or a fake of it in tests). */
export function storageFor(kind, globals = globalThis) {
  if (!STORE_KINDS.includes(kind)) throw new RangeError(`token_store must be one of ${STORE_KINDS.join(", ")}`);
  if (kind === "memory") return new MemoryStorage();
  return globals[kind];
}

/**
 * A token endpoint answer (RFC 6749 §5.1) as a stored record; `previous` supplies the refresh
 * token and ID token when a refresh answer leaves them out (no rotation, no new ID token).
 */
export function recordFromTokenResponse(response, { now, idClaims, previous = null }) {
  if (typeof response.access_token !== "string" || !/^bearer$/i.test(response.token_type ?? "")) {
    throw new TypeError("The token response has no Bearer access_token.");
  }
  const lifetime = Number.isFinite(response.expires_in) ? response.expires_in : 300;
  return {
    access_token: response.access_token,
    refresh_token: response.refresh_token ?? previous?.refresh_token ?? null,
    id_token: response.id_token ?? previous?.id_token ?? null,
    scope: response.scope ?? previous?.scope ?? "",
    issued_at: now,
    expires_at: now + lifetime * 1000,
    // What the app shows and checks (sub, sid): from the verified ID token.
    claims: idClaims ?? previous?.claims ?? {},
  };
}

function isRecord(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    typeof value.access_token === "string" &&
    Number.isFinite(value.expires_at) &&
    Number.isFinite(value.issued_at)
  );
}

export class TokenStore {
  constructor(storage, { key = TOKENS_KEY } = {}) {
    this.storage = storage;
    this.key = key;
  }

  /** The stored record, or null; a record that does not parse is removed. */
  get() {
    let text;
    try {
      text = this.storage.getItem(this.key);
    } catch {
      return null; // storage disabled by the browser: signed out
    }
    if (text === null) return null;
    try {
      const value = JSON.parse(text);
      if (isRecord(value)) return value;
    } catch {
      /* fall through */
    }
    this.clear();
    return null;
  }

  set(record) {
    if (!isRecord(record)) throw new TypeError("not a token record");
    this.storage.setItem(this.key, JSON.stringify(record));
  }

  clear() {
    try {
      this.storage.removeItem(this.key);
    } catch {
      /* nothing was stored */
    }
  }
}
