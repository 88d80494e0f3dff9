// The tabs that change things: Webhooks, API Keys, Tenants, Jobs. Secrets and keys are shown once;
// deleting or revoking asks first.

import { api, query } from "./api.js";
import { tenantOptions } from "./monitor.js";
import { $, button, confirmFirst, el, fill, loaded, when } from "./dom.js";

let deliveriesOf = null;

// Whether the Webhooks tab shows a webhook's deliveries (app.js then refreshes them).
export function followsDeliveries() {
  return deliveriesOf !== null;
}

export async function loadWebhooks() {
  const { webhooks } = await api("GET", "/api/admin/webhooks");
  fill(
    $("webhook-table").tBodies[0],
    webhooks.map((h) => [
      h.id, h.url, h.events.join(", "), h.tenant_id ?? "every tenant", h.status,
      el(
        "span", { class: "actions" },
        button("Test", () => testWebhook(h.id), { "data-action": "test", "data-id": h.id }),
        button("Deliveries", () => showDeliveries(h.id), { "data-action": "deliveries", "data-id": h.id }),
        button("Delete", () => deleteWebhook(h.id), { class: "danger", "data-action": "delete", "data-id": h.id }),
      ),
    ]),
    "no webhooks",
    6,
  );
  if (deliveriesOf !== null && !webhooks.some((h) => h.id === deliveriesOf)) deliveriesOf = null;
  await loadDeliveries();
  loaded("webhooks");
}

export async function createWebhook() {
  const events = $("webhook-events").value.split(",").map((e) => e.trim()).filter(Boolean);
  const body = { url: $("webhook-url").value.trim(), events };
  if ($("webhook-tenant").value.trim()) body.tenant_id = $("webhook-tenant").value.trim();
  const made = await api("POST", "/api/admin/webhooks", body);
  $("webhook-secret-id").textContent = made.id;
  $("webhook-secret-text").textContent = made.secret;
  $("webhook-secret-copy").textContent = "Copy";
  $("webhook-secret").hidden = false;
  $("webhook-form").reset();
  deliveriesOf = made.id;
  await loadWebhooks();
}

async function testWebhook(id) {
  await api("POST", `/api/admin/webhooks/${encodeURIComponent(id)}/test`);
  deliveriesOf = id;
  await loadDeliveries();
}

async function showDeliveries(id) {
  deliveriesOf = id;
  await loadDeliveries();
}

async function deleteWebhook(id) {
  if (!(await confirmFirst(`Delete webhook ${id} with its pending deliveries and log?`))) return;
  await api("DELETE", `/api/admin/webhooks/${encodeURIComponent(id)}`);
  $("webhook-secret").hidden = true;
  await loadWebhooks();
}

export async function loadDeliveries() {
  const tbody = $("delivery-table").tBodies[0];
  if (deliveriesOf === null) {
    $("deliveries-of").textContent = "";
    fill(tbody, [], "pick a webhook's Deliveries", 6);
    return;
  }
  const { deliveries } = await api("GET", `/api/admin/webhooks/${encodeURIComponent(deliveriesOf)}/deliveries?limit=20`);
  $("deliveries-of").textContent = `of ${deliveriesOf}`;
  fill(
    tbody,
    deliveries.map((d) => [
      d.id, d.type, el("span", { class: `state ${d.state}` }, d.state), String(d.attempts),
      d.last_status === null ? d.last_error ?? "—" : String(d.last_status), when(d.created_at),
    ]),
    "no deliveries yet",
    6,
  );
}

// -- API keys ------------------------------------------------------------------------------------------

export async function loadKeys() {
  await tenantOptions($("key-tenant"), "no tenant");
  const { keys } = await api("GET", "/api/admin/api-keys");
  fill(
    $("key-table").tBodies[0],
    keys.map((k) => [
      k.prefix, k.name, k.tenant_id ?? "—", k.scopes.join(", "),
      el("span", { class: `state ${k.status}` }, k.status), when(k.last_used_at),
      k.status === "active"
        ? button("Revoke", () => revokeKey(k), { class: "danger", "data-action": "revoke", "data-id": k.id })
        : "",
    ]),
    "no keys",
    7,
  );
  loaded("keys");
}

export async function createKey() {
  const scopes = [...document.querySelectorAll("input[name=key-scope]:checked")].map((c) => c.value);
  const body = { name: $("key-name").value.trim(), tenant_id: $("key-tenant").value || null, scopes };
  const made = await api("POST", "/api/admin/api-keys", body);
  $("key-once-id").textContent = `${made.prefix} (${made.name})`;
  $("key-once-text").textContent = made.key;
  $("key-once-copy").textContent = "Copy";
  $("key-once").hidden = false;
  $("key-name").value = "";
  await loadKeys();
}

async function revokeKey(key) {
  if (!(await confirmFirst(`Revoke key ${key.prefix} (${key.name})? Requests with it are refused from now on.`))) {
    return;
  }
  await api("DELETE", `/api/admin/api-keys/${encodeURIComponent(key.id)}`);
  $("key-once").hidden = true;
  await loadKeys();
}

// -- Tenants -------------------------------------------------------------------------------------------

const QUOTAS = ["rpm", "tpm", "max_concurrent", "daily_tokens", "monthly_tokens"];

export async function loadTenants() {
  const { tenants } = await api("GET", "/api/admin/tenants");
  const usages = await Promise.all(
    tenants.map((t) => api("GET", `/api/admin/tenants/${encodeURIComponent(t.id)}/usage`)),
  );
  fill(
    $("tenant-table").tBodies[0],
    tenants.map((t, i) => [
      t.id, t.name,
      usages[i].quotas.length
        ? el("ul", { class: "usage" }, ...usages[i].quotas.map((q) => el("li", {}, `${q.quota}: ${q.used} / ${q.limit}`)))
        : "no quotas",
      button("Delete", () => deleteTenant(t), { class: "danger", "data-action": "delete", "data-id": t.id }),
    ]),
    "no tenants",
    4,
  );
  loaded("tenants");
}

export async function createTenant() {
  const quotas = {};
  for (const name of QUOTAS) {
    const value = $(`tenant-${name}`).value;
    if (value !== "") quotas[name] = Number(value);
  }
  await api("POST", "/api/admin/tenants", { name: $("tenant-name").value.trim(), quotas });
  $("tenant-form").reset();
  await loadTenants();
}

async function deleteTenant(tenant) {
  if (!(await confirmFirst(`Delete tenant ${tenant.name} (${tenant.id}) and revoke all its keys?`))) return;
  await api("DELETE", `/api/admin/tenants/${encodeURIComponent(tenant.id)}`);
  await loadTenants();
}

// -- Jobs ----------------------------------------------------------------------------------------------

export async function loadJobs() {
  const { jobs } = await api("GET", "/api/admin/jobs" + query({ state: $("job-state").value }));
  fill(
    $("job-table").tBodies[0],
    jobs.map((j) => [
      j.id, j.kind, j.tenant_id ?? "—", el("span", { class: `state ${j.state}` }, j.state),
      `${j.attempts} / ${j.max_attempts}`, j.error ?? "", when(j.finished_at || j.started_at || j.created_at),
      j.state === "failed" ? button("Retry", () => retryJob(j.id), { "data-action": "retry", "data-id": j.id }) : "",
    ]),
    "no jobs",
    8,
  );
  loaded("jobs");
}

async function retryJob(id) {
  await api("POST", `/api/admin/jobs/${encodeURIComponent(id)}/retry`);
  await loadJobs();
}

