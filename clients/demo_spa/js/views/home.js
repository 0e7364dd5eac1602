import { html, render } from "../html.js";

const REASONS = {
  session_ended: "Your session was ended, so you were signed out.",
  refresh_failed: "Your session could not be renewed, so you were signed out. Please sign in again.",
  invalid_token: "Your sign-in is no longer valid. Please sign in again.",
  signed_out: "You are signed out.",
  signed_out_elsewhere: "You signed out in another tab.",
  account_deleted: "Your account was deleted.",
};

export function reasonText(reason) {
  return REASONS[reason] ?? "";
}

/** Signed out: sign in, or sign up (the same flow with prompt=create). */
export function homeView(main, ctx, { reason } = {}) {
  const message = reasonText(reason);
  render(main, html`
    <h1 tabindex="-1">Your account, in one place</h1>
    ${message ? html`<p class="notice" role="status">${message}</p>` : ""}
    <p>This demo application signs you in with <strong>${new URL(ctx.config.issuer).host}</strong>
      and lets you see and change your profile, your sessions and your security events.</p>
    <div class="actions">
      <button type="button" class="primary" data-action="sign-in">Sign in</button>
      <button type="button" data-action="sign-up">Create an account</button>
    </div>`);
  main.querySelector("[data-action=sign-in]").addEventListener("click", () => ctx.signIn());
  main.querySelector("[data-action=sign-up]").addEventListener("click", () => ctx.signIn({ prompt: "create" }));
}

export function errorView(main, ctx, { title, message, retry = true }) {
  render(main, html`
    <h1 tabindex="-1">${title}</h1>
    <p class="notice error" role="alert">${message}</p>
    ${retry ? html`<div class="actions"><button type="button" class="primary" data-action="sign-in">Sign in again</button>
      <a href="/" data-link>Back to the start</a></div>` : ""}`);
  main.querySelector("[data-action=sign-in]")?.addEventListener("click", () => ctx.signIn());
}
