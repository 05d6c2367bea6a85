-- career-relay on PostgreSQL (SPEC 12): the database's two roles.  docs/deploy.md,
-- "More than one host", says when to run what.
--
--   career_relay_owner  owns the database, its schema and every table: it applies the
--                       migrations (a first start, an upgrade) and runs grants.sql.
--   career_relay_app    what the gateways, the sites and the commands connect as
--                       (ledger.url): it reads, appends, and changes only the columns the
--                       code changes (grants.sql); it cannot create, alter, drop or
--                       truncate anything, nor disable the append-only triggers.
--
-- Run once, as a superuser, connected to the ledger's database (created empty first),
-- then give both roles a password:
--
--   createdb career_relay
--   psql -v ON_ERROR_STOP=1 -d career_relay -f deploy/postgres/roles.sql
--   psql -d career_relay -c '\password career_relay_owner'
--   psql -d career_relay -c '\password career_relay_app'
--
-- It is plain SQL (no psql commands) and may be run again: it changes nothing twice.
-- PostgreSQL 14 or later.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'career_relay_owner') THEN
        CREATE ROLE career_relay_owner LOGIN
            NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'career_relay_app') THEN
        CREATE ROLE career_relay_app LOGIN
            NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
    -- This database (whatever its name): the owner's; nobody else may connect but the
    -- application, which may also make temporary tables (the retention purge does).
    EXECUTE format('ALTER DATABASE %I OWNER TO career_relay_owner', current_database());
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO career_relay_app',
                   current_database());
END
$$;

-- The tables live in the schema public: the owner's.  Before PostgreSQL 15 everyone may
-- create tables there; here nobody but the owner may, and the application only looks in.
ALTER SCHEMA public OWNER TO career_relay_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO career_relay_app;

-- Every write waits until its commit is on disk by writing a logical message
-- (career_relay/ledger/postgres.py, SETTLE).  PUBLIC may run that function by default;
-- granted by name, so a server hardened by revoking it from PUBLIC still lets the
-- application know its writes are durable (the application refuses to start without it).
GRANT EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(boolean, text, text)
    TO career_relay_app;
