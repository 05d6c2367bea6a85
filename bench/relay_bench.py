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

Everything listens on and connects to 127.0.0.1 only, every wait has a
timeout, and every process started here is stopped in ``finally`` blocks.
"""

from __future__ import annotations

import abc
import argparse
import collections
import contextlib
import email
import email.policy
import itertools
import json
import os
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
from dataclasses import asdict, dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import dkim  # noqa: E402

from career_relay.dkimkeys import generate_key, public_record  # noqa: E402 - sys.path above
from career_relay.ledger import open_ledger  # noqa: E402
from career_relay.tokens import LinkSigner  # noqa: E402
from gateway.spool import Spool  # noqa: E402
from tests.peers.postfix import (  # noqa: E402
    PostfixInstance,
    postfix_available,
)

LOOPBACK = "127.0.0.1"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
SENDER = "sender@acme.example"
RECIPIENT = "rcpt@candidate.example"
HELO_NAME = "bench.test"
# The --rejection run: company acme (domains acme.example), DKIM selector "bench".
REJECTION_SENDER = "hr@acme.example"
MARKER = "[[CAREER_RELAY_LINK]]"
PUBLIC_URL = "http://consent.bench.test"
SIGNING_KEY = "bench-secret-0123456789abcdef"
COMPANY_ID = "acme"
COMPANY_DOMAIN = "acme.example"
DKIM_SELECTOR = "bench"
REJECTION_RCPTS = 2  # outside recipients per rejection: two signed copies each
REJECTION_GOAL = 0.5  # issue 3: rejections at >= 0.5 x Postfix's pass-through rate
LINK = re.compile(re.escape(PUBLIC_URL) + r"/c/([A-Za-z0-9_.\-]+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A run could not be completed or its result failed a check."""


# -- the test message -------------------------------------------------------

_PARAGRAPHS = [
    "この度は、株式会社アクメの営業職（東京本社）にご応募いただき、誠にありがとうございました。"
    "慎重に選考を進めました結果、誠に残念ながら、今回はご期待に沿えない結果となりました。",
    "多数のご応募をいただいた中で、ご経歴やご経験を拝見し、社内で検討を重ねましたが、"
    "現在の募集要件との兼ね合いにより、このような判断となりましたことをご了承ください。",
    "なお、選考内容に関するお問い合わせにはお答えいたしかねますので、あらかじめご了承ください。"
    "お預かりした応募書類は、当社の個人情報保護方針に基づき責任をもって破棄いたします。",
    "Thank you for your interest in Acme Corporation. After careful consideration we have "
    "decided not to proceed with your application at this time. We wish you every success.",
    "末筆ながら、今後のご活躍を心よりお祈り申し上げます。何卒よろしくお願い申し上げます。",
]


# The optional-referral block of templates/emails/rejection_ja.*, with the marker.
_REFERRAL_PLAIN = (
    "――――――――――――――――――――――――――――\n"
    "【任意のご案内】提携人材紹介会社へのご登録について\n\n"
    "弊社は、人材紹介会社 株式会社キャリアブリッジ（有料職業紹介事業 許可番号：13-ユ-000000）と"
    "提携しております。ご希望の場合に限り、下記の山田様専用ページから、"
    "同社への求職者登録をお申し込みいただけます。\n\n"
    f"{MARKER}\n\n"
    "・ご登録は任意です。ご利用にならなくても、今回の選考結果に影響することは一切ございません。\n"
    "・ご希望でない場合は、何もしていただく必要はございません。本メールへのご返信も不要です。\n"
    "――――――――――――――――――――――――――――"
)
_REFERRAL_HTML = (
    "<hr>\n<h2>【任意のご案内】提携人材紹介会社へのご登録について</h2>\n"
    "<p>弊社は、人材紹介会社 株式会社キャリアブリッジ（有料職業紹介事業 許可番号：13-ユ-000000）と"
    "提携しております。ご希望の場合に限り、下記の山田様専用ページから、"
    "同社への求職者登録をお申し込みいただけます。</p>\n"
    f'<p><a href="{MARKER}">株式会社キャリアブリッジ へのご登録ページ（任意）</a></p>\n'
    "<p>・ご登録は任意です。ご利用にならなくても、今回の選考結果に影響することは一切ございません。"
    "</p>\n<p>・ご希望でない場合は、何もしていただく必要はございません。</p>\n<hr>"
)


def _bodies(paragraph_count: int, referral: bool = False) -> tuple[str, str]:
    paragraphs = [_PARAGRAPHS[i % len(_PARAGRAPHS)] for i in range(paragraph_count)]
    html_paragraphs = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    if referral:  # the marker goes into both parts, as in the templates companies paste
        paragraphs.append(_REFERRAL_PLAIN)
        html_paragraphs += "\n" + _REFERRAL_HTML
    plain = "山田 太郎 様\n\n" + "\n\n".join(paragraphs) + "\n\n株式会社アクメ 人事部 採用担当\n"
    html = (
        '<!DOCTYPE html>\n<html lang="ja">\n<head><meta charset="utf-8">'
        "<title>選考結果のご連絡</title></head>\n"
        f'<body style="font-family: sans-serif">\n<p>山田 太郎 様</p>\n{html_paragraphs}\n'
        "<p>株式会社アクメ 人事部 採用担当</p>\n</body>\n</html>\n"
    )
    return plain, html


def build_message(target_size: int, rejection: bool = False) -> bytes:
    """A realistic rejection mail of at least ``target_size`` bytes, CRLF line endings.

    multipart/alternative with text/plain and text/html, both UTF-8 and
    quoted-printable, so the message is 7-bit clean: smtp-source speaks HELO,
    not EHLO, and so cannot ask for 8BITMIME. With ``rejection`` it is what the
    gateway must act on: From hr@acme.example (a configured company) and the
    marker in both parts (the plain text on a line of its own, the HTML in an href).
    """
    paragraph_count = 1
    while True:
        plain, html = _bodies(paragraph_count, referral=rejection)
        msg = EmailMessage(policy=SMTP)  # policy.SMTP serialises with CRLF
        sender = REJECTION_SENDER if rejection else SENDER
        msg["From"] = Address("株式会社アクメ 採用担当", addr_spec=sender)
        msg["To"] = Address("山田 太郎", addr_spec=RECIPIENT)
        msg["Subject"] = "【選考結果のご連絡】営業職（東京本社）へのご応募について"
        msg["Date"] = "Thu, 26 Nov 2026 10:00:00 +0900"
        msg["Message-ID"] = f"<bench-rejection-000{2 if rejection else 1}@acme.example>"
        msg.set_content(plain, charset="utf-8", cte="quoted-printable")
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
        data = msg.as_bytes()
        if len(data) >= target_size:
            return data
        paragraph_count += 1


def write_message_files(
    workdir: Path, target_size: int, rejection: bool = False
) -> tuple[Path, Path, int]:
    """Write the message in wire form and in the form smtp-source needs.

    ``message.eml`` is the message as it goes over the wire (CRLF). smtp-source
    ``-F`` strips only the LF of each line and then appends CRLF, so a CRLF file
    would go out as CR CR LF (checked against a raw socket with Postfix 3.7's
    smtp-source); it therefore gets ``message.lf``, the same bytes with LF
    endings, and puts the CRLF back on the wire.
    """
    wire = build_message(target_size, rejection)
    if b"\n" in wire.replace(b"\r\n", b"") or b"\r" in wire.replace(b"\r\n", b""):
        raise BenchError("generated message has a bare CR or LF")
    stem = "rejection" if rejection else "message"
    eml = workdir / f"{stem}.eml"
    eml.write_bytes(wire)
    lf = workdir / f"{stem}.lf"
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

    def check_after_run(self, messages: int) -> None:  # noqa: B027 - an optional hook
        """Extra consistency checks once all messages reached the sink."""

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

    def check_after_run(self, messages: int) -> None:
        sent = self.instance.sent_count() - self._sent_before
        if sent != messages:
            raise BenchError(f"Postfix log has {sent} new status=sent lines, expected {messages}")


class GatewaySystem(SystemUnderTest):
    name = "career-relay"

    def __init__(
        self,
        process: subprocess.Popen[Any],
        port: int,
        spool_queue: Path,
        ledger: Path | None = None,
        offers_per_message: int = 0,
    ) -> None:
        self.process = process
        self.port = port
        self.spool_queue = spool_queue
        self.ledger = ledger
        self.offers_per_message = offers_per_message
        self._ledger_before = (0, 0)

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

    def ledger_counts(self) -> tuple[int, int]:
        """(offers, rejections counted) in the gateway's ledger; (0, 0) before it exists."""
        if self.ledger is None or not self.ledger.exists():
            return 0, 0
        with contextlib.closing(sqlite3.connect(self.ledger, timeout=30.0)) as conn:
            (offers,) = conn.execute("SELECT count(*) FROM offers").fetchone()
            (rejections,) = conn.execute(
                "SELECT coalesce(sum(rejections), 0) FROM daily_counts WHERE company = ?",
                (COMPANY_ID,),
            ).fetchone()
        return int(offers), int(rejections)

    def before_run(self) -> None:
        self._ledger_before = self.ledger_counts()

    def check_after_run(self, messages: int) -> None:
        """With a company configured: N rejections counted, one new offer per copy."""
        if self.ledger is None:
            return
        offers, rejections = self.ledger_counts()
        new_offers = offers - self._ledger_before[0]
        new_rejections = rejections - self._ledger_before[1]
        if new_offers != messages * self.offers_per_message or new_rejections != messages:
            raise BenchError(
                f"ledger: {new_offers} new offers and {new_rejections} rejections counted, "
                f"expected {messages * self.offers_per_message} and {messages}"
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
    system.check_after_run(messages)
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
    workdir: Path, port: int, sink_port: int, workers: int | None, company_key: Path | None = None
) -> Path:
    """The gateway configuration (SPEC keys); 127.0.0.1 relays without AUTH via allow_ips.

    With ``company_key`` the company acme (acme.example) is configured with that
    DKIM key (selector "bench"), so mail from hr@acme.example with the marker
    is a rejection; without it every message is relayed unchanged.
    """

    def toml_str(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string

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
        "\n[secrets]\n"
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
        )
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
    offers_per_message: int = 0,
) -> Iterator[GatewaySystem]:
    """The gateway with its config, spool, ledger and log in ``workdir``."""
    if not os.access(executable, os.X_OK):
        raise BenchError(f"{executable} is not there yet (pip install -e . in the venv?)")
    workdir.mkdir(mode=0o755, exist_ok=True)
    config = write_gateway_config(workdir, port, sink_port, workers, company_key)
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
            yield GatewaySystem(
                process, port, workdir / "spool" / "queue", ledger, offers_per_message
            )
        except BenchError as exc:  # the gateway's own log usually says why
            raise BenchError(f"{exc}\n--- {log_path} ---\n{tail(log_path)}") from None
        finally:
            stop_process_group(process)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# -- the rejection run's sample check ------------------------------------------

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


def check_rejection_sample(
    workdir: Path, args: argparse.Namespace, workload: Workload, count: int = 5
) -> str:
    """Send ``count`` rejections through a gateway of their own to ``smtp-sink -d`` and
    check every copy: one per outside recipient, each with its own link in text/plain
    and text/html (a token that opens the offer for that very recipient), no marker
    left, and a DKIM-Signature by acme's key that dkimpy verifies. Returns a summary.

    The measured runs use ``smtp-sink -c`` (a counter only): dumping every message
    to a file would make the sink the bottleneck.
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
    try:
        wait_for_smtp(sink_port, 10.0, sink)
        with gateway_system(
            workdir, args.career_relay, port, sink_port, args.gateway_workers, key_path,
            workload.copies_per_message,
        ) as gateway:  # fmt: skip
            run_once(gateway, NullSink(dump), workload, count, 1, args.timeout)
    finally:
        stop_process_group(sink)
    copies = [split_dump(path.read_bytes()) for path in sorted(dump.iterdir())]
    checked = [check_copy(data, rcpts, public) for rcpts, data in copies]
    recipients = {rcpt for rcpt, _ in checked}
    tokens = {token for _, token in checked}
    if len(checked) != count * workload.copies_per_message or len(recipients) != len(checked):
        raise BenchError(f"sample: {len(checked)} copies to {len(recipients)} recipients")
    if len(tokens) != len(checked):
        raise BenchError(f"sample: {len(checked)} copies share {len(tokens)} tokens")
    signer = LinkSigner([SIGNING_KEY], 90)
    ledger = open_ledger(workdir / "ledger.db")
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


# -- main -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per measured run")
    parser.add_argument("--sessions", type=int, default=20, help="parallel smtp-source sessions")
    parser.add_argument("--size", type=int, default=10240, help="approximate message size")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up messages (0: none)")
    parser.add_argument("--repeat", type=int, default=1, help="measured runs; medians shown")
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
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    for name in ("messages", "sessions", "size", "repeat"):
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
    _eml, rejection_lf, size = write_message_files(workdir, args.size, rejection=True)
    workload = Workload(
        "rejection", rejection_lf, REJECTION_SENDER, rcpts_per_message=REJECTION_RCPTS,
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
        REJECTION_RCPTS,
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
        _eml, message_lf, size = write_message_files(workdir, args.size)
        passthrough = Workload("pass-through", message_lf, SENDER)
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
                    workdir, args.career_relay, gateway_port, sink_port, args.gateway_workers
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
