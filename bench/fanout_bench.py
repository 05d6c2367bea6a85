"""One large rejection to many recipients: memory, spool and /healthz while it passes.

Run as::

    .venv/bin/python bench/fanout_bench.py [--size-mb 3] [--rcpts 1000]

(as root: the Postfix side needs ``postfix start``).  ``career-relay serve``
(gateway and consent site in one process tree, the way ``make run`` runs them;
the company acme with its DKIM key) gets one rejection of ``--size-mb`` MB (a
text part and an HTML part with the marker, and a PDF-like attachment) in one
SMTP transaction to ``--rcpts`` outside recipients; it must make one signed
copy with a personal link per recipient and deliver them to ``smtp-sink``.
While it does, a thread samples every 50 ms:

- the memory of the gateway's processes (the sum of VmRSS over its session,
  from /proc), reported as the peak growth over the figure before the message;
- the spool: the bytes of every file under ``queue.dir``, each inode once (the
  copies share the message through hard links, as ``du`` counts them);
- ``GET /healthz`` on the consent site, one request after the other, each
  with a 5 s timeout: the slowest answer and how many took over 1 s.

Issue 12's goals: growth under 300 MB, spool under 2x the message plus 16 KB
per recipient, /healthz within 1 s throughout.  The baseline, measured in the
same run: Postfix relaying the same message to the same sink (its time to
deliver and the peak of its queue directory).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.relay_bench import (
    LOOPBACK,
    BenchError,
    CountingSink,
    free_ports,
    new_company_key,
    postfix_system,
    session_of,
    stop_process_group,
    tail,
    wait_for_smtp,
    wait_until,
    write_gateway_config,
)

REPO = Path(__file__).resolve().parent.parent
MARKER = "[[CAREER_RELAY_LINK]]"


def build_message(size: int) -> bytes:
    """A rejection of about ``size`` bytes: text and HTML with the marker, and an
    attachment of random bytes (incompressible, as a PDF scan is)."""
    rng = random.Random(12)
    blob = rng.randbytes(max(0, size * 3 // 4 - 6000))
    attachment = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    text = ("田中 花子 様\r\n\r\n選考の結果、今回はご期待に添えない結果となりました。\r\n"
            f"ご希望の方は下記からご登録いただけます。\r\n{MARKER}\r\n\r\n"
            "株式会社アクメ 人事部\r\n")
    html = ("<html><body><p>田中 花子 様</p><p>選考の結果、今回はご期待に添えない結果と"
            f"なりました。</p><p><a href=\"{MARKER}\">ご登録はこちら</a></p></body></html>\r\n")
    head = ("From: =?UTF-8?B?5Lq65LqL6YOo?= <hr@acme.example>\r\n"
            "To: undisclosed-recipients:;\r\n"
            "Subject: =?UTF-8?B?6YG46ICD57WQ5p6c44Gu44GU6YCj57Wh?=\r\n"
            f"Message-ID: <fanout-{time.time_ns()}@acme.example>\r\n"
            "Date: Thu, 03 Dec 2026 10:00:00 +0900\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n')
    return (head.encode()
            + b"--outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
            + b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text.encode()
            + b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n"
            + b"Content-Transfer-Encoding: 8bit\r\n\r\n" + html.encode()
            + b"--alt--\r\n"
            + b"--outer\r\nContent-Type: application/pdf; name=\"guide.pdf\"\r\n"
            + b"Content-Disposition: attachment; filename=\"guide.pdf\"\r\n"
            + b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment
            + b"--outer--\r\n")


def session_rss(session: int) -> int:
    """Bytes resident in the processes of a session (VmRSS, /proc)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(stat[3]) != session:  # field 6, the session id
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return total


def tree_bytes(root: Path, skip: tuple[str, ...] = ()) -> int:
    """Bytes of the files under ``root``, each inode counted once (as du does), without
    the directories named in ``skip``."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += st.st_size
    return total


@dataclass
class Samples:
    memory: list[int] = field(default_factory=list)
    spool: list[int] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    health_failures: int = 0


class Sampler:
    """Memory and spool every 50 ms, and /healthz one request after another."""

    def __init__(self, memory: Callable[[], int], spool: Callable[[], int],
                 health_url: str | None) -> None:
        self.samples = Samples()
        self._memory, self._spool, self._url = memory, spool, health_url
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._resources, daemon=True)]
        if health_url:
            self._threads.append(threading.Thread(target=self._health, daemon=True))

    def __enter__(self) -> Sampler:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _resources(self) -> None:
        while not self._stop.is_set():
            self.samples.memory.append(self._memory())
            self.samples.spool.append(self._spool())
            self._stop.wait(0.05)

    def _health(self) -> None:
        assert self._url is not None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self._url, timeout=5) as answer:
                    ok = answer.status == 200
            except OSError:
                ok = False
            self.samples.health.append(time.monotonic() - started)
            if not ok:
                self.samples.health_failures += 1
            self._stop.wait(0.02)


def send(port: int, message: bytes, rcpts: list[str]) -> tuple[float, str]:
    started = time.monotonic()
    with smtplib.SMTP(LOOPBACK, port, timeout=600) as client:
        client.ehlo("fanout.bench.test")
        client.mail("hr@acme.example", ["BODY=8BITMIME"])
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            if code != 250:
                raise BenchError(f"RCPT {rcpt}: {code} {text!r}")
        code, text = client.data(message)
        if code != 250:
            raise BenchError(f"DATA: {code} {text!r}")
    return time.monotonic() - started, text.decode(errors="replace")


def run_gateway(workdir: Path, message: bytes, rcpts: list[str]) -> dict[str, float]:
    port, sink_port, site_port, metrics_port = free_ports(4)
    key, _ = new_company_key(workdir)
    config = write_gateway_config(workdir, port, sink_port, None, key)
    text = config.read_text(encoding="utf-8").replace(
        "\n[site]\n", f'\n[site]\nlisten = "{LOOPBACK}:{site_port}"\n'
                      f'metrics_listen = "{LOOPBACK}:{metrics_port}"\n')
    config.write_text(text, encoding="utf-8")
    sink = CountingSink(sink_port, workdir / "smtp-sink.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
    log_path = workdir / "serve.log"
    result: dict[str, float] = {}
    try:
        sink.start()
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "career-relay"), "serve", "--config", str(config)],
                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                start_new_session=True)
            try:
                wait_for_smtp(port, 60.0, process)
                health = f"http://{LOOPBACK}:{site_port}/healthz"
                if not wait_until(lambda: _answers(health), 30):
                    raise BenchError("the consent site did not answer /healthz")
                session = session_of(process.pid)
                time.sleep(1.0)  # let the workers settle before the baseline
                before = session_rss(session)
                spool = workdir / "spool"
                # The metrics files the workers keep under the spool are not mail.
                with Sampler(lambda: session_rss(session), lambda: tree_bytes(spool, ("metrics",)),
                             health) as sampler:
                    accepted, reply = send(port, message, rcpts)
                    started = time.monotonic()
                    if not sink.wait_for(len(rcpts), 900):
                        raise BenchError(f"the sink got {sink.count} of {len(rcpts)}")
                    delivered = accepted + time.monotonic() - started
                    wait_until(lambda: not any((spool / "queue").iterdir()), 30)
                s = sampler.samples
                result = {
                    "accepted_s": accepted, "delivered_s": delivered,
                    "memory_growth_mb": (max(s.memory) - before) / 2**20,
                    "memory_before_mb": before / 2**20, "memory_peak_mb": max(s.memory) / 2**20,
                    "spool_peak_mb": max(s.spool) / 2**20,
                    "health_max_s": max(s.health), "health_polls": len(s.health),
                    "health_over_1s": sum(1 for h in s.health if h > 1.0),
                    "health_failures": s.health_failures,
                    "reply_octets": len(reply),
                }
            except BenchError as exc:
                raise BenchError(f"{exc}\n--- {log_path} ---\n{tail(log_path)}") from None
            finally:
                stop_process_group(process)
    finally:
        sink.stop()
    return result


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def run_postfix(workdir: Path, message: bytes, rcpts: list[str]) -> dict[str, float]:
    port, sink_port = free_ports(2)
    sink = CountingSink(sink_port, workdir / "smtp-sink-postfix.log")
    try:
        sink.start()
        with postfix_system(workdir, port, sink_port) as system:
            system.before_run()
            queue = system.instance.queue_dir
            with Sampler(lambda: 0, lambda: tree_bytes(queue), None) as sampler:
                accepted, _ = send(port, message, rcpts)
                started = time.monotonic()
                sent = lambda: system.instance.sent_count() - system._sent_before  # noqa: E731
                if not wait_until(lambda: sent() >= len(rcpts), 900):
                    raise BenchError(f"Postfix sent {sent()} of {len(rcpts)}")
                delivered = accepted + time.monotonic() - started
            return {"accepted_s": accepted, "delivered_s": delivered,
                    "spool_peak_mb": max(sampler.samples.spool) / 2**20}
    finally:
        sink.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=3.0)
    parser.add_argument("--rcpts", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    message = build_message(int(args.size_mb * 2**20))
    rcpts = [f"candidate{i}@example.net" for i in range(args.rcpts)]
    size_mb = len(message) / 2**20
    spool_goal = (2 * len(message) + 16 * 1024 * len(rcpts)) / 2**20
    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        (root / "postfix").mkdir(mode=0o755)
        (root / "gateway").mkdir(mode=0o755)
        postfix = run_postfix(root / "postfix", message, rcpts)
        gateway = run_gateway(root / "gateway", message, rcpts)
    print(f"one rejection of {size_mb:.2f} MB to {len(rcpts)} recipients "
          f"({os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')})")
    print(f"{'':28}{'career-relay':>14}{'Postfix':>10}{'goal':>12}")
    print(f"{'accepted (DATA to 250), s':28}{gateway['accepted_s']:14.1f}"
          f"{postfix['accepted_s']:10.1f}")
    print(f"{'all delivered, s':28}{gateway['delivered_s']:14.1f}{postfix['delivered_s']:10.1f}")
    print(f"{'peak memory growth, MB':28}{gateway['memory_growth_mb']:14.1f}{'':>10}"
          f"{'< 300':>12}")
    print(f"{'  (RSS before, peak; MB)':28}{gateway['memory_before_mb']:8.0f}"
          f"{gateway['memory_peak_mb']:6.0f}")
    print(f"{'peak spool, MB':28}{gateway['spool_peak_mb']:14.1f}"
          f"{postfix['spool_peak_mb']:10.1f}{f'< {spool_goal:.1f}':>12}")
    print(f"{'/healthz slowest, s':28}{gateway['health_max_s']:14.2f}{'':>10}{'< 1':>12}")
    print(f"{'/healthz polls (> 1 s, failed)':28}{int(gateway['health_polls']):>8} "
          f"({int(gateway['health_over_1s'])}, {int(gateway['health_failures'])})")
    print(f"{'the 250 line, octets':28}{int(gateway['reply_octets']):14d}{'':>10}{'< 512':>12}")
    met = (gateway["memory_growth_mb"] < 300 and gateway["spool_peak_mb"] < spool_goal
           and gateway["health_max_s"] < 1 and gateway["health_failures"] == 0)
    print("goals met" if met else "GOALS NOT MET")
    if args.json:
        args.json.write_text(json.dumps({"gateway": gateway, "postfix": postfix,
                                         "message_bytes": len(message),
                                         "recipients": len(rcpts)}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
