"""The private PostgreSQL of tests/pg.py does what the ledger tests will need of it: real
SQL through psycopg 3 and psycopg_pool, an empty database per test, loopback only, and a
server that can go away and come back on the same port."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from career_relay.errors import LedgerConflict
from career_relay.ledger import open_shared
from tests.pg import LedgerDatabase, PostgresServer


def test_a_table_written_and_read_back(fresh_postgres_url: str) -> None:
    with psycopg.connect(fresh_postgres_url) as conn:
        conn.execute("CREATE TABLE offers (id bigserial PRIMARY KEY, company text NOT NULL,"
                     " candidate text NOT NULL)")
        conn.execute("INSERT INTO offers (company, candidate) VALUES (%s, %s), (%s, %s)",
                     ("acme", "山田 花子 <hanako@example.jp>", "acme", "b@example.net"))
    with psycopg.connect(fresh_postgres_url) as conn:  # committed: another connection sees it
        rows = conn.execute("SELECT id, company, candidate FROM offers ORDER BY id").fetchall()
        encoding = conn.execute("SHOW server_encoding").fetchone()
    assert rows == [(1, "acme", "山田 花子 <hanako@example.jp>"), (2, "acme", "b@example.net")]
    assert encoding == ("UTF8",)


def test_each_test_gets_an_empty_database_of_its_own(fresh_postgres_url: str,
                                                      postgres_url: str,
                                                      pg_server: PostgresServer) -> None:
    assert fresh_postgres_url != postgres_url
    name = fresh_postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(fresh_postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                              ).fetchone()
        assert conn.execute("SELECT current_database()").fetchone() == (name,)
    assert tables == (0,)  # the previous test's table is not here
    # The database goes when its test ends (fixture teardown); shown here by hand.
    other = pg_server.create_database()
    with pg_server.connect() as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (other,)).fetchone() == (1,)
    held = psycopg.connect(pg_server.url(other))  # still connected: dropped all the same
    try:
        pg_server.drop_database(other)
    finally:
        held.close()
    with pg_server.connect() as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (other,)).fetchone() is None


def test_the_ledger_database_is_migrated_and_emptied_each_time(
        pg_server: PostgresServer) -> None:
    """``ledger_postgres_url``: rows gone and identities back at 1 after each reset; a
    schema a test changed (a trigger disabled) is made again, refusals and all."""
    database = LedgerDatabase(pg_server)
    url = database.reset()
    for tamper in (False, True):
        with open_shared(url) as ledger:
            ledger.record_offer("acme", "<m@acme.example>", "c@example.net")
            with ledger.read() as conn:
                assert conn.execute("SELECT rowid FROM offers").fetchall() == [(1,)]
                assert conn.execute("SELECT seq FROM entries").fetchall() == [(1,)]
        if tamper:
            with pg_server.connect(database.name) as conn:
                conn.execute("ALTER TABLE entries DISABLE TRIGGER ALL")
        again = database.reset()
        assert (again != url) is tamper  # emptied in place, or made again
        url = again
    with open_shared(url) as ledger, pytest.raises(LedgerConflict, match="append-only"):
        ledger.record_offer("acme", "<m@acme.example>", "c@example.net")
        with ledger.write() as conn:
            conn.execute("DELETE FROM entries")
    pg_server.drop_database(database.name)


def test_a_connection_pool(fresh_postgres_url: str) -> None:
    with ConnectionPool(fresh_postgres_url, min_size=1, max_size=2, open=True,
                        timeout=10) as pool:
        pool.wait(timeout=10)
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (n int)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
        with pool.connection() as a, pool.connection() as b:  # both at once: max_size 2
            assert a is not b
            total = a.execute("SELECT sum(n) FROM t").fetchone()
            pids = {a.info.backend_pid, b.info.backend_pid}
        stats = pool.get_stats()
    assert total == (5050,)
    assert len(pids) == 2
    assert stats["pool_max"] == 2


def _listening(port: int) -> set[str]:
    """Local addresses of the sockets listening on port (IPv4 and IPv6), from /proc."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            if width == 8:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _refused(host: str, port: int, family: socket.AddressFamily) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect((host, port))
        except OSError:
            return True
    return False


def test_it_listens_on_127_0_0_1_only(pg_server: PostgresServer) -> None:
    assert _listening(pg_server.port) == {"127.0.0.1"}
    with pg_server.connect() as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW port").fetchone() == (str(pg_server.port),)
    # Other loopback addresses would answer if it were bound to 0.0.0.0 or ::.
    assert _refused("127.0.0.2", pg_server.port, socket.AF_INET)
    if socket.has_ipv6 and Path("/proc/net/if_inet6").exists():
        assert _refused("::1", pg_server.port, socket.AF_INET6)
    # The socket directory is the server's own, closed to others; a password over TCP.
    assert (pg_server.socket_dir / f".s.PGSQL.{pg_server.port}").is_socket()
    assert pg_server.socket_dir.stat().st_mode & 0o077 == 0
    wrong = pg_server.url().replace(pg_server.password, "wrong-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=10)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_on_the_same_port_keeps_the_data(pg_server: PostgresServer,
                                                   fresh_postgres_url: str,
                                                   mode: str) -> None:
    port = pg_server.port
    old = psycopg.connect(fresh_postgres_url, autocommit=True)
    old.execute("CREATE TABLE kept (word text)")
    old.execute("INSERT INTO kept VALUES ('before')")
    pid = old.info.backend_pid

    pg_server.restart(mode)

    assert pg_server.port == port and pg_server.running
    with pytest.raises(psycopg.OperationalError):  # the old connection is gone
        old.execute("SELECT 1")
    old.close()
    with psycopg.connect(fresh_postgres_url) as conn:
        assert conn.info.backend_pid != pid
        conn.execute("INSERT INTO kept VALUES ('after')")
        words = conn.execute("SELECT word FROM kept ORDER BY word").fetchall()
    assert words == [("after",), ("before",)]


def test_the_server_runs_as_the_postgres_user_when_root(pg_server: PostgresServer) -> None:
    pid = int((pg_server.data / "postmaster.pid").read_text().split()[0])
    owner = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    expected = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert owner == expected
    assert pg_server.as_system_user == (os.geteuid() == 0)


def _fake_bindir(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(0o755)
    return directory


def test_the_highest_debian_major_version_is_chosen(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import pg

    for major in ("9.6", "13", "16"):
        _fake_bindir(tmp_path / major / "bin")
    (tmp_path / "17" / "bin").mkdir(parents=True)  # a client-only major: no server binaries
    monkeypatch.setattr(pg, "DEBIAN_BINDIRS", str(tmp_path))
    assert pg.find_bindir() == tmp_path / "16" / "bin"


def test_missing_binaries_say_what_to_install(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a skip: the fixture turns this into a failure (pytest.fail), with this text."""
    from tests import pg

    monkeypatch.setattr(pg, "DEBIAN_BINDIRS", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_config, no initdb
    with pytest.raises(pg.PostgresMissing, match=r"make test-deps.*postgresql"):
        pg.find_bindir()


def test_the_tests_server_skips_fsync_and_a_durable_one_does_not(
        pg_server: PostgresServer) -> None:
    """The tests' server need not survive a power cut; a benchmark's must commit as
    production does (bench/backends_bench.py), with its own extra settings."""
    with pg_server.connect() as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
    with PostgresServer(durable=True, settings={"max_connections": "60"}) as durable, \
            durable.connect() as conn:
        for name in ("fsync", "full_page_writes", "synchronous_commit"):
            assert conn.execute(f"SHOW {name}").fetchone() == ("on",), name
        assert conn.execute("SHOW max_connections").fetchone() == ("60",)
