"""`career-relay`: the command line.

Parses arguments and calls the core; ``career_relay.serve`` runs the
processes.  Every command exits 0 on success, 1 with a one-line message on a
user error, 2 on bad usage (SPEC 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

from career_relay import __version__, credit_commands, ledger_commands, report_commands, serve
from career_relay import settings as settings_mod
from career_relay.errors import CareerRelayError, ConfigError
from career_relay.validate import file_problems, value_problems

log = logging.getLogger("career_relay")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    usage = getattr(args, "usage_problem", None)
    if usage is not None and usage(args):
        parser.error(usage(args))  # exit 2, as for any other bad usage
    try:
        code: int = args.func(args)
        return code
    except CareerRelayError as exc:
        print(f"career-relay: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


_load = ledger_commands.load


# -- running ---------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    return serve.run(_load(args), smtp=True, site=True, worker=args.worker,
                supervisor=args.supervisor)


def cmd_gateway(args: argparse.Namespace) -> int:
    return serve.run(_load(args), smtp=True, site=False, worker=args.worker,
                supervisor=args.supervisor)


def cmd_site(args: argparse.Namespace) -> int:
    return serve.run(_load(args), smtp=False, site=True, worker=0)


def cmd_init(args: argparse.Namespace) -> int:
    from career_relay.invocation import command
    from career_relay.starter import write_starter

    started = write_starter(Path(args.dir), demo=args.demo)
    print(f"wrote {started.config}")
    print(f"SMTP login for the example company: {started.smtp_username} / "
          f"{started.smtp_password}  (shown once; only its hash is stored)")
    print("publish this DNS record for DKIM:")
    print(f"  {started.dns_record}")
    if started.ledger is not None:
        print(f"the demo's ledger {started.ledger} starts as ledger.db.example (five months of "
              f"acme, kumo and hoshi): try `{command('report', '--config', started.config)}`")
    for email, password, who in started.admin_logins:
        print(f"admin login ({who}): {email} / {password}  (shown once)")
    if started.admin_logins:
        reset = command("admin", "reset-password", "--email", "E", "--config", started.config)
        print(f"a lost admin password: `{reset}`")
    print(f"start it: `{command('serve', '--config', started.config)}`")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from career_relay.dkimkeys import load_key, zone_line

    path = settings_mod.config_path(args.config)
    settings = settings_mod.load(path, check=False)
    problems = value_problems(settings) + file_problems(settings)
    records = []
    for c in settings.companies:
        if c.dkim_key_file and Path(c.dkim_key_file).is_file():
            try:
                key = load_key(c.dkim_key_file)
            except ConfigError as exc:
                problems.append(f"companies[{c.id}].dkim_key_file: {exc}")
                continue
            for domain in c.domains:
                records.append(zone_line(domain, c.dkim_selector, key))
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    if not settings.secrets.hash_key:
        print(f"{path}: warning: secrets.hash_key is empty, so candidates are hashed with the "
              "oldest signing key: removing that key in a rotation makes every candidate new "
              "again (set hash_key once and keep it)", file=sys.stderr)
    print(f"{path}: ok")
    if records:
        print("DNS must hold these DKIM records:")
        for record in records:
            print(f"  {record}")
    return 0


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    from career_relay.dkimkeys import generate_key, zone_line

    path = Path(args.out) / f"{args.domain}.{args.selector}.pem"
    key = generate_key(path)
    print(f"wrote {path}")
    print(zone_line(args.domain, args.selector, key))
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    from career_relay.passwords import hash_password

    password = ledger_commands.read_password(args.password_stdin)
    print(hash_password(password))
    return 0


# -- the ledger ----------------------------------------------------------------------------


def cmd_company_link(args: argparse.Namespace) -> int:
    """The company's one fixed link (SPEC 10), for templates that hold only a fixed URL."""
    from career_relay.tokens import CompanySigner, company_link

    settings = _load(args)
    if settings.company(args.company) is None:
        raise CareerRelayError(f"no company {args.company!r} in the configuration")
    try:
        token = CompanySigner(settings.secrets.signing_keys).token(args.company)
    except ValueError:
        raise CareerRelayError(f"company id {args.company!r} cannot go into a link: use "
                               "letters, digits, '.', '_' and '-' (at most 64)") from None
    print(company_link(settings.site.public_url, token))
    return 0


def _head(text: str) -> object:
    from career_relay.ledger import BadHead, parse_head

    try:
        return parse_head(text)
    except BadHead as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _admin_usage(args: argparse.Namespace) -> str:
    """What is missing from an ``admin`` command line ("" when nothing is)."""
    if args.action == "revoke-sessions":
        return "" if bool(args.email) != bool(args.all) else \
            "admin revoke-sessions needs --email E or --all"
    if not args.email:
        return f"admin {args.action} needs --email"
    if args.action == "add-user" and not (args.operator or args.company):
        return "admin add-user needs --operator or --company ID"
    return ""


def _api_key_usage(args: argparse.Namespace) -> str:
    """What is wrong with an ``api-key`` command line ("" when nothing is)."""
    return _key_usage(args, "api-key", "company")


def _agency_key_usage(args: argparse.Namespace) -> str:
    """What is wrong with an ``agency-key`` command line ("" when nothing is)."""
    return _key_usage(args, "agency-key", "agency")


def _key_usage(args: argparse.Namespace, command: str, owner: str) -> str:
    """Either kind of key's command line: ``revoke KEY_ID``, ``create --OWNER ID``, ``list``."""
    if args.action == "revoke":
        return "" if args.key_id else f"{command} revoke needs KEY_ID (see {command} list)"
    if args.key_id:
        return f"{command} {args.action} takes no KEY_ID"
    if args.action == "create" and not getattr(args, owner):
        return f"{command} create needs --{owner} ID"
    return ""


def _ledger_usage(args: argparse.Namespace) -> str:
    """What is wrong with a ``ledger`` command line ("" when nothing is)."""
    if args.action == "verify":
        return "ledger verify takes no --to (ledger migrate does)" if args.to else ""
    if args.head:
        return "ledger migrate takes no --head (ledger verify does)"
    if not args.to:
        return "ledger migrate needs --to URL (postgresql://user:password@host/db)"
    if urllib.parse.urlsplit(args.to).scheme not in ("postgresql", "postgres"):
        return "ledger migrate --to needs a PostgreSQL URL (postgresql://user:password@host/db)"
    return ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="career-relay", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"career-relay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str
                ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", metavar="PATH", help="configuration file "
                       "(default: $CAREER_RELAY_CONFIG, else ./career-relay.toml)")
        p.set_defaults(func=func)
        return p

    for name, func, text in (
        ("serve", cmd_serve, "run the gateway, the delivery worker and the consent site"),
        ("gateway", cmd_gateway, "run the SMTP gateway and its delivery worker only"),
    ):
        p = command(name, func, text)
        p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
        p.add_argument("--supervisor", type=int, default=None, help=argparse.SUPPRESS)
    command("site", cmd_site, "run the consent site only")
    p = command("init", cmd_init, "write a starter configuration, a signing secret and a DKIM key")
    p.add_argument("--dir", default=".", help="where to write career-relay.toml (default: .)")
    p.add_argument("--demo", action="store_true", help="configure the local demo upstream")
    command("check-config", cmd_check_config, "validate the configuration and print problems")
    p = command("dkim-keygen", cmd_dkim_keygen, "write an RSA-2048 DKIM key, print its DNS record")
    p.add_argument("--domain", required=True)
    p.add_argument("--selector", required=True)
    p.add_argument("--out", default=".", help="directory for the key (default: .)")
    p = command("hash-password", cmd_hash_password, "print the argon2 hash of a password")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p = command("queue", serve.cmd_queue, "list, retry or purge queued messages")
    p.add_argument("action", choices=["list", "retry", "purge"])
    p.add_argument("id", nargs="?", help="queue id (retry: all when omitted)")
    p = command("company-link", cmd_company_link,
                "print a company's one fixed link, /j/TOKEN (SPEC 10)")
    p.add_argument("--company", required=True, metavar="ID")
    p = command("send-test", serve.cmd_send_test,
                "send a test message (or with --rejection a test rejection) to the running "
                "gateway on gateway.listen")
    p.add_argument("--rejection", action="store_true",
                   help="a rejection with the marker: each outside recipient's copy gets a link")
    p.add_argument("--to", action="append", metavar="ADDR",
                   help="recipient (repeat for more; default: candidate@example.net)")
    p.add_argument("--from", dest="sender", metavar="ADDR",
                   help="sender (default: hr@ the company's first domain)")
    p.add_argument("--company", metavar="ID",
                   help="whose mail it is (default: the first company with domains)")
    p.add_argument("--subject", help="the Subject (default: a test subject in the company's "
                   "language)")
    p.add_argument("--password-stdin", action="store_true", help="SMTP AUTH as the company's "
                   "smtp_username with the password on stdin (default: no AUTH; the demo's "
                   "loopback is acme's own network)")
    p = command("outbox", serve.cmd_outbox,
                "last: the newest message the demo's capture upstream wrote, with its links "
                "decoded")
    p.add_argument("action", choices=["last"])
    report_commands.add_arguments(command(
        "report", report_commands.cmd_report, "the ledger report per company and period "
        "(SPEC 8), or a company's yearly human-capital report as HTML or PDF"))
    credit_commands.add_arguments(command(
        "credits", credit_commands.cmd_credits, "free referral credits: redeem one, request "
        "one from the company's agency, list the requests (SPEC 11)"))
    p = command("ledger", ledger_commands.cmd_ledger,
                "verify: recompute the ledger's hash chain, name the first bad entry; "
                "migrate: copy the SQLite ledger to PostgreSQL")
    p.add_argument("action", choices=["verify", "migrate"])
    p.add_argument("--head", metavar="N:HASH", type=_head,
                   help="verify: also check that the chain still reaches this head (one the "
                   "agency received in X-Career-Relay-Ledger-Head)")
    p.add_argument("--to", metavar="URL", help="migrate: the empty PostgreSQL database to "
                   "copy into, postgresql://user:password@host/db (the password may be left "
                   "to PGPASSWORD or ~/.pgpass)")
    p.set_defaults(usage_problem=_ledger_usage)
    p = command("review", ledger_commands.cmd_review,
                "list, approve or reject consent decisions held as possibly automated")
    p.add_argument("action", choices=["list", "approve", "reject"])
    p.add_argument("receipt", nargs="?", help="receipt id (approve, reject)")
    p.add_argument("--by", default="operator", help="who reviewed (default: operator)")
    p = command("purge", ledger_commands.cmd_purge,
                "apply the retention rules (SPEC 9): erase personal data "
                "whose time is up")
    p.add_argument("--dry-run", action="store_true", help="print what would be erased; change "
                   "nothing")
    p = command("admin", ledger_commands.cmd_admin,
                "logins for the admin pages: add-user, remove-user, reset-password, "
                "revoke-sessions")
    p.add_argument("action", choices=["add-user", "remove-user", "reset-password",
                                      "revoke-sessions"])
    p.add_argument("--email")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--operator", action="store_true", help="add-user: sees every company")
    who.add_argument("--company", metavar="ID", help="add-user: sees this company only")
    p.add_argument("--password-stdin", action="store_true", help="add-user, reset-password: "
                   "read the password from stdin (default: a prompt that does not echo)")
    p.add_argument("--all", action="store_true", help="revoke-sessions: every login's sessions")
    p.set_defaults(usage_problem=_admin_usage)
    p = command("api-key", ledger_commands.cmd_api_key,
                "the company API's keys (SPEC 10): create (printed once), list, revoke")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("key_id", nargs="?", metavar="KEY_ID", help="revoke: the key's id")
    p.add_argument("--company", metavar="ID", help="create: the key's company; list: only "
                   "its keys")
    p.add_argument("--name", default="", help="create: a label for the key (which ATS)")
    p.set_defaults(usage_problem=_api_key_usage)
    p = command("agency-key", ledger_commands.cmd_agency_key,
                "the agencies' API keys (SPEC 11): create (printed once), list, revoke")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("key_id", nargs="?", metavar="KEY_ID", help="revoke: the key's id")
    p.add_argument("--agency", metavar="ID", help="create: the key's agency ([[agencies]] id, "
                   "or default); list: only its keys")
    p.add_argument("--name", default="", help="create: a label for the key")
    p.set_defaults(usage_problem=_agency_key_usage)
    return parser


if __name__ == "__main__":
    sys.exit(main())
