"""The ledger on PostgreSQL (SPEC 12): several processes on one database.

The rules' suite (tests/test_ledger_rules.py) runs on both backends; these are
what only a shared database has: two hosts racing on the same offer, a change
heard by another host, a server that goes away and comes back.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from career_relay import settings as settings_mod
from career_relay.consent import Client, Consents
from career_relay.errors import ConfigError, LedgerConflict, LedgerUnavailable
from career_relay.ledger import (
    AdminUsers,
    Book,
    ConsentLedger,
    Ledger,
    LedgerWriter,
    Rejection,
    Rules,
    check_password,
    open_configured,
    open_shared,
    retention,
)
from career_relay.ledger.postgres import PostgresBackend
from career_relay.ledger.retention import Policy
from tests.conftest import ConfigMaker, GatewayThread, Sink, run_cli
from tests.pg import PostgresServer
from tests.test_ledger_rules import IPHONE, NOTICE, World
from tests.test_rejection import rejection, send


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
    # Each wait has its own deadline, generous for a loaded machine (CI once spent the
    # whole of a shared 5 s on the listener's connect and the first write's migrations).
    deadline = time.monotonic() + 30
    while b.data_version() == before and time.monotonic() < deadline:  # listening
        time.sleep(0.01)
    listening = b.data_version()
    a.record_offer("acme", "<m@acme.example>", "c@example.net")
    deadline = time.monotonic() + 30
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
    # The ledger's own clock, moved on by hand: on the wall clock the dry run and the purge
    # could fall on either side of the second the offer was made in (a CI run saw 0, 1).
    moment = [dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)]
    with open_shared(fresh_postgres_url, clock=lambda: moment[0]) as ledger:
        offer = ledger.record_offer("acme", "<m@acme.example>", "c@example.net")
        users = AdminUsers(ledger)
        user = users.add("Boss@Acme.example", "a long enough password", "acme")
        assert user.id > 0 and users.find("boss@acme.example").user == user
        assert ledger.offer(offer.id) == offer
        moment[0] += dt.timedelta(seconds=1)
        would = retention.purge(ledger, ledger.rules, Policy(0, 0), dry_run=True)
        assert would.undecided_addresses == 1
        assert retention.purge(ledger, ledger.rules, Policy(0, 0)) == would
        assert retention.purge(ledger, ledger.rules, Policy(0, 0), dry_run=True).total == 0
        assert ledger.offer(offer.id).recipient != offer.recipient  # erased
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


def test_a_write_is_on_disk_when_it_returns_though_the_lock_went_before(
        tmp_path: Path) -> None:
    """A write lets the lock go at its commit, before the WAL flush (``synchronous_commit =
    off``), then waits for the flush (``SETTLE``) before it returns.  With the WAL writer
    slowed to 10 s nothing else flushes: a crash right after the writes loses none of them,
    and the head file names an entry that survived.  A negative control shows the slowed
    writer would lose an unsettled commit."""
    head_file = tmp_path / "ledger.head"
    with PostgresServer(settings={"wal_writer_delay": "10000ms"}) as pg:
        url = pg.url(pg.create_database())
        with open_shared(url, head_file=head_file) as ledger:
            writer = LedgerWriter(ledger)
            for i in range(5):
                writer.record_rejection("acme", f"<m{i}@acme.example>",
                                        [(f"c{i}@example.net", f"offerSETTLED{i:04d}")])
            ledger.record_offer("acme", "<last@acme.example>", "last@example.net")
            writer.close()
            written = head_file.read_text().strip()
            # The control: a commit that is not settled.
            with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute("INSERT INTO meta (name, value) VALUES ('control', 'x')")
            pg.stop("immediate")
            pg.start()
            with psycopg.connect(url, autocommit=True) as conn:
                assert conn.execute("SELECT COUNT(*) FROM offers").fetchone()[0] == 6
                assert conn.execute(
                    "SELECT COUNT(*) FROM meta WHERE name = 'control'").fetchone()[0] == 0
            count, problem = Book(ledger).verify()
            assert problem is None and count == 6
            assert ledger.head_text() == written


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


def test_a_value_postgresql_cannot_store_is_the_ledgers_conflict(
        ledger_postgres_url: str) -> None:
    """A NUL in a text (SQLite stores it, PostgreSQL cannot): LedgerConflict, never the
    driver's DataError, which the gateway took for a bug and relayed the rejection, and
    every other one committed in the same batch, with the marker bare (attack review)."""
    with open_shared(ledger_postgres_url) as ledger:
        with pytest.raises(LedgerConflict, match="NUL"):
            ledger.record_offer("acme", "<a\x00b@acme.example>", "c@example.net")
        assert ledger.record_offer("acme", "<ab@acme.example>", "c@example.net").company == "acme"


def test_a_rejection_whose_message_id_holds_a_nul_gets_its_links_on_postgresql(
        make_config: ConfigMaker, sink: Sink, ledger_postgres_url: str) -> None:
    """Sent together with ordinary rejections, which once shared its failed batch: every
    copy has its link and its signature's place, none the bare marker."""
    config = make_config(upstream_port=sink.port, site={"public_url": "http://consent.test"},
                         ledger={"url": ledger_postgres_url},
                         companies=[{"id": "acme", "name": "Acme", "domains": ["acme.example"],
                                     "allow_ips": ["127.0.0.1/32"]}])
    gw = GatewayThread(config).start()
    try:
        messages = [rejection("<nul\x00@acme.example>" if n % 3 == 0 else f"<ok{n}@acme.example>")
                    for n in range(9)]
        threads = [threading.Thread(target=send, args=(gw.port, data, [f"c{n}@example.net"]))
                   for n, data in enumerate(messages)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = sink.wait_for(9)
    finally:
        gw.stop()
    assert all(b"[[CAREER_RELAY_LINK]]" not in m.data for m in got)
    assert all(re.search(rb"http://consent\.test/c/", m.data) for m in got)
    with open_configured(settings_mod.load(config)) as ledger, ledger.read() as conn:
        ids = {r[0] for r in conn.execute("SELECT message_id FROM offers").fetchall()}
    assert "<nul@acme.example>" in ids and len(ids) == 7


@pytest.mark.parametrize("url", [
    "postgresql://app:s3cr3t pw@127.0.0.1:1/ledger",    # a space
    "postgresql://app:s3cr3t%zz@127.0.0.1:1/ledger",    # a stray %
    "postgresql://app:s3cr3t%00x@127.0.0.1:1/ledger",   # a NUL
    "postgresql://app:s3cr3t@[::1/ledger",              # urllib: "Invalid IPv6 URL"
])
def test_a_ledger_url_libpq_cannot_read_is_named_without_its_password(
        url: str, make_config: ConfigMaker, caplog: pytest.LogCaptureFixture) -> None:
    """libpq's words quote the part they choke on, often the password; the pool's threads
    logged them at WARNING at every try, and check-config said ok (or, for a broken IPv6
    host, printed a traceback) (attack review)."""
    config = make_config(ledger={"url": url})
    done = run_cli("check-config", "--config", str(config))
    assert done.returncode == 1 and "ledger.url" in done.stdout + done.stderr
    assert "s3cr3t" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    with pytest.raises(ConfigError, match=r"ledger\.url") as raised:
        open_shared(url, wait=False)
    time.sleep(0.3)  # what a pool's thread would have logged meanwhile
    assert "s3cr3t" not in str(raised.value) and "s3cr3t" not in caplog.text


@pytest.mark.parametrize("how", ["accept", "withdraw"])
def test_one_form_taken_by_two_sites_at_once_is_one_decision(
        how: str, tmp_path: Path, backend_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sites (a double click spread by the load balancer) decide on the state each read
    before the other's commit: the second is decided again on what is recorded, so one
    receipt and one forward, where the agency used to get the candidate's data twice
    (attack review)."""
    world = World(tmp_path, url=backend_url)
    other_ledger = open_configured(world.settings, clock=lambda: world.now)
    other = Consents(world.settings, ConsentLedger(other_ledger,
                                                   Rules.from_settings(world.settings)))
    client = Client(IPHONE, "198.51.100.7")
    offer = world.offer("race@example.net")
    try:
        if how == "withdraw":
            world.accept(offer)
        before = world.consents.state(offer)  # what this site read, before the other's commit
        world.tick(300)
        if how == "accept":
            theirs = other.accept(offer, NOTICE, {"name": "候補者", "email": offer.recipient},
                                  False, client)
        else:
            theirs = other.withdraw(offer, "ja", client)
        real = world.consents.state
        stale = [before]
        monkeypatch.setattr(world.consents, "state",
                            lambda o: stale.pop() if stale else real(o))
        if how == "accept":
            ours = world.consents.accept(offer, NOTICE, {"name": "候補者",
                                                        "email": offer.recipient}, False, client)
        else:
            ours = world.consents.withdraw(offer, "ja", client)
    finally:
        other_ledger.close()
    assert theirs is not None
    # The same consent in force; a withdrawal finds nothing left to withdraw.
    assert (ours.id == theirs.id) if how == "accept" else ours is None
    decisions = [r[0] for r in world.rows("SELECT decision FROM receipts ORDER BY rowid")]
    assert decisions == (["accept"] if how == "accept" else ["accept", "withdraw"])
    assert [r[0] for r in world.rows("SELECT kind FROM forwards")] == ["consent"]


def test_a_change_made_here_counts_at_its_commit(ledger_postgres_url: str) -> None:
    """data_version moves when this process commits, not only when its notification comes
    back through the listener: a site's page right after a decision showed the old state
    (the form again) until it did (attack review)."""
    with open_shared(ledger_postgres_url) as ledger:
        backend = ledger.backend
        assert isinstance(backend, PostgresBackend)
        backend._listener = threading.Thread()  # no notification will ever come
        before = ledger.data_version()
        ledger.record_offer("acme", "<here@acme.example>", "c@example.net")
        assert ledger.data_version() != before


def test_no_write_slips_in_while_the_hash_key_is_being_checked(
        fresh_postgres_url: str) -> None:
    """The backend was ready before its hash key's check had passed: a write of another
    thread in that moment (a gateway started while the database was away, many sessions
    when it is back) went in under the wrong key, for ever in an append-only chain
    (attack review).  Now every thread waits for the check, and fails with it."""
    open_shared(fresh_postgres_url).close()  # migrated; the default key's fingerprint kept
    ledger = open_shared(fresh_postgres_url, hash_key=b"not the ledger's key", wait=False)
    backend = ledger.backend
    assert isinstance(backend, PostgresBackend)
    check = backend.on_ready
    checking = threading.Event()

    def slow_check() -> None:
        checking.set()
        time.sleep(0.5)
        check()

    backend.on_ready = slow_check
    outcomes: list[str] = []

    def write(n: int) -> None:
        if n:
            checking.wait(5)
        try:
            ledger.record_offer("acme", f"<m{n}@acme.example>", f"c{n}@example.net")
            outcomes.append("written")
        except ConfigError:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        ledger.close()
    assert outcomes == ["refused"] * 3
    with open_shared(fresh_postgres_url) as right, right.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM offers").fetchone()[0] == 0


def test_an_admin_login_with_a_nul_in_its_email_is_refused_not_a_500(
        ledger_postgres_url: str) -> None:
    """Before any password check, unthrottled: PostgreSQL's error was a 500 and a traceback
    in the log for every such try (attack review)."""
    with open_shared(ledger_postgres_url) as ledger:
        users = AdminUsers(ledger)
        users.add("boss@acme.example", "a long enough password", "acme")
        found = users.find("boss@acme.example\x00")
        assert found.user is None and check_password(found, "a long enough password") is None


def test_a_read_only_server_is_unavailable(fresh_postgres_url: str) -> None:
    """A standby during a failover refuses writes: LedgerUnavailable (the gateway holds
    the rejection, the site answers 503), not the driver's InternalError, which the
    gateway answered with an internal error's 451 and a traceback (attack review)."""
    open_shared(fresh_postgres_url).close()  # migrated, the key's fingerprint kept
    database = fresh_postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    with open_shared(fresh_postgres_url) as ledger, \
            pytest.raises(LedgerUnavailable, match="read-only"):
        ledger.record_offer("acme", "<ro@acme.example>", "c@example.net")


def test_a_write_lock_held_too_long_elsewhere_is_unavailable_not_a_hang(
        fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host cut off while it held the write lock (attack review): the other hosts' writes
    give up after LOCK_TIMEOUT and say LedgerUnavailable (held; 503), then work again."""
    import psycopg

    from career_relay.ledger import postgres

    monkeypatch.setattr(postgres, "LOCK_TIMEOUT", 0.3)
    with open_shared(fresh_postgres_url) as ledger:
        ledger.record_offer("acme", "<m1@acme.example>", "c@example.net")
        with psycopg.connect(fresh_postgres_url, autocommit=True) as stuck:
            stuck.execute("SELECT pg_advisory_lock(%s)", (postgres.WRITE_LOCK,))
            with pytest.raises(LedgerUnavailable, match="lock timeout"):
                ledger.record_offer("acme", "<m2@acme.example>", "c@example.net")
        ledger.record_offer("acme", "<m2@acme.example>", "c@example.net")  # released
        with ledger.read() as conn:
            assert conn.execute("SELECT COUNT(*) FROM offers").fetchone() == (2,)
            settings = dict(conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('idle_in_transaction_session_timeout', 'tcp_keepalives_idle',"
                " 'tcp_user_timeout', 'max_parallel_workers_per_gather')").fetchall())
    # The server ends a client that vanished holding the lock (keepalives, idle timeout).
    assert settings == {"idle_in_transaction_session_timeout": "300000",
                        "tcp_keepalives_idle": "30", "tcp_user_timeout": "30000",
                        "max_parallel_workers_per_gather": "0"}


def test_libpq_timeouts_unless_the_url_sets_them() -> None:
    """A partition is given up after seconds (connect_timeout, keepalives, TCP user timeout),
    and an operator's own choice in ledger.url stands."""
    import psycopg

    from career_relay.ledger import postgres

    plain = psycopg.conninfo.conninfo_to_dict(postgres.conninfo("postgresql://u@db/l"))
    assert (plain["connect_timeout"], plain["keepalives_idle"], plain["tcp_user_timeout"]) == (
        "5", "30", "30000")
    own = psycopg.conninfo.conninfo_to_dict(
        postgres.conninfo("postgresql://u@db/l?connect_timeout=20"))
    assert own["connect_timeout"] == "20" and own["keepalives"] == "1"


def test_a_snapshot_sees_one_moment_whatever_commits_meanwhile(
        two_hosts: tuple[Ledger, Ledger]) -> None:
    """The report reads many tables: on PostgreSQL a plain BEGIN would give each statement
    a newer snapshot, so a delivery committed mid-report could make its figures disagree."""
    a, b = two_hosts
    a.record_offer("acme", "<m1@acme.example>", "c1@example.net")
    with a.snapshot() as conn:
        (before,) = conn.execute("SELECT COUNT(*) FROM offers").fetchone()
        b.record_offer("acme", "<m2@acme.example>", "c2@example.net")  # another host
        (during,) = conn.execute("SELECT COUNT(*) FROM offers").fetchone()
    with a.read() as conn:
        (after,) = conn.execute("SELECT COUNT(*) FROM offers").fetchone()
    assert (before, during, after) == (1, 1, 2)
