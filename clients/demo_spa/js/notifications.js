// The IdP's notification socket: auth as the first message (never a token in the URL), pings
// answered, reconnects with exponential backoff and full jitter, and events missed while away
// fetched from the activity API (the same ids, which only grow) after each (re)connect.

export const NOTIFICATION_EVENTS = new Set([
  "login_succeeded", "new_device_sign_in", "password_changed", "email_changed", "mfa_enabled", "mfa_disabled",
  "passkey_registered", "passkey_removed", "session_ended", "profile_updated", "picture_changed",
  "consent_withdrawn", "account_locked", "second_factors_reset", "account_disabled",
]);

// Close codes of the protocol, and what the client does about each.
const STOP_REASONS = {
  4400: "The notification server did not understand this app's message.",
  4401: "The notification server refused this app's sign-in.",
  4403: "This app may not receive notifications (origin not allowed, or not a first-party app).",
  4029: "Too many open notification connections for your account: close another tab and reload.",
};

/** Full jitter (the AWS Architecture Blog's "Exponential Backoff And Jitter"): uniform in [0, min(cap, base·2^n)). */
export function backoffDelay(attempt, { base = 500, cap = 30_000, random = Math.random } = {}) {
  return Math.floor(random() * Math.min(cap, base * 2 ** attempt));
}

export class NotificationClient {
  /**
   * url: the notifications_url; WebSocket: the constructor; accessToken(): a fresh access token;
   * refresh(): forced refresh → access token; fetchActivity({before, limit}) → {items, next};
   * currentSid(): the ID token's sid; onEvent(event, {replayed}); onStatus(state, message);
   * onSessionEnded(event).
   */
  constructor(options) {
    const defaults = { base: 500, cap: 30_000, random: Math.random, timers: globalThis, maxCatchUpPages: 5 };
    Object.assign(this, defaults, options);
    this.socket = null;
    this.attempt = 0;
    this.lastEventId = null;
    this.stopped = true;
    this.ready = false;
    this.reconnectTimer = null;
    this.deadTimer = null;
    this.heartbeat = 25;
    this.buffer = null; // live events held back while the missed ones are fetched
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.#connect();
  }

  stop(state = "stopped", message = "") {
    this.stopped = true;
    this.ready = false;
    this.timers.clearTimeout(this.reconnectTimer);
    this.timers.clearTimeout(this.deadTimer);
    const socket = this.socket;
    this.socket = null;
    if (socket && socket.readyState <= 1) socket.close(1000, "bye");
    this.onStatus?.(state, message);
  }

  /** After a token refresh: send the new token so the server extends the socket's life. */
  reauthenticate(accessToken) {
    if (this.ready && this.socket?.readyState === 1) this.#send({ type: "auth", access_token: accessToken });
  }

  #send(message) {
    try {
      this.socket.send(JSON.stringify(message));
    } catch {
      /* closing; the close handler reconnects */
    }
  }

  #connect() {
    if (this.stopped) return;
    this.onStatus?.("connecting", "");
    const socket = new this.WebSocket(this.url);
    this.socket = socket;
    this.ready = false;
    socket.onopen = async () => {
      let token;
      try {
        token = await this.accessToken();
      } catch {
        this.stop("signed_out", "");
        return;
      }
      if (this.socket === socket) this.#send({ type: "auth", access_token: token });
    };
    socket.onmessage = (message) => this.#receive(socket, message.data);
    socket.onclose = (event) => this.#closed(socket, event.code);
    socket.onerror = () => {}; // a close event follows
    this.#armDeadTimer(socket, 10 + this.heartbeat); // the server must answer the auth in time
  }

  #armDeadTimer(socket, seconds) {
    this.timers.clearTimeout(this.deadTimer);
    this.deadTimer = this.timers.setTimeout(() => {
      if (this.socket !== socket) return;
      // Nothing for two heartbeats: a dead connection (a sleeping laptop, a lost NAT mapping).
      this.socket = null;
      socket.onclose = null;
      try {
        socket.close(4000, "no heartbeat");
      } catch {
        /* already closed */
      }
      this.#reconnectLater();
    }, seconds * 1000);
  }

  #receive(socket, data) {
    if (this.socket !== socket) return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    this.#armDeadTimer(socket, 2 * this.heartbeat);
    if (message.type === "ping") {
      this.#send({ type: "pong" });
    } else if (message.type === "ready") {
      this.ready = true;
      this.attempt = 0;
      if (Number.isFinite(message.heartbeat) && message.heartbeat > 0) this.heartbeat = message.heartbeat;
      this.#armDeadTimer(socket, 2 * this.heartbeat);
      this.onStatus?.("connected", "");
      this.#catchUp(socket);
    } else if (message.type === "event" && Number.isInteger(message.id)) {
      if (this.buffer) this.buffer.push(message);
      else this.#deliver(message, false);
    }
  }

  #deliver(event, replayed) {
    if (this.lastEventId !== null && event.id <= this.lastEventId) return; // seen already
    this.lastEventId = event.id;
    this.onEvent?.(event, { replayed });
    const sid = this.currentSid?.();
    if (event.event === "session_ended" && sid && event.data?.sid === sid) this.onSessionEnded?.(event);
    if (event.event === "account_disabled") this.onSessionEnded?.(event);
  }

  /** Events since lastEventId from the activity API (newest first, paged with before); the first time, only the high-water mark. */
  async #catchUp(socket) {
    this.buffer = [];
    try {
      const missed = [];
      let before;
      for (let page = 0; page < this.maxCatchUpPages; page += 1) {
        const { items = [], next = null } = await this.fetchActivity({ before, limit: this.lastEventId === null ? 1 : 50 });
        if (this.lastEventId === null) {
          if (items.length) this.lastEventId = Math.max(...items.map((i) => i.id));
          break;
        }
        const newer = items.filter((i) => i.id > this.lastEventId);
        missed.push(...newer);
        if (newer.length < items.length || next === null) break;
        before = next;
      }
      missed.sort((a, b) => a.id - b.id);
      for (const item of missed) {
        if (NOTIFICATION_EVENTS.has(item.event)) {
          this.#deliver({ type: "event", id: item.id, event: item.event, occurred_at: item.occurred_at, data: item.details ?? {} }, true);
        } else if (item.id > this.lastEventId) {
          this.lastEventId = item.id;
        }
      }
    } catch {
      /* the live events still arrive; the next reconnect tries again */
    } finally {
      const held = this.buffer ?? [];
      this.buffer = null;
      if (this.socket === socket) for (const event of held.sort((a, b) => a.id - b.id)) this.#deliver(event, false);
    }
  }

  async #closed(socket, code) {
    if (this.socket !== socket) return;
    this.socket = null;
    this.ready = false;
    this.timers.clearTimeout(this.deadTimer);
    if (this.stopped) return;
    if (STOP_REASONS[code]) {
      this.stop("stopped", STOP_REASONS[code]);
      return;
    }
    if (code === 4001) {
      // The token expired or was revoked: a new one, then at once a new socket.
      try {
        await this.refresh();
      } catch {
        this.stop("signed_out", "");
        return;
      }
      this.attempt = 0;
      this.#connect();
      return;
    }
    this.#reconnectLater(); // 1001 shutting down, 4008 too slow, 1006 network: backoff, then catch up
  }

  #reconnectLater() {
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt, this);
    this.attempt += 1;
    this.onStatus?.("reconnecting", `Reconnecting in ${Math.ceil(delay / 1000)} s`);
    this.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = this.timers.setTimeout(() => this.#connect(), delay);
  }
}
