// The llmkit admin dashboard. It only calls the JSON admin API (/api/admin/*), so everything it shows is
// scriptable too. Whatever the API answers goes into the DOM as text (textContent, text nodes), never as
// HTML: a tenant named <img onerror=...> stays a name. The admin key lives in sessionStorage (this tab
// only) and travels in the X-API-Key header, never in a URL or a cookie.

const KEY_ITEM = "llmkit-admin-key";
const REFRESH_MS = 2000;
const TABS = ["overview", "analytics", "webhooks", "keys", "tenants", "jobs", "metrics"];
const $ = (id) => document.getElementById(id);

class ApiFailure extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// -- the API -----------------------------------------------------------------------------------------

async function api(method, path, body, accept = []) {
  const headers = { "X-API-Key": sessionStorage.getItem(KEY_ITEM) || "" };
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    throw new ApiFailure(`${method} ${path}: the server did not answer (${exc.message})`, 0, null);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok && !accept.includes(response.status)) {
    const said = data && data.error && data.error.message ? data.error.message : response.statusText;
    throw new ApiFailure(`${method} ${path}: ${response.status} ${said}`, response.status, data);
  }
  return data;
}

function query(params) {
  const pairs = Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined);
  return pairs.length ? "?" + new URLSearchParams(pairs).toString() : "";
}

// -- DOM helpers (text only) ---------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren();
  if (!rows.length) {
    tbody.append(el("tr", {}, el("td", { colspan: columns, class: "muted" }, empty)));
    return;
  }
  for (const cells of rows) tbody.append(el("tr", {}, ...cells.map((c) => el("td", {}, c))));
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "never";
}

function percent(rate) {
  return rate === null || rate === undefined || Number.isNaN(rate) ? "—" : `${(rate * 100).toFixed(1)} %`;
}

function tile(container, label, value, id) {
  container.append(el("div", { class: "tile", id }, el("span", { class: "label" }, label), el("strong", {}, value)));
}

function showError(error) {
  $("alert-text").textContent = error instanceof Error ? error.message : String(error);
  $("alert").hidden = false;
}

function clearError() {
  $("alert").hidden = true;
  $("alert-text").textContent = "";
}

// Every click handler and loader runs through here: an API error is shown, never swallowed.
function guarded(action) {
  return async (event) => {
    if (event && event.preventDefault && event.type === "submit") event.preventDefault();
    try {
      await action(event);
    } catch (error) {
      showError(error);
    }
  };
}

function confirmFirst(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-cancel").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

function button(label, action, extra = {}) {
  return el("button", { type: "button", onclick: guarded(action), ...extra }, label);
}

async function copy(textId, buttonId) {
  const text = $(textId).textContent;
  try {
    await navigator.clipboard.writeText(text);
    $(buttonId).textContent = "Copied";
  } catch {
    // No clipboard permission (plain http on another host): select it for Ctrl+C instead.
    const range = document.createRange();
    range.selectNodeContents($(textId));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    $(buttonId).textContent = "Selected: press Ctrl+C";
  }
}

function loaded(tab) {
  $(`panel-${tab}`).dataset.loaded = "true";
}

// -- charts: hand-drawn SVG bars -----------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// `span` is the window: `count` intervals of `step` seconds from `start`; intervals the API left out (no
// requests) stay empty, so one busy hour looks like one bar in a week, not like the whole week.
function barChart(container, points, unit, span) {
  const width = 600, height = 180, left = 48, bottom = 22, top = 8;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "bars" });
  const most = Math.max(1, ...points.map((p) => p.y));
  chart.append(svg("title", {}, `${points.length} intervals with requests, highest ${most.toFixed(0)} ${unit}`));
  chart.append(svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" }));
  chart.append(svg("text", { x: left - 4, y: top + 10, "text-anchor": "end", class: "tick" }, most.toFixed(0)));
  chart.append(svg("text", { x: left - 4, y: height - bottom, "text-anchor": "end", class: "tick" }, "0"));
  if (!points.length) {
    chart.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "tick" }, "no data"));
  }
  const step = (width - left) / span.count;
  for (const p of points) {
    const i = Math.min(span.count - 1, Math.max(0, Math.round((p.x - span.start) / span.step)));
    const h = ((height - bottom - top) * p.y) / most;
    const bar = svg("rect", {
      x: left + i * step + step * 0.1, y: height - bottom - h, width: Math.max(step * 0.8, 1), height: h, class: "bar",
    });
    bar.append(svg("title", {}, `${when(new Date(p.x * 1000).toISOString())}: ${p.y.toFixed(1)} ${unit}`));
    chart.append(bar);
  }
  const day = (t) => new Date(t * 1000).toISOString().slice(5, 16).replace("T", " ");
  chart.append(svg("text", { x: left, y: height - 6, class: "tick" }, day(span.start)));
  chart.append(
    svg("text", { x: width, y: height - 6, "text-anchor": "end", class: "tick" }, day(span.start + span.count * span.step)),
  );
  container.replaceChildren(chart);
}

// -- Overview ------------------------------------------------------------------------------------------

let previous = null;

function componentDetail(state) {
  if (state === null || state === undefined) return "off";
  return Object.entries(state)
    .filter(([k, v]) => k !== "ok" && k !== "each" && (v === null || typeof v !== "object"))
    .map(([k, v]) => `${k}: ${v}`)
    .join(", ");
}

function componentState(state) {
  if (state === null || state === undefined) return "off";
  if (state.ok === false || state.store_ok === false) return "down";
  return "ok";
}

async function loadOverview() {
  let [health, stats] = await Promise.all([
    api("GET", "/api/admin/health", undefined, [503]),
    // A tenant's admin key may read health but not the server's stats (403): those tiles stay empty.
    api("GET", "/api/admin/stats", undefined, [403]),
  ]);
  const ownTenantOnly = Boolean(stats && stats.error);
  if (ownTenantOnly) stats = {};
  const now = performance.now();
  const counts = stats.requests || {};
  const failures = (counts.upstream_failures || 0) + (counts.rejected_full || 0);
  let rate = "measuring…";
  if (previous !== null && now > previous.at) {
    rate = (((counts.requests || 0) - previous.requests) / ((now - previous.at) / 1000)).toFixed(2);
  }
  previous = { at: now, requests: counts.requests || 0 };
  const tiles = $("overview-tiles");
  tiles.replaceChildren();
  tile(tiles, "Status", health.status, "tile-status");
  tile(tiles, "Requests / s", rate, "tile-rps");
  tile(tiles, "Requests since start", String(counts.requests || 0), "tile-requests");
  tile(tiles, "Error rate", percent(counts.requests ? failures / counts.requests : null), "tile-errors");
  const cache = (stats.cache_stats || {}).response_cache || {};
  tile(tiles, "Cache hit rate", percent(cache.hit_rate), "tile-cache");
  const queue = stats.queue || {};
  tile(tiles, "Queue length", String(queue.waiting ?? "—"), "tile-queue");
  tile(tiles, "Busy / max", `${queue.busy ?? "—"} / ${queue.max_concurrent ?? "—"}`, "tile-busy");
  const platform = stats.platform || {};
  tile(tiles, "Tenants", String(platform.tenants ?? "—"), "tile-tenants");
  tile(tiles, "Active keys", String((platform.api_keys || {}).active ?? "—"), "tile-keys");
  const components = health.components || {};
  fill(
    $("health-table").tBodies[0],
    Object.entries(components).map(([name, state]) => [
      name, el("span", { class: `state ${componentState(state)}` }, componentState(state)), componentDetail(state),
    ]),
    "no components",
    3,
  );
  const checked = (components.upstreams || {}).each || [];
  fill(
    $("upstream-table").tBodies[0],
    (stats.upstreams || []).map((row, i) => {
      const probe = checked[i] || {};
      return [
        row.url, row.breaker, probe.ok === undefined ? "—" : probe.ok ? "yes" : "no",
        probe.latency_ms ?? "—", String(row.attempts ?? 0), String(row.failed ?? 0),
      ];
    }),
    "no upstreams",
    6,
  );
  const scope = ownTenantOnly ? " Server stats need the platform admin key; this key administers one tenant." : "";
  $("overview-updated").textContent = `Updated ${new Date().toLocaleTimeString()}.${scope}`;
  loaded("overview");
}

// -- Analytics -----------------------------------------------------------------------------------------

async function tenantOptions(select, first) {
  const chosen = select.value;
  const { tenants } = await api("GET", "/api/admin/tenants");
  select.replaceChildren(el("option", { value: "" }, first));
  for (const t of tenants) select.append(el("option", { value: t.id }, `${t.name} (${t.id})`));
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  return tenants;
}

let analyticsRun = 0;

function renderStats(stats) {
  const tiles = $("analytics-tiles");
  tiles.replaceChildren();
  tile(tiles, "Requests", String(stats.requests), "tile-analytics-requests");
  tile(tiles, "Unique queries", String(stats.unique_queries));
  tile(tiles, "Error rate", percent(stats.error_rate));
  tile(tiles, "Cache hit rate", percent(stats.cache_hit_rate));
  const ms = (v) => (v === null || v === undefined ? "—" : v.toFixed(1));
  tile(tiles, "Latency p50 / p95 ms", `${ms(stats.latency_ms.p50)} / ${ms(stats.latency_ms.p95)}`);
  tile(tiles, "Tokens in / out", `${stats.tokens_in} / ${stats.tokens_out}`);
}

function renderSeries(series) {
  const buckets = series.buckets;
  const step = series.interval_hours * 3600;
  const end = Math.floor(Date.now() / 1000 / step) * step + step;
  const count = Math.ceil((series.days * 86400) / step) + 1;
  const span = { start: end - count * step, step, count };
  barChart($("chart-requests"), buckets.map((b) => ({ x: b.start, y: b.requests })), "requests", span);
  barChart($("chart-latency"), buckets.map((b) => ({ x: b.start, y: b.latency_ms_mean })), "ms", span);
  barChart($("chart-tokens"), buckets.map((b) => ({ x: b.start, y: b.tokens_in + b.tokens_out })), "tokens", span);
}

function renderPopular(popular) {
  fill($("popular-table").tBodies[0], popular.items.map((q) => [q.query, String(q.count)]), "no queries", 2);
}

function renderTrending(trending) {
  fill(
    $("trending-table").tBodies[0],
    trending.items.map((q) => [q.query, String(q.count), String(q.previous), q.new ? "new" : percent(q.growth)]),
    "nothing trending",
    4,
  );
}

async function loadAnalytics() {
  const run = ++analyticsRun;
  const panel = $("panel-analytics");
  panel.dataset.complete = "false";
  await tenantOptions($("analytics-tenant"), "every tenant");
  const tenant_id = $("analytics-tenant").value;
  const days = Number($("analytics-days").value);
  const interval_hours = days <= 2 ? 1 : days <= 7 ? 6 : 24;
  // One at a time, quickest first: the analytics store answers its queries one after another anyway
  // (SQLite), and asked together they all come back when the slowest (totals, percentiles) is done.
  const parts = [
    ["/api/admin/analytics/trending" + query({ window_hours: 24, tenant_id, limit: 20 }), renderTrending],
    ["/api/admin/analytics/popular" + query({ days, tenant_id, limit: 20 }), renderPopular],
    ["/api/admin/analytics/timeseries" + query({ days, interval_hours, tenant_id }), renderSeries],
    ["/api/admin/analytics/stats" + query({ days, tenant_id }), renderStats],
  ];
  for (const [path, render] of parts) {
    const data = await api("GET", path);
    if (run !== analyticsRun) return; // a newer Show took over
    render(data);
    loaded("analytics");
  }
  if (run === analyticsRun) panel.dataset.complete = "true";
}

// -- Webhooks ------------------------------------------------------------------------------------------

let deliveriesOf = null;

async function loadWebhooks() {
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

async function createWebhook() {
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

async function loadDeliveries() {
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

async function loadKeys() {
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

async function createKey() {
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

async function loadTenants() {
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

async function createTenant() {
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

async function loadJobs() {
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

// -- Metrics -------------------------------------------------------------------------------------------

const SERIES = [
  ["llmkit_http_requests_total", "requests by route, method and status (llmkit's own names)"],
  ["http_requests_total", "the same requests under the conventional name (alert rules use it)"],
  ["http_request_duration_seconds", "request latency histogram: histogram_quantile(0.95, rate(..._bucket[5m]))"],
  ["search_duration_seconds", "document search latency histogram, by search type"],
];

function loadMetrics() {
  const url = `${location.origin}/metrics`;
  $("scrape-url").textContent = url;
  $("scrape-config").textContent =
    `scrape_configs:\n  - job_name: llmkit-gateway\n    metrics_path: /metrics\n    static_configs:\n      - targets: ["${location.host}"]`;
  fill($("series-table").tBodies[0], SERIES.map(([name, what]) => [el("code", {}, name), what]), "", 2);
  loaded("metrics");
}

// -- tabs, sign-in, refresh ----------------------------------------------------------------------------

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
    else if (current === "webhooks" && deliveriesOf !== null) await guarded(loadDeliveries)();
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
  previous = null;
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
  $("job-form").addEventListener("submit", guarded(loadJobs));
  if (sessionStorage.getItem(KEY_ITEM)) {
    guarded(enter)();
  } else {
    $("admin-key").focus();
  }
}

wire();
