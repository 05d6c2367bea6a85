"""Talking to PostgreSQL: connections and their settings, the ledger's SQL in psycopg's
spelling, and psycopg's errors as the project's (``career_relay.ledger.postgres`` is the
backend built on them)."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
import psycopg_pool

from career_relay.errors import ConfigError, LedgerConflict, LedgerUnavailable

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def to_psycopg(sql: str) -> str:
    """``?`` -> ``%s``, ``:name`` -> ``%(name)s``, a literal ``%`` doubled.  The ledger's SQL
    holds no ``?`` or ``:word`` inside string literals (its literals are short words)."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    return _NAMED.sub(r"%(\1)s", sql)


class _Connection:
    """A psycopg connection that takes the ledger's SQL (``execute``, ``executemany``)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
                ) -> psycopg.Cursor[Any]:
        # The parameters as given, even none: psycopg reads placeholders (and turns the
        # doubled ``%%`` back into ``%``) only when it is given parameters.
        return self.raw.execute(to_psycopg(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        if rows:
            cursor.executemany(to_psycopg(sql), rows)
        return cursor


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """psycopg's errors as the project's (``career_relay.ledger.sqlite_backend.translated``)."""
    try:
        yield
    except psycopg.IntegrityError as exc:
        raise LedgerConflict(str(exc).strip()) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        # A role without the grant a statement needs (deploy/postgres/grants.sql not applied
        # after a migration): unavailable until the owner grants it, so the gateway holds
        # the rejection and the site answers 503, never a bug's "relay it unchanged".
        raise LedgerUnavailable(f"the ledger cannot be used now: {first_line(exc)} (the "
                                "role of ledger.url lacks a grant: apply "
                                "deploy/postgres/grants.sql as the owner)") from exc
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        # A server that takes no writes (a standby, during a failover): away for writing,
        # so the gateway holds the rejection and the site answers 503, never a bug's 451.
        raise LedgerUnavailable(f"the ledger cannot be used now: {first_line(exc)} (the "
                                "server of ledger.url is read-only: a standby?)") from exc
    except psycopg_pool.PoolTimeout as exc:
        raise LedgerUnavailable("the ledger cannot be used now: no connection to "
                                "PostgreSQL") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise LedgerUnavailable(f"the ledger cannot be used now: {exc}".strip()) from exc
    except psycopg.errors.RaiseException as exc:  # an append-only trigger refused
        raise LedgerConflict(str(exc).strip()) from exc
    except psycopg.DataError as exc:
        # A value PostgreSQL cannot store (a NUL in a text, which SQLite takes): refused
        # like a constraint, never the driver's error, which the gateway would take for a
        # bug and relay the rejection with its marker bare (attack review).
        raise LedgerConflict(f"the ledger refused a value: {first_line(exc)}") from exc


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__



#: libpq's settings unless ``ledger.url`` sets them: a server that stops answering (a
#: partition, a failover) is given up after seconds, not TCP's minutes or hours.
_LIBPQ_DEFAULTS = {"connect_timeout": "5", "keepalives": "1", "keepalives_idle": "30",
                   "keepalives_interval": "10", "keepalives_count": "3",
                   "tcp_user_timeout": "30000"}
#: The server's side of the same: a client that vanished in a transaction (holding the
#: write lock) is ended within about a minute by keepalives, and within five by the idle
#: timeout whatever the network does (the ledger's transactions last milliseconds; the
#: longest, ``ledger migrate``, never idles).
_SESSION = ("SET max_parallel_workers_per_gather = 0",
            "SET idle_in_transaction_session_timeout = '300s'",
            "SET tcp_keepalives_idle = 30", "SET tcp_keepalives_interval = 10",
            "SET tcp_keepalives_count = 3", "SET tcp_user_timeout = 30000")


def conninfo(url: str) -> str:
    """``url`` with the ``_LIBPQ_DEFAULTS`` it does not set itself."""
    given = psycopg.conninfo.conninfo_to_dict(url)
    return psycopg.conninfo.make_conninfo(
        url, **{k: v for k, v in _LIBPQ_DEFAULTS.items() if k not in given})


def configure(conn: psycopg.Connection[Any]) -> None:
    """Each new connection of the pool: no parallel plans (``career_relay.ledger.postgres``,
    "Plans"), and the server's timeouts of ``_SESSION``."""
    for statement in _SESSION:
        conn.execute(statement)


def check_url(url: str) -> None:
    """``ConfigError`` for a URL libpq cannot parse, without libpq's words: they quote the
    part they choke on, often the password (a space, a stray ``%``), and the pool's and
    the listener's threads would log them at every try (attack review)."""
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        raise ConfigError(
            "ledger.url cannot be read as a PostgreSQL URL (postgresql://user:password@host"
            "/db): percent-encode the password's special characters (a space is %20, a % "
            "is %25) or leave it out of the URL (PGPASSWORD, ~/.pgpass)") from None


