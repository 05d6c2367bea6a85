-- career-relay on PostgreSQL (SPEC 12): what the application role may do to each table.
--
-- Run as career_relay_owner after every migration (the first start, every upgrade that
-- brings one), once roles.sql has made the roles; it may be run again at any time:
--
--   psql -v ON_ERROR_STOP=1 "postgresql://career_relay_owner@db.example/career_relay" \
--        -f deploy/postgres/grants.sql
--
-- Everything is revoked, then granted again, in one transaction: what is not below, the
-- application cannot do.  Each UPDATE and DELETE names the statements in
-- career_relay/ledger/ that need it (tests/test_postgres_roles.py runs the ledger's work
-- as career_relay_app and checks the refusals).  The append-only tables get SELECT and
-- INSERT only, so an UPDATE, DELETE or TRUNCATE on them is refused by the privileges even
-- where their triggers (which only the owner can drop or disable) were gone.  Identity
-- columns (rowid, admin_users.id) need no grant on their sequences.

BEGIN;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM career_relay_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM career_relay_app;

-- Append-only: read and append, never change.  entries is the hash chain; receipts,
-- reviews, qualified, credits and redemptions are what it vouches for; notices keeps the
-- text each candidate was shown; forward_events the history of each forward.
GRANT SELECT, INSERT ON entries, receipts, reviews, qualified, credits, redemptions,
    notices, forward_events TO career_relay_app;

-- Chained rows whose personal data retention erases (SPEC 9).  Only those columns:
--   offers     retention.purge: UPDATE offers SET candidate, recipient, erased (the
--              address replaced by erased:<id>); the accept trigger's FOR NO KEY UPDATE
--              lock of the offer needs UPDATE on a column too
--   profiles   consent erasure and retention: UPDATE profiles SET data = NULL, erased
--   forwards   consent erasure and retention: UPDATE forwards SET payload = NULL
-- No DELETE: an offer, a forward or a profile is never removed.
GRANT SELECT, INSERT ON offers, profiles, forwards TO career_relay_app;
GRANT UPDATE (recipient, candidate, erased) ON offers TO career_relay_app;
GRANT UPDATE (data, erased) ON profiles TO career_relay_app;
GRANT UPDATE (payload) ON forwards TO career_relay_app;

-- The outbox: claimed (claimed_until), retried (attempts, next_attempt), released by an
-- approval (held), and left by a delivery, a cancellation or a settled failure (DELETE).
GRANT SELECT, INSERT, DELETE ON outbox TO career_relay_app;
-- served: the page of the agency feed that gave a pulling agency the forward (0016_pulls).
GRANT UPDATE (attempts, next_attempt, claimed_until, held, served) ON outbox TO career_relay_app;

-- Counters kept by upserts (INSERT ... ON CONFLICT DO UPDATE): the gateway's daily
-- counts, and the report's offer_stats and first_decisions, which the triggers on
-- offers and receipts keep (they run as the role that inserts).
GRANT SELECT, INSERT ON daily_counts, offer_stats, first_decisions TO career_relay_app;
GRANT UPDATE (rejections, not_injected, unmarked_rejections) ON daily_counts
    TO career_relay_app;
GRANT UPDATE (offers, accepted) ON offer_stats TO career_relay_app;
GRANT UPDATE (hours) ON first_decisions TO career_relay_app;

-- A page's first view (INSERT ... ON CONFLICT DO NOTHING; a trigger fills company).
GRANT SELECT, INSERT ON offer_views TO career_relay_app;

-- Admin logins: users are added and removed (admin add-user, remove-user), sessions
-- started and ended (log in, log out, expired ones at the next login, revoke-sessions).
-- Never updated: admin reset-password replaces the row (delete, then insert).
GRANT SELECT, INSERT, DELETE ON admin_users, admin_sessions TO career_relay_app;

-- admin_login_failures and admin_lockouts (0005_admin) are not used by the code (failed
-- logins are throttled in the site's memory): nothing.

-- The company API's keys (SPEC 10): created (api-key create, the admin pages), read at
-- every API request, revoked (UPDATE api_keys SET revoked); never deleted.
GRANT SELECT, INSERT ON api_keys TO career_relay_app;
GRANT UPDATE (revoked) ON api_keys TO career_relay_app;

-- The agencies' keys (SPEC 11, 0012_agencies): the same, for agency-key create, list and
-- revoke and the agency API's check.  (forwards.agency needs nothing more: it is written
-- with its forward and never changed; its trigger and the absence of UPDATE refuse it.)
GRANT SELECT, INSERT ON agency_keys TO career_relay_app;
GRANT UPDATE (revoked) ON agency_keys TO career_relay_app;

-- What the company API knows of its offers (0013_api_offers): written with the offer, read when an
-- Idempotency-Key comes back and when an API offer is accepted; never changed.
GRANT SELECT, INSERT ON api_offers TO career_relay_app;

-- The outcomes an agency reports (SPEC 11, 0014_outcomes): append-only, each vouched for
-- by its chain entry.
GRANT SELECT, INSERT ON outcomes TO career_relay_app;

-- The candidates the outcome figures count (0017_outcome_candidates): derived, kept by the
-- triggers on forwards, forward_events and outcomes, which run as the role that inserts: a
-- row per consent forward, its latest status set by each outcome, deleted when the forward
-- is cancelled.
GRANT SELECT, INSERT, DELETE ON outcome_candidates TO career_relay_app;
GRANT UPDATE (status, at, rank, days) ON outcome_candidates TO career_relay_app;

-- Free referral requests (SPEC 11, 0015_credit_requests): asked (credits request, the
-- admin pages) and settled by the agency, each a chained row: read and append only, like
-- credits and redemptions.  agency_notices, the notices' outbox: claimed (claimed_until),
-- retried (attempts, next_attempt, detail), marked delivered (delivered); never deleted.
GRANT SELECT, INSERT ON credit_requests, credit_request_states TO career_relay_app;
GRANT SELECT, INSERT ON agency_notices TO career_relay_app;
GRANT UPDATE (attempts, next_attempt, claimed_until, delivered, detail) ON agency_notices
    TO career_relay_app;

-- meta: the hash key's fingerprint, written once by the first process that opens the
-- ledger (INSERT ... ON CONFLICT DO NOTHING), read by every other.
GRANT SELECT, INSERT ON meta TO career_relay_app;

-- The migrations applied: read at every open, to see that nothing is pending.  Only the
-- owner applies them.
GRANT SELECT ON career_relay_migrations TO career_relay_app;

COMMIT;
