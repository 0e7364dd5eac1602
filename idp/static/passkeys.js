// WebAuthn ceremonies for the sign-in and account pages (no inline script: the CSP forbids it).
//
// A button with data-passkey="register" or "authenticate" drives one ceremony:
//   1. POST data-options-url (JSON, CSRF token in X-CSRF-Token) -> {ceremony, publicKey}
//   2. navigator.credentials.create() / .get() with those options
//   3. POST data-verify-url with {ceremony, credential, ...} -> {redirect}
// Errors are shown in #passkey-error; the server's message is used when there is one.
"use strict";

(function () {
  function toBytes(base64url) {
    const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const binary = atob(padded);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(json) {
    const options = Object.assign({}, json);
    options.challenge = toBytes(json.challenge);
    options.user = Object.assign({}, json.user, { id: toBytes(json.user.id) });
    options.excludeCredentials = (json.excludeCredentials || []).map(function (c) {
      return Object.assign({}, c, { id: toBytes(c.id) });
    });
    return options;
  }

  function requestOptions(json) {
    const options = Object.assign({}, json);
    options.challenge = toBytes(json.challenge);
    options.allowCredentials = (json.allowCredentials || []).map(function (c) {
      return Object.assign({}, c, { id: toBytes(c.id) });
    });
    return options;
  }

  function registrationJSON(credential) {
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: {
        clientDataJSON: toBase64url(response.clientDataJSON),
        attestationObject: toBase64url(response.attestationObject),
        transports: typeof response.getTransports === "function" ? response.getTransports() : [],
      },
    };
  }

  function assertionJSON(credential) {
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: {
        clientDataJSON: toBase64url(response.clientDataJSON),
        authenticatorData: toBase64url(response.authenticatorData),
        signature: toBase64url(response.signature),
        userHandle: response.userHandle ? toBase64url(response.userHandle) : undefined,
      },
    };
  }

  async function post(url, csrf, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      data = {};
    }
    if (!response.ok) {
      throw new Error(data.error_description || "The request failed (" + response.status + ").");
    }
    return data;
  }

  function showError(message) {
    const box = document.getElementById("passkey-error");
    if (box) {
      box.textContent = message;
      box.hidden = false;
    }
  }

  function value(id) {
    const element = document.getElementById(id);
    return element ? element.value : "";
  }

  async function run(button) {
    const mode = button.dataset.passkey;
    const csrf = button.dataset.csrf;
    if (!window.PublicKeyCredential) {
      showError("This browser does not support passkeys.");
      return;
    }
    button.disabled = true;
    try {
      const first = mode === "register" ? { password: value("passkey-password") } : {};
      const started = await post(button.dataset.optionsUrl, csrf, first);
      let body;
      if (mode === "register") {
        const credential = await navigator.credentials.create({ publicKey: creationOptions(started.publicKey) });
        body = { ceremony: started.ceremony, credential: registrationJSON(credential), name: value("passkey-name") };
      } else {
        const credential = await navigator.credentials.get({ publicKey: requestOptions(started.publicKey) });
        body = { ceremony: started.ceremony, credential: assertionJSON(credential) };
        if (button.dataset.returnTo) body.return_to = button.dataset.returnTo;
      }
      const finished = await post(button.dataset.verifyUrl, csrf, body);
      window.location.assign(finished.redirect || "/account");
    } catch (error) {
      if (error && error.name === "NotAllowedError") {
        showError("The passkey request was cancelled or timed out.");
      } else if (error && error.name === "SecurityError") {
        showError("Passkeys need this site to be opened by its host name (for example localhost), not an IP address.");
      } else if (error && error.name === "InvalidStateError") {
        showError("This authenticator already holds a passkey for your account.");
      } else {
        showError(error && error.message ? error.message : "The passkey could not be used.");
      }
    } finally {
      button.disabled = false;
    }
  }

  document.querySelectorAll("[data-passkey]").forEach(function (button) {
    button.addEventListener("click", function () {
      run(button);
    });
  });
})();
