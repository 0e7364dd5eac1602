import assert from "node:assert/strict";
import { test } from "node:test";

import { escapeHTML, html, markupOf, raw, render, safeUrl } from "../js/html.js";

const HOSTILE = `<img src=x onerror=alert(1)>`;

test("html escapes < > & \" ' in every interpolation", () => {
  const out = markupOf(html`<p title="${`a"b'c`}">${"<b>&</b>"}</p>`);
  assert.equal(out, `<p title="a&quot;b&#39;c">&lt;b&gt;&amp;&lt;/b&gt;</p>`);
});

test("a hostile profile name renders as text", () => {
  assert.equal(markupOf(html`<h2>${HOSTILE}</h2>`), "<h2>&lt;img src=x onerror=alert(1)&gt;</h2>");
});

test("nested arrays are escaped item by item, nested html`` stays markup", () => {
  const items = ["<a>", ["&", `"'`], html`<i>${"<x>"}</i>`];
  assert.equal(markupOf(html`<ul>${items.map((i) => html`<li>${i}</li>`)}</ul>`),
    "<ul><li>&lt;a&gt;</li><li>&amp;&quot;&#39;</li><li><i>&lt;x&gt;</i></li></ul>");
  assert.equal(markupOf(html`${[["<", [">"]]]}`), "&lt;&gt;");
});

test("null, undefined and false render nothing; numbers as text", () => {
  assert.equal(markupOf(html`${null}${undefined}${false}${0}${12.5}`), "012.5");
});

test("raw marks constant markup; a plain string is never markup", () => {
  assert.equal(markupOf(html`<div>${raw("<br>")}</div>`), "<div><br></div>");
  assert.throws(() => markupOf("<br>"), TypeError);
  assert.equal(escapeHTML("&amp;"), "&amp;amp;");
});

test("render() refuses strings and writes html`` output", () => {
  const element = { innerHTML: "" };
  assert.throws(() => render(element, "<b>x</b>"), TypeError);
  render(element, html`<b>${HOSTILE}</b>`);
  assert.equal(String(element.innerHTML), "<b>&lt;img src=x onerror=alert(1)&gt;</b>");
});

test("safeUrl keeps http(s) and blob URLs and refuses javascript:", () => {
  assert.equal(safeUrl("http://127.0.0.1:8000/pictures/a.webp"), "http://127.0.0.1:8000/pictures/a.webp");
  assert.equal(safeUrl("javascript:alert(1)"), "about:blank");
  assert.equal(safeUrl("data:text/html,<script>"), "about:blank");
});
