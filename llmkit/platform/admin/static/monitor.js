// The tabs that watch: Overview (live health and counters), Analytics (queries over days), Metrics.

import { api, query } from "./api.js";
import { barChart, lineChart } from "./charts.js";
import { $, el, fill, loaded, percent, tile } from "./dom.js";

let previous = null;

// Requests/s is a difference between two readings: signing out forgets the last one.
export function resetOverview() {
  previous = null;
}

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

export async function loadOverview() {
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

export async function tenantOptions(select, first) {
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
  const latency = (key) => ({
    key, label: key, points: buckets.map((b) => ({ x: b.start, y: b[`latency_${key}_ms`] })),
  });
  lineChart($("chart-latency"), [latency("p50"), latency("p95")], "ms", span);
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

export async function loadAnalytics() {
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

// -- Metrics -------------------------------------------------------------------------------------------

const SERIES = [
  ["llmkit_http_requests_total", "requests by route, method and status (llmkit's own names)"],
  ["http_requests_total", "the same requests under the conventional name (alert rules use it)"],
  ["http_request_duration_seconds", "request latency histogram: histogram_quantile(0.95, rate(..._bucket[5m]))"],
  ["search_duration_seconds", "document search latency histogram, by search type"],
];

export function loadMetrics() {
  const url = `${location.origin}/metrics`;
  $("scrape-url").textContent = url;
  $("scrape-config").textContent =
    `scrape_configs:\n  - job_name: llmkit-gateway\n    metrics_path: /metrics\n    static_configs:\n      - targets: ["${location.host}"]`;
  fill($("series-table").tBodies[0], SERIES.map(([name, what]) => [el("code", {}, name), what]), "", 2);
  loaded("metrics");
}

