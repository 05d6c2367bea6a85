""""Get started" in a real Chromium (issue 14, item 6): from the login to a verified test
rejection, and its link opened.

The site runs in this process on a thread of its own (``SiteThread``: the app of
``career-relay site``, served by aiohttp on loopback) so that its DNS resolver can be
the fake at the boundary (``admin_start.Start.resolver``) holding the company's DKIM
record: no real DNS.  The gateway is the real one on loopback (``GatewayThread``), its
upstream the capturing ``sink``.  Chromium is Debian's, on a PC's screen
(``tests.test_admin_browser.Desk``).  The admin logs in, opens はじめに, checks the DNS
records, sends the test rejection to an outside address (their login is in the
company's domain, which gets no link), takes the message the upstream captured,
pastes its source, sees it verified and opens its link; the status then shows the
view.  Screenshots go to ``test-artifacts/screenshots/start-*.png``.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from aiohttp import web

from career_relay import settings as settings_mod
from career_relay.dkimkeys import generate_key, public_record
from career_relay.ledger import AdminUsers, open_configured
from consent_site.admin_start import START
from consent_site.app import ADMIN_APP, create_app
from tests.conftest import (
    _PASSWORD_HASH,
    COMPANY_PASSWORD,
    ConfigMaker,
    GatewayThread,
    Sink,
    free_port,
)
from tests.test_admin_browser import Desk
from tests.test_browser import SHOTS

pytestmark = [pytest.mark.peer, pytest.mark.slow]

PASSWORD = "はじめての管理者 2026"
OUTSIDE = "hanako.private@example.net"


class SiteThread:
    """The consent site's app on loopback, served from a thread of this process."""

    def __init__(self, config: Path, port: int) -> None:
        self.app = create_app(settings_mod.load(config))
        self.runner = web.AppRunner(self.app)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(port), self.loop).result(15)

    async def _start(self, port: int) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def test_get_started_to_a_verified_test_rejection(tmp_path: Path, make_config: ConfigMaker,
                                                  sink: Sink) -> None:
    key_file = tmp_path / "keys" / "acme.example.cr2026.pem"
    record = public_record(generate_key(key_file))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = make_config(
        upstream_port=sink.port, site={"listen": f"127.0.0.1:{port}", "public_url": url},
        companies=[{"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"],
                    "smtp_username": "acme", "smtp_password_hash": _PASSWORD_HASH,
                    "dkim_selector": "cr2026", "dkim_key_file": str(key_file)}])
    with open_configured(settings_mod.load(config)) as ledger:
        AdminUsers(ledger).add("hr@acme.example", PASSWORD, "acme")
    zone = {"cr2026._domainkey.acme.example": [record],
            "acme.example": ["v=spf1 include:_spf.google.com ~all"],
            "_dmarc.acme.example": ["v=DMARC1; p=none"]}
    gateway = GatewayThread(config).start()
    site = SiteThread(config, port)
    site.app[ADMIN_APP][START].resolver = lambda name: list(zone.get(name, []))
    desk = Desk(tmp_path / "desk-profile", SHOTS, tmp_path / "downloads")
    try:
        # 1. The first login; はじめに is the first tab.
        desk.open(url + "/admin/login")
        desk.type_into("#email", "hr@acme.example")
        desk.type_into("#password", PASSWORD)
        desk.tap_and_wait("#login", "#tab-start")
        desk.tap_and_wait("#tab-start", "#templates")
        assert "[[CAREER_RELAY_LINK]]" in desk.value("#tpl-rejection-ja-txt")
        assert url + "/j/" in desk.value("#tpl-company-link-ja-txt")
        desk.screenshot("start-01-templates")

        # 2. The DNS records, checked: all three published as they should be.
        desk.tap_and_wait("#check-dns", "#dns-table td.check-ok")
        rows = desk.all("#dns-table tbody tr")
        assert [r.get_attribute("data-status") for r in rows] == ["ok", "ok", "ok"]
        desk.screenshot("start-02-dns")

        # 3. The test rejection, to an outside address, with the company's SMTP password.
        assert desk.is_visible("#own-domain-note")
        desk.type_into("#to", OUTSIDE)
        desk.type_into("#smtp_password", COMPANY_PASSWORD)
        desk.tap_and_wait("#send-test", "#test-status")
        assert desk.attribute("#status-offer", "data-done") == "yes"
        assert desk.attribute("#status-viewed", "data-done") == "no"
        status_url = desk.url  # /admin/start?company=acme&test=<Message-ID>#test
        assert "test=" in status_url
        desk.screenshot("start-03-sent")

        # 4. The message as the mailbox got it, pasted whole (as a paste: CDP insertText
        #    keeps its tabs and line ends), then verified.
        received = sink.wait_for(1)[0]
        assert received.rcpts == [OUTSIDE]
        desk.tap("#source")
        desk.driver.execute_cdp_cmd("Input.insertText",
                                    {"text": received.data.decode("utf-8")})
        desk.tap_and_wait("#verify", "#verdict")
        assert desk.attribute("#verdict", "data-ok") == "yes", desk.text("#verdict")
        assert "有効な署名" in desk.text("#verdict-ok")
        desk.screenshot("start-04-verified")

        # 5. Its link opens the candidate's page (a new tab); the status shows the view.
        link = desk.attribute("#verdict-open", "href")
        assert link is not None and link.startswith(url + "/c/")
        status_page = desk.driver.current_window_handle
        desk.tap("#verdict-open")
        desk.driver.switch_to.window(desk.driver.window_handles[-1])
        desk.find("form")
        assert "株式会社アクメ" in desk.text("body")
        desk.screenshot("start-05-link")
        desk.driver.switch_to.window(status_page)
        desk.open(status_url)
        assert desk.attribute("#status-viewed", "data-done") == "yes"
        desk.screenshot("start-06-status")
        assert desk.console_errors() == []  # no CSP violation, no script error
    finally:
        desk.quit()
        site.stop()
        gateway.stop()
