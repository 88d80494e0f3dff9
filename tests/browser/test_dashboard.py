"""The admin dashboard in a real browser against a real gateway (with a simulator upstream, a local webhook
receiver and an embeddings upstream that fails until told not to): what an admin does, tab by tab."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from llmkit.platform.webhooks.signing import SIGNATURE_HEADER, verify
from tests.browser.dashboard import TABS, Dashboard, cells
from tests.browser.local_servers import LocalServer
from tests.serve_process import ServerProcess

ADMIN = "dashboard-admin-key-0123456789abcdef"
STATUS_422 = "the server responded with a status of 422"


@dataclass
class Stack:
    """The gateway under test and the local servers behind it."""

    url: str
    local: LocalServer
    gateway: ServerProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboard")
    quiet = {"LLMKIT_SERVER_ACCESS_LOG": "false"}
    with ServerProcess(tmp, "--port", "0", command="simulate", env=quiet) as sim:
        local = LocalServer(simulator=sim.wait_listening()).start()
        env = {
            # Access log on: the test reads it for the admin key (never there).
            "LLMKIT_SERVER_ACCESS_LOG": "true",
            "LLMKIT_GATEWAY_ADMIN_KEY": ADMIN,
            "LLMKIT_GATEWAY_REQUIRE_API_KEY": "true",
            "LLMKIT_GATEWAY_UPSTREAMS": sim.url,
            "LLMKIT_GATEWAY_EMBEDDINGS_URL": f"{local.url}/v1",
            "LLMKIT_GATEWAY_EMBEDDINGS_DIMENSIONS": "64",
            "LLMKIT_GATEWAY_JOBS_BACKOFF_S": "0.01",
            "LLMKIT_LIMITER_URL": "memory://",
        }
        try:
            with ServerProcess(tmp, "--port", "0", command="gateway", env=env) as gateway:
                yield Stack(gateway.wait_listening(), local, gateway)
        finally:
            local.close()


def call(url: str, path: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """A JSON request as a client program makes it (not through the page)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url + path, data=data, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as got:
            return got.status, json.loads(got.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def hooks_of(url: str) -> dict[str, dict[str, Any]]:
    """The webhooks as the JSON API lists them, by id."""
    status, listed = call(url, "/api/admin/webhooks", ADMIN)
    assert status == 200, listed
    return {h["id"]: h for h in listed["webhooks"]}


def create_tenant(page: Dashboard, name: str, **quotas: int) -> list[str]:
    page.tab("tenants")
    page.by_id("tenant-name").send_keys(name)
    for quota, limit in quotas.items():
        page.by_id(f"tenant-{quota}").send_keys(str(limit))
    page.by_css("#tenant-form button[type=submit]").click()
    return page.wait_row("tenant-table", name)


def create_webhook(url: str, receiver: str) -> dict[str, Any]:
    status, made = call(url, "/api/admin/webhooks", ADMIN, {"url": receiver, "events": ["job.failed"]})
    assert status == 201, made
    return made


def used(row: list[str], quota: str) -> int:
    """What a tenant row says it used of a quota ("daily_tokens: 262 / 1000000")."""
    line = next(line for line in row[2].splitlines() if line.startswith(f"{quota}: "))
    return int(line.split(": ")[1].split(" / ")[0])


def test_an_admin_runs_the_gateway_from_the_dashboard(dashboard: Dashboard, stack: Stack) -> None:
    page, local = dashboard, stack.local
    page.open(stack.url)
    page.sign_in(ADMIN)
    assert page.by_id("tile-status").text.endswith("healthy")
    page.wait(lambda: "closed" in " ".join(cells(page.rows("upstream-table"), 1)))
    assert ADMIN not in page.driver.page_source
    page.shot("overview")

    # A tenant with a quota, and a key of it: shown once, with a copy button.
    tenant_row = create_tenant(page, "acme", rpm=100, daily_tokens=1_000_000)
    tenant_id = tenant_row[0]
    assert "rpm: 0 / 100" in tenant_row[2] and used(tenant_row, "daily_tokens") == 0
    page.tab("keys")
    Select(page.by_id("key-tenant")).select_by_value(tenant_id)
    page.by_id("key-name").send_keys("browser key")
    page.by_css("#key-form button[type=submit]").click()
    page.wait(lambda: page.by_id("key-once").is_displayed())
    key = page.by_id("key-once-text").text
    assert key.startswith("llk_")
    page.by_id("key-once-copy").click()
    page.wait(lambda: page.by_id("key-once-copy").text != "Copy")
    key_row = page.wait_row("key-table", "browser key", tenant_id)
    assert key.startswith(key_row[0]) and "active" in key_row[4] and key not in " ".join(key_row)
    page.shot("keys")

    # A request made with that key shows up in Analytics (and in the tenant's quota use).
    status, _ = call(
        stack.url, "/api/chat-optimized", key, {"messages": [{"role": "user", "content": "how do cats purr"}]}
    )
    assert status == 200
    # Overview is live: a second request shows up in it without a click.
    page.tab("overview")
    page.wait(lambda: page.by_css("#tile-requests strong").text == "1")
    again = {"messages": [{"role": "user", "content": "and how do dogs bark"}]}
    assert call(stack.url, "/api/chat-optimized", key, again)[0] == 200
    page.wait(lambda: page.by_css("#tile-requests strong").text == "2")
    page.tab("analytics")
    Select(page.by_id("analytics-tenant")).select_by_value(tenant_id)

    def popular() -> bool:
        page.by_css("#analytics-form button[type=submit]").click()
        return ["how do cats purr", "1"] in page.rows("popular-table")

    page.wait(popular)
    page.wait(lambda: page.by_css("#tile-analytics-requests strong").text == "2")
    assert page.all_css("#chart-requests svg rect.bar")
    # Latency: each interval's p50 and p95 (a dot each, in one or two intervals), named in a legend; a
    # dot's tooltip tells its value.
    latency = "#chart-latency svg"
    assert [g.get_attribute("textContent") for g in page.all_css(f"{latency} g.legend")] == ["p50", "p95"]
    for series in ("p50", "p95"):
        dots = page.all_css(f"{latency} circle.dot.series-{series}")
        assert 1 <= len(dots) <= 2, series
        for dot in dots:
            tip = dot.find_element(By.TAG_NAME, "title").get_attribute("textContent")
            assert f": {series} " in tip and tip.endswith(" ms"), tip
    page.shot("analytics")
    page.tab("tenants")
    # Tokens per day, not requests per minute: a minute may roll over between the request and the check.
    page.wait(lambda: used(page.wait_row("tenant-table", tenant_id), "daily_tokens") > 0)
    page.shot("tenants")

    # Edit the tenant: the form holds its current values; the API's validation error shows next to the form.
    page.by_css(f"#tenant-table button[data-action=edit][data-id='{tenant_id}']").click()
    page.wait(lambda: page.by_id("tenant-edit").is_displayed())
    assert page.by_id("tenant-edit-id").text == tenant_id
    name = page.driver.switch_to.active_element  # the keyboard is in the form
    assert name.get_attribute("id") == "tenant-edit-name" and name.get_attribute("value") == "acme"
    prefilled = {
        q: page.by_id(f"tenant-edit-{q}").get_attribute("value") for q in ("rpm", "tpm", "daily_tokens")
    }
    assert prefilled == {"rpm": "100", "tpm": "", "daily_tokens": "1000000"}
    # Spaces pass the browser's `required`, not the API: its 422 names the field.
    page.expected_errors = [f"/api/admin/tenants/{tenant_id} - Failed to load resource: {STATUS_422}"]
    name.clear()
    name.send_keys("   ", Keys.ENTER)
    page.wait(lambda: page.by_id("tenant-edit-error").is_displayed())
    said = page.by_id("tenant-edit-error").text
    assert "422" in said and "name: must be a non-empty string" in said, said
    assert name.get_attribute("aria-invalid") == "true" and not page.by_id("alert").is_displayed()
    width, inner = page.overflow()
    assert width <= inner, f"the tenant form is {width} px wide in a {inner} px window"
    page.shot("tenants-edit")
    # By keyboard: the name back, rpm 250, daily tokens cleared (no limit), Enter saves.
    name.clear()
    name.send_keys("acme")
    rpm = page.by_id("tenant-edit-rpm")
    rpm.clear()
    rpm.send_keys("250")
    page.by_id("tenant-edit-daily_tokens").clear()
    rpm.send_keys(Keys.ENTER)
    page.wait(lambda: not page.by_id("tenant-edit").is_displayed())
    row = page.wait_row("tenant-table", tenant_id, "rpm: ", " / 250")
    assert "daily_tokens" not in row[2]
    status, stored = call(stack.url, f"/api/admin/tenants/{tenant_id}", ADMIN)
    assert status == 200 and stored["name"] == "acme"
    assert (stored["quotas"]["rpm"], stored["quotas"]["daily_tokens"]) == (250, None)
    assert page.driver.switch_to.active_element.get_attribute("data-id") == tenant_id  # back on its Edit

    # A webhook: its secret shown once signs the test event the receiver gets.
    page.tab("webhooks")
    page.by_id("webhook-url").send_keys(f"{local.url}/hook")
    page.by_css("#webhook-form button[type=submit]").click()
    page.wait(lambda: page.by_id("webhook-secret").is_displayed())
    local.secret = page.by_id("webhook-secret-text").text
    hook_id = page.by_id("webhook-secret-id").text
    page.wait_row("webhook-table", hook_id, "job.failed, document.indexed", "active")
    page.by_css(f"#webhook-table button[data-action=test][data-id='{hook_id}']").click()
    delivered = page.wait_row("delivery-table", "webhook.test", "delivered")
    assert delivered[4] == "200"
    assert [verified for _, _, verified in local.hooks] == [True]
    assert json.loads(local.hooks[0][1])["data"]["webhook_id"] == hook_id
    page.shot("webhooks")

    # An indexing job fails while the embeddings upstream answers 500; Retry once it is back runs it again.
    status, made = call(
        stack.url, "/api/documents", key, {"id": "d1", "title": "Cats", "content": "cats purr"}
    )
    assert status == 202, made
    page.tab("jobs")
    Select(page.by_id("job-state")).select_by_value("failed")

    def failed_row() -> list[str] | None:
        page.by_css("#job-form button[type=submit]").click()
        return next((r for r in page.rows("job-table") if "failed" in r[3:4]), None)

    row = page.wait(failed_row)
    job_id = row[0]
    assert "500" in row[5]
    local.down = False
    page.by_css(f"#job-table button[data-action=retry][data-id='{job_id}']").click()
    Select(page.by_id("job-state")).select_by_value("completed")

    def completed() -> bool:
        page.by_css("#job-form button[type=submit]").click()
        return job_id in cells(page.rows("job-table"), 0)

    page.wait(completed)
    page.shot("jobs")
    # The webhook took job.failed too: the receiver got it, signed with the secret the page showed.
    page.wait(lambda: "job.failed" in [json.loads(body)["type"] for _, body, _ in local.hooks])
    assert all(verified for _, _, verified in local.hooks)

    # Rotating the secret asks first (Cancel changes nothing); the new one is shown once and signs what
    # follows.
    page.tab("webhooks")
    old = local.secret
    rotate = f"#webhook-table button[data-action=rotate][data-id='{hook_id}']"
    page.by_css(rotate).click()
    page.wait(lambda: page.by_id("confirm").is_displayed())
    asked = page.by_id("confirm-text").text
    assert hook_id in asked and "grace period (gateway.webhooks_rotation_grace_s)" in asked
    page.by_id("confirm-cancel").click()
    assert hooks_of(stack.url)[hook_id]["previous_secret_expires_at"] is None
    page.by_css(rotate).click()
    page.confirm()
    page.wait(lambda: page.by_id("webhook-secret-text").text not in ("", old))
    new = page.by_id("webhook-secret-text").text
    assert new.startswith("whsec_") and page.by_id("webhook-secret-id").text == hook_id
    assert page.by_id("webhook-secret").text.startswith(f"New signing secret of {hook_id}, shown this once")
    until = hooks_of(stack.url)[hook_id]["previous_secret_expires_at"]
    assert (
        until is not None and until.replace("T", " ").split(".")[0] in page.by_id("webhook-secret-note").text
    )
    copy = page.driver.switch_to.active_element
    assert copy.get_attribute("id") == "webhook-secret-copy"
    copy.click()
    page.wait(lambda: page.by_id("webhook-secret-copy").text != "Copy")
    assert new not in json.dumps(hooks_of(stack.url)) and new not in json.dumps(page.rows("webhook-table"))
    page.shot("webhooks-rotated")
    local.secret = new
    seen = len(local.hooks)
    page.by_css(f"#webhook-table button[data-action=test][data-id='{hook_id}']").click()

    def tested() -> tuple[dict[str, str], bytes, bool] | None:
        later = [h for h in local.hooks[seen:] if json.loads(h[1])["type"] == "webhook.test"]
        return later[0] if later else None

    headers, body, verified = page.wait(tested)
    assert verified  # the receiver checked it with the new secret
    lowered = {k.lower(): v for k, v in headers.items()}
    # In the grace period the old secret signs too: two signatures, the new one's and the old one's.
    assert len(lowered[SIGNATURE_HEADER].split()) == 2
    verify(old, lowered, body)

    # Destructive actions ask first: Cancel keeps the webhook, Confirm deletes it.
    page.tab("webhooks")
    delete = f"#webhook-table button[data-action=delete][data-id='{hook_id}']"
    page.by_css(delete).click()
    page.wait(lambda: page.by_id("confirm").is_displayed())
    page.by_id("confirm-cancel").click()
    page.wait_row("webhook-table", hook_id)
    page.by_css(delete).click()
    page.confirm()
    page.wait(lambda: hook_id not in " ".join(cells(page.rows("webhook-table"), 0)))

    # Revoking the key: the dashboard shows it revoked and the gateway refuses it.
    page.tab("keys")
    page.by_css("#key-table button[data-action=revoke]").click()
    page.confirm()
    page.wait_row("key-table", "browser key", "revoked")
    again = {"messages": [{"role": "user", "content": "again"}]}
    status, refused = call(stack.url, "/api/chat-optimized", key, again)
    assert (status, refused["error"]["code"]) == (403, "key_revoked")

    metrics = page.tab("metrics")
    assert page.by_id("scrape-url").text == f"{stack.url}/metrics"
    assert "deploy/grafana/llmkit.json" in metrics.text and "http_request_duration_seconds" in metrics.text
    page.shot("metrics")
    assert sorted(p.stem for p in page.shots.iterdir()) == sorted([*TABS, "tenants-edit", "webhooks-rotated"])
    for name in TABS:  # at 1280x800 no tab scrolls sideways either
        page.tab(name)
        width, inner = page.overflow()
        assert width <= inner, f"{name} is {width} px wide in a {inner} px window"
    page.drain_logs()
    assert ADMIN not in page.driver.page_source and ADMIN not in " ".join(page.urls)
    assert any("/api/admin/" in u for u in page.urls)  # the performance log did see the API calls
    # The key never reached the gateway's log either (its access log lines carry paths only).
    assert ADMIN not in stack.gateway.stderr


def test_what_the_api_returns_is_shown_as_text(dashboard: Dashboard, stack: Stack) -> None:
    page = dashboard
    page.open(stack.url)
    page.sign_in(ADMIN)
    name = "<img src=x onerror=alert(1)>"
    row = create_tenant(page, name)
    assert row[1] == name
    assert page.all_css("#tenant-table img") == [] and page.all_css("img") == []
    page.shot("xss")
    page.tab("analytics")
    options = [o.text for o in page.all_css("#analytics-tenant option")]
    assert any(o.startswith(name) for o in options)
    with pytest.raises(NoAlertPresentException):
        page.driver.switch_to.alert.text  # noqa: B018


def test_api_errors_are_shown(dashboard: Dashboard, stack: Stack) -> None:
    page = dashboard
    page.open(stack.url)
    page.expected_errors = ["/api/admin/tenants - Failed to load resource"]
    field = page.by_id("admin-key")
    field.send_keys("not-the-admin-key")
    field.send_keys(Keys.ENTER)
    said = page.error_text()
    assert "401" in said and "/api/admin/tenants" in said
    assert page.by_id("sign-in").is_displayed() and not page.by_id("app").is_displayed()
    page.sign_in(ADMIN)
    assert not page.by_id("alert").is_displayed()
    create_tenant(page, "twice")
    page.by_id("tenant-name").send_keys("twice")
    page.by_css("#tenant-form button[type=submit]").click()
    said = page.error_text()
    assert "409" in said and "a tenant with that name exists" in said
    page.by_id("alert-close").click()
    assert not page.by_id("alert").is_displayed()


def test_a_tenants_admin_key_signs_in_to_its_tenant(dashboard: Dashboard, stack: Stack) -> None:
    page = dashboard
    status, made = call(stack.url, "/api/admin/tenants", ADMIN, {"name": "own tenant", "quotas": {}})
    assert status == 201, made
    body = {"name": "tenant admin", "tenant_id": made["id"], "scopes": ["admin"]}
    status, issued = call(stack.url, "/api/admin/api-keys", ADMIN, body)
    assert status == 201, issued
    page.open(stack.url)
    # The server's stats are the platform admin's: the 403 is expected, the page says why.
    page.expected_errors = ["/api/admin/stats - Failed to load resource"]
    page.sign_in(issued["key"])
    assert "administers one tenant" in page.by_id("overview-updated").text
    assert not page.by_id("alert").is_displayed()
    page.tab("tenants")
    assert cells(page.rows("tenant-table"), 0) == [made["id"]]


def test_the_keyboard_reaches_every_tab(dashboard: Dashboard, stack: Stack) -> None:
    page = dashboard
    page.open(stack.url)
    field = page.driver.switch_to.active_element
    assert field.get_attribute("id") == "admin-key"  # focused on load
    field.send_keys(ADMIN, Keys.ENTER)
    page.wait(lambda: page.by_id("panel-overview").get_attribute("data-loaded") == "true")
    page.by_id("tab-overview").send_keys(Keys.ARROW_RIGHT)
    for name in TABS[1:]:
        active = page.driver.switch_to.active_element
        assert active.get_attribute("id") == f"tab-{name}" and active.get_attribute("aria-selected") == "true"
        page.wait(lambda n=name: page.by_id(f"panel-{n}").get_attribute("data-loaded") == "true")
        active.send_keys(Keys.ARROW_RIGHT)
    assert page.driver.switch_to.active_element.get_attribute("id") == "tab-overview"
    page.driver.switch_to.active_element.send_keys(Keys.END)
    assert page.by_id("panel-metrics").is_displayed()
    # Tab from the tab list goes into the open panel's content.
    page.driver.switch_to.active_element.send_keys(Keys.TAB)
    assert page.driver.switch_to.active_element.get_attribute("id") == "panel-metrics"


def test_every_tab_fits_a_phone(dashboard: Dashboard, stack: Stack) -> None:
    page = dashboard
    status, made = call(
        stack.url, "/api/admin/tenants", ADMIN, {"name": "phone tenant", "quotas": {"rpm": 5}}
    )
    assert status == 201, made
    hook = create_webhook(stack.url, f"{stack.local.url}/hook")
    page.driver.set_window_size(390, 844)
    page.open(stack.url)
    page.sign_in(ADMIN)
    for name in TABS:
        page.tab(name)
        width, inner = page.overflow()
        assert width <= inner, f"{name} is {width} px wide on a {inner} px screen"
        tabs = page.by_id(f"tab-{name}")
        assert tabs.is_displayed()
        page.shot(f"phone-{name}")
    assert page.driver.find_element(By.ID, "sign-out").is_displayed()

    # The two forms that open from a row fit too; Escape closes the tenant's, back on its Edit button.
    page.tab("tenants")
    edit = f"#tenant-table button[data-action=edit][data-id='{made['id']}']"
    page.by_css(edit).click()
    page.wait(lambda: page.by_id("tenant-edit").is_displayed())
    assert page.by_id("tenant-edit-rpm").get_attribute("value") == "5"
    width, inner = page.overflow()
    assert width <= inner, f"the tenant form is {width} px wide on a {inner} px screen"
    page.shot("phone-tenants-edit")
    page.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    page.wait(lambda: not page.by_id("tenant-edit").is_displayed())
    assert page.driver.switch_to.active_element.get_attribute("data-id") == made["id"]
    page.tab("webhooks")
    page.by_css(f"#webhook-table button[data-action=rotate][data-id='{hook['id']}']").click()
    page.confirm()
    page.wait(lambda: page.by_id("webhook-secret").is_displayed())
    assert page.by_id("webhook-secret-id").text == hook["id"]
    width, inner = page.overflow()
    assert width <= inner, f"the new secret is {width} px wide on a {inner} px screen"
    page.shot("phone-webhooks-rotated")


@pytest.fixture(autouse=True)
def _screenshots_where(shots: Path) -> None:
    # pytest shows captured stdout of a failing test: the screenshot folder is in it.
    print(f"screenshots: {shots}")
