// Rendering: one tagged template that escapes every interpolated value, and one sink.
//
//   render(element, html`<p>${user.name}</p>`)
//
// html`` returns markup that is safe by construction: a TrustedHTML made by the idp-spa policy
// where the browser has Trusted Types, a SafeHTML elsewhere. Interpolating one html`` result
// into another keeps it as markup; everything else (strings, numbers, server data) is escaped.
// Arrays are joined, each item treated the same way. raw() marks a string as markup: use it only
// for constants written in this code base, never for data.

import { isTrustedHTML, toTrustedHTML } from "./trusted.js";

class SafeHTML {
  constructor(markup) {
    this.markup = markup;
  }
  toString() {
    return this.markup;
  }
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHTML(value) {
  return String(value).replace(/[&<>"']/g, (ch) => ESCAPES[ch]);
}

function wrap(markup) {
  return toTrustedHTML(markup) ?? new SafeHTML(markup);
}

function isMarkup(value) {
  return value instanceof SafeHTML || isTrustedHTML(value);
}

function interpolate(value) {
  if (value === null || value === undefined || value === false) return "";
  if (Array.isArray(value)) return value.map(interpolate).join("");
  if (isMarkup(value)) return value.toString();
  return escapeHTML(value);
}

export function html(strings, ...values) {
  let out = strings[0];
  for (let i = 0; i < values.length; i += 1) out += interpolate(values[i]) + strings[i + 1];
  return wrap(out);
}

/** A constant string of markup written in this code base (never data from a server or the user). */
export function raw(markup) {
  return wrap(String(markup));
}

/** The string form of html`` output (for tests and for comparing). */
export function markupOf(value) {
  if (!isMarkup(value)) throw new TypeError("not markup made by html``");
  return value.toString();
}

const SAFE_SCHEMES = new Set(["http:", "https:", "blob:"]);

/** A URL fit for href/src: http(s) or blob, or "about:blank" (a javascript: URL is not escaped away). */
export function safeUrl(value) {
  try {
    const url = new URL(String(value), globalThis.location?.href ?? "http://invalid/");
    return SAFE_SCHEMES.has(url.protocol) ? url.href : "about:blank";
  } catch {
    return "about:blank";
  }
}

/** The only innerHTML assignment of the app: replace element's content. */
export function render(element, content) {
  if (!isMarkup(content)) throw new TypeError("render() takes html`` output, never a string");
  element.innerHTML = content;
}

/** Add markup at the end of element (the other HTML sink of the app, with the same rule). */
export function append(element, content) {
  if (!isMarkup(content)) throw new TypeError("append() takes html`` output, never a string");
  element.insertAdjacentHTML("beforeend", content);
}
