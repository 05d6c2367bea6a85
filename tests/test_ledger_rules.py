"""The ledger's rules (SPEC 8): exact counting, credits, redemption, concurrency, tampering.

Scripted histories run through the real code (offers, ``Consents``, the
outbox and its deliveries) with a frozen clock, on each backend (``backend_url``: a
real SQLite file, then a database on a private PostgreSQL); the report's every field
is compared with what the history must give.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import multiprocessing
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest

from career_relay import settings as settings_mod
from career_relay.consent import Client, Consents, Notice
from career_relay.errors import LedgerConflict
from career_relay.ledger import (
    Book,
    ConsentLedger,
    Ledger,
    NoCreditAvailable,
    Offer,
    Receipt,
    Rejection,
    Rules,
    open_configured,
    reports,
)
from career_relay.ledger.postgres import _Connection as PostgresConnection
from tests.conftest import run_cli

T0 = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1"
NOTICE = Notice.of("notice shown to the candidate", "ja")


def _config(tmp_path: Path, credit_every: int = 10, url: str = "") -> dict[str, Any]:
    """The settings of a test ledger: the file ``ledger.db``, or PostgreSQL at ``url`` with
    the head file where SQLite keeps it (``<path>.head``), so tests of it read one path."""
    path = str(tmp_path / "ledger.db")
    return {
        "ledger": {"path": path, "credit_every": credit_every, "url": url,
                   "head_file": f"{path}.head" if url else ""},
        "site": {"review_window": 30},
        "secrets": {"signing_keys": ["test-key-0123456789"], "hash_key": "hash-key"},
        "companies": [{"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"]},
                      {"id": "kumo", "name": "株式会社クモ", "domains": ["kumo.example"]}],
    }


def _settings(tmp_path: Path, credit_every: int = 10, url: str = "") -> settings_mod.Settings:
    return settings_mod.from_mapping(_config(tmp_path, credit_every, url), base=tmp_path)


def config_toml(config: Mapping[str, Any]) -> str:
    """``config``'s ledger and secrets as a career-relay.toml, for the CLI."""
    lines = []
    for section in ("ledger", "secrets"):
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in config[section].items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class World:
    """A ledger, a clock that only moves when told, and the consent rules over them."""

    def __init__(self, tmp_path: Path, credit_every: int = 10, url: str = "") -> None:
        self.config = _config(tmp_path, credit_every, url)
        self.settings = settings_mod.from_mapping(self.config, base=tmp_path)
        self.path = Path(self.settings.ledger.path)
        self.url = url  # "" for SQLite
        self.now = T0
        self.ledger: Ledger = open_configured(self.settings, clock=lambda: self.now)
        self.store = ConsentLedger(self.ledger, Rules.from_settings(self.settings))
        self.consents = Consents(self.settings, self.store)
        self.book = Book(self.ledger, Rules.from_settings(self.settings))
        self._n = 0

    def tick(self, seconds: float = 60) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def offer(self, email: str, company: str = "acme") -> Offer:
        self._n += 1
        return self.ledger.record_offer(company, f"<m{self._n}@{company}.example>", email)

    def accept(self, offer: Offer, email: str | None = None, ua: str = IPHONE,
               wait: float = 300) -> Receipt:
        self.tick(wait)
        profile = {"name": "候補者", "email": email or offer.recipient}
        return self.consents.accept(offer, NOTICE, profile, False, Client(ua, "198.51.100.7"))

    def decline(self, offer: Offer) -> Receipt:
        self.tick()
        return self.consents.decline(offer, NOTICE, Client(IPHONE, "198.51.100.7"))

    def withdraw(self, offer: Offer) -> None:
        self.tick()
        self.consents.withdraw(offer, "ja", Client(IPHONE, "198.51.100.7"))

    def deliver(self) -> int:
        """The agency takes everything due, in order, until nothing is left."""
        sent = 0
        while True:
            self.tick(1)
            due = self.store.claim_due(100, 60)
            if not due:
                return sent
            for forward in due:
                self.store.delivered(forward.id)
                sent += 1

    def qualified_then_deliver(self, count: int, company: str = "acme",
                               start: int = 0) -> None:
        for i in range(start, start + count):
            self.accept(self.offer(f"cand{i}@example.net", company))
        self.deliver()

    def report(self, company: str = "acme", **period: dt.date) -> dict[str, Any]:
        when = reports.period(period.get("since"), period.get("until"), self.now.date())
        (row,) = reports.report(self.ledger, [company], when, self.settings.ledger.credit_every)
        return row

    def rows(self, sql: str, *args: Any) -> list[Any]:
        with self.ledger.read() as conn:
            return conn.execute(sql, args).fetchall()


@pytest.fixture
def world(tmp_path: Path, backend_url: str) -> Iterator[World]:
    opened = World(tmp_path, url=backend_url)
    yield opened
    opened.ledger.close()


def test_the_tenth_qualified_forward_mints_one_credit_the_twentieth_a_second(
        world: World) -> None:
    world.qualified_then_deliver(9)
    assert world.report()["qualified_forwards"] == 9
    assert world.report()["credits_earned"] == 0
    assert world.report()["progress_to_next_credit"] == 9
    world.qualified_then_deliver(1, start=9)
    r = world.report()
    assert (r["qualified_forwards"], r["credits_earned"], r["progress_to_next_credit"]) == (
        10, 1, 0)
    world.qualified_then_deliver(9, start=10)
    assert world.report()["credits_earned"] == 1
    world.qualified_then_deliver(1, start=19)
    r = world.report()
    assert (r["qualified_forwards"], r["credits_earned"], r["credits_available"]) == (20, 2, 2)
    credits = world.book.credits("acme")
    assert [c["n"] for c in credits] == [1, 2]
    # Each credit names exactly the ten forwards it counts, none twice.
    counted = [f for c in credits for f in c["forwards"]]
    assert len(counted) == 20 == len(set(counted))
    assert world.book.verify() == (world.rows("SELECT COUNT(*) FROM entries")[0][0], None)


def test_what_does_not_qualify(world: World) -> None:
    # Qualifies: three distinct outside candidates.
    for i in range(3):
        world.accept(world.offer(f"ok{i}@example.net"))
    # The same candidate again (a second rejection, another message): counted once.
    world.accept(world.offer("OK0@Example.net"))
    # The company's own address, and one it typed on the form.
    world.accept(world.offer("staff@acme.example"))
    world.accept(world.offer("outside@example.net"), email="me@acme.example")
    # Declined, and accepted then withdrawn before delivery (never reaches the agency).
    world.decline(world.offer("no@example.net"))
    withdrawn = world.offer("changed-mind@example.net")
    world.accept(withdrawn)
    world.withdraw(withdrawn)
    # Held for review: a scanner's user agent; one rejected, one never reviewed.
    held_rejected = world.accept(world.offer("scan1@example.net"), ua="python-requests/2.31")
    world.accept(world.offer("scan2@example.net"), ua="HeadlessChrome/120")
    world.store.review(held_rejected.id, approve=False, by="ops")
    # Held because it came within the review window, then approved: qualifies.
    quick = world.accept(world.offer("quick@example.net"), wait=5)
    world.store.review(quick.id, approve=True, by="ops")
    world.deliver()
    r = world.report()
    assert r["offers"] == 11
    assert r["accepted"] == 10 and r["declined"] == 1 and r["withdrawn"] == 1
    # Delivered: 3 ok + duplicate + 2 own-domain + the approved one (7); not the withdrawn,
    # the rejected or the pending review.
    assert r["forwards_delivered"] == 7
    assert r["qualified_forwards"] == 4
    assert r["under_review"] == 1
    assert r["progress_to_next_credit"] == 4 and r["credits_earned"] == 0


def test_one_mailbox_qualifies_once_however_many_addresses_it_types(world: World) -> None:
    """SPEC 8: the candidate is the address the offer was made to.  Ten rejections to one
    mailbox, accepted with ten different typed addresses, are one qualified forward, not
    a free referral."""
    for i in range(10):
        world.accept(world.offer("farm@example.net"), email=f"alias{i}@example.org")
    assert world.deliver() == 10  # the agency still gets what each consent gave
    r = world.report()
    assert (r["forwards_delivered"], r["qualified_forwards"], r["credits_earned"]) == (10, 1, 0)
    # And one real person typing the farm's address on their own offer is still counted.
    world.accept(world.offer("real@example.net"), email="farm@example.net")
    world.deliver()
    assert world.report()["qualified_forwards"] == 2


def test_a_withdrawal_after_qualifying_takes_nothing_back(world: World) -> None:
    offers = [world.offer(f"c{i}@example.net") for i in range(10)]
    for offer in offers:
        world.accept(offer)
    world.deliver()
    assert world.report()["credits_earned"] == 1
    world.withdraw(offers[0])
    assert world.deliver() == 1  # the agency is told to delete
    r = world.report()
    assert (r["withdrawn"], r["qualified_forwards"], r["credits_earned"]) == (1, 10, 1)
    # The candidate comes back later: still the same candidate, not a second qualifier.
    world.accept(offers[0])
    world.deliver()
    assert world.report()["qualified_forwards"] == 10


def test_companies_count_separately(world: World) -> None:
    world.qualified_then_deliver(10, "acme")
    world.qualified_then_deliver(3, "kumo")  # the same addresses: another company
    assert world.report("acme")["credits_earned"] == 1
    kumo = world.report("kumo")
    assert (kumo["qualified_forwards"], kumo["credits_earned"]) == (3, 0)


def test_redeem_uses_a_credit_and_refuses_when_none_is_left(world: World) -> None:
    with pytest.raises(NoCreditAvailable, match="no free referral credit available"):
        world.book.redeem("acme", by="hr@acme.example")
    world.qualified_then_deliver(10)
    credit = world.book.redeem("acme", by="hr@acme.example", note="2026年4月 経理職")
    assert world.book.credits("acme")[0]["id"] == credit
    assert world.book.credits("acme")[0]["note"] == "2026年4月 経理職"
    r = world.report()
    assert (r["credits_earned"], r["credits_redeemed"], r["credits_available"]) == (1, 1, 0)
    with pytest.raises(NoCreditAvailable):
        world.book.redeem("acme", by="hr@acme.example")
    assert world.book.verify()[1] is None


def test_every_report_field_for_a_period(world: World) -> None:
    world.ledger.count("acme", "unmarked_rejections")
    world.ledger.record_rejection("acme", "<r1@acme.example>",
                                  [("a@example.net", "OfferIdAAAA1"),
                                   ("b@example.net", "OfferIdBBBB2")])
    world.ledger.count("acme", "not_injected")
    a = world.ledger.offer("OfferIdAAAA1")
    b = world.ledger.offer("OfferIdBBBB2")
    assert a is not None and b is not None
    world.consents.view(a)
    world.consents.view(b)
    world.accept(a)
    world.decline(b)
    world.deliver()
    r = world.report()
    expected = {
        "company": "acme", "since": "2000-01-01", "until": "2026-04-01",
        "rejections": 1, "offers": 2, "offers_by_source": {"relay": 2, "api": 0, "link": 0},
        "not_injected": 1, "unmarked_rejections": 1, "views": 2,
        "accepted": 1, "declined": 1, "withdrawn": 0, "erased": 0,
        "forwards_delivered": 1, "qualified_forwards": 1, "under_review": 0,
        "credits_earned": 0, "credits_redeemed": 0, "credits_available": 0,
        "progress_to_next_credit": 1, "credit_every": 10,
        "credits_requested": 0, "credits_fulfilled": 0, "recovered_value": 0,
        # No outcome reported: a group of none is one of fewer than 5 (issue 15 item 4): a
        # row of zeros that became "fewer than 5" would tell that the agency reported.
        "outcomes": {"candidates": None, "registered": None, "interviewing": None,
                     "placed": None, "not_placed": None, "unreachable": None,
                     "suppressed": True, "reason": "fewer_than_5", "partial": False},
    }
    assert r == expected
    # A period before any of it counts nothing; the balance is as of its end.
    empty = world.report(since=dt.date(2026, 3, 1), until=dt.date(2026, 3, 31))
    assert all(empty[k] == 0 for k in expected if k not in ("company", "since", "until",
                                                            "credit_every", "offers_by_source",
                                                            "outcomes"))
    assert empty["offers_by_source"] == {"relay": 0, "api": 0, "link": 0}


def test_offers_by_source(world: World) -> None:
    """SPEC 8 ``offers_by_source``: the gateway's, the API's and the link's offers (SPEC 10),
    through every write path; relay is what the other two are not."""
    world.ledger.record_rejection("acme", "<r1@acme.example>",
                                  [("a@example.net", "OfferIdAAAA1"),
                                   ("b@example.net", "OfferIdBBBB2")])
    (api,) = world.ledger.record_rejections([Rejection(
        "acme", "<api1@acme.example>", (("c@example.net", "OfferIdCCCC3"),), source="api")])
    link = world.ledger.record_offer("acme", "<link1@acme.example>", "d@example.net",
                                     source="link")
    world.ledger.record_offer("kumo", "<k1@kumo.example>", "e@example.net", source="api")
    assert api == {"c@example.net": "OfferIdCCCC3"} and link.source == "link"
    found = world.ledger.offer("OfferIdCCCC3")
    assert found is not None and found.source == "api"
    assert world.ledger.offer("OfferIdAAAA1").source == "relay"  # type: ignore[union-attr]
    # A retried API submission finds its offer and adds nothing.
    again = world.ledger.record_rejections([Rejection(
        "acme", "<api1@acme.example>", (("c@example.net", "OfferIdOther9"),), source="api")])
    assert again == [{"c@example.net": "OfferIdCCCC3"}]
    r = world.report()
    assert r["offers"] == 4 and r["rejections"] == 2
    assert r["offers_by_source"] == {"relay": 2, "api": 1, "link": 1}
    assert reports.flat(r)["offers_api"] == 1
    before = world.report(since=dt.date(2026, 3, 1), until=dt.date(2026, 3, 31))
    assert before["offers_by_source"] == {"relay": 0, "api": 0, "link": 0}
    assert world.book.verify()[1] is None
    with pytest.raises(ValueError, match="unknown offer source"):
        world.ledger.record_offer("acme", "<x@acme.example>", "x@example.net",
                                  source="smtp")  # type: ignore[arg-type]


def test_report_details_by_job_and_channel_and_time_to_decide(world: World) -> None:
    for i, (job, channel) in enumerate([("経理", "求人媒体"), ("経理", "自社サイト"),
                                        ("営業", "求人媒体")]):
        offer = world.ledger.record_offer("acme", f"<d{i}@acme.example>",
                                          f"d{i}@example.net", job=job, channel=channel)
        if i == 0:
            world.accept(offer, wait=7200)  # two hours after the rejection
    when = reports.period(None, None, world.now.date())
    (r,) = reports.report(world.ledger, ["acme"], when, 10, details=True)
    assert r["by_job"][0] == {"name": "経理", "offers": 2, "accepted": 1, "opt_in_rate": 0.5}
    assert {c["name"]: c["accepted"] for c in r["by_channel"]} == {"求人媒体": 1,
                                                                    "自社サイト": 0}
    assert r["decision_hours"] == {"decided": 1, "median": 2.0}
    assert r["monthly"] == [{"month": "2026-04", "offers": 3, "accepted": 1, "qualified": 0}]


def test_report_details_ties_by_name_and_months_from_both_sides(world: World) -> None:
    """The details add up one read of offer_stats: jobs and channels with as many offers
    in byte order of their names (no job: ''), a month with accepts and no offers, and
    only the offers of the period (docs/performance.md, "Both backends")."""
    made = {}
    for i, (job, channel) in enumerate([("営業", "b"), ("SRE", "a"), (None, "a"),
                                        ("営業", "a"), ("SRE", "b"), (None, "c")]):
        made[i] = world.ledger.record_offer("acme", f"<t{i}@acme.example>",
                                            f"t{i}@example.net", job=job, channel=channel)
    world.tick(40 * 86400)  # into the next month: an accept there, and an offer after it
    world.accept(made[1])
    world.ledger.record_offer("acme", "<t9@acme.example>", "t9@example.net", job="SRE")
    (r,) = reports.report(world.ledger, ["acme"], reports.period(None, None, world.now.date()),
                          10, details=True)
    month, later = T0.strftime("%Y-%m"), world.now.strftime("%Y-%m")
    assert [(j["name"], j["offers"], j["accepted"]) for j in r["by_job"]] == [
        ("SRE", 3, 1), ("", 2, 0), ("営業", 2, 0)]
    assert [(c["name"], c["offers"]) for c in r["by_channel"]] == [
        ("a", 3), ("b", 2), ("", 1), ("c", 1)]
    assert r["monthly"] == [{"month": month, "offers": 6, "accepted": 0, "qualified": 0},
                            {"month": later, "offers": 1, "accepted": 1, "qualified": 0}]
    assert r["offers"] == 7
    # The first month only: the accept and the later offer fall outside it.
    end = (T0 + dt.timedelta(days=1)).date()
    (first,) = reports.report(world.ledger, ["acme"], reports.period(None, end, end), 10,
                              details=True)
    assert first["offers"] == 6 and first["monthly"] == [
        {"month": month, "offers": 6, "accepted": 0, "qualified": 0}]
    assert [(j["name"], j["offers"], j["accepted"]) for j in first["by_job"]] == [
        ("", 2, 0), ("SRE", 2, 1), ("営業", 2, 0)]


def test_the_monthly_trend_shows_empty_months_as_zero(world: World) -> None:
    """Issue 14 item 5: the monthly chart skipped a month without offers, so April and June
    stood side by side as if May had not happened."""
    world.ledger.record_offer("acme", "<m1@acme.example>", "m1@example.net")  # 2026-04
    world.tick(61 * 86400)  # June
    world.ledger.record_offer("acme", "<m2@acme.example>", "m2@example.net")
    (r,) = reports.report(world.ledger, ["acme"], reports.period(None, None, world.now.date()),
                          10, details=True)
    assert [(m["month"], m["offers"]) for m in r["monthly"]] == [
        ("2026-04", 1), ("2026-05", 0), ("2026-06", 1)]
    assert r["monthly"][1] == {"month": "2026-05", "offers": 0, "accepted": 0, "qualified": 0}
    # A period that was asked for: its every month, before and after the data too.
    asked = reports.period(dt.date(2026, 2, 1), dt.date(2026, 7, 31), world.now.date())
    (r,) = reports.report(world.ledger, ["acme"], asked, 10, details=True)
    assert [m["month"] for m in r["monthly"]] == [
        "2026-02", "2026-03", "2026-04", "2026-05", "2026-06", "2026-07"]
    # A typed period of centuries keeps to the months with data and those between.
    huge = reports.period(dt.date(1900, 1, 1), dt.date(2999, 12, 31), world.now.date())
    (r,) = reports.report(world.ledger, ["acme"], huge, 10, details=True)
    assert [m["month"] for m in r["monthly"]] == ["2026-04", "2026-05", "2026-06"]


def test_a_period_keeps_to_the_years_a_report_can_name() -> None:
    """Attack review: ``until=9999-12-31`` overflowed the day after it (a 500 on the admin
    pages, a traceback from ``report``), and a year before 1000 broke the month keys
    (``strftime("%Y")`` is not padded there)."""
    today = dt.date(2026, 4, 1)
    for since, until, field in ((dt.date(1, 1, 1), None, "since"),
                                (dt.date(999, 1, 1), None, "since"),
                                (None, dt.date(9999, 12, 31), "until"),
                                (None, dt.date(3000, 1, 1), "until"),
                                (dt.date(1, 1, 1), dt.date(9999, 12, 31), "since")):
        with pytest.raises(reports.PeriodError) as caught:
            reports.period(since, until, today)
        assert caught.value.field == field
        assert str(caught.value).startswith(f"{field}: ") and "1000" in str(caught.value)
        assert "2999" in str(caught.value)
    widest = reports.period(dt.date(1000, 1, 1), dt.date(2999, 12, 31), today)
    assert widest.params["end"] == "3000-01-01T00:00:00Z"
    assert widest.params["start"] == "1000-01-01T00:00:00Z"
    # Month keys are four digits whatever the year (the helper takes any Period).
    early = reports.Period(dt.date(999, 11, 1), dt.date(1000, 1, 31))
    assert [m for m, _ in reports._every_month({"0999-12": [1, 0, 0]}, early)] == [
        "0999-11", "0999-12", "1000-01"]


# -- concurrency ----------------------------------------------------------------------------


def _deliver_half(config: dict[str, Any], receipts: list[str]) -> None:
    settings = settings_mod.from_mapping(config, base=Path(config["ledger"]["path"]).parent)
    with open_configured(settings) as ledger:
        store = ConsentLedger(ledger, Rules.from_settings(settings))
        for receipt in receipts:
            store.review(receipt, approve=True, by="ops")
            for forward in store.claim_due(5, 60):
                store.delivered(forward.id)
        while due := store.claim_due(5, 60):
            for forward in due:
                store.delivered(forward.id)


def test_two_processes_approving_at_once_never_mint_a_credit_twice(world: World) -> None:
    """Two processes on one SQLite file, or two hosts on one PostgreSQL database."""
    held = [world.accept(world.offer(f"h{i}@example.net"), wait=1).id for i in range(40)]
    world.ledger.close()
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_deliver_half, args=(world.config, held[i::2]))
               for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    world.ledger = open_configured(world.settings)
    assert world.rows("SELECT COUNT(*) FROM qualified") == [(40,)]
    assert world.rows("SELECT n FROM credits ORDER BY n") == [(1,), (2,), (3,), (4,)]
    assert world.rows("SELECT COUNT(*) FROM outbox") == [(0,)]
    assert world.rows("SELECT COUNT(*) FROM forward_events WHERE event = 'delivered'") == [
        (40,)]
    assert Book(world.ledger, Rules.from_settings(world.settings)).verify()[1] is None


# -- tamper evidence ------------------------------------------------------------------------

#: A statement for both backends, or its spelling in each ({"sqlite": ..., "postgresql": ...}).
Statement = str | Mapping[str, str]


@contextlib.contextmanager
def behind_the_ledgers_back(world: World) -> Iterator[Any]:
    """A connection (taking the ledger's SQL) past the append-only rules, as someone with
    the database can have one: SQLite's file with its triggers dropped, or PostgreSQL's
    superuser with every trigger disabled (foreign keys too; enabled again afterwards).
    The world's ledger is closed first; what is done is committed at the end."""
    world.ledger.close()
    if not world.url:
        with contextlib.closing(sqlite3.connect(world.path)) as conn, conn:
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                        ).fetchall():
                conn.execute(f"DROP TRIGGER {name}")
            yield conn
        return
    with psycopg.connect(world.url) as raw:  # one transaction, committed at the end
        tables = [str(t) for (t,) in raw.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            raw.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
        yield PostgresConnection(raw)
        for table in tables:
            raw.execute(f"ALTER TABLE {table} ENABLE TRIGGER ALL")


def _tampered(world: World, *statements: Statement) -> str:
    """Run ``statements`` behind the ledger's back; what verify says (it must say something)."""
    backend = "postgresql" if world.url else "sqlite"
    with behind_the_ledgers_back(world) as conn:
        for statement in statements:
            conn.execute(statement if isinstance(statement, str) else statement[backend])
    with open_configured(world.settings) as ledger:
        _, problem = Book(ledger, Rules.from_settings(world.settings)).verify()
    assert problem is not None, "the change went unnoticed"
    return str(problem)


def _history(tmp_path: Path, url: str = "") -> World:
    world = World(tmp_path, url=url)
    world.qualified_then_deliver(10)
    world.book.redeem("acme", by="hr")
    return world


@pytest.fixture
def history(tmp_path: Path, backend_url: str) -> Iterator[World]:
    world = _history(tmp_path, backend_url)
    yield world
    world.ledger.close()


def test_an_untouched_ledger_verifies(history: World) -> None:
    count, problem = history.book.verify()
    assert problem is None and count > 30


@pytest.mark.parametrize(("statements", "named"), [
    (["UPDATE entries SET body = replace(body, '}', ',\"x\":1}') WHERE seq = 20"],
     "entry 20: altered"),
    (["UPDATE entries SET created = '2020-01-01T00:00:00Z' WHERE seq = 7"], "entry 7: altered"),
    (["DELETE FROM entries WHERE seq = 12"], "entry 12: missing"),
    (["UPDATE entries SET seq = -5 WHERE seq = 4", "UPDATE entries SET seq = 4 WHERE seq = 5",
      "UPDATE entries SET seq = 5 WHERE seq = -5"], "entry 4"),
    (["DELETE FROM entries WHERE seq = (SELECT MAX(seq) FROM entries)"], "redemption"),
    (["UPDATE receipts SET decision = 'decline' WHERE rowid = 3"], "was altered"),
    (["DELETE FROM receipts WHERE rowid = 2"], "was deleted"),
    (["UPDATE qualified SET candidate = 'x' WHERE n = 2"], "does not match"),
    (["DELETE FROM credits"], "credit"),
    (["UPDATE redemptions SET note = 'something else'"], "does not match"),
    (["UPDATE credits SET company = 'kumo'"], "credit"),  # moved to another company
    (["UPDATE qualified SET company = 'kumo' WHERE n = 3"], "does not match"),
    (["UPDATE credits SET created = '2020-01-01T00:00:00Z'"], "does not match"),
])
def test_any_change_is_caught_and_named(history: World, statements: list[str],
                                        named: str) -> None:
    assert named in _tampered(history, *statements)


@pytest.mark.parametrize("statement", ["UPDATE reviews SET decision = 'approve'",
                                       "DELETE FROM reviews"])
def test_a_changed_or_deleted_review_is_caught(world: World, statement: str) -> None:
    held = world.accept(world.offer("scan@example.net"), ua="python-requests/2.31")
    world.store.review(held.id, approve=False, by="ops")
    assert "review" in _tampered(world, statement)


def test_append_only_is_enforced_by_the_database(history: World) -> None:
    for statement in ("UPDATE entries SET body = '{}' WHERE seq = 1", "DELETE FROM credits"):
        with pytest.raises(LedgerConflict, match="append-only"), \
                history.ledger.write() as conn:
            conn.execute(statement)
    count, problem = history.book.verify()
    assert problem is None and count > 30


def test_ledger_verify_command_names_the_bad_entry(history: World, tmp_path: Path) -> None:
    config = tmp_path / "career-relay.toml"
    config.write_text(config_toml(history.config), encoding="utf-8")
    ok = run_cli("ledger", "verify", "--config", str(config))
    assert ok.returncode == 0 and "ledger ok" in ok.stdout
    _tampered(history, "UPDATE entries SET ref = 'x' WHERE seq = 9")
    bad = run_cli("ledger", "verify", "--config", str(config))
    assert bad.returncode == 1 and "entry 9" in bad.stderr


# -- withdrawals racing the forwarding worker -----------------------------------------------


def _kinds(world: World, offer: Offer) -> list[tuple[str, str]]:
    return [(f.forward.kind, "delivered" if f.delivered else "cancelled" if f.cancelled
             else "pending") for f in world.store.forwards(offer.id)]


def test_a_withdrawal_after_a_failed_attempt_still_tells_the_agency(world: World) -> None:
    # The attempt timed out: the agency may have stored the consent anyway.
    offer = world.offer("c@example.net")
    world.accept(offer)
    (consent,) = world.store.claim_due(10, 60)
    world.store.failed(consent.id, "timeout", 10)
    world.withdraw(offer)
    world.tick(60)
    world.deliver()
    assert _kinds(world, offer) == [("consent", "cancelled"), ("withdrawal", "delivered")]
    assert world.report()["qualified_forwards"] == 0


def test_a_consent_withdrawn_while_it_is_sent_and_failing_is_not_sent_again(
        world: World) -> None:
    offer = world.offer("c@example.net")
    world.accept(offer)
    (consent,) = world.store.claim_due(10, 60)  # in flight
    world.withdraw(offer)
    world.store.failed(consent.id, "503", 10)
    world.tick(60)
    world.deliver()
    assert _kinds(world, offer) == [("consent", "cancelled"), ("withdrawal", "delivered")]
    assert world.report()["qualified_forwards"] == 0


def test_a_consent_withdrawn_while_it_is_sent_and_arriving_earns_nothing(
        world: World) -> None:
    offer = world.offer("c@example.net")
    world.accept(offer)
    (consent,) = world.store.claim_due(10, 60)
    world.withdraw(offer)
    world.store.delivered(consent.id)  # the agency had it before the withdrawal
    world.deliver()
    assert _kinds(world, offer) == [("consent", "delivered"), ("withdrawal", "delivered")]
    r = world.report()
    assert (r["forwards_delivered"], r["qualified_forwards"]) == (1, 0)
