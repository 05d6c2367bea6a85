"""The agency's side of the ledger (SPEC 11, issue 15 item 2): the feed an agency pulls, the
outcomes it reports (migration 0014), ``ledger verify`` over them, ``ledger.qualify_on``, and
``ledger migrate`` carrying them.  On both backends (``backend_url``) where the ledger decides.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from career_relay import settings as settings_mod
from career_relay.ledger import Book, OutcomeRefused, Outcomes, Rules, copy_to, open_configured
from career_relay.ledger.offers import Offer
from tests.test_ledger_rules import World, _config, _tampered


class AgencyWorld(World):
    def __init__(self, tmp_path: Path, url: str = "", qualify_on: str = "delivered") -> None:
        config = _config(tmp_path, 10, url)
        config["ledger"]["qualify_on"] = qualify_on
        self.config = config
        self.settings = settings_mod.from_mapping(config, base=tmp_path)
        self.path = Path(self.settings.ledger.path)
        self.url = url
        from tests.test_ledger_rules import T0
        self.now = T0
        self.ledger = open_configured(self.settings, clock=lambda: self.now)
        from career_relay.consent import Consents
        from career_relay.ledger import ConsentLedger
        rules = Rules.from_settings(self.settings)
        self.store = ConsentLedger(self.ledger, rules)
        self.consents = Consents(self.settings, self.store)
        self.book = Book(self.ledger, rules)
        self.outcomes = Outcomes(self.ledger, rules)
        self._n = 0

    def consent_ids(self) -> list[str]:
        return [str(r[0]) for r in self.rows(
            "SELECT id FROM forwards WHERE kind = 'consent' ORDER BY rowid")]


@pytest.fixture
def world(tmp_path: Path, backend_url: str) -> Iterator[AgencyWorld]:
    opened = AgencyWorld(tmp_path, backend_url)
    yield opened
    opened.ledger.close()


def _accepted(world: AgencyWorld, n: int, start: int = 0) -> list[Offer]:
    offers = [world.offer(f"cand{i}@example.net") for i in range(start, start + n)]
    for offer in offers:
        world.accept(offer)
    return offers


def test_the_feed_pages_in_order_without_gaps_or_duplicates(world: AgencyWorld) -> None:
    offers = _accepted(world, 5)
    world.withdraw(offers[4])  # before it was delivered: cancelled, no notice needed
    world.deliver()
    world.withdraw(offers[1])  # after: a notice follows it
    seen: list[str] = []
    after = 0
    while page := world.outcomes.feed("default", after, 2):
        assert len(page) <= 2
        seen += [item.forward_id for item in page]
        after = page[-1].n
    made = [str(r[0]) for r in world.rows("SELECT id FROM forwards ORDER BY rowid")]
    assert seen == made and len(made) == 6  # five consents, one withdrawal notice
    kinds = [item.kind for item in world.outcomes.feed("default", 0, 100)]
    assert kinds == ["consent"] * 5 + ["withdrawal"]
    # Offer 4 was withdrawn before it was delivered: the agency never gets its data.
    items = {item.forward_id: item for item in world.outcomes.feed("default", 0, 100)}
    assert items[made[4]].payload is None and "候補者" in (items[made[1]].payload or "")
    assert world.outcomes.feed("other", 0, 100) == []


def test_the_feed_skips_a_forward_held_for_review_and_goes_on(world: AgencyWorld) -> None:
    """The read-only feed skips a held forward (it used to stop before it: one held consent
    held back every later forward of the agency); approved, it is listed in its place."""
    first = _accepted(world, 1)[0]
    held = world.offer("quick@example.net")
    world.accept(held, wait=1)  # within site.review_window: held as automated
    later = _accepted(world, 1, start=5)[0]
    feed = world.outcomes.feed("default", 0, 10)
    assert [i.kind for i in feed] == ["consent", "consent"]
    assert [i.n for i in feed] == sorted(i.n for i in feed) and all(
        i.approved == 0 for i in feed)
    (receipt_id,) = [str(r[0]) for r in world.rows(
        "SELECT id FROM receipts WHERE review IS NOT NULL")]
    world.store.review(receipt_id, approve=True, by="admin")
    feed = world.outcomes.feed("default", 0, 10)
    assert len(feed) == 3 and feed[1].approved > 0  # the approval's chain entry
    assert first.id and later.id


def test_an_outcome_is_one_entry_idempotent_and_checked(world: AgencyWorld) -> None:
    _accepted(world, 2)
    world.deliver()
    one, two = world.consent_ids()
    day = world.now.date()
    made, new = world.outcomes.record("default", one, "registered", day) or (None, False)
    assert new and made is not None and made.status == "registered"
    entries = world.rows("SELECT COUNT(*) FROM entries")[0][0]
    again = world.outcomes.record("default", one, "registered", day)
    assert again == (made, False)
    assert world.rows("SELECT COUNT(*) FROM entries")[0][0] == entries
    # Another agency's forward, an unknown one: the same answer, nothing said.
    assert world.outcomes.record("north", one, "placed", day) is None
    assert world.outcomes.record("default", "fw_nope", "placed", day) is None
    with pytest.raises(OutcomeRefused) as before:
        world.outcomes.record("default", two, "placed", day - dt.timedelta(days=1))
    assert before.value.field == "at"
    with pytest.raises(OutcomeRefused):
        world.outcomes.record("default", two, "placed", day + dt.timedelta(days=2))
    assert world.outcomes.record("default", two, "placed", day + dt.timedelta(days=1))
    assert world.outcomes.record("default", one, "placed", day)
    counts = world.outcomes.counts("acme", day, day + dt.timedelta(days=1))
    assert counts == {"registered": 1, "interviewing": 0, "placed": 2, "not_placed": 0,
                      "unreachable": 0}
    assert world.outcomes.counts("acme", day, day)["placed"] == 1
    assert world.outcomes.counts("kumo", day, day)["placed"] == 0
    assert [o.status for o in world.outcomes.of_forward(one)] == ["registered", "placed"]
    assert world.book.verify()[1] is None


@pytest.mark.parametrize(("statement", "named"), [
    ("UPDATE outcomes SET status = 'placed' WHERE status = 'registered'", "was altered"),
    ("DELETE FROM outcomes WHERE status = 'registered'", "was deleted"),
    ("UPDATE outcomes SET agency = 'north', company = 'acme'", "was altered"),
])
def test_a_tampered_outcome_is_caught(world: AgencyWorld, statement: str, named: str) -> None:
    _accepted(world, 1)
    world.deliver()
    world.outcomes.record("default", world.consent_ids()[0], "registered", world.now.date())
    assert world.book.verify()[1] is None
    problem = _tampered(world, statement)
    assert "outcome" in problem and named in problem


def test_the_database_refuses_changing_an_outcome(world: AgencyWorld) -> None:
    from career_relay.errors import LedgerConflict
    _accepted(world, 1)
    world.outcomes.record("default", world.consent_ids()[0], "registered", world.now.date())
    for sql in ("UPDATE outcomes SET status = 'placed'", "DELETE FROM outcomes"):
        with pytest.raises(LedgerConflict), world.ledger.write() as conn:
            conn.execute(sql)


@pytest.mark.parametrize("qualify_on", ["delivered", "registered"])
def test_qualify_on(tmp_path: Path, backend_url: str, qualify_on: str) -> None:
    world = AgencyWorld(tmp_path, backend_url, qualify_on)
    try:
        _accepted(world, 10)
        ids = world.consent_ids()
        # Four reported before delivery (an agency that pulls), the rest after.
        for forward_id in ids[:4]:
            world.outcomes.record("default", forward_id, "registered", world.now.date())
        world.deliver()
        expected = 10 if qualify_on == "delivered" else 4
        assert world.report()["qualified_forwards"] == expected
        for forward_id in ids[4:9]:
            world.outcomes.record("default", forward_id, "interviewing", world.now.date())
        world.outcomes.record("default", ids[9], "unreachable", world.now.date())
        assert world.report()["qualified_forwards"] == (10 if qualify_on == "delivered" else 9)
        assert world.report()["credits_earned"] == (1 if qualify_on == "delivered" else 0)
        world.outcomes.record("default", ids[9], "not_placed", world.now.date())
        for forward_id in ids:  # later outcomes count nothing twice
            world.outcomes.record("default", forward_id, "placed", world.now.date())
        r = world.report()
        assert (r["qualified_forwards"], r["credits_earned"]) == (10, 1)
        assert world.rows("SELECT COUNT(*) FROM credits")[0][0] == 1
        assert world.book.verify()[1] is None
    finally:
        world.ledger.close()


def test_ledger_migrate_copies_the_outcomes_with_the_chain(tmp_path: Path,
                                                          fresh_postgres_url: str) -> None:
    world = AgencyWorld(tmp_path)
    try:
        _accepted(world, 2)
        world.deliver()
        for forward_id in world.consent_ids():
            world.outcomes.record("default", forward_id, "placed", world.now.date())
        copied = copy_to(world.ledger, fresh_postgres_url)
        assert copied.rows["outcomes"] == 2
        settings = settings_mod.from_mapping(
            {**world.config, "ledger": {**world.config["ledger"], "url": fresh_postgres_url,
                                        "head_file": f"{world.path}.head"}},
            base=tmp_path)
        with open_configured(settings) as target:
            _, problem = Book(target, Rules.from_settings(settings)).verify(copied.head)
            assert problem is None
            counts = Outcomes(target).counts("acme", world.now.date(), world.now.date())
            assert counts["placed"] == 2
    finally:
        world.ledger.close()
