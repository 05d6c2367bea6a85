"""``career-relay credits`` (SPEC 2, 11): ``redeem`` records a referral delivered outside the
system; ``request`` asks the company's agency for the referral a credit is worth;
``requests`` lists the requests with their states and dates.

Each exits 0, or raises a ``CareerRelayError`` that ``cli.main`` prints as one line
naming the problem (an unknown company, no unspent credit, a request already open) and
exits 1.
"""

from __future__ import annotations

import argparse
import json

from career_relay import ledger_commands
from career_relay.errors import CareerRelayError
from career_relay.settings import CompanySettings, Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``credits`` command's arguments (``cli._parser``)."""
    p.add_argument("action", choices=["redeem", "request", "requests"])
    p.add_argument("--company", metavar="ID", help="redeem, request: whose credit (required); "
                   "requests: only this company's")
    p.add_argument("--credit", metavar="ID", help="request: this credit (default: the oldest "
                   "unspent credit with no open request)")
    p.add_argument("--note", default="", help="redeem: what it was used for; request: what "
                   "the company asks for (no candidate's data)")
    p.add_argument("--by", default="operator", help="who redeemed or asked (default: operator)")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="requests: a line each, or JSON")
    p.set_defaults(usage_problem=_usage)


def _usage(args: argparse.Namespace) -> str:
    if args.action in ("redeem", "request") and not args.company:
        return f"credits {args.action} needs --company ID"
    if args.credit and args.action != "request":
        return f"credits {args.action} takes no --credit (credits request does)"
    return ""


def _company(settings: Settings, company_id: str) -> CompanySettings:
    company = settings.company(company_id)
    if company is None:
        raise CareerRelayError(f"no company {company_id!r} in the configuration")
    return company


def cmd_credits(args: argparse.Namespace) -> int:
    from career_relay.ledger import Book, Referrals, open_configured

    settings = ledger_commands.load(args)
    company = _company(settings, args.company) if args.company else None
    with open_configured(settings) as ledger:
        if args.action == "redeem":
            assert company is not None
            credit = Book(ledger).redeem(company.id, by=args.by, note=args.note)
            print(f"redeemed credit {credit} of {company.id}")
            return 0
        referrals = Referrals(ledger)
        if args.action == "request":
            assert company is not None
            asked = referrals.request(company.id, company.agency, args.by, args.note,
                                      company_name=company.name, credit=args.credit)
            print(f"requested {asked.id}: credit {asked.credit_id} of {company.id}, asked of "
                  f"agency {asked.agency} (it is told by a credit_request notice)")
            return 0
        listed = referrals.requests(company.id if company else None)
    if args.format == "json":
        print(json.dumps([q.as_json() for q in listed], ensure_ascii=False, indent=2))
        return 0
    for q in listed:
        settled = f"  {q.state} {q.settled}" if q.settled else ""
        print(f"{q.id}  {q.company}  {q.credit_id}  agency {q.agency}  {q.state}  "
              f"requested {q.requested}{settled}  {q.note}".rstrip())
    print(f"{len(listed)} request(s)")
    return 0
