// The one Trusted Types policy of the app. The server's CSP says
// `require-trusted-types-for 'script'; trusted-types idp-spa`, so a string assigned to innerHTML
// throws, and this is the only policy the browser lets the page create. Only js/html.js calls it,
// with markup it built itself by escaping every interpolated value; nothing else may import it.

export const POLICY_NAME = "idp-spa";

let policy; // undefined: not created yet; null: this browser has no Trusted Types

function getPolicy() {
  if (policy === undefined) {
    const factory = globalThis.trustedTypes;
    // createHTML is the identity: what makes the markup safe is that html`` escaped it.
    policy = factory && typeof factory.createPolicy === "function"
      ? factory.createPolicy(POLICY_NAME, { createHTML: (markup) => markup })
      : null;
  }
  return policy;
}

/** Markup built by html`` as a TrustedHTML, or null where the browser has no Trusted Types. */
export function toTrustedHTML(markup) {
  const p = getPolicy();
  return p ? p.createHTML(markup) : null;
}

/** Whether value is a TrustedHTML (made by our policy: the CSP allows no other). */
export function isTrustedHTML(value) {
  const factory = globalThis.trustedTypes;
  return Boolean(factory && typeof factory.isHTML === "function" && factory.isHTML(value));
}
