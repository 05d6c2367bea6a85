"""The ledger's commands (SPEC 2): ledger verify/head, purge, review, admin
(``credits``: ``career_relay.credit_commands``; ``report``: ``career_relay.report_commands``).

``career_relay.cli`` parses the arguments; these open the configured ledger
and print.  Each exits 0, or raises a ``CareerRelayError`` that ``cli.main``
prints as one line and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from career_relay import settings as settings_mod
from career_relay.errors import CareerRelayError, ConfigError
from career_relay.settings import Settings
from career_relay.validate import file_problems


def load(args: argparse.Namespace) -> Settings:
    settings = settings_mod.load(settings_mod.config_path(args.config))
    problems = file_problems(settings)
    if problems:
        raise ConfigError(problems[0])
    return settings


def cmd_ledger(args: argparse.Namespace) -> int:
    """``ledger verify``: the chain, the rows it vouches for, the head file, and ``--head``
    (a head the agency received with a forward: the anchor a copy of our files cannot move).
    ``ledger migrate --to URL``: ``career_relay.ledger_migrate``."""
    from career_relay.ledger import Book, open_configured

    if args.action == "migrate":
        from career_relay import ledger_migrate

        return ledger_migrate.run(load(args), args.to)
    settings = load(args)
    if not settings.ledger.url and not Path(settings.ledger.path).exists():
        raise CareerRelayError(f"no ledger at {settings.ledger.path}")
    with open_configured(settings) as ledger:
        book = Book(ledger)
        count, problem = book.verify(args.head)
        head = book.head()
    if problem is not None:
        where = " at" if problem.seq else ":"  # a problem of no one entry (the head file)
        print(f"career-relay: ledger verify: FAILED{where} {problem}", file=sys.stderr)
        return 1
    print(f"ledger ok: {count} entries, chain head {head}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """Retention (SPEC 9): erase the personal data whose time is up; print what, by kind."""
    from career_relay.ledger import open_configured, retention

    settings = load(args)
    if not settings.ledger.url and not Path(settings.ledger.path).exists():
        raise CareerRelayError(f"no ledger at {settings.ledger.path}")
    policy = retention.Policy.from_settings(settings)
    with open_configured(settings) as ledger:
        purged = retention.purge(ledger, ledger.rules, policy,
                                 dry_run=args.dry_run)
    verb = "would erase" if args.dry_run else "erased"
    for label, count in purged.lines(policy):
        print(f"{count:8d}  {label}")
    print(f"{purged.total:8d}  in all ({verb}{'; nothing changed' if args.dry_run else ''})")
    return 0


# -- reviews -------------------------------------------------------------------------------


def cmd_review(args: argparse.Namespace) -> int:
    """Decisions held as possibly automated (SPEC 8): list them, approve or reject one.

    The admin pages do the same; this is the operator's way in until then and
    from a shell.  A running site's forwarding worker sends an approved
    forward within seconds.
    """
    from career_relay.errors import LedgerConflict
    from career_relay.ledger import ConsentLedger, open_configured

    settings = load(args)
    with open_configured(settings) as ledger:
        store = ConsentLedger(ledger)
        if args.action == "list":
            held = store.held()
            for r in held:
                print(f"{r.id}  {r.created:%Y-%m-%d %H:%M:%S}Z  {r.company}  {r.decision}  "
                      f"held: {r.review}")
            print(f"{len(held)} decision(s) held for review")
            return 0
        if not args.receipt:
            raise CareerRelayError(f"review {args.action} needs a receipt id "
                                   "(see `career-relay review list`)")
        receipt = store.receipt(args.receipt)
        if receipt is None or receipt.review is None:
            raise CareerRelayError(f"no decision held for review has receipt id {args.receipt}")
        try:
            store.review(receipt.id, approve=args.action == "approve", by=args.by)
        except LedgerConflict:
            raise CareerRelayError(f"{receipt.id} was already reviewed "
                                   f"({store.review_verdict(receipt.id)})") from None
    verb = "approved: its forward is released" if args.action == "approve" else (
        "rejected: its forward is cancelled")
    print(f"{receipt.id} {verb}")
    return 0


# -- admin logins ------------------------------------------------------------------------


def cmd_admin(args: argparse.Namespace) -> int:
    """Logins for the admin pages: an operator sees every company, a company's user its own."""
    from career_relay.ledger import AdminUsers, open_configured

    settings = load(args)
    if args.action == "remove-user":
        with open_configured(settings) as ledger:
            if not AdminUsers(ledger).remove(args.email):
                raise CareerRelayError(f"no admin login for {args.email}")
        print(f"admin login {args.email} removed, with its sessions")
        return 0
    if args.action == "revoke-sessions":
        with open_configured(settings) as ledger:
            ended = AdminUsers(ledger).revoke_sessions(None if args.all else args.email)
        print(f"{ended} admin session(s) ended")
        return 0
    if args.action == "reset-password":
        password = read_password(args.password_stdin, confirm=True)
        with open_configured(settings) as ledger:
            changed = AdminUsers(ledger).set_password(args.email, password)
        if changed is None:
            raise CareerRelayError(f"no admin login for {args.email}")
        print(f"admin login {args.email}: password changed; {changed} session(s) ended")
        return 0
    company = None if args.operator else args.company
    if company is not None and company not in [c.id for c in settings.companies]:
        raise CareerRelayError(f"no company {company!r} in the configuration")
    password = read_password(args.password_stdin)
    with open_configured(settings) as ledger:
        user = AdminUsers(ledger).add(args.email, password, company)
    print(f"admin login {user.email} created ({'operator' if user.operator else company})")
    return 0


def read_password(from_stdin: bool, *, confirm: bool = False) -> str:
    """The first line of stdin, or a prompt that does not echo (twice with ``confirm``: a
    typo in a new password would lock its owner out again)."""
    import getpass

    password = sys.stdin.readline().rstrip("\n") if from_stdin else getpass.getpass()
    if not password:
        raise CareerRelayError("the password must not be empty")
    if confirm and not from_stdin and getpass.getpass("Again: ") != password:
        raise CareerRelayError("the two passwords differ; nothing changed")
    return password


# -- the company API's keys ------------------------------------------------------------------


def cmd_api_key(args: argparse.Namespace) -> int:
    """SPEC 10: ``create`` prints the key once, on a line of its own (only its hash is
    kept); ``list`` the keys (never the secret); ``revoke KEY_ID``."""
    from career_relay.ledger import ApiKeys

    settings = load(args)
    return _keys(args, settings, ApiKeys, "API key", "api-key", "company",
                 lambda owner: settings.company(owner) is not None)


def cmd_agency_key(args: argparse.Namespace) -> int:
    """SPEC 11: an agency's API keys, as ``api-key`` does a company's: ``create`` prints the
    key once (only its hash is kept), ``list`` (never the secret), ``revoke KEY_ID``."""
    from career_relay.ledger import AgencyKeys

    settings = load(args)
    return _keys(args, settings, AgencyKeys, "agency key", "agency-key", "agency",
                 lambda owner: settings.agency_by_id(owner) is not None)


def _keys(args: argparse.Namespace, settings: Settings, kind: Any, label: str, command: str,
          owner_kind: str, known: Callable[[str], bool]) -> int:
    """``create``, ``list`` or ``revoke`` the keys of ``kind`` (``ApiKeys``, ``AgencyKeys``),
    whose owner (``args.company`` or ``args.agency``) is a ``owner_kind``."""
    from career_relay.ledger import open_configured

    owner: str | None = getattr(args, owner_kind, None)
    with open_configured(settings) as ledger:
        keys = kind(ledger)
        if args.action == "create":
            if owner is None or not known(owner):
                raise CareerRelayError(f"no {owner_kind} {owner!r} in the configuration")
            made, secret = keys.create(owner, args.name)
            print(f"{label} {made.id} of {made.owner} created; it is shown once, here, "
                  "and only its hash is kept:", file=sys.stderr)
            print(secret)
            return 0
        if args.action == "list":
            listed = keys.list(owner)
            for k in listed:
                state = f"revoked {k.revoked}" if k.revoked else "active"
                print(f"{k.id}  {k.owner}  {k.created}  {state}  {k.shown_name}".rstrip())
            print(f"{len(listed)} {label}(s)", file=sys.stderr)
            return 0
        found = keys.revoke(args.key_id)
    if found is None:
        raise CareerRelayError(f"no {label} {args.key_id} (see `career-relay {command} "
                               "list`)")
    print(f"{label} {found.id} of {found.owner} revoked ({found.revoked})")
    return 0
