"""What a company sees of outcomes (issue 15 items 4 and 5; SPEC 8 ``outcomes``, SPEC 11): counts
of groups of at least 5 candidates, cells left out so that no subtraction lands on a smaller
group, whole months, the latest status per forward, and the analytics.  On both backends
(``backend_url``), the report through ``reports.report`` and through the real CLI.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from career_relay.ledger import reports
from career_relay.ledger.outcome_groups import K
from tests.conftest import run_cli
from tests.test_outcomes import AgencyWorld


class Outcomes(AgencyWorld):
    def group(self, n: int, status: str | None, job: str = "", channel: str = "",
              stage: str = "") -> list[str]:
        """``n`` candidates of one job, channel and stage, forwarded and reported ``status``
        (None: not reported on)."""
        offers = []
        for _ in range(n):
            self._n += 1
            offers.append(self.ledger.record_offer(
                "acme", f"<g{self._n}@acme.example>", f"g{self._n}@example.net",
                job or None, channel or None, stage or None))
        for offer in offers:
            self.accept(offer)
        self.deliver()
        made = [str(r[0]) for r in self.rows(
            "SELECT f.id FROM forwards f WHERE f.kind = 'consent' AND f.offer_id IN ("
            + ", ".join("?" * n) + ")", *[o.id for o in offers])]
        for forward in made if status is not None else ():
            assert self.outcomes.record("default", forward, status, self.now.date())
        return made

    def full(self, **period: dt.date) -> dict[str, Any]:
        when = reports.period(period.get("since"), period.get("until"), self.now.date())
        (row,) = reports.report(self.ledger, ["acme"], when, 10, details=True)
        return row


@pytest.fixture
def world(tmp_path: Path, backend_url: str) -> Iterator[Outcomes]:
    opened = Outcomes(tmp_path, backend_url)
    yield opened
    opened.ledger.close()


def _named(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


def test_the_total_shows_from_five_candidates(world: Outcomes) -> None:
    world.group(4, "registered")
    out = world.full()["outcomes"]
    assert out["suppressed"] and out["reason"] == "fewer_than_5"
    assert all(out[s] is None for s in ("registered", "placed", "candidates"))
    assert reports.flat(world.full())["outcomes_registered"] == "fewer than 5"  # CSV, table
    world.group(1, "placed")
    out = world.full()["outcomes"]
    assert not out["suppressed"] and (out["registered"], out["placed"]) == (4, 1)
    assert out["candidates"] == K and out["interviewing"] == out["not_placed"] == 0


def test_a_group_of_four_is_left_out_and_no_subtraction_reveals_it(world: Outcomes) -> None:
    world.group(5, "placed", job="営業", channel="web")
    world.group(4, "registered", job="経理", channel="fair")
    world.group(6, "interviewing", job="開発", channel="fair")
    r = world.full()
    assert r["outcomes"]["candidates"] == 15 and r["outcomes"]["placed"] == 5
    jobs = _named(r["analytics"]["by_job"])
    assert jobs["経理"]["suppressed"] and jobs["経理"]["reason"] == "fewer_than_5"
    assert jobs["経理"]["registered"] is None and jobs["経理"]["registered_rate"] is None
    # 営業 (5) is left out too: else 15 - 5 - 6 would be 経理's 4.
    assert jobs["営業"]["suppressed"] and jobs["営業"]["reason"] == "held_back"
    assert jobs["開発"]["interviewing"] == 6 and jobs["開発"]["registered_rate"] == 1.0
    hidden = r["outcomes"]["candidates"] - sum(
        row["candidates"] for row in jobs.values() if not row["suppressed"])
    assert hidden >= K
    # Every table is a sum of the same cells (job, channel and stage together): the
    # channel web is 営業's cell alone, held back as in the job table; fair shows 開発's 6
    # of its 10 (partial), never 経理's 4 as fair less 開発.
    channels = _named(r["analytics"]["by_channel"])
    assert channels["web"]["suppressed"] and channels["web"]["reason"] == "held_back"
    assert channels["fair"]["candidates"] == 6 and channels["fair"]["partial"]
    # The table and the CSV say it in words, never the number.
    assert reports.flat(r)["outcomes_placed"] == 5


def test_whole_months_and_small_months_left_out_of_every_figure(world: Outcomes) -> None:
    world.group(5, "registered", job="営業")              # 2026-04
    world.tick(40 * 86400)                                # May: nothing
    world.tick(30 * 86400)                                # June
    world.group(3, "placed", job="営業")
    r = world.full()
    # June's three are in no figure: not in the total, not in the job's row.
    assert r["outcomes"]["candidates"] == 5 and r["outcomes"]["placed"] == 0
    assert r["outcomes"]["partial"]
    months = {m["month"]: m for m in r["analytics"]["monthly"]}
    assert list(months) == ["2026-04", "2026-05", "2026-06"]
    assert months["2026-05"]["offers"] == 0 and months["2026-05"]["suppressed"]
    assert months["2026-06"]["suppressed"] and months["2026-06"]["placed"] is None
    assert months["2026-04"]["registered"] == 5
    # A period that differs by days covers the same whole months: the same figures.
    day = dt.date(2026, 6, 2)
    assert world.full(since=dt.date(2026, 4, 1))["outcomes"] == \
        world.full(since=dt.date(2026, 4, 20))["outcomes"]
    assert world.full(since=day)["outcomes"]["suppressed"]


def test_each_forward_counts_once_with_its_latest_status(world: Outcomes) -> None:
    forwards = world.group(5, "registered")
    day = world.now.date()
    world.tick(86400)
    world.outcomes.record("default", forwards[0], "placed", day + dt.timedelta(days=1))
    world.outcomes.record("default", forwards[1], "interviewing", day)  # same day: further on
    world.outcomes.record("default", forwards[2], "placed", day)
    world.tick(86400)
    world.outcomes.record("default", forwards[2], "not_placed", day + dt.timedelta(days=2))
    out = world.full()["outcomes"]
    assert (out["registered"], out["interviewing"], out["placed"], out["not_placed"]) == \
        (2, 1, 1, 1)
    # As of the end of the period's last month, whatever day it names: a period ending on
    # the first day does not replay that day's statuses (3 registered, 1 placed then), which
    # would tell on which day one candidate's status changed (attack review).
    assert world.full(until=day)["outcomes"] == out


def test_the_cli_prints_outcomes_and_analytics(world: Outcomes, tmp_path: Path) -> None:
    world.group(5, "placed", job="営業", channel="web")
    world.group(4, "registered", job="経理", channel="web")
    config = tmp_path / "career-relay.toml"
    from tests.test_ledger_rules import config_toml
    config.write_text(config_toml(world.config) + "[[companies]]\nid = \"acme\"\n"
                      "name = \"アクメ\"\ndomains = [\"acme.example\"]\n", encoding="utf-8")
    done = run_cli("report", "--config", str(config), "--format", "json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["outcomes"]["placed"] == 5 and row["outcomes"]["registered"] == 4
    jobs = _named(row["analytics"]["by_job"])
    assert jobs["経理"]["suppressed"] is True and jobs["経理"]["candidates"] is None
    assert jobs["営業"]["suppressed"] is True  # held back: 9 - 5 would be 4
    # web is the same two cells (job, channel and stage together): held back as well.
    assert _named(row["analytics"]["by_channel"])["web"]["candidates"] is None
    csv = run_cli("report", "--config", str(config), "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    header, line = csv.stdout.splitlines()[:2]
    values = dict(zip(header.split(","), line.split(","), strict=True))
    assert values["outcomes_placed"] == "5" and values["outcomes_registered"] == "4"


def test_the_consent_page_says_outcomes_go_to_the_company_only_in_groups_of_five(
        make_config: Any) -> None:
    """Item 4: a new notice version, and a new receipt keeps the one its candidate saw."""
    from tests.test_site import Harness

    harness = Harness(make_config())
    try:
        link = harness.link(harness.offer())
        assert "5人以上の組ごとの人数としてだけ" in harness.get(link).text
        assert "groups of at least 5 people" in harness.get(f"{link}?lang=en").text
        harness.accept(link)
        (receipt,) = harness.rows("receipts")
        (notice,) = harness.rows("notices", "hash = ?", receipt["notice_hash"])
        assert "5人以上の組ごとの人数としてだけ" in notice["text"]
        assert receipt["notice_version"] == notice["version"] == \
            f"ja-{receipt['notice_hash'][:12]}"
    finally:
        harness.close()


def test_the_admin_page_csv_and_chart_show_a_group_of_four_as_fewer_than_five(
        make_config: Any, backend_url: str) -> None:
    from career_relay.ledger import Outcomes as Reported
    from tests.test_admin import _csv, _harness

    for admin in _harness(make_config, backend_url):
        reported = Reported(admin.ledger, admin.rules)
        for n, status, job, channel in ((5, "placed", "営業", "web"),
                                        (4, "registered", "経理", "web"),
                                        (6, "interviewing", "開発", "fair")):
            for offer in admin.qualify(n, job=job, channel=channel):
                (forward,) = admin.rows("forwards", "offer_id = ?", offer.id)
                assert reported.record("default", forward["id"], status,
                                       dt.datetime.now(dt.UTC).date())
        admin.login("hr@acme.example")
        page = admin.get("/admin/")
        assert page.status == 200 and 'id="outcomes-jobs"' in page.text
        jobs = page.text.split('id="outcomes-jobs"')[1].split("</table>")[0]
        assert "<th scope=\"row\">経理</th>" in jobs and "5人未満" in jobs
        assert "非公開（差し引き防止）" in jobs  # 営業, else 15 - 6 - 5 = 4
        channels = page.text.split('id="outcomes-channels"')[1].split("</table>")[0]
        # The cells are job, channel and stage together: web's are 営業's 5 (held back)
        # and 経理's 4, so web shows nothing; fair shows 開発's 6 of its 10.
        assert '<td class="num">5</td>' not in channels and "非公開（差し引き防止）" in channels
        assert '<td class="num">6</td>' in channels
        header, *rows = _csv(admin.get("/admin/export/outcomes-jobs.csv"))
        by_name = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
        assert by_name["経理"]["登録"] == "5人未満" and by_name["経理"]["案内"] == "4"
        assert by_name["開発"]["選考中"] == "6"
        months = _csv(admin.get("/admin/export/outcomes-monthly.csv"))
        assert len(months) == 2 and months[1][months[0].index("選考中")] == "6"
        chart = admin.get("/admin/charts/outcomes.svg")
        assert chart.status == 200 and b"<script" not in chart.body
        assert admin.get("/admin/export/outcomes-nope.csv").status == 404
        admin.login("hr@kumo.example")
        assert admin.get("/admin/export/outcomes-jobs.csv?company=acme").status == 404


def test_a_job_less_a_stage_reveals_no_one_the_company_placed_in_both(world: Outcomes) -> None:
    """The attack review's differencing: the company names jobs and stages itself, puts one
    target in job A at stage S2 beside six in A at S1 and six in B at S2.  With cells of
    each dimension alone, job A (7) less stage S1 (6) was the target, placed.  With cells
    of job, channel and stage together the target's cell (1) is left out with the next
    smallest (A at S1), so A and S1 are held back and B and S2 are the same six."""
    world.group(6, "registered", job="A", stage="S1")
    world.group(6, "registered", job="B", stage="S2")
    world.group(1, "placed", job="A", stage="S2")  # the target
    r = world.full()
    jobs, stages = _named(r["analytics"]["by_job"]), _named(r["analytics"]["by_stage"])
    assert jobs["A"]["suppressed"] and stages["S1"]["suppressed"]
    assert (jobs["B"]["candidates"], jobs["B"]["placed"]) == (6, 0)
    assert (stages["S2"]["candidates"], stages["S2"]["placed"]) == (6, 0)
    shown = [row for row in (*jobs.values(), *stages.values()) if not row["suppressed"]]
    total = r["outcomes"]["candidates"]
    # Every shown row, and the total less any of them, is 0 or at least K candidates.
    assert all(row["candidates"] >= K and total - row["candidates"] >= K for row in shown)


def _shape(report: dict[str, Any]) -> dict[str, Any]:
    """What a table shows of each row but its status counts: which rows, suppressed or not,
    why, partial or not, and of how many candidates."""
    return {table: {row["name"] if "name" in row else row["month"]:
                    (row["suppressed"], row["reason"], row["partial"], row["candidates"])
                    for row in report["analytics"][table]}
            for table in ("by_job", "by_channel", "by_stage", "monthly")}


def test_an_outcome_on_a_candidate_alone_in_a_cell_moves_no_row(world: Outcomes) -> None:
    """The second attack review: with groups of the candidates reported on, one candidate
    alone in a cell (job eng, channel solo) turned a neighbouring row held back or partial
    when the agency reported on them.  Groups are of the candidates forwarded: an outcome
    changes status counts only, in rows of at least 5."""
    world.group(5, "registered", job="eng", channel="web")
    world.group(5, "registered", job="ops", channel="web")
    (target,) = world.group(1, None, job="eng", channel="solo")
    before = world.full()
    assert world.outcomes.record("default", target, "placed", world.now.date())
    after = world.full()
    assert _shape(after) == _shape(before)
    assert after["outcomes"]["candidates"] == before["outcomes"]["candidates"] == 11
    jobs = _named(after["analytics"]["by_job"])
    assert jobs["eng"]["placed"] in (None, 0)  # the target's cell is never shown


def test_a_month_reads_the_same_whatever_period_ends_the_report(world: Outcomes) -> None:
    """The second attack review: with outcomes as of the period's (last month's) end, the
    same month as of two ends differed by one candidate's new status.  They count as of now."""
    world.group(5, "registered", job="eng")
    world.group(5, "registered", job="ops")
    (target,) = world.group(1, None, job="eng", channel="solo")
    month_end = world.now.date().replace(day=28)
    world.tick(40 * 86400)
    assert world.outcomes.record("default", target, "placed", world.now.date())
    early = world.full(until=month_end)
    late = world.full()
    first = early["analytics"]["monthly"][0]
    assert first == next(m for m in late["analytics"]["monthly"] if m["month"] == first["month"])
    assert early["outcomes"] == late["outcomes"]
