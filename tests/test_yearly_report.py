"""The yearly human-capital report (issue 15 item 6): ``report --year --format html|pdf`` and
``/admin/yearly`` over a ledger written by the real code paths (offers, consents through
``Consents``, deliveries through ``ConsentLedger``, credits minted by the rules, outcomes
through ``Outcomes.record``, referrals through ``Referrals`` and ``Book.redeem``).

The PDF is printed by the real Chromium and read back with poppler's pdftotext and pdffonts
(``make test-deps``).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from career_relay.ledger import Book, ConsentLedger, Outcomes, Referrals, yearly
from tests.conftest import ConfigMaker, run_cli
from tests.test_admin import COMPANIES, Admin

VALUE = 800_000
#: Placed per job: a group of 5 shown, one of 4 and one of 1 hidden (together 5, so the
#: total less the shown group gives neither away).
JOBS = {"経理": 5, "営業": 4, "人事": 1}


def _world(make_config: ConfigMaker, **site: str) -> Admin:
    companies = [{**COMPANIES[0], "referral_value": VALUE}, COMPANIES[1]]
    harness = Admin(make_config(site={"review_window": 0, **site},
                                ledger={"credit_every": 5}, companies=companies))
    harness.add_user("ops@relay.example", None)
    harness.add_user("hr@acme.example", "acme")
    outcomes = Outcomes(harness.ledger, harness.rules)
    store = ConsentLedger(harness.ledger, harness.rules)
    today = dt.datetime.now(dt.UTC).date()
    for job, placed in JOBS.items():
        for offer in harness.qualify(placed, "acme", job=job):
            forward = store.forwards(offer.id)[-1].forward.id
            assert outcomes.record("default", forward, "placed", today) is not None
    harness.qualify(2, "kumo", job="秘密の職種")  # another company's: never in acme's
    # Ten qualified forwards, two credits: one redeemed, one asked for and fulfilled.
    Book(harness.ledger, harness.rules).redeem("acme", "operator", "")
    referrals = Referrals(harness.ledger)
    asked = referrals.request("acme", "default", "hr@acme.example", "")
    referrals.settle_request(asked.id, "default", "fulfilled")
    return harness


@pytest.fixture
def world(make_config: ConfigMaker) -> Iterator[Admin]:
    harness = _world(make_config)
    yield harness
    harness.close()


def _year() -> str:
    return str((dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).year)


def _cell(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</td>', html, re.S)
    assert found, element_id
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def _jobs(html: str) -> dict[str, list[str]]:
    table = html[html.index('id="jobs"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr><td>(.*?)</td>(.*?)</tr>", table, re.S)
    return {name: re.findall(r'class="num">([^<]*)<', cells) for name, cells in rows}


def _check_figures(html: str, world: Admin) -> None:
    assert _cell(html, "offers") == "10 人" and _cell(html, "accepted") == "10 人"
    assert _cell(html, "placed") == "10 人"
    assert _jobs(html) == {"経理": ["5", "5", "5"], "営業": ["5未満"] * 3,
                           "人事": ["5未満"] * 3}
    # Most moved first; the hidden ones by name, so their order tells nothing of their size.
    assert list(_jobs(html)) == ["経理", *sorted(["営業", "人事"])]
    assert _cell(html, "credits-earned") == "2 件"
    assert _cell(html, "referrals-received") == "2 件"
    assert _cell(html, "recovered-value") == "¥1,600,000"
    assert f'id="ledger-head" class="head">{Book(world.ledger).head()}<' in html
    assert "株式会社アクメ (acme)" in html and f"{_year()}-01-01 〜 {_year()}-12-31" in html
    # Nothing of a person, nothing of another company's.
    for personal in ("山田", "@example.net", "秘密の職種", "雲株式会社"):
        assert personal not in html
    assert not re.search(r"cand[0-9]", html)
    assert "http://" not in html and "https://" not in html and "src=" not in html


def test_the_cli_writes_the_report_with_the_figures(world: Admin, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = run_cli("report", "--config", str(world.config), "--year", _year(), "--company",
                   "acme", "--format", "html", "--output", str(out))
    assert done.returncode == 0, done.stderr
    _check_figures(out.read_text(encoding="utf-8"), world)
    stdout = run_cli("report", "--config", str(world.config), "--year", _year(),
                     "--company", "acme", "--format", "html")
    assert stdout.returncode == 0 and 'id="recovered-value"' in stdout.stdout
    # --year names the period for the other formats too.
    as_json = run_cli("report", "--config", str(world.config), "--year", _year(),
                      "--format", "json")
    assert f'"since": "{_year()}-01-01"' in as_json.stdout
    assert f'"until": "{_year()}-12-31"' in as_json.stdout


def test_a_group_below_five_hides_the_smallest_shown_one_too() -> None:
    # 9 in all, shown: 9 less 5 would give the group of 4 away, so the 5 is hidden as well.
    assert yearly.at_least_k_each({"経理": 5, "営業": 4}, 9) == {"経理": None, "営業": None}
    assert yearly.at_least_k_each({"経理": 5, "営業": 4, "人事": 1}, 10) == {
        "経理": 5, "営業": None, "人事": None}
    assert yearly.at_least_k_each({"a": 7, "b": 6, "c": 2}, 15) == {"a": 7, "b": None, "c": None}
    assert yearly.at_least_k_each({"a": 3}, 0) == {"a": None}


@pytest.mark.parametrize("args", [
    ("--format", "html", "--company", "acme"),              # no --year
    ("--format", "pdf", "--year", "2026"),                  # no --company
    ("--year", "2026", "--since", "2026-01-01"),            # both ways of a period
])
def test_bad_usage_exits_2(world: Admin, args: tuple[str, ...]) -> None:
    done = run_cli("report", "--config", str(world.config), *args)
    assert done.returncode == 2 and "report" in done.stderr


def _need_pdf_tools() -> None:
    if not (shutil.which("pdftotext") and shutil.which("pdffonts")
            and Path("/usr/bin/chromium").is_file()):
        pytest.fail("chromium and poppler-utils are needed: make test-deps")


def test_the_pdf_holds_the_text_and_embeds_the_japanese_font(world: Admin,
                                                              tmp_path: Path) -> None:
    _need_pdf_tools()
    out = tmp_path / "report.pdf"
    done = run_cli("report", "--config", str(world.config), "--year", _year(), "--company",
                   "acme", "--format", "pdf", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"%PDF-")
    text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True,
                          text=True, check=True).stdout
    for needle in ("人的資本レポート", "株式会社アクメ", "¥1,600,000", "5未満", "経理",
                   Book(world.ledger).head()[:20]):
        assert needle in text, needle
    assert not re.search(r"cand[0-9]", text) and "山田" not in text
    fonts = subprocess.run(["pdffonts", str(out)], capture_output=True, text=True,
                           check=True).stdout
    japanese = [line for line in fonts.splitlines() if "Gothic" in line or "CJK" in line]
    assert japanese and all(" yes " in line for line in japanese), fonts  # embedded


def test_a_missing_chromium_is_one_line_naming_it(world: Admin, tmp_path: Path) -> None:
    done = run_cli("report", "--config", str(world.config), "--year", _year(), "--company",
                   "acme", "--format", "pdf", "--output", str(tmp_path / "r.pdf"),
                   env={"CAREER_RELAY_SITE_CHROMIUM": "/nonexistent/chromium"})
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("career-relay: error: cannot make the PDF: no Chromium at "
                                  "'/nonexistent/chromium'")
    assert not (tmp_path / "r.pdf").exists()


def test_the_admin_page_and_its_pdf_behind_login(world: Admin) -> None:
    _need_pdf_tools()
    year = _year()
    assert world.get(f"/admin/yearly?year={year}").status == 303  # to the login
    assert world.get(f"/admin/yearly.pdf?year={year}").status == 303
    world.login("hr@acme.example")
    page = world.get(f"/admin/yearly?year={year}")
    assert page.status == 200
    _check_figures(page.text, world)
    assert "sha256-" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    assert f'href="/admin/yearly.pdf?company=acme&amp;year={year}"' in page.text
    pdf = world.get(f"/admin/yearly.pdf?company=acme&year={year}")
    assert pdf.status == 200 and pdf.body.startswith(b"%PDF-")
    assert pdf.headers["Content-Type"] == "application/pdf"
    assert f"human-capital-{year}.pdf" in pdf.headers["Content-Disposition"]
    # Another company's report: as if it did not exist.
    assert world.get(f"/admin/yearly?company=kumo&year={year}").status == 404
    assert world.get(f"/admin/yearly.pdf?company=kumo&year={year}").status == 404
    assert world.get("/admin/yearly?year=12345").status == 400
    world.login("ops@relay.example")
    kumo = world.get(f"/admin/yearly?company=kumo&year={year}")
    assert kumo.status == 200 and "雲株式会社" in kumo.text


def test_the_admin_pdf_names_a_missing_chromium(make_config: ConfigMaker) -> None:
    harness = _world(make_config, chromium="/nonexistent/chromium")
    try:
        harness.login("hr@acme.example")
        reply = harness.get(f"/admin/yearly.pdf?year={_year()}")
        assert reply.status == 503 and "no Chromium at" in reply.text
    finally:
        harness.close()
