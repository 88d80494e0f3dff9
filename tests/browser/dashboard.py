"""The admin dashboard as a user drives it in Chromium: sign in, open tabs, click, read; and the checks
every browser test makes (no console error, no request to another host)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("LLMKIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LLMKIT_CHROMEDRIVER", "/usr/bin/chromedriver")
TABS = ("overview", "analytics", "webhooks", "keys", "tenants", "jobs", "metrics")
WAIT_S = 30.0


def new_driver(width: int = 1280, height: int = 800) -> WebDriver:
    """Headless Chromium through Debian's chromedriver (no Selenium Manager: it would download one)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # as root Chromium refuses to start with its sandbox
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


class Dashboard:
    """One browser on the dashboard of one server."""

    def __init__(self, driver: WebDriver, shots: Path) -> None:
        self.driver = driver
        self.shots = shots
        self.url = ""
        self.hosts: set[str] = set()
        self.urls: list[str] = []
        self.console: list[dict[str, Any]] = []
        # Console errors a test provoked on purpose (an API error it checks is shown): substrings.
        self.expected_errors: list[str] = []

    # -- navigation ----------------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Load /admin of the server at `url`."""
        self.url = url
        self.driver.get(f"{url}/admin")

    def sign_in(self, key: str) -> None:
        """Type the admin key into the form and wait for the Overview's first figures."""
        field = self.by_id("admin-key")
        field.clear()
        field.send_keys(key)
        self.by_css("#sign-in-form button[type=submit]").click()
        self.wait(lambda: self.by_id("panel-overview").get_attribute("data-loaded") == "true")

    def tab(self, name: str) -> WebElement:
        """Open a tab and wait for its first data; its panel."""
        self.by_id(f"tab-{name}").click()
        panel = self.by_id(f"panel-{name}")
        self.wait(lambda: panel.is_displayed() and panel.get_attribute("data-loaded") == "true")
        return panel

    def overflow(self) -> tuple[int, int]:
        """The page's width and the window's: the first larger means the page scrolls sideways."""
        width = self.driver.execute_script("return document.documentElement.scrollWidth")
        inner = self.driver.execute_script("return window.innerWidth")
        return int(width), int(inner)

    def shot(self, name: str) -> Path:
        """A screenshot of the window, in the test's folder."""
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    # -- finding -------------------------------------------------------------------------------------

    def by_id(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def by_css(self, selector: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all_css(self, selector: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def rows(self, table_id: str) -> list[list[str]]:
        """The text of each cell of a table's body, read in one go (the page re-renders tables whole)."""
        script = (
            "return [...document.querySelectorAll(arguments[0])]"
            ".map(r => [...r.cells].map(c => c.innerText.trim()))"
        )
        rows: list[list[str]] = self.driver.execute_script(script, f"#{table_id} tbody tr")
        return rows

    def wait(self, condition: Callable[[], Any], timeout: float = WAIT_S) -> Any:
        """`condition()` once it is truthy; a timeout names the page's error banner if one shows."""

        def probe(_: WebDriver) -> Any:
            return condition()

        try:
            return WebDriverWait(
                self.driver, timeout, ignored_exceptions=[StaleElementReferenceException]
            ).until(probe)
        except Exception as exc:
            banner = self.all_css("#alert-text")
            said = banner[0].get_attribute("textContent") if banner else ""
            raise AssertionError(f"condition not met within {timeout}s; the page's error: {said!r}") from exc

    def wait_row(self, table_id: str, *needles: str) -> list[str]:
        """The first row of a table holding every needle, once there is one."""

        def found() -> list[str] | None:
            for row in self.rows(table_id):
                text = " | ".join(row)
                if all(n in text for n in needles):
                    return row
            return None

        row: list[str] = self.wait(found)
        return row

    def confirm(self) -> None:
        """Answer the page's "are you sure" dialog with Confirm."""
        self.wait(lambda: self.by_id("confirm").is_displayed())
        self.by_id("confirm-ok").click()
        self.wait(lambda: not self.by_id("confirm").is_displayed())

    def error_text(self) -> str:
        """The page's error banner once it shows."""
        self.wait(lambda: self.by_id("alert").is_displayed())
        return self.by_id("alert-text").text

    # -- checks --------------------------------------------------------------------------------------

    def drain_logs(self) -> None:
        """Read and record what the browser logged so far (each read empties the browser's buffer)."""
        self.console.extend(self.driver.get_log("browser"))
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                url = message["params"]["request"]["url"]
                self.urls.append(url)
                parts = urlsplit(url)
                if parts.scheme in ("http", "https", "ws", "wss"):
                    self.hosts.add(parts.netloc)

    def console_errors(self) -> list[str]:
        """Console errors but those a test expected."""
        self.drain_logs()
        return [
            e["message"]
            for e in self.console
            if e["level"] == "SEVERE" and not any(x in e["message"] for x in self.expected_errors)
        ]

    def check_logs(self) -> None:
        """No unexpected console error; every request went to the server under test."""
        errors = self.console_errors()
        assert errors == [], f"console errors: {errors}"
        if self.url:
            assert self.hosts <= {urlsplit(self.url).netloc}, f"requests to other hosts: {self.hosts}"

    def reset(self) -> None:
        """Leave the browser as the next test expects it: 1280x800, blank, logs drained."""
        if self.url:
            self.driver.execute_script("window.sessionStorage.clear()")  # signed out for the next test
        self.driver.set_window_size(1280, 800)
        self.driver.get("about:blank")
        self.drain_logs()


def cells(rows: Iterable[list[str]], column: int) -> list[str]:
    """One column of a table's rows."""
    return [row[column] for row in rows if len(row) > column]
