"""Soak test (issue 6): mixed traffic for a bounded time, with the upstream dropping out
and the gateway restarted, then a reckoning.

    .venv/bin/python bench/soak.py                 # 30 minutes (make soak)
    .venv/bin/python bench/soak.py --minutes 3     # a short check

A real ``career-relay serve`` (two intake workers, the consent site, the demo
agency) runs as a child process on loopback.  The upstream is an SMTP sink in
this process that records every (Message-ID, recipient) it receives, and
that is switched off for a while every few minutes.  Traffic: about 90 %
pass-through and 10 % rejections (the marker, one to three random outside
recipients), from several client threads at a steady rate; some of the
rejected candidates open their link and accept.  The gateway is restarted
twice: once with SIGTERM, once with SIGKILL (spool recovery).

At the end, after the upstream is back for good and the queue has drained:
every message answered 250 reached the upstream for every recipient
(duplicates are counted: SIGKILL may redeliver what was in flight); every
rejection's outside recipients have an offer in the ledger; every accept
reached the agency; ``career-relay ledger verify`` passes; and the resident
memory of the serve process tree did not grow (median of the last fifth of
the samples against the second fifth, after warm-up).  It prints the
figures; the exit status is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import json
import os
import random
import re
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "career_relay"]
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1"
LINK = re.compile(rb"http://127\.0\.0\.1:\d+/c/[A-Za-z0-9_.-]+")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the upstream ---------------------------------------------------------------------------


@dataclass
class Received:
    lock: threading.Lock = field(default_factory=threading.Lock)
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (msgid, rcpt) -> n
    links: list[tuple[str, str]] = field(default_factory=list)  # (rcpt, link)


class SinkHandler:
    def __init__(self, received: Received) -> None:
        self.received = received

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or b""
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        msgid = str(msg.get("Message-ID", ""))
        found = LINK.search(data)
        with self.received.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.pairs[(msgid, rcpt.lower())] += 1
                if found:
                    self.received.links.append((rcpt.lower(), found.group(0).decode()))
        return "250 2.0.0 ok"


class Upstream:
    """A sink that can be switched off (its port closed) and on again."""

    def __init__(self, port: int, received: Received) -> None:
        self.port = port
        self.received = received
        self.controller: Controller | None = None
        self.outages = 0

    def up(self) -> None:
        if self.controller is None:
            self.controller = Controller(SinkHandler(self.received), hostname="127.0.0.1",
                                         port=self.port, decode_data=False)
            self.controller.start()

    def down(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
            self.outages += 1


# -- the system under test ------------------------------------------------------------------


class Serve:
    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(work / "serve.log", "ab")  # noqa: SIM115 - closed in stop()

    def start(self, smtp_port: int) -> None:
        config = str(self.work / "career-relay.toml")
        self.proc = subprocess.Popen([*CLI, "serve", "--config", config], cwd=REPO,
                                     env=self.env, stdout=self.log, stderr=self.log)
        _wait_port(smtp_port)

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        if sig == signal.SIGKILL:  # the whole tree: workers too
            for pid in _tree(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        else:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=120)
        time.sleep(1.5)  # let orphaned workers notice their supervisor is gone
        return code

    def rss_kb(self) -> int:
        assert self.proc is not None
        total = 0
        for pid in _tree(self.proc.pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _wait_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


# -- traffic --------------------------------------------------------------------------------


@dataclass
class Sent:
    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: dict[str, list[str]] = field(default_factory=dict)  # msgid -> recipients
    rejections: set[str] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)  # reply class -> n


REJECTION_BODY = ("山田様\r\n\r\n先日はご応募いただきありがとうございました。\r\n"
                  "慎重に選考を重ねました結果、今回は採用を見送らせていただくことになりました。\r\n"
                  "[[CAREER_RELAY_LINK]]\r\n今後のご活躍をお祈り申し上げます。\r\n")


def _message(msgid: str, rcpts: list[str], rejection: bool) -> bytes:
    headers = ["From: 採用担当 <hr@acme.example>", f"To: {', '.join(rcpts)}",
               f"Message-ID: {msgid}", "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    if rejection:
        headers += ["Subject: =?UTF-8?B?6YG46ICD57WQ5p6c44Gu44GU6YCj57Wh?=",
                    "X-Career-Relay: rejection", "X-Career-Relay-Job: engineer"]
        body = REJECTION_BODY
    else:
        headers.append("Subject: weekly update")
        body = "Hello,\r\n\r\n" + "This is an ordinary line of an ordinary message.\r\n" * 40
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")


def _client(port: int, sent: Sent, stop: threading.Event, rate: float, seed: int) -> None:
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        n += 1
        rejection = rng.random() < 0.10
        msgid = f"<soak-{seed}-{n}@acme.example>"
        rcpts = [f"c{rng.randrange(10**6)}@example.net" for _ in range(rng.randint(1, 3))]
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.sendmail("hr@acme.example", rcpts, _message(msgid, rcpts, rejection))
            with sent.lock:
                sent.accepted[msgid] = rcpts
                if rejection:
                    sent.rejections.add(msgid)
        except (OSError, smtplib.SMTPException) as exc:  # gateway restarting: not accepted
            code = getattr(exc, "smtp_code", None) or type(exc).__name__
            with sent.lock:
                sent.refused[str(code)] += 1
        stop.wait(rng.expovariate(rate))


def _consent(link: str, opener: urllib.request.OpenerDirector) -> bool:
    """The candidate opens the link and accepts; True if the site answered 303."""
    try:
        with opener.open(urllib.request.Request(link, headers={"User-Agent": PHONE}),
                         timeout=20) as r:
            page = r.read().decode()
        nonce = re.search(r'name="csrf" value="([^"]+)"', page)
        if not nonce:
            return False
        form = urllib.parse.urlencode({"csrf": nonce.group(1), "lang": "ja",
                                       "decision": "accept", "agree": "yes",
                                       "name": "候補者", "email": "soak@example.net"})
        request = urllib.request.Request(link, data=form.encode(),
                                         headers={"User-Agent": PHONE})
        opener.open(request, timeout=20)
    except urllib.error.HTTPError as exc:
        return exc.code == 303
    except OSError:
        return False
    return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# -- the run --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=20.0, help="messages per second, all clients")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--consent-share", type=float, default=0.3,
                    help="share of rejected candidates who accept")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    args = ap.parse_args(argv)
    duration = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    ports = {k: free_port() for k in ("smtp", "upstream", "site", "agency", "metrics")}
    made = subprocess.run([*CLI, "init", "--dir", str(work), "--demo"], cwd=REPO,
                          capture_output=True, text=True, check=True)
    del made
    (work / "ledger.db").unlink()  # a fresh ledger, not the demo's example
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
    env.update({
        "CAREER_RELAY_GATEWAY_LISTEN": f"127.0.0.1:{ports['smtp']}",
        "CAREER_RELAY_GATEWAY_WORKERS": "2",
        "CAREER_RELAY_UPSTREAM_PORT": str(ports["upstream"]),
        "CAREER_RELAY_QUEUE_RETRY_SCHEDULE": "[5, 10, 20]",
        "CAREER_RELAY_SITE_LISTEN": f"127.0.0.1:{ports['site']}",
        "CAREER_RELAY_SITE_PUBLIC_URL": f"http://127.0.0.1:{ports['site']}",
        "CAREER_RELAY_SITE_METRICS_LISTEN": f"127.0.0.1:{ports['metrics']}",
        "CAREER_RELAY_SITE_REVIEW_WINDOW": "0",
        "CAREER_RELAY_AGENCY_WEBHOOK_URL": f"http://127.0.0.1:{ports['agency']}/forwards",
        "CAREER_RELAY_AGENCY_RETRY_SCHEDULE": "[5]",
        "CAREER_RELAY_DEMO_CAPTURE_DIR": "",  # our own upstream instead of the demo's
    })
    received, sent = Received(), Sent()
    upstream = Upstream(ports["upstream"], received)
    upstream.up()
    serve = Serve(work, env)
    serve.start(ports["smtp"])
    print(f"[soak] {args.minutes:g} min in {work}", flush=True)

    stop = threading.Event()
    clients = [threading.Thread(target=_client, args=(ports["smtp"], sent, stop,
                                                      args.rate / args.clients, i), daemon=True)
               for i in range(args.clients)]
    for c in clients:
        c.start()
    opener = urllib.request.build_opener(_NoRedirect())
    rng = random.Random(7)
    consented: set[str] = set()
    consent_attempts = 0
    rss: list[int] = []
    restarts: list[str] = []
    start = time.monotonic()
    next_outage = start + duration / 6
    restart_at = [start + duration / 3, start + 2 * duration / 3]
    seen_links = 0
    while (elapsed := time.monotonic() - start) < duration:
        time.sleep(2)
        rss.append(serve.rss_kb())
        with received.lock:
            new_links = received.links[seen_links:]
            seen_links = len(received.links)
        for rcpt, link in new_links:
            if rcpt not in consented and rng.random() < args.consent_share:
                consent_attempts += 1
                if _consent(link, opener):
                    consented.add(rcpt)
        now = time.monotonic()
        if now >= next_outage:
            upstream.down()
            print(f"[soak] {elapsed / 60:5.1f} min: upstream down for 60 s", flush=True)
            time.sleep(60)
            upstream.up()
            next_outage = now + duration / 6
        if restart_at and now >= restart_at[0]:
            sig = signal.SIGTERM if len(restarts) == 0 else signal.SIGKILL
            code = serve.stop(sig)
            restarts.append(f"{signal.Signals(sig).name} (exit {code})")
            print(f"[soak] {elapsed / 60:5.1f} min: gateway stopped with "
                  f"{signal.Signals(sig).name}, restarting", flush=True)
            serve.start(ports["smtp"])
            restart_at.pop(0)
    stop.set()
    for c in clients:
        c.join(60)
    upstream.up()
    print("[soak] traffic stopped; waiting for the queue to drain", flush=True)
    expected = {(m, r.lower()) for m, rcpts in sent.accepted.items() for r in rcpts}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with received.lock:
            missing = [p for p in expected if received.pairs[p] == 0]
        if not missing:
            break
        time.sleep(2)
    with received.lock:
        missing = [p for p in expected if received.pairs[p] == 0]
        duplicates = sum(n - 1 for p, n in received.pairs.items() if p in expected and n > 1)
    time.sleep(15)  # let the last forwards reach the agency
    final_rss = serve.rss_kb()
    exit_code = serve.stop(signal.SIGTERM)
    serve.log.close()

    checks = _reckon(work, sent, consented)
    verify = subprocess.run([*CLI, "ledger", "verify", "--config",
                             str(work / "career-relay.toml")], cwd=REPO, env=env,
                            capture_output=True, text=True)
    fifth = max(1, len(rss) // 5)
    warm, late = rss[fifth:2 * fifth] or rss, rss[-fifth:] or rss
    growth = statistics.median(late) / max(1, statistics.median(warm)) - 1
    results = {
        "minutes": args.minutes,
        "messages_accepted": len(sent.accepted),
        "recipient_deliveries_expected": len(expected),
        "missing": len(missing),
        "duplicates": duplicates,
        "refused_while_restarting": dict(sent.refused),
        "rejections": len(sent.rejections),
        "offers_missing": checks["offers_missing"],
        "consents_posted": len(consented),
        "consent_attempts": consent_attempts,
        "forwards_missing_at_agency": checks["forwards_missing"],
        "upstream_outages": upstream.outages,
        "restarts": restarts,
        "final_sigterm_exit": exit_code,
        "ledger_verify": verify.returncode == 0,
        "rss_mb_warm_median": round(statistics.median(warm) / 1024, 1),
        "rss_mb_late_median": round(statistics.median(late) / 1024, 1),
        "rss_mb_final": round(final_rss / 1024, 1),
        "rss_growth": round(growth, 3),
    }
    # Only a gateway that is down may refuse (connection errors, 421): never a 5xx.
    bad_refusals = sum(n for code, n in sent.refused.items() if code.startswith("5"))
    results["refused_with_5xx"] = bad_refusals
    ok = (not missing and bad_refusals == 0 and checks["offers_missing"] == 0
          and checks["forwards_missing"] == 0 and verify.returncode == 0
          and growth < 0.10 and exit_code == 0)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"[soak] {'PASSED' if ok else 'FAILED'}; work dir {work}")
    if not args.keep and ok:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def _reckon(work: Path, sent: Sent, consented: set[str]) -> dict[str, int]:
    with sqlite3.connect(work / "ledger.db") as conn:
        offers = {(m, r) for m, r in conn.execute("SELECT message_id, recipient FROM offers")}
    wanted = {(m, r.lower()) for m in sent.rejections for r in sent.accepted[m]}
    at_agency = set()
    for path in (work / "agency").glob("*.json"):
        body = json.loads(path.read_text(encoding="utf-8"))
        if body.get("type") == "consent":
            at_agency.add(body["consent"]["receipt_id"])
    with sqlite3.connect(work / "ledger.db") as conn:
        accepts = {r for (r,) in conn.execute(  # this run's, not the example ledger's
            "SELECT r.id FROM receipts r JOIN offers o ON o.id = r.offer_id"
            " WHERE r.decision = 'accept' AND o.message_id LIKE '<soak-%'")}
    return {"offers_missing": len(wanted - offers),
            "forwards_missing": len(accepts - at_agency)}


if __name__ == "__main__":
    sys.exit(main())
