// The relying party: discovery, the authorization request (code flow + PKCE S256, state, nonce),
// the callback, the token endpoint (code exchange, refresh), revocation and RP-initiated logout.
// No DOM here: fetch, storage, crypto and the clock are passed in.

import { JwtError, decodeJwt, selectKey, validateIdTokenClaims, verifyJws } from "./jwt.js";
import { challengeS256, createVerifier, randomToken } from "./pkce.js";
import { recordFromTokenResponse } from "./store.js";

export const PENDING_KEY = "idp-spa.pending";
const PENDING_MAX_AGE_MS = 10 * 60 * 1000;

/** A sign-in or token failure with a stable code and a message for the user. */
export class OidcError extends Error {
  constructor(code, message, { status, cause } = {}) {
    super(message, { cause });
    this.name = "OidcError";
    this.code = code;
    this.status = status;
  }
}

const REQUIRED_ENDPOINTS = ["authorization_endpoint", "token_endpoint", "jwks_uri"];

export class OidcClient {
  /**
   * config: issuer, client_id, redirect_uri, post_logout_redirect_uri, scope.
   * deps: fetch, sessionStorage (the round trip's state), crypto, now() in ms.
   */
  constructor(config, { fetch, sessionStorage, crypto = globalThis.crypto, now = () => Date.now() }) {
    this.config = config;
    this.fetch = fetch;
    this.sessionStorage = sessionStorage;
    this.crypto = crypto;
    this.now = now;
    this.metadata = null;
    this.jwks = null;
  }

  async #getJson(url, what) {
    let response;
    try {
      response = await this.fetch(url, { headers: { Accept: "application/json" }, credentials: "omit" });
    } catch (error) {
      throw new OidcError("network_error", `Could not reach the identity provider for ${what}.`, { cause: error });
    }
    if (!response.ok) throw new OidcError("server_error", `The identity provider answered ${response.status} for ${what}.`);
    try {
      return await response.json();
    } catch (error) {
      throw new OidcError("server_error", `The identity provider's ${what} is not JSON.`, { cause: error });
    }
  }

  /** The provider's metadata (OIDC Discovery §4), whose issuer must be the configured one (§4.3). */
  async discover() {
    if (this.metadata) return this.metadata;
    const url = `${this.config.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
    const metadata = await this.#getJson(url, "discovery");
    if (metadata.issuer !== this.config.issuer) {
      throw new OidcError("wrong_issuer", `Discovery names the issuer ${metadata.issuer}, not ${this.config.issuer}.`);
    }
    for (const name of REQUIRED_ENDPOINTS) {
      if (typeof metadata[name] !== "string") throw new OidcError("server_error", `Discovery has no ${name}.`);
    }
    this.metadata = metadata;
    return metadata;
  }

  async #getJwks(refresh = false) {
    if (!this.jwks || refresh) this.jwks = await this.#getJson((await this.discover()).jwks_uri, "the signing keys");
    return this.jwks;
  }

  /** The ID token verified: signature against the JWKS (refetched once for an unknown kid), then its claims. */
  async verifyIdToken(idToken, { nonce, subject } = {}) {
    const { header } = decodeJwt(idToken);
    let jwk;
    try {
      jwk = selectKey(await this.#getJwks(), header);
    } catch (error) {
      if (!(error instanceof JwtError) || error.code !== "unknown_kid") throw error;
      jwk = selectKey(await this.#getJwks(true), header); // the provider may have rotated its keys
    }
    const { payload } = await verifyJws(idToken, jwk, this.crypto.subtle);
    return validateIdTokenClaims(payload, {
      issuer: this.config.issuer,
      clientId: this.config.client_id,
      now: Math.floor(this.now() / 1000),
      nonce,
      subject,
    });
  }

  /**
   * The authorization request URL (RFC 6749 §4.1.1, RFC 7636 §4.3); state, nonce and the
   * verifier are kept in sessionStorage for the callback. extra: prompt, max_age, login_hint.
   */
  async authorizationUrl(extra = {}) {
    const metadata = await this.discover();
    const verifier = createVerifier(this.crypto);
    const pending = {
      state: randomToken(32, this.crypto),
      nonce: randomToken(32, this.crypto),
      code_verifier: verifier,
      created_at: this.now(),
      return_to: typeof extra.return_to === "string" && extra.return_to.startsWith("/") ? extra.return_to : "/",
    };
    const url = new URL(metadata.authorization_endpoint);
    const params = {
      response_type: "code",
      client_id: this.config.client_id,
      redirect_uri: this.config.redirect_uri,
      scope: this.config.scope,
      state: pending.state,
      nonce: pending.nonce,
      code_challenge: await challengeS256(verifier, this.crypto),
      code_challenge_method: "S256",
    };
    for (const name of ["prompt", "max_age", "login_hint"]) {
      if (extra[name] !== undefined) params[name] = String(extra[name]);
    }
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
    this.sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
    return url.href;
  }

  #takePending() {
    const text = this.sessionStorage.getItem(PENDING_KEY);
    this.sessionStorage.removeItem(PENDING_KEY); // one use, whatever happens next
    if (!text) return null;
    try {
      const pending = JSON.parse(text);
      if (typeof pending.state !== "string" || this.now() - pending.created_at > PENDING_MAX_AGE_MS) return null;
      return pending;
    } catch {
      return null;
    }
  }

  /**
   * The redirect back (RFC 6749 §4.1.2): state checked, iss checked (RFC 9207), the code exchanged
   * (with the verifier), the ID token verified (with the nonce). Answers { record, returnTo }; a
   * failure throws OidcError and nothing is kept.
   */
  async handleCallback(callbackUrl) {
    const params = new URL(callbackUrl).searchParams;
    const pending = this.#takePending();
    const metadata = await this.discover();
    if (!pending || !params.get("state")) {
      throw new OidcError("missing_state", "This sign-in was not started here (or took too long). Please sign in again.");
    }
    if (params.get("state") !== pending.state) {
      throw new OidcError("state_mismatch", "The sign-in answer does not match the request (state). Please sign in again.");
    }
    const iss = params.get("iss");
    if (iss !== null ? iss !== metadata.issuer : metadata.authorization_response_iss_parameter_supported === true) {
      throw new OidcError("wrong_issuer", "The sign-in answer came from another issuer (RFC 9207).");
    }
    if (params.get("error")) {
      const description = params.get("error_description");
      const text = params.get("error") === "access_denied" ? "The sign-in was cancelled." : `The sign-in failed: ${params.get("error")}.`;
      throw new OidcError(params.get("error"), description ? `${text} ${description}` : text);
    }
    const code = params.get("code");
    if (!code) throw new OidcError("invalid_request", "The sign-in answer has no code.");
    const response = await this.tokenRequest({
      grant_type: "authorization_code",
      code,
      redirect_uri: this.config.redirect_uri,
      code_verifier: pending.code_verifier,
    });
    if (typeof response.id_token !== "string") throw new OidcError("invalid_response", "The token answer has no ID token.");
    const claims = await this.verifyIdToken(response.id_token, { nonce: pending.nonce });
    return { record: this.#record(response, claims), returnTo: pending.return_to };
  }

  #record(response, claims, previous = null) {
    try {
      return recordFromTokenResponse(response, { now: this.now(), idClaims: claims && { sub: claims.sub, sid: claims.sid, ...pick(claims) }, previous });
    } catch (error) {
      throw new OidcError("invalid_response", error.message);
    }
  }

  /** A form post to the token endpoint as a public client (client_id in the body, no secret). */
  async tokenRequest(params) {
    const metadata = await this.discover();
    const body = new URLSearchParams({ ...params, client_id: this.config.client_id });
    let response;
    try {
      response = await this.fetch(metadata.token_endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
        body,
        credentials: "omit",
      });
    } catch (error) {
      throw new OidcError("network_error", "Could not reach the identity provider's token endpoint.", { cause: error });
    }
    let json = null;
    try {
      json = await response.json();
    } catch {
      /* below */
    }
    if (!response.ok || json === null || typeof json !== "object") {
      const code = typeof json?.error === "string" ? json.error : "server_error";
      const description = typeof json?.error_description === "string" ? ` ${json.error_description}` : "";
      throw new OidcError(code, `The token endpoint refused the request (${code}).${description}`, { status: response.status });
    }
    return json;
  }

  /** Refresh (RFC 6749 §6): the new record, keeping what the answer leaves out; a new ID token is verified. */
  async refresh(previous) {
    if (!previous?.refresh_token) throw new OidcError("no_refresh_token", "There is no refresh token.");
    const response = await this.tokenRequest({ grant_type: "refresh_token", refresh_token: previous.refresh_token });
    let claims = null;
    if (typeof response.id_token === "string") {
      // OIDC Core §12.2: same iss, sub and aud; no nonce check (the refresh sent none).
      claims = await this.verifyIdToken(response.id_token, { subject: previous.claims?.sub });
    }
    return this.#record(response, claims, previous);
  }

  /** Revoke the refresh token (RFC 7009, token_type_hint). Failure is reported, not fatal to signing out. */
  async revoke(token, hint = "refresh_token") {
    const metadata = await this.discover();
    if (!metadata.revocation_endpoint || !token) return false;
    try {
      const response = await this.fetch(metadata.revocation_endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token, token_type_hint: hint, client_id: this.config.client_id }),
        credentials: "omit",
      });
      return response.ok;
    } catch {
      return false;
    }
  }

  /** RP-initiated logout (OIDC RP-Initiated Logout §2), or null when the provider has none. */
  async endSessionUrl(idToken) {
    const metadata = await this.discover();
    if (!metadata.end_session_endpoint) return null;
    const url = new URL(metadata.end_session_endpoint);
    if (idToken) url.searchParams.set("id_token_hint", idToken);
    url.searchParams.set("post_logout_redirect_uri", this.config.post_logout_redirect_uri);
    url.searchParams.set("client_id", this.config.client_id);
    url.searchParams.set("state", randomToken(16, this.crypto));
    return url.href;
  }
}

// Claims worth keeping for display besides sub and sid (never the raw token's every member).
function pick(claims) {
  const out = {};
  for (const name of ["name", "email", "auth_time", "amr", "acr"]) if (claims[name] !== undefined) out[name] = claims[name];
  return out;
}
