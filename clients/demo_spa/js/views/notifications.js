// What the notification socket delivered (live, or fetched after a reconnect).

import { html, render } from "../html.js";
import { eventDetail, eventLabel, formatTime } from "../labels.js";

const STATES = {
  connecting: "Connecting…",
  connected: "Live",
  reconnecting: "Reconnecting",
  stopped: "Off",
  signed_out: "Off",
};

export function notificationsView(main, ctx) {
  const { items, state, message } = ctx.notifications;
  render(main, html`
    <h1 tabindex="-1">Notifications</h1>
    <p class="lead">Security events on your account, as they happen. Status:
      <strong>${STATES[state] ?? state}</strong>${message ? html` — ${message}` : ""}</p>
    ${items.length ? html`<ul class="rows">${items.map((e) => html`<li class="row"><div class="row-main">
        <strong>${eventLabel(e.event)}</strong> ${e.replayed ? html`<span class="badge">while you were away</span>` : ""}
        <p class="muted"><time datetime="${e.occurred_at}">${formatTime(e.occurred_at)}</time>${eventDetail(e.data) ? html` · ${eventDetail(e.data)}` : ""}</p>
      </div></li>`)}</ul>` : html`<p class="muted">Nothing since you opened this page.</p>`}`);
}
