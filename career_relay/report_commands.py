"""``career-relay report`` (SPEC 2, 8): the ledger report as a table, CSV or JSON, and the
yearly human-capital report as HTML or PDF (``career_relay.yearly_report``).

``--year Y`` is the period 1 January to 31 December of Y (UTC days), for every format.
``html`` and ``pdf`` are one company's yearly report: they need ``--company`` and
``--year`` (exit 2 without them: several companies' reports in one file would be read as
one company's).  ``--output FILE`` writes the result there instead of stdout; a PDF is
never written to a terminal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from career_relay import ledger_commands
from career_relay.errors import CareerRelayError, UserError
from career_relay.ledger import reports
from career_relay.settings import Settings

FORMATS = ("table", "csv", "json", "html", "pdf")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``report`` command's arguments (``cli._parser``)."""
    p.add_argument("--company", help="one company (default: every configured company; "
                   "html and pdf need it)")
    p.add_argument("--since", type=_date, help="first day, YYYY-MM-DD (UTC)")
    p.add_argument("--until", type=_date, help="last day, YYYY-MM-DD (UTC; default: today)")
    p.add_argument("--year", type=int, metavar="YYYY", help="the calendar year (UTC days), "
                   "instead of --since and --until; html and pdf need it")
    p.add_argument("--format", choices=FORMATS, default="table", help="table, csv, json: the "
                   "ledger report (SPEC 8); html, pdf: the yearly human-capital report")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(usage_problem=_usage)


def _usage(args: argparse.Namespace) -> str:
    if args.year is not None and (args.since or args.until):
        return "report --year takes no --since or --until (it is 1 January to 31 December)"
    if args.format in ("html", "pdf"):
        if args.year is None:
            return f"report --format {args.format} needs --year YYYY (the yearly report)"
        if not args.company:
            return f"report --format {args.format} needs --company ID (one company's report)"
    return ""


def referral_values(settings: Settings) -> dict[str, int]:
    """``companies.referral_value`` of each company, for the report's ``recovered_value``."""
    return {c.id: c.referral_value for c in settings.companies}


def cmd_report(args: argparse.Namespace) -> int:
    from career_relay.ledger import open_configured

    settings = ledger_commands.load(args)
    companies = [c.id for c in settings.companies]
    if args.company:
        if args.company not in companies:
            raise CareerRelayError(f"no company {args.company!r} in the configuration "
                                   f"(known: {', '.join(companies) or 'none'})")
        companies = [args.company]
    if args.format in ("html", "pdf"):
        return _yearly(args, settings)
    if args.year is not None:
        when = _year(args.year)
    else:
        try:
            when = reports.period(args.since, args.until, dt.datetime.now(dt.UTC).date())
        except reports.PeriodError as exc:  # names the field: "until: the year must be ..."
            raise UserError(str(exc)) from None
    with open_configured(settings) as ledger:
        rows = reports.report(ledger, companies, when, settings.ledger.credit_every,
                              details=args.format == "json",
                              referral_values=referral_values(settings))
    from career_relay import report_format

    _write(args.output, report_format.render(rows, args.format).encode("utf-8"))
    return 0


def _year(year: int) -> reports.Period:
    from career_relay.yearly_report import year_period

    try:
        return year_period(year)
    except reports.PeriodError as exc:
        raise UserError(str(exc)) from None


def _yearly(args: argparse.Namespace, settings: Settings) -> int:
    from career_relay import yearly_report
    from career_relay.ledger import open_configured

    _year(args.year)  # a year no report can count in: one line, before opening anything
    if args.format == "pdf" and not args.output and sys.stdout.isatty():
        raise UserError("report --format pdf writes a binary file: give --output FILE "
                        "(or redirect stdout)")
    with open_configured(settings) as ledger:
        built = yearly_report.build(ledger, settings, args.company, args.year,
                                    dt.datetime.now(dt.UTC))
    html = yearly_report.render_html(built)
    if args.format == "html":
        _write(args.output, html.encode("utf-8"))
        return 0
    from career_relay.pdf import html_to_pdf

    _write(args.output, html_to_pdf(html, settings.site.chromium, settings.site.pdf_timeout))
    return 0


def _write(output: str | None, body: bytes) -> None:
    if output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    try:
        Path(output).write_bytes(body)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
    print(f"wrote {output}", file=sys.stderr)
