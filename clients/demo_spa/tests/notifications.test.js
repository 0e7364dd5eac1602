import assert from "node:assert/strict";
import { test } from "node:test";

import { NotificationClient, backoffDelay } from "../js/notifications.js";

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code) {
    this.readyState = 3;
    this.closedWith = code;
  }
  open() {
    this.readyState = 1;
    return this.onopen?.();
  }
  receive(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
  serverClose(code) {
    this.readyState = 3;
    return this.onclose?.({ code });
  }
}

/** Timers run by hand: advance() fires the due ones. */
function fakeTimers() {
  const t = { now: 0, queue: [], id: 0 };
  t.setTimeout = (fn, ms) => (t.queue.push({ id: ++t.id, at: t.now + ms, fn }), t.id);
  t.clearTimeout = (id) => (t.queue = t.queue.filter((x) => x.id !== id));
  t.advance = (ms) => {
    t.now += ms;
    for (const due of t.queue.filter((x) => x.at <= t.now)) {
      t.clearTimeout(due.id);
      due.fn();
    }
  };
  return t;
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

function client(overrides = {}) {
  FakeSocket.all = [];
  const seen = { events: [], statuses: [], ended: [], refreshes: 0, activity: [] };
  const timers = fakeTimers();
  const c = new NotificationClient({
    url: "ws://127.0.0.1:8000/ws/notifications",
    WebSocket: FakeSocket,
    accessToken: async () => "at-1",
    refresh: async () => (seen.refreshes += 1, "at-2"),
    fetchActivity: async (query) => (seen.activity.push(query), { items: [], next: null }),
    currentSid: () => "sid-mine",
    onEvent: (event, meta) => seen.events.push({ ...event, ...meta }),
    onStatus: (state, message) => seen.statuses.push([state, message]),
    onSessionEnded: (event) => seen.ended.push(event),
    random: () => 0.5,
    timers,
    ...overrides,
  });
  return { c, seen, timers, socket: () => FakeSocket.all.at(-1) };
}

test("backoff: full jitter under min(cap, base·2^n)", () => {
  assert.equal(backoffDelay(0, { random: () => 0.999 }), 499);
  assert.equal(backoffDelay(3, { random: () => 0.5 }), 2000);
  assert.equal(backoffDelay(20, { random: () => 0.999 }), 29_970);
  assert.equal(backoffDelay(5, { random: () => 0 }), 0);
});

test("the token goes in the first message, never the URL; pings are answered", async () => {
  const { c, socket } = client();
  c.start();
  assert.equal(socket().url, "ws://127.0.0.1:8000/ws/notifications");
  await socket().open();
  assert.deepEqual(socket().sent, [{ type: "auth", access_token: "at-1" }]);
  socket().receive({ type: "ready", sub: "u", heartbeat: 25 });
  socket().receive({ type: "ping" });
  assert.deepEqual(socket().sent.at(-1), { type: "pong" });
  c.reauthenticate("at-2");
  assert.deepEqual(socket().sent.at(-1), { type: "auth", access_token: "at-2" });
});

test("session_ended for this session signs out; for another session it is only shown", async () => {
  const { c, seen, socket } = client();
  c.start();
  await socket().open();
  socket().receive({ type: "ready", heartbeat: 25 });
  await flush();
  socket().receive({ type: "event", id: 10, event: "session_ended", data: { sid: "sid-other", reason: "ended_by_user" } });
  assert.equal(seen.ended.length, 0);
  socket().receive({ type: "event", id: 11, event: "session_ended", data: { sid: "sid-mine", reason: "ended_by_user" } });
  assert.equal(seen.ended.length, 1);
  assert.deepEqual(seen.events.map((e) => e.id), [10, 11]);
});

test("on reconnect the missed events come from the activity API, in order, without duplicates", async () => {
  const pages = [
    { items: [{ id: 20, event: "login_succeeded", details: {} }], next: 20 }, // first connect: the high-water mark
    {
      items: [
        { id: 25, event: "password_changed", occurred_at: "t", details: {} },
        { id: 24, event: "token_issued", details: {} }, // not a notification: skipped
        { id: 23, event: "profile_updated", details: { fields: ["name"] } },
        { id: 20, event: "login_succeeded", details: {} },
      ],
      next: 20,
    },
  ];
  const { c, seen, timers, socket } = client({ fetchActivity: async (q) => (seen.activity.push(q), pages.shift()) });
  c.start();
  await socket().open();
  socket().receive({ type: "ready", heartbeat: 25 });
  await flush();
  assert.equal(seen.events.length, 0); // history is not news
  socket().serverClose(1001); // the server restarts
  assert.equal(seen.statuses.at(-1)[0], "reconnecting");
  timers.advance(250); // 0.5 × 500 ms
  assert.equal(FakeSocket.all.length, 2);
  await socket().open();
  socket().receive({ type: "ready", heartbeat: 25 });
  socket().receive({ type: "event", id: 26, event: "email_changed", data: {} }); // live, during the catch-up
  socket().receive({ type: "event", id: 25, event: "password_changed", data: {} }); // also live, a duplicate
  await flush();
  assert.deepEqual(seen.events.map((e) => [e.id, e.replayed]), [[23, true], [25, true], [26, false]]);
  assert.deepEqual(seen.activity.map((q) => q.before), [undefined, undefined]);
});

test("close 4001: refresh, then reconnect at once", async () => {
  const { c, seen, socket } = client();
  c.start();
  await socket().open();
  socket().receive({ type: "ready", heartbeat: 25 });
  await socket().serverClose(4001);
  assert.equal(seen.refreshes, 1);
  assert.equal(FakeSocket.all.length, 2);
});

for (const code of [4401, 4403, 4029]) {
  test(`close ${code}: stop and say why`, async () => {
    const { c, seen, timers, socket } = client();
    c.start();
    await socket().open();
    await socket().serverClose(code);
    timers.advance(60_000);
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(seen.statuses.at(-1)[0], "stopped");
    assert.ok(seen.statuses.at(-1)[1].length > 10);
  });
}

test("close 4008 and dropped connections: backoff grows, resets once ready", async () => {
  const { c, timers, socket, seen } = client({ random: () => 0.999 });
  c.start();
  await socket().open();
  socket().serverClose(4008);
  timers.advance(499);
  assert.equal(FakeSocket.all.length, 2);
  socket().serverClose(1006);
  timers.advance(998);
  assert.equal(FakeSocket.all.length, 2);
  timers.advance(1);
  assert.equal(FakeSocket.all.length, 3);
  await socket().open();
  socket().receive({ type: "ready", heartbeat: 25 });
  assert.equal(c.attempt, 0);
  assert.ok(seen.statuses.some(([s]) => s === "connected"));
});

test("silence for two heartbeats: the socket is dead, reconnect", async () => {
  const { c, timers, socket } = client();
  c.start();
  await socket().open();
  socket().receive({ type: "ready", heartbeat: 10 });
  timers.advance(19_000);
  assert.equal(FakeSocket.all.length, 1);
  socket().receive({ type: "ping" });
  timers.advance(19_000);
  assert.equal(FakeSocket.all.length, 1);
  timers.advance(1_000);
  assert.equal(FakeSocket.all[0].closedWith, 4000);
  timers.advance(250);
  assert.equal(FakeSocket.all.length, 2);
});

test("stop() closes and does not reconnect", async () => {
  const { c, timers, socket } = client();
  c.start();
  await socket().open();
  c.stop();
  timers.advance(60_000);
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(socket().closedWith, 1000);
});
