// Validation as the user types, for the sign-up and password forms (no inline script: the CSP
// forbids it). Progressive enhancement: without this script the forms submit and the server
// gives the same verdicts; with it, each field says what is wrong before the form is sent.
//
// A form with data-password-check="URL" has a new-password input (data-password) and, on sign-up,
// an email input (data-email) and a name input (data-name). Each checked input has a message
// element (its data-verdict id) tied to it with aria-describedby; a refused value sets
// aria-invalid. The password's length is judged here against the published minimum; every other
// rule (common, personal, strength) by POSTing the candidate to URL with the form's CSRF token,
// which answers {acceptable, rule, message} and neither logs nor stores it.
"use strict";

(function () {
  const DELAY_MS = 250;

  function verdictOf(input) {
    return document.getElementById(input.dataset.verdict);
  }

  function show(input, message, ok) {
    const verdict = verdictOf(input);
    verdict.textContent = message;
    verdict.classList.toggle("error", !ok);
    verdict.classList.toggle("ok", ok && message !== "");
    if (ok) input.removeAttribute("aria-invalid");
    else input.setAttribute("aria-invalid", "true");
  }

  function checkEmail(input) {
    if (input.value === "") return show(input, "", true);
    if (input.validity.typeMismatch || !/^[^@\s]+@[^@\s]+$/.test(input.value.trim())) {
      return show(input, "Enter an email address like name@example.com.", false);
    }
    show(input, "", true);
  }

  function setUp(form) {
    const url = form.dataset.passwordCheck;
    const password = form.querySelector("[data-password]");
    const email = form.querySelector("[data-email]");
    const name = form.querySelector("[data-name]");
    const token = form.querySelector("input[name=csrf_token]").value;
    const resetToken = form.querySelector("input[name=token]");
    const minimum = Number(password.getAttribute("minlength") || "0");
    let timer = null;
    let asked = 0;

    async function ask() {
      const candidate = password.value;
      if (candidate === "") return show(password, "", true);
      if ([...candidate].length < minimum) {
        return show(password, `Use at least ${minimum} characters (${[...candidate].length} so far).`, false);
      }
      const mine = ++asked;
      const body = { password: candidate };
      if (email) body.email = email.value;
      if (name) body.name = name.value;
      if (resetToken) body.token = resetToken.value;
      try {
        const response = await fetch(url, {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
          body: JSON.stringify(body),
          credentials: "same-origin",
        });
        if (mine !== asked) return; // a later keystroke's answer decides
        if (!response.ok) return show(password, "", true); // the server judges on submit
        const verdict = await response.json();
        if (verdict.acceptable) show(password, "This password can be used.", true);
        else show(password, verdict.message, false);
      } catch (error) {
        show(password, "", true); // offline: the server judges on submit
      }
    }

    function later() {
      clearTimeout(timer);
      timer = setTimeout(ask, DELAY_MS);
    }

    password.addEventListener("input", later);
    if (email) {
      email.addEventListener("input", function () { if (email.hasAttribute("aria-invalid")) checkEmail(email); later(); });
      email.addEventListener("blur", function () { checkEmail(email); });
    }
    if (name) name.addEventListener("input", later);
  }

  document.querySelectorAll("form[data-password-check]").forEach(setUp);
})();
