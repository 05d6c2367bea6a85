"""Agencies that pull (``deliver = "pull"``, SPEC 11): the feed is their delivery, and asking
for the page after a cursor acknowledges every forward up to it, recorded delivered as a
webhook's 2xx is (provision, qualification, credits once).  On the real site over a real
ledger, both backends where the ledger decides (``backend_url``); the forwarding worker
against a real local webhook receiver that records every POST; ``check-config`` as a
subprocess.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from career_relay import settings as settings_mod
from career_relay.consent import Client
from career_relay.errors import ConfigError
from career_relay.ledger import Book, outcomes, records, reports
from consent_site.admin_views import STATUS_LABELS, shown
from consent_site.forwarding import Forwarder
from tests.conftest import ConfigMaker, run_cli
from tests.test_agency_api import AgencyApi
from tests.test_api import COMPANIES, PHONE, PUBLIC_URL, _problem
from tests.test_forwarding import Agency
from tests.test_ledger_rules import NOTICE

# "default" takes webhooks (acme's agency); "north" pulls (kumo's).
AGENCIES = """
[[agencies]]
id = "default"
name = "東キャリア株式会社"
webhook_url = "{hook}"
webhook_secret = "whsec-default-0123456789"
license_no = "13-ユ-111111"
privacy_url = "https://east.example/privacy"

[[agencies]]
id = "north"
name = "北日本キャリア株式会社"
deliver = "pull"
license_no = "01-ユ-222222"
privacy_url = "https://north.example/privacy"
"""


class PullApi(AgencyApi):
    def __init__(self, config: Path, receiver: Agency) -> None:
        super().__init__(config)
        self.receiver = receiver
        self.loop.run_until_complete(receiver.start())

    def close(self) -> None:
        self.loop.run_until_complete(self.receiver.stop())
        super().close()

    def delivered(self) -> set[str]:
        """The forwards recorded delivered, by anyone."""
        with self.ledger.read() as conn:
            return {str(r[0]) for r in conn.execute(
                "SELECT forward_id FROM forward_events WHERE event = 'delivered'")}

    def entries(self, kind: str | None = None) -> int:
        with self.ledger.read() as conn:
            if kind is None:
                return int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            return int(conn.execute("SELECT COUNT(*) FROM entries WHERE kind = ?",
                                    (kind,)).fetchone()[0])

    def pages(self, after: str | None = None, limit: int = 100) -> tuple[list[str], str]:
        """north's feed from ``after`` to its end: the ids given, and the last cursor."""
        seen: list[str] = []
        while True:
            page = self.feed(after, key="north", limit=limit)
            assert page.status == 200, page.text
            seen += [item["forward_id"] for item in page.json["items"]]
            after = page.json["next"]
            if not page.json["more"]:
                assert after is not None
                return seen, after

    def events(self, event: str) -> int:
        with self.ledger.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM forward_events WHERE event = ?",
                                    (event,)).fetchone()[0])


def _harness(make_config: ConfigMaker, url: str, acme: str = "default",
             **site: Any) -> Iterator[PullApi]:
    receiver = Agency()
    companies = [{**COMPANIES[0], "agency": acme}, {**COMPANIES[1], "agency": "north"}]
    config = make_config(site={"public_url": PUBLIC_URL, "review_window": 0, **site},
                         ledger={"url": url}, companies=companies, api={"rate_limit": 6000})
    config.write_text(config.read_text(encoding="utf-8") + AGENCIES.format(hook=receiver.url),
                      encoding="utf-8")
    harness = PullApi(config, receiver)
    yield harness
    harness.close()


@pytest.fixture
def api(make_config: ConfigMaker, backend_url: str) -> Iterator[PullApi]:
    yield from _harness(make_config, backend_url)


@pytest.fixture
def sqlite_api(make_config: ConfigMaker) -> Iterator[PullApi]:
    yield from _harness(make_config, "")


@pytest.fixture
def both(make_config: ConfigMaker, backend_url: str) -> Iterator[PullApi]:
    """north pulls for acme and kumo alike."""
    yield from _harness(make_config, backend_url, acme="north")


def test_forwards_are_delivered_only_when_the_next_page_is_asked_for(api: PullApi) -> None:
    made = api.accepted("kumo", 3)
    first = api.feed(key="north", limit=2)
    assert [i["forward_id"] for i in first.json["items"]] == made[:2]
    assert api.delivered() == set()  # given, not yet acknowledged
    assert api.entries("provision") == 0
    second = api.feed(first.json["next"], key="north", limit=2)
    assert [i["forward_id"] for i in second.json["items"]] == made[2:]
    assert api.delivered() == set(made[:2])  # the first page, acknowledged
    assert api.entries("provision") == 2 and api.report("kumo")["forwards_delivered"] == 2
    last = api.feed(second.json["next"], key="north", limit=2)
    assert last.json == {"items": [], "next": second.json["next"], "more": False}
    assert api.delivered() == set(made)
    assert api.report("kumo")["qualified_forwards"] == 3
    assert Book(api.ledger).verify()[1] is None


def test_the_tenth_acknowledged_mints_a_credit_once(api: PullApi) -> None:
    made = api.accepted("kumo", 12)
    page = api.feed(key="north", limit=10)
    assert len(page.json["items"]) == 10 and Book(api.ledger).credits("kumo") == []
    cursor = page.json["next"]
    assert len(api.feed(cursor, key="north", limit=10).json["items"]) == 2
    (credit,) = Book(api.ledger).credits("kumo")
    assert credit["forwards"] == made[:10]
    entries = api.entries()
    for _ in range(2):  # the same cursor again: the same page, nothing more recorded
        again = api.feed(cursor, key="north", limit=10)
        assert [i["forward_id"] for i in again.json["items"]] == made[10:]
    assert api.entries() == entries and len(Book(api.ledger).credits("kumo")) == 1
    assert api.delivered() == set(made[:10])
    report = api.report("kumo")
    assert (report["qualified_forwards"], report["credits_earned"]) == (10, 1)
    assert Book(api.ledger).verify()[1] is None


def test_another_agency_s_or_an_altered_cursor_acknowledges_nothing(api: PullApi) -> None:
    api.accepted("kumo", 3)
    api.accepted("acme", 3)
    north = api.feed(key="north", limit=3).json["next"]
    east = api.feed(key="east", limit=3).json["next"]
    n, _, mac = north.partition(".")
    for bad in (east, f"{int(n) + 100}.{mac}", f"{2**40}.{mac}"):
        _problem(api.feed(bad, key="north"), 400)
    _problem(api.feed(north, key="east"), 400)
    assert api.delivered() == set() and api.entries("provision") == 0


def test_a_webhook_agency_s_pulls_record_nothing(api: PullApi) -> None:
    made = api.accepted("acme", 4)
    entries = api.entries()
    page = api.feed(key="east", limit=2)
    for _ in range(3):
        page = api.feed(page.json["next"], key="east", limit=2)
    assert api.delivered() == set() and api.entries() == entries
    assert [s.pending for f in made for s in _statuses(api, f)] == [True] * 4


def _statuses(api: PullApi, forward_id: str) -> list[Any]:
    forward = api.store.forward(forward_id)
    assert forward is not None
    return [s for s in api.store.forwards(forward.offer_id) if s.forward.id == forward_id]


def test_the_worker_never_posts_a_pull_agency_s_forwards(api: PullApi) -> None:
    pulled = api.accepted("kumo", 3)
    pushed = api.accepted("acme", 2)
    forwarder = Forwarder(api.settings, api.store)
    assert [a.id for a in forwarder.reachable] == ["default"]
    assert forwarder.missing_destination is None  # pulling needs no destination
    for _ in range(3):
        api.loop.run_until_complete(forwarder.run_once())
    assert sorted(fid for _, fid in api.receiver.kinds()) == sorted(pushed)
    # North's wait: never claimed, never attempted, never failing, nothing due for the worker.
    assert api.events("failed") == 0
    assert all(s.pending and s.forward.attempts == 0 for f in pulled for s in _statuses(api, f))
    assert api.store.next_due([a.id for a in forwarder.reachable]) is None
    seen, after = api.pages()
    assert seen == pulled
    api.feed(after, key="north")
    assert api.delivered() == set(pushed) | set(pulled)
    for _ in range(2):
        api.loop.run_until_complete(forwarder.run_once())
    assert len(api.receiver.requests) == 2  # still only acme's, once each


def _held(api: PullApi, company: str = "kumo") -> Any:
    """A consent clicked by a suspected scanner: held for review; its forward."""
    api._n += 1
    offer = api.ledger.record_offer(company, f"<scan{api._n}@x.example>",
                                    f"scanned{api._n}@example.net")
    scanner = Client("Mozilla/5.0 (compatible; Proofpoint URL Defense)", "198.51.100.9")
    api.consents.accept(offer, NOTICE, {"name": "候補者", "email": offer.recipient}, False,
                        scanner)
    (forward,) = [s.forward for s in api.store.forwards(offer.id)]
    return forward


def test_one_held_consent_holds_back_no_company_s_forwards(both: PullApi) -> None:
    """The attack review's repro: a held consent at kumo (anyone can make one through its
    public link) used to stop north's feed, acme's forwards too, until an admin decided."""
    (first,) = both.accepted("acme")
    _held(both, "kumo")
    later = both.accepted("acme", 2) + both.accepted("kumo")
    page = both.feed(key="north", limit=10)
    assert [i["forward_id"] for i in page.json["items"]] == [first, *later]
    assert page.json["more"] is False
    both.feed(page.json["next"], key="north")
    assert both.delivered() == {first, *later}
    assert both.report("acme")["forwards_delivered"] == 3


def test_a_held_forward_approved_comes_late_and_is_acknowledged_after(api: PullApi) -> None:
    (before,) = api.accepted("kumo")
    held = _held(api)
    (after,) = api.accepted("kumo")
    seen, cursor = api.pages()
    assert seen == [before, after]  # the held one skipped, not waited for
    assert api.feed(cursor, key="north").json["items"] == []
    assert api.delivered() == {before, after}
    api.store.review(held.receipt_id, approve=True, by="admin")
    assert api.delivered() == {before, after}  # visible now, but behind the cursor
    provisions = api.entries("provision")
    (new,) = api.accepted("kumo")
    late = api.feed(cursor, key="north", limit=10)
    assert [i["forward_id"] for i in late.json["items"]] == [held.id, new]  # late first
    assert late.json["items"][0]["payload"]["forward_id"] == held.id
    assert api.delivered() == {before, after}  # given, not yet acknowledged
    done = api.feed(late.json["next"], key="north", limit=10)
    assert done.json == {"items": [], "next": late.json["next"], "more": False}
    assert api.delivered() == {before, after, held.id, new}
    assert api.entries("provision") == provisions + 2
    assert api.report("kumo")["qualified_forwards"] == 4
    assert Book(api.ledger).verify()[1] is None


def test_a_late_forward_s_lost_answer_is_given_again_never_lost(api: PullApi) -> None:
    """A page of late forwards alone must not end at the cursor it was asked with: the same
    cursor again is then a retry after a lost answer (the late ones come again, nothing is
    acknowledged), and the cursor it gave acknowledges them."""
    held = [_held(api), _held(api)]
    seen, cursor = api.pages()
    assert seen == []  # both held: skipped
    ahead = api.accepted("kumo")
    seen, cursor = api.pages(cursor)
    assert seen == ahead  # the cursor is past the held ones now
    api.feed(cursor, key="north")
    for forward in reversed(held):  # approved in the other order: given in that order
        api.store.review(forward.receipt_id, approve=True, by="admin")
    first = api.feed(cursor, key="north", limit=1)
    assert [i["forward_id"] for i in first.json["items"]] == [held[1].id]
    assert first.json["more"] is True and first.json["next"] != cursor
    lost = api.feed(cursor, key="north", limit=1)  # the answer never arrived: asked again
    assert lost.json == first.json and api.delivered() == set(ahead)
    second = api.feed(first.json["next"], key="north", limit=1)
    assert [i["forward_id"] for i in second.json["items"]] == [held[0].id]
    assert second.json["more"] is False and api.delivered() == {*ahead, held[1].id}
    api.feed(second.json["next"], key="north", limit=1)
    assert api.delivered() == {*ahead, held[0].id, held[1].id}
    again = api.feed(second.json["next"], key="north", limit=1)
    assert again.json == {"items": [], "next": second.json["next"], "more": False}


def test_a_rejected_forward_is_never_given_nor_acknowledged(api: PullApi) -> None:
    held = _held(api)
    (before,) = api.accepted("kumo")
    api.store.review(held.receipt_id, approve=False, by="admin")
    seen, cursor = api.pages()
    assert seen == [before]
    api.feed(cursor, key="north")
    assert api.delivered() == {before}
    assert [s.cancelled for s in _statuses(api, held.id)] == [True]
    assert api.entries("provision") == 1


def test_a_webhook_agency_s_feed_skips_a_held_forward_and_goes_on(api: PullApi) -> None:
    """East takes webhooks: its feed (to reconcile) skips the held one and lists no late
    ones; approved, the webhook delivers it (the worker's, not the feed's)."""
    (before,) = api.accepted("acme")
    held = _held(api, "acme")
    (after,) = api.accepted("acme")
    page = api.feed(key="east", limit=10)
    assert [i["forward_id"] for i in page.json["items"]] == [before, after]
    api.store.review(held.receipt_id, approve=True, by="admin")
    again = api.feed(page.json["next"], key="east", limit=10)
    assert again.json == {"items": [], "next": page.json["next"], "more": False}
    assert [i["forward_id"] for i in api.feed(key="east", limit=10).json["items"]] == [
        before, held.id, after]  # from the start: in its place
    forwarder = Forwarder(api.settings, api.store)
    api.loop.run_until_complete(forwarder.run_once())
    assert held.id in {fid for _, fid in api.receiver.kinds()}
    assert api.delivered() == {before, held.id, after}


def test_withdrawals_as_the_webhook_worker_handles_them(api: PullApi) -> None:
    """A consent not yet given is cancelled by its withdrawal (the agency never gets it,
    nor a notice); one given in a page may be at the agency: it is followed by the notice,
    recorded delivered once acknowledged, and earns nothing."""
    unseen_offer = api.ledger.record_offer("kumo", "<u@x.example>", "u@example.net")
    seen_offer = api.ledger.record_offer("kumo", "<s@x.example>", "s@example.net")
    for offer in (seen_offer, unseen_offer):
        api.consents.accept(offer, NOTICE, {"name": "候補者", "email": offer.recipient}, False,
                            Client(PHONE, "198.51.100.7"))
    # seen_offer's consent, given; unseen_offer's read as the look-ahead for "more", not given
    first = api.feed(key="north", limit=1)
    (given,) = [i["forward_id"] for i in first.json["items"]]
    for offer in (seen_offer, unseen_offer):
        api.consents.withdraw(offer, "ja", Client(PHONE, "198.51.100.7"))
    seen, cursor = api.pages(first.json["next"])
    kinds = {s.forward.id: (s.forward.kind, s.cancelled)
             for o in (seen_offer, unseen_offer) for s in api.store.forwards(o.id)}
    # The unseen consent (cancelled: null payload), then the seen one's withdrawal notice.
    assert [kinds[f] for f in seen] == [("consent", True), ("withdrawal", False)]
    assert kinds[given] == ("consent", False)
    api.feed(cursor, key="north")
    assert api.delivered() == {given, seen[1]}
    assert api.entries("provision") == 1 and api.entries("notice_sent") == 1
    assert api.report("kumo")["qualified_forwards"] == 0
    assert Book(api.ledger).verify()[1] is None


def test_pull_with_a_destination_is_refused_at_start_up(tmp_path: Path) -> None:
    text = (AGENCIES.format(hook="https://east.example/hook").replace(
        'deliver = "pull"', 'deliver = "pull"\nwebhook_url = "https://north.example/hook"\n'
        'webhook_secret = "whsec-north-0123456789"')
        + '[[companies]]\nid = "kumo"\nname = "kumo"\ndomains = ["kumo.example"]\n'
        'agency = "north"\n')
    path = tmp_path / "career-relay.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"agencies\[north\]\.webhook_url is set but"):
        settings_mod.load(path, env={})
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    line = next(x for x in (result.stdout + result.stderr).splitlines() if "north" in x)
    assert 'agencies[north].deliver is "pull"' in line
    fixed = text.replace('webhook_url = "https://north.example/hook"\n', "")
    path.write_text(fixed, encoding="utf-8")
    assert settings_mod.load(path, env={}).agency_by_id("north").deliver == "pull"  # type: ignore[union-attr]


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_the_feed_reads_one_index_range_on_postgresql(api: PullApi, backend_url: str) -> None:
    """The feed filters by agency and orders by rowid: on PostgreSQL a page is a range of
    ``forwards_agency_feed`` (0016), not every forward the agency ever had, sorted (over
    200,000 forwards of five agencies, without it: a bitmap scan of the agency's and a sort).
    PostgreSQL only: SQLite's index on agency ends with the rowid."""
    api.accepted("kumo", 2)
    with api.ledger.read() as conn:
        # A table this small would be read whole, and the planner's choice between a bitmap
        # and a sort turns on statistics other tests left: with those paths off, what is
        # left is whether the index gives the page in its order (it does, or a Sort shows).
        conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off;"
                     " SET enable_sort = off")
        plan = " ".join(str(r[0]) for r in conn.execute(
            "EXPLAIN " + outcomes.FEED_PAGE, ("north", 1, 101)).fetchall())
        conn.execute("RESET enable_seqscan; RESET enable_bitmapscan; RESET enable_sort")
    assert "Index Scan using forwards_agency_feed on forwards" in plan, plan
    assert "Sort" not in plan and "Bitmap" not in plan, plan


def test_the_admin_pages_say_waiting_to_be_pulled_never_failing(api: PullApi) -> None:
    """What the forwards page and its CSV show of a pulling agency's forwards: to be pulled,
    then pulled and waiting for the acknowledgement, then delivered; never "N failures"."""
    made = api.accepted("kumo", 2)
    when = reports.period(None, None, dt.datetime.now(dt.UTC).date())

    def statuses(company: str = "kumo") -> dict[str, tuple[str, str]]:
        rows = shown(api.settings, records.forwards(api.ledger, company, when))
        return {r.id: (r.status, STATUS_LABELS[r.status]) for r in rows if not r.attempts}

    assert statuses() == {f: ("to_pull", "取得待ち") for f in made}
    first = api.feed(key="north", limit=1)
    assert statuses() == {made[0]: ("served", "取得済み（受領確認待ち）"),
                          made[1]: ("to_pull", "取得待ち")}
    api.feed(first.json["next"], key="north", limit=1)
    assert statuses()[made[0]] == ("delivered", "提供済み")
    (acme,) = api.accepted("acme")  # a webhook agency's: to be sent
    assert statuses("acme")[acme] == ("pending", "送信待ち")
