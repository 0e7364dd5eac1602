// The demo SPA's shell: configuration, the wiring of the modules, the router, the navigation,
// toasts, sign-in, the callback and sign-out. The modules under js/ take their browser
// dependencies as arguments; this is the one place that reads window's.

import { AccountApi } from "./js/api.js";
import { html, render } from "./js/html.js";
import { eventDetail, eventLabel } from "./js/labels.js";
import { NotificationClient } from "./js/notifications.js";
import { OidcClient } from "./js/oidc.js";
import { CHANNEL_NAME, Refresher, SignedOut } from "./js/refresh.js";
import { STORE_KINDS, TOKENS_KEY, TokenStore, storageFor } from "./js/store.js";
import { activityView } from "./js/views/activity.js";
import { dataView } from "./js/views/data.js";
import { errorView, homeView, reasonText } from "./js/views/home.js";
import { notificationsView } from "./js/views/notifications.js";
import { profileView } from "./js/views/profile.js";
import { securityView } from "./js/views/security.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const toasts = document.getElementById("toasts");

const ROUTES = {
  "/profile": { title: "Profile", view: profileView },
  "/security": { title: "Security", view: securityView },
  "/activity": { title: "Activity", view: activityView },
  "/notifications": { title: "Notifications", view: notificationsView },
  "/data": { title: "Your data", view: dataView },
};

const CONFIG_KEYS = ["issuer", "client_id", "redirect_uri", "post_logout_redirect_uri", "scope"];

async function loadConfig() {
  const response = await fetch("/config.json", { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error(`/config.json answered ${response.status}`);
  const config = await response.json();
  for (const key of CONFIG_KEYS) if (typeof config[key] !== "string" || !config[key]) throw new Error(`/config.json has no ${key}`);
  config.token_store ??= "localStorage";
  if (!STORE_KINDS.includes(config.token_store)) throw new Error(`token_store must be one of ${STORE_KINDS.join(", ")}`);
  return Object.freeze(config);
}

function toast(message, kind = "info") {
  const item = document.createElement("div");
  item.className = `toast ${kind}`;
  item.textContent = message;
  toasts.append(item);
  setTimeout(() => item.remove(), 8000);
}

function renderNav(ctx) {
  const path = location.pathname;
  if (!ctx.store.get()) {
    render(nav, html``);
    return;
  }
  const unread = ctx.notifications.unread;
  render(nav, html`<ul>
    ${Object.entries(ROUTES).map(([href, route]) => html`<li><a href="${href}" data-link ${href === path ? html`aria-current="page"` : ""}>${route.title}${
      href === "/notifications" && unread ? html` <span class="count" aria-label="${unread} new">${unread}</span>` : ""}</a></li>`)}
    <li><button type="button" data-action="sign-out">Sign out</button></li>
  </ul>`);
  nav.querySelector("[data-action=sign-out]").addEventListener("click", () => ctx.signOut());
}

/** After a route change the heading gets the focus, so screen readers announce the new page. */
function focusHeading() {
  const heading = main.querySelector("h1");
  (heading ?? main).focus();
}

async function show(ctx, options = {}) {
  const path = location.pathname;
  renderNav(ctx);
  ctx.shownSignedIn = Boolean(ctx.store.get());
  if (!ctx.shownSignedIn) {
    homeView(main, ctx, options);
    document.title = "Demo SPA · idp";
    if (!options.keepFocus) focusHeading();
    return;
  }
  const route = ROUTES[path];
  if (!route) {
    history.replaceState(null, "", "/profile");
    return show(ctx, options);
  }
  if (path === "/notifications") ctx.notifications.unread = 0;
  document.title = `${route.title} · Demo SPA`;
  main.setAttribute("aria-busy", "true");
  try {
    await route.view(main, ctx);
  } catch (error) {
    if (error instanceof SignedOut) return; // onSignedOut has rendered the signed-out page
    errorView(main, ctx, { title: route.title, message: error?.message ?? "Something went wrong.", retry: false });
  } finally {
    main.removeAttribute("aria-busy");
  }
  renderNav(ctx);
  if (!options.keepFocus) focusHeading();
}

function navigate(ctx, path) {
  if (path !== location.pathname) history.pushState(null, "", path);
  return show(ctx);
}

async function boot() {
  let config;
  try {
    config = await loadConfig();
  } catch (error) {
    render(main, html`<h1 tabindex="-1">Not configured</h1>
      <p class="notice error" role="alert">This app reads its settings from <code>/config.json</code> on its own origin: ${error.message}.</p>
      <p>Run <code>idp demo</code>, which serves the app at http://127.0.0.1:8080 with its configuration, or see the README.</p>`);
    return;
  }

  const store = new TokenStore(storageFor(config.token_store, window));
  const oidc = new OidcClient(config, { fetch: window.fetch.bind(window), sessionStorage: window.sessionStorage, crypto: window.crypto });
  const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(CHANNEL_NAME) : null;
  const ctx = { config, store, oidc, toast, notifications: { items: [], state: "stopped", message: "", unread: 0 } };

  ctx.refresher = new Refresher({
    store,
    oidc,
    locks: navigator.locks,
    channel,
    onRefreshed: (record) => ctx.socket?.reauthenticate(record.access_token),
    onSignedOut: (reason) => {
      ctx.socket?.stop("signed_out", "");
      if (reason === "signed_out") return; // our own sign-out: on the way to the IdP's logout
      history.replaceState(null, "", "/");
      show(ctx, { reason });
      const text = reasonText(reason);
      if (text) toast(text);
    },
  });
  if (channel) channel.onmessage = (event) => ctx.refresher.handleMessage(event.data);
  else {
    // No BroadcastChannel: localStorage's own event says another tab changed the tokens.
    window.addEventListener("storage", (event) => {
      if (event.key === TOKENS_KEY) ctx.refresher.handleMessage({ type: event.newValue === null ? "signed_out" : "tokens" });
    });
  }
  ctx.api = new AccountApi({ issuer: config.issuer, fetch: window.fetch.bind(window), refresher: ctx.refresher });

  let policy;
  ctx.passwordPolicy = async () => {
    if (policy === undefined) {
      try {
        const response = await fetch(`${config.issuer}/account/password-policy`, { credentials: "omit" });
        policy = response.ok ? await response.json() : null;
      } catch {
        policy = null; // the server still judges the password
      }
    }
    return policy;
  };
  ctx.navigate = (path) => navigate(ctx, path);
  ctx.rerender = () => show(ctx, { keepFocus: true });
  ctx.signIn = async (extra = {}) => {
    try {
      location.assign(await oidc.authorizationUrl({ return_to: location.pathname === "/callback" ? "/" : location.pathname, ...extra }));
    } catch (error) {
      errorView(main, ctx, { title: "Cannot sign in", message: error.message });
      focusHeading();
    }
  };
  ctx.reauthenticate = (form, message, returnTo) => {
    const box = form.querySelector(".form-error");
    box.textContent = `${message} `;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Sign in again";
    button.addEventListener("click", () => ctx.signIn({ prompt: "login", return_to: returnTo }));
    box.append(button);
    box.hidden = false;
    button.focus();
  };
  ctx.signOut = async () => {
    const record = store.get();
    ctx.socket?.stop("signed_out", "");
    // RFC 7009: the refresh token dies with the sign-out, whatever happens at the logout page.
    if (record?.refresh_token) await oidc.revoke(record.refresh_token, "refresh_token");
    ctx.refresher.signOut("signed_out");
    let url = null;
    try {
      url = await oidc.endSessionUrl(record?.id_token);
    } catch {
      /* the IdP is unreachable: signed out here at least */
    }
    if (url) location.assign(url);
    else {
      history.replaceState(null, "", "/");
      show(ctx, { reason: "signed_out" });
    }
  };
  ctx.accountDeleted = () => {
    ctx.socket?.stop("signed_out", "");
    ctx.refresher.signOut("account_deleted");
  };

  ctx.socket = config.notifications_url
    ? new NotificationClient({
        url: config.notifications_url,
        WebSocket: window.WebSocket,
        accessToken: () => ctx.refresher.accessToken(),
        refresh: async () => (await ctx.refresher.fresh({ force: true, refused: store.get()?.access_token ?? null })).access_token,
        fetchActivity: (query) => ctx.api.activity(query),
        currentSid: () => store.get()?.claims?.sid ?? null,
        onEvent: (event, { replayed }) => {
          ctx.notifications.items.unshift({ ...event, replayed });
          ctx.notifications.items.length = Math.min(ctx.notifications.items.length, 200);
          if (location.pathname === "/notifications") ctx.rerender();
          else {
            ctx.notifications.unread += 1;
            renderNav(ctx);
          }
          const detail = eventDetail(event.data);
          toast(`${replayed ? "While you were away: " : ""}${eventLabel(event.event)}${detail ? ` (${detail})` : ""}`);
        },
        onSessionEnded: () => ctx.refresher.signOut("session_ended"),
        onStatus: (state, message) => {
          ctx.notifications.state = state;
          ctx.notifications.message = message;
          if (state === "stopped" && message) toast(message, "error");
          if (location.pathname === "/notifications" && store.get()) ctx.rerender();
        },
      })
    : null;

  document.addEventListener("click", (event) => {
    const link = event.target.closest?.("a[data-link]");
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    navigate(ctx, new URL(link.href).pathname);
  });
  window.addEventListener("popstate", () => show(ctx));

  if (location.pathname === "/callback") {
    try {
      const { record, returnTo } = await oidc.handleCallback(location.href);
      store.set(record);
      channel?.postMessage({ type: "tokens" });
      history.replaceState(null, "", ROUTES[returnTo] ? returnTo : "/profile");
    } catch (error) {
      store.clear(); // any token error: nothing kept
      history.replaceState(null, "", "/callback"); // the code and state leave the address bar
      renderNav(ctx);
      errorView(main, ctx, { title: "Sign-in failed", message: error.message });
      focusHeading();
      return;
    }
  } else if (location.search) {
    history.replaceState(null, "", location.pathname); // e.g. the state of the post-logout redirect
  }
  await show(ctx);
  if (store.get()) {
    ctx.refresher.schedule();
    ctx.socket?.start();
  }
  // A sign-in in another tab: start here too.
  const started = ctx.refresher.onRefreshed;
  ctx.refresher.onRefreshed = (record) => {
    started(record);
    if (!ctx.shownSignedIn) {
      ctx.socket?.start();
      show(ctx);
    }
  };
}

boot();
