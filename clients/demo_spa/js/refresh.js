// Keeping the access token fresh: refresh with rotation shortly before expiry, one tab at a time.
//
// A rotated refresh token works once (the IdP revokes the whole grant when one is reused), so two
// tabs sharing localStorage must never both spend it. The refresh runs inside the Web Lock
// "idp-spa-refresh"; inside it the store is read again, and if another tab refreshed meanwhile its
// tokens are used. The new tokens are announced on BroadcastChannel("idp-spa") (the storage event
// of localStorage is the fallback); the message says that the store changed, never the tokens.
// Any refresh failure clears the store: the app shows itself signed out.

export const LOCK_NAME = "idp-spa-refresh";
export const CHANNEL_NAME = "idp-spa";
const REFRESH_BEFORE_MS = 60_000;

/** When to refresh: 60 s before expiry, or at 90 % of a lifetime shorter than 10 minutes. */
export function refreshAt(record) {
  const lifetime = record.expires_at - record.issued_at;
  return record.expires_at - Math.min(REFRESH_BEFORE_MS, lifetime * 0.1);
}

export class SignedOut extends Error {
  constructor(reason, message) {
    super(message);
    this.name = "SignedOut";
    this.reason = reason;
  }
}

export class Refresher {
  /**
   * store: TokenStore; oidc: { refresh(record) → record }; locks: navigator.locks (or a fake);
   * channel: a BroadcastChannel (or null); now(): ms; onSignedOut(reason, error); onRefreshed(record).
   */
  constructor({ store, oidc, locks, channel = null, now = () => Date.now(), onSignedOut = () => {}, onRefreshed = () => {}, timers = globalThis }) {
    Object.assign(this, { store, oidc, locks, channel, now, onSignedOut, onRefreshed, timers });
    this.timer = null;
  }

  needsRefresh(record) {
    return this.now() >= refreshAt(record);
  }

  /**
   * Fresh tokens: the stored ones while they are not due, else refreshed under the lock.
   * force: refresh even if not due (the API said invalid_token), unless another tab already
   * replaced the access token that was refused (`refused`).
   */
  async fresh({ force = false, refused = null } = {}) {
    const record = this.store.get();
    if (!record) throw new SignedOut("no_tokens", "You are signed out.");
    if (!force && !this.needsRefresh(record)) return record;
    return this.#withLock(async () => {
      const current = this.store.get(); // another tab may have refreshed while we waited
      if (!current) throw new SignedOut("no_tokens", "You are signed out.");
      if (force ? refused !== null && current.access_token !== refused : !this.needsRefresh(current)) {
        if (current.access_token !== record.access_token) this.onRefreshed(current);
        return current;
      }
      let next;
      try {
        next = await this.oidc.refresh(current);
      } catch (error) {
        this.signOut("refresh_failed", error);
        throw new SignedOut("refresh_failed", error?.message ?? "The session could not be renewed.");
      }
      this.store.set(next);
      this.announce({ type: "tokens" });
      this.onRefreshed(next);
      this.schedule();
      return next;
    });
  }

  /** The access token to send now. */
  async accessToken() {
    return (await this.fresh()).access_token;
  }

  #withLock(task) {
    if (!this.locks || typeof this.locks.request !== "function") return task(); // no Web Locks: one tab's best effort
    return this.locks.request(LOCK_NAME, { mode: "exclusive" }, task);
  }

  /** Clear the tokens (any token error ends here), tell the other tabs and the app. */
  signOut(reason, error = null) {
    const record = this.store.get();
    this.store.clear();
    this.cancel();
    this.announce({ type: "signed_out", reason, sid: record?.claims?.sid ?? null });
    this.onSignedOut(reason, error);
  }

  announce(message) {
    try {
      this.channel?.postMessage(message);
    } catch {
      /* the channel was closed */
    }
  }

  /** A refresh timer for the stored tokens (another tab may well do it first; the lock sorts that out). */
  schedule() {
    this.cancel();
    const record = this.store.get();
    if (!record?.refresh_token) return;
    // Jitter spreads the tabs' timers so that usually one wakes and the others find fresh tokens.
    const delay = Math.max(0, refreshAt(record) - this.now()) + Math.floor(Math.random() * 2000);
    this.timer = this.timers.setTimeout(() => {
      this.timer = null;
      this.fresh().catch(() => {});
    }, Math.min(delay, 2 ** 31 - 1));
  }

  cancel() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  /** Another tab said the store changed: re-read it. */
  handleMessage(message) {
    if (message?.type === "tokens") {
      const record = this.store.get();
      if (record) {
        this.onRefreshed(record);
        this.schedule();
      }
    } else if (message?.type === "signed_out") {
      const record = this.store.get();
      // Shared store (localStorage): it is empty now. Per-tab stores: only the same IdP session.
      if (!record || (message.sid && record.claims?.sid === message.sid)) {
        this.store.clear();
        this.cancel();
        this.onSignedOut(message.reason ?? "signed_out_elsewhere", null);
      }
    }
  }
}
