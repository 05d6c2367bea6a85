"""``/metrics`` and the structured logs, on `career-relay serve` with two intake workers.

Mail goes through the real gateway to a capturing upstream; the candidate's
consent is posted on the real site; the scrape is parsed with
prometheus-client's own parser and each figure is checked to have moved by
exactly what the test did.
"""

from __future__ import annotations

import email
import email.policy
import http.cookiejar
import json
import os
import re
import signal
import smtplib
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from career_relay.dkimkeys import generate_key
from career_relay.paths import metrics_dir
from tests.conftest import (
    _PASSWORD_HASH,
    CLI,
    REPO,
    ConfigMaker,
    Sink,
    crlf,
    free_port,
    run_cli,
    wait_for_port,
    wait_until,
)

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1")
ADDRESSES = ("hr@acme.example", "pass@example.net", "slow@example.net", "gone@example.net",
             "cand@example.net")


class Serve:
    """`career-relay serve` as a child process, with its site's port."""

    def __init__(self, config: Path, site_port: int, smtp_port: int, metrics_port: int) -> None:
        self.config = config
        self.site_port = site_port
        self.smtp_port = smtp_port
        self.metrics_port = metrics_port
        self.log = config.parent / "serve.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*CLI, "serve", "--config", str(config)],
                                         stdout=out, stderr=out, cwd=REPO,
                                         env=_env_without_ours())
        wait_for_port(smtp_port)
        wait_for_port(site_port)
        wait_for_port(metrics_port)

    def get(self, path: str, port: int | None = None) -> tuple[int, str, str]:
        url = f"http://127.0.0.1:{port or self.site_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), ""

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of a scrape: (name, sorted labels) -> value."""
        status, content_type, text = self.get("/metrics", self.metrics_port)
        assert status == 200 and content_type.startswith("text/plain")
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0, self.log.read_text(errors="replace")


def _env_without_ours() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("CAREER_RELAY_", "PROMETHEUS_MULTIPROC"))}


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def serve(tmp_path: Path, make_config: ConfigMaker, sink: Sink) -> Iterator[Serve]:
    key = tmp_path / "keys" / "acme.pem"
    generate_key(key)
    site_port, agency_port, metrics_port = free_port(), free_port(), free_port()
    config = make_config(
        upstream_port=sink.port,
        gateway={"workers": 2},
        queue={"dir": "spool", "retry_schedule": [3600]},  # retried when the test says
        site={"listen": f"127.0.0.1:{site_port}", "metrics_listen": f"127.0.0.1:{metrics_port}",
              "public_url": f"http://127.0.0.1:{site_port}", "review_window": 0},
        agency={"webhook_url": f"http://127.0.0.1:{agency_port}/forwards",
                "webhook_secret": "agency-secret-0123456789"},
        ledger={"path": "ledger.db", "credit_every": 1},
        demo={"agency_dir": str(tmp_path / "agency")},
        log={"format": "json"},
        companies=[{"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"],
                    "dkim_selector": "cr1", "dkim_key_file": str(key),
                    "smtp_username": "acme", "smtp_password_hash": _PASSWORD_HASH,
                    "allow_ips": ["127.0.0.1/32"]}])  # this machine is acme's own host
    smtp_port = int(config.read_text().split('listen = "127.0.0.1:')[1].split('"')[0])
    running = Serve(config, site_port, smtp_port, metrics_port)
    try:
        yield running
    finally:
        running.stop()


def send(port: int, rcpts: list[str], extra: str = "", body: str = "Hello\n") -> None:
    data = crlf(f"From: hr@acme.example\nTo: {', '.join(rcpts)}\nSubject: hi\n"
                f"Message-ID: <{uuid.uuid4().hex}@acme.example>\nMIME-Version: 1.0\n"
                f"Content-Type: text/plain; charset=utf-8\n{extra}\n{body}")
    with smtplib.SMTP("127.0.0.1", port) as c:
        c.sendmail("hr@acme.example", rcpts, data)  # raises unless every step got a 2xx


def test_metrics_are_served_on_their_own_listener_only(serve: Serve) -> None:
    """SPEC 6: /metrics on site.metrics_listen; the candidates' listener answers 404."""
    assert serve.get("/metrics")[0] == 404
    status, _, text = serve.get("/metrics", serve.metrics_port)
    assert status == 200 and "career_relay_messages_accepted_total" in text
    assert serve.get("/healthz")[0] == 200


@pytest.mark.slow
def test_every_metric_moves_by_what_happened(serve: Serve, sink: Sink) -> None:
    before = serve.metrics()
    assert value(before, "career_relay_messages_accepted_total") == 0
    assert value(before, "career_relay_offers_total", company="acme") == 0  # zeros exist

    # Pass-through, on separate connections (the kernel spreads them over both workers).
    for _ in range(4):
        send(serve.smtp_port, ["pass@example.net"])
    sink.wait_for(4)

    # A recipient the upstream defers once, then takes.
    sink.handler.rcpt_replies["slow@example.net"] = "451 4.3.0 try again later"
    send(serve.smtp_port, ["slow@example.net"])
    wait_until(lambda: value(serve.metrics(), "career_relay_messages_deferred_total") == 1,
               what="the deferral")

    def queued() -> bool:
        # The worker sets the queue's two gauges one after the other: a scrape may fall
        # between them.
        now = serve.metrics()
        return (value(now, "career_relay_queue_messages") == 1
                and value(now, "career_relay_queue_oldest_age_seconds") > 0)

    wait_until(queued, what="the deferred message in the queue gauges")
    del sink.handler.rcpt_replies["slow@example.net"]
    assert run_cli("queue", "retry", "--config", str(serve.config)).returncode == 0
    sink.wait_for(5)

    # A recipient the upstream refuses: a bounce, and a DSN relayed to the sender.
    sink.handler.rcpt_replies["gone@example.net"] = "550 5.1.1 no such user"
    send(serve.smtp_port, ["gone@example.net"])
    sink.wait_for(6)

    # A rejection: a copy with the candidate's link; then the candidate accepts.
    send(serve.smtp_port, ["cand@example.net"], extra="X-Career-Relay: rejection\n",
         body="Thank you for applying. We regret that we will not proceed.\n")
    copy = sink.wait_for(7)[-1]
    assert copy.rcpts == ["cand@example.net"]
    text = email.message_from_bytes(copy.data, policy=email.policy.default)
    body = text.get_body(("plain",))
    assert body is not None
    link = re.search(rf"http://127\.0\.0\.1:{serve.site_port}(/c/[A-Za-z0-9_.\-]+)",
                     body.get_content())
    assert link, "the copy carries the link"
    _accept(serve, link.group(1))

    def settled() -> bool:
        # Figures a worker updates one after the other (relayed, then the delivery time; the
        # queue's count, then its oldest) each waited for: a scrape may fall between.
        now = serve.metrics()
        return (value(now, "career_relay_forwards_total", company="acme", kind="consent",
                      status="delivered") == 1
                and value(now, "career_relay_queue_messages") == 0
                and value(now, "career_relay_queue_oldest_age_seconds") == 0
                and value(now, "career_relay_messages_relayed_total") == 7
                and value(now, "career_relay_delivery_seconds_count") >= 7)

    wait_until(settled, what="the forward delivered and the queue empty")
    after = serve.metrics()
    # accepted: 4 pass-through + slow + gone + the rejection
    assert value(after, "career_relay_messages_accepted_total") == 7
    assert value(after, "career_relay_processing_seconds_count") == 7
    # relayed: 4 + slow + the DSN + the candidate's copy
    assert value(after, "career_relay_messages_relayed_total") == 7
    assert value(after, "career_relay_delivery_seconds_count") == 7
    assert value(after, "career_relay_delivery_seconds_bucket", le="+Inf") == 7
    assert value(after, "career_relay_messages_deferred_total") == 1
    assert value(after, "career_relay_messages_bounced_total") == 1
    assert value(after, "career_relay_queue_oldest_age_seconds") == 0
    assert value(after, "career_relay_rejections_total", company="acme") == 1
    assert value(after, "career_relay_rejection_outcomes_total", outcome="rejection") == 1
    # One family per name: a name declared twice makes strict parsers (promtool) refuse the
    # whole page (the gateway's outcome counter was career_relay_rejections too).
    _, _, text = serve.get("/metrics", serve.metrics_port)
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(declared) == len(set(declared)), sorted(declared)
    assert "career_relay_ledger_up 1.0" in text
    assert value(after, "career_relay_offers_total", company="acme") == 1
    assert value(after, "career_relay_views_total", company="acme") == 1
    assert value(after, "career_relay_decisions_total", company="acme", decision="accept") == 1
    assert value(after, "career_relay_decisions_total", company="acme", decision="decline") == 0
    assert value(after, "career_relay_forwards_total", company="acme", kind="consent",
                 status="failed") == 0
    assert value(after, "career_relay_credits_total", company="acme", event="earned") == 1
    assert value(after, "career_relay_credits_total", company="acme", event="redeemed") == 0

    # Two worker processes wrote figures; killing one loses none of its counts.
    directory = metrics_dir(serve.config.parent / "spool")
    pids = {int(m.group(1)) for p in directory.iterdir()
            if (m := re.fullmatch(r"counter_(\d+)\.db", p.name))}
    workers = pids - {serve.proc.pid}
    assert serve.proc.pid in pids and len(workers) == 1
    (worker,) = workers
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not (directory / f"gauge_livesum_{worker}.db").exists(),
               what="the dead worker's live gauges removed")
    assert value(serve.metrics(), "career_relay_messages_accepted_total") == 7
    wait_for_port(serve.smtp_port)
    send(serve.smtp_port, ["pass@example.net"])
    wait_until(lambda: value(serve.metrics(), "career_relay_messages_relayed_total") == 8,
               what="relayed after the restart")
    assert value(serve.metrics(), "career_relay_messages_accepted_total") == 8

    # A worker logs a message's "done" line just after it counts it relayed: wait for it.
    wait_until(lambda: _accepted_and_done(serve.log) >= 8,
               what="a done line for every accepted message")
    _check_logs(serve.log)


def _accept(serve: Serve, path: str) -> None:
    """Open the page and accept, as a phone's browser (cookies, its user agent)."""
    url = f"http://127.0.0.1:{serve.site_port}{path}"
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(urllib.request.Request(url, headers={"User-Agent": IPHONE}),
                     timeout=10) as r:
        page = r.read().decode()
    nonce = re.search(r'name="csrf" value="([^"]+)"', page)
    assert nonce
    form = {"csrf": nonce.group(1), "lang": "ja", "decision": "accept", "agree": "yes",
            "name": "山田 花子", "email": "cand@example.net"}
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(),
                                     headers={"User-Agent": IPHONE, "Origin":
                                              f"http://127.0.0.1:{serve.site_port}"})
    with opener.open(request, timeout=10) as r:  # follows the 303 to /done
        assert r.status == 200 and "/done" in r.url


def _entries(log: Path) -> list[dict[str, str]]:
    """The JSON lines written so far (a line still being written is left for later)."""
    whole = log.read_text(encoding="utf-8").rpartition("\n")[0]
    return [json.loads(line) for line in whole.splitlines() if line.startswith("{")]


def _life(entries: list[dict[str, str]]) -> list[dict[str, str]]:
    return [e for e in entries if e["logger"] in ("career_relay.smtp", "career_relay.delivery",
                                                  "career_relay.pipeline")
            and e["level"] == "info"]


def _accepted_and_done(log: Path) -> int:
    """How many messages have both their "accepted" and their "done" line."""
    life = _life(_entries(log))
    accepted = {e["queue_id"] for e in life if " accepted from " in e["message"]}
    return len(accepted & {e["queue_id"] for e in life if " done: " in e["message"]})


def _check_logs(log: Path) -> None:
    """JSON lines, one object each; a message's lines carry its queue id as a field;
    INFO never names a person."""
    entries = _entries(log)
    assert entries
    life = _life(entries)
    accepted = [e for e in life if " accepted from " in e["message"]]
    assert len(accepted) == 8
    for e in life:
        assert e["queue_id"] and f"queue_id={e['queue_id']}" in e["message"], e
    # Every accepted message's life ends in a "done" line with the same id.
    done = {e["queue_id"] for e in life if " done: " in e["message"]}
    assert {e["queue_id"] for e in accepted} <= done
    for e in (e for e in entries if e["level"] == "info"):
        assert not any(a in e["message"] for a in ADDRESSES), e
        assert "/c/" not in e["message"], e  # never a link's token


def test_json_lines_give_the_queue_id_its_own_field() -> None:
    import logging

    from career_relay.logs import JsonFormatter

    def line(text: str, *args: object) -> dict[str, str]:
        record = logging.LogRecord("career_relay.delivery", logging.INFO, __file__, 1, text,
                                   args, None)
        parsed: dict[str, str] = json.loads(JsonFormatter().format(record))
        return parsed

    entry = line("queue_id=%s done: %d delivered, attempts=1", "0191ABCDEF12300000001", 1)
    assert entry["queue_id"] == "0191ABCDEF12300000001"
    assert entry["message"] == "queue_id=0191ABCDEF12300000001 done: 1 delivered, attempts=1"
    assert "queue_id" not in line("worker %d: SMTP listening", 0)


def test_serve_says_when_it_migrates_the_ledger(make_config: ConfigMaker,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from career_relay import settings as settings_mod
    from career_relay.serve import _migrate_ledger

    settings = settings_mod.load(make_config())
    _migrate_ledger(settings)
    err = capsys.readouterr().err
    assert f"migrating the ledger {settings.ledger.path}" in err and "0001_offers" in err
    _migrate_ledger(settings)  # nothing pending: nothing said
    assert capsys.readouterr().err == ""
