// Data export (a file from the API, saved through a Blob URL) and account deletion.

import { field, formError, onSubmit, showErrors, values } from "../forms.js";
import { html, render } from "../html.js";
import { showApiError } from "./profile.js";

export function dataView(main, ctx) {
  render(main, html`
    <h1 tabindex="-1">Your data</h1>
    <section aria-labelledby="h-export" class="card">
      <h2 id="h-export">Download your data</h2>
      <p>Everything the sign-in service holds about you, as a JSON file (never a password or a key).</p>
      <div class="actions"><button type="button" class="primary" data-action="export">Download my data</button></div>
    </section>
    <section aria-labelledby="h-delete" class="card danger">
      <h2 id="h-delete">Delete your account</h2>
      <p>This deletes your profile, picture, sessions and sign-in methods at once, for every application. It cannot be undone.</p>
      <div class="actions"><button type="button" class="danger" data-action="delete">Delete my account…</button></div>
    </section>
    <dialog id="delete-dialog" aria-labelledby="delete-title">
      <form id="delete-form" novalidate>
        <h2 id="delete-title">Delete your account?</h2>
        <p>Type your password to confirm. Everything is deleted at once.</p>
        ${field({ form: "delete", name: "password", label: "Password", type: "password", autocomplete: "current-password" })}
        <div class="field checkbox">
          <input id="delete-understood" name="understood" type="checkbox" value="yes" aria-describedby="delete-understood-error">
          <label for="delete-understood">I understand this cannot be undone</label>
          <p class="field-error" id="delete-understood-error" hidden></p>
        </div>
        ${formError()}
        <div class="actions">
          <button type="submit" class="danger">Delete my account</button>
          <button type="button" data-action="cancel">Cancel</button>
        </div>
      </form>
    </dialog>`);

  const exportButton = main.querySelector("[data-action=export]");
  exportButton.addEventListener("click", async () => {
    exportButton.disabled = true;
    try {
      const blob = await ctx.api.exportBlob();
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = "idp-account-export.json";
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      ctx.toast("Your data was downloaded.");
    } catch (error) {
      if (error?.name !== "SignedOut") ctx.toast("The download failed; try again.", "error");
    } finally {
      exportButton.disabled = false;
    }
  });

  const dialog = main.querySelector("#delete-dialog");
  const form = main.querySelector("#delete-form");
  const opener = main.querySelector("[data-action=delete]");
  opener.addEventListener("click", () => {
    dialog.showModal();
    form.elements.namedItem("password").focus();
  });
  main.querySelector("[data-action=cancel]").addEventListener("click", () => {
    dialog.close();
    form.reset();
    opener.focus();
  });
  onSubmit(form, async () => {
    const typed = values(form);
    const problems = {};
    if (!typed.password) problems.password = "is required";
    if (typed.understood !== "yes") problems.understood = "please confirm";
    if (showErrors(form, problems)) return;
    try {
      await ctx.api.deleteAccount(typed.password);
      dialog.close();
      ctx.accountDeleted();
    } catch (error) {
      showApiError(ctx, form, error);
    }
  });
}
