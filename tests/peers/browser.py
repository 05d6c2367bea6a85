"""Headless Chromium on a phone-sized screen, as a test peer for the consent site.

Debian's ``chromium`` driven through Debian's ``chromedriver`` (package
``chromium-driver``) with Selenium, both installed by ``make test``.

Why Selenium and chromedriver rather than Playwright: ``chromium-driver`` is
built from the same source package as ``chromium`` and depends on exactly its
version, so apt upgrades the two together and the driver always speaks the
browser's protocol; a security update of Debian's Chromium cannot break the
test.  Playwright drives Chromium over CDP and supports only the browser build
it pins (it would download that one; here nothing outside the package
registries can be fetched), so Debian's newer Chromium works with it only as
long as the protocol happens not to have moved.  Selenium speaks W3C
WebDriver to the driver, and with the driver's path given it never runs
Selenium Manager (which would try to download a driver).

The flags: ``--no-sandbox`` because the tests run as root; the
``--disable-background-networking`` family because this machine's network is
closed and Chromium otherwise keeps trying to reach Google's hosts; a fresh
``--user-data-dir`` so no profile, cookie or cache survives between tests.

The user agent is set explicitly to a phone's: the site holds decisions from
scanner-like clients (``HeadlessChrome`` among them) for review, and the
journey under test is a person's.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: An iPhone 15's screen in CSS pixels, its pixel ratio, and Safari's user agent.
PHONE_WIDTH, PHONE_HEIGHT, PHONE_SCALE = 390, 844, 2.0
PHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
ACCEPT_LANGUAGE = "ja-JP,ja,en-US,en"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions")
WAIT_SECONDS = 20.0


def browser_available() -> bool:
    return all(os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))


class Phone:
    """One headless Chromium, its screen emulating a phone; screenshots go to ``shots``."""

    def __init__(self, profile: Path, shots: Path) -> None:
        if not browser_available():
            pytest.fail("Chromium is not installed: apt-get install chromium chromium-driver "
                        "fonts-noto-cjk (make test-deps)")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": PHONE_WIDTH, "height": PHONE_HEIGHT,
                              "pixelRatio": PHONE_SCALE, "mobile": True, "touch": True},
            "userAgent": PHONE_UA})
        # A Japanese phone: its Accept-Language picks the page's language by default.
        options.add_experimental_option("prefs", {"intl.accept_languages": ACCEPT_LANGUAGE})
        # The console (CSP violations, script errors) is read back by console_errors().
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.log = profile.parent / "chromedriver.log"
        service = Service(CHROMEDRIVER, log_output=str(self.log))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.shots = shots
        self.shots.mkdir(parents=True, exist_ok=True)
        self._console: list[dict[str, Any]] = []

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.driver.quit()

    # Navigation -------------------------------------------------------------------

    def open(self, url: str) -> None:
        self.driver.get(url)

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    def find(self, css: str) -> Any:
        """The element matching ``css``, waiting for it to appear."""
        return WebDriverWait(self.driver, WAIT_SECONDS).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def tap(self, css: str) -> None:
        """Click ``css`` as a person would: scrolled into view and actually clickable."""
        element = self.find(css)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        WebDriverWait(self.driver, WAIT_SECONDS).until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, css))).click()

    def tap_and_wait(self, css: str, then: str) -> None:
        """Tap ``css`` (which navigates) and wait until the new page shows ``then``.

        A new document has a new ``performance.timeOrigin``.  (Selenium's
        ``staleness_of`` polls the old element, and while the page changes
        chromedriver sometimes answers that with a generic error instead of
        "stale element", which ends the wait.)
        """
        before = self._document()
        self.tap(css)
        WebDriverWait(self.driver, WAIT_SECONDS, ignored_exceptions=[WebDriverException]).until(
            lambda _: self._document() not in (before, None))
        self.find(then)

    def _document(self) -> float | None:
        origin = self.driver.execute_script(
            "return document.readyState === 'complete' ? performance.timeOrigin : null")
        return None if origin is None else float(origin)

    def type_into(self, css: str, text: str) -> None:
        element = self.find(css)
        element.clear()
        element.send_keys(text)

    def value(self, css: str) -> str:
        return str(self.find(css).get_attribute("value") or "")

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def attribute(self, css: str, name: str) -> str | None:
        value = self.find(css).get_attribute(name)
        return None if value is None else str(value)

    def is_visible(self, css: str) -> bool:
        return bool(self.find(css).is_displayed())

    def fits_width(self, css: str) -> bool:
        """Whether ``css`` lies within the phone's width (no sideways scrolling to reach it)."""
        rect = self.driver.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "return [r.left + window.scrollX, r.right + window.scrollX];", self.find(css))
        return bool(rect[0] >= 0 and rect[1] <= PHONE_WIDTH + 0.5)

    def page_width(self) -> int:
        """The document's width in CSS pixels (wider than the phone: the layout overflows)."""
        return int(self.driver.execute_script(
            "return document.documentElement.scrollWidth"))

    # Evidence ---------------------------------------------------------------------

    def screenshot(self, name: str) -> Path:
        """The whole page (not only the first screen), as a PNG named ``name``."""
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def screen(self, name: str) -> Path:
        """Only what the phone's screen shows now (844 CSS pixels tall), as a PNG."""
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def scroll_y(self) -> float:
        return float(self.driver.execute_script("return window.scrollY"))

    def top_of(self, css: str) -> float:
        """Where ``css`` starts, in CSS pixels from the top of the document."""
        return float(self.driver.execute_script(
            "return arguments[0].getBoundingClientRect().top + window.scrollY", self.find(css)))

    def console(self) -> list[dict[str, Any]]:
        """Every console entry since the browser started (chromedriver hands each out once)."""
        self._console += self.driver.get_log("browser")
        return list(self._console)

    def console_errors(self) -> list[str]:
        """Errors on the console (script errors, Content-Security-Policy violations).

        Chromium also logs every response with a 4xx or 5xx status as an error
        ("Failed to load resource"): those are left out, since a form answered
        with 400 is expected and the tests check statuses themselves.
        """
        return [entry["message"] for entry in self.console()
                if entry.get("level") == "SEVERE"
                and "Failed to load resource: the server responded with a status of"
                not in entry["message"]]


@contextlib.contextmanager
def phone(workdir: Path, shots: Path) -> Iterator[Phone]:
    """A ``Phone`` with its profile under ``workdir``, quit on the way out."""
    browser = Phone(workdir / "chromium-profile", shots)
    try:
        yield browser
    finally:
        browser.quit()
