"""The ledger on PostgreSQL (SPEC 12): several processes on one database.

The rules' suite (tests/test_ledger_rules.py) runs on both backends; these are
what only a shared database has: two hosts racing on the same offer, a change
heard by another host, a server that goes away and comes back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from career_relay.errors import LedgerUnavailable
from career_relay.ledger import AdminUsers, Book, Ledger, Rejection, open_shared, retention
from career_relay.ledger.retention import Policy
from tests.pg import PostgresServer


@pytest.fixture
def two_hosts(fresh_postgres_url: str) -> Iterator[tuple[Ledger, Ledger]]:
    a, b = open_shared(fresh_postgres_url), open_shared(fresh_postgres_url)
    yield a, b
    a.close()
    b.close()


def test_two_hosts_racing_on_one_rejection_make_one_offer_each_recipient(
        two_hosts: tuple[Ledger, Ledger]) -> None:
    """Two gateways take the same retried submission at once: UNIQUE (company, message_id,
    recipient) leaves one offer per recipient, both hosts get its id, one chain."""
    results: list[dict[str, str]] = []
    start = threading.Barrier(8)

    def submit(ledger: Ledger, n: int) -> None:
        start.wait()
        rejection = Rejection("acme", "<same@acme.example>",
                              tuple((f"c{i}@example.net", f"id-{n}-{i}-{'x' * 8}")
                                    for i in range(5)))
        results.extend(ledger.record_rejections([rejection]))

    threads = [threading.Thread(target=submit, args=(two_hosts[n % 2], n)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r == results[0] for r in results)
    a, _ = two_hosts
    with a.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM offers").fetchone()[0] == 5
        assert conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 5
    assert a.counts("acme", a.now().date())["rejections"] == 1
    count, problem = Book(a).verify()
    assert problem is None and count == 5


def test_a_change_on_one_host_is_heard_on_the_other(two_hosts: tuple[Ledger, Ledger]) -> None:
    """The site's page cache: data_version moves when any host commits (LISTEN/NOTIFY)."""
    a, b = two_hosts
    before = b.data_version()
    deadline = time.monotonic() + 5
    while b.data_version() == before and time.monotonic() < deadline:  # listening
        time.sleep(0.01)
    listening = b.data_version()
    a.record_offer("acme", "<m@acme.example>", "c@example.net")
    while b.data_version() == listening and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.data_version() != listening


def test_the_ledger_plans_without_parallel_workers(fresh_postgres_url: str) -> None:
    """A company's range of an index, never a parallel scan of every company's rows (the
    report over 1,000,000 offers, docs/performance.md): with parallel plans made free, a
    plain connection gathers workers for the report's views and the ledger's does not."""
    query = ("EXPLAIN SELECT COUNT(*) FROM offer_views WHERE company = 'acme'"
             " AND first_viewed >= '2026-01-01T00:00:00Z'")
    free = ("SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0",
            "SET min_parallel_table_scan_size = 0", "SET enable_indexonlyscan = off",
            "SET enable_indexscan = off", "SET enable_bitmapscan = off")
    with open_shared(fresh_postgres_url) as ledger:
        with psycopg.connect(fresh_postgres_url, autocommit=True) as plain:
            for setting in free:
                plain.execute(setting)
            assert "Gather" in " ".join(row[0] for row in plain.execute(query))
        with ledger.read() as conn:
            assert conn.execute("SHOW max_parallel_workers_per_gather").fetchone() == ("0",)
            for setting in free:
                conn.execute(setting)
            assert "Gather" not in " ".join(row[0] for row in conn.execute(query).fetchall())


def test_retention_and_admin_logins_on_postgresql(fresh_postgres_url: str) -> None:
    with open_shared(fresh_postgres_url) as ledger:
        offer = ledger.record_offer("acme", "<m@acme.example>", "c@example.net")
        would = retention.purge(ledger, ledger.rules, Policy(0, 0), dry_run=True)
        assert retention.purge(ledger, ledger.rules, Policy(0, 0)) == would
        users = AdminUsers(ledger)
        user = users.add("Boss@Acme.example", "a long enough password", "acme")
        assert user.id > 0 and users.find("boss@acme.example").user == user
        assert ledger.offer(offer.id) == offer
        count, problem = Book(ledger).verify()
        assert problem is None and count == 1


def test_a_server_away_is_unavailable_and_back_without_an_operator(tmp_path: Path) -> None:
    """SPEC 12: while PostgreSQL is down the ledger says LedgerUnavailable (the gateway's
    451, the site's 503); when it is back the same Ledger works again."""
    with PostgresServer() as pg:
        url = pg.url(pg.create_database())
        with open_shared(url) as ledger:
            ledger.record_offer("acme", "<m1@acme.example>", "c@example.net")
            pg.stop("immediate")
            with pytest.raises(LedgerUnavailable):
                ledger.record_offer("acme", "<m2@acme.example>", "c@example.net")
            pg.start()
            deadline = time.monotonic() + 20
            while True:
                try:
                    ledger.record_offer("acme", "<m2@acme.example>", "c@example.net")
                    break
                except LedgerUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            with ledger.read() as conn:
                assert conn.execute("SELECT COUNT(*) FROM offers").fetchone()[0] == 2


@pytest.mark.slow
def test_a_server_back_after_a_long_outage_is_used_again_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg_pool looks for a lost server again after 1, 2, 4, 8 ... s; with its default
    reconnect_timeout (5 min) a server away for a minute was used again only up to a
    minute after it came back.  Time scaled down tenfold here: backoff from 0.1 s, the
    pool's timeout 1 s; away about 7 s (its attempts then at 6.3 and 12.7 s)."""
    from psycopg_pool.base import AttemptWithBackoff

    from career_relay.ledger import postgres

    monkeypatch.setattr(postgres, "POOL_TIMEOUT", 1.0)
    monkeypatch.setattr(AttemptWithBackoff, "INITIAL_DELAY", 0.1)
    with PostgresServer() as pg:
        url = pg.url(pg.create_database())
        with open_shared(url) as ledger:
            offer = ledger.record_offer("acme", "<m1@acme.example>", "c@example.net")
            pg.stop("immediate")
            away = time.monotonic()
            while time.monotonic() - away < 6.5:  # used meanwhile, as the site and gateway do
                with pytest.raises(LedgerUnavailable):
                    ledger.offer(offer.id)
            pg.start()
            back = time.monotonic()
            while True:
                try:
                    assert ledger.offer(offer.id) == offer
                    break
                except LedgerUnavailable:
                    assert time.monotonic() - back < 10
            # About one of the pool's timeouts at most (a caller that was already waiting);
            # the pool's default took 6 s here.
            assert time.monotonic() - back < 3.0, time.monotonic() - back


def test_once_the_server_is_found_away_callers_wait_briefly_until_it_is_back() -> None:
    """A site reads on its event loop: while the server is away, only the first caller may
    wait the pool's full timeout; the next ones are told at once (AWAY_TIMEOUT), and once
    a caller gets a connection again, the full timeout applies again."""
    from career_relay.ledger import postgres

    with PostgresServer() as pg:
        url = pg.url(pg.create_database())
        with open_shared(url) as ledger:
            backend = ledger.backend
            assert isinstance(backend, postgres.PostgresBackend)
            waits: list[float] = []
            real = backend.pool.connection

            def connection(timeout: float | None = None) -> Any:
                waits.append(timeout or 0)
                return real(timeout)

            backend.pool.connection = connection  # type: ignore[method-assign]
            ledger.offer("nothing")
            pg.stop("immediate")
            for _ in range(3):
                with pytest.raises(LedgerUnavailable):
                    ledger.offer("nothing")
            pg.start()
            deadline = time.monotonic() + 30
            while True:
                try:
                    ledger.offer("nothing")
                    break
                except LedgerUnavailable:
                    assert time.monotonic() < deadline, "the ledger never came back"
                    time.sleep(0.1)
            ledger.offer("nothing")
    assert waits[0] == postgres.POOL_TIMEOUT  # the server was up
    assert waits[1] == postgres.POOL_TIMEOUT  # not yet known to be away
    assert set(waits[2:4]) == {postgres.AWAY_TIMEOUT}  # known away: told at once
    assert waits[-1] == postgres.POOL_TIMEOUT  # back: the full wait again
