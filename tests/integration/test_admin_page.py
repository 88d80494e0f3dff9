"""GET /admin and its assets (no credential, strict security headers, shipped in the package) and
GET /api/admin/tenants/{id}/usage (a tenant's quotas with what it used of them now)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from llmkit.platform.admin.page import ASSETS, INDEX
from tests.integration.test_gateway_platform import AS_ADMIN, MakeClient, bearer, chat, key, start, tenant


def test_the_page_files_are_in_the_installed_package() -> None:
    static = resources.files("llmkit.platform.admin").joinpath("static")
    for name in (INDEX, *ASSETS):
        assert static.joinpath(name).is_file(), name
    html = static.joinpath(INDEX).read_text()
    # Everything it loads is its own: no CDN, no inline script or style for the CSP to refuse.
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == [
        "data:,",
        "/admin/assets/app.css",
        "/admin/assets/app.js",
        "#main",
    ]
    assert "<script>" not in html and "style=" not in html


def test_the_wheel_build_takes_the_static_files() -> None:
    # hatch's wheel target packages llmkit/ whole: the static files are not excluded anywhere.
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'packages = ["llmkit"]' in pyproject and "exclude" not in pyproject.split("[tool.pytest")[0]


async def test_the_page_needs_no_key_and_sends_strict_headers(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path, require_api_key=True)
    page = await client.get("/admin")
    assert page.status == 200 and page.content_type == "text/html"
    headers = page.headers
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    body = await page.text()
    assert 'id="sign-in-form"' in body and "bootstrap-admin-key" not in body
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = await client.get(f"/admin/assets/{name}")
        assert asset.status == 200 and asset.content_type == kind
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
    missing = await client.get("/admin/assets/..%2Fpage.py")
    assert missing.status == 404 and "app.js" in (await missing.json())["error"]["message"]
    # The data is not public: the API the page calls asks for the key.
    assert (await client.get("/api/admin/tenants")).status == 401


async def test_tenant_usage_reads_the_quotas_without_counting(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    tenant_id = await tenant(client, "acme", rpm=50, max_concurrent=4, daily_tokens=10_000)
    text = await key(client, tenant_id)
    for i in range(3):
        assert (
            await client.post("/api/chat-optimized", json=chat(f"q{i}"), headers=bearer(text))
        ).status == 200
    for _ in range(2):  # reading it twice changes nothing
        got = await client.get(f"/api/admin/tenants/{tenant_id}/usage", headers=AS_ADMIN)
        assert got.status == 200, await got.text()
        body = await got.json()
    rows = {row["quota"]: row for row in body["quotas"]}
    assert body["tenant_id"] == tenant_id and list(rows) == ["rpm", "daily_tokens", "max_concurrent"]
    # 3 requests this minute (fewer if the minute rolled over): the two reads counted nothing.
    rpm = rows["rpm"]
    assert rpm["limit"] == 50 and rpm["used"] <= 3 and rpm["used"] + rpm["remaining"] == 50
    assert rows["rpm"]["resets_at"].endswith("Z") and rows["max_concurrent"]["resets_at"] is None
    assert rows["daily_tokens"]["used"] > 0 and rows["max_concurrent"]["used"] == 0
    plain = await tenant(client, "plain")
    assert (await (await client.get(f"/api/admin/tenants/{plain}/usage", headers=AS_ADMIN)).json())[
        "quotas"
    ] == []
    unknown = await client.get("/api/admin/tenants/t_nope/usage", headers=AS_ADMIN)
    assert unknown.status == 404 and "GET /api/admin/tenants" in (await unknown.json())["error"]["message"]
    assert (await client.get(f"/api/admin/tenants/{tenant_id}/usage", headers=bearer(text))).status == 403
