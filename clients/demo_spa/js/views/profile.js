// Profile, picture, email address and password.

import { ApiError } from "../api.js";
import { field, formError, onSubmit, showErrors, values } from "../forms.js";
import { html, render, safeUrl } from "../html.js";
import { profileChanges, validateEmail, validatePasswordChange, validatePicture, validateProfile } from "../validate.js";

export async function profileView(main, ctx) {
  const [profile, mfa, policy] = await Promise.all([ctx.api.profile(), ctx.api.mfa().catch(() => null), ctx.passwordPolicy()]);
  let current = profile;
  const hasSecondFactor = Boolean(mfa && (mfa.totp || mfa.passkeys?.length));
  const minLength = policy ? (hasSecondFactor ? policy.min_length_with_mfa : policy.min_length) : null;

  render(main, html`
    <h1 tabindex="-1">Profile</h1>
    <p class="lead">Signed in as <strong>${profile.name || profile.preferred_username || profile.email || profile.sub}</strong></p>

    <section aria-labelledby="h-picture" class="card">
      <h2 id="h-picture">Picture</h2>
      <div class="picture-row">
        <img class="avatar" id="picture-current" alt="${profile.picture ? "Your profile picture" : ""}"
          src="${profile.picture ? safeUrl(profile.picture) : ""}" ${profile.picture ? "" : html`hidden`}>
        <img class="avatar" id="picture-preview" alt="Preview of the new picture" hidden>
        <p class="muted" id="picture-none" ${profile.picture ? html`hidden` : ""}>No picture yet.</p>
      </div>
      <form id="picture-form" novalidate>
        ${field({ form: "picture", name: "picture", label: "New picture", type: "file", hint: "PNG, JPEG or WebP. It is cropped square and its metadata (location…) removed.", extra: { accept: "image/png,image/jpeg,image/webp" } })}
        ${formError()}
        <div class="actions">
          <button type="submit" class="primary">Upload picture</button>
          <button type="button" data-action="remove-picture" ${profile.picture ? "" : html`hidden`}>Remove picture</button>
        </div>
      </form>
    </section>

    <section aria-labelledby="h-details" class="card">
      <h2 id="h-details">Details</h2>
      <form id="profile-form" novalidate>
        ${field({ form: "profile", name: "name", label: "Full name", value: profile.name, autocomplete: "name" })}
        ${field({ form: "profile", name: "given_name", label: "Given name", value: profile.given_name, autocomplete: "given-name" })}
        ${field({ form: "profile", name: "family_name", label: "Family name", value: profile.family_name, autocomplete: "family-name" })}
        ${field({ form: "profile", name: "preferred_username", label: "Username", value: profile.preferred_username, autocomplete: "username" })}
        ${field({ form: "profile", name: "locale", label: "Language", value: profile.locale, hint: "A language tag such as en, en-GB or fr-CA." })}
        ${field({ form: "profile", name: "zoneinfo", label: "Time zone", value: profile.zoneinfo, hint: "Such as Europe/Paris." })}
        ${formError()}
        <div class="actions"><button type="submit" class="primary">Save profile</button></div>
      </form>
    </section>

    <section aria-labelledby="h-email" class="card">
      <h2 id="h-email">Email address</h2>
      <p>Current: <strong>${profile.email ?? "—"}</strong> ${profile.email_verified ? html`<span class="badge">verified</span>` : html`<span class="badge warn">not verified</span>`}</p>
      ${profile.pending_email ? html`<p class="notice">Waiting for confirmation: <strong>${profile.pending_email}</strong>. Open the link we mailed there.</p>` : ""}
      <form id="email-form" novalidate>
        ${field({ form: "email", name: "email", label: "New email address", type: "email", autocomplete: "email", hint: "We mail a link to the new address; it changes when you open it." })}
        ${formError()}
        <div class="actions"><button type="submit" class="primary">Change address</button></div>
      </form>
    </section>

    <section aria-labelledby="h-password" class="card">
      <h2 id="h-password">Password</h2>
      <form id="password-form" novalidate>
        ${field({ form: "password", name: "current_password", label: "Current password", type: "password", autocomplete: "current-password" })}
        ${field({ form: "password", name: "new_password", label: "New password", type: "password", autocomplete: "new-password",
          hint: minLength ? `At least ${minLength} characters. Long passphrases are best; common and leaked passwords are refused.` : "Common and leaked passwords are refused." })}
        ${field({ form: "password", name: "confirm", label: "New password again", type: "password", autocomplete: "new-password" })}
        ${formError()}
        <div class="actions"><button type="submit" class="primary">Change password</button></div>
      </form>
    </section>`);

  // -- picture
  const pictureForm = main.querySelector("#picture-form");
  const input = pictureForm.elements.namedItem("picture");
  const preview = main.querySelector("#picture-preview");
  let previewUrl = null;
  input.addEventListener("change", () => {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    const file = input.files[0];
    const problems = validatePicture(file);
    if (showErrors(pictureForm, problems, { focus: false }) || !file) {
      preview.hidden = true;
      return;
    }
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
  });
  onSubmit(pictureForm, async () => {
    const file = input.files[0];
    if (showErrors(pictureForm, validatePicture(file))) return;
    try {
      await ctx.api.uploadPicture(file);
      ctx.toast("Your picture was updated.");
      await ctx.rerender();
    } catch (error) {
      showApiError(ctx, pictureForm, error);
    }
  });
  main.querySelector("[data-action=remove-picture]").addEventListener("click", async () => {
    try {
      await ctx.api.removePicture();
      ctx.toast("Your picture was removed.");
      await ctx.rerender();
    } catch (error) {
      showApiError(ctx, pictureForm, error);
    }
  });

  // -- details
  const profileForm = main.querySelector("#profile-form");
  onSubmit(profileForm, async () => {
    const typed = values(profileForm);
    if (showErrors(profileForm, validateProfile(typed))) return;
    const changes = profileChanges(current, typed);
    if (!Object.keys(changes).length) {
      ctx.toast("Nothing to save.");
      return;
    }
    try {
      current = await ctx.api.updateProfile(changes);
      ctx.toast("Your profile was saved.");
    } catch (error) {
      showApiError(ctx, profileForm, error);
    }
  });

  // -- email
  const emailForm = main.querySelector("#email-form");
  onSubmit(emailForm, async () => {
    const { email } = values(emailForm);
    if (showErrors(emailForm, validateEmail(email, current.email))) return;
    try {
      await ctx.api.changeEmail(email.trim());
      ctx.toast("Check your inbox: we sent a confirmation link to the new address.");
      await ctx.rerender();
    } catch (error) {
      if (error instanceof ApiError && error.error === "insufficient_user_authentication") {
        ctx.reauthenticate(emailForm, "Changing your address needs a recent sign-in.", "/profile");
        return;
      }
      showApiError(ctx, emailForm, error);
    }
  });

  // -- password
  const passwordForm = main.querySelector("#password-form");
  onSubmit(passwordForm, async () => {
    const typed = values(passwordForm);
    const problems = validatePasswordChange(typed, policy, { email: current.email, name: current.name, hasSecondFactor });
    if (showErrors(passwordForm, problems)) return;
    try {
      await ctx.api.changePassword(typed.current_password, typed.new_password);
      passwordForm.reset();
      ctx.toast("Your password was changed.");
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 405)) {
        showErrors(passwordForm, { form: `This identity provider has no password API; change it on ${ctx.config.issuer}/account/password.` });
        return;
      }
      showApiError(ctx, passwordForm, error);
    }
  });
}

/** A refused request's field errors on the form, or its description in the form's error box. */
export function showApiError(ctx, form, error) {
  if (error instanceof ApiError) {
    const fields = Object.keys(error.fields).length ? error.fields : { form: error.message };
    if (error.status === 429 && error.retryAfter) fields.form = `${error.message} Try again in ${error.retryAfter} s.`;
    showErrors(form, fields);
  } else if (error?.name !== "SignedOut") {
    showErrors(form, { form: "Something went wrong; check your connection and try again." });
  }
}
