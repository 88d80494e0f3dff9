// The llmkit admin dashboard. It only calls the JSON admin API (/api/admin/*), so everything it shows is
// scriptable too. Whatever the API answers goes into the DOM as text (textContent, text nodes), never as
// HTML: a tenant named <img onerror=...> stays a name. The admin key lives in sessionStorage (this tab
// only) and travels in the X-API-Key header, never in a URL or a cookie.

import { KEY_ITEM, api } from "./api.js";
import { $, clearError, copy, guarded } from "./dom.js";
import {
  closeTenantEdit, createKey, createTenant, createWebhook, followsDeliveries, loadDeliveries, loadJobs, loadKeys,
  loadTenants, loadWebhooks, saveTenant,
} from "./manage.js";
import { loadAnalytics, loadMetrics, loadOverview, resetOverview } from "./monitor.js";

const REFRESH_MS = 2000;
const TABS = ["overview", "analytics", "webhooks", "keys", "tenants", "jobs", "metrics"];

const LOADERS = {
  overview: loadOverview, analytics: loadAnalytics, webhooks: loadWebhooks, keys: loadKeys,
  tenants: loadTenants, jobs: loadJobs, metrics: loadMetrics,
};
let current = "overview";
let timer = null;

function select(tab, focus = false) {
  current = tab;
  for (const name of TABS) {
    const on = name === tab;
    const button = $(`tab-${name}`);
    button.setAttribute("aria-selected", String(on));
    button.tabIndex = on ? 0 : -1;
    $(`panel-${name}`).hidden = !on;
  }
  if (focus) $(`tab-${tab}`).focus();
  guarded(LOADERS[tab])();
}

let refreshing = false;

async function refresh() {
  // Overview is live; the webhook tab follows its deliveries; the others load when opened. A slow answer
  // delays the next refresh rather than piling requests up behind it.
  if (refreshing || document.hidden || $("app").hidden) return;
  refreshing = true;
  try {
    if (current === "overview") await guarded(loadOverview)();
    else if (current === "webhooks" && followsDeliveries()) await guarded(loadDeliveries)();
  } finally {
    refreshing = false;
  }
}

async function enter() {
  // Any admin route tells whether the key is an admin's: the tenant list is one every admin may read.
  await api("GET", "/api/admin/tenants");
  clearError();
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  select("overview");
  if (timer === null) timer = setInterval(refresh, REFRESH_MS);
}

function signOut() {
  sessionStorage.removeItem(KEY_ITEM);
  clearInterval(timer);
  timer = null;
  resetOverview();
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("admin-key").focus();
}

async function signIn() {
  const key = $("admin-key").value.trim();
  sessionStorage.setItem(KEY_ITEM, key);
  $("admin-key").value = "";
  try {
    await enter();
  } catch (error) {
    sessionStorage.removeItem(KEY_ITEM);
    throw error;
  }
}

function onTabKey(event) {
  const at = TABS.indexOf(current);
  const moves = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: TABS.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  select(TABS[(moves[event.key] + TABS.length) % TABS.length], true);
}

function wire() {
  $("sign-in-form").addEventListener("submit", guarded(signIn));
  $("sign-out").addEventListener("click", signOut);
  $("alert-close").addEventListener("click", clearError);
  for (const name of TABS) $(`tab-${name}`).addEventListener("click", () => select(name));
  document.querySelector("[role=tablist]").addEventListener("keydown", onTabKey);
  $("analytics-form").addEventListener("submit", guarded(loadAnalytics));
  $("webhook-form").addEventListener("submit", guarded(createWebhook));
  $("webhook-secret-copy").addEventListener("click", guarded(() => copy("webhook-secret-text", "webhook-secret-copy")));
  $("key-form").addEventListener("submit", guarded(createKey));
  $("key-once-copy").addEventListener("click", guarded(() => copy("key-once-text", "key-once-copy")));
  $("tenant-form").addEventListener("submit", guarded(createTenant));
  $("tenant-edit").addEventListener("submit", guarded(saveTenant));
  $("tenant-edit-cancel").addEventListener("click", closeTenantEdit);
  $("tenant-edit").addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeTenantEdit();
  });
  $("job-form").addEventListener("submit", guarded(loadJobs));
  if (sessionStorage.getItem(KEY_ITEM)) {
    guarded(enter)();
  } else {
    $("admin-key").focus();
  }
}

wire();
