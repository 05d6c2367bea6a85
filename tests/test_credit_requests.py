"""Free referrals as a workflow (SPEC 11, issue 15 item 3): requests, their states, the
credit they spend, the agency's notice, verify, the report; on each backend."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from career_relay.errors import (
    CreditRequestOpen,
    CreditRequestSettled,
    LedgerConflict,
    NotTheAgencysRequest,
    UnknownCreditRequest,
    UserError,
)
from career_relay.ledger import (
    NOTE_MAX,
    Book,
    CreditRequest,
    Ledger,
    NoCreditAvailable,
    Notices,
    Referrals,
    Rules,
    chain,
    open_configured,
    open_shared,
    reports,
)
from career_relay.timestamps import stamp
from tests.conftest import run_cli
from tests.test_ledger_rules import World, _tampered, config_toml


@pytest.fixture
def world(tmp_path: Path, backend_url: str) -> Iterator[World]:
    opened = World(tmp_path, url=backend_url)
    yield opened
    opened.ledger.close()


def _two_credits(world: World) -> Referrals:
    world.qualified_then_deliver(20)
    return Referrals(world.ledger)


def test_a_request_is_fulfilled_and_spends_its_credit(world: World) -> None:
    referrals = _two_credits(world)
    asked = referrals.request("acme", "default", "hr@acme.example", "経理職 1名",
                              company_name="株式会社アクメ")
    first = world.book.credits("acme")[0]["id"]
    assert (asked.credit_id, asked.state, asked.round, asked.note) == (
        first, "requested", 1, "経理職 1名")
    world.tick(3600)
    done = referrals.settle_request(asked.id, "default", "fulfilled", "紹介しました")
    assert (done.state, done.settled_note) == ("fulfilled", "紹介しました")
    assert done.settled is not None and done.settled > done.requested
    (listed,) = referrals.requests("acme")
    assert listed == done
    credits = world.book.credits("acme")
    assert credits[0]["redeemed"] == done.settled and credits[0]["redeemed_by"] == "agency:default"
    assert credits[1]["redeemed"] is None
    r = world.report()
    assert (r["credits_requested"], r["credits_fulfilled"], r["credits_redeemed"],
            r["credits_available"]) == (1, 1, 1, 1)
    assert world.book.verify()[1] is None


def test_a_cancelled_request_frees_the_credit_and_states_are_set_once(world: World) -> None:
    referrals = _two_credits(world)
    asked = referrals.request("acme", "default", "operator", credit=None)
    referrals.request("acme", "default", "operator")  # the second credit
    with pytest.raises(CreditRequestOpen, match="already open"):
        referrals.request("acme", "default", "operator")
    with pytest.raises(CreditRequestOpen, match=f"credit {asked.credit_id}"):
        referrals.request("acme", "default", "operator", credit=asked.credit_id)
    with pytest.raises(NoCreditAvailable, match="2 asked of the agency"):
        world.book.redeem("acme", by="operator")  # a credit the agency has is not redeemed
    world.tick()
    referrals.settle_request(asked.id, "default", "cancelled", "該当者なし")
    with pytest.raises(CreditRequestSettled, match="cancelled already"):
        referrals.settle_request(asked.id, "default", "fulfilled")
    again = referrals.request("acme", "default", "operator")
    assert (again.credit_id, again.round) == (asked.credit_id, 2)
    assert [q.state for q in referrals.requests("acme")] == ["cancelled", "requested",
                                                              "requested"]
    assert world.book.verify()[1] is None


def test_redeem_and_a_fulfilled_request_never_spend_one_credit_twice(world: World) -> None:
    world.qualified_then_deliver(10)
    referrals = Referrals(world.ledger)
    asked = referrals.request("acme", "default", "operator")
    with pytest.raises(NoCreditAvailable):
        world.book.redeem("acme", by="operator")
    referrals.settle_request(asked.id, "default", "cancelled")
    world.book.redeem("acme", by="operator")  # freed, then redeemed by the operator
    with pytest.raises(NoCreditAvailable):
        referrals.request("acme", "default", "operator")
    # Past every check in the code: the database's UNIQUE refuses a second spend.
    with pytest.raises(LedgerConflict), world.ledger.write() as conn:
        conn.execute("INSERT INTO redemptions (credit_id, company, created, by, note, entry)"
                     " VALUES (?, 'acme', '2026-04-02T00:00:00Z', 'x', '', 1)",
                     (asked.credit_id,))
    with pytest.raises(UserError, match="agency's name"):
        world.book.redeem("acme", by="agency:default")
    assert world.book.verify()[1] is None


def test_the_agency_sees_and_settles_only_its_own(world: World) -> None:
    world.qualified_then_deliver(10)
    world.qualified_then_deliver(20, company="kumo", start=100)
    referrals = Referrals(world.ledger)
    north = referrals.request("acme", "north", "operator")
    world.tick()
    south = [referrals.request("kumo", "south", "operator") for _ in range(2)]
    assert [q.id for q in referrals.requests_for_agency("north")] == [north.id]
    assert [q.id for q in referrals.requests_for_agency("south")] == [s.id for s in south]
    assert [q.id for q in referrals.requests_for_agency("south", after=south[0].id)] == [
        south[1].id]
    assert referrals.requests_for_agency("south", limit=1)[0].id == south[0].id
    with pytest.raises(NotTheAgencysRequest):
        referrals.settle_request(north.id, "south", "fulfilled")
    with pytest.raises(UnknownCreditRequest):
        referrals.settle_request("rq_nothing", "north", "fulfilled")
    with pytest.raises(UnknownCreditRequest):
        referrals.requests_for_agency("south", after=north.id)  # another's id: no cursor
    with pytest.raises(ValueError):
        referrals.settle_request(north.id, "north", "requested")
    referrals.settle_request(south[0].id, "south", "fulfilled")
    assert [q.id for q in referrals.requests_for_agency("south", state="requested")] == [
        south[1].id]
    assert [q.id for q in referrals.requests_for_agency("south", state="fulfilled")] == [
        south[0].id]
    assert referrals.requests_for_agency("nobody") == []
    assert world.book.verify()[1] is None


def test_a_note_is_one_capped_line(world: World) -> None:
    world.qualified_then_deliver(10)
    referrals = Referrals(world.ledger)
    asked = referrals.request("acme", "default", "operator", "a\nb\x00c" + "x" * 900)
    assert asked.note.startswith("a b c") and len(asked.note) == NOTE_MAX
    done = referrals.settle_request(asked.id, "default", "cancelled", "\t" + "y" * 900)
    assert done.settled_note == "y" * NOTE_MAX


def test_the_agency_is_told_and_the_notice_stays_until_delivered(world: World) -> None:
    world.qualified_then_deliver(10)
    asked = Referrals(world.ledger).request("acme", "default", "hr@acme.example", "急ぎません",
                                            company_name="株式会社アクメ")
    notices = Notices(world.ledger)
    assert notices.claim_due(10, 60, ["north"]) == []  # another agency's worker: nothing
    (notice,) = notices.claim_due(10, 60, ["default"])
    assert (notice.id, notice.kind, notice.agency) == (asked.id, "credit_request", "default")
    body = json.loads(notice.payload)
    assert body == {"type": "credit_request", "request_id": asked.id,
                    "credit_id": asked.credit_id, "agency": "default",
                    "company": {"id": "acme", "name": "株式会社アクメ"},
                    "note": "急ぎません", "requested": asked.requested}
    assert "hr@acme.example" not in notice.payload  # who asked stays with the company
    assert notices.claim_due(10, 60, ["default"]) == []  # claimed
    notices.failed(notice.id, "HTTP 503", retry_in=120)
    world.tick(60)
    assert notices.claim_due(10, 60, ["default"]) == []
    world.tick(61)
    (again,) = notices.claim_due(10, 60, ["default"])
    assert again.attempts == 1 and again.payload == notice.payload  # the same bytes
    notices.delivered(notice.id, "HTTP 200")
    notices.delivered(notice.id, "HTTP 200 again")  # recorded once
    found = notices.notice(notice.id)
    assert found is not None and found.delivered == world.now
    world.tick(10_000)
    assert notices.claim_due(10, 60, ["default"]) == [] and notices.next_due() is None


def test_the_report_counts_requests_and_the_value_recovered(world: World) -> None:
    referrals = _two_credits(world)
    asked = referrals.request("acme", "default", "operator")
    referrals.request("acme", "default", "operator")
    referrals.settle_request(asked.id, "default", "fulfilled")
    when = reports.period(None, None, world.now.date())
    (r,) = reports.report(world.ledger, ["acme"], when, 10, referral_values={"acme": 800_000})
    assert (r["credits_requested"], r["credits_fulfilled"], r["credits_redeemed"]) == (2, 1, 1)
    assert r["recovered_value"] == 800_000
    world.qualified_then_deliver(10, start=20)
    world.book.redeem("acme", by="operator", note="社外で受けた紹介")
    (r,) = reports.report(world.ledger, ["acme"], when, 10, referral_values={"acme": 800_000})
    assert r["recovered_value"] == 1_600_000  # fulfilled plus redeemed, never twice
    (unset,) = reports.report(world.ledger, ["acme"], when, 10)
    assert unset["recovered_value"] == 0
    assert world.report(until=dt.date(2025, 12, 31))["credits_requested"] == 0


# -- tamper evidence ------------------------------------------------------------------------


def _requested_history(world: World) -> World:
    referrals = _two_credits(world)
    asked = referrals.request("acme", "default", "operator", "first")
    world.tick()
    referrals.settle_request(asked.id, "default", "cancelled")
    again = referrals.request("acme", "default", "operator", "second")
    referrals.settle_request(again.id, "default", "fulfilled")
    referrals.request("acme", "default", "operator", "third")
    assert world.book.verify()[1] is None
    return world


@pytest.mark.parametrize(("statements", "named"), [
    (["UPDATE credit_requests SET note = 'other' WHERE round = 1"], "does not match"),
    (["DELETE FROM credit_request_states WHERE state = 'cancelled'"], "was deleted"),
    (["UPDATE credit_request_states SET state = 'cancelled' WHERE state = 'fulfilled'"],
     "does not match"),
    (["DELETE FROM redemptions"], "redemption"),
    (["UPDATE credit_requests SET agency = 'north' WHERE note = 'third'"], "does not match"),
    (["DELETE FROM entries WHERE seq = (SELECT MAX(seq) FROM entries)"], "credit request"),
])
def test_a_changed_request_is_caught(world: World, statements: list[str], named: str) -> None:
    assert named in _tampered(_requested_history(world), *statements)


def test_a_forged_second_open_request_is_caught(world: World) -> None:
    """Well-formed entries and rows for a second open request of one credit: UNIQUE
    (credit_id, round) refuses a second round 1; a round 2 agrees with its entry, and the
    rules catch it."""
    history = _requested_history(world)
    third = next(q for q in Referrals(history.ledger).requests() if q.note == "third")

    def forge(round_: int) -> None:
        with history.ledger.write() as conn:
            seq = chain.append(conn, history.now, "acme", "credit_request", "rq_forged", {
                "credit": third.credit_id, "agency": "default", "round": round_, "by": "x",
                "note": ""})
            conn.execute("INSERT INTO credit_requests (id, credit_id, company, agency, round,"
                         " created, by, note, entry) VALUES ('rq_forged', ?, 'acme', 'default',"
                         " ?, ?, 'x', '', ?)", (third.credit_id, round_, stamp(history.now), seq))

    with pytest.raises(LedgerConflict):
        forge(1)
    forge(2)
    _, problem = history.book.verify()
    assert "was made while credit" in str(problem)


def test_verify_command_names_a_tampered_request(world: World, tmp_path: Path) -> None:
    history = _requested_history(world)
    config = tmp_path / "career-relay.toml"
    config.write_text(config_toml(history.config), encoding="utf-8")
    assert run_cli("ledger", "verify", "--config", str(config)).returncode == 0
    _tampered(history, "UPDATE credit_requests SET by = 'someone' WHERE note = 'second'")
    bad = run_cli("ledger", "verify", "--config", str(config))
    assert bad.returncode == 1 and "credit request" in bad.stderr


# -- two hosts ------------------------------------------------------------------------------


def test_two_hosts_requesting_at_once_make_one_request_per_credit(
        fresh_postgres_url: str, tmp_path: Path) -> None:
    """Two sites (or a site and the CLI) ask for the company's one credit at the same
    moment: one request is made, the other hears that one is open; and a redemption
    racing a fulfilment spends the credit once."""
    world = World(tmp_path, url=fresh_postgres_url)
    try:
        world.qualified_then_deliver(10)
        hosts = [open_shared(fresh_postgres_url, hash_key=world.ledger.hash_key)
                 for _ in range(2)]
        outcomes: list[object] = []
        start = threading.Barrier(8)

        def ask(ledger: Ledger) -> None:
            start.wait()
            try:
                outcomes.append(Referrals(ledger).request("acme", "default", "operator"))
            except UserError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=ask, args=(hosts[i % 2],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        made = [o for o in outcomes if not isinstance(o, Exception)]
        assert len(outcomes) == 8 and len(made) == 1
        assert all(isinstance(o, CreditRequestOpen) for o in outcomes if o not in made)
        (asked,) = made
        assert isinstance(asked, CreditRequest)
        race = threading.Barrier(2)
        results: list[object] = []

        def fulfil() -> None:
            race.wait()
            try:
                results.append(Referrals(hosts[0]).settle_request(asked.id, "default",
                                                                  "fulfilled"))
            except UserError as exc:
                results.append(exc)

        def redeem() -> None:
            race.wait()
            try:
                results.append(Book(hosts[1]).redeem("acme", by="operator"))
            except UserError as exc:
                results.append(exc)

        racers = [threading.Thread(target=fulfil), threading.Thread(target=redeem)]
        for t in racers:
            t.start()
        for t in racers:
            t.join(60)
        assert any(isinstance(r, NoCreditAvailable) for r in results)
        with hosts[0].read() as conn:
            assert conn.execute("SELECT COUNT(*) FROM redemptions").fetchone()[0] == 1
        assert Book(hosts[0], Rules(hash_key=world.ledger.hash_key)).verify()[1] is None
        for host in hosts:
            host.close()
    finally:
        world.ledger.close()


def test_ledger_migrate_copies_the_requests_with_their_chain(
        tmp_path: Path, fresh_postgres_url: str) -> None:
    world = _requested_history(World(tmp_path))
    world.ledger.close()
    config = tmp_path / "career-relay.toml"
    config.write_text(config_toml(world.config), encoding="utf-8")
    done = run_cli("ledger", "migrate", "--to", fresh_postgres_url, "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "credit_requests" in done.stdout and "ledger verify: ok on both" in done.stdout
    with open_shared(fresh_postgres_url, hash_key=b"hash-key", check_key=False) as copy:
        assert [q.state for q in Referrals(copy).requests("acme")] == [
            "cancelled", "fulfilled", "requested"]
        assert Notices(copy).claim_due(10, 60, ["default"]) != []
    with open_configured(world.settings) as ledger:
        assert len(Referrals(ledger).requests()) == 3


# -- the command line -----------------------------------------------------------------------


def _cli_config(world: World, tmp_path: Path) -> str:
    """The world's ledger and secrets, and its two companies (acme with an agency named)."""
    config = tmp_path / "career-relay.toml"
    config.write_text(config_toml(world.config) + (
        '[[companies]]\nid = "acme"\nname = "株式会社アクメ"\ndomains = ["acme.example"]\n'
        'agency = "default"\nreferral_value = 500000\n'
        '[[companies]]\nid = "kumo"\nname = "株式会社クモ"\ndomains = ["kumo.example"]\n'),
        encoding="utf-8")
    return str(config)


def test_credits_request_and_requests_commands(world: World, tmp_path: Path) -> None:
    world.qualified_then_deliver(10)
    world.ledger.close()
    config = _cli_config(world, tmp_path)
    made = run_cli("credits", "request", "--company", "acme", "--note", "経理職",
                   "--config", config)
    assert made.returncode == 0, made.stderr
    assert "requested rq_" in made.stdout and "agency default" in made.stdout
    again = run_cli("credits", "request", "--company", "acme", "--config", config)
    assert again.returncode == 1 and "already open" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1  # one line, no traceback
    none = run_cli("credits", "request", "--company", "kumo", "--config", config)
    assert none.returncode == 1 and "no free referral credit available" in none.stderr
    unknown = run_cli("credits", "request", "--company", "nobody", "--config", config)
    assert unknown.returncode == 1 and "no company 'nobody'" in unknown.stderr
    redeem = run_cli("credits", "redeem", "--company", "acme", "--config", config)
    assert redeem.returncode == 1 and "asked of the agency" in redeem.stderr
    usage = run_cli("credits", "request", "--config", config)
    assert usage.returncode == 2 and "needs --company" in usage.stderr
    listed = run_cli("credits", "requests", "--format", "json", "--config", config)
    assert listed.returncode == 0, listed.stderr
    (request,) = json.loads(listed.stdout)
    assert (request["company"], request["state"], request["note"], request["settled"]) == (
        "acme", "requested", "経理職", None)
    table = run_cli("credits", "requests", "--company", "kumo", "--config", config)
    assert table.returncode == 0 and "0 request(s)" in table.stdout
    with open_configured(world.settings) as ledger:
        Referrals(ledger).settle_request(request["request_id"], "default", "fulfilled")
    shown = run_cli("credits", "requests", "--config", config)
    assert "fulfilled" in shown.stdout and request["request_id"] in shown.stdout
    report = run_cli("report", "--format", "json", "--company", "acme", "--config", config)
    (row,) = json.loads(report.stdout)
    assert (row["credits_requested"], row["credits_fulfilled"], row["recovered_value"]) == (
        1, 1, 500000)
    assert run_cli("ledger", "verify", "--config", config).returncode == 0


def test_referral_value_is_checked(tmp_path: Path) -> None:
    from career_relay import settings as settings_mod
    from career_relay.errors import ConfigError

    def load(value: object) -> int:
        config = {"companies": [{"id": "acme", "name": "アクメ", "domains": ["acme.example"],
                                 "referral_value": value}]}
        company = settings_mod.from_mapping(config, base=tmp_path).company("acme")
        assert company is not None
        return company.referral_value

    assert load(800_000) == 800_000
    with pytest.raises(ConfigError, match=r"companies\[acme\].referral_value must be from 0 "
                                          "to 1000000000 yen, not -1"):
        load(-1)
    with pytest.raises(ConfigError, match="referral_value"):
        load("800000円")
