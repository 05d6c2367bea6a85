"""Throughput of the career-relay gateway next to Postfix, on loopback.

Run as::

    .venv/bin/python bench/relay_bench.py [--messages 5000] [--sessions 20] [--size 10240]

(as root: the Postfix side needs ``postfix start``). Both systems get the same
work: ``smtp-source`` submits N copies of one ~10 KB multipart message over S
parallel sessions, and each system relays them to the same ``smtp-sink``.

What is measured: the end-to-end rate, N divided by the time from starting
smtp-source until the sink has received all N messages (and smtp-source has
seen its last 250). Both systems are store-and-forward, so the rate at which
smtp-source gets its 250 replies ("intake") is reported too.

How arrival is counted: ``smtp-sink -c`` writes a running counter line
(``sess=.. quit=.. mesg=N``, separated by CR) every time a session ends or a
"." is received; a reader thread stamps the moment ``mesg`` reaches each
value. That is exact and free, unlike ``smtp-sink -d`` (one file per message,
which would make the sink the bottleneck). After the sink has everything we
also check that nothing is left behind: Postfix's queue is empty and its log
has exactly N more ``status=sent`` lines; the gateway's ``<queue.dir>/queue/``
holds no file (a message is done when its spool file is gone).

CPU: the server's CPU seconds during the measured run, summed over its whole
process tree from /proc (live processes plus what they reaped), so that
Postfix's many daemons and the gateway's optional worker processes both count.

``--rejection`` adds a run in which a gateway with the company acme (DKIM key,
selector "bench") gets a rejection with the marker and two outside recipients
per message: 2N signed copies with a link each must reach the sink, the ledger
must gain 2N offers, and a 5-message sample dumped by ``smtp-sink -d`` is
checked first (links, tokens, DKIM). ``--profile`` attaches py-spy to it.

``--paths`` (what ``make bench`` should run) measures every path a company's mail
takes through the gateway, each next to Postfix relaying the same mail, in
alternating pairs: for each workload one gateway of its own (workdir, config with
the company acme and its DKIM key, spool, ledger), a warm-up of both, then
Postfix, gateway, Postfix, gateway, ... (``--pairs``, default 3; ``--messages``,
default 3000, over 20 sessions; ``--workloads a,b`` for a subset). One Postfix
instance and one counting sink serve the whole run. The workloads (``PATHS``):

- ``unconfigured``: an ordinary mail from sender@other.example, a domain no
  company has (acme is configured); goal gateway >= 1.5 x Postfix;
- ``marker-ordinary``: an interview invitation from hr@acme.example, acme with
  ``detect = "marker"``: relayed unchanged; >= 1.5;
- ``auto-ordinary``: the same, ``detect = "auto"`` (the classifier reads it); >= 1.2;
- ``marker-unmarked-rejection``: an お祈りメール without marker or header, ``detect =
  "marker"``: relayed unchanged, and the ledger's unmarked_rejections grows by
  exactly N; >= 1.5;
- ``rejection-1`` / ``rejection-2``: the marked rejection to one / two new outside
  recipients per message (``-N``, a domain per run): 1 / 2 signed copies with a
  link each, offers grow by N / 2N; >= 1.2 / >= 0.9.

Before its pairs, each workload gets a sample check through a gateway of its own
and ``smtp-sink -d``: the rejections' copies as for ``--rejection``, the others
byte for byte (what smtp-source sent, directly to the same sink, against what the
gateway delivered, less its one Received: field). The table gives per workload
the medians of both systems' msgs/s, their ratio, the range of the pairs' own
ratios, CPU ms per message of both, and the goal (met / NOT met); then the
machine. The exit status is 1 only when a run or a check failed, not for a
missed goal.

``--ledger-url postgresql://...`` puts every gateway's ledger in that PostgreSQL database
(``ledger.url``) instead of a SQLite file each; the ledger checks count differences, so the
gateways may share it (``bench/backends_bench.py`` gives each a database of its own).

Everything listens on and connects to 127.0.0.1 only, every wait has a
timeout, and every process started here is stopped in ``finally`` blocks.
"""

from __future__ import annotations

import abc
import argparse
import collections
import contextlib
import datetime as dt
import email
import email.policy
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))  # relay_messages, also when not run as a script

import dkim  # noqa: E402
from relay_messages import KINDS, MARKER, RECIPIENT, build_message  # noqa: E402

from career_relay.dkimkeys import generate_key, public_record  # noqa: E402 - sys.path above
from career_relay.ledger import open_ledger, open_shared  # noqa: E402
from career_relay.tokens import LinkSigner  # noqa: E402
from gateway.spool import Spool  # noqa: E402
from tests.peers.postfix import (  # noqa: E402
    PostfixInstance,
    postfix_available,
)

LOOPBACK = "127.0.0.1"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
HELO_NAME = "bench.test"
# The --rejection run and --paths: company acme (domains acme.example), DKIM selector "bench".
PUBLIC_URL = "http://consent.bench.test"
SIGNING_KEY = "bench-secret-0123456789abcdef"
COMPANY_ID = "acme"
COMPANY_DOMAIN = "acme.example"
DKIM_SELECTOR = "bench"
REJECTION_RCPTS = 2  # outside recipients per rejection: two signed copies each
REJECTION_GOAL = 0.5  # issue 3: rejections at >= 0.5 x Postfix's pass-through rate
LEDGER_WAIT = 15.0  # seconds deferred ledger tallies may take to be committed after a run
LINK = re.compile(re.escape(PUBLIC_URL) + r"/c/([A-Za-z0-9_.\-]+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A run could not be completed or its result failed a check."""


# -- the test messages (bench/relay_messages.py) ------------------------------


def write_message_files(workdir: Path, target_size: int, kind: str) -> tuple[Path, Path, int]:
    """Write the message of ``kind`` in wire form and in the form smtp-source needs.

    ``<kind>.eml`` is the message as it goes over the wire (CRLF). smtp-source
    ``-F`` strips only the LF of each line and then appends CRLF, so a CRLF file
    would go out as CR CR LF (checked against a raw socket with Postfix 3.7's
    smtp-source); it therefore gets ``<kind>.lf``, the same bytes with LF
    endings, and puts the CRLF back on the wire.
    """
    eml, lf = workdir / f"{kind}.eml", workdir / f"{kind}.lf"
    if eml.exists():  # one file per kind, shared by the workloads that send it
        return eml, lf, eml.stat().st_size
    wire = build_message(target_size, kind)
    if b"\n" in wire.replace(b"\r\n", b"") or b"\r" in wire.replace(b"\r\n", b""):
        raise BenchError("generated message has a bare CR or LF")
    eml.write_bytes(wire)
    lf.write_bytes(wire.replace(b"\r\n", b"\n"))
    return eml, lf, len(wire)


# -- small process and network helpers --------------------------------------


def free_port() -> int:
    """A currently free TCP port on loopback (the kernel picks a high one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def smtp_greets(port: int) -> bool:
    """True once an SMTP server on the port answers with a 220 greeting."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2.0) as sock:
            greeting = sock.recv(512)
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
                sock.recv(512)
            return greeting.startswith(b"220")
    except OSError:
        return False


def wait_for_smtp(port: int, timeout: float, process: subprocess.Popen[Any] | None) -> None:
    def ready() -> bool:
        if process is not None and process.poll() is not None:
            raise BenchError(f"process exited with status {process.returncode} before listening")
        return smtp_greets(port)

    if not wait_until(ready, timeout, poll=0.1):
        raise BenchError(f"nothing answered SMTP on {LOOPBACK}:{port} within {timeout}s")


def stop_process_group(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, a child started with ``start_new_session=True``.

    The whole group is signalled so that worker processes go too; the group id
    is the child's own pid, so this can only reach processes started here.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
    # Workers may outlive a leader that exited by itself.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def session_cpu_seconds(session_id: int) -> float:
    """CPU seconds of every live process in a session, including reaped children.

    Summing utime+stime+cutime+cstime over the live processes counts each
    process that already exited exactly once, in the parent that reaped it
    (Postfix's master reaps its smtpd/smtp/cleanup daemons as they recycle).
    """
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat_line = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Fields after "(comm)": index 0 is field 3 (state), so field k is k-3.
        fields = stat_line.rpartition(")")[2].split()
        if int(fields[3]) != session_id:  # field 6: session
            continue
        ticks += sum(int(value) for value in fields[11:15])  # fields 14-17
    return ticks / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and all its live descendants (found by parent pid).

    The gateway's extra workers run in sessions of their own (so that a
    Ctrl-C reaches only the supervisor), so a session sum would miss them.
    """
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(stats[pid][1] for pid in tree if pid in stats) / CLK_TCK


def session_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[3])


# -- the sink -----------------------------------------------------------------


class CountingSink:
    """``smtp-sink -c`` on loopback, with a thread that timestamps arrivals."""

    _MESG = re.compile(rb"mesg=(\d+)")

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self._log = log_path.open("wb")
        # -u: smtp-sink refuses to keep running as root; -m/backlog 512: never
        # make the sink the limit for 20+ parallel relaying sessions.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.process = subprocess.Popen(
            [SMTP_SINK, *user, "-c", "-m", "512", f"{LOOPBACK}:{port}", "512"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        # _arrivals[i] is the monotonic time at which message i+1 arrived.
        self._arrivals: list[float] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_counters, daemon=True)
        self._reader.start()

    def _read_counters(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        pending = b""
        # os.read returns whatever is there: no buffering delay on the stamps.
        while chunk := os.read(stdout.fileno(), 65536):
            now = time.monotonic()
            *lines, pending = (pending + chunk).split(b"\r")
            for line in lines:
                match = self._MESG.search(line)
                if match is None:
                    continue
                count = int(match.group(1))
                with self._lock:
                    while len(self._arrivals) < count:
                        self._arrivals.append(now)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._arrivals)

    def arrival_time(self, count: int) -> float:
        """When the ``count``-th message (1-based) arrived."""
        with self._lock:
            return self._arrivals[count - 1]

    def wait_for(self, count: int, timeout: float) -> bool:
        return wait_until(lambda: self.count >= count, timeout)

    def start(self, timeout: float = 10.0) -> None:
        wait_for_smtp(self.port, timeout, self.process)

    def stop(self) -> None:
        try:
            stop_process_group(self.process)
        finally:
            self._reader.join(timeout=5)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self._log.close()


# -- systems under test --------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What smtp-source sends, and how many deliveries the sink must see per message."""

    name: str
    message_lf: Path
    sender: str
    rcpts_per_message: int = 1
    # Rejections: one copy per outside recipient, each its own transaction at the sink.
    copies_per_message: int = 1
    # smtp-source -N plus a domain of its own per run: every recipient of every run is
    # new, so each rejection really records new offers (the ledger is idempotent on
    # Message-ID and recipient, and smtp-source sends one message, one Message-ID).
    unique_rcpts: bool = False


_RUN_NUMBERS = itertools.count(1)


def source_envelope(workload: Workload) -> list[str]:
    """smtp-source's sender and recipient options for one run of ``workload``."""
    options = ["-f", workload.sender]
    if workload.unique_rcpts:
        # -N -r 2 -t rcpt@run7.candidate.example: <1rcpt@run7...>, <2rcpt@run7...>, ...
        options += ["-N", "-t", f"rcpt@run{next(_RUN_NUMBERS)}.candidate.example"]
    else:
        options += ["-t", RECIPIENT]
    if workload.rcpts_per_message > 1:
        options += ["-r", str(workload.rcpts_per_message)]
    return options


@dataclass
class RunResult:
    system: str
    workload: str
    messages: int
    deliveries: int
    sessions: int
    elapsed_s: float
    msgs_per_s: float
    intake_msgs_per_s: float
    cpu_s: float
    cpu_ms_per_msg: float


class SystemUnderTest(abc.ABC):
    """A relay listening on ``port`` and delivering to the sink."""

    name = "?"
    port = 0

    @abc.abstractmethod
    def pending(self) -> int:
        """Messages accepted but not yet handed to the sink, per the system's own state."""

    @abc.abstractmethod
    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the system's processes."""

    def before_run(self) -> None:  # noqa: B027 - a hook: most systems need nothing here
        """Remember whatever check_after_run compares against."""

    def check_after_run(self, messages: int, workload: Workload) -> None:  # noqa: B027
        """Extra consistency checks once all messages reached the sink (an optional hook)."""

    def profile_pid(self) -> int | None:
        """The process py-spy attaches to (with --subprocesses), if any."""
        return None


class PostfixSystem(SystemUnderTest):
    name = "Postfix"

    def __init__(self, instance: PostfixInstance) -> None:
        self.instance = instance
        self.port = instance.smtpd_port
        self._sent_before = 0

    def pending(self) -> int:
        return len(self.instance.queued_files())

    def cpu_seconds(self) -> float:
        pid = self.instance.master_pid()
        if pid is None:
            raise BenchError("Postfix master is not running")
        # The master daemon calls setsid(), so its session is all of its daemons.
        return session_cpu_seconds(session_of(pid))

    def before_run(self) -> None:
        self._sent_before = self.instance.sent_count()

    def check_after_run(self, messages: int, workload: Workload) -> None:
        # One status=sent line per recipient (each message's recipients share one
        # transaction to the sink: one relayhost, one domain).
        sent = self.instance.sent_count() - self._sent_before
        expected = messages * workload.rcpts_per_message
        if sent != expected:
            raise BenchError(f"Postfix log has {sent} new status=sent lines, expected {expected}")


@dataclass(frozen=True)
class LedgerDelta:
    """What each message must add to the company's figures in the gateway's ledger."""

    offers: int = 0  # rows in offers: one per outside recipient of a rejection
    rejections: int = 0  # daily_counts.rejections
    unmarked: int = 0  # daily_counts.unmarked_rejections: classifier hits, no marker

    def times(self, messages: int) -> tuple[int, int, int]:
        return messages * self.offers, messages * self.rejections, messages * self.unmarked


class GatewaySystem(SystemUnderTest):
    name = "career-relay"

    def __init__(
        self,
        process: subprocess.Popen[Any],
        port: int,
        spool_queue: Path,
        ledger: Path | None = None,
        expect: LedgerDelta | None = None,
        ledger_url: str | None = None,
    ) -> None:
        self.process = process
        self.port = port
        self.spool_queue = spool_queue
        self.ledger = ledger
        self.ledger_url = ledger_url  # the ledger is in PostgreSQL, not in the file
        self.expect = expect
        self._ledger_before = (0, 0, 0)

    def pending(self) -> int:
        if self.process.poll() is not None:
            raise BenchError(f"gateway exited with status {self.process.returncode}")
        # Queue files, plus fresh mail still in the journal (gateway/journal.py).
        spool = Spool(self.spool_queue.parent)
        return sum(1 for _ in spool.ids()) + sum(1 for _ in spool.journal_records())

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)

    def profile_pid(self) -> int | None:
        return self.process.pid

    def ledger_counts(self) -> tuple[int, int, int]:
        """(offers, rejections, unmarked rejections) of acme in the gateway's ledger;
        zeros before it exists."""
        offers_sql = "SELECT count(*) FROM offers WHERE company = ?"
        counts_sql = ("SELECT coalesce(sum(rejections), 0), coalesce(sum(unmarked_rejections), 0)"
                      " FROM daily_counts WHERE company = ?")
        if self.ledger is None:
            return 0, 0, 0
        if self.ledger_url is not None:
            import psycopg  # only for a ledger in PostgreSQL

            with psycopg.connect(self.ledger_url, autocommit=True) as pg:
                (offers,) = pg.execute(offers_sql.replace("?", "%s"), (COMPANY_ID,)).fetchone()
                rejections, unmarked = pg.execute(counts_sql.replace("?", "%s"),
                                                  (COMPANY_ID,)).fetchone()
            return int(offers), int(rejections), int(unmarked)
        if not self.ledger.exists():
            return 0, 0, 0
        with contextlib.closing(sqlite3.connect(self.ledger, timeout=30.0)) as conn:
            (offers,) = conn.execute(offers_sql, (COMPANY_ID,)).fetchone()
            rejections, unmarked = conn.execute(counts_sql, (COMPANY_ID,)).fetchone()
        return int(offers), int(rejections), int(unmarked)

    def before_run(self) -> None:
        self._ledger_before = self.ledger_counts()

    def check_after_run(self, messages: int, workload: Workload) -> None:
        """With a company configured: exactly the offers and counts ``expect`` says.

        Offers and rejections are committed before the 250; the gateway may commit other
        tallies (unmarked_rejections) a little later, in batches: wait for them, bounded.
        """
        if self.ledger is None or self.expect is None:
            return
        expected = self.expect.times(messages)
        grown: tuple[int, ...] = ()

        def arrived() -> bool:
            nonlocal grown
            after = self.ledger_counts()
            grown = tuple(now - was for now, was in zip(after, self._ledger_before, strict=True))
            return grown == expected or any(g > e for g, e in zip(grown, expected, strict=True))

        wait_until(arrived, LEDGER_WAIT, poll=0.1)
        if grown != expected:
            raise BenchError(
                "ledger: {} new offers, {} rejections and {} unmarked rejections counted, "
                "expected {}, {} and {}".format(*grown, *expected)
            )


def run_once(
    system: SystemUnderTest,
    sink: CountingSink,
    workload: Workload,
    messages: int,
    sessions: int,
    timeout: float,
) -> RunResult:
    """Submit ``messages`` through ``system`` and time their arrival at the sink.

    The sink must receive ``messages * workload.copies_per_message`` deliveries;
    the rate is still messages (what smtp-source submitted) per second.
    """
    if system.pending():
        raise BenchError(f"{system.name} still has {system.pending()} queued messages")
    system.before_run()
    deliveries = messages * workload.copies_per_message
    sink_before = sink.count
    target = sink_before + deliveries
    cpu_before = system.cpu_seconds()
    command = [
        SMTP_SOURCE, "-4", "-s", str(sessions), "-m", str(messages),
        "-F", str(workload.message_lf), "-M", HELO_NAME, *source_envelope(workload),
        f"{LOOPBACK}:{system.port}",
    ]  # fmt: skip
    started = time.monotonic()
    try:
        source = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"smtp-source did not finish within {timeout}s") from exc
    intake_done = time.monotonic()
    if source.returncode != 0:
        raise BenchError(
            f"smtp-source failed against {system.name} (exit {source.returncode}): "
            f"{source.stderr.strip() or source.stdout.strip()}"
        )
    remaining = max(1.0, timeout - (intake_done - started))
    if not sink.wait_for(target, remaining):
        raise BenchError(
            f"{system.name}: the sink got {sink.count - sink_before} of {deliveries} "
            f"messages within {timeout}s ({system.pending()} still queued)"
        )
    finished = max(sink.arrival_time(target), intake_done)
    cpu_used = system.cpu_seconds() - cpu_before
    # Delivery is confirmed by the sink; the queue file is removed right after.
    if not wait_until(lambda: system.pending() == 0, 30.0):
        raise BenchError(f"{system.name}: {system.pending()} messages left in its queue")
    time.sleep(0.3)  # a duplicate delivery would show up here
    if sink.count != target:
        raise BenchError(
            f"{system.name}: the sink got {sink.count - sink_before} messages, "
            f"expected {deliveries}"
        )
    system.check_after_run(messages, workload)
    elapsed = finished - started
    return RunResult(
        system=system.name,
        workload=workload.name,
        messages=messages,
        deliveries=deliveries,
        sessions=sessions,
        elapsed_s=round(elapsed, 3),
        msgs_per_s=round(messages / elapsed, 1),
        intake_msgs_per_s=round(messages / (intake_done - started), 1),
        cpu_s=round(cpu_used, 2),
        cpu_ms_per_msg=round(1000 * cpu_used / messages, 3),
    )


def measure(
    system: SystemUnderTest,
    sink: CountingSink,
    workload: Workload,
    args: argparse.Namespace,
    profile: Path | None = None,
) -> list[RunResult]:
    """A warm-up run, then ``--repeat`` measured runs (py-spy attached to those if asked)."""
    if args.warmup > 0:
        warm = run_once(system, sink, workload, args.warmup, args.sessions, args.timeout)
        log(f"  warm-up  {warm.messages:>6} msgs  {warm.msgs_per_s:>8.1f} msgs/s")
    results: list[RunResult] = []
    with contextlib.ExitStack() as stack:
        pid = system.profile_pid()
        if profile is not None and pid is not None:
            stack.enter_context(py_spy(pid, profile))
        for index in range(args.repeat):
            result = run_once(system, sink, workload, args.messages, args.sessions, args.timeout)
            log(
                f"  run {index + 1}/{args.repeat}  {result.messages:>6} msgs  "
                f"{result.msgs_per_s:>8.1f} msgs/s  (intake {result.intake_msgs_per_s:.1f}/s, "
                f"{result.deliveries} delivered, {result.elapsed_s:.2f} s, "
                f"CPU {result.cpu_s:.2f} s)"
            )
            results.append(result)
    return results


@contextlib.contextmanager
def postfix_system(workdir: Path, port: int, sink_port: int) -> Iterator[PostfixSystem]:
    instance = PostfixInstance(workdir / "postfix", port, f"[{LOOPBACK}]:{sink_port}")
    try:
        instance.start()
        yield PostfixSystem(instance)
    finally:
        instance.stop()


def write_gateway_config(
    workdir: Path,
    port: int,
    sink_port: int,
    workers: int | None,
    company_key: Path | None = None,
    detect: str = "marker",
    ledger_url: str | None = None,
) -> Path:
    """The gateway configuration (SPEC keys); 127.0.0.1 relays without AUTH via allow_ips.

    With ``company_key`` the company acme (acme.example) is configured with that
    DKIM key (selector "bench") and ``detect``, so mail from hr@acme.example with
    the marker is a rejection (with "auto", also mail the classifier calls one);
    without it no company is configured and every message is relayed unchanged.
    With ``ledger_url`` the ledger is in that PostgreSQL database (``ledger.url``).
    """

    def toml_str(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string

    # "marker/no-host": smtp-source's address (loopback) is not acme's own sending host,
    # only allowed to relay (gateway.allow_ips): its mail is nobody's (SPEC 4).
    detect, _, host = detect.partition("/")
    workers_line = f"workers = {workers}\n" if workers is not None else ""
    config = (
        "[gateway]\n"
        f"listen = {toml_str(f'{LOOPBACK}:{port}')}\n"
        'hostname = "relay.bench.test"\n'
        "require_auth = true\n"
        f'allow_ips = ["{LOOPBACK}/32"]\n'
        f"{workers_line}"
        "\n[upstream]\n"
        f"host = {toml_str(LOOPBACK)}\n"
        f"port = {sink_port}\n"
        'tls = "none"\n'
        "\n[queue]\n"
        f"dir = {toml_str(str(workdir / 'spool'))}\n"
        "\n[ledger]\n"
        f"path = {toml_str(str(workdir / 'ledger.db'))}\n"
        + (f"url = {toml_str(ledger_url)}\n" if ledger_url else "")
        + "\n[secrets]\n"
        f"signing_keys = [{toml_str(SIGNING_KEY)}]\n"
    )
    if company_key is not None:
        config += (
            "\n[site]\n"
            f"public_url = {toml_str(PUBLIC_URL)}\n"
            "\n[[companies]]\n"
            f"id = {toml_str(COMPANY_ID)}\n"
            'name = "株式会社アクメ"\n'
            f"domains = [{toml_str(COMPANY_DOMAIN)}]\n"
            f"dkim_selector = {toml_str(DKIM_SELECTOR)}\n"
            f"dkim_key_file = {toml_str(str(company_key))}\n"
            f"detect = {toml_str(detect)}\n"
        )
        if host != "no-host":  # smtp-source on this machine is acme's own host (SPEC 4)
            config += f'allow_ips = ["{LOOPBACK}/32"]\n'
    path = workdir / "career-relay.toml"
    path.write_text(config, encoding="utf-8")
    return path


@contextlib.contextmanager
def gateway_system(
    workdir: Path,
    executable: Path,
    port: int,
    sink_port: int,
    workers: int | None,
    company_key: Path | None = None,
    expect: LedgerDelta | None = None,
    detect: str = "marker",
    ledger_url: str | None = None,
) -> Iterator[GatewaySystem]:
    """The gateway with its config, spool, ledger and log in ``workdir`` (the ledger in
    PostgreSQL with ``ledger_url``); with ``company_key`` (acme configured) every run is
    checked against ``expect``."""
    if not os.access(executable, os.X_OK):
        raise BenchError(f"{executable} is not there yet (pip install -e . in the venv?)")
    workdir.mkdir(mode=0o755, exist_ok=True)
    config = write_gateway_config(workdir, port, sink_port, workers, company_key, detect,
                                  ledger_url)
    # CAREER_RELAY_* variables would override the file (and unknown ones are
    # rejected), so the gateway gets an environment without them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
    log_path = workdir / "gateway.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(executable), "gateway", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
        try:
            wait_for_smtp(port, 30.0, process)
            ledger = workdir / "ledger.db" if company_key is not None else None
            yield GatewaySystem(process, port, workdir / "spool" / "queue", ledger, expect,
                                ledger_url)
        except BenchError as exc:  # the gateway's own log usually says why
            raise BenchError(f"{exc}\n--- {log_path} ---\n{tail(log_path)}") from None
        finally:
            stop_process_group(process)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# -- sample checks (smtp-sink -d) ----------------------------------------------

# Headers smtp-sink -d puts in front of each dumped message (its envelope record).
_SINK_HEADERS = (b"X-Client-Addr:", b"X-Client-Proto:", b"X-Helo-Args:", b"X-Mail-Args:",
                 b"X-Rcpt-Args:")  # fmt: skip


def new_company_key(directory: Path) -> tuple[Path, bytes]:
    """A fresh RSA-2048 DKIM key for acme, and the TXT record a verifier would look up."""
    path = directory / "acme-dkim.pem"
    key = generate_key(path)
    return path, public_record(key).encode()


def split_dump(raw: bytes) -> tuple[list[str], bytes]:
    """An ``smtp-sink -d`` file: the envelope recipients, and the message in CRLF form."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    rcpts: list[str] = []
    while lines and lines[0].startswith(_SINK_HEADERS):
        line = lines.pop(0)
        if line.startswith(b"X-Rcpt-Args:"):
            rcpts.append(line.partition(b":")[2].strip().strip(b"<>").decode())
    return rcpts, b"\r\n".join(lines)


def check_copy(data: bytes, rcpts: list[str], public: bytes) -> tuple[str, str]:
    """One sample copy: (recipient, token) if it has a link in both parts and a valid DKIM
    signature by acme's key, BenchError otherwise."""
    if len(rcpts) != 1:
        raise BenchError(f"a copy went to {rcpts}, expected exactly one recipient")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    signatures = msg.get_all("DKIM-Signature") or []
    if len(signatures) != 1:
        raise BenchError(f"copy for {rcpts[0]} has {len(signatures)} DKIM-Signature fields")
    tags = dict(
        item.strip().partition("=")[::2] for item in re.sub(r"\s+", "", signatures[0]).split(";")
    )
    expected = {"a": "rsa-sha256", "c": "relaxed/relaxed", "d": COMPANY_DOMAIN, "s": DKIM_SELECTOR}
    if any(tags.get(tag) != value for tag, value in expected.items()) or "l" in tags:
        raise BenchError(f"unexpected DKIM-Signature tags {tags} for {rcpts[0]}")
    if not dkim.verify(data, dnsfunc=lambda _name, timeout=5: public):
        raise BenchError(f"the DKIM-Signature of the copy for {rcpts[0]} does not verify")
    tokens: set[str] = set()
    for subtype in ("plain", "html"):
        parts = [p for p in msg.walk() if p.get_content_type() == f"text/{subtype}"]
        if len(parts) != 1:
            raise BenchError(f"copy for {rcpts[0]} has {len(parts)} text/{subtype} parts")
        text = parts[0].get_content()
        found = LINK.findall(text)
        if not found or MARKER in text:
            raise BenchError(f"text/{subtype} of the copy for {rcpts[0]} has no link")
        tokens.update(found)
    if len(tokens) != 1:
        raise BenchError(f"copy for {rcpts[0]} carries {len(tokens)} different tokens")
    return rcpts[0], tokens.pop()


def sample_run(
    workdir: Path,
    args: argparse.Namespace,
    workload: Workload,
    count: int,
    detect: str,
    expect: LedgerDelta,
    reference: bool = False,
) -> tuple[list[tuple[list[str], bytes]], bytes, bytes | None]:
    """Send ``count`` messages of ``workload`` through a gateway of their own (acme
    configured with ``detect`` and a fresh DKIM key, the ledger checked against
    ``expect``) to ``smtp-sink -d``, which writes every delivery to a file.

    Returns what the sink got, each delivery as (envelope recipients, message in CRLF
    form), the DKIM key's TXT record, and with ``reference`` what the same sink wrote
    for one message smtp-source sent it directly, before the gateway's run (smtp-source
    and smtp-sink both add to what is in the file; the reference has the same). The
    measured runs use ``smtp-sink -c`` (a counter only): dumping every message to a
    file would make the sink the bottleneck.
    """
    workdir.mkdir(mode=0o755)
    dump = workdir / "dump"
    dump.mkdir()
    dump.chmod(0o777)  # smtp-sink runs as nobody
    key_path, public = new_company_key(workdir)
    sink_port, port = free_ports(2)
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    with (workdir / "smtp-sink.log").open("wb") as sink_log:
        sink = subprocess.Popen(
            [SMTP_SINK, *user, "-d", f"{dump}/%H%M%S.", f"{LOOPBACK}:{sink_port}", "64"],
            stdout=sink_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    direct: bytes | None = None
    try:
        wait_for_smtp(sink_port, 10.0, sink)
        if reference:
            direct_load = replace(workload, copies_per_message=1)
            run_once(DirectToSink(sink_port), NullSink(dump), direct_load, 1, 1, args.timeout)
            files = list(dump.iterdir())
            if len(files) != 1:
                raise BenchError(f"sample: smtp-sink wrote {len(files)} files for 1 message")
            direct = split_dump(files[0].read_bytes())[1]
            files[0].rename(workdir / "reference.dump")
        with gateway_system(
            workdir, args.career_relay, port, sink_port, args.gateway_workers, key_path,
            expect, detect, args.ledger_url,
        ) as gateway:  # fmt: skip
            run_once(gateway, NullSink(dump), workload, count, 1, args.timeout)
    finally:
        stop_process_group(sink)
    deliveries = [split_dump(path.read_bytes()) for path in sorted(dump.iterdir())]
    return deliveries, public, direct


def check_rejection_sample(
    workdir: Path,
    args: argparse.Namespace,
    workload: Workload,
    count: int = 5,
    detect: str = "marker",
) -> str:
    """Send ``count`` rejections through a gateway of their own to ``smtp-sink -d`` and
    check every copy: one per outside recipient, each with its own link in text/plain
    and text/html (a token that opens the offer for that very recipient), no marker
    left, and a DKIM-Signature by acme's key that dkimpy verifies. Returns a summary.
    """
    expect = LedgerDelta(offers=workload.copies_per_message, rejections=1)
    copies, public, _ = sample_run(workdir, args, workload, count, detect, expect)
    checked = [check_copy(data, rcpts, public) for rcpts, data in copies]
    recipients = {rcpt for rcpt, _ in checked}
    tokens = {token for _, token in checked}
    if len(checked) != count * workload.copies_per_message or len(recipients) != len(checked):
        raise BenchError(f"sample: {len(checked)} copies to {len(recipients)} recipients")
    if len(tokens) != len(checked):
        raise BenchError(f"sample: {len(checked)} copies share {len(tokens)} tokens")
    signer = LinkSigner([SIGNING_KEY], 90)
    ledger = (open_shared(args.ledger_url, hash_key=SIGNING_KEY.encode())  # the gateway's key
              if args.ledger_url else open_ledger(workdir / "ledger.db"))
    try:
        for rcpt, token in checked:
            offer = ledger.offer(signer.offer_id(token))
            if offer is None or offer.recipient != rcpt or offer.company != COMPANY_ID:
                raise BenchError(f"sample: the link sent to {rcpt} does not open its offer")
    finally:
        ledger.close()
    return (
        f"sample: {count} rejections -> {len(checked)} copies, one per recipient; each has "
        f"its own link in text/plain and text/html ({len(tokens)} distinct tokens, each "
        f"opening the offer of its recipient), no marker left, and a DKIM-Signature "
        f"(a=rsa-sha256, c=relaxed/relaxed, d={COMPANY_DOMAIN}, s={DKIM_SELECTOR}) that "
        f"dkimpy verifies; e.g. {PUBLIC_URL}/c/{checked[0][1]}"
    )


_RECEIVED = re.compile(rb"Received:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


def check_unchanged_sample(
    workdir: Path,
    args: argparse.Namespace,
    workload: Workload,
    original: bytes,
    detect: str,
    expect: LedgerDelta,
    count: int = 5,
) -> str:
    """Send ``count`` messages through a gateway of their own to ``smtp-sink -d`` and check
    that each arrived once, to its envelope recipients, as exactly ``original`` behind
    the one Received: field the gateway adds (and the one smtp-sink adds on top), and
    that the sample gateway's ledger grew by ``expect`` per message. Returns a summary."""
    deliveries, _, direct = sample_run(workdir, args, workload, count, detect, expect, True)
    # The direct delivery: smtp-sink's Received: field, then what smtp-source sent.
    assert direct is not None
    sink_received = _RECEIVED.match(direct)
    if sink_received is None or b"(smtp-sink)" not in sink_received.group():
        raise BenchError("sample: smtp-sink's dump does not start with its Received: field")
    sent = direct[sink_received.end() :]
    if not sent.startswith(original):
        raise BenchError("sample: smtp-source did not send the message file as it is")
    if len(deliveries) != count:
        raise BenchError(f"sample: {count} messages arrived as {len(deliveries)} deliveries")
    expected_rcpts = [RECIPIENT] * workload.rcpts_per_message  # no -N here: fixed recipients
    for rcpts, data in deliveries:
        if workload.unique_rcpts or rcpts != expected_rcpts:
            raise BenchError(f"sample: a delivery went to {rcpts}, expected {expected_rcpts}")
        # smtp-sink -d puts its own Received: field on top; then must come the gateway's.
        fields = []
        for _ in range(2):
            received = _RECEIVED.match(data)
            if received is None:
                raise BenchError("sample: a delivery lacks the sink's or the gateway's Received:")
            fields.append(received.group())
            data = data[received.end() :]
        if b"(smtp-sink)" not in fields[0] or b"(career-relay)" not in fields[1]:
            raise BenchError(f"sample: unexpected Received: fields {fields}")
        if data != sent:
            same = next(
                (i for i, (a, b) in enumerate(zip(data, sent, strict=False)) if a != b),
                min(len(data), len(sent)),
            )
            raise BenchError(
                f"sample: the message arrived changed ({len(data)} bytes after the Received: "
                f"field, {len(sent)} sent; the first {same} bytes are the same)"
            )
    offers, rejections, unmarked = expect.times(count)
    return (
        f"sample: {count} messages relayed unchanged: each delivered once to <{RECIPIENT}>, "
        f"byte for byte what smtp-source sent ({len(sent)} bytes as smtp-sink writes them "
        "directly), behind one Received: field of the gateway's; "
        f"its ledger: {offers} offers, {rejections} rejections, {unmarked} unmarked "
        "rejections more"
    )


class DirectToSink(SystemUnderTest):
    """No relay: smtp-source talks to the sink itself (the sample check's reference)."""

    name = "smtp-sink"

    def __init__(self, port: int) -> None:
        self.port = port

    def pending(self) -> int:
        return 0

    def cpu_seconds(self) -> float:
        return 0.0


class NullSink(CountingSink):
    """Counts the files ``smtp-sink -d`` wrote instead of reading ``-c`` counters."""

    def __init__(self, dump: Path) -> None:  # no process of its own
        self.dump = dump

    @property
    def count(self) -> int:
        return sum(1 for _ in self.dump.iterdir())

    def arrival_time(self, count: int) -> float:
        return time.monotonic()


# -- profiling --------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(pid: int, output: Path, rate: int = 250) -> Iterator[None]:
    """``py-spy record`` on ``pid`` and its worker processes while the block runs."""
    executable = shutil.which("py-spy", path=str(REPO_ROOT / ".venv" / "bin")) or shutil.which(
        "py-spy"
    )
    if executable is None:
        raise BenchError("py-spy not found (.venv/bin/pip install py-spy)")
    with (output.parent / f"{output.name}.log").open("wb") as spy_log:
        process = subprocess.Popen(
            [executable, "record", "-p", str(pid), "--subprocesses", "-r", str(rate),
             "-f", "raw", "-o", str(output)],
            stdout=spy_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    time.sleep(1.0)  # let it attach before the load starts
    try:
        yield
    finally:
        # SIGINT makes py-spy stop sampling and write the file.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_process_group(process)
    log(f"  py-spy profile written to {output}")


_FRAME_LINE = re.compile(r":\d+\)$")


def summarise_profile(raw: Path, top: int = 25) -> str:
    """Own and inclusive share of samples per function from py-spy's raw (collapsed) output.

    Lines are ``frame;frame;...;leaf COUNT``; a frame is ``function (file:line)``.
    Line numbers are dropped so a function counts once; ``process ...`` frames (from
    --subprocesses) are skipped. Shares are of all samples (py-spy leaves idle ones out).
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            _FRAME_LINE.sub(")", frame.replace(str(REPO_ROOT) + "/", ""))
            for frame in stack.split(";")
            if frame and not frame.startswith("process ")
        ]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return "py-spy recorded no samples"
    out = [f"{total} samples"]
    for title, counter in (("own time", own), ("inclusive time", inclusive)):
        out.append(f"top {top} by {title}:")
        out += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(out)


# -- reporting ------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def median(results: list[RunResult], attribute: str) -> float | None:
    if not results:
        return None
    return float(statistics.median(getattr(result, attribute) for result in results))


def postfix_version() -> str:
    try:
        out = subprocess.run(
            ["/usr/sbin/postconf", "-dh", "mail_version"], capture_output=True, text=True,
            timeout=10, check=False,
        )  # fmt: skip
        return out.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def print_report(
    args: argparse.Namespace,
    size: int,
    postfix_runs: list[RunResult],
    gateway_runs: list[RunResult],
    out: IO[str],
    rejection_runs: list[RunResult] | None = None,
    rejection_size: int | None = None,
) -> dict[str, Any]:
    rejection_runs = rejection_runs or []
    pf_rate = median(postfix_runs, "msgs_per_s")
    gw_rate = median(gateway_runs, "msgs_per_s")
    ratio = round(gw_rate / pf_rate, 3) if pf_rate and gw_rate else None
    rj_rate = median(rejection_runs, "msgs_per_s")
    rj_ratio = round(rj_rate / pf_rate, 3) if pf_rate and rj_rate else None
    summary: dict[str, Any] = {
        "messages": args.messages,
        "sessions": args.sessions,
        "size": size,
        "repeat": args.repeat,
        "postfix_version": postfix_version(),
        "postfix_msgs_per_s": pf_rate,
        "gateway_msgs_per_s": gw_rate,
        "ratio_gateway_postfix": ratio,
        "postfix_intake_msgs_per_s": median(postfix_runs, "intake_msgs_per_s"),
        "gateway_intake_msgs_per_s": median(gateway_runs, "intake_msgs_per_s"),
        "postfix_cpu_s": median(postfix_runs, "cpu_s"),
        "gateway_cpu_s": median(gateway_runs, "cpu_s"),
        "postfix_cpu_ms_per_msg": median(postfix_runs, "cpu_ms_per_msg"),
        "gateway_cpu_ms_per_msg": median(gateway_runs, "cpu_ms_per_msg"),
        "runs": [asdict(result) for result in postfix_runs + gateway_runs + rejection_runs],
    }
    if args.rejection:
        summary |= {
            "rejection_size": rejection_size,
            "rejection_msgs_per_s": rj_rate,
            "ratio_rejection_postfix": rj_ratio,
            "rejection_goal_met": None if rj_ratio is None else rj_ratio >= REJECTION_GOAL,
            "rejection_copies_per_s": round(REJECTION_RCPTS * rj_rate, 1) if rj_rate else None,
            "rejection_intake_msgs_per_s": median(rejection_runs, "intake_msgs_per_s"),
            "rejection_cpu_s": median(rejection_runs, "cpu_s"),
            "rejection_cpu_ms_per_msg": median(rejection_runs, "cpu_ms_per_msg"),
        }

    def cell(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    rows = [
        ("messages", str(args.messages)),
        ("sessions", str(args.sessions)),
        ("message size (bytes)", str(size)),
        ("measured runs (median)", str(args.repeat)),
        (f"Postfix {summary['postfix_version']} msgs/s", cell(pf_rate, ".1f")),
        ("career-relay gateway msgs/s", cell(gw_rate, ".1f")),
        ("ratio gateway / Postfix", cell(ratio, ".3f")),
        ("Postfix intake msgs/s (250 replies)", cell(summary["postfix_intake_msgs_per_s"], ".1f")),
        ("gateway intake msgs/s (250 replies)", cell(summary["gateway_intake_msgs_per_s"], ".1f")),
        ("Postfix CPU seconds (all daemons)", cell(summary["postfix_cpu_s"], ".2f")),
        ("gateway CPU seconds (process tree)", cell(summary["gateway_cpu_s"], ".2f")),
        ("Postfix CPU ms per message", cell(summary["postfix_cpu_ms_per_msg"], ".3f")),
        ("gateway CPU ms per message", cell(summary["gateway_cpu_ms_per_msg"], ".3f")),
    ]
    if args.rejection:
        goal = summary["rejection_goal_met"]
        rows += [
            ("rejection message size (bytes)", cell(rejection_size, "d")),
            ("gateway rejection msgs/s (2 copies each)", cell(rj_rate, ".1f")),
            ("ratio rejection / Postfix pass-through", cell(rj_ratio, ".3f")),
            (f"goal ratio >= {REJECTION_GOAL}", "n/a" if goal is None else "met" if goal
             else "NOT met"),
            ("rejection copies delivered/s", cell(summary["rejection_copies_per_s"], ".1f")),
            ("rejection intake msgs/s (250 replies)",
             cell(summary["rejection_intake_msgs_per_s"], ".1f")),
            ("rejection CPU seconds (process tree)", cell(summary["rejection_cpu_s"], ".2f")),
            ("rejection CPU ms per message", cell(summary["rejection_cpu_ms_per_msg"], ".3f")),
        ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    print(f"{'':-<{width + 14}}", file=out)
    for label, value in rows:
        print(f"{label:<{width}}  {value:>12}", file=out)
    print(f"{'':-<{width + 14}}", file=out)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False), file=out)
    return summary


# -- --paths: every path a company's mail takes, next to Postfix, in alternating pairs ----


@dataclass(frozen=True)
class MailPath:
    """One workload of --paths: a kind of mail, how acme is configured, and the goal."""

    name: str
    description: str
    kind: str  # the message (relay_messages.KINDS)
    detect: str  # acme's `detect` in the gateway's configuration
    goal: float  # gateway msgs/s >= goal x Postfix msgs/s (medians, same run)
    rcpts: int = 1  # envelope recipients per message
    copies: int = 1  # deliveries per message out of the gateway (Postfix: always one)
    expect: LedgerDelta = LedgerDelta()  # per message, in the gateway's ledger
    unique_rcpts: bool = False  # -N and a new domain per run: new offers every run
    rejection: bool = False  # the sample check: links and DKIM instead of "unchanged"


PATHS: tuple[MailPath, ...] = (
    MailPath("unconfigured", "ordinary mail from sender@other.example, a domain no company "
             "has (acme configured, detect = marker), from a client that only may relay",
             "unconfigured", "marker/no-host", 1.5),
    MailPath("marker-ordinary", "interview invitation from hr@acme.example, detect = marker: "
             "relayed unchanged", "interview", "marker", 1.5),
    MailPath("auto-ordinary", "the same invitation, detect = auto: classified, relayed "
             "unchanged", "interview", "auto", 1.2),
    MailPath("marker-unmarked-rejection", "お祈りメール without marker or header, detect = "
             "marker: relayed unchanged, counted as unmarked", "unmarked", "marker", 1.5,
             expect=LedgerDelta(unmarked=1)),
    MailPath("rejection-1", "marked rejection, 1 outside recipient: 1 signed copy with a "
             "link", "rejection", "marker", 1.2, expect=LedgerDelta(offers=1, rejections=1),
             unique_rcpts=True, rejection=True),
    MailPath("rejection-2", "marked rejection, 2 outside recipients: 2 signed copies with "
             "links", "rejection", "marker", 0.9, rcpts=2, copies=2,
             expect=LedgerDelta(offers=2, rejections=1), unique_rcpts=True, rejection=True),
)  # fmt: skip
PATH_NAMES = tuple(path.name for path in PATHS)


@dataclass
class PathResult:
    path: MailPath
    size: int = 0
    sample: str = ""
    postfix: list[RunResult] = field(default_factory=list)
    gateway: list[RunResult] = field(default_factory=list)
    error: str | None = None

    def pair_ratios(self) -> list[float]:
        return [
            round(gw.msgs_per_s / pf.msgs_per_s, 3)
            for pf, gw in zip(self.postfix, self.gateway, strict=False)
        ]

    def summary(self) -> dict[str, Any]:
        pf_rate = median(self.postfix, "msgs_per_s")
        gw_rate = median(self.gateway, "msgs_per_s")
        ratio = round(gw_rate / pf_rate, 3) if pf_rate and gw_rate else None
        pairs = self.pair_ratios()
        return {
            "workload": self.path.name,
            "description": self.path.description,
            "message_bytes": self.size,
            "recipients_per_message": self.path.rcpts,
            "gateway_copies_per_message": self.path.copies,
            "detect": self.path.detect,
            "pairs": len(pairs),
            "postfix_msgs_per_s": pf_rate,
            "gateway_msgs_per_s": gw_rate,
            "ratio": ratio,
            "pair_ratios": pairs,
            "pair_ratio_min": min(pairs) if pairs else None,
            "pair_ratio_max": max(pairs) if pairs else None,
            "postfix_cpu_ms_per_msg": median(self.postfix, "cpu_ms_per_msg"),
            "gateway_cpu_ms_per_msg": median(self.gateway, "cpu_ms_per_msg"),
            "postfix_intake_msgs_per_s": median(self.postfix, "intake_msgs_per_s"),
            "gateway_intake_msgs_per_s": median(self.gateway, "intake_msgs_per_s"),
            "goal_ratio": self.path.goal,
            "goal_met": None if self.error or ratio is None else ratio >= self.path.goal,
            "sample_check": self.sample,
            "error": self.error,
            "runs": [asdict(run) for run in self.postfix + self.gateway],
        }


def run_path(
    path: MailPath,
    postfix: PostfixSystem,
    sink: CountingSink,
    sink_port: int,
    workdir: Path,
    args: argparse.Namespace,
    result: PathResult,
) -> None:
    """The sample check, then one gateway (its own directory: config, DKIM key, spool,
    ledger, log) for a warm-up of each side and ``--pairs`` pairs: Postfix, then it."""
    eml, message_lf, result.size = write_message_files(workdir, args.size, path.kind)
    gw_load = Workload(
        path.name, message_lf, KINDS[path.kind].sender, rcpts_per_message=path.rcpts,
        copies_per_message=path.copies, unique_rcpts=path.unique_rcpts,
    )  # fmt: skip
    # Postfix relays each message once: its recipients share one transaction to the sink.
    pf_load = replace(gw_load, copies_per_message=1)
    directory = workdir / path.name
    directory.mkdir(mode=0o755)
    log(f"[{path.name}] {path.description}; message {result.size} bytes")
    if path.rejection:
        result.sample = check_rejection_sample(directory / "sample", args, gw_load, 5, path.detect)
    else:
        result.sample = check_unchanged_sample(
            directory / "sample", args, gw_load, eml.read_bytes(), path.detect, path.expect
        )
    log(f"  {result.sample}")
    key_path, _public = new_company_key(directory)
    port = free_port()
    with gateway_system(
        directory / "gateway", args.career_relay, port, sink_port, args.gateway_workers,
        key_path, path.expect, path.detect, args.ledger_url,
    ) as gateway:  # fmt: skip
        log(f"  gateway on {LOOPBACK}:{port}")
        if args.warmup > 0:
            for system, load in ((postfix, pf_load), (gateway, gw_load)):
                warm = run_once(system, sink, load, args.warmup, args.sessions, args.timeout)
                log(f"  warm-up {system.name:<12} {warm.messages:>6} msgs "
                    f"{warm.msgs_per_s:>8.1f} msgs/s")  # fmt: skip
        for index in range(args.pairs):
            pf = run_once(postfix, sink, pf_load, args.messages, args.sessions, args.timeout)
            result.postfix.append(pf)
            gw = run_once(gateway, sink, gw_load, args.messages, args.sessions, args.timeout)
            result.gateway.append(gw)
            log(
                f"  pair {index + 1}/{args.pairs}  Postfix {pf.msgs_per_s:8.1f} msgs/s "
                f"({pf.cpu_ms_per_msg:.2f} ms CPU/msg)  gateway {gw.msgs_per_s:8.1f} msgs/s "
                f"({gw.cpu_ms_per_msg:.2f} ms CPU/msg, {gw.deliveries} delivered)  "
                f"ratio {gw.msgs_per_s / pf.msgs_per_s:.3f}"
            )


def run_paths(
    workdir: Path, sink: CountingSink, sink_port: int, args: argparse.Namespace
) -> list[PathResult]:
    """Every selected workload in turn, against one Postfix instance and the shared sink.
    A workload that fails is reported and the next one still runs."""
    results = [PathResult(path) for path in PATHS if path.name in args.workloads]
    postfix_port = free_port()
    log(f"Postfix on {LOOPBACK}:{postfix_port}")
    with postfix_system(workdir, postfix_port, sink_port) as postfix:
        for result in results:
            try:
                run_path(result.path, postfix, sink, sink_port, workdir, args, result)
            except Exception as exc:  # report it, then go on with the next workload
                result.error = str(exc) or type(exc).__name__
                log(f"[{result.path.name}] FAILED: {result.error}")
    return results


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("?" when it says none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return "?"


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    """What the figures were measured on."""
    model = cpu_model()
    # The gateway's own interpreter (the career-relay script's #! line).
    python = platform.python_version()
    with contextlib.suppress(OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        shebang = args.career_relay.read_text().splitlines()[0]
        if shebang.startswith("#!"):
            out = subprocess.run(
                [shebang[2:].strip(), "-c", "import platform; print(platform.python_version())"],
                capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
            python = out.stdout.strip() or python
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": python,
        "postfix": postfix_version(),
        "kernel": platform.release(),
    }


def print_paths_report(
    args: argparse.Namespace,
    results: list[PathResult],
    machine: dict[str, Any],
    started: dt.datetime,
    elapsed_s: float,
    out: IO[str],
) -> dict[str, Any]:
    def cell(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    summaries = [result.summary() for result in results]
    header = ("workload", "Postfix msgs/s", "gateway msgs/s", "ratio", "pair ratios",
              "Postfix ms CPU/msg", "gateway ms CPU/msg", "goal", "met")  # fmt: skip
    rows = [header]
    for s in summaries:
        pairs = (
            f"{s['pair_ratio_min']:.2f}..{s['pair_ratio_max']:.2f}" if s["pair_ratios"] else "n/a"
        )
        met = "FAILED" if s["error"] else "n/a" if s["goal_met"] is None else (
            "met" if s["goal_met"] else "NOT met")  # fmt: skip
        rows.append((
            s["workload"], cell(s["postfix_msgs_per_s"], ".1f"),
            cell(s["gateway_msgs_per_s"], ".1f"), cell(s["ratio"], ".3f"), pairs,
            cell(s["postfix_cpu_ms_per_msg"], ".2f"), cell(s["gateway_cpu_ms_per_msg"], ".2f"),
            f">= {s['goal_ratio']}", met,
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [text.rjust(width) for text, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([row[0].ljust(widths[0]), *cells])

    rule = "-" * len(line(header))
    print(rule, file=out)
    print(line(header), file=out)
    print(rule, file=out)
    for row in rows[1:]:
        print(line(row), file=out)
    print(rule, file=out)
    print(
        f"{args.pairs} alternating pairs (Postfix, then the gateway) of {args.messages} "
        f"messages, {args.sessions} sessions, warm-up {args.warmup}; medians; ratio = "
        "gateway / Postfix",
        file=out,
    )
    print(
        f"machine: nproc {machine['nproc']}, {machine['cpu_model']}; Python "
        f"{machine['python']}, Postfix {machine['postfix']}, Linux {machine['kernel']}; "
        f"{started:%Y-%m-%d %H:%M} UTC, {elapsed_s / 60:.1f} min",
        file=out,
    )
    for s in summaries:
        if s["error"]:
            print(f"{s['workload']} FAILED: {s['error'].splitlines()[0]}", file=out)
    summary = {
        "mode": "paths",
        "messages": args.messages,
        "pairs": args.pairs,
        "sessions": args.sessions,
        "warmup": args.warmup,
        "size": args.size,
        "gateway_workers": args.gateway_workers,
        "machine": machine,
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed_s, 1),
        "workloads": summaries,
    }
    if args.json:
        print(json.dumps(summary, ensure_ascii=False), file=out)
    return summary


def main_paths(args: argparse.Namespace) -> int:
    """--paths: returns 1 if a run or a check failed (a missed goal is not a failure)."""
    started, clock = dt.datetime.now(dt.UTC), time.monotonic()
    machine = machine_info(args)
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-", dir="/tmp"))
    workdir.chmod(0o755)  # the Postfix daemons (user postfix) must reach their directories
    sink_port = free_port()
    results: list[PathResult] = []
    failed = False
    sink: CountingSink | None = None
    try:
        log(f"work directory {workdir}; sink on {LOOPBACK}:{sink_port}; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
        sink = CountingSink(sink_port, workdir / "smtp-sink.log")
        sink.start()
        try:
            results = run_paths(workdir, sink, sink_port, args)
        except Exception as exc:  # Postfix did not start or stop
            failed = True
            log(f"--paths failed: {exc}")
        failed = failed or any(result.error for result in results)
        log(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print_paths_report(args, results, machine, started, time.monotonic() - clock, sys.stdout)
    finally:
        if sink is not None:
            sink.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


# -- main -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--paths",
        action="store_true",
        help="every path a company's mail takes, each next to Postfix in alternating pairs "
        f"(workloads: {', '.join(PATH_NAMES)})",
    )
    parser.add_argument(
        "--workloads",
        default=None,
        metavar="A,B,...",
        help="with --paths (implied): run only these workloads, in the order above",
    )
    parser.add_argument(
        "--pairs", type=int, default=3, help="with --paths: measured Postfix/gateway pairs"
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=None,
        help="messages per measured run (default 5000; 3000 with --paths)",
    )
    parser.add_argument("--sessions", type=int, default=20, help="parallel smtp-source sessions")
    parser.add_argument("--size", type=int, default=10240, help="approximate message size")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up messages (0: none)")
    parser.add_argument(
        "--repeat", type=int, default=None, help="measured runs (default 1); medians shown"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per run")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary line")
    parser.add_argument("--skip-postfix", action="store_true")
    parser.add_argument(
        "--skip-gateway", action="store_true", help="skip the gateway's pass-through run"
    )
    parser.add_argument(
        "--rejection",
        action="store_true",
        help="also run the gateway on rejections: marker, 2 outside recipients, DKIM-signed",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="RAW",
        help="with --rejection: py-spy record the rejection gateway's measured runs "
        "(-r 250 -f raw) into RAW and print the hot spots",
    )
    parser.add_argument(
        "--gateway-workers", type=int, default=None, help="set gateway.workers in the config"
    )
    parser.add_argument(
        "--career-relay",
        type=Path,
        default=REPO_ROOT / ".venv" / "bin" / "career-relay",
        help="the career-relay executable",
    )
    parser.add_argument(
        "--ledger-url",
        default=None,
        metavar="URL",
        help="every gateway's ledger in this PostgreSQL database (ledger.url), not a SQLite "
        "file each",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.workloads is not None:
        args.paths = True
        args.workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
        unknown = [name for name in args.workloads if name not in PATH_NAMES]
        if unknown or not args.workloads:
            parser.error(f"--workloads: unknown {unknown}; choose from {', '.join(PATH_NAMES)}")
    elif args.paths:
        args.workloads = list(PATH_NAMES)
    if args.paths:
        legacy = [option for option, given in (
            ("--repeat", args.repeat is not None), ("--skip-postfix", args.skip_postfix),
            ("--skip-gateway", args.skip_gateway), ("--rejection", args.rejection),
            ("--profile", args.profile is not None),
        ) if given]  # fmt: skip
        if legacy:
            parser.error(f"{', '.join(legacy)} cannot be used with --paths (use --pairs)")
        args.repeat = 1
    if args.messages is None:
        args.messages = 3000 if args.paths else 5000
    if args.repeat is None:
        args.repeat = 1
    for name in ("messages", "sessions", "size", "repeat", "pairs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.profile is not None and not args.rejection:
        parser.error("--profile needs --rejection")
    return args


def run_rejection(
    workdir: Path, sink: CountingSink, sink_port: int, args: argparse.Namespace
) -> tuple[list[RunResult], int]:
    """The --rejection run: a sample check first, then warm-up and measured runs.

    A gateway of its own (``<workdir>/rejection``: config, spool, ledger, DKIM key,
    log) with the company acme configured, fed the rejection message with two outside
    recipients per message; the shared counting sink must get two copies per message.
    """
    _eml, rejection_lf, size = write_message_files(workdir, args.size, "rejection")
    workload = Workload(
        "rejection", rejection_lf, KINDS["rejection"].sender, rcpts_per_message=REJECTION_RCPTS,
        copies_per_message=REJECTION_RCPTS, unique_rcpts=True,
    )  # fmt: skip
    log(f"rejection message {size} bytes; checking a sample first")
    log("  " + check_rejection_sample(workdir / "rejection-sample", args, workload))
    directory = workdir / "rejection"
    directory.mkdir(mode=0o755)
    key_path, _public = new_company_key(directory)
    port = free_port()
    log(f"career-relay gateway (rejections) on {LOOPBACK}:{port}")
    with gateway_system(
        directory, args.career_relay, port, sink_port, args.gateway_workers, key_path,
        LedgerDelta(offers=REJECTION_RCPTS, rejections=1), ledger_url=args.ledger_url,
    ) as gateway:  # fmt: skip
        runs = measure(gateway, sink, workload, args, args.profile)
    if args.profile is not None:
        print(summarise_profile(args.profile), file=sys.stdout)
    return runs, size


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Turn SIGTERM into SystemExit so the finally blocks stop every process.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    if not args.skip_postfix and not postfix_available():
        log("Postfix is not usable here (needs the postfix package and root); use --skip-postfix")
        return 2
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(tool, os.X_OK):
            log(f"{tool} not found (it comes with the postfix package)")
            return 2
    if args.paths:
        return main_paths(args)

    # The Postfix daemons (user postfix) must reach their directories in here.
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-", dir="/tmp"))
    workdir.chmod(0o755)
    sink_port, postfix_port, gateway_port = free_ports(3)
    postfix_runs: list[RunResult] = []
    gateway_runs: list[RunResult] = []
    rejection_runs: list[RunResult] = []
    rejection_size: int | None = None
    failed = False
    sink: CountingSink | None = None
    try:
        _eml, message_lf, size = write_message_files(workdir, args.size, "pass-through")
        passthrough = Workload("pass-through", message_lf, KINDS["pass-through"].sender)
        log(f"work directory {workdir}; message {size} bytes; sink on {LOOPBACK}:{sink_port}")
        sink = CountingSink(sink_port, workdir / "smtp-sink.log")
        sink.start()
        if not args.skip_postfix:
            log(f"Postfix on {LOOPBACK}:{postfix_port}")
            try:
                with postfix_system(workdir, postfix_port, sink_port) as postfix:
                    postfix_runs = measure(postfix, sink, passthrough, args)
            except Exception as exc:  # report, then still try the gateway
                failed = True
                log(f"Postfix run failed: {exc}")
        if not args.skip_gateway:
            log(f"career-relay gateway on {LOOPBACK}:{gateway_port}")
            try:
                with gateway_system(
                    workdir, args.career_relay, gateway_port, sink_port, args.gateway_workers,
                    ledger_url=args.ledger_url,
                ) as gateway:
                    gateway_runs = measure(gateway, sink, passthrough, args)
            except Exception as exc:
                failed = True
                log(f"gateway run failed: {exc}")
        if args.rejection:
            try:
                rejection_runs, rejection_size = run_rejection(workdir, sink, sink_port, args)
            except Exception as exc:
                failed = True
                log(f"gateway rejection run failed: {exc}")
        print_report(
            args, size, postfix_runs, gateway_runs, sys.stdout, rejection_runs, rejection_size
        )
    finally:
        if sink is not None:
            sink.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
