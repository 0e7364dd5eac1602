// Second factors (status; managed on the IdP's own page) and the sessions where the user is signed in.

import { ApiError } from "../api.js";
import { field, formError, onSubmit, showErrors, values } from "../forms.js";
import { html, render, safeUrl } from "../html.js";
import { formatTime } from "../labels.js";
import { showApiError } from "./profile.js";

export async function securityView(main, ctx) {
  const [mfa, { sessions }] = await Promise.all([ctx.api.mfa(), ctx.api.sessions()]);
  const manage = safeUrl(`${ctx.config.issuer}/account/security`);
  render(main, html`
    <h1 tabindex="-1">Security</h1>
    <section aria-labelledby="h-mfa" class="card">
      <h2 id="h-mfa">Second factors</h2>
      <ul class="facts">
        <li>Authenticator app: <strong>${mfa.totp ? "on" : "off"}</strong></li>
        <li>Passkeys: <strong>${mfa.passkeys.length}</strong>${mfa.passkeys.length ? html` (${mfa.passkeys.map((p, i) => html`${i ? ", " : ""}${p.name}`)})` : ""}</li>
        <li>Recovery codes left: <strong>${mfa.recovery_codes_remaining}</strong></li>
        ${mfa.required ? html`<li><span class="badge warn">required for your account</span></li>` : ""}
      </ul>
      <p><a href="${manage}">Manage second factors on the sign-in service</a></p>
    </section>
    <section aria-labelledby="h-sessions" class="card">
      <h2 id="h-sessions">Where you are signed in</h2>
      <ul class="rows">
        ${sessions.map((s) => html`<li class="row">
          <div class="row-main">
            <strong>${s.device}</strong> ${s.current ? html`<span class="badge">this session</span>` : ""}
            <p class="muted">Signed in ${formatTime(s.signed_in_at)} · last seen ${formatTime(s.last_seen_at)}${s.ip ? html` · ${s.ip}` : ""}</p>
            ${s.applications.length ? html`<p class="muted">Applications: ${s.applications.join(", ")}</p>` : ""}
          </div>
          ${s.current
            ? html`<button type="button" data-action="sign-out">Sign out</button>`
            : html`<button type="button" data-action="end" data-sid="${s.id}" aria-label="End the session on ${s.device}">End</button>`}
        </li>`)}
      </ul>
    </section>
    <dialog id="reauth-dialog" aria-labelledby="reauth-title">
      <form id="reauth-form" novalidate>
        <h2 id="reauth-title">Confirm it is you</h2>
        <p>Ending another session needs your password (or a sign-in in the last 5 minutes).</p>
        ${field({ form: "reauth", name: "password", label: "Password", type: "password", autocomplete: "current-password" })}
        ${formError()}
        <div class="actions">
          <button type="submit" class="primary">End session</button>
          <button type="button" data-action="cancel">Cancel</button>
        </div>
      </form>
    </dialog>`);

  main.querySelector("[data-action=sign-out]")?.addEventListener("click", () => ctx.signOut());
  const dialog = main.querySelector("#reauth-dialog");
  const form = main.querySelector("#reauth-form");
  let pendingSid = null;
  let opener = null;
  const close = () => {
    dialog.close();
    form.reset();
    opener?.focus();
  };
  main.querySelector("[data-action=cancel]").addEventListener("click", close);

  const end = async (sid, password) => {
    await ctx.api.endSession(sid, password);
    ctx.toast("The session was ended.");
    await ctx.rerender();
  };
  for (const button of main.querySelectorAll("[data-action=end]")) {
    button.addEventListener("click", async () => {
      opener = button;
      try {
        await end(button.dataset.sid);
      } catch (error) {
        if (error instanceof ApiError && error.error === "insufficient_user_authentication") {
          pendingSid = button.dataset.sid;
          dialog.showModal();
          form.elements.namedItem("password").focus();
        } else if (error instanceof ApiError) {
          ctx.toast(error.message, "error");
        }
      }
    });
  }
  onSubmit(form, async () => {
    const { password } = values(form);
    if (showErrors(form, password ? {} : { password: "is required" })) return;
    try {
      await end(pendingSid, password);
      dialog.close();
    } catch (error) {
      showApiError(ctx, form, error);
    }
  });
}
