"""Retention (SPEC 9): `career-relay purge` on real ledgers with a clock that only moves
when told (no sleeping), on both backends (``backend_url``: the SQLite file, then
PostgreSQL).

Histories run through the real code (offers, ``Consents``, the outbox and its
deliveries); the purge is then run at chosen moments: just before and just
after a link expires, and three years after a provision.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from career_relay import settings as settings_mod
from career_relay.consent import Client, Consents, Notice
from career_relay.ledger import (
    Book,
    ConsentLedger,
    Ledger,
    Offer,
    Rules,
    open_configured,
    retention,
)
from career_relay.ledger.retention import Policy, Purged
from tests.conftest import run_cli

T0 = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1"
NOTICE = Notice.of("notice shown to the candidate", "ja")
CLIENT = Client(PHONE, "198.51.100.7")
CONFIG = """\
[site]
link_max_age_days = 90
review_window = 30
[ledger]
path = "ledger.db"
[secrets]
signing_keys = ["test-key-0123456789"]
hash_key = "hash-key"
[[companies]]
id = "acme"
name = "株式会社アクメ"
domains = ["acme.example"]
"""


class World:
    def __init__(self, tmp_path: Path, url: str = "") -> None:
        self.config = tmp_path / "career-relay.toml"
        self.config.write_text(CONFIG.replace('path = "ledger.db"\n', f'path = "ledger.db"\n'
                                              f'url = "{url}"\n'), encoding="utf-8")
        self.url = url
        self.settings = settings_mod.load(self.config, env={})
        self.path = Path(self.settings.ledger.path)
        self.now = T0
        self.ledger: Ledger = open_configured(self.settings, clock=lambda: self.now)
        self.rules = Rules.from_settings(self.settings)
        self.store = ConsentLedger(self.ledger, self.rules)
        self.consents = Consents(self.settings, self.store)
        self._n = 0

    def offer(self, email: str) -> Offer:
        self._n += 1
        return self.ledger.record_offer("acme", f"<m{self._n}@acme.example>", email)

    def accept(self, offer: Offer) -> None:
        self.now += dt.timedelta(minutes=5)
        self.consents.accept(offer, NOTICE, {"name": "候補者", "email": offer.recipient}, False,
                             CLIENT)

    def deliver(self) -> None:
        self.now += dt.timedelta(seconds=1)
        for forward in self.store.claim_due(100, 60):
            self.store.delivered(forward.id)

    def purge(self, at: dt.datetime, *, dry_run: bool = False) -> Purged:
        self.now = at
        return retention.purge(self.ledger, self.rules, Policy.from_settings(self.settings),
                               dry_run=dry_run)

    def recipient(self, offer: Offer) -> tuple[str, str | None, str | None]:
        return self._one("SELECT recipient, candidate, erased FROM offers WHERE id = ?", offer.id)

    def profiles(self, offer: Offer) -> list[str | None]:
        return [r[0] for r in self._all(
            "SELECT p.data FROM profiles p JOIN receipts r ON r.id = p.receipt_id"
            " WHERE r.offer_id = ? ORDER BY r.rowid", offer.id)]

    def payloads(self, offer: Offer) -> list[str | None]:
        return [r[0] for r in self._all(
            "SELECT payload FROM forwards WHERE offer_id = ? ORDER BY rowid", offer.id)]

    def everything(self) -> dict[str, list[Any]]:
        tables = [r[0] for r in self._all(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'" if self.url else
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {t: sorted((tuple(r) for r in self._all(f'SELECT * FROM "{t}"')), key=repr)
                for t in tables}

    def verify(self) -> None:
        count, problem = Book(self.ledger, self.rules).verify()
        assert problem is None and count > 0

    def _one(self, sql: str, *args: Any) -> Any:
        (row,) = self._all(sql, *args)
        return row

    def _all(self, sql: str, *args: Any) -> list[Any]:
        with self.ledger.read() as conn:
            return conn.execute(sql, args).fetchall()


@pytest.fixture
def world(tmp_path: Path, backend_url: str) -> Iterator[World]:
    opened = World(tmp_path, backend_url)
    yield opened
    opened.ledger.close()


def _offers(world: World) -> list[Any]:
    """Every offer row, read through a ledger of its own (the world's may be closed)."""
    with open_configured(world.settings) as ledger, ledger.read() as conn:
        return [tuple(r) for r in conn.execute("SELECT * FROM offers ORDER BY id")]


def _history(world: World) -> dict[str, Offer]:
    """One offer of each kind, all made at T0 (the provision a few minutes later)."""
    offers = {kind: world.offer(f"{kind}@example.net")
              for kind in ("undecided", "provided", "declined", "withdrawn", "held")}
    world.accept(offers["provided"])
    world.consents.decline(offers["declined"], NOTICE, CLIENT)
    world.accept(offers["withdrawn"])
    world.consents.withdraw(offers["withdrawn"], "ja", CLIENT)  # before any delivery
    world.deliver()
    # A scanner's click: held for review, and nobody has reviewed it yet.
    world.consents.accept(offers["held"], NOTICE, {"name": "x", "email": "held@example.net"},
                          False, Client("Mozilla/5.0 (compatible; Proofpoint)", None))
    return offers


def test_nothing_is_erased_while_the_link_is_valid(world: World) -> None:
    _history(world)
    before = world.everything()
    assert world.purge(T0 + 90 * DAY - dt.timedelta(minutes=1)) == Purged()
    assert world.everything() == before


def test_an_expired_undecided_offer_loses_its_address_and_keeps_the_hash(world: World) -> None:
    offer = world.offer("Taro.Yamada@Example.JP")
    world.now = T0 + 10 * DAY
    fresh = world.offer("hanako@example.jp")
    purged = world.purge(T0 + 91 * DAY)
    assert purged == Purged(undecided_addresses=1)
    recipient, candidate, erased = world.recipient(offer)
    assert "@" not in recipient and recipient == f"erased:{offer.id}"
    assert candidate == world.rules.candidate("taro.yamada@example.jp")
    assert erased == "2026-07-01T09:00:00Z"
    assert world.recipient(fresh) == ("hanako@example.jp", None, None)
    stored = world.ledger.offer(offer.id)
    assert stored is not None and stored.recipient == f"erased:{offer.id}"


def test_decided_offers_keep_their_data_until_three_years_after_the_provision(
        world: World) -> None:
    offers = _history(world)
    provided = offers["provided"]
    assert world.purge(T0 + 91 * DAY) == Purged(undecided_addresses=1, unprovided_addresses=2,
                                                  profiles=1, payloads=1)
    # Provided: everything kept (the provision record of APPI art. 29).
    assert world.recipient(provided)[0] == "provided@example.net"
    assert world.profiles(provided)[0] is not None
    assert json.loads(world.payloads(provided)[0] or "")["candidate"]["email"] == (
        "provided@example.net")
    # Declined, and withdrawn before delivery: no provision to prove, nothing kept.
    for kind in ("declined", "withdrawn"):
        assert world.recipient(offers[kind])[0] == f"erased:{offers[kind].id}"
    # Withdrawn before delivery: its consent forward was cancelled, no notice needed.
    assert world.profiles(offers["withdrawn"]) == [None]
    assert world.payloads(offers["withdrawn"]) == [None]
    # Held for review: its forward may still go to the agency; nothing is touched.
    assert world.recipient(offers["held"])[0] == "held@example.net"
    assert world.profiles(offers["held"])[0] is not None

    (delivered,) = world._one(
        "SELECT MAX(e.created) FROM forward_events e JOIN forwards f ON f.id = e.forward_id"
        " WHERE f.offer_id = ? AND e.event = 'delivered'", provided.id)
    provision = dt.datetime.strptime(delivered, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    three_years = provision.replace(year=provision.year + 3)
    assert world.purge(three_years - dt.timedelta(seconds=1)) == Purged()
    assert world.recipient(provided)[0] == "provided@example.net"
    assert world.purge(three_years + dt.timedelta(seconds=1)) == Purged(
        provided_addresses=1, profiles=1, payloads=1)
    recipient, candidate, _ = world.recipient(provided)
    assert recipient == f"erased:{provided.id}"
    assert candidate == world.rules.candidate("provided@example.net")
    assert world.profiles(provided) == [None] and world.payloads(provided) == [None]
    world.verify()


def test_a_dry_run_changes_nothing_and_counts_what_the_purge_does(world: World) -> None:
    _history(world)
    before = world.everything()
    would = world.purge(T0 + 91 * DAY, dry_run=True)
    assert would.total > 0
    assert world.everything() == before
    assert world.purge(T0 + 91 * DAY) == would
    assert world.everything() != before


def test_the_ledger_verifies_after_a_purge_and_a_second_purge_does_nothing(
        world: World) -> None:
    _history(world)
    world.verify()
    world.purge(T0 + 4 * 366 * DAY)
    world.verify()
    after = world.everything()
    assert world.purge(T0 + 4 * 366 * DAY) == Purged()
    assert world.purge(T0 + 5 * 366 * DAY) == Purged()
    assert world.everything() == after
    (left,) = world._one("SELECT COUNT(*) FROM offers WHERE recipient LIKE '%@%'")
    assert left == 1  # the offer held for review: its forward waits in the outbox


def test_the_command_prints_what_it_did_and_the_ledger_still_verifies(world: World) -> None:
    _history(world)  # in April 2026: every link has expired by the time the tests run
    world.ledger.close()
    before = _offers(world)

    dry = run_cli("purge", "--dry-run", "--config", str(world.config))
    assert dry.returncode == 0, dry.stderr
    assert "would erase" in dry.stdout and "nothing changed" in dry.stdout
    assert _offers(world) == before

    done = run_cli("purge", "--config", str(world.config))
    assert done.returncode == 0, done.stderr
    lines = {line.split(None, 1)[1]: int(line.split(None, 1)[0])
             for line in done.stdout.splitlines()}
    assert lines["addresses of offers undecided when their link expired"] == 1
    assert lines["addresses of offers decided but never provided, link expired"] == 2
    assert lines["candidate profiles"] == 1
    assert done.stdout.splitlines()[:-1] == dry.stdout.splitlines()[:-1]

    again = run_cli("purge", "--config", str(world.config))
    assert again.returncode == 0 and again.stdout.splitlines()[-1].split()[0] == "0"
    verify = run_cli("ledger", "verify", "--config", str(world.config))
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith("ledger ok:")


def test_purge_without_a_ledger_is_a_user_error(tmp_path: Path) -> None:
    """SQLite-only: a ledger file that does not exist (a database is made by its operator)."""
    config = tmp_path / "career-relay.toml"
    config.write_text(CONFIG, encoding="utf-8")
    done = run_cli("purge", "--config", str(config))
    assert done.returncode == 1 and "no ledger" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("now, cutoff", [
    (dt.datetime(2029, 7, 1, tzinfo=dt.UTC), "2026-07-01T00:00:00Z"),
    (dt.datetime(2028, 2, 29, 12, tzinfo=dt.UTC), "2025-02-28T12:00:00Z"),
])
def test_three_years_are_calendar_years(now: dt.datetime, cutoff: str) -> None:
    """The policy's arithmetic alone: no ledger, no backend."""
    assert Policy().provision_cutoff(now) == cutoff
