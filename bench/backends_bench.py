"""Both ledger backends side by side, in one run (issue 13 item 6, docs/performance.md).

Run as::

    .venv/bin/python bench/backends_bench.py [--backend both] [--parts gateway,site,report,ceiling]

(``make bench-backends``; as root: the gateway part needs ``postfix start``.)  One private
PostgreSQL (tests/pg.py) is started for the whole run with production's durability
(``fsync``, ``full_page_writes`` and ``synchronous_commit`` on: a commit waits for its WAL
flush) on 127.0.0.1; SQLite ledgers are files in the run's directory.  The parts, each
printing one table with a row per backend:

1. ``gateway``: rejections through the gateway (``relay_bench``'s ``rejection-1`` and
   ``rejection-2``: 1 and 2 outside recipients, a signed copy with a link each), next to
   Postfix relaying the same mail in the same run.  Per workload: a sample check through
   a gateway of its own on each backend (links, tokens that open the right offers, DKIM),
   then one gateway per backend and a warm-up of each system, then ``--pairs`` rounds of
   Postfix, then both gateways (their order alternating from round to round).  Printed:
   the medians of msgs/s, the ratio to Postfix, the range of the rounds' ratios, CPU per
   message of the gateway's processes, and on PostgreSQL also of the server's processes
   (on SQLite the ledger's work is in the gateway's), and the offers per second recorded.
2. ``site``: consent POSTs (an accept: receipt, profile, forward and outbox row in one
   transaction) against a real ``career-relay site`` per backend, and the same client
   against ``site_bench``'s bare aiohttp server (a handler that reads the form and answers
   303): ``--site-rounds`` rounds of bare, then both sites (alternating), each of
   ``--site-offers`` distinct offers, ``--concurrency`` in flight.  After each round the
   ledger must hold exactly one accept per offer posted and a consent forward each.
3. ``report``: ``report_bench``'s ledger of ``--offers`` offers (the SQLite file, cached in
   bench/.cache/) is copied into PostgreSQL by ``ledger migrate``'s ``copy_to`` (COPY in
   one transaction; ``offer_stats`` and ``first_decisions`` made by PostgreSQL's own
   triggers and compared, row for row, with SQLite's; every count checked).  Then
   ``VACUUM ANALYZE`` (autovacuum does it to a production table after such growth).
   Timed: ``reports.report(..., details=True)`` for the big company (goal < 200 ms on
   both) and for all 20 (< 2 s), medians of ``--repeat`` after a warm-up; the reports of
   both backends must be equal, field by field.
4. ``ceiling``: offers recorded per second by ``--writers`` processes on PostgreSQL, each
   with a Ledger of its own (``open_shared``) as each gateway worker has, for
   ``--ceiling-seconds`` after a second of warm-up: (i) one writer, one rejection per
   commit (a commit's own cost); (ii) all writers, one rejection per commit; (iii) all
   writers through ``LedgerWriter`` (the gateway's group commit) with ``--threads``
   threads each calling it, as the gateway's executor threads do (min(32, CPUs + 4)): the
   ceiling; (iv) the same with 32 threads each (the executor of a host with 28 CPUs or
   more: more in flight, bigger batches).  Each rejection has one outside recipient and
   a company of 20.  Per row: offers and commits per second, offers per commit, the time
   between commits (the lock is never free), the time each commit held the write lock
   (from taken to committed and its connection back in the pool) and of that the
   commit's end (NOTIFY, COMMIT; on SQLite the WAL flush), on PostgreSQL then the wait
   for the WAL flush with the lock let go (``settle``), CPU per offer of the writer processes
   and of the server; then a round trip and a one-row commit on an idle connection.  The
   ratio printed is (iii) over the offers per second one gateway host recorded in part
   1 (its fastest row on PostgreSQL), against the goal of 20.  Then (iii) on SQLite, for
   comparison (one file, one host).

The machine is shared by everything here (the load generators, Postfix, the gateways,
PostgreSQL): read a figure beside its baseline from the same run.  Everything listens on
and connects to 127.0.0.1 only; every process started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import psycopg  # noqa: E402
import report_bench  # noqa: E402

from career_relay.ledger import (  # noqa: E402
    Ledger,
    LedgerWriter,
    Rejection,
    copy_to,
    new_offer_id,
    open_ledger,
    open_shared,
    reports,
)
from tests.pg import PostgresServer  # noqa: E402

BACKENDS = ("sqlite", "postgresql")
PARTS = ("gateway", "site", "report", "ceiling")
# PostgreSQL for a benchmark: production's durability (PostgresServer(durable=True)), the
# default shared_buffers (128 MB, not the tests' 32 MB), room for every pool in the run.
PG_SETTINGS = {"shared_buffers": "128MB", "max_connections": "200"}
CEILING_GOAL = 20.0  # the ceiling >= 20 x what one gateway host records


def log(text: str) -> None:
    print(f"[backends] {text}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """What one invocation measured, part by part (printed as it goes, and as JSON)."""

    started: dt.datetime
    backends: tuple[str, ...]
    pg_server: dict[str, str] = field(default_factory=dict)
    gateway: list[dict[str, Any]] = field(default_factory=list)
    site: list[dict[str, Any]] = field(default_factory=list)
    report: list[dict[str, Any]] = field(default_factory=list)
    ceiling: list[dict[str, Any]] = field(default_factory=list)
    ceiling_ratio: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


# -- the PostgreSQL server --------------------------------------------------------------


@dataclass
class Postgres:
    """The run's durable private PostgreSQL, with a fresh database per use."""

    server: PostgresServer

    def fresh_url(self, prefix: str) -> str:
        name = self.server.create_database(f"{prefix}_{os.urandom(4).hex()}")
        return self.server.url(name)

    def cpu_seconds(self) -> float:
        """CPU seconds of the postmaster and every backend, those that exited included."""
        from relay_bench import tree_cpu_seconds

        pid = int((self.server.data / "postmaster.pid").read_text().split()[0])
        return tree_cpu_seconds(pid)

    def describe(self) -> dict[str, str]:
        with self.server.connect() as conn:
            names = ("server_version", "fsync", "synchronous_commit", "full_page_writes",
                     "wal_sync_method", "shared_buffers", "commit_delay")
            return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}


# -- 1. rejections through the gateway ----------------------------------------------------

WORKLOADS = ("rejection-1", "rejection-2")


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def part_gateway(args: argparse.Namespace, pg: Postgres | None, workdir: Path,
                 run: Run) -> None:
    import relay_bench as rb

    if not rb.postfix_available():
        raise RuntimeError("Postfix is not usable here (the postfix package, and root)")
    for tool in (rb.SMTP_SOURCE, rb.SMTP_SINK):
        if not os.access(tool, os.X_OK):
            raise RuntimeError(f"{tool} not found (it comes with the postfix package)")
    rargs = rb.parse_args(["--paths", "--messages", str(args.messages), "--pairs",
                           str(args.pairs), "--warmup", str(args.warmup)])
    sink_port = rb.free_port()
    sink = rb.CountingSink(sink_port, workdir / "smtp-sink.log")
    try:
        sink.start()
        with rb.postfix_system(workdir, rb.free_port(), sink_port) as postfix:
            for name in args.workloads:
                _gateway_workload(rb, rargs, name, postfix, sink, sink_port, pg, workdir, run)
    finally:
        sink.stop()
    lines = [f"{'workload':<12} {'backend':<11} {'Postfix':>8} {'gateway':>8} {'ratio':>6} "
             f"{'rounds':>10} {'Postfix':>8} {'gateway':>8} {'PgSQL':>6} {'offers/s':>8}",
             f"{'':<12} {'':<11} {'msgs/s':>8} {'msgs/s':>8} {'':>6} {'':>10} "
             f"{'ms CPU':>8} {'ms CPU':>8} {'ms CPU':>6}"]
    for r in run.gateway:
        pgcpu = "-" if r["postgres_cpu_ms_per_msg"] is None else \
            f"{r['postgres_cpu_ms_per_msg']:.2f}"
        lines.append(
            f"{r['workload']:<12} {r['backend']:<11} {r['postfix_msgs_per_s']:>8.1f} "
            f"{r['gateway_msgs_per_s']:>8.1f} {r['ratio']:>6.3f} "
            f"{min(r['round_ratios']):>4.2f}..{max(r['round_ratios']):<4.2f} "
            f"{r['postfix_cpu_ms_per_msg']:>8.2f} {r['gateway_cpu_ms_per_msg']:>8.2f} "
            f"{pgcpu:>6} {r['offers_per_s']:>8.1f}")
    lines.append(f"({args.pairs} rounds of Postfix, then both gateways in alternating order, "
                 f"{args.messages} messages each, 20 sessions, warm-up {args.warmup}; medians; "
                 "ratio = gateway / Postfix; ms CPU per message: Postfix's daemons, the "
                 "gateway's processes, the PostgreSQL server's)")
    print("\n".join(lines), flush=True)


def _gateway_workload(rb: Any, rargs: argparse.Namespace, name: str, postfix: Any,
                      sink: Any, sink_port: int, pg: Postgres | None, workdir: Path,
                      run: Run) -> None:
    """One workload: a sample check and a gateway per backend, then the rounds."""
    from dataclasses import replace

    path = next(p for p in rb.PATHS if p.name == name)
    _eml, message_lf, size = rb.write_message_files(workdir, rargs.size, path.kind)
    gw_load = rb.Workload(path.name, message_lf, rb.KINDS[path.kind].sender,
                          rcpts_per_message=path.rcpts, copies_per_message=path.copies,
                          unique_rcpts=path.unique_rcpts)
    pf_load = replace(gw_load, copies_per_message=1)  # Postfix relays each message once
    directory = workdir / name
    directory.mkdir(mode=0o755)
    log(f"[{name}] {path.description}; message {size} bytes")
    urls: dict[str, str | None] = {}
    for backend in run.backends:
        assert pg is not None or backend == "sqlite"
        sample = argparse.Namespace(**{**vars(rargs), "ledger_url": None if pg is None
                                       or backend == "sqlite" else pg.fresh_url("sample")})
        log(f"  {backend}: " + rb.check_rejection_sample(directory / f"sample-{backend}",
                                                         sample, gw_load, 5, path.detect))
        urls[backend] = None if pg is None or backend == "sqlite" else pg.fresh_url("gateway")
    results: dict[str, list[tuple[Any, float | None]]] = {b: [] for b in run.backends}
    postfix_runs = []
    with contextlib.ExitStack() as stack:
        gateways = {}
        for backend in run.backends:
            (directory / backend).mkdir(mode=0o755)
            key_path, _public = rb.new_company_key(directory / backend)
            gateways[backend] = stack.enter_context(rb.gateway_system(
                directory / backend / "gateway", rargs.career_relay, rb.free_port(), sink_port,
                rargs.gateway_workers, key_path, path.expect, path.detect, urls[backend]))
        if rargs.warmup > 0:
            for system, load in ((postfix, pf_load), *((g, gw_load) for g in gateways.values())):
                rb.run_once(system, sink, load, rargs.warmup, rargs.sessions, rargs.timeout)
        for index in range(rargs.pairs):
            pf = rb.run_once(postfix, sink, pf_load, rargs.messages, rargs.sessions,
                             rargs.timeout)
            postfix_runs.append(pf)
            order = run.backends if index % 2 == 0 else run.backends[::-1]
            said = [f"Postfix {pf.msgs_per_s:.1f}"]
            for backend in order:
                before = pg.cpu_seconds() if pg and backend == "postgresql" else None
                gw = rb.run_once(gateways[backend], sink, gw_load, rargs.messages,
                                 rargs.sessions, rargs.timeout)
                server = None if before is None or pg is None else pg.cpu_seconds() - before
                results[backend].append((gw, server))
                said.append(f"{backend} {gw.msgs_per_s:.1f} ({gw.cpu_ms_per_msg:.2f} ms CPU/msg"
                            + (f" + PostgreSQL {1000 * server / gw.messages:.2f}"
                               if server is not None else "") + ")")
            log(f"  round {index + 1}/{rargs.pairs}: " + ", ".join(said) + " msgs/s")
    for backend in run.backends:
        gws = [gw for gw, _ in results[backend]]
        servers = [s for _, s in results[backend] if s is not None]
        pf_rate = _median([r.msgs_per_s for r in postfix_runs])
        gw_rate = _median([r.msgs_per_s for r in gws])
        run.gateway.append({
            "workload": name, "backend": backend, "message_bytes": size,
            "postfix_msgs_per_s": pf_rate, "gateway_msgs_per_s": gw_rate,
            "ratio": gw_rate / pf_rate,
            "round_ratios": [g.msgs_per_s / p.msgs_per_s
                             for p, g in zip(postfix_runs, gws, strict=True)],
            "postfix_cpu_ms_per_msg": _median([r.cpu_ms_per_msg for r in postfix_runs]),
            "gateway_cpu_ms_per_msg": _median([r.cpu_ms_per_msg for r in gws]),
            "postgres_cpu_ms_per_msg": _median([1000 * s / rargs.messages for s in servers])
            if servers else None,
            "offers_per_s": gw_rate * path.expect.offers,
            "runs": [g.msgs_per_s for g in gws], "postfix_runs": [p.msgs_per_s
                                                                  for p in postfix_runs],
        })


# -- 2. consent POSTs on the site -------------------------------------------------------


def part_site(args: argparse.Namespace, pg: Postgres | None, workdir: Path,
              run: Run) -> None:
    import secrets

    import site_bench as sb
    import uvloop

    executable = REPO / ".venv" / "bin" / "career-relay"
    sargs = sb.parse_args(["--concurrency", str(args.concurrency)])
    n, rounds = args.site_offers, args.site_rounds
    bare_port = sb.free_port()
    prepared = {}
    for backend in run.backends:
        (workdir / f"site-{backend}").mkdir(mode=0o755)
        url = pg.fresh_url("site") if pg is not None and backend == "postgresql" else None
        log(f"site on {backend}: {rounds * n + 1} offers")
        prepared[backend] = sb.prepare(workdir / f"site-{backend}", rounds * n, url, bare_port)
    bares: list[tuple[float, list[float], float]] = []
    posts: dict[str, list[tuple[Any, float | None]]] = {b: [] for b in run.backends}
    with contextlib.ExitStack() as stack:
        bare = stack.enter_context(sb.started(
            [sys.executable, str(Path(sb.__file__).resolve()), "--serve-bare", str(bare_port)],
            workdir / "bare.log", f"http://{sb.LOOPBACK}:{bare_port}/"))
        sites = {b: stack.enter_context(sb.started(
            [str(executable), "site", "--config", str(p.config)],
            workdir / f"site-{b}" / "site.log",
            f"http://{sb.LOOPBACK}:{p.site_port}/healthz")) for b, p in prepared.items()}
        cookie = f"cr_csrf={secrets.token_hex(16)}"
        for index in range(rounds):
            urls = [f"http://{sb.LOOPBACK}:{bare_port}/c/bare-{index}-{i}" for i in range(n)]
            cpu = sb.cpu_seconds(bare.pid)
            seconds, latencies = uvloop.run(
                sb._post_accepts(urls, ["-"] * n, cookie, args.concurrency))
            bares.append((n / seconds, latencies, sb.cpu_seconds(bare.pid) - cpu))
            said = [f"bare {n / seconds:,.0f}"]
            order = run.backends if index % 2 == 0 else run.backends[::-1]
            for backend in order:
                chunk = prepared[backend].post_urls[index * n:(index + 1) * n]
                probe = pg.cpu_seconds if pg and backend == "postgresql" else None
                result = sb.run_posts(prepared[backend], sargs, sites[backend].pid, chunk,
                                      probe)
                posts[backend].append((result, result.server_cpu_seconds))
                said.append(f"{backend} {result.rate:,.1f}")
            log(f"  round {index + 1}/{rounds}: " + ", ".join(said) + " accepts/s")
    bare_rate = _median([rate for rate, _, _ in bares])
    bare_cpu = _median([1000 * cpu / n for _, _, cpu in bares])
    lines = [f"{'POST accept':<11} {'req/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
             f"{'ms CPU':>7} {'PgSQL':>6}  rounds (req/s)",
             f"{'bare':<11} {bare_rate:>9,.1f} {1:>6.3f} "
             f"{_median([statistics.median(lat) * 1000 for _, lat, _ in bares]):>7.1f} "
             f"{'':>7} {bare_cpu:>7.2f} {'-':>6}  "
             + " / ".join(f"{rate:,.0f}" for rate, _, _ in bares)]
    for backend in run.backends:
        results = [r for r, _ in posts[backend]]
        servers = [s for _, s in posts[backend] if s is not None]
        rate = _median([r.rate for r in results])
        row = {"backend": backend, "accepts_per_s": rate, "bare_per_s": bare_rate,
               "ratio": rate / bare_rate,
               "p50_ms": _median([r.latency_p50_ms for r in results]),
               "p99_ms": _median([r.latency_p99_ms for r in results]),
               "site_cpu_ms": _median([1000 * r.site_cpu_seconds / r.offers for r in results]),
               "postgres_cpu_ms": _median([1000 * s / n for s in servers]) if servers else None,
               "runs": [r.rate for r in results], "bare_runs": [rate for rate, _, _ in bares]}
        run.site.append(row)
        pgcpu = "-" if row["postgres_cpu_ms"] is None else f"{row['postgres_cpu_ms']:.2f}"
        lines.append(f"{backend:<11} {rate:>9,.1f} {row['ratio']:>6.3f} {row['p50_ms']:>7.1f} "
                     f"{row['p99_ms']:>7.1f} {row['site_cpu_ms']:>7.2f} {pgcpu:>6}  "
                     + " / ".join(f"{r.rate:,.1f}" for r in results))
    lines.append(f"({rounds} rounds of the bare handler, then both sites in alternating order, "
                 f"{n} distinct offers each, {args.concurrency} in flight; medians; ms CPU per "
                 "request: the server's process (the site with its forwarding worker), and "
                 "the PostgreSQL server's; after each round, one accept receipt and one consent "
                 "forward per offer posted, none held)")
    print("\n".join(lines), flush=True)


# -- 3. the report over --offers offers -------------------------------------------------

def _median_ms(run: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    run()  # warm-up: pages in the caches
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), times


def time_reports(ledger: Ledger, repeat: int) -> tuple[dict[str, tuple[float, list[float]]],
                                                       list[dict[str, Any]]]:
    when = reports.Period(report_bench.SINCE, report_bench.UNTIL)
    timed = {}
    for name, companies in (("one company", ["big"]), ("all companies", report_bench.COMPANIES)):
        timed[name] = _median_ms(
            lambda c=companies: reports.report(ledger, c, when, 10, details=True), repeat)
    return timed, reports.report(ledger, report_bench.COMPANIES, when, 10, details=True)


def part_report(args: argparse.Namespace, pg: Postgres | None, run: Run) -> str | None:
    """Part 3; the URL of the loaded PostgreSQL ledger (part 4 writes into it), if any."""
    report_bench.CACHE.mkdir(parents=True, exist_ok=True)
    path = report_bench.CACHE / f"ledger-{args.offers}-v{report_bench.GENERATOR_VERSION}.db"
    if not path.exists():
        log(f"building the SQLite ledger of {args.offers:,} offers (cached in {path.parent})")
        report_bench.build(path, args.offers)
    results: dict[str, list[dict[str, Any]]] = {}
    url = None
    for backend in run.backends:
        if backend == "sqlite":
            with open_ledger(path) as ledger:
                timed, results[backend] = time_reports(ledger, args.repeat)
            load_s = None
        else:
            assert pg is not None
            url = pg.fresh_url("report")
            log(f"copying {path.name} into PostgreSQL (ledger migrate's copy_to)")
            began = time.monotonic()
            with open_ledger(path, hash_key=report_bench.HASH_KEY) as source:
                copied = copy_to(source, url)
            log("  " + ", ".join(f"{table} {rows:,}" for table, rows in copied.rows.items()
                                 if rows))
            with pg.server.connect(url.rsplit("/", 1)[1]) as conn:
                conn.execute("VACUUM ANALYZE")
            load_s = time.monotonic() - began
            with open_shared(url, hash_key=report_bench.HASH_KEY) as ledger:
                timed, results[backend] = time_reports(ledger, args.repeat)
        for name, (median, times) in timed.items():
            run.report.append({"backend": backend, "report": name, "median_ms": median,
                               "runs_ms": times, "goal_ms": 200 if name == "one company"
                               else 2000, "load_s": load_s})
    if len(results) == 2 and results["sqlite"] != results["postgresql"]:
        raise RuntimeError("the report differs between SQLite and PostgreSQL")
    lines = [f"{'report (details)':<16} {'backend':<11} {'median':>9} {'goal':>8}  runs (ms)"]
    for row in run.report:
        met = "met" if row["median_ms"] < row["goal_ms"] else "NOT met"
        lines.append(f"{row['report']:<16} {row['backend']:<11} {row['median_ms']:>6.0f} ms "
                     f"{row['goal_ms']:>5} ms  {' / '.join(f'{t:.0f}' for t in row['runs_ms'])}"
                     f"  {met}")
    same = "; the reports are equal on both backends" if len(results) == 2 else ""
    loaded = [r["load_s"] for r in run.report if r["load_s"]]
    lines.append(f"({args.offers:,} offers, median of {args.repeat} after a warm-up{same}"
                 + (f"; PostgreSQL: ledger migrate's copy and VACUUM ANALYZE, {loaded[0]:.0f} s)"
                    if loaded else ")"))
    print("\n".join(lines), flush=True)
    return url


# -- 4. the ceiling of the shared ledger ------------------------------------------------

CEILING_COMPANIES = report_bench.COMPANIES
EXECUTOR_CAP = 32  # asyncio's default executor: min(32, CPUs + 4) threads


@dataclass
class WriterResult:
    rejections: int  # completed inside the window
    commits: int  # committed inside the window
    held_ms: list[float]  # per commit inside the window: from the lock taken to committed
    commit_ms: list[float]  # of which the end: NOTIFY, COMMIT (SQLite: and its WAL flush)
    settle_ms: list[float]  # PostgreSQL: then the wait for the WAL flush, the lock let go
    cpu_s: float  # this process's CPU seconds over the window


def _writer(where: str, threads: int, batched: bool, ready: Any, go: Any,
            window: tuple[float, float], out: Any) -> None:
    """One writer process: a Ledger of its own; ``threads`` threads submit rejections (one
    outside recipient each) back to back, through a LedgerWriter if ``batched`` (as the
    gateway's executor threads do) or each in a commit of its own.  Counts what completed
    inside ``window`` (seconds after ``go``), the commits that did, how long each held the
    ledger's write lock, and the process's CPU time."""
    ledger = (open_shared(where, hash_key=report_bench.HASH_KEY)
              if where.startswith("postgresql") else open_ledger(where))
    writer = LedgerWriter(ledger)
    commits: list[tuple[float, float, float]] = []  # (committed at, held ms, commit ms)
    settles: list[tuple[float, float]] = []  # PostgreSQL: (settled at, ms waited for the flush)
    backend: Any = ledger.backend
    # PostgreSQL's transaction under the lock is ``_locked`` (its flush, ``_settle``, comes
    # after the lock is let go); SQLite's is the whole write.
    timed = "_locked" if hasattr(backend, "_locked") else "write"
    plain_write = getattr(backend, timed)

    @contextlib.contextmanager
    def timed_write(*args: Any) -> Iterator[Any]:
        # Yields once it holds the lock (PostgreSQL's advisory lock, SQLite's BEGIN
        # IMMEDIATE) and commits when the block ends.
        with plain_write(*args) as conn:
            locked = time.monotonic()
            yield conn
            body = time.monotonic()
        done = time.monotonic()
        commits.append((done, 1000 * (done - locked), 1000 * (done - body)))

    setattr(backend, timed, timed_write)
    if hasattr(backend, "_settle"):
        plain_settle = backend._settle

        def timed_settle(conn: Any) -> None:
            begun = time.monotonic()
            plain_settle(conn)
            now = time.monotonic()
            settles.append((now, 1000 * (now - begun)))

        backend._settle = timed_settle
    done: list[float] = []
    lock = threading.Lock()
    rng = random.Random(os.getpid())
    ready.put(os.getpid())
    start = go.get()
    begin, end = start + window[0], start + window[1]

    def submit() -> None:
        mine: list[float] = []
        while time.monotonic() < end:
            company = rng.choice(CEILING_COMPANIES)
            message_id = f"<{new_offer_id()}@{company}.example>"
            offers = ((f"c{rng.randrange(10**9)}@example.net", new_offer_id()),)
            if batched:
                writer.record_rejection(company, message_id, offers, job="経理",
                                        channel="求人媒体", stage="一次面接")
            else:
                ledger.record_rejections([Rejection(company, message_id, offers, "経理",
                                                    "求人媒体", "一次面接")])
            mine.append(time.monotonic())  # when it completed
        with lock:
            done.extend(mine)

    while time.monotonic() < start:
        time.sleep(0.001)
    workers = [threading.Thread(target=submit) for _ in range(threads)]
    for t in workers:
        t.start()
    while time.monotonic() < begin:  # the warm-up; CPU is counted from here
        time.sleep(0.001)
    cpu = time.process_time()  # every thread of the process
    while time.monotonic() < end:
        time.sleep(0.01)
    cpu = time.process_time() - cpu
    for t in workers:
        t.join()
    writer.close()
    ledger.close()
    inside = [c for c in commits if begin <= c[0] < end]
    out.put(WriterResult(sum(1 for t in done if begin <= t < end), len(inside),
                         [c[1] for c in inside], [c[2] for c in inside],
                         [ms for at, ms in settles if begin <= at < end], cpu))


def ceiling_run(where: str, writers: int, threads: int, batched: bool, seconds: float,
                server_cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """``writers`` processes started, each ready with its ledger open, then all released at
    once; offers and commits per second over the same window of ``seconds``, the lock
    held per commit, and CPU per offer of the writers and (``server_cpu``) the server."""
    ctx = multiprocessing.get_context("spawn")  # nothing of this process's state shared
    ready, go, out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    window = (1.0, 1.0 + seconds)  # a second of warm-up
    procs = [ctx.Process(target=_writer, args=(where, threads, batched, ready, go, window,
                                                out)) for _ in range(writers)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        start = time.monotonic() + 0.5
        for _ in procs:
            go.put(start)
        server = 0.0
        if server_cpu is not None:  # the same window, from this process
            while time.monotonic() < start + window[0]:
                time.sleep(0.001)
            server = server_cpu()
            while time.monotonic() < start + window[1]:
                time.sleep(0.005)
            server = server_cpu() - server
        results = [out.get(timeout=seconds + 180) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    offers = sum(r.rejections for r in results)  # one outside recipient each
    commits = sum(r.commits for r in results)
    held = [h for r in results for h in r.held_ms]
    ends = [c for r in results for c in r.commit_ms]
    settled = [c for r in results for c in r.settle_ms]
    return {"writers": writers, "threads": threads, "batched": batched,
            "offers_per_s": offers / seconds, "commits_per_s": commits / seconds,
            "mean_batch": offers / commits if commits else 0.0,
            "ms_per_commit": 1000 * seconds / commits if commits else None,
            "lock_held_ms": statistics.mean(held) if held else None,
            "commit_end_ms": statistics.mean(ends) if ends else None,
            "settle_ms": statistics.mean(settled) if settled else None,
            "writers_cpu_ms_per_offer": 1000 * sum(r.cpu_s for r in results) / offers
            if offers else None,
            "server_cpu_ms_per_offer": 1000 * server / offers
            if offers and server_cpu is not None else None}


def part_ceiling(args: argparse.Namespace, pg: Postgres | None, url: str | None,
                 workdir: Path, run: Run) -> None:
    if pg is None:
        log("ceiling: PostgreSQL is not among the backends; skipped")
        return
    where = url or pg.fresh_url("ceiling")
    if url is None:
        open_shared(where, hash_key=report_bench.HASH_KEY).close()
    configs = [("postgresql", 1, 1, False), ("postgresql", args.writers, 1, False),
               ("postgresql", args.writers, args.threads, True)]
    if args.threads < EXECUTOR_CAP:  # a bigger host's executor: more in flight, bigger batches
        configs.append(("postgresql", args.writers, EXECUTOR_CAP, True))
    if "sqlite" in run.backends:
        sqlite_path = workdir / "ceiling.db"
        open_ledger(sqlite_path).close()
        configs.append(("sqlite", args.writers, args.threads, True))
    for backend, writers, threads, batched in configs:
        log(f"ceiling: {backend}, {writers} writer(s) x {threads} thread(s), "
            f"{'LedgerWriter' if batched else 'a commit per rejection'}")
        target = where if backend == "postgresql" else str(workdir / "ceiling.db")
        row = ceiling_run(target, writers, threads, batched, args.ceiling_seconds,
                          pg.cpu_seconds if backend == "postgresql" else None)
        row["backend"] = backend
        run.ceiling.append(row)
    lines = [f"{'ceiling':<11} {'writers':>7} {'threads':>7} {'batching':<12} {'offers/s':>9} "
             f"{'commits/s':>9} {'batch':>6} {'ms/commit':>9} {'lock held':>9} "
             f"{'commit':>7} {'settle':>7} {'writers':>8} {'server':>7}",
             f"{'':<11} {'':>7} {'':>7} {'':<12} {'':>9} {'':>9} {'':>6} {'':>9} "
             f"{'ms':>9} {'ms':>7} {'ms':>7} {'ms CPU':>8} {'ms CPU':>7}"]

    def ms(value: float | None, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    for r in run.ceiling:
        lines.append(
            f"{r['backend']:<11} {r['writers']:>7} {r['threads']:>7} "
            f"{'LedgerWriter' if r['batched'] else 'none':<12} "
            f"{r['offers_per_s']:>9,.0f} {r['commits_per_s']:>9,.0f} {r['mean_batch']:>6.1f} "
            f"{ms(r['ms_per_commit']):>9} {ms(r['lock_held_ms']):>9} "
            f"{ms(r['commit_end_ms']):>7} {ms(r['settle_ms']):>7} "
            f"{ms(r['writers_cpu_ms_per_offer']):>8} "
            f"{ms(r['server_cpu_ms_per_offer']):>7}")
    rtt, commit = probe(pg.fresh_url("probe"))
    run.ceiling_ratio["probe_ms"] = {"round_trip": rtt, "commit": commit}
    lines.append(f"this server: a round trip (SELECT 1) {rtt:.3f} ms, a commit of one row "
                 f"{commit:.3f} ms (medians of {PROBES})")
    ceiling = next(r for r in run.ceiling if r["backend"] == "postgresql" and r["batched"])
    need = _host_need(run)
    if need is not None:
        rate, label = need
        ratio = ceiling["offers_per_s"] / rate
        run.ceiling_ratio |= {"ceiling_offers_per_s": ceiling["offers_per_s"],
                             "host_offers_per_s": rate, "host_row": label, "ratio": ratio,
                             "goal": CEILING_GOAL, "met": ratio >= CEILING_GOAL}
        lines.append(f"one gateway host recorded {rate:,.0f} offers/s ({label}); the ceiling "
                     f"({ceiling['writers']} writers x {ceiling['threads']} threads) is "
                     f"{ratio:.1f}x that (goal >= {CEILING_GOAL:.0f}x: "
                     f"{'met' if ratio >= CEILING_GOAL else 'NOT met'})")
    else:
        lines.append("(no gateway figure in this run to compare with: --parts gateway)")
    lines.append(f"({args.ceiling_seconds:.0f} s after 1 s of warm-up; one outside recipient "
                 "per rejection; PostgreSQL " + ("holding the report's ledger"
                                                 if url else "on a new ledger") + "; per "
                 "commit: the write lock held from taken to committed, and of that the "
                 "commit itself; on PostgreSQL then the wait for the WAL flush, the lock "
                 "let go (settle); CPU per offer: all writer processes, the server's)")
    print("\n".join(lines), flush=True)


PROBES = 200


def probe(url: str) -> tuple[float, float]:
    """Medians, in ms, of a round trip (``SELECT 1``) and of a commit of one row (an INSERT
    in autocommit: the WAL flush a commit waits for), on a connection of its own."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (n integer)")
        found = []
        for sql in ("SELECT 1", "INSERT INTO probe VALUES (1)"):
            times = []
            for _ in range(PROBES):
                began = time.perf_counter()
                conn.execute(sql)
                times.append((time.perf_counter() - began) * 1000)
            found.append(statistics.median(times))
    return found[0], found[1]


def _host_need(run: Run) -> tuple[float, str] | None:
    """The most offers per second one gateway host recorded in part 1, preferring its rows
    on PostgreSQL (the hosts that would share the ledger)."""
    rows = [r for r in run.gateway if r.get("gateway_msgs_per_s")]
    pg_rows = [r for r in rows if r["backend"] == "postgresql"]
    best = max(pg_rows or rows, key=lambda r: r["offers_per_s"], default=None)
    if best is None:
        return None
    return best["offers_per_s"], f"{best['workload']} on {best['backend']}"


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("both", *BACKENDS), default="both")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="gateway: of relay_bench's rejection workloads")
    parser.add_argument("--messages", type=int, default=3000, help="gateway: per run")
    parser.add_argument("--pairs", type=int, default=3, help="gateway: rounds")
    parser.add_argument("--warmup", type=int, default=500, help="gateway: warm-up messages")
    parser.add_argument("--site-offers", type=int, default=2000, help="site: POSTs per run")
    parser.add_argument("--site-rounds", type=int, default=3, help="site: rounds")
    parser.add_argument("--concurrency", type=int, default=50, help="site: POSTs in flight")
    parser.add_argument("--offers", type=int, default=1_000_000, help="the report's ledger")
    parser.add_argument("--repeat", type=int, default=5, help="report timings (median)")
    parser.add_argument("--writers", type=int, default=8, help="ceiling: writer processes")
    parser.add_argument("--threads", type=int, default=min(32, (os.cpu_count() or 1) + 4),
                        help="ceiling: threads per writer (the gateway's executor: "
                             "min(32, CPUs + 4))")
    parser.add_argument("--ceiling-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown or not args.parts:
        parser.error(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    args.backends = BACKENDS if args.backend == "both" else (args.backend,)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not args.workloads or any(w not in WORKLOADS for w in args.workloads):
        parser.error(f"--workloads: of {', '.join(WORKLOADS)}")
    return args


def machine() -> str:
    from relay_bench import cpu_model

    model = cpu_model()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"nproc {len(os.sched_getaffinity(0))}, {model}; Python "
            f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, Linux "
            f"{platform.release()}; load average {load}")


@contextlib.contextmanager
def postgres(backends: Sequence[str]) -> Iterator[Postgres | None]:
    if "postgresql" not in backends:
        yield None
        return
    server = PostgresServer(durable=True, settings=PG_SETTINGS)
    with server:
        yield Postgres(server)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    run = Run(dt.datetime.now(dt.UTC), args.backends)
    workdir = Path(tempfile.mkdtemp(prefix="backends-bench-", dir="/tmp"))
    workdir.chmod(0o755)  # Postfix's daemons must reach their directories in here
    print(f"backends: {', '.join(run.backends)}; {run.started:%Y-%m-%d %H:%M} UTC; "
          f"{machine()}", flush=True)
    try:
        with postgres(run.backends) as pg:
            if pg is not None:
                run.pg_server = pg.describe()
                print("PostgreSQL " + ", ".join(f"{k} {v}" for k, v in run.pg_server.items()),
                      flush=True)
            url = None
            for part in args.parts:
                print(flush=True)
                try:
                    if part == "gateway":
                        part_gateway(args, pg, workdir, run)
                    elif part == "site":
                        part_site(args, pg, workdir, run)
                    elif part == "report":
                        url = part_report(args, pg, run)
                    elif part == "ceiling":
                        part_ceiling(args, pg, url, workdir, run)
                except Exception as exc:
                    run.failures.append(f"{part}: {exc}")
                    log(f"{part} FAILED: {exc}")
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for failure in run.failures:
        print(f"FAILED {failure}")
    if args.json:
        print(json.dumps(run.__dict__, default=str, ensure_ascii=False))
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
