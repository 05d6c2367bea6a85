"""Forwarding to the agency (SPEC 7): the worker against real servers on loopback.

The agency is a real aiohttp server on a free port (``Agency``), the SMTP
upstream a real aiosmtpd sink, the ledger a real SQLite file or a PostgreSQL
database.  Time passes by moving the ledger's clock, never by sleeping; waits
poll with a deadline.

What the ledger decides (claims, retries, ordering, cancellation, delivery recorded
once) runs on both backends (``make_world``: ``backend_url``); what only the worker,
its transports, the demo agency or the documentation decide runs once, on SQLite
(``make_sqlite_world``), each such test saying so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import json
import logging
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from career_relay import settings as settings_mod
from career_relay.agency_signature import sign, verify
from career_relay.consent import Client, Consents, Notice
from career_relay.ledger import (
    Book,
    ConsentLedger,
    ForwardStatus,
    Ledger,
    Offer,
    Rules,
    open_ledger,
    open_shared,
)
from career_relay.ledger import head as ledger_head
from career_relay.settings import Settings
from career_relay.starter import write_starter
from consent_site.agency_receiver import start_agency_receiver
from consent_site.forwarding import Forwarder
from tests.conftest import CLI, REPO, ConfigMaker, Sink, free_port, wait_for_port

SECRET = "whsec-forwarding-test-secret"
BROWSER = Client("Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0",
                 "203.0.113.7")
NOTICE = Notice.of("株式会社サンプル人材への登録について（テスト用の通知文）", "ja")
PROFILE = {"name": "山田 太郎", "email": "taro@example.net", "phone": "090-1234-5678",
           "desired_job": "エンジニア"}


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Clock:
    """The ledger's clock: starts at the real time, moves only when told."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class Got:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Agency:
    """A webhook receiver the test controls: answers ``statuses`` in turn, then 200."""

    port: int = field(default_factory=free_port)
    requests: list[Got] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    #: Run inside the request, before answering (a candidate acting meanwhile).
    during: Callable[[int], Awaitable[None]] | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Agency:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Got(dict(request.headers), await request.read()))
        if self.during is not None:
            await self.during(len(self.requests))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    def kinds(self) -> list[tuple[str, str]]:
        return [(r.json["type"], r.json["forward_id"]) for r in self.requests]


@dataclass
class World:
    settings: Settings
    clock: Clock
    ledger: Ledger
    store: ConsentLedger
    consents: Consents
    #: Another Ledger on the same store and clock: another process, or another host.
    open_host: Callable[[], Ledger]
    mails: int = 0

    def offer(self, recipient: str = "taro@example.net") -> Offer:
        self.mails += 1
        offer = self.ledger.record_offer("acme", f"<{self.mails}.{recipient}@acme.example>",
                                         recipient, job="Backend engineer", stage="一次面接")
        self.clock.advance(3600)  # the candidate reads the mail later (no review window)
        return offer

    def accepted(self, client: Client = BROWSER, profile: dict[str, str] | None = None
                 ) -> Offer:
        offer = self.offer()
        self.consents.shown(offer, NOTICE)  # the page showed the notice the receipt cites
        self.consents.accept(offer, NOTICE, dict(profile or PROFILE), True, client)
        return offer

    def forwards(self, offer: Offer) -> list[ForwardStatus]:
        return self.store.forwards(offer.id)

    def events(self, forward_id: str) -> list[tuple[str, str]]:
        """In the order they happened: by time, and within a second a failed attempt before
        the outcome it led to (forward_events has no rowid on PostgreSQL)."""
        with self.ledger.read() as conn:
            rows = conn.execute("SELECT event, detail FROM forward_events WHERE forward_id = ?"
                                " ORDER BY created, CASE WHEN event = 'failed' THEN 0 ELSE 1 END",
                                (forward_id,)).fetchall()
        return [(str(e), str(d)) for e, d in rows]

    def forwarder(self, **kwargs: Any) -> Forwarder:
        return Forwarder(self.settings, self.store, **kwargs)


WorldMaker = Callable[..., World]


def _worlds(make_config: ConfigMaker, tmp_path: Path, url: str) -> Iterator[WorldMaker]:
    opened: list[Ledger] = []

    def open_(clock: Clock) -> Ledger:
        ledger = (open_shared(url, clock=clock) if url
                  else open_ledger(tmp_path / "ledger.db", clock=clock))
        opened.append(ledger)
        return ledger

    def make(agency: dict[str, Any] | None = None, **sections: dict[str, Any]) -> World:
        values = {"webhook_secret": SECRET, "retry_schedule": [10, 30], "timeout": 5,
                  **(agency or {})}
        settings = settings_mod.load(make_config(agency=values, **sections), env={})
        clock = Clock()
        store = ConsentLedger(open_(clock))
        return World(settings, clock, store.ledger, store, Consents(settings, store),
                     lambda: open_(clock))

    yield make
    for ledger in opened:
        ledger.close()


@pytest.fixture
def make_world(make_config: ConfigMaker, tmp_path: Path, backend_url: str
               ) -> Iterator[WorldMaker]:
    """Worlds whose ledger is on each backend in turn."""
    yield from _worlds(make_config, tmp_path, backend_url)


@pytest.fixture
def make_sqlite_world(make_config: ConfigMaker, tmp_path: Path) -> Iterator[WorldMaker]:
    """Worlds on a SQLite ledger, for what does not depend on the ledger's backend."""
    yield from _worlds(make_config, tmp_path, "")


def assert_signed(got: Got) -> None:
    verify(SECRET, got.headers["X-Career-Relay-Signature"], got.body, time.time())


# -- webhook ------------------------------------------------------------------------------------


def test_a_consent_is_delivered_once_signed_with_its_stable_id(make_world: WorldMaker) -> None:
    async def main() -> None:
        agency = await Agency().start()
        world = make_world({"webhook_url": agency.url})
        offer = world.accepted()
        (pending,) = world.forwards(offer)
        forwarder = world.forwarder()
        assert await forwarder.run_once() == 1
        assert await forwarder.run_once() == 0
        await agency.stop()

        (got,) = agency.requests
        assert_signed(got)
        forward_id = pending.forward.id
        assert pending.forward.payload is not None
        assert got.body == pending.forward.payload.encode()  # the stored bytes, exactly
        assert got.json["forward_id"] == forward_id == got.headers["X-Career-Relay-Forward-Id"]
        assert got.json["type"] == "consent" == got.headers["X-Career-Relay-Type"]
        assert got.json["candidate"]["name"] == "山田 太郎"
        assert got.headers["Content-Type"] == "application/json; charset=utf-8"
        assert re.fullmatch(r"career-relay/\d+\.\d+\.\d+\S*", got.headers["User-Agent"])
        (status,) = world.forwards(offer)
        assert status.delivered is not None and not status.pending
        assert world.events(forward_id) == [("delivered", "HTTP 200 OK")]

    run(main())


def test_every_forward_carries_the_ledger_head(make_world: WorldMaker) -> None:
    """SPEC 8: the head at send time, which the agency keeps and can hand back for
    ``ledger verify --head``; a later forward's head extends an earlier one's."""
    async def main() -> None:
        agency = await Agency().start()
        world = make_world({"webhook_url": agency.url})
        first = world.accepted()
        forwarder = world.forwarder()
        assert await forwarder.run_once() == 1
        head_then = world.ledger.head()
        world.accepted()
        world.consents.withdraw(first, "ja", BROWSER)
        assert await forwarder.run_once() == 2
        await agency.stop()

        heads = [ledger_head.parse(g.headers["X-Career-Relay-Ledger-Head"])
                 for g in agency.requests]
        assert len(heads) == 3
        with world.ledger.read() as conn:
            entries = dict(conn.execute("SELECT seq, hash FROM entries").fetchall())
            (forward_entry,) = conn.execute(
                "SELECT seq FROM entries WHERE kind = 'forward' AND ref = ?",
                (agency.requests[0].json["forward_id"],)).fetchone()
        for n, digest in heads:
            assert entries[n] == digest  # the ledger's own entry n
        assert forward_entry <= heads[0][0] < heads[1][0] == heads[2][0]
        assert head_then is not None and head_then[0] > heads[0][0]  # the delivery's entries
        book = Book(world.ledger, Rules())
        for head in heads:
            assert book.verify(head)[1] is None

    run(main())


def test_the_agency_down_for_a_while_gets_the_forward_later(make_world: WorldMaker) -> None:
    async def main() -> None:
        agency = Agency()  # not listening yet: connection refused
        world = make_world({"webhook_url": agency.url})
        offer = world.accepted()
        forwarder = world.forwarder()
        for attempt, retry_in in ((1, 10), (2, 30), (3, 30)):  # the last delay repeats
            assert await forwarder.run_once() == 1
            (status,) = world.forwards(offer)
            assert status.pending and status.delivered is None, attempt
            assert world.store.next_due() == world.clock.now + dt.timedelta(seconds=retry_in)
            assert await forwarder.run_once() == 0  # not due before its time
            world.clock.advance(retry_in)

        await agency.start()
        assert await forwarder.run_once() == 1
        await agency.stop()
        (status,) = world.forwards(offer)
        assert status.delivered == world.clock.now and not status.pending
        assert [g.json["forward_id"] for g in agency.requests] == [status.forward.id]
        events = world.events(status.forward.id)
        assert [e for e, _ in events] == ["failed", "failed", "failed", "delivered"]
        assert "ClientConnectorError" in events[0][1]

    run(main())


def test_500_then_200_is_one_forward_with_its_failed_attempt_recorded(
        make_world: WorldMaker) -> None:
    async def main() -> None:
        agency = await Agency(statuses=[500]).start()
        world = make_world({"webhook_url": agency.url})
        offer = world.accepted()
        ticks = iter([1_000_000_000, 1_000_000_007])
        forwarder = world.forwarder(clock=lambda: next(ticks))
        assert await forwarder.run_once() == 1
        world.clock.advance(10)
        assert await forwarder.run_once() == 1
        assert await forwarder.run_once() == 0
        await agency.stop()

        first, second = agency.requests
        assert first.body == second.body  # the same bytes, the same forward_id
        sig1, sig2 = (g.headers["X-Career-Relay-Signature"] for g in (first, second))
        assert sig1.startswith("t=1000000000,") and sig2.startswith("t=1000000007,")
        verify(SECRET, sig2, second.body, now=1_000_000_007)
        (status,) = world.forwards(offer)
        assert status.delivered is not None
        assert world.events(status.forward.id) == [
            ("failed", "HTTP 500 Internal Server Error"), ("delivered", "HTTP 200 OK")]

    run(main())


def test_an_agency_that_does_not_answer_in_time_is_retried(make_sqlite_world: WorldMaker) -> None:
    """SQLite-only: the worker's HTTP timeout (a failed attempt's record: 500 then 200)."""
    async def main() -> None:
        never = asyncio.Event()

        async def hang(n: int) -> None:
            await never.wait()

        agency = await Agency(during=hang).start()
        world = make_sqlite_world({"webhook_url": agency.url, "timeout": 1})
        offer = world.accepted()
        assert await world.forwarder().run_once() == 1
        (status,) = world.forwards(offer)
        assert status.pending and status.delivered is None
        assert world.events(status.forward.id) == [("failed", "no answer within 1 s")]
        never.set()
        await agency.stop()

    run(main())


def test_redirects_are_not_followed(make_sqlite_world: WorldMaker) -> None:
    """SQLite-only: the worker's HTTP client."""
    async def main() -> None:
        agency = await Agency(statuses=[307]).start()
        world = make_sqlite_world({"webhook_url": agency.url})
        offer = world.accepted()
        assert await world.forwarder().run_once() == 1
        await agency.stop()
        assert len(agency.requests) == 1
        (status,) = world.forwards(offer)
        assert status.pending and status.delivered is None

    run(main())


def test_a_withdrawal_after_delivery_follows_the_consent(make_world: WorldMaker) -> None:
    async def main() -> None:
        agency = await Agency().start()
        world = make_world({"webhook_url": agency.url})
        offer = world.accepted()
        forwarder = world.forwarder()
        await forwarder.run_once()
        world.consents.withdraw(offer, "ja", BROWSER)
        assert await forwarder.run_once() == 1
        await agency.stop()

        consent, withdrawal = agency.requests
        assert [g.json["type"] for g in agency.requests] == ["consent", "withdrawal"]
        assert withdrawal.json["refers_to"] == [consent.json["forward_id"]]
        assert withdrawal.json["instruction"] == "delete"
        assert "candidate" not in withdrawal.json
        assert_signed(withdrawal)

    run(main())


def test_a_consent_withdrawn_while_at_the_agency_is_not_sent_again(
        make_world: WorldMaker) -> None:
    """The candidate withdraws while the consent's first attempt is at the agency: the
    attempt fails, the consent is not retried (it was withdrawn), the withdrawal goes."""
    async def main() -> None:
        agency = Agency(statuses=[500])
        world = make_world({"webhook_url": agency.url})
        offer = world.accepted()

        async def withdraw_meanwhile(n: int) -> None:
            if n == 1:
                world.consents.withdraw(offer, "ja", BROWSER)

        agency.during = withdraw_meanwhile
        await agency.start()
        forwarder = world.forwarder()
        await forwarder.run_once()  # consent: 500 (the withdrawal was made meanwhile)
        consent, withdrawal = world.forwards(offer)
        assert consent.cancelled and withdrawal.pending
        world.clock.advance(10)
        assert await forwarder.run_once() == 1  # the withdrawal: the 500 may have been late
        await agency.stop()
        kinds = [k for k, _ in agency.kinds()]
        assert kinds == ["consent", "withdrawal"]
        assert world.events(consent.forward.id)[-1] == ("cancelled",
                                                        "withdrawn while it was sent")

    run(main())


def test_a_withdrawal_before_delivery_cancels_the_consent(make_world: WorldMaker) -> None:
    async def main() -> None:
        agency = await Agency().start()
        world = make_world({"webhook_url": agency.url})
        offer = world.accepted()
        world.consents.withdraw(offer, "ja", BROWSER)
        assert await world.forwarder().run_once() == 0
        await agency.stop()
        assert agency.requests == []  # the agency never hears of the candidate
        (status,) = world.forwards(offer)
        assert status.cancelled and not status.pending and status.delivered is None

    run(main())


def test_erasure_after_delivery(make_world: WorldMaker) -> None:
    async def main() -> None:
        agency = await Agency().start()
        world = make_world({"webhook_url": agency.url})
        offer = world.accepted()
        forwarder = world.forwarder()
        await forwarder.run_once()
        world.consents.erase(offer, "ja", BROWSER)
        assert await forwarder.run_once() == 1
        await agency.stop()

        consent, erasure = agency.requests
        assert erasure.json["type"] == "erasure"
        assert erasure.json["instruction"] == "delete"
        assert erasure.json["refers_to"] == [consent.json["forward_id"]]
        assert "山田" not in erasure.body.decode()
        # what we kept of the candidate is gone too
        kept = world.store.forward(consent.json["forward_id"])
        assert kept is not None and kept.payload is None

    run(main())


def test_erasure_during_a_failed_attempt_cancels_the_retry(make_world: WorldMaker) -> None:
    """An erasure while the consent is at the agency: its retry finds no payload and is
    cancelled; the erasure notice still goes (the failed attempt may have got through)."""
    async def main() -> None:
        agency = Agency(statuses=[503])
        world = make_world({"webhook_url": agency.url})
        offer = world.accepted()

        async def erase_meanwhile(n: int) -> None:
            if n == 1:
                world.consents.erase(offer, "ja", BROWSER)

        agency.during = erase_meanwhile
        await agency.start()
        forwarder = world.forwarder()
        await forwarder.run_once()  # the consent fails: cancelled there and then
        world.clock.advance(10)
        assert await forwarder.run_once() == 1  # the erasure
        await agency.stop()

        assert [k for k, _ in agency.kinds()] == ["consent", "erasure"]
        consent, erasure = world.forwards(offer)
        assert consent.cancelled and consent.delivered is None
        assert world.events(consent.forward.id)[-1] == ("cancelled",
                                                        "withdrawn while it was sent")
        assert erasure.delivered is not None

    run(main())


def test_a_held_forward_waits_for_review(make_world: WorldMaker) -> None:
    async def main() -> None:
        agency = await Agency().start()
        world = make_world({"webhook_url": agency.url})
        scanner = Client("Mozilla/5.0 (compatible; Proofpoint URL Defense)", "198.51.100.9")
        approved, rejected = world.accepted(scanner), world.accepted(scanner)
        forwarder = world.forwarder()
        assert await forwarder.run_once() == 0
        assert world.store.next_due() is None
        assert agency.requests == []

        for offer, approve in ((approved, True), (rejected, False)):
            (status,) = world.forwards(offer)
            assert status.held
            world.store.review(status.forward.receipt_id, approve=approve, by="admin")
        assert await forwarder.run_once() == 1
        assert await forwarder.run_once() == 0
        await agency.stop()

        (got,) = agency.requests
        assert got.json["forward_id"] == world.forwards(approved)[0].forward.id
        (status,) = world.forwards(rejected)
        assert status.cancelled and status.delivered is None

    run(main())


def test_no_destination_keeps_forwards_and_warns_once(
        make_sqlite_world: WorldMaker, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite-only: the worker's configuration and its warning."""
    async def main() -> None:
        world = make_sqlite_world({"webhook_url": ""})
        offer = world.accepted()
        forwarder = world.forwarder()
        assert await forwarder.run_once() == 0
        stop = await forwarder.start()
        await until(lambda: "agency.webhook_url is empty" in caplog.text, "the warning")
        await stop()
        (status,) = world.forwards(offer)
        assert status.pending and status.forward.attempts == 0

    with caplog.at_level(logging.WARNING, "career_relay.forwarding"):
        run(main())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1


# -- several hosts on one outbox ----------------------------------------------------------------


def test_hosts_claiming_at_once_deliver_each_forward_once(make_world: WorldMaker) -> None:
    """Three Ledger objects on one store (three processes on one SQLite file, or three
    hosts on one PostgreSQL database), two threads each, claiming and delivering at once:
    no forward is claimed twice while its claim holds, each is delivered once (a second
    send after an expired claim records nothing), and each credit is minted once."""
    world = make_world({"webhook_url": "http://127.0.0.1:9/unused"})
    for i in range(30):
        offer = world.offer(f"cand{i}@example.net")
        world.consents.shown(offer, NOTICE)
        world.consents.accept(offer, NOTICE, {**PROFILE, "email": f"cand{i}@example.net"},
                              True, BROWSER)
    hosts = [ConsentLedger(world.open_host()) for _ in range(3)]
    claimed: list[str] = []
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def work(store: ConsentLedger) -> None:
        try:
            start.wait()
            while due := store.claim_due(2, 60):
                claimed.extend(f.id for f in due)
                for forward in due:
                    store.delivered(forward.id, "HTTP 200 OK")
                    store.delivered(forward.id, "HTTP 200 OK")  # sent again: nothing more
        except BaseException as exc:  # a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(hosts[n % 3],)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(claimed) == len(set(claimed)) == 30
    with world.ledger.read() as conn:
        delivered = conn.execute("SELECT forward_id, COUNT(*) FROM forward_events"
                                 " WHERE event = 'delivered' GROUP BY forward_id").fetchall()
        credits = conn.execute("SELECT n FROM credits ORDER BY n").fetchall()
        (left,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
    assert sorted(fid for fid, _ in delivered) == sorted(claimed)
    assert {count for _, count in delivered} == {1} and left == 0
    assert [tuple(c) for c in credits] == [(1,), (2,), (3,)]
    count, problem = Book(world.ledger).verify()
    assert problem is None and count > 90


# -- the running worker -------------------------------------------------------------------------


def test_the_worker_delivers_on_wake_and_retries_when_the_agency_returns(
        make_world: WorldMaker) -> None:
    async def main() -> None:
        agency = Agency()
        world = make_world({"webhook_url": agency.url})
        forwarder = world.forwarder()
        stop = await forwarder.start()
        offer = world.accepted()
        forwarder.wake()
        await until(lambda: world.forwards(offer)[0].forward.id in _failed_ids(world),
                    "a failed attempt")
        await agency.start()
        world.clock.advance(10)
        forwarder.wake()
        await until(lambda: world.forwards(offer)[0].delivered is not None, "delivery")
        await stop()
        await agency.stop()
        assert len(agency.requests) == 1

    run(main())


def _failed_ids(world: World) -> list[str]:
    with world.ledger.read() as conn:
        return [str(r[0]) for r in conn.execute(
            "SELECT forward_id FROM forward_events WHERE event = 'failed'")]


def test_stopping_lets_the_attempt_in_flight_finish(make_world: WorldMaker) -> None:
    async def main() -> None:
        release = asyncio.Event()
        arrived = asyncio.Event()

        async def slow(n: int) -> None:
            arrived.set()
            await release.wait()

        agency = Agency(during=slow)
        await agency.start()
        world = make_world({"webhook_url": agency.url})
        offer = world.accepted()
        forwarder = world.forwarder()
        stop = await forwarder.start()
        forwarder.wake()
        await asyncio.wait_for(arrived.wait(), 15)
        stopping = asyncio.ensure_future(stop())
        await asyncio.sleep(0)
        assert not stopping.done()  # it waits for the agency's answer
        release.set()
        await asyncio.wait_for(stopping, 15)
        await agency.stop()
        (status,) = world.forwards(offer)
        assert status.delivered is not None  # recorded, so it is never sent again

    run(main())


# -- email ----------------------------------------------------------------------------------


def test_email_delivery_through_the_upstream(make_sqlite_world: WorldMaker, sink: Sink,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """SQLite-only: the email transport (the ledger's part: the webhook tests)."""
    async def main() -> None:
        world = make_sqlite_world({"deliver": "email", "email": "intake@agency.example"},
                           upstream={"port": sink.port})
        offer = world.accepted()
        (pending,) = world.forwards(offer)
        forward_id = pending.forward.id
        forwarder = world.forwarder()
        sink.handler.data_reply = "554 5.7.1 refused for now"
        assert await forwarder.run_once() == 1
        assert world.forwards(offer)[0].pending  # a 5xx is retried all the same
        sink.handler.data_reply = None
        world.clock.advance(10)
        assert await forwarder.run_once() == 1

        (received,) = sink.messages
        assert received.rcpts == ["intake@agency.example"]
        assert received.mail_from == "career-relay@relay.test"
        msg = email.message_from_bytes(received.data, policy=email.policy.default)
        assert msg["Message-ID"] == f"<{forward_id}@relay.test>"
        assert msg["X-Career-Relay-Forward-Id"] == forward_id
        assert msg["X-Career-Relay-Type"] == "consent"
        head = ledger_head.parse(msg["X-Career-Relay-Ledger-Head"])
        with world.ledger.read() as conn:
            assert conn.execute("SELECT seq, hash FROM entries WHERE seq = ?",
                                (head[0],)).fetchone() == head
        assert forward_id in msg["Subject"] and "consent" in msg["Subject"]
        assert "山田" not in msg["Subject"]
        assert msg.get_content_type() == "text/plain"
        assert msg.get_content_charset() == "utf-8"
        assert pending.forward.payload is not None
        assert json.loads(msg.get_content()) == json.loads(pending.forward.payload)
        # every attempt would carry the same Message-ID: it depends on the forward alone
        again = Forwarder(world.settings, world.store, clock=lambda: 0.0).message(
            pending.forward, pending.forward.payload.encode())
        assert again["Message-ID"] == msg["Message-ID"]
        assert [e for e, _ in world.events(forward_id)] == ["failed", "delivered"]
        assert world.events(forward_id)[0][1].startswith("SMTP 554")

    with caplog.at_level(logging.INFO, "career_relay.forwarding"):
        run(main())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "SMTP 554" in warned[0]
    assert "山田" not in caplog.text and "taro@example.net" not in caplog.text


def test_email_upstream_down_is_retried(make_sqlite_world: WorldMaker) -> None:
    """SQLite-only: the email transport."""
    async def main() -> None:
        world = make_sqlite_world({"deliver": "email", "email": "intake@agency.example"},
                           upstream={"port": free_port(), "timeout": 5})
        offer = world.accepted()
        assert await world.forwarder().run_once() == 1
        (status,) = world.forwards(offer)
        assert status.pending and status.delivered is None
        assert world.events(status.forward.id)[0][0] == "failed"

    run(main())


# -- the demo agency ----------------------------------------------------------------------------


def test_the_demo_agency_checks_signatures_and_keeps_each_forward_once(
        tmp_path: Path) -> None:
    """The demo agency alone: no ledger."""
    async def main() -> None:
        directory = tmp_path / "agency"
        receiver = await start_agency_receiver(directory, SECRET, "127.0.0.1", 0, "/forwards")
        body = json.dumps({"forward_id": "fw_demo1", "type": "consent",
                           "candidate": {"name": "山田 太郎"}}, ensure_ascii=False).encode()
        async with aiohttp.ClientSession() as session:

            async def post(signature: str, data: bytes = body) -> int:
                async with session.post(receiver.url, data=data, headers={
                        "X-Career-Relay-Signature": signature,
                        "Content-Type": "application/json; charset=utf-8"}) as response:
                    return response.status

            now = int(time.time())
            assert await post(sign("a-wrong-secret", body, now)) == 401
            assert await post(sign(SECRET, body, now - 3600)) == 401  # a replay
            assert await post("t=1,v1=nonsense") == 401
            assert await post(sign(SECRET, body, now), body + b" ") == 401
            assert list(directory.iterdir()) == []

            assert await post(sign(SECRET, body, now)) == 200
            kept = directory / "fw_demo1.json"
            first = kept.stat()
            text = kept.read_text(encoding="utf-8")
            assert "山田 太郎" in text and text.startswith('{\n  "candidate"')
            assert json.loads(text) == json.loads(body)
            assert await post(sign(SECRET, body, now + 1)) == 200  # a retry
            assert kept.stat().st_ino == first.st_ino  # not written twice
            assert [p.name for p in directory.iterdir()] == ["fw_demo1.json"]  # no temp left

            evil = json.dumps({"forward_id": "../escape", "type": "consent"}).encode()
            assert await post(sign(SECRET, evil, now), evil) == 400
        await receiver.close()

    run(main())


def test_the_forwarder_and_the_demo_agency_end_to_end(make_sqlite_world: WorldMaker,
                                                      tmp_path: Path) -> None:
    """SQLite-only: the demo agency's side."""
    async def main() -> None:
        port = free_port()
        world = make_sqlite_world({"webhook_url": f"http://127.0.0.1:{port}/forwards"})
        receiver = await start_agency_receiver(tmp_path / "agency", SECRET, "127.0.0.1", port,
                                               "/forwards")
        offer = world.accepted()
        assert await world.forwarder().run_once() == 1
        await receiver.close()
        (status,) = world.forwards(offer)
        assert status.delivered is not None and status.forward.payload is not None
        kept = tmp_path / "agency" / f"{status.forward.id}.json"
        assert json.loads(kept.read_text("utf-8")) == json.loads(status.forward.payload)

    run(main())


def test_init_demo_configures_the_demo_agency(tmp_path: Path) -> None:
    """SQLite-only: init --demo writes a SQLite ledger (the example's copy)."""
    write_starter(tmp_path, demo=True)
    settings = settings_mod.load(tmp_path / "career-relay.toml", env={})
    assert settings.agency.webhook_url == "http://127.0.0.1:8081/forwards"
    assert len(settings.agency.webhook_secret) >= 32
    assert settings.demo.agency_dir == str(tmp_path.resolve() / "agency")
    other = tmp_path / "other"
    write_starter(other, demo=True)
    assert settings_mod.load(other / "career-relay.toml", env={}).agency.webhook_secret \
        != settings.agency.webhook_secret


# -- the documentation stays true ------------------------------------------------------------


DOC = REPO / "docs" / "agency-webhook.md"


def _snippet(language: str) -> str:
    """The fenced block of ``language`` right after the marker comment in the doc."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- tested: {language} -->\s*```\w+\n(.*?)```", text, re.DOTALL)
    assert match, f"no tested {language} snippet in {DOC.name}"
    return match.group(1)


def _a_real_request(make_world: WorldMaker) -> Got:
    got: list[Got] = []

    async def main() -> None:
        agency = await Agency().start()
        world = make_world({"webhook_url": agency.url})
        world.accepted()
        await world.forwarder().run_once()
        await agency.stop()
        got.extend(agency.requests)

    run(main())
    return got[0]


def test_the_python_verification_snippet_in_the_doc_works(make_sqlite_world: WorldMaker) -> None:
    """SQLite-only: the documentation's snippet."""
    request = _a_real_request(make_sqlite_world)
    namespace: dict[str, Any] = {}
    exec(compile(_snippet("python"), str(DOC), "exec"), namespace)
    check = namespace["verify_career_relay"]
    header = request.headers["X-Career-Relay-Signature"]
    assert check(SECRET, header, request.body) is True
    assert check(SECRET, header, request.body + b" ") is False
    assert check("wrong", header, request.body) is False
    old = sign(SECRET, request.body, int(time.time()) - 3600)
    assert check(SECRET, old, request.body) is False
    assert check(SECRET, "garbage", request.body) is False


def test_the_python_ledger_head_snippet_in_the_doc_works(make_sqlite_world: WorldMaker) -> None:
    """SQLite-only: the documentation's snippet."""
    request = _a_real_request(make_sqlite_world)
    namespace: dict[str, Any] = {}
    exec(compile(_snippet("python-head"), str(DOC), "exec"), namespace)
    keep = namespace["keep_ledger_head"]
    header = request.headers["X-Career-Relay-Ledger-Head"]
    n, digest = ledger_head.parse(header)
    kept: dict[str, tuple[int, str]] = {}
    assert keep(kept, "relay", header) is None and kept == {"relay": (n, digest)}
    assert keep(kept, "relay", f"{n + 3}:{'a' * 64}") is None  # the ledger grew
    assert keep(kept, "relay", header) is None  # an older head arriving late: kept stays
    assert kept == {"relay": (n + 3, "a" * 64)}
    assert "changed its hash" in keep(kept, "relay", f"{n + 3}:{'b' * 64}")
    assert keep(kept, "relay", None) == "no ledger head, or a malformed one"
    assert keep(kept, "relay", "12:xyz") == "no ledger head, or a malformed one"
    assert kept == {"relay": (n + 3, "a" * 64)}


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_node_verification_snippet_in_the_doc_works(make_sqlite_world: WorldMaker,
                                                        tmp_path: Path) -> None:
    """SQLite-only: the documentation's snippet."""
    request = _a_real_request(make_sqlite_world)
    script = tmp_path / "check.js"
    header = request.headers["X-Career-Relay-Signature"]
    cases = [(SECRET, header, request.body, True), (SECRET, header, request.body + b" ", False),
             ("wrong", header, request.body, False), (SECRET, "garbage", request.body, False)]
    calls = "\n".join(
        f"console.log(verifyCareerRelay({json.dumps(s)}, {json.dumps(h)}, "
        f"Buffer.from({json.dumps(b.hex())}, 'hex')) === {json.dumps(ok)});"
        for s, h, b, ok in cases)
    script.write_text(_snippet("javascript") + "\n" + calls + "\n", encoding="utf-8")
    result = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["true"] * len(cases)


def _shape(value: Any) -> Any:
    """The keys of a payload, nested; values reduced to their JSON type."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def test_the_example_payloads_in_the_doc_have_the_real_shape(make_sqlite_world: WorldMaker) -> None:
    """SQLite-only: the documentation's examples."""
    text = DOC.read_text(encoding="utf-8")
    examples = dict(re.findall(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", text, re.DOTALL))
    assert sorted(examples) == ["consent", "erasure", "withdrawal"]
    world = make_sqlite_world({"webhook_url": "http://127.0.0.1:9/unused"})
    full = {**PROFILE, "desired_location": "東京都", "note": "平日18時以降"}
    withdrawn, erased = world.accepted(profile=full), world.accepted(profile=full)
    consent = world.forwards(withdrawn)[0].forward.payload
    assert consent is not None
    for claimed in world.store.claim_due(10, 60):  # as if the agency had them
        world.store.delivered(claimed.id)
    world.consents.withdraw(withdrawn, "ja", BROWSER)
    world.consents.erase(erased, "ja", BROWSER)
    real = {"consent": json.loads(consent)}
    for offer in (withdrawn, erased):
        last = world.forwards(offer)[-1].forward
        assert last.payload is not None
        real[last.kind] = json.loads(last.payload)
    for kind, example in examples.items():
        assert _shape(json.loads(example)) == _shape(real[kind]), kind


def test_site_runs_the_demo_agency(tmp_path: Path) -> None:
    """`career-relay site` with demo.agency_dir starts the stand-in agency on webhook_url.
    SQLite-only: init --demo writes a SQLite ledger (the example's copy)."""
    write_starter(tmp_path, demo=True)
    config = tmp_path / "career-relay.toml"
    agency_port, site_port = free_port(), free_port()
    config.write_text(config.read_text(encoding="utf-8")
                      .replace("127.0.0.1:8081", f"127.0.0.1:{agency_port}")
                      .replace("127.0.0.1:8080", f"127.0.0.1:{site_port}"), encoding="utf-8")
    secret = settings_mod.load(config, env={}).agency.webhook_secret
    log = tmp_path / "site.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CLI, "site", "--config", str(config)], stdout=out,
                                stderr=out, cwd=REPO)
    try:
        wait_for_port(agency_port)
        body = b'{"forward_id": "fw_cli", "type": "consent"}'

        async def post() -> int:
            async with aiohttp.ClientSession() as session, session.post(
                    f"http://127.0.0.1:{agency_port}/forwards", data=body,
                    headers={"X-Career-Relay-Signature": sign(secret, body, int(time.time()))}
            ) as response:
                return response.status

        statuses: list[int] = []

        async def main() -> None:
            statuses.append(await post())

        run(main())
        assert statuses == [200]
        assert json.loads((tmp_path / "agency" / "fw_cli.json").read_text("utf-8")) == {
            "forward_id": "fw_cli", "type": "consent"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert f"demo agency:  http://127.0.0.1:{agency_port}/forwards" in log.read_text("utf-8")
