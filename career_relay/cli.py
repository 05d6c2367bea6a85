"""`career-relay`: the command line, and the composition root.

This is the one module of ``career_relay`` that imports both sides (the
gateway and the consent site) to wire `serve`.  Every command exits 0 on
success, 1 with a one-line message on a user error, 2 on bad usage (SPEC 2).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from career_relay import __version__, logs
from career_relay import settings as settings_mod
from career_relay.errors import CareerRelayError, ConfigError
from career_relay.settings import Settings
from career_relay.validate import file_problems, parse_hostport, value_problems

if TYPE_CHECKING:
    from consent_site.app import RunningSite

log = logging.getLogger("career_relay")

SHUTDOWN_TIMEOUT = 30.0


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


def _load(args: argparse.Namespace) -> Settings:
    settings = settings_mod.load(settings_mod.config_path(args.config))
    problems = file_problems(settings)
    if problems:
        raise ConfigError(problems[0])
    return settings


# -- running ---------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    return _run(_load(args), smtp=True, site=True, worker=args.worker,
                supervisor=args.supervisor)


def cmd_gateway(args: argparse.Namespace) -> int:
    return _run(_load(args), smtp=True, site=False, worker=args.worker,
                supervisor=args.supervisor)


def cmd_site(args: argparse.Namespace) -> int:
    return _run(_load(args), smtp=False, site=True, worker=0)


def _run(settings: Settings, *, smtp: bool, site: bool, worker: int,
         supervisor: int | None = None) -> int:
    logs.configure(settings.log)
    workers = (settings.gateway.workers or len(os.sched_getaffinity(0))) if smtp else 1
    if worker == 0 and supervisor is None:
        if site or (smtp and settings.companies):
            _migrate_ledger(settings)
        if smtp:
            _fresh_metrics_dir(settings)
    # uvloop: the same asyncio API on libuv, about 30% less CPU per relayed
    # message than the default loop (docs/performance.md).
    uvloop.run(_services(settings, smtp=smtp, site=site and worker == 0, worker=worker,
                         workers=workers, supervisor=supervisor))
    return 0


def _migrate_ledger(settings: Settings) -> None:
    """Apply pending ledger migrations before anything else opens the ledger, with a
    progress line: on a large ledger a migration may take minutes."""
    from career_relay.ledger import open_configured

    def progress(names: list[str]) -> None:
        print(f"career-relay: migrating the ledger {settings.ledger.path}: {len(names)} "
              f"pending ({', '.join(names)}) ...", file=sys.stderr, flush=True)

    open_configured(settings, on_migrate=progress).close()


def _fresh_metrics_dir(settings: Settings) -> None:
    """The workers' metrics files (``gateway.metrics``), emptied at every start: the
    variable must be set before prometheus_client is first imported, and the workers
    inherit it."""
    import shutil

    from career_relay.paths import metrics_dir

    directory = metrics_dir(settings.queue.dir)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _metrics_process_dead(pid: int) -> None:
    """A worker's live gauges (its queue) leave with it; its counters stay in the sums."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid)  # type: ignore[no-untyped-call]


async def _services(settings: Settings, *, smtp: bool, site: bool, worker: int,
                    workers: int, supervisor: int | None = None) -> None:
    from career_relay.reload import reread
    from gateway.app import Gateway
    from gateway.capture import start_capture

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    closers: list[Callable[[], object]] = []
    supervisors: list[asyncio.Task[None]] = []
    children: dict[int, asyncio.subprocess.Process] = {}
    gateway: Gateway | None = None
    running_site: RunningSite | None = None

    def reload() -> None:
        """SIGHUP: the workers reload too; this process re-reads the file and swaps in
        the new companies and templates (``career_relay.reload``)."""
        nonlocal settings
        for child in children.values():
            if child.returncode is None:
                child.send_signal(signal.SIGHUP)
        new = reread(settings)
        if new is None:
            return
        try:
            if gateway is not None:
                gateway.reload(new)
            if running_site is not None:
                running_site.reload(new)
        except ConfigError as exc:
            log.error("reload of %s failed, the running configuration stays: %s",
                      settings.source, exc)
            return
        settings = new
        log.info("worker %d: configuration reloaded from %s (%d companies)", worker,
                 settings.source, len(settings.companies))

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        if smtp and worker == 0 and settings.demo.capture_dir:
            host, port = settings.upstream.host, settings.upstream.port
            capture = await start_capture(Path(settings.demo.capture_dir), host, port)
            closers.append(capture.close)
        gateway = Gateway(settings, worker=worker, workers=workers) if smtp else None
        if gateway is not None:
            if worker == 0:
                print(f"career-relay: recovering the spool in {settings.queue.dir} ...",
                      file=sys.stderr, flush=True)
            await gateway.start()
            if worker == 0:
                supervisors = [asyncio.create_task(_supervise(settings, i, stop, children))
                               for i in range(1, workers)]
            else:
                supervisors = [asyncio.create_task(_watch_parent(stop, supervisor))]
        if site and settings.demo.agency_dir:
            closers.append(await _start_demo_agency(settings))
        if site:
            from consent_site.app import start_site

            running_site = await start_site(settings)
            closers.append(running_site.stop)
        if worker == 0:
            _banner(settings, smtp=smtp, site=site, workers=workers)
        await stop.wait()
        log.info("worker %d: stopping", worker)
        # Both sides at once: neither takes new work while the other drains.
        await asyncio.gather(
            *([gateway.stop(SHUTDOWN_TIMEOUT)] if gateway is not None else []),
            *([running_site.stop()] if running_site is not None else []))
        await asyncio.gather(*supervisors)
    finally:
        for close in reversed(closers):  # the demo peers last: the site may be using them
            result = close()
            if asyncio.iscoroutine(result):
                await result


async def _start_demo_agency(settings: Settings) -> Callable[[], object]:
    """The demo's stand-in agency on agency.webhook_url, before the site that forwards to it."""
    from urllib.parse import urlsplit

    from consent_site.agency_receiver import start_agency_receiver

    url = urlsplit(settings.agency.webhook_url)
    try:
        port = url.port or 80
    except ValueError:
        port = 0
    if url.scheme != "http" or not url.hostname or not port:
        raise ConfigError("demo.agency_dir needs agency.webhook_url = http://HOST:PORT/PATH "
                          f"(the demo agency listens there), not {settings.agency.webhook_url!r}")
    receiver = await start_agency_receiver(Path(settings.demo.agency_dir),
                                           settings.agency.webhook_secret, url.hostname,
                                           port, url.path or "/")
    return receiver.close


async def _watch_parent(stop: asyncio.Event, supervisor: int | None) -> None:
    """A worker whose supervisor died (kill -9, OOM) stops rather than run unsupervised.

    The supervisor's pid comes on the command line: one read at start-up
    could already see the adoptive parent if the supervisor died meanwhile.
    """
    parent = supervisor if supervisor is not None else os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            log.error("the supervising process is gone; stopping")
            stop.set()
            return
        await asyncio.sleep(1.0)


async def _supervise(settings: Settings, index: int, stop: asyncio.Event,
                     children: dict[int, asyncio.subprocess.Process]) -> None:
    """Run intake worker ``index`` as a child process; restart it if it dies.

    Workers share the port through SO_REUSEPORT; each delivers the mail it
    accepted, so a worker that died is restarted to pick up its own spool.
    ``children`` holds the live one, for the SIGHUP the supervisor passes on.
    """
    assert settings.source is not None
    config = str(settings.source.resolve())
    while not stop.is_set():
        # Its own session: a Ctrl-C reaches the parent only, which stops it in order.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "career_relay", "gateway", "--config", config,
            "--worker", str(index), "--supervisor", str(os.getpid()), start_new_session=True)
        children[index] = child
        waiter = asyncio.ensure_future(child.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
            await waiter
            _metrics_process_dead(child.pid)
            return
        stopper.cancel()
        _metrics_process_dead(child.pid)
        log.error("worker %d exited with status %s; restarting it", index, child.returncode)
        await asyncio.sleep(1.0)


def _banner(settings: Settings, *, smtp: bool, site: bool, workers: int) -> None:
    lines = ["career-relay is running (Ctrl-C to stop)."]
    if smtp:
        lines.append(f"  SMTP relay:   {settings.gateway.listen} ({workers} worker(s))")
    if site:
        lines.append(f"  consent site: {settings.site.public_url}  (health: /healthz)")
        lines.append(f"  admin pages:  {settings.site.public_url.rstrip('/')}/admin/  (logins: "
                     "printed by `career-relay init`; more with `career-relay admin add-user`)")
        if settings.site.metrics_listen:
            lines.append(f"  metrics:      http://{settings.site.metrics_listen}/metrics")
    if site and settings.demo.agency_dir:
        lines.append(f"  demo agency:  {settings.agency.webhook_url} writes every forward it "
                     f"receives to {settings.demo.agency_dir}/<forward_id>.json")
    if settings.demo.capture_dir and smtp:
        host, port = parse_hostport("gateway.listen", settings.gateway.listen)
        lines += [
            f"  demo upstream: {settings.upstream.host}:{settings.upstream.port} writes every "
            f"relayed message to {settings.demo.capture_dir}/",
            "",
            "Send a test message:",
            f"  swaks --server {host}:{port} --from hr@acme.example --to candidate@example.net",
            "or, without swaks:",
            f"  .venv/bin/python -c \"import smtplib; smtplib.SMTP('{host}', {port}).sendmail("
            "'hr@acme.example', ['candidate@example.net'], b'From: hr@acme.example\\r\\n"
            "To: candidate@example.net\\r\\nSubject: hello\\r\\n\\r\\n"
            "Hello from career-relay\\r\\n')\"",
            f"then open the newest file in {settings.demo.capture_dir}/",
            "",
            "Send a rejection (each candidate's copy gets a personal link and a DKIM signature):",
            f"  swaks --server {host}:{port} --from hr@acme.example --to candidate@example.net "
            "--header 'X-Career-Relay: rejection' --header 'Subject: Your application' "
            "--body 'Thank you for applying. We regret to inform you that we will not proceed.'",
        ]
    print("\n".join(lines), file=sys.stderr, flush=True)


# -- configuration and keys --------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from career_relay.starter import write_starter

    started = write_starter(Path(args.dir), demo=args.demo)
    print(f"wrote {started.config}")
    print(f"SMTP login for the example company: {started.smtp_username} / "
          f"{started.smtp_password}  (shown once; only its hash is stored)")
    print("publish this DNS record for DKIM:")
    print(f"  {started.dns_record}")
    if started.ledger is not None:
        print(f"the demo's ledger {started.ledger} starts as ledger.db.example (five months of "
              "acme, kumo and hoshi): try `career-relay report`")
    for email, password, who in started.admin_logins:
        print(f"admin login ({who}): {email} / {password}  (shown once)")
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

    password = _read_password(args.password_stdin)
    print(hash_password(password))
    return 0


def _read_password(from_stdin: bool) -> str:
    import getpass

    password = sys.stdin.readline().rstrip("\n") if from_stdin else getpass.getpass()
    if not password:
        raise CareerRelayError("the password must not be empty")
    return password


# -- the queue ---------------------------------------------------------------------------


def cmd_queue(args: argparse.Namespace) -> int:
    from gateway import queue_admin
    from gateway.spool import Spool

    spool = Spool(_load(args).queue.dir)
    if args.action == "list":
        print(queue_admin.format_rows(queue_admin.list_queue(spool)))
        note = queue_admin.corrupt_note(spool)
        if note:
            print(note)
    elif args.action == "retry":
        count = queue_admin.retry(spool, args.id)
        print(f"{count} deferred message(s) scheduled for immediate retry")
    else:
        if not args.id:
            raise CareerRelayError("queue purge needs a queue id")
        queue_admin.purge(spool, args.id)
        print(f"purged {args.id}")
    return 0


# -- the ledger ----------------------------------------------------------------------------


def _head(text: str) -> object:
    from career_relay.ledger import BadHead, parse_head

    try:
        return parse_head(text)
    except BadHead as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _date(text: str) -> object:
    import datetime as dt

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def cmd_report(args: argparse.Namespace) -> int:
    import datetime as dt

    from career_relay import report_format
    from career_relay.ledger import open_configured, reports

    settings = _load(args)
    companies = [c.id for c in settings.companies]
    if args.company:
        if args.company not in companies:
            raise CareerRelayError(f"no company {args.company!r} in the configuration "
                                   f"(known: {', '.join(companies) or 'none'})")
        companies = [args.company]
    try:
        when = reports.period(args.since, args.until, dt.datetime.now(dt.UTC).date())
    except ValueError as exc:
        raise CareerRelayError(str(exc)) from None
    with open_configured(settings) as ledger:
        rows = reports.report(ledger, companies, when, settings.ledger.credit_every,
                              details=args.format == "json")
    print(report_format.render(rows, args.format), end="")
    return 0


def cmd_credits(args: argparse.Namespace) -> int:
    from career_relay.ledger import Book, Rules, open_configured

    settings = _load(args)
    if args.company not in [c.id for c in settings.companies]:
        raise CareerRelayError(f"no company {args.company!r} in the configuration")
    with open_configured(settings) as ledger:
        credit = Book(ledger, Rules.from_settings(settings)).redeem(
            args.company, by=args.by, note=args.note)
    print(f"redeemed credit {credit} of {args.company}")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    """``ledger verify``: the chain, the rows it vouches for, the head file, and ``--head``
    (a head the agency received with a forward: the anchor a copy of our files cannot move)."""
    from career_relay.ledger import Book, Rules, open_configured

    settings = _load(args)
    if not Path(settings.ledger.path).exists():
        raise CareerRelayError(f"no ledger at {settings.ledger.path}")
    with open_configured(settings) as ledger:
        book = Book(ledger, Rules.from_settings(settings))
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
    from career_relay.ledger import Rules, open_configured, retention

    settings = _load(args)
    if not Path(settings.ledger.path).exists():
        raise CareerRelayError(f"no ledger at {settings.ledger.path}")
    policy = retention.Policy.from_settings(settings)
    with open_configured(settings) as ledger:
        purged = retention.purge(ledger, Rules.from_settings(settings), policy,
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
    import sqlite3

    from career_relay.ledger import ConsentLedger, open_configured

    settings = _load(args)
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
        except sqlite3.IntegrityError:
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

    settings = _load(args)
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
    company = None if args.operator else args.company
    if company is not None and company not in [c.id for c in settings.companies]:
        raise CareerRelayError(f"no company {company!r} in the configuration")
    password = _read_password(args.password_stdin)
    with open_configured(settings) as ledger:
        user = AdminUsers(ledger).add(args.email, password, company)
    print(f"admin login {user.email} created ({'operator' if user.operator else company})")
    return 0


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
    p = command("queue", cmd_queue, "list, retry or purge queued messages")
    p.add_argument("action", choices=["list", "retry", "purge"])
    p.add_argument("id", nargs="?", help="queue id (retry: all when omitted)")
    p = command("report", cmd_report, "the ledger report per company and period (SPEC 8)")
    p.add_argument("--company", help="one company (default: every configured company)")
    p.add_argument("--since", type=_date, help="first day, YYYY-MM-DD (UTC)")
    p.add_argument("--until", type=_date, help="last day, YYYY-MM-DD (UTC; default: today)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p = command("credits", cmd_credits, "use one free referral credit of a company")
    p.add_argument("action", choices=["redeem"])
    p.add_argument("--company", required=True)
    p.add_argument("--note", default="", help="what it was used for")
    p.add_argument("--by", default="operator", help="who redeemed it (default: operator)")
    p = command("ledger", cmd_ledger, "recompute the ledger's hash chain; name the first bad "
                "entry")
    p.add_argument("action", choices=["verify"])
    p.add_argument("--head", metavar="N:HASH", type=_head,
                   help="also check that the chain still reaches this head (one the agency "
                   "received in X-Career-Relay-Ledger-Head)")
    p = command("review", cmd_review,
                "list, approve or reject consent decisions held as possibly automated")
    p.add_argument("action", choices=["list", "approve", "reject"])
    p.add_argument("receipt", nargs="?", help="receipt id (approve, reject)")
    p.add_argument("--by", default="operator", help="who reviewed (default: operator)")
    p = command("purge", cmd_purge, "apply the retention rules (SPEC 9): erase personal data "
                "whose time is up")
    p.add_argument("--dry-run", action="store_true", help="print what would be erased; change "
                   "nothing")
    p = command("admin", cmd_admin, "logins for the admin pages: add-user, remove-user, "
                "revoke-sessions")
    p.add_argument("action", choices=["add-user", "remove-user", "revoke-sessions"])
    p.add_argument("--email")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--operator", action="store_true", help="add-user: sees every company")
    who.add_argument("--company", metavar="ID", help="add-user: sees this company only")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--all", action="store_true", help="revoke-sessions: every login's sessions")
    p.set_defaults(usage_problem=_admin_usage)
    return parser


if __name__ == "__main__":
    sys.exit(main())
