"""Logins for the admin pages (issue 5): users and sessions.

SQL only, plus the login rule; ``consent_site.admin_auth`` turns HTTP into
these calls.  The tables (migration ``0005_admin``) are operational, not
ledger entries.

- A user is an operator (every company) or a company's user (that company only).
- A session is a random value in a cookie; the table keeps its SHA-256 and an
  expiry, so logging out or expiring revokes it, and a copy of the file opens
  nothing.
- A login for an unknown email verifies the password against a dummy argon2
  hash: neither the answer nor its time tells whether an address has a login
  (OWASP Authentication Cheat Sheet).  Throttling failed logins is the site's
  (``consent_site.login_throttle``: growing delays, never a lock-out); the
  password check runs off the ledger's thread (``check_password``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import secrets
from dataclasses import dataclass

from career_relay.errors import LedgerConflict, UserError
from career_relay.ledger.offers import Ledger
from career_relay.passwords import hash_password, verify_password
from career_relay.timestamps import parse_stamp, stamp

SESSION_LIFETIME = dt.timedelta(hours=12)


@dataclass(frozen=True)
class AdminUser:
    id: int
    email: str
    company: str | None  # None: an operator

    @property
    def operator(self) -> bool:
        return self.company is None

    def may_see(self, company: str) -> bool:
        return self.company is None or self.company == company


@dataclass(frozen=True)
class Candidate:
    """A login's account as found by its email, and the hash to check (dummy if none)."""

    user: AdminUser | None
    password_hash: str


def check_password(found: Candidate, password: str) -> AdminUser | None:
    """argon2, about 0.1 s: run it on a thread of its own, never the ledger's."""
    right = verify_password(found.password_hash, password)
    return found.user if right and found.user is not None else None


def normal_email(email: str) -> str:
    return email.strip().lower()


@functools.cache
def _dummy_hash() -> str:
    """An argon2 hash of nothing anyone knows: unknown emails cost the same to refuse."""
    return hash_password(secrets.token_urlsafe(24))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


_USER_COLUMNS = "u.id, u.email, u.company"


class AdminUsers:
    """The admin logins of one open ``Ledger`` (sharing its connection and lock)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    # -- users ----------------------------------------------------------------------------

    def add(self, email: str, password: str, company: str | None) -> AdminUser:
        """A new login; ``company`` None makes an operator.  Refuses an email already used."""
        address = normal_email(email)
        if "@" not in address or any(c.isspace() for c in address):
            raise UserError(f"not an email address: {email!r}")
        password_hash = hash_password(password)
        role = "operator" if company is None else "company"
        try:
            with self.ledger.write() as conn:
                (user_id,) = conn.execute(
                    "INSERT INTO admin_users (email, role, company, password_hash, created)"
                    " VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (address, role, company, password_hash, stamp(self.ledger.now()))).fetchone()
        except LedgerConflict:
            raise UserError(f"an admin login for {address} exists already") from None
        return AdminUser(int(user_id), address, company)

    def remove(self, email: str) -> bool:
        """Delete a login and every session it has; False when there is none."""
        address = normal_email(email)
        with self.ledger.write() as conn:
            found = conn.execute("SELECT id FROM admin_users WHERE email = ?",
                                 (address,)).fetchone()
            if found is None:
                return False
            conn.execute("DELETE FROM admin_sessions WHERE user_id = ?", (found[0],))
            conn.execute("DELETE FROM admin_users WHERE id = ?", (found[0],))
        return True

    def set_password(self, email: str, password: str) -> int | None:
        """A new password for ``email``'s login, the way back from a lost one; every session
        of that login ends with it (whoever held the old password is logged out).  The
        number of sessions ended; None when there is no such login.

        The row is replaced (same email, role, company and creation time), not updated:
        on PostgreSQL the application role may insert and delete logins but never change
        one (deploy/postgres/grants.sql), and a reset needs no more than that.
        """
        password_hash = hash_password(password)  # before the write: argon2 takes a while
        address = normal_email(email)
        with self.ledger.write() as conn:
            found = conn.execute("SELECT id, role, company, created FROM admin_users"
                                 " WHERE email = ?", (address,)).fetchone()
            if found is None:
                return None
            user_id, role, company, created = found
            cursor = conn.execute("DELETE FROM admin_sessions WHERE user_id = ?", (user_id,))
            ended = int(cursor.rowcount)
            conn.execute("DELETE FROM admin_users WHERE id = ?", (user_id,))
            conn.execute("INSERT INTO admin_users (email, role, company, password_hash, created)"
                         " VALUES (?, ?, ?, ?, ?)", (address, role, company, password_hash,
                                                     created))
        return ended

    def revoke_sessions(self, email: str | None = None) -> int:
        """End every session of ``email``'s login (of every login when None): they must
        log in again.  The number of sessions ended."""
        with self.ledger.write() as conn:
            if email is None:
                cursor = conn.execute("DELETE FROM admin_sessions")
            else:
                cursor = conn.execute(
                    "DELETE FROM admin_sessions WHERE user_id IN"
                    " (SELECT id FROM admin_users WHERE email = ?)", (normal_email(email),))
        return int(cursor.rowcount)

    def users(self) -> list[AdminUser]:
        with self.ledger.read() as conn:
            rows = conn.execute(f"SELECT {_USER_COLUMNS} FROM admin_users u ORDER BY u.id")
            return [AdminUser(int(i), str(e), c) for i, e, c in rows]

    # -- logging in -----------------------------------------------------------------------

    def find(self, email: str) -> Candidate:
        """The account for ``email``, or a dummy to check against (the same cost)."""
        if "\x00" in email:  # no one's, and PostgreSQL's text cannot hold it: no 500
            return Candidate(None, _dummy_hash())
        with self.ledger.read() as conn:
            found = conn.execute(f"SELECT {_USER_COLUMNS}, u.password_hash FROM admin_users u"
                                 " WHERE u.email = ?", (normal_email(email),)).fetchone()
        if found is None:
            return Candidate(None, _dummy_hash())
        return Candidate(AdminUser(int(found[0]), str(found[1]), found[2]), str(found[3]))

    # -- sessions -------------------------------------------------------------------------

    def start_session(self, user: AdminUser) -> str:
        token = secrets.token_urlsafe(32)
        now = self.ledger.now()
        with self.ledger.write() as conn:
            conn.execute("DELETE FROM admin_sessions WHERE expires <= ?", (stamp(now),))
            conn.execute("INSERT INTO admin_sessions (id, user_id, created, expires)"
                         " VALUES (?, ?, ?, ?)",
                         (_digest(token), user.id, stamp(now), stamp(now + SESSION_LIFETIME)))
        return token

    def session(self, token: str) -> AdminUser | None:
        """The user of a live session; None for an unknown, ended or expired one."""
        if not token:
            return None
        with self.ledger.read() as conn:
            row = conn.execute(
                f"SELECT {_USER_COLUMNS}, s.expires FROM admin_sessions s"
                " JOIN admin_users u ON u.id = s.user_id WHERE s.id = ?",
                (_digest(token),)).fetchone()
        if row is None or parse_stamp(row[3]) <= self.ledger.now():
            return None
        return AdminUser(int(row[0]), str(row[1]), row[2])

    def end_session(self, token: str) -> None:
        with self.ledger.write() as conn:
            conn.execute("DELETE FROM admin_sessions WHERE id = ?", (_digest(token),))

    @staticmethod
    def session_key(token: str) -> str:
        """What a form's CSRF nonce is bound to: the session, not its secret value."""
        return "admin:" + _digest(token)[:24]
