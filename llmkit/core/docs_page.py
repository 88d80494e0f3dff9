"""GET /docs: a self-contained page that renders the server's /openapi.json (no CDN, works offline)."""

from __future__ import annotations

from aiohttp import web

from llmkit.core.openapi import answer, openapi

# Plain HTML and a little JavaScript: every route, its summary, parameters, request body and answers.
DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>API docs</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h1{font-size:1.5rem} .op{border:1px solid #ddd;border-radius:6px;margin:.8rem 0;padding:.6rem .9rem}
.m{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}
.get{color:#0a6} .post{color:#06c} .delete{color:#c33} .put,.patch{color:#a60}
code,pre{background:#f5f5f5;border-radius:4px} pre{padding:.5rem;overflow:auto;font-size:.85rem}
.d{color:#555;margin:.3rem 0} table{border-collapse:collapse} td{padding:.1rem .6rem .1rem 0}
</style></head><body>
<h1 id="title">API docs</h1>
<p>Machine-readable: <a href="openapi.json">openapi.json</a></p>
<div id="ops">Loading openapi.json&hellip;</div>
<script>
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
fetch("openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("title").textContent = doc.info.title + " " + doc.info.version;
  document.title = doc.info.title;
  let html = "";
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      html += `<div class="op"><span class="m ${method}">${method}</span><code>${esc(path)}</code>`;
      html += ` &mdash; ${esc(op.summary || "")}`;
      if (op.description) html += `<p class="d">${esc(op.description)}</p>`;
      if (op.parameters) {
        html += "<table>" + op.parameters.map(p =>
          `<tr><td><code>${esc(p.name)}</code></td><td>${esc(p.in)}</td>` +
          `<td>${esc(p.description || "")}</td></tr>`).join("") + "</table>";
      }
      const body = op.requestBody && op.requestBody.content;
      if (body) {
        for (const [type, media] of Object.entries(body)) {
          const sample = media.example || media.schema;
          const text = esc(JSON.stringify(sample, null, 2));
          html += `<p class="d">Request body (${esc(type)}):</p><pre>${text}</pre>`;
        }
      }
      const answers = Object.entries(op.responses || {});
      html += "<table>" + answers.map(([code, r]) =>
        `<tr><td><b>${esc(code)}</b></td><td>${esc(r.description || "")}</td></tr>`).join("") + "</table>";
      html += "</div>";
    }
  }
  document.getElementById("ops").innerHTML = html;
}).catch(e => { document.getElementById("ops").textContent = "Could not load openapi.json: " + e; });
</script></body></html>
"""


@openapi(responses={"200": answer("an HTML page", media="text/html")})
async def handle_docs(request: web.Request) -> web.Response:
    """This page: the routes of /openapi.json, rendered for people."""
    return web.Response(text=DOCS_HTML, content_type="text/html")
