"""Running the processes: the composition root, the one place that wires the gateway
and the consent site together (DESIGN: ``cli.py`` parses arguments; this runs).

``run`` starts what ``serve``, ``gateway`` and ``site`` ask for: the gateway's
SMTP workers (one process each, supervised), its delivery, the consent site
with its forwarding worker, and in the demo the capture upstream and agency.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from career_relay import ledger_commands, logs, ports
from career_relay.banner import banner
from career_relay.errors import CareerRelayError, ConfigError, LedgerUnavailable
from career_relay.settings import Settings
from career_relay.terminal import printable

if TYPE_CHECKING:
    from consent_site.app import RunningSite

log = logging.getLogger("career_relay")

SHUTDOWN_TIMEOUT = 30.0
# The cyclic collector's first generation runs after this many more container objects
# were made than freed (Python's default: 700).  Every SMTP connection leaves about 47
# objects in reference cycles (aiosmtpd's protocol, its command tables, its task), and
# at 700 a collection came every ten messages, while about twenty connections were still
# open: their objects were traversed, promoted, and found dead only by the next
# generation's collection.  At 10,000 most of them are dead by the first look: the
# collector's CPU per relayed message fell by about half (docs/performance.md, "Every
# path"), for at most 10,000 young objects more in memory (a few MB).
GC_YOUNG_OBJECTS = 10_000


def tune_collector() -> None:
    """The cyclic collector's first threshold for a long-running service (``GC_YOUNG_OBJECTS``);
    the older generations' as they were."""
    gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])


def gateway_workers(settings: Settings) -> int:
    """The gateway's worker processes: ``gateway.workers``, or one a CPU (0)."""
    return settings.gateway.workers or len(os.sched_getaffinity(0))


def run(settings: Settings, *, smtp: bool, site: bool, worker: int,
         supervisor: int | None = None) -> int:
    logs.configure(settings.log)
    workers = gateway_workers(settings) if smtp else 1
    if worker == 0 and supervisor is None:
        if site or (smtp and settings.companies):
            _migrate_ledger(settings)
        if smtp:
            _fresh_metrics_dir(settings)
    tune_collector()
    # uvloop: the same asyncio API on libuv, about 30% less CPU per relayed
    # message than the default loop (docs/performance.md).
    uvloop.run(_services(settings, smtp=smtp, site=site and worker == 0, worker=worker,
                         workers=workers, supervisor=supervisor))
    return 0


def _migrate_ledger(settings: Settings) -> None:
    """Apply pending ledger migrations before anything else opens the ledger, with a
    progress line: on a large ledger a migration may take minutes."""
    from career_relay.ledger import open_configured

    # Never the URL: it may hold a password.
    where = "in PostgreSQL" if settings.ledger.url else settings.ledger.path

    def progress(names: list[str]) -> None:
        print(f"career-relay: migrating the ledger {where}: {len(names)} "
              f"pending ({', '.join(names)}) ...", file=sys.stderr, flush=True)

    try:
        open_configured(settings, on_migrate=progress).close()
    except LedgerUnavailable as exc:
        if not settings.ledger.url:
            raise
        # The processes start all the same: the site answers 503 and the gateway holds
        # rejections until the database is back; the first to reach it migrates it.
        print(f"career-relay: the ledger is unavailable ({exc}); starting all the same",
              file=sys.stderr, flush=True)


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
            with ports.binding(("upstream.port (the demo's capture upstream)",
                                f"{host}:{port}")):
                capture = await start_capture(Path(settings.demo.capture_dir), host, port)
            closers.append(capture.close)
        gateway = Gateway(settings, worker=worker, workers=workers) if smtp else None
        if gateway is not None:
            if worker == 0:
                # Before the spool's recovery, and before SO_REUSEPORT lets a second demo
                # of the same user share the port without a word.
                ports.check_free("gateway.listen", settings.gateway.listen)
                print(f"career-relay: recovering the spool in {settings.queue.dir} ...",
                      file=sys.stderr, flush=True)
            with ports.binding(("gateway.listen", settings.gateway.listen)):
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

            with ports.binding(("site.listen", settings.site.listen),
                               ("site.metrics_listen", settings.site.metrics_listen)):
                running_site = await start_site(settings)
            closers.append(running_site.stop)
        if worker == 0:
            print(banner(settings, smtp=smtp, site=site, workers=workers), file=sys.stderr,
                  flush=True)
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
    with ports.binding(("agency.webhook_url (the demo agency)", f"{url.hostname}:{port}")):
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


# -- configuration and keys --------------------------------------------------------------


# -- the queue (the gateway's spool: wired here, where both sides may be imported) -------


def cmd_queue(args: argparse.Namespace) -> int:
    from gateway import queue_admin
    from gateway.spool import Spool

    settings = ledger_commands.load(args)
    # As many workers as the gateway runs: a retry request goes to the file of the worker
    # that owns the message (every worker's for all), and with one assumed, `queue retry`
    # reached worker 0 alone (a deferred message of another worker waited its schedule).
    spool = Spool(settings.queue.dir, workers=gateway_workers(settings))
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


# -- the first hour: a test message, and the links of the last one the demo captured -------


def cmd_send_test(args: argparse.Namespace) -> int:
    from career_relay.sample_mail import send_test

    settings = ledger_commands.load(args)
    password = ledger_commands.read_password(True) if args.password_stdin else None
    sent = send_test(settings, rejection=args.rejection, to=args.to or ["candidate@example.net"],
                     sender=args.sender, company_id=args.company, subject=args.subject,
                     password=password)
    kind = "a test rejection" if args.rejection else "a test message"
    print(printable(f"sent {kind} from {sent.sender} to {', '.join(sent.recipients)} "
                    f"through {sent.server}: {sent.reply}"))
    if settings.demo.capture_dir:
        from career_relay.invocation import command

        config = settings.source or "career-relay.toml"
        print(f"its copy lands in {settings.demo.capture_dir}/ in a moment; its links: "
              f"`{command('outbox', 'last', '--config', config)}`")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from gateway.demo_mail import last_message

    settings = ledger_commands.load(args)
    if not settings.demo.capture_dir:
        raise CareerRelayError("outbox needs demo.capture_dir (the demo's capture upstream, "
                               "written by `career-relay init --demo`)")
    found = last_message(Path(settings.demo.capture_dir))
    consent = settings.site.public_url.rstrip("/") + "/c/"
    # Whatever a relayed mail says goes to the operator's terminal escaped (terminal.py).
    print(f"{printable(str(found.path))}\n  From:    {printable(found.sender)}\n"
          f"  To:      {printable(found.to)}\n  Subject: {printable(found.subject)}")
    if not found.links:
        print("  no links (an ordinary message is relayed as it was sent)")
    for link in found.links:
        print(f"  {'consent link' if link.startswith(consent) else 'link':12s} "
              f"{printable(link)}")
    return 0
