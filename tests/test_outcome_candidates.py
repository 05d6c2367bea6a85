"""``outcome_candidates`` (migration 0017, career_relay/ledger/schema_outcome_candidates.py):
the one row per consent forward the outcome figures count, kept by triggers on SQLite and on
a real PostgreSQL.  Checked against the rule written out in Python here (the latest day
wins, on one day the furthest along; cancelled forwards and withdrawals are no candidates),
for outcomes written in any order, and for 0017 run on a ledger that already has them."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlite_utils import Database

from career_relay.ledger.migrations import MIGRATIONS as SQLITE_MIGRATIONS
from career_relay.ledger.outcome_groups import RANK
from career_relay.ledger.schema_postgres import MIGRATIONS
from tests.test_schema_postgres import RECEIPT, _lite_run, _pg_run

Write = Callable[[str, Sequence[Any]], Any]
ROWS = ("SELECT forward_id, company, offered, job, channel, stage, status, at, rank, days"
        " FROM outcome_candidates ORDER BY forward_id")
OFFER = ("INSERT INTO offers (id, company, message_id, recipient, created, job, channel, stage)"
         " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
FORWARD = ("INSERT INTO forwards (id, offer_id, receipt_id, company, kind, created)"
           " VALUES (?, ?, ?, ?, ?, ?)")
EVENT = "INSERT INTO forward_events (forward_id, created, event) VALUES (?, ?, ?)"
OUTCOME = ("INSERT INTO outcomes (id, forward_id, company, agency, status, at, created, entry)"
           " VALUES (?, ?, ?, 'default', ?, ?, '2024-06-01T00:00:00Z', 1)")
ENTRY = ("INSERT INTO entries (seq, created, company, kind, ref, body, prev, hash)"
         " VALUES (1, '2024-03-01T00:00:00Z', 'acme', 'receipt', 'r1', '{}', ?, ?)")


def _on(conn: sqlite3.Connection | psycopg.Connection[Any]) -> Write:
    if isinstance(conn, sqlite3.Connection):
        return lambda sql, params: _checked(_lite_run(conn, sql, params), sql)
    return lambda sql, params: _checked(_pg_run(conn, sql, params), sql)


def _checked(outcome: tuple[str, Any], sql: str) -> Any:
    assert outcome[0] == "ok", (sql, outcome)
    return outcome


def _rows(conn: sqlite3.Connection | psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(ROWS).fetchall()]


# -- the rule, by hand ------------------------------------------------------------------

def test_the_latest_status_by_the_rule(lite: sqlite3.Connection,
                                       pg: psycopg.Connection[Any]) -> None:
    for conn in (lite, pg):
        write = _on(conn)
        write(ENTRY, ("0" * 64, "a" * 64))
        offers = [("o1", "2024-03-01T09:00:00Z", "eng", "web", "final"),
                  ("o2", "2024-03-31T23:59:59Z", None, None, None),  # '' in the table
                  ("o3", "2024-02-28T10:00:00Z", "ops", "", "first"),
                  ("o4", "2024-03-02T00:00:00Z", "eng", "web", "final"),
                  ("o5", "2024-03-03T00:00:00Z", "eng", "web", "final"),
                  ("o6", "2024-03-04T00:00:00Z", "eng", "web", "final")]
        for oid, created, job, channel, stage in offers:
            write(OFFER, (oid, "acme", f"<{oid}@m>", f"{oid}@example.jp", created, job,
                          channel, stage))
            write(RECEIPT, ("r" + oid, oid, "acme", "accept", created))
        for fid, kind in (("f1", "consent"), ("f2", "consent"), ("f3", "consent"),
                          ("f4", "consent"), ("f5", "consent"), ("f6", "withdrawal")):
            oid = "o" + fid[1]
            write(FORWARD, (fid, oid, "r" + oid, "acme", kind, "2024-03-05T00:00:00Z"))
        outcomes = [
            ("f1", "placed", "2024-04-01"),       # written first, still the latest
            ("f1", "registered", "2024-03-03"),
            ("f1", "interviewing", "2024-03-10"),
            ("f2", "placed", "2024-04-15"),       # one day, two statuses: the furthest
            ("f2", "not_placed", "2024-04-15"),
            ("f3", "placed", "2024-03-30"),       # corrected the next day
            ("f3", "not_placed", "2024-03-31"),
            ("f5", "registered", "2024-03-10"),   # then its forward is cancelled
        ]
        for n, (fid, status, at) in enumerate(outcomes):
            write(OUTCOME, (f"oc{n}", fid, "acme", status, at))
        write(EVENT, ("f4", "2024-03-06T00:00:00Z", "delivered"))
        write(EVENT, ("f5", "2024-03-11T00:00:00Z", "cancelled"))
    expected = [
        ("f1", "acme", "2024-03-01", "eng", "web", "final", "placed", "2024-04-01", 4, 31),
        ("f2", "acme", "2024-03-31", "", "", "", "placed", "2024-04-15", 4, 15),
        ("f3", "acme", "2024-02-28", "ops", "", "first", "not_placed", "2024-03-31", 3, None),
        ("f4", "acme", "2024-03-02", "eng", "web", "final", None, None, None, None),
    ]
    assert _rows(lite) == expected
    assert _rows(pg) == expected


# -- any order, both backends ------------------------------------------------------------

STATUSES = tuple(RANK)


def _history(seed: int) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Outcomes for 60 forwards of offers made on 2024-03-01 (0 to 6 each, some on one
    day), in a shuffled order, and the forwards cancelled."""
    rng = random.Random(seed)
    outcomes = {(f"f{i:02d}", rng.choice(STATUSES), f"2024-03-{rng.randint(2, 12):02d}")
                for i in range(60) for _ in range(rng.randint(0, 6))}
    shuffled = sorted(outcomes)
    rng.shuffle(shuffled)
    return shuffled, [f"f{i:02d}" for i in range(60) if rng.random() < 0.1]


def _expected(outcomes: list[tuple[str, str, str]], cancelled: list[str]
              ) -> list[tuple[Any, ...]]:
    best: dict[str, tuple[str, int, str]] = {}
    for fid, status, at in outcomes:
        if fid not in best or (at, RANK[status]) > best[fid][:2]:
            best[fid] = (at, RANK[status], status)
    rows = []
    for i in range(60):
        fid = f"f{i:02d}"
        if fid in cancelled:
            continue
        at, rank, status = best.get(fid, (None, None, None))  # type: ignore[arg-type]
        days = (date.fromisoformat(at) - date(2024, 3, 1)).days if status == "placed" else None
        rows.append((fid, "acme", "2024-03-01", "eng", "web", "", status, at, rank, days))
    return rows


def _write_history(write: Write, outcomes: list[tuple[str, str, str]],
                   cancelled: list[str], *, forwards: bool = True,
                   history: bool = True) -> None:
    if forwards:
        write(ENTRY, ("0" * 64, "a" * 64))
        for i in range(60):
            oid = f"o{i:02d}"
            write(OFFER, (oid, "acme", f"<{oid}@m>", f"{oid}@example.jp",
                          "2024-03-01T08:00:00Z", "eng", "web", None))
            write(RECEIPT, ("r" + oid, oid, "acme", "accept", "2024-03-01T09:00:00Z"))
            write(FORWARD, (f"f{i:02d}", oid, "r" + oid, "acme", "consent",
                            "2024-03-01T09:00:00Z"))
    if history:
        for n, (fid, status, at) in enumerate(outcomes):
            write(OUTCOME, (f"oc{n}", fid, "acme", status, at))
        for fid in cancelled:
            write(EVENT, (fid, "2024-03-13T00:00:00Z", "cancelled"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_outcomes_in_any_order_give_the_rules_row(lite: sqlite3.Connection,
                                                  pg: psycopg.Connection[Any],
                                                  seed: int) -> None:
    outcomes, cancelled = _history(seed)
    expected = _expected(outcomes, cancelled)
    assert any(r[6] == "placed" for r in expected) and any(r[6] is None for r in expected)
    for conn in (lite, pg):
        _write_history(_on(conn), outcomes, cancelled)
        assert _rows(conn) == expected


# -- 0017 on a ledger that has outcomes already ------------------------------------------

def test_0017_fills_the_table_for_the_rows_already_there(
        tmp_path: Path, fresh_postgres_url: str) -> None:
    outcomes, cancelled = _history(7)
    expected = _expected(outcomes, cancelled)
    db = Database(tmp_path / "before.db")
    SQLITE_MIGRATIONS.apply(db, stop_before="0017_outcome_candidates")
    db.conn.isolation_level = None
    _write_history(_on(db.conn), outcomes, cancelled)
    SQLITE_MIGRATIONS.apply(db)
    assert _rows(db.conn) == expected
    db.close()
    at = [name for name, _ in MIGRATIONS].index("0017_outcome_candidates")
    with psycopg.connect(fresh_postgres_url, autocommit=True) as pg:
        with pg.transaction():
            for _, sql in MIGRATIONS[:at]:
                pg.execute(sql)
        _write_history(_on(pg), outcomes, cancelled)
        with pg.transaction():
            pg.execute(MIGRATIONS[at][1])
        assert _rows(pg) == expected
