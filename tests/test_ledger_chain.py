"""A chain that shows removal too (issue 12 item 7, SPEC 8).

Offers, forwards and profiles are chained (by digest and keyed hash), and the
chain head is kept outside the database (the head file, the agency's copy):
the tampering below, by someone who has the files and drops the triggers
first, each goes unnoticed by a ledger that only chains its entries.
Legitimate erasure (retention, a candidate's erasure) still verifies, as does
a ledger upgraded from before the chain covered these tables.

Each test runs on both backends (``backend_url``; on PostgreSQL the head file is
configured where SQLite keeps it, and the tampering is the superuser's with every
trigger disabled), except the upgrade, which only a SQLite ledger can need.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from career_relay.consent import Client
from career_relay.errors import LedgerConflict
from career_relay.ledger import MIGRATIONS, Book, Rules, open_configured, open_ledger, retention
from career_relay.ledger import chain as ledger_chain
from career_relay.ledger import head as ledger_head
from career_relay.ledger.migrations import CHAIN_MIGRATION
from tests.conftest import run_cli
from tests.test_ledger_rules import (
    IPHONE,
    World,
    _tampered,
    behind_the_ledgers_back,
    config_toml,
)

CLIENT = Client(IPHONE, "198.51.100.7")


@pytest.fixture
def history(tmp_path: Path, backend_url: str) -> Iterator[World]:
    """Ten qualified forwards, a credit, an erased candidate, then three offers no one
    opened yet: the last entries of the chain."""
    world = World(tmp_path, url=backend_url)
    world.qualified_then_deliver(10)
    world.book.redeem("acme", by="hr")
    gone = world.offer("gone@example.net")
    world.accept(gone)
    world.deliver()
    world.tick()
    world.consents.erase(gone, "ja", CLIENT)
    world.deliver()
    for n in range(3):
        world.offer(f"late{n}@example.net")
    yield world
    world.ledger.close()


def _ids(world: World, sql: str) -> list[str]:
    return [str(r[0]) for r in world.rows(sql)]


def _head_file(world: World) -> Path:
    return Path(f"{world.path}.head")


def test_a_ledger_with_its_rows_and_head_verifies(history: World) -> None:
    count, problem = history.book.verify()
    assert problem is None
    kinds = dict(history.rows("SELECT kind, COUNT(*) FROM entries GROUP BY kind"))
    assert kinds["offer"] == 14 and kinds["profile"] == 11
    assert kinds["forward"] == 12  # ten consents, one more, and its erasure notice
    n, digest = ledger_head.parse(_head_file(history).read_text())
    assert (n, digest) == history.ledger.head() and n == count
    assert history.book.head() == f"{n}:{digest}"


def test_removing_the_last_entries_is_caught_by_the_head_file(history: World) -> None:
    (end,) = history.rows("SELECT MAX(seq) FROM entries")[0]
    late = _ids(history, "SELECT id FROM offers WHERE recipient LIKE 'late%'")
    # The three offers and their entries, all gone: what is left is a valid chain.
    marks = ", ".join(f"'{i}'" for i in late)
    problem = _tampered(history, f"DELETE FROM offers WHERE id IN ({marks})",
                        f"DELETE FROM entries WHERE seq > {end - 3}")
    assert problem == (f"entry {end}: the last entries were removed: the head file names "
                       f"entry {end}, the ledger ends at {end - 3}")


def test_a_missing_head_file_is_named(history: World) -> None:
    history.ledger.close()
    _head_file(history).unlink()
    with open_configured(history.settings) as ledger:
        _, problem = Book(ledger, Rules.from_settings(history.settings)).verify()
    assert problem is not None
    assert str(problem).startswith(f"the head file {_head_file(history)} is missing")


_STEAL = ("UPDATE offers SET erased = '2026-05-01T00:00:00Z', recipient = 'attacker@example.org',"
          " candidate = (SELECT {candidate} FROM entries WHERE kind = 'offer' AND ref = offers.id)"
          " WHERE recipient = 'cand6@example.net'")


@pytest.mark.parametrize(("statements", "named"), [
    # Moved to another company: its credits would count there.
    (["UPDATE offers SET company = 'kumo' WHERE recipient = 'cand3@example.net'"],
     "was moved from company acme to kumo"),
    # Another recipient: qualification keys on it, so credits could be farmed.
    (["UPDATE offers SET recipient = 'someone-new@example.net'"
      " WHERE recipient = 'cand4@example.net'"], "its recipient was changed"),
    # Another recipient under an erased mark, with the entry's keyed hash copied in (found
    # by the attack review): the provision record would name someone else.
    ([{"sqlite": _STEAL.format(candidate="json_extract(body, '$.candidate')"),
       "postgresql": _STEAL.format(candidate="body::json ->> 'candidate'")}],
     "marked erased, yet it holds an address"),
    (["UPDATE offers SET job = '営業' WHERE recipient = 'cand5@example.net'"], "was altered"),
    (["DELETE FROM offers WHERE recipient = 'late1@example.net'"], "was deleted"),
    (["INSERT INTO offers (id, company, message_id, recipient, created)"
      " VALUES ('made-up', 'acme', '<x@acme.example>', 'x@example.net', '2026-04-01T09:00:00Z')"],
     "offer made-up has no ledger entry"),
    ([{"sqlite": "UPDATE profiles SET data = json_set(data, '$.name', '別人') WHERE rowid = 2",
       "postgresql": "UPDATE profiles SET data = jsonb_set(data::jsonb, '{name}', '\"別人\"')"
                     "::text WHERE rowid = 2"}], "was changed after it was recorded"),
    (["DELETE FROM profiles WHERE rowid = 3"], "was deleted"),
    (["UPDATE forwards SET payload = replace(payload, '候補者', '別人') WHERE rowid = 4"],
     "its payload was changed"),
    (["UPDATE forwards SET kind = 'withdrawal' WHERE rowid = 5"], "was altered"),
    (["DELETE FROM forwards WHERE rowid = 6"], "was deleted"),
])
def test_changed_or_removed_rows_are_caught_and_named(
        history: World, statements: list[str | dict[str, str]], named: str) -> None:
    problem = _tampered(history, *statements)
    assert named in problem
    assert "@example.net" not in problem and "候補者" not in problem  # no personal data


def test_the_database_refuses_what_no_code_does(history: World) -> None:
    for statement in ("DELETE FROM offers WHERE rowid = 1",
                      "UPDATE offers SET company = 'kumo' WHERE rowid = 1",
                      "UPDATE offers SET source = 'link' WHERE rowid = 1",
                      "UPDATE offers SET recipient = 'x@example.net' WHERE rowid = 1",
                      "UPDATE forwards SET payload = '{}' WHERE rowid = 1",
                      "DELETE FROM forwards WHERE rowid = 1",
                      "UPDATE profiles SET data = '{}' WHERE rowid = 1",
                      "DELETE FROM profiles WHERE rowid = 1"):
        with pytest.raises(LedgerConflict, match="append-only"), \
                history.ledger.write() as conn:
            conn.execute(statement)


def test_retention_and_erasure_still_verify(history: World) -> None:
    # The candidate's erasure (history) nulled a profile and a payload; retention now
    # erases every address, profile and payload whose time is up.
    history.tick(200 * 86400)
    policy = retention.Policy(link_max_age_days=90, provision_years=0)
    purged = retention.purge(history.ledger, Rules.from_settings(history.settings), policy)
    assert purged.total > 20
    assert history.rows("SELECT COUNT(*) FROM offers WHERE erased IS NULL") == [(0,)]
    assert history.rows("SELECT COUNT(*) FROM profiles WHERE data IS NOT NULL") == [(0,)]
    assert history.book.verify()[1] is None
    # The candidate kept at erasure, swapped for another's (credits de-duplicate on it).
    assert "the candidate kept at its erasure" in _tampered(
        history, "UPDATE offers SET candidate = 'ffffffffffffffffffffffffffffffff'"
                 " WHERE recipient = 'erased:' || id AND rowid = 2")


def test_verify_with_another_hash_key_says_so(history: World) -> None:
    _, problem = Book(history.ledger, Rules(hash_key=b"another key")).verify()
    assert problem is not None and "secrets.hash_key" in str(problem)


# -- the head file ----------------------------------------------------------------------------


def test_the_head_file_is_private_and_follows_every_write(history: World) -> None:
    head = _head_file(history)
    assert stat.S_IMODE(head.stat().st_mode) == 0o600
    before = head.read_text()
    history.offer("one-more@example.net")
    after = ledger_head.parse(head.read_text())
    assert after == history.ledger.head() and after[0] == ledger_head.parse(before)[0] + 1
    assert stat.S_IMODE(head.stat().st_mode) == 0o600


def test_the_head_file_never_goes_back(history: World) -> None:
    head = _head_file(history)
    n, _ = ledger_head.parse(head.read_text())
    later = f"{n + 5}:{'a' * 64}\n"  # what a process that committed later wrote
    head.write_text(later)
    history.offer("one-more@example.net")
    assert head.read_text() == later
    assert not ledger_head.write(head, n + 1, "b" * 64)
    assert head.read_text() == later


# -- an upgraded ledger -------------------------------------------------------------------------


def test_a_ledger_from_before_the_chain_covered_offers_is_backfilled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows the earlier code wrote (an offer, one erased by retention, a receipt with its
    entry, a profile, a forward), then the upgrade: it verifies and has a head file.
    SQLite-only: no PostgreSQL ledger predates 0008 (schema_postgres: all land together)."""
    world = World(tmp_path)
    world.ledger.close()
    world.path.unlink()
    old = [m for m in MIGRATIONS._migrations if m.name < CHAIN_MIGRATION]
    with monkeypatch.context() as patched:
        patched.setattr(MIGRATIONS, "_migrations", old)
        open_ledger(world.path).close()  # the schema as it was, before its key was recorded
    stamp = "2026-03-01T10:00:00Z"
    with sqlite3.connect(world.path) as conn:
        conn.executemany(
            "INSERT INTO offers (id, company, message_id, recipient, created, job, channel,"
            " stage, candidate, erased) VALUES (?, 'acme', ?, ?, ?, '経理', NULL, NULL, ?, ?)",
            [("offer-kept", "<a@acme.example>", "kept@example.net", stamp, None, None),
             ("offer-erased", "<b@acme.example>", "erased:offer-erased", stamp,
              "0123456789abcdef0123456789abcdef", stamp)])
        receipt = ("rc-1", "offer-kept", "acme", "Agency K.K.", "accept", stamp, None, None,
                   "ja", '["registration"]', '["name","email"]', "UA", "198.51.100.0/24", None)
        conn.execute(f"INSERT INTO receipts VALUES ({', '.join('?' * len(receipt))})", receipt)
        ledger_chain.append(conn, dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC), "acme",
                            "receipt", "rc-1", {"offer": "offer-kept", "decision": "accept",
                                                "review": None,
                                                "digest": ledger_chain.row_digest(receipt)})
        conn.execute("INSERT INTO profiles (receipt_id, data) VALUES ('rc-1', ?)",
                     (json.dumps({"name": "候補者"}),))
        conn.execute("INSERT INTO forwards VALUES ('fw-1', 'offer-kept', 'rc-1', 'acme',"
                     " 'consent', ?, '{}')", (stamp,))
    assert not _head_file(world).exists()

    with open_configured(world.settings) as ledger:
        book = Book(ledger, Rules.from_settings(world.settings))
        count, problem = book.verify()
        assert problem is None and count == 5
        assert _head_file(world).read_text() == f"{book.head()}\n"
        assert stat.S_IMODE(_head_file(world).stat().st_mode) == 0o600
        bodies = {ref: json.loads(body) for ref, body in ledger.db.conn.execute(
            "SELECT ref, body FROM entries WHERE kind IN ('offer', 'forward', 'profile')")}
    # The key was unknown to the migration: null, but an erased offer's hash is kept.
    assert bodies["offer-kept"]["candidate"] is None
    assert bodies["offer-erased"]["candidate"] == "0123456789abcdef0123456789abcdef"
    assert bodies["fw-1"]["payload"] is None and bodies["rc-1"] == {"data": None}
    # What the digest covers is checked from the upgrade on.
    world.ledger = open_configured(world.settings)
    assert "was moved" in _tampered(world, "UPDATE offers SET company = 'kumo'"
                                           " WHERE id = 'offer-kept'")
    world.ledger.close()


# -- ledger verify --head ---------------------------------------------------------------------


def _config(world: World, tmp_path: Path) -> Path:
    config = tmp_path / "career-relay.toml"
    config.write_text(config_toml(world.config), encoding="utf-8")
    return config


def test_ledger_verify_head(history: World, tmp_path: Path) -> None:
    config = _config(history, tmp_path)
    head = history.book.head()
    n, digest = ledger_head.parse(head)
    hashes = dict(history.rows("SELECT seq, hash FROM entries"))
    history.ledger.close()
    ok = run_cli("ledger", "verify", "--config", str(config), "--head", head)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"ledger ok: {n} entries, chain head {head}\n"
    earlier = f"{n - 4}:{hashes[n - 4]}"  # an older head the agency kept: the chain extends it
    assert run_cli("ledger", "verify", "--config", str(config), "--head", earlier
                   ).returncode == 0

    wrong = run_cli("ledger", "verify", "--config", str(config), "--head", f"{n - 1}:{digest}")
    assert wrong.returncode == 1
    assert wrong.stderr == (f"career-relay: ledger verify: FAILED at entry {n - 1}: does not "
                            f"match the head given (hash {hashes[n - 1][:16]}..., the head "
                            f"given says {digest[:16]}...)\n")
    beyond = run_cli("ledger", "verify", "--config", str(config), "--head", f"{n + 2}:{digest}")
    assert beyond.returncode == 1
    assert beyond.stderr == (f"career-relay: ledger verify: FAILED at entry {n + 2}: the last "
                             f"entries were removed: the head given names entry {n + 2}, "
                             f"the ledger ends at {n}\n")
    bad = run_cli("ledger", "verify", "--config", str(config), "--head", "12:xyz")
    assert bad.returncode == 2 and "--head: not a chain head" in bad.stderr


def test_ledger_verify_names_a_missing_head_file(history: World, tmp_path: Path) -> None:
    config = _config(history, tmp_path)
    history.ledger.close()
    _head_file(history).unlink()
    result = run_cli("ledger", "verify", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith(f"career-relay: ledger verify: FAILED: the head file "
                                    f"{_head_file(history)} is missing")
    assert result.stderr.count("\n") == 1


def test_a_head_file_copied_without_its_lock_file_is_read(history: World) -> None:
    head = _head_file(history)
    Path(f"{head}.lock").unlink()
    assert ledger_head.read(head) == history.ledger.head()
    assert history.book.verify()[1] is None


def test_later_commits_do_not_overwrite_the_evidence_of_removed_entries(
        history: World, caplog: pytest.LogCaptureFixture) -> None:
    """The attack review: the last entries deleted, then ordinary commits wrote the new
    chain's head over the old one, and verify passed again after four of them."""
    (end,) = history.rows("SELECT MAX(seq) FROM entries")[0]
    late = _ids(history, "SELECT id FROM offers WHERE recipient LIKE 'late%'")
    marks = ", ".join(f"'{i}'" for i in late)
    _tampered(history, f"DELETE FROM offers WHERE id IN ({marks})",
              f"DELETE FROM entries WHERE seq > {end - 3}")
    before = _head_file(history).read_text()
    with open_configured(history.settings) as ledger:
        for n in range(5):  # the gateway goes on: the chain grows past the old head
            ledger.record_offer("acme", f"<after-{n}@acme.example>", f"after{n}@example.net")
        assert ledger.head() is not None and ledger.head()[0] > end  # type: ignore[index]
        _, problem = Book(ledger, Rules.from_settings(history.settings)).verify()
    assert _head_file(history).read_text() == before
    assert problem is not None and f"entry {end}" in str(problem)
    alarms = [r for r in caplog.records if "no longer holds" in r.getMessage()]
    assert len(alarms) == 1 and alarms[0].levelname == "ERROR"  # once, not per commit


@pytest.mark.parametrize("which", ["head", "lock"])
def test_a_link_planted_as_the_head_file_is_not_followed(history: World, which: str) -> None:
    victim = history.path.parent / "victim.txt"
    victim.write_text("someone else's file, mode 0644\n")
    victim.chmod(0o644)
    planted = _head_file(history) if which == "head" else Path(f"{_head_file(history)}.lock")
    planted.unlink()
    planted.symlink_to(victim)
    history.offer("one-more@example.net")  # a commit: the head moves
    assert victim.read_text() == "someone else's file, mode 0644\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    _, problem = history.book.verify()
    assert problem is not None and "head file" in str(problem)


def test_a_credit_forged_with_a_well_formed_entry_is_caught(history: World) -> None:
    """The attack review appended a credit entry with a correct hash (the chain is not
    keyed) and its row, re-counting the forwards credit 1 counted: verify said ok."""
    with behind_the_ledgers_back(history) as conn:
        (forwards,) = conn.execute("SELECT forwards FROM credits WHERE n = 1").fetchone()
        counted = json.loads(forwards)
        now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
        seq = ledger_chain.append(conn, now, "acme", "credit", "cr_forged",
                                  {"n": 2, "forwards": counted})
        conn.execute("INSERT INTO credits (id, company, n, created, forwards, entry)"
                     " VALUES ('cr_forged', 'acme', 2, '2026-06-01T00:00:00Z', ?, ?)",
                     (json.dumps(counted), seq))
    with open_configured(history.settings) as ledger:
        _, problem = Book(ledger, Rules.from_settings(history.settings)).verify()
    assert problem is not None
    assert "credit cr_forged counts forward" in str(problem) and "again" in str(problem)


@pytest.mark.parametrize("forgery", ["another hash", "held"])
def test_a_qualified_forward_forged_with_a_well_formed_entry_is_caught(
        history: World, forgery: str) -> None:
    """A well-formed qualified entry and row appended for a delivered consent that did not
    qualify: a second rejection to a candidate who already qualified (one person, once per
    company), forged under another hash to pass as someone new; or a first consent held
    for review that no admin approved, under its own candidate.  Verify names it."""
    who = "cand3@example.net" if forgery == "another hash" else "held@example.net"
    offer = history.offer(who)
    history.accept(offer, wait=300 if forgery == "another hash" else 1)  # 1 s: held
    history.deliver()
    ((forward_id,),) = history.rows(f"SELECT id FROM forwards WHERE offer_id = '{offer.id}'"
                                    " AND kind = 'consent'")
    assert not history.rows(f"SELECT 1 FROM qualified WHERE forward_id = '{forward_id}'")
    candidate = ("f" * 32 if forgery == "another hash"
                 else ledger_chain.candidate_hash(b"hash-key", who))
    ((n,),) = history.rows("SELECT COUNT(*) + 1 FROM qualified WHERE company = 'acme'")
    with behind_the_ledgers_back(history) as conn:
        now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
        seq = ledger_chain.append(conn, now, "acme", "qualified", forward_id,
                                  {"n": n, "candidate": candidate})
        conn.execute("INSERT INTO qualified (forward_id, company, candidate, n, created, entry)"
                     " VALUES (?, 'acme', ?, ?, '2026-06-01T00:00:00Z', ?)",
                     (forward_id, candidate, n, seq))
        if forgery == "held":  # never sent while held: its delivery forged too
            conn.execute("INSERT INTO forward_events (forward_id, created, event)"
                         " VALUES (?, '2026-06-01T00:00:00Z', 'delivered')", (forward_id,))
    with open_configured(history.settings) as ledger:
        _, problem = Book(ledger, Rules.from_settings(history.settings)).verify()
    assert problem is not None and f"qualified forward {forward_id}" in str(problem)
    assert ("other than its offer's" if forgery == "another hash"
            else "held for review") in str(problem)


def test_a_ledger_refuses_a_hash_key_other_than_its_own(history: World, tmp_path: Path) -> None:
    """With secrets.hash_key empty the key is the oldest signing key: dropping it in a
    rotation changed every candidate's hash in silence (a person could qualify twice, and
    verify took every address for changed).  The ledger keeps the key's fingerprint."""
    config = _config(history, tmp_path)
    history.ledger.close()
    assert run_cli("ledger", "verify", "--config", str(config)).returncode == 0
    config.write_text(config.read_text(encoding="utf-8").replace(
        'hash_key = "hash-key"', 'hash_key = "another-key"'), encoding="utf-8")
    refused = run_cli("report", "--config", str(config))
    assert refused.returncode != 0
    assert "secrets.hash_key is not the key this ledger was written with" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1  # one line, no traceback


@pytest.mark.parametrize(("recipient", "to"), [("late0@example.net", "link"),
                                               ("from-link@example.net", "relay"),
                                               ("from-link@example.net", "api")])
def test_an_offer_moved_to_another_source_is_caught(history: World, recipient: str,
                                                    to: str) -> None:
    """The offer's entry covers its source (relay <-> link would move a forward in or out of
    the review that link forwards need), and a relayed offer's digest is what it was before
    offers had a source (the entries already written stay true)."""
    history.ledger.record_offer("acme", "<l1@acme.example>", "from-link@example.net",
                                source="link")
    assert history.book.verify()[1] is None
    (oid, message_id, created), = history.rows(
        "SELECT id, message_id, created FROM offers WHERE recipient = 'late0@example.net'")
    (body,), = history.rows(f"SELECT body FROM entries WHERE kind = 'offer' AND ref = '{oid}'")
    assert json.loads(body)["digest"] == ledger_chain.row_digest(
        [oid, "acme", message_id, created, None, None, None])
    problem = _tampered(history, f"UPDATE offers SET source = '{to}'"
                                 f" WHERE recipient = '{recipient}'")
    assert "was altered after it was recorded" in problem
    assert "@example.net" not in problem
