"""``career-relay ledger migrate --to URL`` (SPEC 12, issue 13 item 4): a SQLite ledger
copied to PostgreSQL with its chain and head intact, against the private PostgreSQL of
the suite (tests/pg.py).

Sources: a scripted history through the real code (offers, views, accepts, a decline, a
withdrawal, an erasure, a held accept and its review, deliveries, qualified forwards, a
credit and its redemption, counters, an admin login, a retention purge that erased
addresses), and ``ledger.db.example`` (five months of three companies, generated
through the real code paths) as ``init --demo`` sets it up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from career_relay.errors import ConfigError, LedgerConflict, LedgerError
from career_relay.example_ledger import HASH_KEY
from career_relay.ledger import (
    AdminUsers,
    Book,
    CopyRefused,
    Ledger,
    Outcomes,
    Rules,
    copy_to,
    open_configured,
    open_ledger,
    open_shared,
    reports,
    retention,
)
from career_relay.ledger.copy import ROWID_TABLES, TABLES
from career_relay.ledger_migrate import LAST_DAY, masked, scrub
from tests.conftest import REPO, run_cli
from tests.test_ledger_rules import World

ALL_TIME = reports.period(None, LAST_DAY, LAST_DAY)


# -- the sources ----------------------------------------------------------------------------


def _history(tmp_path: Path) -> World:
    """Everything the ledger records, through the real code, on a SQLite file."""
    world = World(tmp_path)
    for i in range(4):  # undecided: retention erases their addresses below
        world.offer(f"quiet{i}@example.net")
    world.ledger.count("acme", "rejections")
    world.ledger.count("kumo", "not_injected")
    world.qualified_then_deliver(11)  # one credit at the tenth
    world.qualified_then_deliver(2, company="kumo", start=100)
    viewed = world.offer("viewer@example.net")
    world.consents.view(viewed)
    world.decline(viewed)
    changed = world.offer("changed@example.net")
    world.accept(changed)
    world.deliver()
    world.withdraw(changed)
    erased = world.offer("erased@example.net")
    world.accept(erased)
    world.deliver()
    world.tick()
    world.consents.erase(erased, "ja", _client())
    held = world.accept(world.offer("scanned@example.net"), ua="python-requests/2.31")
    world.store.review(held.id, approve=True, by="ops@relay.example")
    world.deliver()
    # What the agency reported on three of them, one corrected on the same day.
    with world.ledger.read() as conn:
        forwards = [str(r[0]) for r in conn.execute(
            "SELECT id FROM forwards WHERE company = 'acme' AND kind = 'consent'"
            " ORDER BY rowid LIMIT 3")]
    outcomes, today = Outcomes(world.ledger, world.book.rules), world.ledger.now().date()
    for forward, status in zip(forwards, ("registered", "placed", "unreachable"), strict=True):
        assert outcomes.record("default", forward, status, today) is not None
    assert outcomes.record("default", forwards[1], "interviewing", today) is not None
    world.book.redeem("acme", by="hr", note="中途採用に利用")  # the last entry
    AdminUsers(world.ledger).add("Boss@Acme.example", "a long enough password", "acme")
    world.tick(100 * 86400)
    purged = retention.purge(world.ledger, world.book.rules, retention.Policy())
    assert purged.undecided_addresses >= 4
    world.deliver()
    return world


def _client() -> Any:
    from career_relay.consent import Client
    from tests.test_ledger_rules import IPHONE

    return Client(IPHONE, "198.51.100.7")


@pytest.fixture
def history(tmp_path: Path) -> Any:
    world = _history(tmp_path)
    yield world
    world.ledger.close()


def _example(tmp_path: Path) -> Path:
    """``ledger.db.example`` with its head file beside it, as ``init --demo`` leaves it."""
    path = tmp_path / "ledger.db"
    shutil.copyfile(REPO / "ledger.db.example", path)
    with open_ledger(path, hash_key=HASH_KEY.encode()) as ledger:
        ledger.publish_head()
    return path


# -- what both sides hold -------------------------------------------------------------------


def _rows(ledger: Ledger, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    """Sorted here: the two disagree on where NULL sorts, and only four tables have rowid."""
    with ledger.read() as conn:
        rows = [tuple(r) for r in conn.execute(
            f"SELECT {', '.join(columns)} FROM {table}").fetchall()]
    return sorted(rows, key=lambda row: [(v is not None, v) for v in row])


def _columns(ledger: Ledger, table: str) -> list[str]:
    with ledger.read() as conn:
        names = [d[0] for d in conn.execute(f"SELECT * FROM {table} LIMIT 0").description]
    return names + (["rowid"] if table in ROWID_TABLES else [])


def _same_rows(source: Ledger, target: Ledger) -> dict[str, int]:
    """Every table's rows, value for value (rowids included), on both sides; the counts."""
    counts = {}
    for table in TABLES:
        columns = _columns(source, table)
        ours, theirs = _rows(source, table, columns), _rows(target, table, columns)
        assert ours == theirs, table
        counts[table] = len(ours)
    return counts


def _report(ledger: Ledger, companies: list[str]) -> list[dict[str, Any]]:
    return reports.report(ledger, companies, ALL_TIME, 10, details=True)


# -- the copy -------------------------------------------------------------------------------


def test_a_history_moves_with_its_chain_head_rows_and_reports(
        history: World, fresh_postgres_url: str) -> None:
    source = history.ledger
    key = history.book.rules.hash_key
    copied = copy_to(source, fresh_postgres_url)
    assert copied.head == source.head() and copied.head is not None
    assert copied.head_text == source.head_text()
    with open_shared(fresh_postgres_url, hash_key=key) as target:
        count, problem = Book(target, history.book.rules).verify(copied.head)
        assert problem is None and count == copied.head[0]
        assert target.head_text() == source.head_text()
        counts = _same_rows(source, target)
        assert counts == copied.rows
        assert _report(target, ["acme", "kumo"]) == _report(source, ["acme", "kumo"])
        with target.read() as conn:
            erased = conn.execute("SELECT COUNT(*) FROM offers WHERE erased IS NOT NULL"
                                  ).fetchone()[0]
    assert erased >= 5  # retention's and the candidate's erasures came along
    assert all(counts[t] > 0 for t in ("offers", "offer_views", "receipts", "profiles",
                                       "reviews", "forwards", "forward_events", "qualified",
                                       "credits", "redemptions", "admin_users", "offer_stats",
                                       "first_decisions", "meta", "daily_counts",
                                       "outcomes", "outcome_candidates"))


def test_the_example_ledger_moves_and_the_copy_keeps_working(
        tmp_path: Path, fresh_postgres_url: str) -> None:
    key = HASH_KEY.encode()
    rules = Rules(hash_key=key)
    with open_ledger(_example(tmp_path), hash_key=key) as source:
        assert Book(source, rules).verify()[1] is None
        copied = copy_to(source, fresh_postgres_url)
        assert copied.rows["offers"] == 428 and copied.rows["entries"] == 734
        companies = ["acme", "kumo", "hoshi"]
        with open_shared(fresh_postgres_url, hash_key=key) as target:
            assert Book(target, rules).verify(copied.head) == (734, None)
            assert _same_rows(source, target) == copied.rows
            assert _report(target, companies) == _report(source, companies)
            source_rowids = _rows(source, "offers", ["MAX(rowid)"])[0][0]  # one row
    assert copied.head is not None
    with open_shared(fresh_postgres_url, hash_key=key) as target:
        # The chain goes on from the copied head; new rows sort after the copied ones.
        offer = target.record_offer("acme", "<after@acme.example>", "new@example.net")
        user = AdminUsers(target).add("ops@relay.example", "a long enough password", None)
        with target.read() as conn:
            seq, prev = conn.execute("SELECT seq, prev FROM entries WHERE ref = ?",
                                     (offer.id,)).fetchone()
            rowid = conn.execute("SELECT rowid FROM offers WHERE id = ?",
                                 (offer.id,)).fetchone()[0]
        assert (seq, prev) == (copied.head[0] + 1, copied.head[1])
        assert rowid > source_rowids and user.id >= 1
        assert Book(target, rules).verify(copied.head) == (735, None)
        # The append-only triggers are in force after the copy.
        for statement in ("UPDATE entries SET body = '{}' WHERE seq = 1",
                          "DELETE FROM offers WHERE id = '" + offer.id + "'",
                          "UPDATE receipts SET decision = 'decline'", "TRUNCATE redemptions"):
            with pytest.raises(LedgerConflict, match="append-only"), target.write() as conn:
                conn.execute(statement)


def test_identities_restart_past_the_copied_ids(history: World, fresh_postgres_url: str
                                                ) -> None:
    copy_to(history.ledger, fresh_postgres_url)
    with open_shared(fresh_postgres_url, hash_key=history.ledger.hash_key) as target:
        user = AdminUsers(target).add("second@acme.example", "a long enough password", "acme")
        assert user.id == 2  # the copied one kept id 1
        with target.read() as conn:
            for table in sorted(ROWID_TABLES):
                (last,) = conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()
                (nxt,) = conn.execute("SELECT nextval(pg_get_serial_sequence(?, 'rowid'))",
                                      (table,)).fetchone()
                assert nxt == last + 1, table


def test_the_copy_keeps_the_key_fingerprint(history: World, fresh_postgres_url: str) -> None:
    """The meta row came along: the copy refuses another secrets.hash_key, as the file did."""
    copy_to(history.ledger, fresh_postgres_url)
    settings = dataclasses.replace(history.settings, ledger=dataclasses.replace(
        history.settings.ledger, url=fresh_postgres_url))
    with open_configured(settings) as target:
        assert Book(target).verify()[1] is None
    other = dataclasses.replace(settings, secrets=dataclasses.replace(
        settings.secrets, hash_key="another-key"))
    with pytest.raises(ConfigError, match="not the key this ledger was written with"):
        open_configured(other)


# -- a copy that does not hold --------------------------------------------------------------


def _as_superuser(url: str, *statements: str) -> None:
    """What whoever holds the database can do: switch off the triggers, then edit."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


@pytest.mark.parametrize(("statements", "named"), [
    (["ALTER TABLE entries DISABLE TRIGGER USER",
      "UPDATE entries SET body = replace(body, '}', ',\"x\":1}') WHERE seq = 20"],
     "entry 20: altered"),
    (["ALTER TABLE offers DISABLE TRIGGER USER",
      "UPDATE offers SET company = 'kumo' WHERE rowid = 3"], "was moved from company acme"),
    (["ALTER TABLE receipts DISABLE TRIGGER USER",
      "UPDATE receipts SET decision = 'decline' WHERE rowid = 2"], "was altered"),
    (["ALTER TABLE entries DISABLE TRIGGER USER", "ALTER TABLE redemptions DISABLE TRIGGER USER",
      "DELETE FROM redemptions", "DELETE FROM entries WHERE seq = (SELECT MAX(seq) FROM entries)"],
     "the last entries were removed"),
])
def test_a_tampered_row_in_the_copy_is_caught(history: World, fresh_postgres_url: str,
                                              statements: list[str], named: str) -> None:
    """The check is live: verify on the copy, against the source's head, names the row."""
    copied = copy_to(history.ledger, fresh_postgres_url)
    _as_superuser(fresh_postgres_url, *statements)
    with open_shared(fresh_postgres_url, hash_key=history.book.rules.hash_key) as target:
        _, problem = Book(target, history.book.rules).verify(copied.head)
    assert problem is not None and named in str(problem)


def test_a_second_copy_into_the_same_database_is_refused(history: World,
                                                          fresh_postgres_url: str) -> None:
    first = copy_to(history.ledger, fresh_postgres_url)
    with pytest.raises(CopyRefused, match=r"already holds a ledger \(table offers has rows\)"):
        copy_to(history.ledger, fresh_postgres_url)
    with open_shared(fresh_postgres_url, hash_key=history.ledger.hash_key) as target:
        with target.read() as conn:
            (offers,) = conn.execute("SELECT COUNT(*) FROM offers").fetchone()
        assert offers == first.rows["offers"] and target.head() == first.head


def test_a_database_a_process_already_wrote_to_is_refused(history: World,
                                                          fresh_postgres_url: str) -> None:
    with open_shared(fresh_postgres_url) as target:  # a gateway started on it too early
        target.count("acme", "rejections")
    with pytest.raises(CopyRefused, match=r"table daily_counts has rows"):
        copy_to(history.ledger, fresh_postgres_url)


def test_meta_of_the_same_key_is_taken_of_another_refused(
        history: World, fresh_postgres_url: str, pg_server: Any) -> None:
    settings = dataclasses.replace(history.settings, ledger=dataclasses.replace(
        history.settings.ledger, url=fresh_postgres_url))
    open_configured(settings).close()  # the same key's fingerprint, and nothing else
    copied = copy_to(history.ledger, fresh_postgres_url)
    assert copied.rows["meta"] == 1  # it was there already, and is the source's
    with open_configured(settings) as target:
        assert Book(target).verify(copied.head)[1] is None
    other_url = pg_server.url(pg_server.create_database())
    other = dataclasses.replace(settings, ledger=dataclasses.replace(settings.ledger,
                                                                     url=other_url),
                                secrets=dataclasses.replace(settings.secrets,
                                                            hash_key="another-key"))
    open_configured(other).close()
    with pytest.raises(CopyRefused, match="table meta"):
        copy_to(history.ledger, other_url)


def test_derived_tables_that_differ_abort_the_copy_and_leave_nothing(
        history: World, fresh_postgres_url: str) -> None:
    """offer_stats is rebuilt by PostgreSQL's triggers and compared with the source's: a
    source whose counts are off is not copied, and the transaction leaves no row."""
    with history.ledger.write() as conn:
        conn.execute("UPDATE offer_stats SET offers = offers + 1 WHERE company = 'kumo'")
    with pytest.raises(LedgerError, match="offer_stats as PostgreSQL's triggers built it"):
        copy_to(history.ledger, fresh_postgres_url)
    with open_shared(fresh_postgres_url, check_key=False) as target, target.read() as conn:
        for table in TABLES:
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,), table


def test_a_table_the_copy_does_not_know_stops_it(history: World,
                                                 fresh_postgres_url: str) -> None:
    with history.ledger.write() as conn:
        conn.execute("CREATE TABLE later_feature (x TEXT)")
    with pytest.raises(LedgerError, match="a table the copy does not know: later_feature"):
        copy_to(history.ledger, fresh_postgres_url)


def test_every_table_of_both_schemas_is_copied(tmp_path: Path, fresh_postgres_url: str
                                               ) -> None:
    with open_ledger(tmp_path / "l.db") as ledger, ledger.read() as conn:
        sqlite_tables = {n for (n,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")} - {"_sqlite_migrations"}
    with open_shared(fresh_postgres_url) as target, target.read() as conn:
        pg_tables = {n for (n,) in conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema()")} - {"career_relay_migrations"}
    assert sqlite_tables == pg_tables == set(TABLES)


# -- the command ----------------------------------------------------------------------------


def _demo(tmp_path: Path) -> Path:
    done = run_cli("init", "--dir", str(tmp_path), "--demo")
    assert done.returncode == 0, done.stderr
    return tmp_path / "career-relay.toml"


def _password(url: str) -> str:
    return url.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]


def test_the_command_end_to_end(tmp_path: Path, fresh_postgres_url: str) -> None:
    config = _demo(tmp_path)
    ledger = tmp_path / "ledger.db"
    before = hashlib.sha256(ledger.read_bytes()).hexdigest()
    report = run_cli("report", "--format", "json", "--config", str(config))
    verified = run_cli("ledger", "verify", "--config", str(config))
    assert report.returncode == verified.returncode == 0

    done = run_cli("ledger", "migrate", "--to", fresh_postgres_url, "--config", str(config))
    assert done.returncode == 0, done.stderr
    head = verified.stdout.split("chain head ")[1].strip()
    assert f"chain head: {head} in SQLite, {head} in PostgreSQL" in done.stdout
    assert "ledger verify: ok on both" in done.stdout
    assert "reports equal (3 companies" in done.stdout
    assert "       428  offers\n" in done.stdout and "       734  entries\n" in done.stdout
    assert ":***@127.0.0.1" in done.stdout
    assert _password(fresh_postgres_url) not in done.stdout + done.stderr
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == before  # the backup

    again = run_cli("ledger", "migrate", "--to", fresh_postgres_url, "--config", str(config))
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "table offers has rows" in again.stderr
    assert _password(fresh_postgres_url) not in again.stderr

    # ledger.url set: the gateways and sites would now use the copy.
    text = config.read_text(encoding="utf-8").replace(
        "[ledger]\n", f"[ledger]\nurl = {json.dumps(fresh_postgres_url)}\n", 1)
    config.write_text(text, encoding="utf-8")
    on_pg = run_cli("ledger", "verify", "--head", head, "--config", str(config))
    assert on_pg.returncode == 0 and on_pg.stdout == verified.stdout, on_pg.stderr
    assert run_cli("report", "--format", "json", "--config", str(config)).stdout == report.stdout


def test_the_command_refuses_a_ledger_that_does_not_verify(tmp_path: Path,
                                                           fresh_postgres_url: str) -> None:
    config = _demo(tmp_path)
    (tmp_path / "ledger.db.head").unlink()
    done = run_cli("ledger", "migrate", "--to", fresh_postgres_url, "--config", str(config))
    assert done.returncode == 1
    assert "the SQLite ledger does not verify" in done.stderr
    assert "nothing was copied" in done.stderr
    with open_shared(fresh_postgres_url) as target, target.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM entries").fetchone() == (0,)


def test_the_command_never_prints_a_password(tmp_path: Path, fresh_postgres_url: str) -> None:
    config = _demo(tmp_path)
    wrong = fresh_postgres_url.replace(f":{_password(fresh_postgres_url)}@",
                                       ":Not-The-Password-%zz@")
    done = run_cli("ledger", "migrate", "--to", wrong, "--config", str(config))
    assert done.returncode == 1 and done.stderr.startswith("career-relay: error: ")
    assert "Not-The-Password" not in done.stdout + done.stderr
    wrong = fresh_postgres_url.replace(f":{_password(fresh_postgres_url)}@",
                                       ":Not-The-Password@")
    done = run_cli("ledger", "migrate", "--to", wrong, "--config", str(config))
    assert done.returncode == 1 and "password authentication failed" in done.stderr
    assert "Not-The-Password" not in done.stdout + done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["ledger", "migrate"], "ledger migrate needs --to URL"),
    (["ledger", "verify", "--to", "postgresql://h/db"], "ledger verify takes no --to"),
    (["ledger", "migrate", "--to", "var/other.db"], "needs a PostgreSQL URL"),
    (["ledger", "migrate", "--to", "postgresql://h/db", "--head", "1:" + "0" * 64],
     "ledger migrate takes no --head"),
])
def test_the_command_line_is_checked(args: list[str], message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2 and message in done.stderr


def test_a_password_is_masked_in_every_spelling() -> None:
    assert masked("postgresql://app:s3cr%2Ft@db.example:5432/ledger") == \
        "postgresql://app:***@db.example:5432/ledger"
    assert masked("postgresql://app@db.example/ledger?password=s3cret&sslmode=require") == \
        "postgresql://app@db.example/ledger?password=***&sslmode=require"
    assert masked("postgresql://db.example/ledger") == "postgresql://db.example/ledger"
    url = "postgresql://app:s3cr%2Ft@db.example/ledger"
    assert scrub('invalid percent-encoded token: "s3cr%2Ft" and s3cr/t', url) == \
        'invalid percent-encoded token: "***" and ***'


def test_the_sqlite_file_is_only_read(history: World, fresh_postgres_url: str) -> None:
    history.ledger.close()
    path = history.path
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with open_configured(history.settings) as source:
        copy_to(source, fresh_postgres_url)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
