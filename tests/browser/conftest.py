"""A headless Chromium (Debian's chromium + chromium-driver) shared by the browser tests; each test's
console errors and requests to other hosts fail it. A missing browser fails the tests, never skips them
(`make test` installs it), as every other binary the suite starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser.dashboard import CHROMEDRIVER, CHROMIUM, Dashboard, new_driver
from tests.servers import find_binary


@pytest.fixture(scope="session")
def driver() -> Iterator[WebDriver]:
    """One headless Chromium for the session, at 1280x800."""
    find_binary(CHROMIUM)
    find_binary(CHROMEDRIVER)
    chrome = new_driver()
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where a test writes its screenshots (printed, so a failing run says where to look)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    print(f"screenshots in {folder}")
    return folder


@pytest.fixture
def dashboard(driver: WebDriver, shots: Path) -> Iterator[Dashboard]:
    """The driver as a dashboard user; pointed at a server with `open(url)`; its logs checked at the end."""
    page = Dashboard(driver, shots)
    page.drain_logs()
    yield page
    page.check_logs()
    page.reset()
