// The tabs that change things: Webhooks, API Keys, Tenants, Jobs. Secrets and keys are shown once;
// deleting, revoking or rotating a secret asks first.

import { api, fieldOf, query } from "./api.js";
import { tenantOptions } from "./monitor.js";
import {
  $, button, clearFormError, confirmFirst, el, fill, loaded, showFormError, showOnce, when,
} from "./dom.js";

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
        button("Rotate secret", () => rotateWebhook(h), { "data-action": "rotate", "data-id": h.id }),
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
  $("webhook-secret-what").textContent = "Signing secret";
  showOnce("webhook-secret", made.id, made.secret);
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

async function rotateWebhook(hook) {
  // The grace period is the gateway's (gateway.webhooks_rotation_grace_s): the list does not tell it, the
  // rotation's answer does (previous_secret_expires_at), so the confirm names the setting, the note the time.
  const older = hook.previous_secret_expires_at
    ? ` The secret it replaced earlier (still signing until ${when(hook.previous_secret_expires_at)}) stops now.`
    : "";
  const asked = `Rotate the signing secret of webhook ${hook.id}? The new secret is shown once. Receivers that `
    + "know only the current secret keep verifying deliveries just for the gateway's grace period "
    + `(gateway.webhooks_rotation_grace_s), then fail until they have the new one.${older}`;
  if (!(await confirmFirst(asked))) return;
  const made = await api("POST", `/api/admin/webhooks/${encodeURIComponent(hook.id)}/rotate`);
  const until = made.previous_secret_expires_at;
  $("webhook-secret-what").textContent = "New signing secret";
  showOnce(
    "webhook-secret", made.id, made.secret,
    until
      ? `The previous secret signs deliveries too until ${when(until)}: give the receiver the new one before then.`
      : "The previous secret no longer signs (the gateway's grace period is 0).",
  );
  deliveriesOf = made.id;
  await loadWebhooks();
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
  showOnce("key-once", `${made.prefix} (${made.name})`, made.key);
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
      el(
        "span", { class: "actions" },
        button("Edit", () => editTenant(t), { "data-action": "edit", "data-id": t.id }),
        button("Delete", () => deleteTenant(t), { class: "danger", "data-action": "delete", "data-id": t.id }),
      ),
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
  if (editing === tenant.id) closeTenantEdit();
  await loadTenants();
}

let editing = null;

function editTenant(tenant) {
  editing = tenant.id;
  clearFormError("tenant-edit");
  $("tenant-edit-id").textContent = tenant.id;
  $("tenant-edit-name").value = tenant.name;
  for (const name of QUOTAS) $(`tenant-edit-${name}`).value = tenant.quotas[name] ?? "";
  $("tenant-edit").hidden = false;
  $("tenant-edit-name").focus();
}

export function closeTenantEdit() {
  const id = editing;
  editing = null;
  clearFormError("tenant-edit");
  $("tenant-edit").hidden = true;
  if (id !== null) focusTenantEdit(id);
}

function focusTenantEdit(id) {
  const edits = document.querySelectorAll("#tenant-table button[data-action=edit]");
  const edit = [...edits].find((b) => b.dataset.id === id);
  if (edit) edit.focus();
}

// The input an API error about the form names: the name, or the quota a `quotas` message names.
function editedInput(field, error) {
  if (field === "quotas") {
    const quota = QUOTAS.find((name) => error.message.includes(`quota ${name} `));
    return quota ? $(`tenant-edit-${quota}`) : $("tenant-edit-rpm");
  }
  return field === "name" ? $("tenant-edit-name") : null;
}

export async function saveTenant() {
  // Every quota is sent: an empty one is null, which the API takes as "no limit" (it clears the quota).
  const quotas = {};
  for (const name of QUOTAS) {
    const value = $(`tenant-edit-${name}`).value;
    quotas[name] = value === "" ? null : Number(value);
  }
  const id = editing;
  const body = { name: $("tenant-edit-name").value.trim(), quotas };
  try {
    await api("PATCH", `/api/admin/tenants/${encodeURIComponent(id)}`, body);
  } catch (error) {
    const field = fieldOf(error);
    if (field === null) throw error;
    showFormError("tenant-edit", error, editedInput(field, error));
    return;
  }
  editing = null;
  clearFormError("tenant-edit");
  $("tenant-edit").hidden = true;
  await loadTenants();
  focusTenantEdit(id);
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

