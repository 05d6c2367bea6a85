"""The ledger's first tables (issue 3): migrations, idempotent offers, counters, the example.

Tests that take ``ledger`` or ``opener`` run on both backends (``backend_url``: the SQLite
file, then PostgreSQL); the rest are SQLite's own (the file, its PRAGMAs, the example).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from career_relay.errors import LedgerConflict, LedgerUnavailable
from career_relay.example_ledger import HASH_KEY, generate
from career_relay.ledger import (
    MIGRATIONS,
    Book,
    Ledger,
    LedgerWriter,
    Rejection,
    Rules,
    new_offer_id,
    open_ledger,
    open_shared,
    reports,
)
from career_relay.ledger.postgres import PostgresBackend
from career_relay.tokens import OFFER_ID

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "ledger.db.example"
NOON = dt.datetime(2026, 4, 1, 3, 0, 0, tzinfo=dt.UTC)


Opener = Callable[..., Ledger]


@pytest.fixture
def opener(tmp_path: Path, backend_url: str) -> Iterator[Opener]:
    """Opens this test's ledger on its backend (keywords as ``open_ledger``'s), as often
    as asked; whatever is still open is closed at the end."""
    opened: list[Ledger] = []

    def open_(**kwargs: Any) -> Ledger:
        ledger = (open_shared(backend_url, **kwargs) if backend_url
                  else open_ledger(tmp_path / "ledger.db", **kwargs))
        opened.append(ledger)
        return ledger

    yield open_
    for ledger in opened:
        ledger.close()


@pytest.fixture
def ledger(opener: Opener) -> Ledger:
    return opener(clock=lambda: NOON)


def _all(ledger: Ledger, sql: str) -> list[Any]:
    with ledger.read() as conn:
        return [tuple(row) for row in conn.execute(sql).fetchall()]


def _in_transaction(ledger: Ledger) -> bool:
    """Whether the ledger left a transaction open: SQLite's writer connection, or any
    connection to the PostgreSQL database (its pool's or another's)."""
    if not isinstance(ledger.backend, PostgresBackend):
        return ledger.db.conn.in_transaction
    return _all(ledger, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname ="
                        " current_database() AND state LIKE 'idle in transaction%'") != [(0,)]


def _applied(ledger: Ledger) -> list[Any]:
    """The migrations applied, with when (unchanged by an open that migrates nothing)."""
    if isinstance(ledger.backend, PostgresBackend):
        return _all(ledger, "SELECT name, applied FROM career_relay_migrations ORDER BY name")
    return _all(ledger, "SELECT migration_set, name, applied_at FROM _sqlite_migrations"
                        " ORDER BY name")


def _schema_of(ledger: Ledger) -> list[Any]:
    """Tables and their columns, indexes and triggers, in each backend's catalogue."""
    if isinstance(ledger.backend, PostgresBackend):
        return _all(ledger, "SELECT table_name, column_name, data_type, ordinal_position"
                            " FROM information_schema.columns WHERE table_schema = 'public'"
                            " UNION ALL SELECT tablename, indexname, indexdef, 0 FROM pg_indexes"
                            " WHERE schemaname = 'public' UNION ALL SELECT c.relname, t.tgname,"
                            " pg_get_triggerdef(t.oid), 0 FROM pg_trigger t JOIN pg_class c"
                            " ON c.oid = t.tgrelid WHERE NOT t.tgisinternal ORDER BY 1, 2, 4")
    return _all(ledger, "SELECT type, name, tbl_name, sql FROM sqlite_master"
                        " ORDER BY type, name")


def _schema(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table; when a migration ran is the one thing allowed to differ."""
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        found = {}
        for table in tables:
            columns = "migration_set, name" if table == "_sqlite_migrations" else "*"
            found[table] = sorted(conn.execute(f'SELECT {columns} FROM "{table}"').fetchall())
        return found


# Migrations


def test_a_new_ledger_has_every_migration_and_wal(tmp_path: Path) -> None:
    """SQLite-only: sqlite-utils' migrations and the file's PRAGMAs (PostgreSQL: below)."""
    with open_ledger(tmp_path / "l.db") as ledger:
        applied = [m.name for m in MIGRATIONS.applied(ledger.db)]
        assert applied == ["0001_offers", "0002_daily_counts", "0003_consent", "0004_entries",
                           "0005_admin", "0006_retention", "0007_report_indexes",
                           "0008_chain_offers_forwards_profiles", "0009_meta",
                           "0010_offer_source", "0011_api_keys", "0012_agencies",
                           "0013_api_offers", "0014_outcomes", "0015_credit_requests",
                           "0016_pulls", "0017_outcome_candidates"]
        assert MIGRATIONS.pending(ledger.db) == []
        assert ledger.db.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert ledger.db.conn.execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_a_new_postgresql_ledger_has_every_migration(fresh_postgres_url: str) -> None:
    """The PostgreSQL counterpart of the test above: an empty database gets every
    migration, by SQLite's names, and a second open applies none."""
    told: list[list[str]] = []
    with open_shared(fresh_postgres_url, on_migrate=told.append) as ledger:
        assert told == [[m.name for m in MIGRATIONS._migrations]]
        assert [name for name, _ in _applied(ledger)] == told[0]
    open_shared(fresh_postgres_url, on_migrate=told.append).close()
    assert len(told) == 1


def test_reopening_migrates_nothing_and_keeps_the_rows(opener: Opener) -> None:
    ledger = opener()
    offer = ledger.record_offer("acme", "<m@acme.example>", "taro@example.jp")
    first, schema = _applied(ledger), _schema_of(ledger)
    ledger.close()
    for _ in range(3):
        told: list[list[str]] = []
        again = opener(on_migrate=told.append)
        assert told == [] and _applied(again) == first
        assert again.offer(offer.id) == offer
        assert _schema_of(again) == schema
        again.close()


# Offers


def test_record_offer_stores_what_it_was_given(ledger: Ledger) -> None:
    offer = ledger.record_offer(
        "acme", "<r1@acme.example>", "Taro.Yamada@Example.JP", "経理", "求人媒体", "一次面接"
    )
    assert OFFER_ID.fullmatch(offer.id) and len(offer.id) == 16
    assert (offer.company, offer.message_id, offer.recipient) == (
        "acme", "<r1@acme.example>", "Taro.Yamada@Example.JP",
    )
    assert (offer.job, offer.channel, offer.stage) == ("経理", "求人媒体", "一次面接")
    assert offer.created == NOON
    assert ledger.offer(offer.id) == offer
    assert ledger.offer("no-such-offer-id") is None


def test_record_offer_is_idempotent_per_message_id_and_recipient(ledger: Ledger) -> None:
    first = ledger.record_offer("acme", "<r1@acme.example>", "taro@example.jp", job="経理")
    again = ledger.record_offer("acme", "<r1@acme.example>", "taro@example.jp", job="営業")
    assert again == first  # same id, and nothing was updated in place
    other_recipient = ledger.record_offer("acme", "<r1@acme.example>", "hanako@example.jp")
    other_message = ledger.record_offer("acme", "<r2@acme.example>", "taro@example.jp")
    assert len({first.id, other_recipient.id, other_message.id}) == 3
    assert _all(ledger, "SELECT count(*) FROM offers") == [(3,)]


def test_a_percent_sign_in_the_sql_is_itself(ledger: Ledger) -> None:
    """PostgreSQL's driver takes ``%`` for a placeholder: the ledger's SQL means its own."""
    ledger.record_offer("acme", "<m@a>", "50%off@example.jp")
    assert _all(ledger, "SELECT 'a%b', COUNT(*) FROM offers WHERE recipient LIKE '50\\%%'"
                        " ESCAPE '\\'") == [("a%b", 1)]
    with ledger.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM offers WHERE recipient LIKE ?",
                            ("%off%",)).fetchone()[0] == 1


def test_an_offer_needs_its_keys(ledger: Ledger) -> None:
    for args in (("", "<m@a>", "x@y"), ("acme", "", "x@y"), ("acme", "<m@a>", "")):
        with pytest.raises(ValueError):
            ledger.record_offer(*args)


def test_a_failed_write_leaves_no_transaction_open(opener: Opener) -> None:
    ids = iter(["same-id-twice-00", "same-id-twice-00", "a-third-id-00000"])
    ledger = opener(new_id=lambda: next(ids))
    ledger.record_offer("acme", "<m1@a>", "x@example.jp")
    with pytest.raises(LedgerConflict):  # an id collision is never silent
        ledger.record_offer("acme", "<m2@a>", "x@example.jp")
    assert not _in_transaction(ledger)
    assert ledger.record_offer("acme", "<m2@a>", "x@example.jp").id == "a-third-id-00000"


def test_threads_sharing_one_ledger(ledger: Ledger) -> None:
    results: list[str] = []

    def work() -> None:
        for i in range(30):
            results.append(ledger.record_offer("acme", f"<m{i}@a>", "x@example.jp").id)
            ledger.count("acme", "rejections")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 30
    assert ledger.counts("acme", NOON.date())["rejections"] == 120


def test_the_writer_gives_every_thread_its_own_offers(ledger: Ledger) -> None:
    # Concurrent callers share commits (one of them leads each); each gets the ids
    # of its own recipients, and a resent message gets the offers it had.
    writer = LedgerWriter(ledger)
    first: dict[tuple[int, int], dict[str, str]] = {}
    again: dict[tuple[int, int], dict[str, str]] = {}

    def work(t: int) -> None:
        for i in range(40):
            rcpts = [f"{t}-{i % 20}-{n}@example.jp" for n in range(2)]
            got = writer.record_rejection("acme", f"<m{t}-{i % 20}@a>",
                                          [(r, new_offer_id()) for r in rcpts])
            assert sorted(got) == rcpts
            (first if i < 20 else again)[(t, i % 20)] = got

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert again == first and len(first) == 120
    for got in first.values():
        for rcpt, offer_id in got.items():
            found = ledger.offer(offer_id)
            assert found is not None and found.recipient == rcpt
    assert ledger.counts("acme", NOON.date())["rejections"] == 120
    with pytest.raises(LedgerUnavailable):
        writer.record_rejection("acme", "<late@a>", [("x@example.jp", new_offer_id())])


def test_a_failed_commit_reaches_every_caller_in_it(ledger: Ledger,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    writer = LedgerWriter(ledger)

    def broken(rejections: object, counts: object = None) -> list[dict[str, str]]:
        time.sleep(0.05)  # long enough for the other callers to queue behind this commit
        raise LedgerUnavailable("the ledger cannot be used now: disk I/O error")

    monkeypatch.setattr(ledger, "record_rejections", broken)
    errors: list[Exception] = []

    def work(n: int) -> None:
        try:
            writer.record_rejection("acme", f"<f{n}@a>", [(f"{n}@example.jp", new_offer_id())])
        except LedgerUnavailable as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 5 and all("disk I/O" in str(e) for e in errors)
    writer.close()


def test_a_refused_rejection_fails_alone_not_its_batch(ledger: Ledger,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The first commit is held until five more callers have queued behind it, one of them
    # with a value the ledger refuses: they share the next commit, which rolls back; each
    # is then tried alone, so four are recorded and only the bad one hears of it.
    writer = LedgerWriter(ledger)
    real = ledger.record_rejections
    held, go = threading.Event(), threading.Event()

    def first_waits(rejections: Any, counts: Any = None) -> list[dict[str, str]]:
        if not held.is_set():
            held.set()
            go.wait(30)
        return real(rejections, counts)

    monkeypatch.setattr(ledger, "record_rejections", first_waits)
    results: dict[int, Any] = {}

    def work(n: int) -> None:
        try:
            results[n] = writer.record_rejection(
                "acme", f"<b{n}@a>", [(f"{n}@example.jp", new_offer_id())],
                counters=("refused-kind",) if n == 3 else ("rejections",))  # type: ignore[arg-type]
        except Exception as exc:  # what the caller would hear
            results[n] = exc

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    threads[0].start()
    assert held.wait(30)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 30
    while len(writer._queue) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(writer._queue) == 5
    go.set()
    for t in threads:
        t.join()
    writer.close()
    assert isinstance(results[3], ValueError)
    assert all(isinstance(results[n], dict) for n in (0, 1, 2, 4, 5))
    assert ledger.counts("acme", NOON.date())["rejections"] == 5
    assert Book(ledger).verify()[1] is None


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from career_relay.ledger import open_ledger, open_shared

    where, go, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    # A new file, or an empty database: the processes race on the migrations too.
    opened = open_shared(where) if where.startswith("postgresql:") else open_ledger(where)
    with opened as ledger:
        ids = []
        for i in range(n):
            ids.append(ledger.record_offer("acme", f"<m{i}@acme.example>", "taro@example.jp").id)
            ledger.count("acme", "rejections")
    print(json.dumps(ids), flush=True)
    """
)


def test_processes_racing_on_one_recipient_make_one_offer(
        tmp_path: Path, backend_url: str, request: pytest.FixtureRequest) -> None:
    """Six processes on one new SQLite file, or six hosts on one empty PostgreSQL database."""
    path, go, n, workers = tmp_path / "ledger.db", tmp_path / "go", 25, 6
    where = request.getfixturevalue("fresh_postgres_url") if backend_url else str(path)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, where, str(go), str(n)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(workers)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stderr is not None
            if child.stdout.readline().strip() != "ready":
                pytest.fail(f"a child did not start: {child.stderr.read()}")
        go.touch()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            child.kill()
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    lists = [json.loads(out) for out, _ in outputs]
    assert all(ids == lists[0] for ids in lists)
    assert len(set(lists[0])) == n
    with open_shared(where) if backend_url else open_ledger(path) as ledger:
        assert _all(ledger, "SELECT count(*) FROM offers") == [(n,)]
        assert _all(ledger, "SELECT sum(rejections) FROM daily_counts") == [(n * workers,)]
        assert Book(ledger).verify()[1] is None


# Counters


def test_counters_per_company_kind_and_day(ledger: Ledger) -> None:
    assert ledger.count("acme", "rejections") == 1
    assert ledger.count("acme", "rejections") == 2
    assert ledger.count("acme", "not_injected") == 1
    assert ledger.count("acme", "unmarked_rejections", dt.date(2026, 3, 31)) == 1
    assert ledger.count("kumo", "rejections") == 1
    assert ledger.counts("acme", NOON.date()) == {
        "rejections": 2, "not_injected": 1, "unmarked_rejections": 0,
    }
    assert ledger.counts("acme", dt.date(2026, 3, 31)) == {
        "rejections": 0, "not_injected": 0, "unmarked_rejections": 1,
    }
    assert ledger.counts("nobody", NOON.date()) == {
        "rejections": 0, "not_injected": 0, "unmarked_rejections": 0,
    }


def test_the_day_is_the_utc_day(opener: Opener) -> None:
    late_in_tokyo = dt.datetime(2026, 4, 2, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    ledger = opener(clock=lambda: late_in_tokyo)
    ledger.count("acme", "rejections")
    assert ledger.counts("acme", dt.date(2026, 4, 1))["rejections"] == 1


def test_an_unknown_counter_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="unknown counter"):
        ledger.count("acme", "offers")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ledger.count("acme", "rejections = 0; --")  # type: ignore[arg-type]


# The example file


def test_the_example_ledger_is_generated_from_the_migrations(tmp_path: Path) -> None:
    """SQLite-only: ledger.db.example is a SQLite file, compared table by table."""
    fresh = tmp_path / "ledger.db.example"
    generate(fresh)
    assert _schema(EXAMPLE) == _schema(fresh), (
        "run `python -m career_relay.example_ledger ledger.db.example` and commit the result"
    )
    assert _rows(EXAMPLE) == _rows(fresh), "regenerate ledger.db.example (see above)"


def test_the_example_ledger_is_realistic_and_stands_alone() -> None:
    """SQLite-only: reads the example file with sqlite3."""
    assert not EXAMPLE.with_name(EXAMPLE.name + "-wal").exists()
    with sqlite3.connect(EXAMPLE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        companies = conn.execute("SELECT count(DISTINCT company) FROM offers").fetchone()
        assert companies[0] >= 3
        (offers,) = conn.execute("SELECT count(*) FROM offers").fetchone()
        assert offers >= 30
        sums = conn.execute(
            "SELECT sum(rejections), sum(not_injected), sum(unmarked_rejections) FROM daily_counts"
        ).fetchone()
        assert all(s > 0 for s in sums)
        domains = {r[0].rsplit("@", 1)[1] for r in conn.execute("SELECT recipient FROM offers")}
        assert all(d == "example" or d.endswith(".example") or d.startswith("example.")
                   for d in domains)
        # A few hundred offers over months, and everything that happens to them.
        assert offers >= 200
        (months,) = conn.execute("SELECT count(DISTINCT substr(created, 1, 7)) FROM offers"
                                 ).fetchone()
        assert months >= 4
        count = dict(conn.execute(
            "SELECT 'views', count(*) FROM offer_views"
            " UNION ALL SELECT 'decision:' || decision, count(*) FROM receipts GROUP BY decision"
            " UNION ALL SELECT 'held', count(*) FROM receipts WHERE review IS NOT NULL"
            " UNION ALL SELECT 'review:' || decision, count(*) FROM reviews GROUP BY decision"
            " UNION ALL SELECT 'entry:' || kind, count(*) FROM entries GROUP BY kind"
            " UNION ALL SELECT 'redemptions', count(*) FROM redemptions").fetchall())
        for kind in ("views", "decision:accept", "decision:decline", "decision:withdraw", "held",
                     "review:approve", "review:reject", "entry:provision", "entry:qualified",
                     "entry:notice_sent", "redemptions"):
            assert count.get(kind, 0) > 0, kind
        (most,) = conn.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM credits"
                               " GROUP BY company)").fetchone()
        assert most >= 2


def test_the_example_ledger_verifies(tmp_path: Path) -> None:
    """SQLite-only: a copy of the example file."""
    copy = tmp_path / "ledger.db"
    copy.write_bytes(EXAMPLE.read_bytes())
    key = HASH_KEY.encode()
    with open_ledger(copy, hash_key=key) as ledger:
        count, problem = Book(ledger, Rules(hash_key=key)).verify()
        # A copy without its head file says so; init --demo writes it beside the copy.
        assert problem is not None and "head file" in str(problem)
        ledger.publish_head()
        count, problem = Book(ledger, Rules(hash_key=key)).verify()
    assert problem is None and count > 100
    kinds = {k for k, in ledger_rows(copy, "SELECT DISTINCT kind FROM entries")}
    assert {"offer", "forward", "profile"} <= kinds


def ledger_rows(path: Path, sql: str) -> list[Any]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_init_demo_starts_from_the_example_ledger(tmp_path: Path) -> None:
    """SQLite-only: init --demo copies the example file."""
    from tests.conftest import run_cli

    made = run_cli("init", "--dir", str(tmp_path), "--demo")
    assert made.returncode == 0, made.stderr
    assert "ledger.db.example" in made.stdout
    config = str(tmp_path / "career-relay.toml")
    shown = run_cli("report", "--format", "json", "--config", config)
    assert shown.returncode == 0, shown.stderr
    rows = {r["company"]: r for r in json.loads(shown.stdout)}
    assert set(rows) == {"acme", "kumo", "hoshi"}
    with open_ledger(tmp_path / "ledger.db") as ledger:
        when = reports.period(None, None, dt.datetime.now(dt.UTC).date())
        expected = reports.report(ledger, ["acme", "kumo", "hoshi"], when, 10, details=True)
    assert [rows[r["company"]] for r in expected] == expected
    assert rows["acme"]["credits_redeemed"] == 2 and rows["acme"]["offers"] > 100
    assert (rows["acme"]["credits_requested"], rows["acme"]["credits_fulfilled"]) == (1, 1)
    verify = run_cli("ledger", "verify", "--config", config)
    assert verify.returncode == 0, verify.stderr
    again = run_cli("init", "--dir", str(tmp_path / "again"), "--demo")  # a fresh directory
    assert again.returncode == 0, again.stderr


def test_the_example_generator_is_a_command(tmp_path: Path) -> None:
    """SQLite-only: the generator writes a SQLite file."""
    out = tmp_path / "x.db"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "career_relay.example_ledger", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert _rows(out) == _rows(EXAMPLE)
    assert time.monotonic() - started < 30


def test_record_rejection_is_one_transaction_and_keeps_earlier_offers(ledger: Ledger) -> None:
    first = ledger.record_rejection("acme", "<m1@acme.example>",
                                    [("a@example.net", "offerAAAAAAAAAAA"),
                                     ("b@example.net", "offerBBBBBBBBBBB")], job="エンジニア")
    assert first == {"a@example.net": "offerAAAAAAAAAAA", "b@example.net": "offerBBBBBBBBBBB"}
    again = ledger.record_rejection("acme", "<m1@acme.example>",
                                    [("a@example.net", "offerCCCCCCCCCCC")])
    assert again == {"a@example.net": "offerAAAAAAAAAAA"}  # a retry keeps its offer
    offer = ledger.offer("offerAAAAAAAAAAA")
    assert offer is not None and offer.job == "エンジニア"
    assert ledger.offer("offerCCCCCCCCCCC") is None
    assert ledger.counts("acme", offer.created.date())["rejections"] == 1  # the retry adds none


def test_one_batch_of_new_retried_and_repeated_rejections(ledger: Ledger) -> None:
    # The gateway's group commit puts whatever is queued into one transaction: new mail, a
    # retry of mail recorded earlier, the same message twice (two sessions of one retry)
    # and a recipient listed twice.  Each gets the offers made first, each message counts
    # once, and the chain vouches for exactly the offers made.
    ledger.record_rejection("acme", "<old@a>", [("old@example.net", "offerOLD00000001")])
    batch = [
        Rejection("acme", "<new@a>", (("n1@example.net", "offerNEW00000001"),
                                      ("n2@example.net", "offerNEW00000002"))),
        Rejection("acme", "<old@a>", (("old@example.net", "offerOLD00000002"),
                                      ("late@example.net", "offerOLD00000003"))),
        Rejection("globex", "<twice@g>", (("t@example.net", "offerTWICE000001"),)),
        Rejection("globex", "<twice@g>", (("t@example.net", "offerTWICE000002"),)),
        Rejection("globex", "<dup@g>", (("d@example.net", "offerDUP00000001"),
                                        ("d@example.net", "offerDUP00000002"))),
    ]
    results = ledger.record_rejections(batch, {("acme", "unmarked_rejections"): 3})
    assert results == [
        {"n1@example.net": "offerNEW00000001", "n2@example.net": "offerNEW00000002"},
        {"old@example.net": "offerOLD00000001", "late@example.net": "offerOLD00000003"},
        {"t@example.net": "offerTWICE000001"},
        {"t@example.net": "offerTWICE000001"},
        {"d@example.net": "offerDUP00000001"},
    ]
    for gone in ("offerOLD00000002", "offerTWICE000002", "offerDUP00000002"):
        assert ledger.offer(gone) is None
    day = ledger.offer("offerNEW00000001").created.date()  # type: ignore[union-attr]
    # <old@a> added an offer (a new recipient): counted, as a retry that adds none is not.
    assert ledger.counts("acme", day) == {"rejections": 3, "not_injected": 0,
                                          "unmarked_rejections": 3}
    assert ledger.counts("globex", day)["rejections"] == 2
    offers = {ref for (ref,) in _all(ledger, "SELECT ref FROM entries WHERE kind = 'offer'")}
    assert offers == {"offerOLD00000001", "offerNEW00000001", "offerNEW00000002",
                      "offerOLD00000003", "offerTWICE000001", "offerDUP00000001"}
    assert Book(ledger).verify()[1] is None


def test_a_batch_larger_than_one_insert(ledger: Ledger) -> None:
    # More offers than one INSERT takes (offers._INSERT_CHUNK): every one made and chained.
    rejections = [Rejection("acme", f"<m{i}@a>",
                            tuple((f"c{i}-{j}@example.net", new_offer_id()) for j in range(7)))
                  for i in range(120)]
    results = ledger.record_rejections(rejections)
    assert [dict(r.offers) for r in rejections] == results
    assert _all(ledger, "SELECT COUNT(*) FROM offers")[0][0] == 840
    assert _all(ledger, "SELECT COUNT(*) FROM entries WHERE kind = 'offer'")[0][0] == 840
    assert Book(ledger).verify()[1] is None


def test_companies_never_share_an_offer(ledger: Ledger) -> None:
    # Two companies (or one ATS reusing Message-IDs for both) write to one candidate.
    acme = ledger.record_rejection("acme", "<1@localhost>", [("c@example.net", "offerACME0000001")])
    globex = ledger.record_rejection("globex", "<1@localhost>",
                                     [("c@example.net", "offerGLOBEX00001")])
    assert acme != globex
    offer = ledger.offer(globex["c@example.net"])
    assert offer is not None and offer.company == "globex"


def test_the_ledger_files_are_private(tmp_path: Path) -> None:
    """SPEC 8: the database, its WAL and its shared memory are created 0600, and an older
    ledger left readable by others is narrowed when it is opened.  SQLite-only: its files."""
    path = tmp_path / "fresh.db"
    ledger = open_ledger(path)
    try:
        ledger.count("acme", "rejections")  # a write: the WAL and -shm exist now
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert name.exists() and name.stat().st_mode & 0o777 == 0o600, name
    finally:
        ledger.close()
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    old.chmod(0o644)
    open_ledger(old).close()
    assert old.stat().st_mode & 0o777 == 0o600


def test_the_drivers_errors_reach_callers_as_the_projects(tmp_path: Path) -> None:
    """Callers outside the package never see sqlite3: a refused write is a LedgerConflict,
    a database that cannot be used a LedgerUnavailable (the gateway's 451, the site's 503),
    each with the driver's error as its cause.  SQLite-only: sqlite3's errors (PostgreSQL's:
    below)."""
    with open_ledger(tmp_path / "l.db") as ledger:
        ledger.record_offer("acme", "<m@a>", "x@example.jp")  # its entry
        with pytest.raises(LedgerConflict) as refused, ledger.write() as conn:
            conn.execute("DELETE FROM entries")  # append-only: a trigger refuses
        assert isinstance(refused.value.__cause__, sqlite3.IntegrityError)
        with pytest.raises(LedgerUnavailable) as away, ledger.read() as conn:
            conn.execute("SELECT * FROM no_such_table")
        assert isinstance(away.value.__cause__, sqlite3.OperationalError)


def test_psycopgs_errors_reach_callers_as_the_projects(ledger_postgres_url: str) -> None:
    """The PostgreSQL counterpart of the test above: a refused write (an append-only
    trigger) is a LedgerConflict, a connection the server ended a LedgerUnavailable, each
    with psycopg's error as its cause; and the pool's next connection works."""
    with open_shared(ledger_postgres_url) as ledger:
        ledger.record_offer("acme", "<m@a>", "x@example.jp")  # its entry
        with pytest.raises(LedgerConflict, match="append-only") as refused, \
                ledger.write() as conn:
            conn.execute("DELETE FROM entries")
        assert isinstance(refused.value.__cause__, psycopg.IntegrityError)
        with pytest.raises(LedgerUnavailable) as away, ledger.read() as conn:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        assert isinstance(away.value.__cause__, psycopg.OperationalError)
        assert _all(ledger, "SELECT COUNT(*) FROM entries") == [(1,)]
