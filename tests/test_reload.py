"""The life cycle of the real commands: SIGHUP reloads, SIGTERM stops without losing anything.

Every test runs ``career-relay gateway``, ``site`` or ``serve`` as a process,
sends it real signals, and watches from outside: SMTP and HTTP on loopback,
the log, the ledger file, a capturing upstream and a stand-in agency.  The
tests wait for conditions (a log line, a closed port, bytes read by the
server), never for a fixed time.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import http.client
import http.server
import os
import re
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from career_relay import settings as settings_mod
from career_relay.ledger import Offer, open_ledger
from career_relay.passwords import hash_password
from career_relay.tokens import LinkSigner
from tests.conftest import (
    CLI,
    COMPANY_PASSWORD,
    REPO,
    ConfigMaker,
    GatewayProcess,
    Sink,
    crlf,
    free_port,
    queue_listing,
    wait_for_port,
    wait_until,
)
from tests.test_crash import gateway_pids, start_gateway, stop_gateway
from tests.test_intake import Raw

pytestmark = pytest.mark.slow

PASSWORD_HASH = hash_password(COMPANY_PASSWORD)
ACME = {"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"],
        "smtp_username": "acme", "smtp_password_hash": PASSWORD_HASH}
KUMO = {"id": "kumo", "name": "Kumo Inc.", "domains": ["kumo.example"], "locale": "en",
        "smtp_username": "kumo", "smtp_password_hash": PASSWORD_HASH}
BROWSER = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/126.0 Safari/537.36")


def plain(sender: str, rcpt: str, subject: str = "hello") -> bytes:
    return crlf(f"From: HR <{sender}>\nTo: {rcpt}\nSubject: {subject}\n\nHello.\n")


def rejection(i: int) -> bytes:
    return crlf(f"From: HR <hr@acme.example>\nTo: cand{i}@example.net\nSubject: Your application\n"
                f"Message-ID: <reload-{i}@acme.example>\nX-Career-Relay: rejection\n\n"
                "Thank you for applying. We regret to inform you that we will not proceed.\n")


def text_of(data: bytes) -> str:
    """Every text part of a relayed message, decoded."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    return "\n".join(str(part.get_content()) for part in msg.walk()
                     if part.get_content_maintype() == "text")


def log_of(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def send(port: int, sender: str, rcpt: str, login: str | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        if login:
            client.login(login, COMPANY_PASSWORD)
        client.sendmail(sender, [rcpt], plain(sender, rcpt))


def rewrite(config: Path, text: str) -> None:
    """Replace the file whole (a rename), as an editor or a deployment tool does."""
    tmp = config.with_suffix(".new")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, config)


# -- SIGHUP: the gateway ----------------------------------------------------------------------


def test_sighup_adds_a_company_while_a_session_stays_open(make_config: ConfigMaker,
                                                          sink: Sink) -> None:
    config = make_config(upstream_port=sink.port, gateway={"workers": 2}, companies=[ACME])
    port = settings_mod.load(config).gateway.listen
    gw = start_gateway(config, 2)
    try:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            send(gw.port, "hr@kumo.example", "x@example.net", login="kumo")
        busy = Raw(gw.port)  # in the middle of a transaction across the reload
        busy.cmd("EHLO busy.test")
        assert busy.cmd("MAIL FROM:<hr@acme.example>").startswith("250")
        assert busy.cmd("RCPT TO:<open@example.net>").startswith("250")
        assert busy.cmd("DATA").startswith("354")
        body = plain("hr@acme.example", "open@example.net", "open across the reload")
        busy.send(body[:30])

        # The new file: a second company, and a new listen address (that needs a restart).
        new_config = make_config(upstream_port=sink.port, gateway={"workers": 2},
                                 companies=[ACME, KUMO])
        assert new_config == config
        assert settings_mod.load(config).gateway.listen != port
        os.kill(gw.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: all(f"worker {i}: configuration reloaded" in log_of(gw.log)
                               for i in (0, 1)), what="both workers reloaded")

        busy.send(body[30:] + b".\r\n")
        assert busy.reply().startswith("250"), "the open session was disturbed"
        assert busy.cmd("QUIT").startswith("221")
        busy.close()
        for i in range(6):  # new sessions land on either worker (SO_REUSEPORT)
            send(gw.port, "hr@kumo.example", f"kumo{i}@example.net", login="kumo")
        send(gw.port, "hr@acme.example", "acme@example.net", login="acme")
        got = sink.wait_for(8)
        rcpts = sorted(r for m in got for r in m.rcpts)
        assert "open@example.net" in rcpts and "kumo5@example.net" in rcpts
        warnings = [line for line in log_of(gw.log).splitlines() if "WARNING" in line
                    and "need(s) a restart" in line]
        assert len(warnings) == 2, warnings  # one line per worker process
        assert all("gateway.listen" in w for w in warnings)
        assert len(gateway_pids(config)) == 2  # nobody was restarted
    finally:
        assert not stop_gateway(gw, config)
    assert gw.proc is not None and gw.proc.returncode == 0


LAUNCH_WITH_TEMPLATES = (
    "import sys; from pathlib import Path; import career_relay.paths as p; "
    "p.email_templates_dir = lambda: Path(sys.argv[1]); "
    "from career_relay.cli import main; sys.exit(main(sys.argv[2:]))")


@pytest.fixture
def templated(make_config: ConfigMaker, sink: Sink, tmp_path: Path) -> Iterator[
        tuple[GatewayProcess, Path, Path]]:
    """One gateway process (one worker) whose email templates are a copy in tmp_path."""
    templates = tmp_path / "emails"
    shutil.copytree(REPO / "templates" / "emails", templates)
    config = make_config(upstream_port=sink.port, gateway={"workers": 1},
                         companies=[{**ACME, "allow_ips": ["127.0.0.1/32"]}])
    gw = GatewayProcess(config)
    with open(gw.log, "ab") as logf:
        gw.proc = subprocess.Popen([sys.executable, "-c", LAUNCH_WITH_TEMPLATES,
                                    str(templates), "gateway", "--config", str(config)],
                                   stdout=logf, stderr=logf, cwd=REPO)
    wait_for_port(gw.port)
    yield gw, config, templates
    stop_gateway(gw, config)


def test_sighup_rereads_the_templates_and_an_invalid_file_keeps_the_old_ones(
        templated: tuple[GatewayProcess, Path, Path], sink: Sink) -> None:
    gw, config, templates = templated
    assert gw.proc is not None

    def relay_rejection(i: int) -> str:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=20) as client:
            client.sendmail("hr@acme.example", [f"cand{i}@example.net"], rejection(i))
        return text_of(sink.wait_for(i + 1)[i].data)

    before = relay_rejection(0)
    assert "Reload check" not in before and "株式会社アクメ" in before
    block = templates / "block_ja.txt"
    block.write_text(block.read_text(encoding="utf-8") + "Reload check: ${company_name}\n",
                     encoding="utf-8")
    renamed = config.read_text(encoding="utf-8").replace("株式会社アクメ", "アクメ新社")
    rewrite(config, renamed)
    os.kill(gw.proc.pid, signal.SIGHUP)
    wait_until(lambda: "worker 0: configuration reloaded" in log_of(gw.log), what="reloaded")
    after = relay_rejection(1)
    assert "Reload check: アクメ新社" in after

    # A file that does not load: one ERROR line naming the problem; the old settings work on.
    rewrite(config, renamed + "[[companies]]\nid = \"broken\"\nbogus = 1\n")
    os.kill(gw.proc.pid, signal.SIGHUP)
    wait_until(lambda: "ERROR" in log_of(gw.log), what="the reload's error")
    errors = [line for line in log_of(gw.log).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "companies[1].bogus" in errors[0], errors
    assert "the running configuration stays" in errors[0]
    assert "Reload check: アクメ新社" in relay_rejection(2)
    send(gw.port, "hr@acme.example", "still@example.net", login="acme")
    sink.wait_for(4)

    # A DKIM key file that is missing is named too, and changes nothing either.
    rewrite(config, renamed.replace("smtp_username = ",
                                    'dkim_selector = "s1"\ndkim_key_file = "nokey.pem"\n'
                                    "smtp_username = ", 1))
    os.kill(gw.proc.pid, signal.SIGHUP)
    wait_until(lambda: log_of(gw.log).count("ERROR") == 2, what="the second error")
    errors = [line for line in log_of(gw.log).splitlines() if "ERROR" in line]
    assert "nokey.pem" in errors[1], errors
    assert "Reload check: アクメ新社" in relay_rejection(4)
    assert gw.terminate() == 0


# -- the consent site ---------------------------------------------------------------------------


class Agency:
    """A stand-in agency webhook that holds each answer until the test releases it."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.release = threading.Event()
        agency = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                agency.received.append(body)
                agency.release.wait(60)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/forwards"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


class SiteRun:
    """``career-relay site`` (or ``serve``) as a process, with offers in its ledger."""

    def __init__(self, config: Path, command: str = "site") -> None:
        self.config = config
        self.settings = settings_mod.load(config)
        self.port = int(self.settings.site.listen.rsplit(":", 1)[1])
        self.log = config.parent / f"{command}.log"
        self.signer = LinkSigner.from_settings(self.settings)
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([*CLI, command, "--config", str(config)],
                                         stdout=logf, stderr=logf, cwd=REPO)
        wait_for_port(self.port, 30)

    def offer(self, recipient: str) -> Offer:
        created = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)  # past the review window
        with open_ledger(self.settings.ledger.path, clock=lambda: created) as ledger:
            return ledger.record_offer("acme", f"<{recipient}>", recipient)

    def path(self, offer: Offer) -> str:
        return f"/c/{self.signer.token(offer.id)}"

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.settings.ledger.path) as db:
            return db.execute(sql, args).fetchall()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def get(conn: http.client.HTTPConnection, path: str) -> str:
    conn.request("GET", path, headers={"User-Agent": BROWSER})
    response = conn.getresponse()
    body = response.read().decode("utf-8")
    assert response.status == 200, body[:300]
    return body


def consent_form(page: str, **extra: str) -> bytes:
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf, "no nonce on the page"
    fields = {"csrf": csrf.group(1), "lang": "ja", "decision": "accept", "agree": "yes",
              "name": "山田 花子", "email": "hanako@example.net", **extra}
    return urllib.parse.urlencode(fields).encode()


def site_config(make_config: ConfigMaker, agency_url: str = "http://127.0.0.1:9/unused",
                **sections: Any) -> Path:
    port = free_port()
    return make_config(site={"listen": f"127.0.0.1:{port}",
                             "public_url": f"http://127.0.0.1:{port}"},
                       agency={"webhook_url": agency_url, "webhook_secret": "s" * 32},
                       companies=[ACME], **sections)


def test_sighup_shows_a_renamed_company_on_a_kept_alive_connection(
        make_config: ConfigMaker) -> None:
    config = site_config(make_config)
    site = SiteRun(config)
    try:
        offer = site.offer("cand@example.net")
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=20)
        assert "株式会社アクメ" in get(conn, site.path(offer))
        sock = conn.sock
        rewrite(config, config.read_text(encoding="utf-8").replace("株式会社アクメ",
                                                                    "アクメ新社"))
        site.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in log_of(site.log), what="reloaded")
        page = get(conn, site.path(offer))
        assert "アクメ新社" in page and "株式会社アクメ" not in page
        assert conn.sock is sock, "the keep-alive connection was dropped"
        conn.close()
    finally:
        assert site.stop() == 0


def unread(server_port: int, client_port: int) -> int:
    """Bytes the server has not yet read from its side of our connection (/proc/net/tcp)."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[4].split(":")[1], 16)
    raise AssertionError("no such connection")


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_sigterm_lets_a_slow_post_and_a_forward_in_flight_finish(
        make_config: ConfigMaker) -> None:
    agency = Agency()
    config = site_config(make_config, agency.url)
    site = SiteRun(config)
    try:
        # A consent whose forward is at the agency, waiting for its answer.
        first, second = site.offer("first@example.net"), site.offer("second@example.net")
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=20)
        conn.request("POST", site.path(first), body=consent_form(get(conn, site.path(first))),
                     headers={"User-Agent": BROWSER,
                              "Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        assert response.status == 303
        wait_until(lambda: len(agency.received) == 1, what="the forward at the agency")

        # A second consent, in flight when the SIGTERM comes: its commit waits for a write
        # lock the test holds.  (A body still arriving then would be cut off: aiohttp reads
        # nothing more from a connection once the stop has begun.)
        body = consent_form(get(conn, site.path(second)))
        lock = sqlite3.connect(site.settings.ledger.path, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        raw = socket.create_connection(("127.0.0.1", site.port), timeout=30)
        raw.sendall((f"POST {site.path(second)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"User-Agent: {BROWSER}\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        wait_until(lambda: unread(site.port, raw.getsockname()[1]) == 0,
                   what="the site reading the request")
        site.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses(site.port), what="the site to stop listening")
        lock.execute("COMMIT")
        lock.close()
        answer = raw.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 303"), answer[:200]
        raw.close()
        assert site.proc.poll() is None  # still waiting for the agency's answer
        agency.release.set()
        assert site.proc.wait(60) == 0
    finally:
        site.stop()
        agency.close()
    decisions = site.rows("SELECT r.decision FROM receipts r JOIN offers o ON o.id = r.offer_id"
                          " WHERE r.offer_id IN (?, ?) ORDER BY r.created", first.id, second.id)
    assert decisions == [("accept",), ("accept",)]
    events = site.rows("SELECT f.offer_id, e.event FROM forward_events e "
                       "JOIN forwards f ON f.id = e.forward_id")
    assert events == [(first.id, "delivered")]  # recorded, so not sent again
    waiting = site.rows("SELECT f.offer_id FROM outbox JOIN forwards f ON f.id = forward_id")
    assert waiting == [(second.id,)]  # the next start sends it
    assert len(agency.received) == 1


def test_serve_on_sigterm_finishes_the_open_transaction_and_exits_0(
        make_config: ConfigMaker, sink: Sink) -> None:
    config = site_config(make_config, upstream_port=sink.port, gateway={"workers": 2})
    smtp_port = int(settings_mod.load(config).gateway.listen.rsplit(":", 1)[1])
    site = SiteRun(config, "serve")
    try:
        wait_until(lambda: len(gateway_pids(config)) == 2, what="two gateway processes")
        wait_for_port(smtp_port)
        busy = Raw(smtp_port)
        busy.cmd("EHLO busy.test")
        assert busy.cmd("MAIL FROM:<hr@acme.example>").startswith("250")
        assert busy.cmd("RCPT TO:<last@example.net>").startswith("250")
        assert busy.cmd("DATA").startswith("354")
        body = plain("hr@acme.example", "last@example.net", "sent during the stop")
        busy.send(body[:30])
        site.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses(site.port), what="the site to stop listening")
        busy.send(body[30:] + b".\r\n")
        reply = busy.reply()
        assert reply.startswith("250"), reply
        busy.close()
        assert site.proc.wait(60) == 0
        assert not gateway_pids(config)
    finally:
        site.stop()
    if not any("last@example.net" in m.rcpts for m in sink.messages):
        assert "1 message(s)" in queue_listing(config)  # in the spool for the next start
        gw = GatewayProcess(config).start()
        try:
            wait_until(lambda: any("last@example.net" in m.rcpts for m in sink.messages),
                       what="the message at the upstream after a restart")
        finally:
            gw.terminate()
