"""Two gateways and two sites on one PostgreSQL ledger, end to end (SPEC 12; issue 13 item 5).

Everything is a real process: ``career-relay gateway`` twice and ``career-relay site``
twice, each with its own configuration file (its own port, each gateway its own spool),
all on the same ``ledger.url`` of a private PostgreSQL, the same secrets and the same
company.  The upstream is one capturing SMTP server (``Sink``), the agency one webhook
receiver that records every POST it gets (``Hook``).  Observed from outside only: SMTP
replies, what the upstream and the agency received, HTTP statuses, the ``career-relay``
commands and the ledger's tables.

1. Rejections split across both gateways, some submitted to both (a retried submission
   that landed on the other host), at once and one after the other: every copy reaches
   the upstream with a link, DKIM-signed; one offer per Message-ID and recipient, and the
   same link in every copy of it, whichever gateway made it.
2. Candidates accept through both sites, a page taken from one site and the form posted to
   the other as well (a load balancer without stickiness), past ``credit_every`` twice:
   every forward reaches the agency exactly once, from one site or the other; the
   qualified forwards and credits are exact (one candidate accepting two offers counts once).
3. PostgreSQL is stopped (``immediate``: a crash) in the middle and started again:
   rejections sent meanwhile get their 250 and are held (nothing reaches the upstream
   without its link), the sites answer 503 with Retry-After, a form posted meanwhile can be
   posted again; after ``queue retry`` the held ones are sent with their links (a
   submission held on one gateway gets the link its twin got on the other before the
   crash), the sites answer 200 and the forwarding workers deliver again.  At the end the
   queues are empty, ``report`` adds up, ``ledger verify`` passes and every process stops
   cleanly.

Production waits that no process can shorten: the ledger's pool waits
``postgres.POOL_TIMEOUT`` (10 s) for a connection before it calls the ledger unavailable,
so the first rejection on each gateway and the first page on each site during the outage
take that long (the rest of the rejections are then held at once); a site reads the
ledger on its event loop, so its second request waits for its first (20 s in all).  A held
rejection is looked at again every 30 s (``delivery.HELD_RETRY``), so the test asks with
``career-relay queue retry``, which makes held messages due now too.  About 30 s in all.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email
import email.policy
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import dkim
import pytest

from career_relay import settings as settings_mod
from career_relay.agency_signature import HEADER as SIGNATURE_HEADER
from career_relay.agency_signature import SignatureError, verify
from career_relay.dkimkeys import generate_key, public_record
from career_relay.ledger import Ledger, open_configured
from career_relay.tokens import LinkSigner
from tests.conftest import CLI, REPO, Sink, free_port, strip_received, wait_for_port
from tests.pg import PostgresServer
from tests.test_rejection import rejection, send

pytestmark = pytest.mark.slow

PUBLIC_URL = "http://consent.test"  # both sites behind one name, as behind a load balancer
LINK = re.compile(r"http://consent\.test/c/([A-Za-z0-9_.\-]+)")
SIGNING_KEY = "e2e-signing-key-0123456789abcdef"
HASH_KEY = "e2e-hash-key-fedcba9876543210"
WEBHOOK_SECRET = "e2e-webhook-secret"
CREDIT_EVERY = 5
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
NOISE = ("Is the server running", "notifications interrupted", "error connecting in")
COMPANY = {"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"],
           "allow_ips": ["127.0.0.1/32"]}


# -- the configuration files --------------------------------------------------------------


def write_config(directory: Path, sections: dict[str, dict[str, Any]],
                 company: dict[str, Any]) -> Path:
    """``directory/career-relay.toml``: relative paths in it resolve against ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in values.items()]
    lines.append("[[companies]]")
    lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in company.items()]
    path = directory / "career-relay.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def shared_sections(url: str) -> dict[str, dict[str, Any]]:
    """What every host has in common: the ledger, the secrets, the public URL."""
    return {
        "ledger": {"url": url, "credit_every": CREDIT_EVERY},
        "secrets": {"signing_keys": [SIGNING_KEY], "hash_key": HASH_KEY},
        "site": {"public_url": PUBLIC_URL, "review_window": 0, "metrics_listen": ""},
        "log": {"level": "info"},
    }


def gateway_config(directory: Path, url: str, sink: Sink, dkim_key: Path) -> Path:
    sections = shared_sections(url)
    sections["gateway"] = {"listen": f"127.0.0.1:{free_port()}",
                           "hostname": f"{directory.name}.relay.test",
                           "allow_ips": ["127.0.0.1/32"], "workers": 1}
    sections["upstream"] = {"host": "127.0.0.1", "port": sink.port, "timeout": 10}
    sections["queue"] = {"dir": "spool", "retry_schedule": [1, 1]}
    return write_config(directory, sections, {**COMPANY, "dkim_selector": "cr1",
                                              "dkim_key_file": str(dkim_key)})


def site_config(directory: Path, url: str, hook: Hook) -> Path:
    sections = shared_sections(url)
    sections["site"]["listen"] = f"127.0.0.1:{free_port()}"
    sections["agency"] = {"webhook_url": hook.url, "webhook_secret": WEBHOOK_SECRET,
                          "retry_schedule": [1, 1], "timeout": 5}
    return write_config(directory, sections, COMPANY)


# -- the processes ------------------------------------------------------------------------


class Service:
    """``career-relay gateway|site --config PATH`` as a child process, logging to a file."""

    def __init__(self, command: str, config: Path) -> None:
        self.command = command
        self.config = config
        settings = settings_mod.load(config, env={})
        listen = settings.gateway.listen if command == "gateway" else settings.site.listen
        self.port = int(listen.rsplit(":", 1)[1])
        self.log = config.parent / f"{command}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen([*CLI, self.command, "--config", str(self.config)],
                                         stdout=logf, stderr=logf, cwd=REPO, env=env)
        return self

    def wait_listening(self) -> None:
        wait_for_port(self.port, timeout=60)
        assert self.proc is not None and self.proc.poll() is None, self.tail()

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 40) -> str:
        """The end of the log, without the lines every process repeats while PostgreSQL
        is away."""
        kept = [line for line in self.text().splitlines() if not any(
            noise in line for noise in NOISE)]
        return f"--- {self.log} ---\n" + "\n".join(kept[-lines:])


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=60)


# -- the agency ---------------------------------------------------------------------------


@dataclass
class Post:
    forward_id: str
    header_id: str | None
    kind: str
    signed: bool
    head: str


@dataclass
class Hook:
    """The agency's webhook: records every POST (a repeat is recorded again), answers 200."""

    port: int = field(default_factory=free_port)
    posts: list[Post] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Hook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.take(dict(self.headers.items()), body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def take(self, headers: dict[str, str], body: bytes) -> None:
        try:
            verify(WEBHOOK_SECRET, headers.get(SIGNATURE_HEADER), body, time.time())
            signed = True
        except SignatureError:
            signed = False
        data = json.loads(body)
        with self.lock:
            self.posts.append(Post(data["forward_id"], headers.get("X-Career-Relay-Forward-Id"),
                                   data["type"], signed,
                                   headers.get("X-Career-Relay-Ledger-Head", "")))

    def received(self) -> list[Post]:
        with self.lock:
            return list(self.posts)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# -- the candidate's browser --------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert found, f"no CSRF nonce on the page ({self.status})"
        return found.group(1)


def browse(port: int, method: str, path: str, form: dict[str, str] | None = None) -> Answer:
    """One request as a browser on the consent page makes it (no redirect followed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"User-Agent": BROWSER, "Host": "consent.test", "Accept-Language": "ja"}
    body = None
    if form is not None:
        body = urlencode(form)
        headers |= {"Content-Type": "application/x-www-form-urlencoded", "Origin": PUBLIC_URL}
    try:
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        return Answer(response.status, dict(response.getheaders()),
                      response.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def accept_form(page: Answer, email_address: str) -> dict[str, str]:
    return {"csrf": page.csrf(), "lang": "ja", "decision": "accept", "agree": "yes",
            "name": "山田 花子", "email": email_address}


# -- the mail -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Copy:
    """One message at the upstream: the rejection it is a copy of, for whom, its link."""

    message_id: str
    rcpt: str
    token: str
    data: bytes


def copies(sink: Sink) -> list[Copy]:
    found = []
    for m in sink.messages:
        assert len(m.rcpts) == 1, m.rcpts  # one copy per candidate
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "[[CAREER_RELAY_LINK]]" not in text, "a copy went out with its marker bare"
        tokens = LINK.findall(text)
        assert len(tokens) == 1, text
        found.append(Copy(str(msg["Message-ID"]), m.rcpts[0], tokens[0], m.data))
    return found


def delivered_by(site: Service) -> set[str]:
    """The forwards this site's worker delivered, by its log."""
    return set(re.findall(r"forward (\S+) \(consent\): delivered", site.text()))


def serves(site: Service, path: str) -> Callable[[], bool]:
    return lambda: browse(site.port, "GET", path).status == 200


def holds(gateway: Service, count: int) -> Callable[[], bool]:
    """Whether `queue list` shows ``count`` messages held (last error: 451 4.3.0 held: ...)."""

    def check() -> bool:
        listing = cli("queue", "list", "--config", str(gateway.config))
        assert listing.returncode == 0, listing.stderr
        return listing.stdout.count("4.3.0 held: ") == count

    return check


def wait(predicate: Callable[[], bool], timeout: float, what: str,
         services: list[Service]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n"
                         + "\n".join(s.tail() for s in services))


@pytest.fixture
def dkim_key(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "keys" / "acme.pem"
    return path, public_record(generate_key(path)).encode()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook().start()
    yield h
    h.stop()


# -- the test -----------------------------------------------------------------------------


def test_two_gateways_and_two_sites_share_one_postgresql_through_a_crash(
        tmp_path: Path, sink: Sink, hook: Hook, dkim_key: tuple[Path, bytes]) -> None:
    began = time.monotonic()
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = round(time.monotonic() - began, 1)

    with PostgresServer() as pg:
        url = pg.url(pg.create_database())
        mark("postgresql")
        gw_a = Service("gateway", gateway_config(tmp_path / "gw-a", url, sink, dkim_key[0]))
        gw_b = Service("gateway", gateway_config(tmp_path / "gw-b", url, sink, dkim_key[0]))
        site_c = Service("site", site_config(tmp_path / "site-c", url, hook))
        site_d = Service("site", site_config(tmp_path / "site-d", url, hook))
        gateways, sites = [gw_a, gw_b], [site_c, site_d]
        services = [*gateways, *sites]
        try:
            for s in services:  # all at once on an empty database: they migrate it together
                s.start()
            for s in services:
                s.wait_listening()
            mark("started")
            _scenario(pg, sink, hook, gateways, sites, dkim_key[1], mark)
            mark("checked")
            for s in services:
                assert s.terminate() == 0, s.tail()
            mark("stopped")
        finally:
            for s in services:
                s.kill()
    print(f"\nphases (s since the start): {marks}")


@dataclass
class World:
    """What the test sent and did, to compare with what everyone received."""

    sends: Counter[str] = field(default_factory=Counter)  # Message-ID -> submissions
    rcpts: dict[str, list[str]] = field(default_factory=dict)  # Message-ID -> recipients
    accepts: list[str] = field(default_factory=list)  # the address of each accepted offer
    viewed: set[str] = field(default_factory=set)  # tokens whose page was served


def _scenario(pg: PostgresServer, sink: Sink, hook: Hook, gateways: list[Service],
              sites: list[Service], dkim_public: bytes, mark: Callable[[str], None]) -> None:
    services = [*gateways, *sites]
    world = World()
    pool = concurrent.futures.ThreadPoolExecutor(16)

    def submit(n: int, gateway: Service, rcpts: list[str]) -> str:
        mid = f"<r{n:02d}@acme.example>"
        send(gateway.port, rejection(mid), rcpts)
        return mid

    def note(mid: str, rcpts: list[str]) -> None:
        world.sends[mid] += 1
        assert world.rcpts.setdefault(mid, rcpts) == rcpts

    def send_all(batch: list[tuple[int, Service, list[str]]]) -> None:
        """At once, as several HR systems do; each one's 250 awaited."""
        for (_, _, rcpts), mid in zip(batch, pool.map(lambda b: submit(*b), batch),
                                      strict=True):
            note(mid, rcpts)

    def expected_copies() -> int:
        return sum(world.sends[mid] * len(world.rcpts[mid]) for mid in world.sends)

    def all_at_the_sink(timeout: float = 30) -> list[Copy]:
        wait(lambda: len(sink.messages) >= expected_copies(), timeout,
             f"{expected_copies()} copies at the upstream (have {len(sink.messages)})",
             services)
        return copies(sink)

    def link_of(mid: str, rcpt: str) -> str:
        tokens = {c.token for c in copies(sink) if c.message_id == mid and c.rcpt == rcpt}
        assert len(tokens) == 1, f"{mid} to {rcpt}: links {tokens}"
        return f"/c/{tokens.pop()}"

    def accept(k: int, mid: str, rcpt: str) -> None:
        """Page from one site, form to one site: both combinations of the two."""
        path = link_of(mid, rcpt)
        page = browse(sites[k % 2].port, "GET", path)
        assert page.status == 200, (page.status, page.text[:300])
        world.viewed.add(path)
        done = browse(sites[(k // 2) % 2].port, "POST", path, accept_form(page, rcpt))
        assert done.status == 303 and done.headers["Location"].startswith(f"{path}/done"), \
            (done.status, done.text[:300])
        world.accepts.append(rcpt)

    def forwards_settled() -> bool:
        with ledger(gateways[0]) as led, led.read() as conn:
            pending = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        return pending == 0 and len(hook.received()) >= len(world.accepts)

    cand = iter(f"cand{i:02d}@example.net" for i in range(1000))
    a, b = gateways

    # -- 1. before the crash: rejections on both gateways, twins among them ----------------
    first = [(n, a if n % 2 == 0 else b, [next(cand) for _ in range(3 if n % 4 == 0 else 2)])
             for n in range(14)]
    first[9] = (9, b, ["cand00@example.net", next(cand)])  # cand00 is rejected twice
    twins = [(n, b if gw is a else a, rcpts) for n, gw, rcpts in first if n in (1, 4, 7)]
    send_all(first + twins)  # a retried submission on the other host, at the same moment
    all_at_the_sink()
    send_all([(n, b if gw is a else a, rcpts) for n, gw, rcpts in first if n == 6])  # later
    all_at_the_sink()
    mark("sent before the crash")

    # Candidates accept: cand00 twice (two offers, one candidate), a twin's recipient, ...
    before = [(0, "cand00@example.net"), (9, "cand00@example.net"), (1, first[1][2][0]),
              (4, first[4][2][1]), (2, first[2][2][0]), (3, first[3][2][1]),
              (5, first[5][2][0]), (6, first[6][2][1])]
    for k, (n, rcpt) in enumerate(before):
        accept(k, f"<r{n:02d}@acme.example>", rcpt)
    wait(forwards_settled, 30, "the forwards before the crash, delivered", services)
    assert len(hook.received()) == len(before)
    # A form taken now and posted during the outage (the candidate presses the button then).
    late_rcpt = first[10][2][0]
    late_path = link_of("<r10@acme.example>", late_rcpt)
    late_page = browse(sites[0].port, "GET", late_path)
    assert late_page.status == 200
    world.viewed.add(late_path)
    unseen = [link_of("<r11@acme.example>", first[11][2][0]),
              link_of("<r12@acme.example>", first[12][2][0])]
    mark("accepted before the crash")

    # -- 2. the crash: PostgreSQL killed, mail and candidates keep coming ------------------
    at_sink = len(sink.messages)
    pg.stop("immediate")
    mark("postgresql stopped")
    during = [(n, a if n % 2 == 0 else b, [next(cand), next(cand)]) for n in range(14, 20)]
    during += [(19, a, during[-1][2])]  # twins held on both gateways
    during += [(2, b, first[2][2])]  # the twin of one sent before the crash, held
    # A page on each site, a form posted, and one rejection on each gateway: each waits
    # for the ledger's pool (postgres.POOL_TIMEOUT, 10 s) before it says "away".
    pages = [pool.submit(browse, site.port, "GET", path) for site, path in zip(sites, unseen,
                                                                              strict=True)]
    posted = pool.submit(browse, sites[1].port, "POST", late_path,
                         accept_form(late_page, late_rcpt))
    send_all(during[:2])  # answered 250 while the ledger is away
    mark("the first ones held")
    # Then the rest, held at once: for 5 s after a failure the gateway does not wait on
    # the ledger again (pipeline.LEDGER_AWAY_SECONDS); a wait would take 10 s.
    rest = time.monotonic()
    send_all(during[2:])
    assert time.monotonic() - rest < 9, "a rejection waited on the ledger again"
    for answer in [*(p.result() for p in pages), posted.result()]:
        assert answer.status == 503 and answer.headers.get("Retry-After") == "30", \
            (answer.status, answer.text[:300])
    assert len(sink.messages) == at_sink  # held, not sent: no copy without its link
    for gw in gateways:  # each held one filed, waiting for the ledger
        count = sum(1 for _, g, _ in during if g is gw)
        wait(holds(gw, count), 20, f"{count} held in {gw.config.parent.name}'s queue", services)
        assert gw.text().count("rejection from acme held: ") == count
    mark("held during the outage")

    before_restart = {s.log: delivered_by(s) for s in sites}
    pg.start()
    mark("postgresql started")
    # The sites serve again by themselves.
    for site, path in zip(sites, unseen, strict=True):
        wait(serves(site, path), 40, f"{site.config.parent.name} serving again", services)
        world.viewed.add(path)
    mark("sites back")
    # The held rejections: the gateways look every 30 s; an operator asks now (asked
    # again while a gateway still finds the ledger away: it looked moments ago).
    retries = 0

    def released() -> bool:
        nonlocal retries
        if len(sink.messages) >= expected_copies():
            return True
        for gw in gateways:
            done = cli("queue", "retry", "--config", str(gw.config))
            assert done.returncode == 0, done.stderr
            if retries == 0:  # `queue retry` counts the held ones among the deferred
                count = sum(1 for _, g, _ in during if g is gw)
                assert done.stdout.startswith(f"{count} deferred message(s)"), done.stdout
        retries += 1
        time.sleep(1)
        return False

    # Within 15 s: by themselves the gateways would look again 30 s after holding them,
    # about 20 s from now.
    wait(released, 15, "the held rejections, sent after `queue retry`", services)
    all_at_the_sink()
    for gw in gateways:
        assert "released: the ledger is back" in gw.text(), gw.tail()
    mark(f"held ones sent ({retries} queue retry round(s))")

    # -- 3. after the crash: the form posted during the outage is posted again -------------
    again = browse(sites[1].port, "POST", late_path, accept_form(late_page, late_rcpt))
    assert again.status == 303, (again.status, again.text[:300])
    world.accepts.append(late_rcpt)
    send_all([(n, a if n % 2 == 0 else b, [next(cand), next(cand)]) for n in range(20, 23)])
    all_at_the_sink()
    after = [(14, during[0][2][0]), (15, during[1][2][1]), (19, during[5][2][0]),
             (2, first[2][2][1]), (20, world.rcpts["<r20@acme.example>"][0]),
             (13, first[13][2][0])]
    for k, (n, rcpt) in enumerate(after):
        accept(k + len(before), f"<r{n:02d}@acme.example>", rcpt)
    wait(forwards_settled, 30, "every forward delivered", services)
    # A site logs a delivery just after the commit that empties its outbox row: wait for
    # the lines (the checks below read them).
    wait(lambda: sum(len(delivered_by(s)) for s in sites) >= len(world.accepts), 30,
         "every delivery in the sites' logs", services)
    for site in sites:  # each site's forwarding worker is at work again
        assert delivered_by(site) > before_restart[site.log], site.tail()
    mark("accepted after the crash")
    pool.shutdown()

    _check(world, sink, hook, gateways, sites, dkim_public)


@contextlib.contextmanager
def ledger(service: Service) -> Iterator[Ledger]:
    """The shared ledger as one of the hosts opens it (with its configuration)."""
    with open_configured(settings_mod.load(service.config, env={})) as opened:
        yield opened


def _check(world: World, sink: Sink, hook: Hook, gateways: list[Service],
           sites: list[Service], dkim_public: bytes) -> None:
    signer = LinkSigner([SIGNING_KEY], 90)
    got = copies(sink)
    # Nothing lost, nothing twice: each submission's copies, one per recipient.
    sent = Counter((mid, rcpt) for mid, n in world.sends.items()
                   for rcpt in world.rcpts[mid] for _ in range(n))
    assert Counter((c.message_id, c.rcpt) for c in got) == sent
    for c in got:
        assert dkim.verify(strip_received(c.data), dnsfunc=lambda name, timeout=5: dkim_public)
    # One offer per Message-ID and recipient, whichever gateway, whenever: the same link.
    links: dict[tuple[str, str], set[str]] = {}
    for c in got:
        links.setdefault((c.message_id, c.rcpt), set()).add(c.token)
    assert all(len(tokens) == 1 for tokens in links.values()), \
        {k: v for k, v in links.items() if len(v) > 1}
    with ledger(gateways[1]) as led, led.read() as conn:
        offers = {(str(mid), str(rcpt)): str(oid) for oid, mid, rcpt in conn.execute(
            "SELECT id, message_id, recipient FROM offers").fetchall()}
        delivered = Counter(str(f) for (f,) in conn.execute(
            "SELECT forward_id FROM forward_events WHERE event = 'delivered'").fetchall())
        forwards = {str(f): str(k) for f, k in conn.execute(
            "SELECT id, kind FROM forwards").fetchall()}
        outbox = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert len(offers) == len(links)
    for key, tokens in links.items():
        assert signer.offer_id(next(iter(tokens))) == offers[key], key
    # Every forward once at the agency, signed; one per accept; each from one site.
    posts = hook.received()
    assert all(p.signed and p.kind == "consent" and p.head and p.header_id == p.forward_id
               for p in posts)
    assert len(posts) == len({p.forward_id for p in posts}) == len(world.accepts)
    assert {p.forward_id for p in posts} == set(forwards) == set(delivered)
    assert set(delivered.values()) == {1} and outbox == 0
    by_site = {s.config.parent.name: delivered_by(s) for s in sites}
    assert set.union(*by_site.values()) == set(forwards)
    assert sum(len(ids) for ids in by_site.values()) == len(forwards)  # no forward twice
    assert all(by_site.values()), by_site  # both sites' workers delivered
    # The report: a twin is no second rejection; one candidate's two accepts qualify once.
    qualified = len(set(world.accepts))
    report = cli("report", "--format", "json", "--config", str(sites[0].config))
    assert report.returncode == 0, report.stderr
    (acme,) = json.loads(report.stdout)
    assert {k: acme[k] for k in ("rejections", "offers", "views", "accepted",
                                 "forwards_delivered", "qualified_forwards", "credits_earned",
                                 "credits_available", "progress_to_next_credit")} == {
        "rejections": len(world.sends), "offers": len(offers), "views": len(world.viewed),
        "accepted": len(world.accepts), "forwards_delivered": len(world.accepts),
        "qualified_forwards": qualified, "credits_earned": qualified // CREDIT_EVERY,
        "credits_available": qualified // CREDIT_EVERY,
        "progress_to_next_credit": qualified % CREDIT_EVERY}
    assert qualified // CREDIT_EVERY >= 2
    for s in (gateways[0], sites[1]):
        verified = cli("ledger", "verify", "--config", str(s.config))
        assert verified.returncode == 0 and verified.stdout.startswith("ledger ok"), verified
    for gw in gateways:
        listing = cli("queue", "list", "--config", str(gw.config))
        assert listing.stdout.startswith("the queue is empty"), listing.stdout
        assert " ERROR " not in gw.text(), gw.tail()
    for site in sites:
        assert "unexpected error" not in site.text(), site.tail()  # never a 500
