"""The admin pages in a real Chromium (issue 5): log in, read the dashboard and its charts,
redeem a credit, download the provision record as CSV, log out.

``career-relay site`` runs as a subprocess over a ledger written beforehand
the way the product writes it (offers, consents through
``career_relay.consent``, deliveries through ``ConsentLedger``), each event at
its own time over several months, so the monthly chart has months to show.
Chromium is Debian's, driven as in ``tests/peers/browser.py``, but with a PC's
screen (admins work at a desk) and a download folder; one last look on the
phone checks that the dashboard still fits a small screen.

Screenshots go to ``test-artifacts/screenshots/admin-*.png`` for a person to look at.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from career_relay import settings as settings_mod
from career_relay.consent import Client, Consents, Notice
from career_relay.ledger import AdminUsers, ConsentLedger, Rules, new_offer_id, open_ledger
from tests.conftest import ConfigMaker, free_port, wait_until
from tests.peers.browser import (
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    PHONE_UA,
    PHONE_WIDTH,
    Phone,
    browser_available,
    phone,
)
from tests.test_browser import SHOTS, SiteProcess

pytestmark = [pytest.mark.peer, pytest.mark.slow]

PASSWORD = "管理者のパスワード 2026"
JOBS = ("経理", "法人営業", "バックエンドエンジニア", "Product Designer")
CHANNELS = ("自社サイト", "求人媒体", "エージェント")


class Desk(Phone):
    """Headless Chromium on a PC's screen (1280x900), saving downloads to ``downloads``."""

    def __init__(self, profile: Path, shots: Path, downloads: Path) -> None:
        if not browser_available():
            pytest.fail("Chromium is not installed: make test-deps")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,900",
                     "--lang=ja-JP"):
            options.add_argument(flag)
        options.add_experimental_option("prefs", {
            "intl.accept_languages": "ja-JP,ja", "download.default_directory": str(downloads),
            "download.prompt_for_download": False})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.log = profile.parent / "chromedriver-desk.log"
        self.driver = webdriver.Chrome(options=options,
                                       service=Service(CHROMEDRIVER, log_output=str(self.log)))
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(downloads)})
        self.shots = shots
        self.shots.mkdir(parents=True, exist_ok=True)
        self._console = []


@dataclass
class AdminSite:
    url: str
    ledger: Path


def _history(config: Path) -> None:
    """Five months of rejections: acme's 36 qualified forwards (3 credits, 6 toward the
    next), declines and offers left undecided; a few undecided offers of the other company."""
    settings = settings_mod.load(config)
    rules = Rules.from_settings(settings)
    notice = Notice.of("通知文", "ja")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=150)
    for i in range(60):
        when = start + dt.timedelta(days=i * 2.4, hours=i % 7)
        company = "kumo" if i % 10 == 9 else "acme"
        with open_ledger(settings.ledger.path, clock=lambda w=when: w) as ledger:
            ids = ledger.record_rejection(company, f"<r{i}@{company}.example>",
                                          [(f"candidate{i}@example.net", new_offer_id())],
                                          job=JOBS[i % 4], channel=CHANNELS[i % 3])
            offer = ledger.offer(ids[f"candidate{i}@example.net"])
            assert offer is not None
        decided = when + dt.timedelta(hours=3 + i % 40)
        with open_ledger(settings.ledger.path, clock=lambda d=decided: d) as ledger:
            store = ConsentLedger(ledger, rules)
            consents = Consents(settings, store)
            consents.shown(offer, notice)
            if i % 5 != 4:
                consents.view(offer)
            client = Client(PHONE_UA, "203.0.113.7")
            if i % 5 in (0, 1, 2):
                consents.accept(offer, notice, {"name": f"候補者 {i}",
                                                "email": offer.recipient}, False, client)
                for forward in store.claim_due(10, 60):
                    store.delivered(forward.id)
            elif i % 5 == 3:
                consents.decline(offer, notice, client)


@pytest.fixture
def admin_site(tmp_path: Path, make_config: ConfigMaker) -> Iterator[AdminSite]:
    port = free_port()
    config = make_config(
        site={"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
        companies=[{"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"]},
                   {"id": "kumo", "name": "雲株式会社", "domains": ["kumo.example"]}])
    settings = settings_mod.load(config)
    _history(config)
    with open_ledger(settings.ledger.path) as ledger:
        AdminUsers(ledger).add("hr@acme.example", PASSWORD, "acme")
    site = SiteProcess(config, port)
    try:
        yield AdminSite(f"http://127.0.0.1:{port}", Path(settings.ledger.path))
    finally:
        site.stop()


def _redemptions(ledger: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
        return [(str(b), str(n)) for b, n in db.execute("SELECT by, note FROM redemptions")]


def _charts_drawn(p: Phone) -> bool:
    """Every chart image loaded and decoded (an SVG the browser refused has no width): the
    funnel, the monthly trend, by job, by channel, and the outcomes (issue 15 item 5)."""
    return bool(p.driver.execute_script(
        "const imgs = [...document.querySelectorAll('img.chart')];"
        "return imgs.length === 5 && imgs.every(i => i.complete && i.naturalWidth > 0);"))


def test_a_company_admin_logs_in_redeems_and_exports(admin_site: AdminSite,
                                                    tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    desk = Desk(tmp_path / "desk-profile", SHOTS, downloads)
    try:
        # 1. The dashboard needs a login.
        desk.open(admin_site.url + "/admin/")
        assert desk.url == admin_site.url + "/admin/login"
        desk.screenshot("admin-01-login")
        desk.type_into("#email", "hr@acme.example")
        desk.type_into("#password", "wrong password")
        desk.tap_and_wait("#login", "#login-error")
        assert "正しくありません" in desk.text("#login-error")

        # 2. Logged in: the funnel, the credits, the charts.
        desk.type_into("#password", PASSWORD)
        desk.tap_and_wait("#login", "#card-credits")
        assert desk.url == admin_site.url + "/admin/"
        assert desk.text("#user-email") == "hr@acme.example"
        assert desk.text("#credits-available") == "3"
        assert desk.text("#progress") == "6"
        wait_until(lambda: _charts_drawn(desk), 20, "the five charts")
        assert "雲株式会社" not in desk.text("body")
        desk.screenshot("admin-02-dashboard")

        # 3. Redeem one credit.
        desk.tap_and_wait("#tab-credits", "#redeem")
        desk.type_into("#note", "経理職の紹介（春）")
        desk.tap_and_wait("#redeem", "#done")
        assert desk.text("#credits-available") == "2"
        assert _redemptions(admin_site.ledger) == [("hr@acme.example", "経理職の紹介（春）")]
        desk.screenshot("admin-03-credits-redeemed")

        # 4. The forwards, then the provision record as a CSV download.
        desk.tap_and_wait("#tab-forwards", "#forwards-table")
        assert "候補者 0" in desk.text("#forwards-table")
        desk.screenshot("admin-04-forwards")
        desk.tap("#export-provisions")
        # Chromium may name the file before it has written it: wait for its bytes too.
        wait_until(lambda: any(p.suffix == ".csv" and p.stat().st_size > 0
                               for p in downloads.iterdir()), 20,
                   "the CSV download")
        (csv_file,) = [p for p in downloads.iterdir() if p.suffix == ".csv"]
        assert csv_file.name.startswith("career-relay-acme-provisions-")
        data = csv_file.read_bytes()
        assert data.startswith("\ufeff".encode())
        lines = data.decode("utf-8").split("\r\n")
        assert lines[0].lstrip("\ufeff").startswith("提供日 (UTC),提供先,本人の氏名")
        assert len([line for line in lines[1:] if line]) == 36  # acme's provisions
        assert "株式会社サンプル人材" in lines[1]

        assert desk.console_errors() == []  # no CSP violation, no script error
        # 5. Log out: the dashboard asks for a login again.
        desk.tap_and_wait("#logout", "#message")
        desk.open(admin_site.url + "/admin/")
        assert desk.url == admin_site.url + "/admin/login"
    finally:
        desk.quit()

    # The dashboard on a phone: nothing wider than the screen but the tables' own scroll.
    with phone(tmp_path, SHOTS) as p:
        p.open(admin_site.url + "/admin/login")
        p.type_into("#email", "hr@acme.example")
        p.type_into("#password", PASSWORD)
        p.tap_and_wait("#login", "#card-credits")
        wait_until(lambda: _charts_drawn(p), 20, "the five charts on the phone")
        assert p.page_width() <= PHONE_WIDTH, f"the page is {p.page_width()} px wide"
        p.screenshot("admin-05-dashboard-phone")
        assert p.console_errors() == []


def _full_forwards(config: Path) -> None:
    """Forwards as a real candidate fills the form: every item, the application shared,
    a long address; one still pending with failed attempts."""
    settings = settings_mod.load(config)
    with open_ledger(settings.ledger.path) as ledger:
        store = ConsentLedger(ledger, Rules.from_settings(settings))
        consents = Consents(settings, store)
        notice = Notice.of("通知文", "ja")
        for i in range(3):
            email = f"yamada.hanako.{i}@mail.candidate-example.co.jp"
            ids = ledger.record_rejection("acme", f"<full{i}@acme.example>",
                                          [(email, new_offer_id())], job="経理", stage="最終面接")
            offer = ledger.offer(ids[email])
            assert offer is not None
            consents.shown(offer, notice)
            consents.accept(offer, notice, {
                "name": "山田 花子", "email": email, "phone": "090-1234-5678",
                "desired_job": "経理・財務", "desired_location": "東京都",
                "note": "よろしくお願いします"}, True, Client(PHONE_UA, "203.0.113.7"))
        for forward in store.claim_due(10, 60)[:2]:
            store.delivered(forward.id)


#: For each cell of the forwards table: its column and how many lines its text takes.
_CELL_LINES = """
const lines = el => {
  const r = document.createRange(); r.selectNodeContents(el);
  return new Set([...r.getClientRects()].filter(x => x.width > 0)
                 .map(x => Math.round(x.top))).size;
};
const rows = [...document.querySelectorAll('#forwards-table tbody tr')];
return rows.flatMap(tr => [...tr.cells].map((td, i) => [i, lines(td)]));
"""


@pytest.mark.parametrize("width", [1280, 1366])
def test_the_forwards_table_keeps_its_columns_on_one_line_on_a_laptop(
        admin_site: AdminSite, tmp_path: Path, width: int) -> None:
    """Issue 14 item 5: on a laptop's screen the forwards table wrapped its columns (the
    times broke after the date, the kind and the state mid-word, the receipt id anywhere).
    Times, kind, state and receipt id stay on one line; the person and the items may wrap;
    the table needs no sideways scroll."""
    _full_forwards(admin_site.ledger.parent / "career-relay.toml")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    desk = Desk(tmp_path / "desk-profile", SHOTS, downloads)
    try:
        desk.driver.set_window_size(width, 800)
        desk.open(admin_site.url + "/admin/login")
        desk.type_into("#email", "hr@acme.example")
        desk.type_into("#password", PASSWORD)
        desk.tap_and_wait("#login", "#card-credits")
        desk.open(admin_site.url + "/admin/forwards")
        cells = desk.driver.execute_script(_CELL_LINES)
        assert len(cells) >= 7 * 36
        wrapped = sorted({column for column, lines in cells
                          if column in (0, 1, 2, 3, 6) and lines > 1})
        assert wrapped == [], f"columns wrapped at {width} px: {wrapped}"
        overflow = desk.driver.execute_script(
            "const s = document.querySelector('#forwards-table').parentElement;"
            "return s.scrollWidth - s.clientWidth;")
        assert overflow <= 0, f"the table is {overflow} px wider than its box"
        desk.screenshot(f"admin-06-forwards-{width}")
    finally:
        desk.quit()
