"""The ledger's PostgreSQL schema (career_relay/ledger/schema_postgres.py, issue 13) against a
real PostgreSQL (tests/pg.py) and, wherever SQLite has the same thing, against a fresh SQLite
ledger: the same migrations, tables, columns in order, keys, indexes and triggers, the same
refusals with the same messages, and the same derived rows for the same writes."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import errors

from career_relay.ledger.schema_postgres import LOCK_KEY, MIGRATIONS, applied, apply

ROWID_TABLES = {"offers", "receipts", "forwards", "profiles"}
APPEND_ONLY = ("entries", "qualified", "credits", "redemptions", "receipts", "reviews")
Outcome = tuple[str, Any]  # ("ok", rowcount) or ("refused", message)


def _lite_run(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> Outcome:
    try:
        return ("ok", conn.execute(sql, params).rowcount)
    except sqlite3.IntegrityError as e:
        return ("refused", str(e))


def _pg_run(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> Outcome:
    try:
        return ("ok", conn.execute(sql.replace("?", "%s"), params).rowcount)
    except errors.RestrictViolation as e:  # the triggers' refusals, nothing else
        assert e.sqlstate == "23001"
        return ("refused", e.diag.message_primary)


def _both(lite: sqlite3.Connection, pg: psycopg.Connection[Any], sql: str,
          params: Sequence[Any] = ()) -> Outcome:
    """Run one statement (``?`` placeholders) on both; they must end the same way."""
    outcome = _lite_run(lite, sql, params)
    assert _pg_run(pg, sql, params) == outcome, sql
    return outcome


# -- the same writes for both ------------------------------------------------------------

OFFER = ("INSERT INTO offers (id, company, message_id, recipient, created, job, channel, stage)"
         " VALUES (?, ?, ?, ?, ?, ?, ?, NULL)")
RECEIPT = ("INSERT INTO receipts (id, offer_id, company, agency, decision, created, notice_hash,"
           " notice_version, locale, purposes, data_items, user_agent, network, review)"
           " VALUES (?, ?, ?, 'Agency KK', ?, ?, NULL, NULL, 'ja', '[]', '[]', 'ua',"
           " '192.0.2.0/24', NULL)")
VIEW = ("INSERT INTO offer_views (offer_id, first_viewed) VALUES (?, ?)"
        " ON CONFLICT (offer_id) DO NOTHING")

OFFERS = [  # id, company, created, job, channel
    ("o1", "acme", "2024-03-01T09:00:00Z", "eng", "web"),
    ("o2", "acme", "2024-03-01T23:59:59Z", None, None),
    ("o3", "acme", "2024-03-02T00:00:00Z", "eng", "web"),
    ("o4", "beta", "2024-03-01T10:00:00Z", "eng", "web"),
    ("o5", "acme", "2024-03-01T12:30:00Z", "eng", "web"),   # o1's day, job and channel
    ("o6", "acme", "2024-02-28T23:00:00Z", "", None),       # the day before a leap day
    ("o7", "acme", "2024-03-01T08:00:00Z", None, ""),        # '' and o2's NULL: one key
    ("o8", "beta", "2024-03-01T11:00:00Z", "ops", "mail"),   # never decided
]
RECEIPTS = [  # id, offer, company, decision, created (inserted in this order)
    ("r01", "o1", "acme", "accept", "2024-03-01T10:00:07Z"),
    ("r02", "o1", "acme", "accept", "2024-03-05T00:00:00Z"),   # a second accept: not counted
    ("r03", "o1", "acme", "withdraw", "2024-03-06T00:00:00Z"),
    ("r04", "o2", "acme", "decline", "2024-03-03T00:00:00Z"),
    ("r05", "o2", "acme", "accept", "2024-03-02T12:00:00Z"),   # earlier, written later: min
    ("r06", "o4", "beta", "decline", "2024-03-01T10:00:01Z"),
    ("r07", "o5", "acme", "erase", "2024-03-01T13:00:00Z"),
    ("r08", "o5", "acme", "decline", "2024-03-01T13:00:00Z"),
    ("r09", "o5", "acme", "accept", "2024-03-09T17:45:31Z"),
    ("r10", "o6", "acme", "accept", "2024-02-29T23:59:59Z"),   # across a leap day
    ("r11", "o3", "acme", "accept", "2024-03-01T00:00:00Z"),   # before its offer
    ("r12", "o3", "acme", "decline", "2024-03-01T00:00:00Z"),
]
VIEWS = [("o1", "2024-03-01T09:30:00Z"), ("o4", "2024-03-01T10:30:00Z"),
         ("o1", "2024-03-02T09:30:00Z"), ("o6", "2024-03-01T00:00:00Z")]


Run = Callable[[str, Sequence[Any]], Outcome]


def _write_offers_receipts_views(run: Run) -> None:
    for oid, company, created, job, channel in OFFERS:
        run(OFFER, (oid, company, f"<{oid}@mail>", f"{oid}@example.jp", created, job, channel))
    for rid, oid, company, decision, created in RECEIPTS:
        run(RECEIPT, (rid, oid, company, decision, created))
    for oid, seen in VIEWS:
        run(VIEW, (oid, seen))


DERIVED = {
    "offer_stats": "SELECT company, day, job, channel, offers, accepted FROM offer_stats"
                   " ORDER BY company, day, job, channel",
    "first_decisions": "SELECT offer_id, company, offer_created, hours FROM first_decisions"
                       " ORDER BY offer_id",
    "offer_views": "SELECT offer_id, first_viewed, company FROM offer_views ORDER BY offer_id",
}


def _derived(conn: sqlite3.Connection | psycopg.Connection[Any]) -> dict[str, list[Any]]:
    return {name: [tuple(row) for row in conn.execute(sql).fetchall()]
            for name, sql in DERIVED.items()}


# -- (a) applying ------------------------------------------------------------------------


def test_from_empty_every_migration_once_with_sqlites_names(fresh_postgres_url: str,
                                                            lite: sqlite3.Connection) -> None:
    sqlite_names = [n for (n,) in lite.execute(
        "SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert len(sqlite_names) == len(MIGRATIONS)
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        assert applied(conn) == []
        assert apply(conn) == sqlite_names == [name for name, _ in MIGRATIONS]
        assert apply(conn) == []
        assert applied(conn) == sqlite_names
        stamps = [s for (s,) in conn.execute("SELECT applied FROM career_relay_migrations")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s) for s in stamps)


def test_apply_refuses_to_run_inside_a_transaction(fresh_postgres_url: str) -> None:
    with psycopg.connect(fresh_postgres_url) as conn:
        conn.execute("SELECT 1")  # psycopg began a transaction
        with pytest.raises(ValueError, match="outside"):
            apply(conn)
        conn.rollback()
        assert len(apply(conn)) == len(MIGRATIONS)  # idle again: it runs, and commits
    with psycopg.connect(fresh_postgres_url) as conn:
        assert len(applied(conn)) == len(MIGRATIONS)


def test_two_processes_starting_together_apply_once(fresh_postgres_url: str) -> None:
    """Both wait on the lock (held here until both are waiting), then race: one applies
    everything, the other finds nothing pending, neither fails."""
    results: dict[int, list[str]] = {}
    failures: list[BaseException] = []

    def start(i: int) -> None:
        try:
            with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
                results[i] = apply(conn)
        except BaseException as e:
            failures.append(e)

    with psycopg.connect(fresh_postgres_url, autocommit=True) as holder:
        with holder.transaction():
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            threads = [threading.Thread(target=start, args=(i,)) for i in (1, 2)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 20
            while holder.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                 " AND NOT granted").fetchone() != (2,):
                assert time.monotonic() < deadline, "the two never waited on the lock"
                time.sleep(0.02)
        for t in threads:
            t.join(60)
        assert failures == []
        assert sorted(len(r) for r in results.values()) == [0, len(MIGRATIONS)]
        (count,) = holder.execute("SELECT count(*) FROM career_relay_migrations").fetchone()
        assert count == len(MIGRATIONS)


# -- (b) the same tables, columns, keys, indexes and triggers ------------------------------


def _sqlite_schema(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"
                                  " AND name NOT LIKE '\\_%' ESCAPE '\\'"
                                  " AND name NOT LIKE 'sqlite%'"):
        info = conn.execute(f"PRAGMA table_info({name})").fetchall()
        indexes, uniques = {}, set()
        for _, index, unique, origin, partial in conn.execute(f"PRAGMA index_list({name})"):
            columns = tuple(r[2] for r in conn.execute(f"PRAGMA index_info('{index}')"))
            if origin == "u":
                uniques.add(columns)
            elif origin == "c":
                (index_sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                                            (index,)).fetchone()
                where = index_sql.split(" WHERE ", 1)[1] if partial else None
                indexes[index] = (columns, bool(unique), _predicate(where))
        pk = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        tables[name] = {
            "columns": [(r[1], r[2].lower(), bool(r[3]) or r[1] in pk, r[4]) for r in info],
            "pk": pk, "unique": uniques, "indexes": indexes,
            "fks": {(r[3], r[2], r[4]) for r in conn.execute(f"PRAGMA foreign_key_list({name})")},
            "checks": len(re.findall(r"\bCHECK\s*\(", sql, re.IGNORECASE)),
            "triggers": {n for (n,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                (name,))},
        }
    return tables


def _predicate(where: str | None) -> str | None:
    # PostgreSQL casts a text literal: 'relay'::text.
    return None if where is None else re.sub(r"[()\s]+", " ", where.replace("::text", "")
                                              ).strip().lower()


_PG_COLUMNS = ("SELECT column_name, data_type, is_nullable = 'NO', column_default,"
               " collation_name, identity_generation FROM information_schema.columns"
               " WHERE table_schema = current_schema() AND table_name = %s"
               " ORDER BY ordinal_position")
_PG_KEYS = ("SELECT contype, array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY"
            " k(n, i) JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n"
            " ORDER BY k.i) FROM pg_constraint c WHERE c.conrelid = %s::regclass")
_PG_INDEXES = ("SELECT ic.relname, ix.indisunique, array(SELECT a.attname FROM"
               " unnest(ix.indkey::int2[]) WITH ORDINALITY k(n, i) JOIN pg_attribute a"
               " ON a.attrelid = ix.indrelid AND a.attnum = k.n ORDER BY k.i),"
               " pg_get_expr(ix.indpred, ix.indrelid) FROM pg_index ix"
               " JOIN pg_class ic ON ic.oid = ix.indexrelid WHERE ix.indrelid = %s::regclass"
               " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)")
_PG_FKS = ("SELECT a.attname, cf.relname, af.attname FROM pg_constraint c"
           " JOIN pg_class cf ON cf.oid = c.confrelid"
           " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
           " JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1]"
           " WHERE c.contype = 'f' AND c.conrelid = %s::regclass")
_PG_TYPES = {"text": "text", "integer": "integer", "double precision": "real"}


def _pg_schema(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname ="
                                " current_schema() AND tablename <> 'career_relay_migrations'"
                                ).fetchall():
        columns = conn.execute(_PG_COLUMNS, (name,)).fetchall()
        if name in ROWID_TABLES:  # SQLite's implicit rowid, made explicit: last but for
            # columns added later (offers.source, 0010; forwards.agency, 0012), which SQLite
            # appends after its own.
            at = [c[0] for c in columns].index("rowid")
            assert columns[at] == ("rowid", "bigint", True, None, None, "ALWAYS"), name
            assert name in ("offers", "forwards") or at == len(columns) - 1, name
            columns = columns[:at] + columns[at + 1:]
        # Every SQLite index ends with the rowid, which it cannot name; PostgreSQL's rowid is
        # a column, named where an index is read in its order (forwards_agency_feed, 0016).
        rowid_last = {i: (cols[:-1] if name in ROWID_TABLES and cols[-1:] == ["rowid"]
                          else cols, unique, where)
                      for i, unique, cols, where in conn.execute(_PG_INDEXES, (name,))}
        assert all(c[4] == "C" for c in columns if c[1] == "text"), name
        keys = conn.execute(_PG_KEYS, (name,)).fetchall()
        triggers = {n for (n,) in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            (name,))}
        tables[name] = {
            "columns": [(c[0], _PG_TYPES[c[1]], c[2], _default(c[3], c[5])) for c in columns],
            "pk": next((tuple(cols) for kind, cols in keys if kind == "p"), ()),
            "unique": {tuple(cols) for kind, cols in keys if kind == "u"},
            "indexes": {i: (tuple(cols), unique, _predicate(where))
                        for i, (cols, unique, where) in rowid_last.items()},
            "fks": set(conn.execute(_PG_FKS, (name,)).fetchall()),
            "checks": sum(kind == "c" for kind, _ in keys),
            # TRUNCATE skips DELETE triggers; SQLite has no TRUNCATE to refuse.
            "triggers": {t for t in triggers if not t.endswith("_no_truncate")},
        }
        refused = f"{name}_no_delete" in triggers
        assert triggers - tables[name]["triggers"] == (
            {f"{name}_no_truncate"} if refused else set()), name
    return tables


def _default(default: str | None, identity: str | None) -> str | None:
    if identity == "BY DEFAULT":  # admin_users.id: SQLite's INTEGER PRIMARY KEY
        return None
    return None if default is None else default.removesuffix("::text")


def test_the_same_tables_columns_keys_indexes_and_triggers(lite: sqlite3.Connection,
                                                           pg: psycopg.Connection[Any]) -> None:
    expected, found = _sqlite_schema(lite), _pg_schema(pg)
    assert sorted(found) == sorted(expected)
    assert len(found) == 29  # agency_keys (0012), api_offers (0013), outcomes (0014), three of
    # 0015, outcome_candidates (0017)
    for table in expected:
        for aspect in ("columns", "pk", "unique", "indexes", "fks", "checks", "triggers"):
            assert found[table][aspect] == expected[table][aspect], (table, aspect)
    # What the comparison rests on: partial indexes, truncation refused where delete is.
    assert expected["offers"]["indexes"]["offers_unerased"] == (("created",), False,
                                                                 "erased is null")
    assert "receipts_no_delete" in found["receipts"]["triggers"]
    truncate = pg.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%no_truncate'")
    assert truncate.fetchone() == (12,)  # outcomes (0014); two of 0015
    # The one index that names the rowid on PostgreSQL (SQLite's ends with it unnamed).
    assert expected["forwards"]["indexes"]["forwards_agency_feed"] == (("agency",), False, None)
    (made,) = pg.execute("SELECT indexdef FROM pg_indexes WHERE indexname ="
                         " 'forwards_agency_feed'").fetchone()
    assert made.endswith("USING btree (agency, rowid)"), made


# -- (c) refusals -------------------------------------------------------------------------

BASE = [
    (OFFER, ("o1", "acme", "<1@mail>", "a@example.jp", "2024-03-01T09:00:00Z", "eng", "web")),
    (OFFER, ("o2", "acme", "<2@mail>", "b@example.jp", "2024-03-01T09:00:01Z", None, None)),
    (OFFER, ("o3", "acme", "<3@mail>", "c@example.jp", "2024-03-01T09:00:02Z", None, None)),
    (RECEIPT, ("r1", "o1", "acme", "accept", "2024-03-01T10:00:00Z")),
    (RECEIPT, ("r2", "o2", "acme", "accept", "2024-03-01T10:00:00Z")),
    ("INSERT INTO profiles (receipt_id, data) VALUES (?, ?)", ("r1", '{"name": "花子"}')),
    ("INSERT INTO profiles (receipt_id, data) VALUES (?, ?)", ("r2", '{"name": "太郎"}')),
    ("INSERT INTO reviews (receipt_id, decision, by, created) VALUES (?, ?, ?, ?)",
     ("r1", "approve", "op@agency", "2024-03-01T11:00:00Z")),
    ("INSERT INTO forwards (id, offer_id, receipt_id, company, kind, created, payload)"
     " VALUES (?, ?, ?, ?, ?, ?, ?)", ("f1", "o1", "r1", "acme", "consent",
                                       "2024-03-01T10:00:00Z", '{"p": 1}')),
    ("INSERT INTO forwards (id, offer_id, receipt_id, company, kind, created, payload)"
     " VALUES (?, ?, ?, ?, ?, ?, ?)", ("f2", "o2", "r2", "acme", "consent",
                                       "2024-03-01T10:00:00Z", '{"p": 2}')),
    ("INSERT INTO entries (seq, created, company, kind, ref, body, prev, hash)"
     " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (1, "2024-03-01T10:00:00Z", "acme", "receipt", "r1",
                                          "{}", "0" * 64, "a" * 64)),
    ("INSERT INTO qualified (forward_id, company, candidate, n, created, entry)"
     " VALUES (?, ?, ?, ?, ?, ?)", ("f1", "acme", "h" * 16, 1, "2024-03-01T10:00:00Z", 1)),
    ("INSERT INTO credits (id, company, n, created, forwards, entry) VALUES (?, ?, ?, ?, ?, ?)",
     ("c1", "acme", 1, "2024-03-01T10:00:00Z", '["f1"]', 1)),
    ("INSERT INTO redemptions (credit_id, company, created, by, note, entry)"
     " VALUES (?, ?, ?, ?, ?, ?)", ("c1", "acme", "2024-03-02T10:00:00Z", "op", "hired", 1)),
]


@pytest.fixture
def both(lite: sqlite3.Connection, pg: psycopg.Connection[Any]
         ) -> tuple[sqlite3.Connection, psycopg.Connection[Any]]:
    for sql, params in BASE:
        assert _both(lite, pg, sql, params) == ("ok", 1), sql
    return lite, pg


def _refused(table: str, personal: str | None = None) -> Outcome:
    message = f"the ledger is append-only: {table} rows are never changed"
    return ("refused", f"{message}: {personal} is only erased" if personal else message)


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_append_only_tables_refuse_update_delete_and_truncate(
        both: tuple[sqlite3.Connection, psycopg.Connection[Any]], table: str) -> None:
    lite, pg = both
    assert _both(lite, pg, f"UPDATE {table} SET created = created") == _refused(table)
    assert _both(lite, pg, f"DELETE FROM {table}") == _refused(table)
    with pytest.raises(errors.RestrictViolation) as refused:
        pg.execute(f"TRUNCATE {table} CASCADE")
    assert str(refused.value.diag.message_primary).startswith("the ledger is append-only: ")
    with pytest.raises(errors.RestrictViolation) as refused:
        pg.execute(f"DELETE FROM {table}")
    assert refused.value.diag.table_name == table
    assert refused.value.diag.constraint_name == f"{table}_no_delete"


# (sql, the outcome on both); in order, on BASE.
PERSONAL = [
    ("UPDATE offers SET recipient = 'erased:' || id, candidate = 'k', erased = 'now'"
     " WHERE id = 'o1'", ("ok", 1)),
    ("UPDATE offers SET recipient = 'erased:' || id WHERE id = 'o1'", ("ok", 1)),  # again
    ("UPDATE offers SET recipient = 'erased:o1' WHERE id = 'o2'", _refused("offers", "recipient")),
    ("UPDATE offers SET recipient = 'x@example.jp' WHERE id = 'o2'",
     _refused("offers", "recipient")),
    ("UPDATE offers SET recipient = recipient WHERE id = 'o2'", ("ok", 1)),
    ("UPDATE offers SET candidate = 'k2', erased = NULL WHERE id = 'o3'", ("ok", 1)),
    ("UPDATE offers SET company = company WHERE id = 'o3'", _refused("offers")),
    ("UPDATE offers SET stage = 'final' WHERE id = 'o3'", _refused("offers")),
    ("DELETE FROM offers WHERE id = 'o3'", _refused("offers")),
    ("UPDATE forwards SET payload = NULL WHERE id = 'f1'", ("ok", 1)),
    ("UPDATE forwards SET payload = NULL WHERE id = 'f1'", ("ok", 1)),
    ("UPDATE forwards SET payload = '{}' WHERE id = 'f1'", _refused("forwards", "payload")),
    ("UPDATE forwards SET payload = '{}' WHERE id = 'f2'", _refused("forwards", "payload")),
    ("UPDATE forwards SET payload = payload WHERE id = 'f2'", ("ok", 1)),
    ("UPDATE forwards SET kind = kind", _refused("forwards")),
    ("DELETE FROM forwards WHERE id = 'f2'", _refused("forwards")),
    ("UPDATE profiles SET data = NULL, erased = 'now' WHERE receipt_id = 'r1'", ("ok", 1)),
    ("UPDATE profiles SET data = 'x' WHERE receipt_id = 'r1'", _refused("profiles", "data")),
    ("UPDATE profiles SET data = 'x' WHERE receipt_id = 'r2'", _refused("profiles", "data")),
    ("UPDATE profiles SET erased = 'later' WHERE receipt_id = 'r2'", ("ok", 1)),
    ("UPDATE profiles SET receipt_id = receipt_id", _refused("profiles")),
    ("DELETE FROM profiles", _refused("profiles")),
]


def test_personal_data_is_only_ever_erased(
        both: tuple[sqlite3.Connection, psycopg.Connection[Any]]) -> None:
    lite, pg = both
    for sql, outcome in PERSONAL:
        assert _both(lite, pg, sql) == outcome, sql
    assert pg.execute("SELECT recipient, candidate FROM offers ORDER BY rowid").fetchall() == [
        ("erased:o1", "k"), ("b@example.jp", None), ("c@example.jp", "k2")]
    assert pg.execute("SELECT id FROM forwards WHERE payload IS NULL").fetchall() == [("f1",)]
    # Stricter than SQLite, which lets rowid itself change: ORDER BY rowid stays put.
    for table in ("offers", "forwards", "profiles"):
        with pytest.raises(errors.RestrictViolation):
            pg.execute(f"UPDATE {table} SET rowid = DEFAULT")
        with pytest.raises(errors.GeneratedAlways):
            pg.execute(f"UPDATE {table} SET rowid = 1")


CHECKED = [
    "INSERT INTO receipts (id, offer_id, company, agency, decision, created, locale, purposes,"
    " data_items, user_agent, network) VALUES ('r9', 'o1', 'acme', 'A', 'maybe', 'now', 'ja',"
    " '[]', '[]', 'ua', 'net')",
    "INSERT INTO reviews (receipt_id, decision, by, created) VALUES ('r2', 'maybe', 'op', 'now')",
    "INSERT INTO forwards (id, offer_id, receipt_id, company, kind, created)"
    " VALUES ('f9', 'o1', 'r1', 'acme', 'gift', 'now')",
    "INSERT INTO forward_events (forward_id, created, event) VALUES ('f1', 'now', 'lost')",
    "INSERT INTO admin_users (email, role, company, password_hash, created)"
    " VALUES ('a@x', 'root', NULL, 'h', 'now')",
    "INSERT INTO admin_users (email, role, company, password_hash, created)"
    " VALUES ('a@x', 'operator', 'acme', 'h', 'now')",
    "INSERT INTO admin_users (email, role, company, password_hash, created)"
    " VALUES ('a@x', 'company', NULL, 'h', 'now')",
]


@pytest.mark.parametrize("sql", CHECKED)
def test_checks_refuse_what_sqlite_refuses(
        both: tuple[sqlite3.Connection, psycopg.Connection[Any]], sql: str) -> None:
    lite, pg = both
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        lite.execute(sql)
    with pytest.raises(errors.CheckViolation):
        pg.execute(sql)


def test_admin_user_ids_are_assigned(pg: psycopg.Connection[Any]) -> None:
    made = [pg.execute("INSERT INTO admin_users (email, role, company, password_hash, created)"
                       " VALUES (%s, 'operator', NULL, 'h', 'now') RETURNING id", (email,)
                       ).fetchone() for email in ("a@x", "b@x")]
    assert made == [(1,), (2,)]


# -- (d) derived data ---------------------------------------------------------------------


def test_derived_rows_are_sqlites(lite: sqlite3.Connection, pg: psycopg.Connection[Any]) -> None:
    _write_offers_receipts_views(lambda sql, params: _both(lite, pg, sql, params))
    extra = "INSERT INTO offer_views (offer_id, first_viewed, company) VALUES (?, ?, ?)"
    _both(lite, pg, extra, ("o3", "2024-03-03T00:00:00Z", "given"))  # kept as given
    expected, found = _derived(lite), _derived(pg)
    assert found == expected  # hours too, to the last bit (career_relay_julianday)
    assert ("acme", "2024-03-01", "eng", "web", 2, 2) in found["offer_stats"]
    assert ("o3", "2024-03-03T00:00:00Z", "given") in found["offer_views"]
    assert [r[0] for r in found["first_decisions"]] == ["o1", "o2", "o3", "o4", "o5", "o6"]
    assert pg.execute("SELECT pg_typeof(sum(offers)), pg_typeof(min(hours)) FROM offer_stats,"
                      " first_decisions").fetchone() == ("bigint", "double precision")


@pytest.mark.parametrize("first_decision", [True, False])
def test_concurrent_first_accepts_of_one_offer_count_once(
        pg: psycopg.Connection[Any], fresh_postgres_url: str, first_decision: bool) -> None:
    """SQLite writes one transaction at a time; here the second accept waits for the first
    (offer_stats_accept locks the offer's row), then sees it and does not count the offer
    again.  first_decision (fired before it, by name) waits too, on its ON CONFLICT: without
    it the lock alone is what keeps the count right."""
    if not first_decision:
        pg.execute("DROP TRIGGER first_decision ON receipts")
    _pg_run(pg, OFFER, ("o1", "acme", "<1@mail>", "a@example.jp", "2024-03-01T09:00:00Z",
                        "eng", "web"))
    failures: list[BaseException] = []
    with psycopg.connect(fresh_postgres_url) as first, \
            psycopg.connect(fresh_postgres_url) as second:
        _pg_run(first, RECEIPT, ("r1", "o1", "acme", "accept", "2024-03-01T10:00:00Z"))

        def accept_again() -> None:
            try:
                _pg_run(second, RECEIPT, ("r2", "o1", "acme", "accept", "2024-03-01T10:00:01Z"))
                second.commit()
            except BaseException as e:
                failures.append(e)

        thread = threading.Thread(target=accept_again)
        thread.start()
        deadline = time.monotonic() + 20
        while thread.is_alive() and pg.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                (second.info.backend_pid,)).fetchone() != ("Lock",):
            assert time.monotonic() < deadline, "the second accept neither waited nor ended"
            time.sleep(0.02)
        first.commit()
        thread.join(30)
    assert failures == []
    assert pg.execute("SELECT count(*) FROM receipts").fetchone() == (2,)
    assert pg.execute("SELECT offers, accepted FROM offer_stats").fetchall() == [(1, 1)]


def test_0007_fills_the_derived_tables_for_rows_already_there(
        lite: sqlite3.Connection, fresh_postgres_url: str) -> None:
    """0007 on a database with offers, receipts and views (SQLite's backfill, in SQL)."""
    with psycopg.connect(fresh_postgres_url, autocommit=True) as pg:
        with pg.transaction():
            for _, sql in MIGRATIONS[:6]:
                pg.execute(sql)
        _write_offers_receipts_views(lambda sql, params: _pg_run(pg, sql, params))
        with pg.transaction():
            pg.execute(dict(MIGRATIONS)["0007_report_indexes"])
        _write_offers_receipts_views(lambda sql, params: _lite_run(lite, sql, params))
        assert _derived(pg) == _derived(lite)
