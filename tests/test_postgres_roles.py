"""Least privilege on PostgreSQL (issue 13, items 2 and 7): deploy/postgres/roles.sql and
deploy/postgres/grants.sql, as docs/deploy.md ("More than one host") runs them.

On the session's private PostgreSQL (tests/pg.py): a fresh database gets the two roles
(``psql -f roles.sql`` as the superuser), the owner migrates it (``career-relay ledger
verify`` with the owner's URL) and applies the grants (``psql -f grants.sql`` as the
owner); then the ledger's real work runs as the application role: rejections, consents,
reviews, claims and deliveries that mint credits, a failure and a retry, an erasure, a
redemption, the report, the admin lists, the metrics' totals, a retention purge, admin
logins and their sessions, ``Book.verify`` and ``ledger verify``.  Then the refusals: with
every trigger disabled by the owner, the application role still cannot change or delete
an append-only row, drop, alter or truncate a table, nor create one: privileges, not
only triggers.  The grants are also checked against the code: every ``UPDATE`` and
``DELETE`` in career_relay/ledger/ has its privilege, and the role has no other.
"""

from __future__ import annotations

import ast
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from career_relay.consent import Client
from career_relay.errors import LedgerUnavailable
from career_relay.ledger import (
    COUNTER_KINDS,
    AdminUsers,
    AgencyKeys,
    ApiKeys,
    Book,
    NoCreditAvailable,
    Notices,
    Referrals,
    Rejection,
    check_password,
    open_shared,
    records,
    reports,
    retention,
    schema_outcome_candidates,
    schema_postgres,
    totals,
)
from career_relay.ledger import schema_postgres_later as later
from tests.conftest import REPO, ConfigMaker, GatewayThread, Sink, run_cli, wait_until
from tests.pg import PostgresServer, find_bindir
from tests.test_ledger_rules import IPHONE, World

ROLES_SQL = REPO / "deploy" / "postgres" / "roles.sql"
GRANTS_SQL = REPO / "deploy" / "postgres" / "grants.sql"
PASSWORDS_PSQL = REPO / "deploy" / "postgres" / "passwords.psql"  # deploy/compose.yaml's
OWNER, APP = "career_relay_owner", "career_relay_app"
#: The append-only tables (the triggers of 0004 and 0008): never an UPDATE or a DELETE,
#: except the erasure columns of offers, forwards and profiles.
APPEND_ONLY = ("entries", "receipts", "reviews", "qualified", "credits", "redemptions")
CHAINED = ("offers", "forwards", "profiles")


@dataclass(frozen=True)
class Roles:
    """One database with the two roles, as roles.sql leaves it (not migrated yet)."""

    server: PostgresServer
    database: str
    owner: str  # the URL of each role
    app: str

    def connect(self, url: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)


def psql(url: str, script: Path, env: dict[str, str] | None = None, *, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    """``psql -v ON_ERROR_STOP=1 -f script``, as an operator runs it (the server's psql)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    full_env.update(env or {})
    done = subprocess.run([str(find_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           "-d", url, "-f", str(script)],
                          capture_output=True, text=True, env=full_env, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _role_url(server: PostgresServer, role: str, password: str, database: str) -> str:
    return f"postgresql://{role}:{password}@127.0.0.1:{server.port}/{database}"


@pytest.fixture
def roles(pg_server: PostgresServer) -> Iterator[Roles]:
    database = pg_server.create_database()
    passwords = {OWNER: secrets.token_urlsafe(18), APP: secrets.token_urlsafe(18)}
    psql(pg_server.url(database), ROLES_SQL)
    with pg_server.connect(database) as conn:
        for role, password in passwords.items():
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))
    try:
        yield Roles(pg_server, database, _role_url(pg_server, OWNER, passwords[OWNER], database),
                    _role_url(pg_server, APP, passwords[APP], database))
    finally:
        pg_server.drop_database(database)
        with pg_server.connect() as conn:  # roles are the cluster's: the next test makes them
            conn.execute(f"DROP ROLE IF EXISTS {APP}")
            conn.execute(f"DROP ROLE IF EXISTS {OWNER}")


#: World's secrets (tests/test_ledger_rules.py): the first open records the hash key's
#: fingerprint, so the owner's command runs with the configuration the hosts use.
HASH_KEY = b"hash-key"  # secrets.hash_key, as open_configured takes it
SECRETS = {"signing_keys": ["test-key-0123456789"], "hash_key": HASH_KEY.decode()}


def migrate_as_owner(roles: Roles, make_config: ConfigMaker) -> None:
    """docs/deploy.md: the hosts' configuration with the owner's URL for one command that
    opens the ledger, then the grants."""
    config = make_config(secrets=SECRETS)
    done = run_cli("ledger", "verify", "--config", str(config),
                   env={"CAREER_RELAY_LEDGER_URL": roles.owner})
    assert done.returncode == 0, done.stderr
    assert "ledger ok: 0 entries" in done.stdout
    psql(roles.owner, GRANTS_SQL)


def _tables(roles: Roles) -> list[str]:
    with roles.connect(roles.owner) as conn:
        return [str(r[0]) for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


# -- the files -----------------------------------------------------------------------------


def test_the_files_are_plain_sql_and_run_twice(roles: Roles, make_config: ConfigMaker) -> None:
    """No psql command inside (a compose init script, psql and psycopg all run them), and
    a second run changes nothing: an upgrade runs grants.sql again."""
    for path in (ROLES_SQL, GRANTS_SQL):
        code = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("--")]
        assert not any(line.lstrip().startswith("\\") for line in code), path
        assert not re.search(r"PASSWORD\s+'", "\n".join(code), re.I), "no password in it"
    psql(roles.server.url(roles.database), ROLES_SQL)
    migrate_as_owner(roles, make_config)
    before = _privileges(roles)
    psql(roles.owner, GRANTS_SQL)
    assert _privileges(roles) == before and before


def test_the_roles_own_and_may_what_the_file_says(roles: Roles) -> None:
    with roles.connect(roles.server.url(roles.database)) as conn:
        owner, = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database"
                              " WHERE datname = current_database()").fetchone() or ("",)
        assert owner == OWNER
        for role in (OWNER, APP):
            flags = conn.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,"
                " rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            assert flags == (False, False, False, False, False, True), role
        may = conn.execute(
            "SELECT has_database_privilege(%s, current_database(), 'CONNECT'),"
            " has_database_privilege(%s, current_database(), 'TEMPORARY'),"
            " has_database_privilege(%s, current_database(), 'CREATE'),"
            " has_schema_privilege(%s, 'public', 'USAGE'),"
            " has_schema_privilege(%s, 'public', 'CREATE')", (APP,) * 5).fetchone()
        assert may == (True, True, False, True, False)
        # PUBLIC (any other role of the cluster) may not even connect.
        assert conn.execute("SELECT has_database_privilege('public', current_database(),"
                            " 'CONNECT')").fetchone() == (False,)


def test_the_compose_init_sets_the_passwords_from_the_environment(roles: Roles) -> None:
    """passwords.psql, as the postgres image runs it after roles.sql (deploy/compose.yaml):
    the passwords from the environment; one missing stops it."""
    database = roles.server.url(roles.database)
    given = {"OWNER_DB_PASSWORD": secrets.token_urlsafe(18),
             "APP_DB_PASSWORD": secrets.token_urlsafe(18)}
    psql(database, PASSWORDS_PSQL, given)
    for role, variable in ((OWNER, "OWNER_DB_PASSWORD"), (APP, "APP_DB_PASSWORD")):
        url = _role_url(roles.server, role, given[variable], roles.database)
        with roles.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
    missing = psql(database, PASSWORDS_PSQL, {"OWNER_DB_PASSWORD": "x"}, check=False)
    assert missing.returncode != 0 and "syntax error" in missing.stderr
    with roles.connect(_role_url(roles.server, OWNER, given["OWNER_DB_PASSWORD"],
                                 roles.database)):
        pass  # the failed run changed neither password (one transaction)


# -- the application role at work ------------------------------------------------------------


def test_the_app_role_cannot_migrate_and_waits_for_the_owner(
        roles: Roles, make_config: ConfigMaker) -> None:
    """A database nobody migrated: to the application role the ledger is unavailable (the
    site's 503, the gateway's held rejections), with what to do, and nothing is created;
    once the owner has migrated and granted, the same ledger works by itself."""
    pending = (rf"{len(schema_postgres.MIGRATIONS)} migration\(s\) to apply \(0001_offers, "
               r".*may not apply them "
               r".*as the database's owner")
    with pytest.raises(LedgerUnavailable, match=pending):
        open_shared(roles.app)
    assert _tables(roles) == []
    with open_shared(roles.app, wait=False, hash_key=HASH_KEY) as ledger:  # a host started
        with pytest.raises(LedgerUnavailable, match=pending):
            ledger.record_offer("acme", "<m@acme.example>", "c@example.net")
        assert _tables(roles) == []
        migrate_as_owner(roles, make_config)
        offer = ledger.record_offer("acme", "<m@acme.example>", "c@example.net")
        assert ledger.offer(offer.id) == offer


def test_the_app_role_does_the_ledgers_work(roles: Roles, make_config: ConfigMaker,
                                            tmp_path: Path) -> None:
    migrate_as_owner(roles, make_config)
    pending: list[list[str]] = []
    open_shared(roles.app, on_migrate=pending.append, hash_key=HASH_KEY).close()
    assert pending == []  # an already migrated database opens with nothing to apply

    world = World(tmp_path, credit_every=2, url=roles.app)
    ledger, store, consents = world.ledger, world.store, world.consents
    try:
        heard = ledger.data_version()  # LISTEN, as the site's page cache does
        # The gateway: offers in a batch, counters.
        ledger.record_rejections([Rejection("acme", "<batch@acme.example>", (
            ("b1@example.net", "id-b1-0123456789"), ("b2@example.net", "id-b2-0123456789")))])
        for kind in ("rejections", "not_injected", "unmarked_rejections"):
            ledger.count("acme", kind)
        assert ledger.counts("acme", world.now.date())["rejections"] == 2
        # Candidates: views, notices, accepts (one held for review), a decline.
        offers = [world.offer(f"cand{i}@example.net") for i in range(5)]
        consents.view(offers[0])
        consents.view(offers[0])  # the first view stays
        receipts = [world.accept(o) for o in offers[:4]]
        world.decline(offers[4])
        held = world.accept(world.offer("scan@example.net"), ua="python-requests/2.31")
        rejected = world.accept(world.offer("scan2@example.net"), ua="HeadlessChrome/120")
        store.review(held.id, approve=True, by="ops")  # the outbox row released
        store.review(rejected.id, approve=False, by="ops")  # settled: out of the outbox
        # The agency: one failure and a retry, then deliveries that mint credits.
        world.tick(1)
        first = store.claim_due(1, 60)
        assert first
        store.failed(first[0].id, "503 from the agency", retry_in=0)
        assert world.deliver() == 5
        assert [c["n"] for c in world.book.credits("acme")] == [1, 2]
        # A withdrawal and an erasure (profiles and payloads erased).
        world.withdraw(offers[1])
        world.tick()
        consents.erase(offers[2], "ja", Client(IPHONE, "198.51.100.7"))
        world.deliver()
        assert store.profile(receipts[2].id) is None
        # A free referral asked of the agency (0015): its notice failed once, then taken;
        # the agency cancels it, which frees the credit for the redemptions below.
        asked = Referrals(ledger).request("acme", "default", "ops", "a referral")
        notices = Notices(ledger)
        (notice,) = notices.claim_due(5, 60, ["default"])
        notices.failed(notice.id, "503 from the agency", retry_in=0)
        notices.delivered(notice.id, "200")
        Referrals(ledger).settle_request(asked.id, "default", "cancelled", "none suitable")
        # A redemption; then none left but one.
        Book(ledger).redeem("acme", "ops", "a free referral")
        Book(ledger).redeem("acme", "ops")
        with pytest.raises(NoCreditAvailable):
            Book(ledger).redeem("acme", "ops")
        # Reads: the report (its julianday function), the admin lists, the metrics.
        when = reports.period(None, None, world.now.date())
        (report,) = reports.report(ledger, ["acme"], when, 2, details=True)
        assert report["qualified_forwards"] == 5 and report["credits_redeemed"] == 2
        assert report["decision_hours"]["decided"] >= 5
        assert records.forwards(ledger, "acme", when)
        assert records.held(ledger, "acme") == []
        assert totals.totals(ledger)
        # Admin logins and their sessions.
        users = AdminUsers(ledger)
        user = users.add("Ops@Acme.example", "a long enough password", None)
        assert check_password(users.find("ops@acme.example"), "a long enough password") == user
        token = users.start_session(user)
        assert users.session(token) == user
        users.end_session(token)
        users.start_session(user)
        assert users.revoke_sessions("ops@acme.example") == 1
        users.start_session(user)
        assert users.set_password("ops@acme.example", "another long password") == 1  # reset
        found = users.find("ops@acme.example")
        assert check_password(found, "another long password") is not None
        assert check_password(found, "a long enough password") is None
        assert users.remove("ops@acme.example") and users.users() == []
        # Retention, years later: a dry run (a temporary table), then the purge.
        world.tick(4 * 366 * 86400)
        policy = retention.Policy(90)
        would = retention.purge(ledger, ledger.rules, policy, dry_run=True)
        done = retention.purge(ledger, ledger.rules, policy)
        assert done == would and done.total > 0
        assert retention.purge(ledger, ledger.rules, policy).total == 0
        assert all(r[0].startswith("erased:") for r in world.rows("SELECT recipient FROM offers"))
        # The chain and every row it vouches for, and another host heard the changes.
        count, problem = Book(ledger).verify()
        assert problem is None and count == world.rows("SELECT COUNT(*) FROM entries")[0][0]
        wait_until(lambda: ledger.data_version() != heard, what="a NOTIFY heard")
    finally:
        ledger.close()
    config = make_config(secrets=SECRETS)
    verified = run_cli("ledger", "verify", "--config", str(config),
                       env={"CAREER_RELAY_LEDGER_URL": roles.app})
    assert verified.returncode == 0, verified.stderr
    assert f"ledger ok: {count} entries" in verified.stdout


def test_a_dump_restores_and_the_agencys_head_tells_what_it_lost(
        roles: Roles, make_config: ConfigMaker, tmp_path: Path) -> None:
    """docs/deploy.md, "Backups": ``pg_dump -Fc`` as the owner while the hosts write;
    ``pg_restore --no-owner --no-privileges`` as the owner into a database roles.sql made,
    then grants.sql; ``ledger verify --head`` with the highest head the agency received
    names the entries an older dump lacks."""
    migrate_as_owner(roles, make_config)
    world = World(tmp_path, credit_every=2, url=roles.app)
    try:
        world.qualified_then_deliver(3)
        dumped = world.book.head()
        dump = tmp_path / "career-relay.dump"
        done = subprocess.run([str(find_bindir() / "pg_dump"), "-Fc", "-d", roles.owner,
                               "-f", str(dump)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        world.qualified_then_deliver(2, start=3)  # after the dump: the agency has these
        later = world.book.head()
    finally:
        world.ledger.close()
    target = roles.server.create_database()
    try:
        psql(roles.server.url(target), ROLES_SQL)
        owner = roles.owner.rsplit("/", 1)[0] + f"/{target}"
        done = subprocess.run([str(find_bindir() / "pg_restore"), "--no-owner",
                               "--no-privileges", "--exit-on-error", "-d", owner, str(dump)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        psql(owner, GRANTS_SQL)
        config = make_config(secrets=SECRETS)
        app = {"CAREER_RELAY_LEDGER_URL": roles.app.rsplit("/", 1)[0] + f"/{target}"}
        ok = run_cli("ledger", "verify", "--head", dumped, "--config", str(config), env=app)
        assert ok.returncode == 0 and f"chain head {dumped}" in ok.stdout, ok.stderr
        lost = run_cli("ledger", "verify", "--head", later, "--config", str(config), env=app)
        assert lost.returncode == 1 and "the last entries were removed" in lost.stderr
    finally:
        roles.server.drop_database(target)


# -- what the application role may not do -----------------------------------------------------

REFUSED = [
    # The append-only tables, the triggers' business, refused by the privileges too.
    *[f"UPDATE {t} SET created = created" for t in APPEND_ONLY if t != "entries"],
    "UPDATE entries SET body = body", "UPDATE entries SET prev = prev",
    *[f"DELETE FROM {t}" for t in (*APPEND_ONLY, *CHAINED, "notices", "forward_events",
                                   "daily_counts", "offer_stats", "first_decisions",
                                   "offer_views", "meta", "career_relay_migrations")],
    *[f"TRUNCATE {t}" for t in (*APPEND_ONLY, *CHAINED, "outbox", "admin_users")],
    # The fixed columns of the chained rows (only their personal data may be erased).
    "UPDATE offers SET company = company", "UPDATE offers SET created = created",
    "UPDATE offers SET message_id = message_id", "UPDATE forwards SET kind = kind",
    "UPDATE forwards SET receipt_id = receipt_id", "UPDATE profiles SET receipt_id = receipt_id",
    "UPDATE notices SET text = text", "UPDATE forward_events SET event = event",
    "UPDATE offer_views SET first_viewed = first_viewed", "UPDATE meta SET value = value",
    "UPDATE admin_users SET password_hash = password_hash",
    "UPDATE admin_sessions SET expires = expires", "UPDATE outbox SET forward_id = forward_id",
    "INSERT INTO career_relay_migrations (name, applied) VALUES ('9999_x', '')",
    # Unused tables: nothing at all.
    "SELECT * FROM admin_login_failures", "INSERT INTO admin_lockouts VALUES ('a', 'b')",
    # The schema: the owner's alone.
    "DROP TABLE offers", "DROP TABLE entries CASCADE", "ALTER TABLE receipts ADD COLUMN x int",
    "ALTER TABLE entries DISABLE TRIGGER ALL", "ALTER TABLE entries ENABLE TRIGGER ALL",
    "DROP TRIGGER entries_no_update ON entries", "ALTER TABLE offers OWNER TO career_relay_app",
    "CREATE TABLE x (a int)", "CREATE INDEX x ON offers (job)",
    "CREATE OR REPLACE FUNCTION career_relay_refuse() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN RETURN NEW; END $$",
    "SET ROLE career_relay_owner",
]


def _disable_every_trigger(roles: Roles) -> None:
    with roles.connect(roles.owner) as conn:
        for table in _tables(roles):
            conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(
                sql.Identifier(table)))


def test_the_app_role_is_refused_by_privileges_with_the_triggers_gone(
        roles: Roles, make_config: ConfigMaker, tmp_path: Path) -> None:
    migrate_as_owner(roles, make_config)
    world = World(tmp_path, credit_every=1, url=roles.app)
    try:
        world.qualified_then_deliver(2)
        Book(world.ledger).redeem("acme", "ops")
        world.store.review(world.accept(world.offer("x@example.net"), ua="curl/8").id,
                           approve=True, by="ops")
    finally:
        world.ledger.close()
    _disable_every_trigger(roles)
    with roles.connect(roles.owner) as conn, conn.transaction(force_rollback=True):
        # The triggers are really gone: the owner could change an entry and a receipt now.
        assert conn.execute("UPDATE entries SET body = body").rowcount > 0
        assert conn.execute("UPDATE receipts SET decision = 'decline'").rowcount > 0
        assert conn.execute("DELETE FROM redemptions").rowcount > 0
    refused: list[str] = []
    with roles.connect(roles.app) as conn:
        for statement in REFUSED:
            try:
                conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                refused.append(statement)
    assert refused == REFUSED
    with roles.connect(roles.owner) as conn:
        rows = {t: conn.execute(sql.SQL("SELECT COUNT(*) FROM {}").format(
            sql.Identifier(t))).fetchone() for t in (*APPEND_ONLY, *CHAINED)}
    assert all(n != (0,) for n in rows.values()), rows  # every table still has its rows


def test_a_missing_grant_is_unavailable_not_a_bug(roles: Roles, make_config: ConfigMaker,
                                                  tmp_path: Path) -> None:
    """A statement the role may not run (grants.sql not applied after an upgrade) is
    ``LedgerUnavailable``: the site's 503, the gateway's held rejection."""
    migrate_as_owner(roles, make_config)
    with open_shared(roles.app, hash_key=HASH_KEY) as ledger:
        offer = ledger.record_offer("acme", "<m@acme.example>", "c@example.net")
        with roles.connect(roles.owner) as conn:
            conn.execute(f"REVOKE SELECT ON offers FROM {APP}")
        with pytest.raises(LedgerUnavailable, match=r"permission denied for table offers.*"
                           r"apply deploy/postgres/grants\.sql as the owner"):
            ledger.offer(offer.id)
        psql(roles.owner, GRANTS_SQL)
        assert ledger.offer(offer.id) == offer


def test_a_role_that_may_not_settle_is_unavailable_before_it_writes(
        roles: Roles, make_config: ConfigMaker) -> None:
    """Each write waits for its commit to reach the disk through a logical message
    (``SETTLE``).  A server hardened by revoking that function from PUBLIC still lets
    the application (roles.sql grants it by name); without that grant too, the ledger is
    unavailable at its first use, before anything is written, never a write that commits
    and then reports failure (attack review: an API key made that way was listed, its
    secret never shown)."""
    migrate_as_owner(roles, make_config)
    emit = "pg_catalog.pg_logical_emit_message(boolean, text, text)"
    with roles.server.connect(roles.database) as conn:
        conn.execute(f"REVOKE EXECUTE ON FUNCTION {emit} FROM PUBLIC")
    with open_shared(roles.app, hash_key=HASH_KEY) as ledger:
        ledger.record_offer("acme", "<granted@acme.example>", "c@example.net")
    with roles.server.connect(roles.database) as conn:
        conn.execute(f"REVOKE EXECUTE ON FUNCTION {emit} FROM {APP}")
    with pytest.raises(LedgerUnavailable, match="may not execute pg_logical_emit_message"):
        open_shared(roles.app, hash_key=HASH_KEY)  # a host starting: refused at once
    with open_shared(roles.app, hash_key=HASH_KEY, wait=False) as ledger:  # or started away
        with pytest.raises(LedgerUnavailable, match="may not execute pg_logical_emit_message"):
            ledger.record_offer("acme", "<refused@acme.example>", "c@example.net")
        with roles.connect(roles.owner) as conn:
            assert conn.execute("SELECT message_id FROM offers").fetchall() == [
                ("<granted@acme.example>",)]
        psql(roles.server.url(roles.database), ROLES_SQL)  # the grant, by name, again
        ledger.record_offer("acme", "<again@acme.example>", "c@example.net")
    with roles.server.connect(roles.database) as conn:
        conn.execute(f"GRANT EXECUTE ON FUNCTION {emit} TO PUBLIC")


def test_the_gateway_holds_a_rejection_until_the_grant_is_there(
        roles: Roles, make_config: ConfigMaker, sink: Sink,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the translation a permission error would be taken for a bug on a hostile
    message and the rejection relayed without its links (``gateway.on_error = "pass"``)."""
    from gateway import delivery, pipeline
    from tests.test_ledger_away import LINK, _held, send
    from tests.test_rejection import rejection

    monkeypatch.setattr(delivery, "HELD_RETRY", 0.2)
    monkeypatch.setattr(pipeline, "LEDGER_AWAY_SECONDS", 0.3)
    migrate_as_owner(roles, make_config)
    with roles.connect(roles.owner) as conn:
        conn.execute(f"REVOKE INSERT ON offers FROM {APP}")
    config = make_config(upstream_port=sink.port, site={"public_url": "http://consent.test"},
                         ledger={"url": roles.app}, secrets=SECRETS,
                         companies=[{"id": "acme", "name": "株式会社アクメ",
                                     "domains": ["acme.example"],
                                     "allow_ips": ["127.0.0.1/32"]}])
    gw = GatewayThread(config).start()
    try:
        queue_id = send(gw.port, rejection("<grant@acme.example>"), ["g@example.net"])
        assert _held(gw) == [queue_id] and sink.messages == []
        psql(roles.owner, GRANTS_SQL)
        (got,) = sink.wait_for(1)
        wait_until(lambda: gw.queue_ids() == [], what="an empty queue")
    finally:
        gw.stop()
    assert LINK.search(got.data) and got.rcpts == ["g@example.net"]


# -- the grants against the code ----------------------------------------------------------------


def _privileges(roles: Roles) -> dict[str, set[str]]:
    """What the application role may do, per table: SELECT, INSERT, DELETE, TRUNCATE, ...
    and UPDATE(column) for each column it may update."""
    found: dict[str, set[str]] = {}
    with roles.connect(roles.owner) as conn:
        for table, privilege in conn.execute(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants"
                " WHERE grantee = %s AND table_schema = 'public'", (APP,)):
            found.setdefault(str(table), set()).add(str(privilege))
        for table, column in conn.execute(
                "SELECT table_name, column_name FROM information_schema.column_privileges"
                " WHERE grantee = %s AND table_schema = 'public' AND privilege_type = 'UPDATE'",
                (APP,)):
            found.setdefault(str(table), set()).add(f"UPDATE({column})")
    return found


def _sql_texts(path: Path) -> list[str]:
    """Every string in a module, f-strings with their fields as ``{name}``."""
    texts: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            texts.append("".join(str(v.value) if isinstance(v, ast.Constant)
                                 else ast.unparse(v) for v in node.values))  # "{kind}"
    return texts


_UPSERT = re.compile(r"INSERT INTO (\w+).*?DO UPDATE SET (.*?)(?:\bWHERE\b|\bRETURNING\b|;|$)",
                     re.S)
_UPDATE = re.compile(r"\bUPDATE (\w+)(?: (?!SET\b)\w+)? SET (.*?)(?:\bWHERE\b|\bFROM\b|;|$)",
                     re.S)
_DELETE = re.compile(r"\bDELETE FROM (\w+)")


def _assigned(set_list: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"(?:^|,)\s*(\{?\w+\}?)\s*=", set_list)}


def _needed() -> dict[str, set[str]]:
    """The UPDATE(column)s and DELETEs the ledger's statements need: every module of
    career_relay/ledger/ but the migrations, and the triggers that run as the inserting
    role (0007's offer_stats and first_decisions, 0017's outcome_candidates)."""
    texts = [t for path in sorted((REPO / "career_relay" / "ledger").glob("*.py"))
             if not path.name.startswith(("schema_", "migrations")) for t in _sql_texts(path)]
    texts.append(later._DERIVED_TRIGGERS)
    texts.append(schema_outcome_candidates.TRIGGERS)
    # api_keys.Keys names its table by its subclass's TABLE ({self.TABLE}): one text each.
    texts = [t.replace("{self.TABLE}", keys.TABLE) for t in texts
             for keys in ((ApiKeys, AgencyKeys) if "{self.TABLE}" in t else (ApiKeys,))]
    needed: dict[str, set[str]] = {}
    for text in texts:
        for table, set_list in _UPSERT.findall(text):
            needed.setdefault(table, set()).update(f"UPDATE({c})" for c in _assigned(set_list))
        for table, set_list in _UPDATE.findall(_UPSERT.sub("", text)):
            needed.setdefault(table, set()).update(f"UPDATE({c})" for c in _assigned(set_list))
        for table in _DELETE.findall(text):
            needed.setdefault(table, set()).add("DELETE")
    # daily_counts' upserts name their column by COUNTER_KINDS ({kind}).
    counts = needed.get("daily_counts", set())
    if "UPDATE({kind})" in counts:
        counts.discard("UPDATE({kind})")
        counts.update(f"UPDATE({k})" for k in COUNTER_KINDS)
    return needed


def test_the_code_needs_exactly_the_updates_and_deletes_granted(
        roles: Roles, make_config: ConfigMaker) -> None:
    needed = _needed()
    assert needed["outbox"] >= {"DELETE", "UPDATE(claimed_until)", "UPDATE(held)"}  # found
    assert needed["offer_stats"] == {"UPDATE(offers)", "UPDATE(accepted)"}
    migrate_as_owner(roles, make_config)
    granted = {t: {p for p in ps if p.startswith(("UPDATE(", "DELETE"))}
               for t, ps in _privileges(roles).items()}
    granted = {t: ps for t, ps in granted.items() if ps}
    assert granted == needed
    privileges = _privileges(roles)
    for table, ps in privileges.items():  # never a whole-table UPDATE, never these
        assert not ps & {"UPDATE", "TRUNCATE", "REFERENCES", "TRIGGER"}, (table, ps)
    for table in (*APPEND_ONLY, "credit_requests", "credit_request_states"):
        assert privileges[table] == {"SELECT", "INSERT"}, table


def test_grants_sql_names_every_table_the_migrations_make(
        roles: Roles, make_config: ConfigMaker) -> None:
    """A migration that adds a table must say in grants.sql what the application may do
    with it (a comment will do for none)."""
    migrate_as_owner(roles, make_config)
    text = GRANTS_SQL.read_text(encoding="utf-8")
    tables = _tables(roles)
    assert len(tables) == 30  # outcomes (0014); three of 0015; outcome_candidates (0017)
    assert [t for t in tables if not re.search(rf"\b{t}\b", text)] == []


def test_the_app_role_keeps_the_agencies_keys(roles: Roles, make_config: ConfigMaker) -> None:
    """agency-key create, check and revoke as career_relay_app (0012's grants); the role may
    not change the agency a forward goes to, even with the trigger gone."""
    migrate_as_owner(roles, make_config)
    with open_shared(roles.app, hash_key=HASH_KEY) as ledger:
        keys = AgencyKeys(ledger)
        made, key = keys.create("north", "pull")
        assert keys.check(key) is not None and ApiKeys(ledger).check(key) is None
        assert keys.revoke(made.id) is not None and keys.check(key) is None
    with roles.connect(roles.owner) as conn:
        conn.execute("ALTER TABLE forwards DISABLE TRIGGER USER")
    with roles.connect(roles.app) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE forwards SET agency = 'south'")
