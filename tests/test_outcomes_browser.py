"""The outcomes walk-through in a real Chromium (issue 15 item 7, SPEC 8 and 11): candidates
consent, the agency pulls their forwards and reports what became of them over the agency API,
and the company's admin reads the counts on the dashboard, where a group of fewer than 5 is
never a number.

Everything goes through the product's own doors: ``career-relay site`` runs as a subprocess
over a SQLite ledger; the rejections are in the ledger as the gateway writes them
(``record_rejection`` with the job and channel headers' values); one candidate consents by
tapping through the consent page in Chromium on a phone's screen, the nine others post the
same form with a plain HTTP client (the page's nonce, the site's ``Origin``); the agency's key
is made by ``career-relay agency-key create``; the agency (``deliver = "pull"``) reads
``GET /api/v1/agency/forwards`` with it, acknowledges the page, and posts each outcome to
``POST /api/v1/agency/forwards/{id}/outcome`` with urllib; the admin logs in through the
login form.

The numbers are chosen so the rule of at least 5 (``career_relay/ledger/outcome_groups.py``,
docs/outcomes.md) decides what shows, and so that each step can fail:

1. before any outcome, the outcome tables are empty and the totals are zeros;
2. job A (経理) 5 candidates, job B (法人営業) 4: the month holds 9, so the totals show, but
   B is "5人未満" and A is held back ("非公開（差し引き防止）"), since the totals less A's
   row would be B's 4;
3. one more candidate of job C: what the job table leaves out is B and C, 5 together, so A's
   counts show; B's stay words on the page and in the CSV, which the browser fetches with the
   admin's session.

Screenshots (laptop 1280 px and phone 390 px) go to ``test-artifacts/screenshots/outcomes-*``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from career_relay import settings as settings_mod
from career_relay.ledger import AdminUsers, new_offer_id, open_ledger
from career_relay.tokens import LinkSigner, link
from tests.conftest import CLI, REPO, ConfigMaker, free_port, wait_until
from tests.peers.browser import PHONE_HEIGHT, PHONE_SCALE, PHONE_UA, PHONE_WIDTH
from tests.test_admin_browser import Desk
from tests.test_browser import SHOTS, SiteProcess

pytestmark = [pytest.mark.peer, pytest.mark.slow]

ADMIN_EMAIL, PASSWORD = "hr@acme.example", "結果を見る管理者 2026"
JOB_A, JOB_B, JOB_C = "経理", "法人営業", "Product Designer"
#: Each job's candidates (e-mail address -> the outcome the agency reports).  A: 5, B: 4, C: 1.
OUTCOMES = {
    JOB_A: {"keiri0@example.net": "placed", "keiri1@example.net": "placed",
            "keiri2@example.net": "placed", "keiri3@example.net": "interviewing",
            "keiri4@example.net": "registered"},
    JOB_B: {"eigyo0@example.net": "placed", "eigyo1@example.net": "placed",
            "eigyo2@example.net": "not_placed", "eigyo3@example.net": "not_placed"},
    JOB_C: {"design0@example.net": "placed"},
}
BROWSER_CANDIDATE = "keiri0@example.net"  # taps through the consent page in Chromium
FEWER = "5人未満"
#: A jobs row without its name: 案内, 同意率, 登録率, 就職率, 日数 (中央値), then the counts
#: (結果の報告があった候補者, 登録, 選考中, 就職, 不成立, 連絡不能).
OUTCOME_COLUMNS = slice(5, None)


@dataclass
class Walk:
    url: str
    config: Path
    links: dict[str, str]  # candidate's address -> the link in their rejection mail


@pytest.fixture
def walk(tmp_path: Path, make_config: ConfigMaker) -> Iterator[Walk]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = make_config(
        site={"listen": f"127.0.0.1:{port}", "public_url": url, "review_window": 0},
        agency={"name": "東キャリア株式会社", "deliver": "pull"},
        companies=[{"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"]}])
    settings = settings_mod.load(config)
    signer = LinkSigner.from_settings(settings)
    links = {}
    with open_ledger(settings.ledger.path) as ledger:
        for job, people in OUTCOMES.items():
            for n, email in enumerate(people):
                ids = ledger.record_rejection("acme", f"<{email}.{n}@acme.example>",
                                              [(email, new_offer_id())], job=job,
                                              channel="求人媒体", stage="書類選考")
                links[email] = link(url, signer.token(ids[email]))
        AdminUsers(ledger).add(ADMIN_EMAIL, PASSWORD, "acme")
    site = SiteProcess(config, port)
    try:
        yield Walk(url, config, links)
    finally:
        site.stop()


# -- the candidates and the agency, over HTTP --------------------------------------------


def _consent_over_http(walk: Walk, email: str) -> None:
    """The consent form posted as a browser would: the nonce from the page, our Origin."""
    page = _http("GET", walk.links[email], headers={"User-Agent": PHONE_UA})
    nonce = re.search(r'name="csrf" value="([^"]+)"', page)
    assert nonce, page[:500]
    form = {"csrf": nonce.group(1), "lang": "ja", "decision": "accept", "agree": "yes",
            "name": f"候補者 {email.split('@')[0]}", "email": email,
            "share_application": "yes"}
    _http("POST", walk.links[email], urllib.parse.urlencode(form).encode(),
          {"User-Agent": PHONE_UA, "Origin": walk.url,
           "Content-Type": "application/x-www-form-urlencoded"})


def _http(method: str, url: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(url, body, headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=15) as answer:  # follows the 303 to /done
        assert answer.status in (200, 201), (answer.status, url)
        return str(answer.read().decode("utf-8"))


class AgencyClient:
    """The agency's side: its key from the CLI, the API over urllib."""

    def __init__(self, walk: Walk) -> None:
        made = subprocess.run([*CLI, "agency-key", "create", "--agency", "default",
                               "--name", "結果報告", "--config", str(walk.config)],
                              capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
        self.key = made.stdout.strip()
        assert self.key.startswith("cra_"), made
        self.url = walk.url + "/api/v1/agency"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json",
                   **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        with urllib.request.urlopen(request, timeout=15) as answer:
            return int(answer.status), json.loads(answer.read())

    def pull(self) -> dict[str, str]:
        """Every consent forward, acknowledged (``after``): the address -> its forward id."""
        status, page = self.call("GET", "/forwards?limit=100")
        assert status == 200 and not page["more"], page
        status, again = self.call("GET", f"/forwards?limit=100&after={page['next']}")
        assert status == 200 and again["items"] == [], again  # the page is acknowledged
        return {item["payload"]["candidate"]["email"]: item["forward_id"]
                for item in page["items"] if item["type"] == "consent"}

    def report(self, forward_id: str, status: str) -> None:
        today = dt.datetime.now(dt.UTC).date().isoformat()
        code, made = self.call("POST", f"/forwards/{forward_id}/outcome",
                               {"status": status, "at": today})
        assert code == 201 and made["status"] == status, made


# -- what the admin's browser shows ------------------------------------------------------


def _rows(desk: Desk, table: str) -> dict[str, list[str]]:
    """A table of the outcomes panel as the page renders it: first cell -> the others."""
    cells = desk.driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]"
        ".map(tr => [...tr.cells].map(c => c.innerText.trim()));", f"#outcomes-{table}")
    return {row[0]: row[1:] for row in cells}


def _dashboard(desk: Desk, walk: Walk) -> dict[str, Any]:
    desk.open(walk.url + "/admin/")
    desk.find("#outcomes-panel")
    wait_until(lambda: bool(desk.driver.execute_script(
        "const i = document.querySelector('#chart-outcomes');"
        "return i.complete && i.naturalWidth > 0;")), 20, "the outcomes chart")
    return {"total": desk.text("#outcomes-total"), "jobs": _rows(desk, "jobs"),
            "monthly": _rows(desk, "monthly"), "text": desk.text("body")}


def _phone_screen(desk: Desk, on: bool) -> None:
    """The same browser on a phone's screen (and user agent), or back on the laptop's."""
    if on:
        desk.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": PHONE_WIDTH, "height": PHONE_HEIGHT, "deviceScaleFactor": PHONE_SCALE,
            "mobile": True})
        desk.driver.execute_cdp_cmd("Emulation.setUserAgentOverride", {"userAgent": PHONE_UA})
    else:
        desk.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _numbers(cells: list[str]) -> list[str]:
    """The cells that hold a figure (a digit outside the words for a count left out)."""
    return [c for c in cells if re.search(r"\d", c.replace(FEWER, ""))]


def test_the_agency_reports_outcomes_and_the_admin_sees_only_groups_of_5(
        walk: Walk, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    desk = Desk(tmp_path / "profile", SHOTS, downloads)
    try:
        # 1. One candidate on a phone: the notice says the company sees only groups of 5.
        _phone_screen(desk, True)
        desk.open(walk.links[BROWSER_CANDIDATE])
        assert "5人以上の組ごとの人数としてだけです" in desk.text("main")
        desk.type_into("#name", "経理 花子")
        desk.tap("#share_application")
        desk.tap("#agree")
        desk.screenshot("outcomes-01-consent-phone")
        desk.tap_and_wait("#accept", "main[data-state='accepted']")
        _phone_screen(desk, False)
        # ... and nine more post the same form.
        for email in [e for people in OUTCOMES.values() for e in people]:
            if email != BROWSER_CANDIDATE:
                _consent_over_http(walk, email)

        # 2. The agency pulls the ten forwards with its key.
        agency = AgencyClient(walk)
        forwards = agency.pull()
        assert sorted(forwards) == sorted(e for people in OUTCOMES.values() for e in people)

        # 3. The admin logs in: no outcome yet, so no count anywhere in the panel.
        desk.open(walk.url + "/admin/")
        assert desk.url == walk.url + "/admin/login"
        desk.type_into("#email", ADMIN_EMAIL)
        desk.type_into("#password", PASSWORD)
        desk.tap_and_wait("#login", "#outcomes-panel")
        before = _dashboard(desk, walk)
        # The groups are of the candidates forwarded (which the company knows), reported on
        # or not: A's 5 show from the start (zeros), B's 4 and C's 1 never, and the job
        # table's shape does not move when the agency reports on someone.
        assert before["total"] == "登録 0・選考中 0・就職 0・不成立 0", before["total"]
        assert sorted(before["jobs"]) == sorted(OUTCOMES)  # the offers, the opt-ins
        a, b, c = (before["jobs"][j] for j in (JOB_A, JOB_B, JOB_C))
        assert a[OUTCOME_COLUMNS] == ["5", "0", "0", "0", "0", "0"], a
        for row in (b, c):
            assert set(row[OUTCOME_COLUMNS]) == {FEWER} and _numbers(row[2:]) == [], row
        desk.screenshot("outcomes-02-dashboard-before")

        # 4. Jobs A and B reported: A's counts show; B's 4 stay words, never a number.
        for job in (JOB_A, JOB_B):
            for email, status in OUTCOMES[job].items():
                agency.report(forwards[email], status)
        nine = _dashboard(desk, walk)
        assert nine["total"] == "登録 1・選考中 1・就職 5・不成立 2", nine["total"]
        a, b, c = (nine["jobs"][j] for j in (JOB_A, JOB_B, JOB_C))
        # 結果の報告があった候補者 (the forwarded), 登録, 選考中, 就職, 不成立, 連絡不能
        assert a[OUTCOME_COLUMNS] == ["5", "1", "1", "3", "0", "0"], a
        assert a[3] == "60.0%"  # placed ÷ offers
        assert set(b[OUTCOME_COLUMNS]) == {FEWER} and set(c[OUTCOME_COLUMNS]) == {FEWER}
        assert a[0] == "5" and b[0] == "4"  # the offers: the company's own, never suppressed
        desk.screenshot("outcomes-03-dashboard-reported")

        # 5. Job C's one candidate reported: nothing but the month's total moves (A's row as
        # it was, B and C words): the company cannot tell whom the report was about.
        agency.report(forwards["design0@example.net"], "placed")
        after = _dashboard(desk, walk)
        assert after["total"] == "登録 1・選考中 1・就職 6・不成立 2", after["total"]
        assert after["jobs"][JOB_A] == a
        a, b, c = (after["jobs"][j] for j in (JOB_A, JOB_B, JOB_C))
        for row in (b, c):
            assert set(row[OUTCOME_COLUMNS]) == {FEWER}, row
            assert _numbers(row[2:]) == [], row  # no rate either: 登録率 and 就職率 are words
        (month,) = [row for row in after["monthly"].values() if row[0] == "10"]
        assert month[4:] == ["10", "1", "1", "6", "2", "0"], month
        # What the job table leaves out of the month is B and C: 5 candidates, not B's 4.
        assert int(month[4]) - int(a[OUTCOME_COLUMNS][0]) >= 5
        desk.screenshot("outcomes-04-dashboard-laptop")

        # 6. The CSV, downloaded from its link: B's row in words, A's in numbers.
        desk.tap("#export-outcomes-jobs")
        wait_until(lambda: any(p.suffix == ".csv" and p.stat().st_size > 0
                               for p in downloads.iterdir()), 20, "the CSV download")
        (csv_file,) = [p for p in downloads.iterdir() if p.suffix == ".csv"]
        assert csv_file.name.startswith("career-relay-acme-outcomes-jobs-")
        text = csv_file.read_text(encoding="utf-8-sig")
        lines = {row[0]: row[1:] for row in csv.reader(io.StringIO(text)) if row}
        assert lines[JOB_A][OUTCOME_COLUMNS] == ["5", "1", "1", "3", "0", "0"], text
        assert set(lines[JOB_B][OUTCOME_COLUMNS]) == {FEWER}, lines[JOB_B]
        assert _numbers(lines[JOB_B][2:]) == [], lines[JOB_B]
        # The chart: the month's bars are drawn (its figures are the month's 10).
        desk.open(walk.url + "/admin/charts/outcomes.svg")
        svg = str(desk.driver.execute_script("return document.documentElement.outerHTML"))
        assert svg.startswith("<svg") and "<rect" in svg, svg[:200]

        # 7. The dashboard on the phone: it fits, the suppression reads the same.
        _phone_screen(desk, True)
        phone_view = _dashboard(desk, walk)
        assert set(phone_view["jobs"][JOB_B][OUTCOME_COLUMNS]) == {FEWER}
        # What sticks out of the screen, if anything (a table outside its scroll box).
        wide = desk.driver.execute_script(
            "const w = document.documentElement.clientWidth;"
            "return [...document.querySelectorAll('main *')]"
            ".filter(e => e.getBoundingClientRect().right > w + 0.5)"
            ".slice(0, 5).map(e => e.tagName + '#' + e.id);")
        assert desk.page_width() <= PHONE_WIDTH, (desk.page_width(), wide)
        desk.screenshot("outcomes-05-dashboard-phone")
        assert desk.console_errors() == []
    finally:
        desk.quit()
