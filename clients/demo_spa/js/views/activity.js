// The account's own activity log, newest first, a page at a time (`before`).

import { append, html, render } from "../html.js";
import { eventDetail, eventLabel, formatTime } from "../labels.js";

function item(a) {
  return html`<li class="row"><div class="row-main">
    <strong>${eventLabel(a.event)}</strong> ${a.outcome && a.outcome !== "success" ? html`<span class="badge warn">${a.outcome}</span>` : ""}
    <p class="muted"><time datetime="${a.occurred_at}">${formatTime(a.occurred_at)}</time>${a.ip ? html` · ${a.ip}` : ""}${a.client_id ? html` · ${a.client_id}` : ""}</p>
    ${eventDetail(a.details) ? html`<p class="muted">${eventDetail(a.details)}</p>` : ""}
    ${a.user_agent ? html`<p class="muted small">${a.user_agent}</p>` : ""}
  </div></li>`;
}

export async function activityView(main, ctx) {
  const first = await ctx.api.activity({ limit: 20 });
  render(main, html`
    <h1 tabindex="-1">Activity</h1>
    <p class="lead">Sign-ins and changes to your account, newest first.</p>
    <ul class="rows" id="activity-list" aria-live="off">${first.items.map(item)}</ul>
    ${first.items.length ? "" : html`<p class="muted">Nothing yet.</p>`}
    <div class="actions"><button type="button" data-action="older" ${first.next === null ? html`hidden` : ""}>Show older</button></div>`);
  const list = main.querySelector("#activity-list");
  const older = main.querySelector("[data-action=older]");
  let next = first.next;
  older.addEventListener("click", async () => {
    older.disabled = true;
    try {
      const page = await ctx.api.activity({ limit: 20, before: next });
      const firstNew = list.children.length;
      append(list, html`${page.items.map(item)}`);
      next = page.next;
      older.hidden = next === null;
      // Keep the keyboard where the new items start.
      const target = list.children[firstNew];
      if (target) {
        target.tabIndex = -1;
        target.focus();
      }
    } finally {
      older.disabled = false;
    }
  });
}
