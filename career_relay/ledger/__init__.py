"""The ledger (SPEC 8): offers, consent, forwards, credits, the hash chain, reports.

This package is the only place with SQL.  Outside it, code imports what is
named here and nothing else (``tests/test_house.py`` keeps it so):

- ``open_configured(settings)`` opens the one ``Ledger`` a process holds (the
  site shares it between candidate pages, admin pages, the forwarding
  worker and the page cache); ``Ledger`` records offers and counters, and
  ``ConsentLedger``, ``Outbox``, ``Book``, ``Referrals``, ``Notices``, ``AdminUsers``,
  ``ApiKeys``, ``AgencyKeys`` and ``Outcomes`` are the views of the consent side, the
  agencies' outbox, the credits, the free referral requests, the agencies' notices, the
  admin logins, the company API's keys, the agencies' keys and the agencies' feed and
  outcomes over it;
- ``reports``, ``records``, ``retention`` and ``totals`` are the named
  queries of the report, the admin pages, ``ledger purge`` and the metrics.

Modules by concept: ``store`` (connections, transactions), ``connect``
(opening, migrating), ``migrations`` and ``schema_sqlite``, ``offers``,
``consent``, ``forwards``, ``credits`` (``mint_credit``), ``credit_requests``,
``agency_notices``, ``chain``, ``head``, ``verify_requests``,
``verify``, ``reports``, ``records``, ``retention``, ``totals``,
``admin_users``, ``api_keys``, ``api_offers``, ``writer`` (the gateway's group commit), ``copy``
(``ledger migrate``: a SQLite ledger copied to PostgreSQL).
"""

from __future__ import annotations

from career_relay.ledger import records, reports, retention, totals, yearly
from career_relay.ledger.admin_users import AdminUser, AdminUsers, check_password, normal_email
from career_relay.ledger.agency_notices import Notice, Notices
from career_relay.ledger.api_keys import AgencyKey, AgencyKeys, ApiKey, ApiKeys
from career_relay.ledger.api_offers import ApiOffers, ApiRequest
from career_relay.ledger.chain import DEFAULT_HASH_KEY, ERASED_PREFIX, Problem
from career_relay.ledger.connect import check_url, open_configured, open_ledger, open_shared
from career_relay.ledger.consent import ConsentLedger, Decision, Receipt
from career_relay.ledger.copy import DERIVED as DERIVED_TABLES
from career_relay.ledger.copy import CopyRefused, CopyResult, copy_to
from career_relay.ledger.credit_requests import NOTE_MAX, CreditRequest, Referrals
from career_relay.ledger.credits import Book, NoCreditAvailable
from career_relay.ledger.forwards import Forward, ForwardKind, ForwardStatus, Outbox
from career_relay.ledger.head import BadHead, format_head
from career_relay.ledger.head import parse as parse_head
from career_relay.ledger.migrations import MIGRATIONS
from career_relay.ledger.offers import (
    COUNTER_KINDS,
    OFFER_SOURCES,
    CounterKind,
    Ledger,
    Offer,
    OfferSource,
    Rejection,
)
from career_relay.ledger.outcomes import STATUSES as OUTCOME_STATUSES
from career_relay.ledger.outcomes import FeedItem, Outcome, OutcomeRefused, Outcomes, Place
from career_relay.ledger.rules import Rules, settings_hash_key
from career_relay.ledger.store import Clock, new_offer_id
from career_relay.ledger.writer import LedgerWriter
from career_relay.timestamps import parse_stamp, stamp

__all__ = [
    "COUNTER_KINDS",
    "DEFAULT_HASH_KEY",
    "DERIVED_TABLES",
    "ERASED_PREFIX",
    "MIGRATIONS",
    "NOTE_MAX",
    "OFFER_SOURCES",
    "OUTCOME_STATUSES",
    "AdminUser",
    "AdminUsers",
    "AgencyKey",
    "AgencyKeys",
    "ApiKey",
    "ApiKeys",
    "ApiOffers",
    "ApiRequest",
    "BadHead",
    "Book",
    "Clock",
    "ConsentLedger",
    "CopyRefused",
    "CopyResult",
    "CounterKind",
    "CreditRequest",
    "Decision",
    "FeedItem",
    "Forward",
    "ForwardKind",
    "ForwardStatus",
    "Ledger",
    "LedgerWriter",
    "NoCreditAvailable",
    "Notice",
    "Notices",
    "Offer",
    "OfferSource",
    "Outbox",
    "Outcome",
    "OutcomeRefused",
    "Outcomes",
    "Place",
    "Problem",
    "Receipt",
    "Referrals",
    "Rejection",
    "Rules",
    "check_password",
    "check_url",
    "copy_to",
    "format_head",
    "new_offer_id",
    "normal_email",
    "open_configured",
    "open_ledger",
    "open_shared",
    "parse_head",
    "parse_stamp",
    "records",
    "reports",
    "retention",
    "settings_hash_key",
    "stamp",
    "totals",
    "yearly",
]
