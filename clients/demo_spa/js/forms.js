// Form markup and field errors, accessibly: every input has a <label>, its hint and its error are
// tied to it with aria-describedby, and a field in error has aria-invalid="true". Errors are set
// with textContent (never markup). The first field in error gets the focus.

import { html } from "./html.js";

export function field({ form, name, label, value = "", type = "text", hint = "", autocomplete = "off", required = false, extra = {} }) {
  const id = `${form}-${name}`;
  const describedBy = [hint ? `${id}-hint` : "", `${id}-error`].filter(Boolean).join(" ");
  return html`<div class="field">
    <label for="${id}">${label}</label>
    ${hint ? html`<p class="hint" id="${id}-hint">${hint}</p>` : ""}
    <input id="${id}" name="${name}" type="${type}" value="${value ?? ""}" autocomplete="${autocomplete}"
      aria-describedby="${describedBy}" ${required ? html`required` : ""} ${extra.accept ? html`accept="${extra.accept}"` : ""}>
    <p class="field-error" id="${id}-error" hidden></p>
  </div>`;
}

/** Show {member: message} on the form's fields; a message for no field goes to the form's error box. */
export function showErrors(formElement, errors, { focus = true } = {}) {
  clearErrors(formElement);
  let first = null;
  const unplaced = [];
  for (const [name, message] of Object.entries(errors)) {
    const input = formElement.elements.namedItem(name);
    const box = input && formElement.querySelector(`#${CSS.escape(input.id)}-error`);
    if (!box) {
      unplaced.push(message);
      continue;
    }
    input.setAttribute("aria-invalid", "true");
    box.textContent = message;
    box.hidden = false;
    first ??= input;
  }
  const general = formElement.querySelector(".form-error");
  if (general && unplaced.length) {
    general.textContent = unplaced.join(" ");
    general.hidden = false;
  }
  if (focus) (first ?? (unplaced.length ? general : null))?.focus();
  return Object.keys(errors).length > 0;
}

export function clearErrors(formElement) {
  for (const input of formElement.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  for (const box of formElement.querySelectorAll(".field-error, .form-error")) {
    box.textContent = "";
    box.hidden = true;
  }
}

/** The form's text values by name. */
export function values(formElement) {
  const out = {};
  for (const [name, value] of new FormData(formElement)) if (typeof value === "string") out[name] = value;
  return out;
}

/** Run an async submit handler with the button disabled and aria-busy set. */
export function onSubmit(formElement, handler) {
  formElement.addEventListener("submit", async (event) => {
    event.preventDefault();
    const buttons = formElement.querySelectorAll("button");
    formElement.setAttribute("aria-busy", "true");
    for (const b of buttons) b.disabled = true;
    try {
      await handler(event);
    } finally {
      formElement.removeAttribute("aria-busy");
      for (const b of buttons) b.disabled = false;
    }
  });
}

export const formError = () => html`<p class="form-error" role="alert" tabindex="-1" hidden></p>`;
