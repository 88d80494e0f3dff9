"""GET /admin and its assets (no credential, strict security headers, shipped in the package), the page's
controls, what its tenant form and Rotate secret rely on the API for, and GET /api/admin/tenants/{id}/usage
(a tenant's quotas with what it used of them now)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from llmkit.platform.admin.page import ASSETS, INDEX
from llmkit.platform.quota_types import Quotas
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


def test_the_page_ships_tenant_edit_and_rotate_secret() -> None:
    static = resources.files("llmkit.platform.admin").joinpath("static")
    html = static.joinpath(INDEX).read_text()
    # Every input has a label; the edit form has one input per quota the API takes, and a place for its error.
    inputs = re.findall(r'<input id="([^"]+)"', html)
    labelled = set(re.findall(r'<label for="([^"]+)"', html))
    assert inputs and set(inputs) <= labelled, set(inputs) - labelled
    edit = html[html.index('<form id="tenant-edit"') : html.index('<form id="tenant-form"')]
    fields = re.findall(r'<input id="tenant-edit-([a-z_]+)"', edit)
    assert fields == ["name", *Quotas().to_dict()]
    assert (
        'id="tenant-edit-error"' in edit
        and 'role="alert"' in edit
        and '<button type="submit">Save</button>' in edit
    )
    assert 'id="webhook-secret-note"' in html  # the rotation says until when the old secret signs
    manage = static.joinpath("manage.js").read_text()
    assert 'api("PATCH", `/api/admin/tenants/${encodeURIComponent(id)}`' in manage
    assert 'api("POST", `/api/admin/webhooks/${encodeURIComponent(hook.id)}/rotate`)' in manage
    assert (
        'button("Rotate secret", () => rotateWebhook(h)' in manage
        and 'button("Edit", () => editTenant(t)' in manage
    )


async def test_what_the_tenant_form_and_rotation_rely_on(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    tenant_id = await tenant(client, "acme", rpm=100, daily_tokens=1000)
    await tenant(client, "taken")
    path = f"/api/admin/tenants/{tenant_id}"

    async def patch(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        got = await client.patch(path, json=body, headers=AS_ADMIN)
        return got.status, await got.json()

    # The form sends its name and every quota; an emptied one is null, which clears it (no limit).
    quotas = {**Quotas().to_dict(), "rpm": 250}
    status, body = await patch({"name": "acme", "quotas": quotas})
    assert status == 200 and body["quotas"] == quotas and body["name"] == "acme"
    # Errors the form shows next to itself name the field (param) and, for a quota, the quota in the message.
    for sent, field, said in (
        ({"name": "   ", "quotas": quotas}, "name", "name: must be a non-empty string"),
        ({"name": "acme", "quotas": {**quotas, "tpm": 0}}, "quotas", "quota tpm "),
    ):
        status, body = await patch(sent)
        error = body["error"]
        assert (status, error["param"]) == (422, field) and said in error["message"], body
    status, body = await patch({"name": "taken", "quotas": quotas})
    assert (status, body["error"]["code"]) == (409, "tenant_exists")
    # Rotate secret posts no body; the answer has the new secret and until when the old one signs.
    made = await client.post(
        "/api/admin/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["job.failed"]},
        headers=AS_ADMIN,
    )
    assert made.status == 201, await made.text()
    hook = await made.json()
    rotated = await client.post(f"/api/admin/webhooks/{hook['id']}/rotate", headers=AS_ADMIN)
    assert rotated.status == 200, await rotated.text()
    view = await rotated.json()
    assert view["secret"].startswith("whsec_") and view["secret"] != hook["secret"]
    assert view["previous_secret_expires_at"].endswith("Z")


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
