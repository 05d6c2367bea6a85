"""A private, throw-away PostgreSQL server for the tests (issue 13 item 5).

Each test session that asks for it gets its own server: a cluster made by ``initdb`` in a
fresh directory under /tmp, started with ``pg_ctl``, listening on 127.0.0.1 only (a port of
tests/ports.py) and on a unix socket in that directory, stopped and removed at the end. It
never uses, starts, stops or reconfigures a system cluster (Debian's 15/main on
localhost:5432, say): it reads nothing from /etc/postgresql and nothing of the ``PG*``
environment.

Fixtures (registered in tests/conftest.py):

* ``pg_server`` (session): the running :class:`PostgresServer`; ``stop()``, ``start()``
  and ``restart()`` for tests of a server going away and coming back on the same port.
* ``postgres_url`` (session): ``postgresql://postgres:<password>@127.0.0.1:<port>/career_relay``,
  a database that lives as long as the session.
* ``fresh_postgres_url`` (function): the URL of a new, empty database of its own,
  dropped after the test.
* ``ledger_postgres_url`` (function): the URL of a migrated ledger database with no rows,
  for the ledger's tests on PostgreSQL (``backend_url`` in tests/conftest.py).  One
  database serves the whole session, emptied before each test (:class:`LedgerDatabase`):
  about 15 ms, where a new database and its migrations cost about half a second.
* ``pg`` and ``lite`` (function): raw connections (autocommit) to a fresh PostgreSQL
  database with every migration applied, and to a fresh SQLite ledger as ``open_ledger``
  makes it (foreign keys on), for tests that write the same SQL to both schemas.

Things that matter:

* ``initdb`` and ``postgres`` refuse to run as root, and CI runs as root: as root, every
  server command runs as Debian's ``postgres`` system user (``runuser -u postgres --``)
  in a directory chowned to it. Its parents must be searchable by that user, which
  pytest's ``/tmp/pytest-of-root`` (0700) is not, hence :func:`tempfile.mkdtemp` in /tmp.
  As anyone else, everything runs as the current user.
* The server is a superuser's: TCP connections need the session's random password
  (SCRAM), so another local user cannot borrow it while it runs; the socket directory is
  0700. The password is in every URL.
* ``fsync = off``: a test server need not survive a power cut. A crash of the server
  itself (``restart("immediate")``) loses nothing committed, as in production.
  ``PostgresServer(durable=True)`` (the benchmarks) has production's durability instead:
  ``fsync``, ``full_page_writes`` and ``synchronous_commit`` on, so a commit waits for
  its WAL flush; ``settings`` adds or overrides other lines of postgresql.conf.
* The binaries: the highest ``/usr/lib/postgresql/<major>/bin`` (Debian's layout, from
  ``make test-deps``), else ``pg_config --bindir``, else ``PATH``. Missing binaries fail
  the test, with what to install: they are never a reason to skip.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

from career_relay.ledger import open_ledger
from career_relay.ledger.schema_postgres import apply
from tests.ports import free_port

SUPERUSER = "postgres"
SESSION_DATABASE = "career_relay"
SYSTEM_USER = "postgres"  # the Debian package's; owns the server when the tests run as root
BINARIES = ("initdb", "pg_ctl", "postgres")
DEBIAN_BINDIRS = "/usr/lib/postgresql"


class PostgresMissing(RuntimeError):
    """The server binaries are not installed (``make test-deps`` installs them)."""


def find_bindir() -> Path:
    """The directory of initdb, pg_ctl and postgres: Debian's highest major version first."""

    def complete(d: Path) -> bool:
        return all((d / b).is_file() and os.access(d / b, os.X_OK) for b in BINARIES)

    candidates: list[Path] = []
    debian = Path(DEBIAN_BINDIRS)
    if debian.is_dir():
        majors = [d for d in debian.iterdir() if re.fullmatch(r"\d+(\.\d+)?", d.name)]
        majors.sort(key=lambda d: tuple(int(n) for n in d.name.split(".")), reverse=True)
        candidates += [d / "bin" for d in majors]
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                               timeout=30)
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(Path(found.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for d in candidates:
        if complete(d):
            return d
    raise PostgresMissing(
        "the PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found in "
        f"{DEBIAN_BINDIRS}/<major>/bin, in `pg_config --bindir` or on PATH; "
        "`make test-deps` installs Debian's postgresql package (`make test` does it too)")


class PostgresServer:
    """One private cluster: ``initdb`` once, then ``start``/``stop`` as often as wanted.

    Usable as a context manager: ``with PostgresServer() as pg: ...`` starts it and, at the
    end, stops it (immediately) and removes its directory.
    """

    def __init__(self, bindir: Path | None = None, port: int | None = None, *,
                 durable: bool = False, settings: Mapping[str, str] | None = None):
        self.bindir = bindir or find_bindir()
        #: fsync, full_page_writes and synchronous_commit on (a benchmark's server), not off.
        self.durable = durable
        #: More lines of postgresql.conf (``name = value``), after the ones above.
        self.settings = dict(settings or {})
        self.as_system_user = os.geteuid() == 0
        if self.as_system_user:
            try:
                self._owner = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise PostgresMissing(
                    f"running as root, the server must run as the {SYSTEM_USER!r} system "
                    "user, which does not exist: `make test-deps` installs Debian's "
                    "postgresql package, which creates it") from None
            if shutil.which("runuser") is None:
                raise PostgresMissing("running as root needs runuser (util-linux)")
        # /tmp itself, never pytest's tmp_path: the postgres user must reach the directory.
        self.base = Path(tempfile.mkdtemp(prefix="career-relay-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.socket_dir = self.base
        self.port = port or free_port()
        self._port_chosen = port is None
        self.user = SUPERUSER
        self.password = secrets.token_urlsafe(24)
        self.running = False
        self.started_in: float | None = None  # seconds, the last start (initdb not counted)
        self.initdb_took: float | None = None
        if self.as_system_user:
            os.chown(self.base, self._owner.pw_uid, self._owner.pw_gid)

    # -- the commands ----------------------------------------------------------------

    def _run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A server command, as the postgres user when we are root; PG* variables dropped."""
        command = [str(a) for a in args]
        if self.as_system_user:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # cwd: the postgres user may not be allowed into the checkout (under /root, say).
        return subprocess.run(command, capture_output=True, text=True, cwd=self.base,
                              env=env, timeout=timeout)

    def _write_as_owner(self, path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if self.as_system_user:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def initdb(self) -> None:
        pwfile = self.base / "pwfile"
        self._write_as_owner(pwfile, self.password + "\n")
        began = time.monotonic()
        try:
            done = self._run(self.bindir / "initdb", "-D", self.data, "-U", self.user,
                             f"--pwfile={pwfile}", "--auth-local=trust",
                             "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
                             "--no-sync")
        finally:
            pwfile.unlink(missing_ok=True)
        self.initdb_took = time.monotonic() - began
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        # Appended: a later line wins, so _set_port can append another port.
        durability = ("fsync = on\nfull_page_writes = on\nsynchronous_commit = on\n"
                      if self.durable else "fsync = off\nfull_page_writes = off\n")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# career-relay tests (tests/pg.py)\n"
                       "listen_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.socket_dir}'\n"
                       "unix_socket_permissions = 0700\n"
                       f"{durability}"
                       "max_connections = 50\n"
                       "shared_buffers = 32MB\n"
                       "log_min_messages = warning\n"
                       + "".join(f"{name} = {value}\n" for name, value in self.settings.items()))
        self._set_port(self.port)

    def _set_port(self, port: int) -> None:
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(f"port = {port}\n")
        self.port = port

    def start(self) -> None:
        """Start the server and wait until it takes connections (on the same port as before)."""
        if not (self.data / "PG_VERSION").exists():
            self.initdb()
        for attempt in range(3):
            began = time.monotonic()
            done = self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w",
                             "-t", "60", "-s", "start")
            if done.returncode == 0:
                self.running = True
                self.started_in = time.monotonic() - began
                return
            # The free port was taken between our look and the server's bind: another one,
            # but only before the first start (a restart must come back on the same port).
            if (self._port_chosen and self.started_in is None and attempt < 2
                    and "could not bind" in self.log_tail()):
                self._set_port(free_port())
                continue
            break
        raise RuntimeError(f"pg_ctl start failed ({done.returncode}): {done.stdout}"
                           f"{done.stderr}\n--- {self.log} ---\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (clients disconnected, a clean shutdown) or ``immediate``
        (every process killed at once: a crash, recovered from at the next start)."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(mode)
        done = self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t",
                         "60", "-s", "stop")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed ({done.returncode}): {done.stdout}"
                               f"{done.stderr}\n--- {self.log} ---\n{self.log_tail()}")
        self.running = False

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast`` or ``immediate``) and start again on the same port; the data stays.
        Open connections are broken: a new connection afterwards works."""
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        """Stop the server (immediately) if it runs and remove its directory."""
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- databases -------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return (f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/"
                f"{database}")

    def connect(self, database: str = "postgres") -> psycopg.Connection[TupleRow]:
        """An autocommit connection over TCP (as the ledger will connect)."""
        return psycopg.connect(self.url(database), autocommit=True, connect_timeout=10)

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database (a unique name unless given); returns its name."""
        name = name or f"t_{secrets.token_hex(6)}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, disconnecting whoever is still connected to it (PostgreSQL 13+)."""
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


# -- the fixtures (imported by tests/conftest.py) ---------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The session's private PostgreSQL (started on first use, removed at the end)."""
    problem = None
    try:
        server = PostgresServer()
    except PostgresMissing as e:
        problem = f"PostgreSQL for the tests: {e}"
    if problem is None:
        try:
            server.start()
        except Exception as e:
            server.remove()
            problem = f"PostgreSQL for the tests did not start: {e}"
    if problem is not None:  # failed outside the except blocks: no chained traceback
        pytest.fail(problem, pytrace=False)
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_url(pg_server: PostgresServer) -> str:
    """The URL of a database that lives as long as the test session."""
    pg_server.create_database(SESSION_DATABASE)
    return pg_server.url(SESSION_DATABASE)


class LedgerDatabase:
    """One migrated ledger database, emptied for each test that asks for it (``reset``).

    Emptied as the superuser with ``session_replication_role = replica``, so neither the
    append-only triggers nor the foreign keys fire: every table but the migrations' loses
    its rows and every identity starts again at 1 (``rowid`` as in a new database).
    Whoever is still connected is disconnected first (a ledger a failed test left open).
    A test that changed the schema (dropped or disabled a trigger, say) leaves a
    different fingerprint: the database is then dropped and made again.
    """

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.name = ""
        self._fingerprint = ""
        self._empty = ""  # the statements that empty it

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def _create(self) -> None:
        from career_relay.ledger import open_shared  # the ledger's own migrations

        self.name = self.server.create_database()
        open_shared(self.url).close()
        with self.server.connect(self.name) as conn:
            tables = [str(t) for (t,) in conn.execute(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'career_relay_migrations' ORDER BY 1")]
            sequences = [str(s) for (s,) in conn.execute(
                "SELECT quote_ident(sequencename) FROM pg_sequences"
                " WHERE schemaname = 'public' ORDER BY 1")]
            self._fingerprint = _fingerprint(conn)
            self._empty = ";".join([*(f"DELETE FROM {t}" for t in tables),
                                    *(f"ALTER SEQUENCE {s} RESTART" for s in sequences)])
            self._empty_it(conn)  # opening may have written (the hash key's mark, say)

    def _empty_it(self, conn: psycopg.Connection[TupleRow]) -> None:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(self._empty)

    def reset(self) -> str:
        """Empty it (make it, the first time); its URL."""
        if not self.server.running:  # a test that stopped the server and failed
            self.server.start()
        if not self.name:
            self._create()
            return self.url
        with self.server.connect(self.name) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = current_database() AND pid <> pg_backend_pid()")
            changed = _fingerprint(conn) != self._fingerprint
            if not changed:
                self._empty_it(conn)
        if changed:
            self.server.drop_database(self.name)
            self._create()
        return self.url


def _fingerprint(conn: psycopg.Connection[TupleRow]) -> str:
    """The columns, triggers (and whether each is enabled) and functions of the schema."""
    row = conn.execute(
        "SELECT md5(string_agg(x, ',' ORDER BY x)) FROM ("
        " SELECT c.relname || '.' || t.tgname || ':' || t.tgenabled::text AS x"
        " FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " UNION ALL SELECT c.relname || '.' || a.attname || ':' || a.atttypid::text"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0"
        " AND NOT a.attisdropped"
        " UNION ALL SELECT p.proname || ':' || md5(p.prosrc) FROM pg_proc p"
        " WHERE p.pronamespace = 'public'::regnamespace) AS schema").fetchone()
    return str(row[0]) if row else ""


@pytest.fixture(scope="session")
def _ledger_database(pg_server: PostgresServer) -> LedgerDatabase:
    return LedgerDatabase(pg_server)


@pytest.fixture
def ledger_postgres_url(_ledger_database: LedgerDatabase) -> str:
    """The URL of a migrated ledger database with no rows (shared, emptied for this test)."""
    return _ledger_database.reset()


@pytest.fixture
def fresh_postgres_url(pg_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database for this test alone, dropped afterwards."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    if not pg_server.running:  # a test that stopped the server and failed before starting it
        pg_server.start()
    pg_server.drop_database(name)


@pytest.fixture
def pg(fresh_postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A fresh PostgreSQL database with every migration applied (autocommit)."""
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        apply(conn)
        yield conn


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A fresh SQLite ledger as open_ledger makes it, opened raw (autocommit, foreign keys)."""
    open_ledger(tmp_path / "ledger.db").close()
    conn = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    yield conn
    conn.close()
