"""A headless Debian Chromium driven through Selenium, for tests of pages the project writes
(the HTML report, the feature browser). ``.ci/run`` and ``make test`` install ``chromium`` and
``chromium-driver`` when they are missing; without them the fixture fails naming the packages."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-file-access-from-files", "--window-size=1400,1000",
)


def _find(*names: str) -> str | None:
    for name in names:
        if path := shutil.which(name):
            return path
    return None


MISSING = "headless Chromium is missing: apt-get install chromium chromium-driver (make test does it)"


def chromium_driver(profile: Path):
    """A Selenium Chrome driver on headless Chromium with the profile directory ``profile``;
    ``driver.errors()`` returns the console messages of level SEVERE since the last call
    (JavaScript errors). Raises RuntimeError when Chromium or its driver is not installed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _find("chromium", "chromium-browser"), _find("chromedriver")
    if binary is None or driver_path is None:
        raise RuntimeError(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(60)
    driver.errors = lambda: [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    return driver


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """The session's headless Chromium (:func:`chromium_driver` with an empty profile)."""
    try:
        driver = chromium_driver(tmp_path_factory.mktemp("chromium-profile"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield driver
    finally:
        driver.quit()


def open_file(driver, path: Path) -> None:
    """Load a local file into the driver (``file://`` URL); the console log is cleared first, so
    ``driver.errors()`` then holds what this page logged."""
    driver.get_log("browser")
    driver.get(Path(path).resolve().as_uri())


def wait_for(driver, script: str, timeout: float = 30.0):
    """Run the JavaScript expression ``script`` (e.g. ``document.body.dataset.rendered === '#/'``)
    until it is truthy, and return its value; fails the test after ``timeout`` seconds with the
    page's JavaScript errors."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        wait = WebDriverWait(driver, timeout, poll_frequency=0.05)
        return wait.until(lambda d: d.execute_script(f"return {script};"))
    except TimeoutException:
        pytest.fail(f"waited {timeout:.0f} s for `{script}`; page errors: {driver.errors()}")


IMAGES_STATE = """
return Array.from(document.images).map(img => ({
  src: img.currentSrc.slice(0, 60), complete: img.complete, natural: img.naturalWidth,
  shown: img.getBoundingClientRect().width}));
"""
"""JavaScript: for every <img> of the page, whether it decoded, its natural and shown width (px)."""
