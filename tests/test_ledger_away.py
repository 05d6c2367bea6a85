"""A ledger that is away (SPEC 12): the gateway keeps taking rejections, holds them in
its spool, and sends them with their links when the ledger is back; no operator needed.

On SQLite the ledger's commit is made to fail as a locked or broken database does
(LedgerUnavailable, as the store raises it); on PostgreSQL the real server is stopped
and started again.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from career_relay import settings as settings_mod
from career_relay.errors import LedgerUnavailable
from career_relay.ledger import LedgerWriter, open_configured
from career_relay.reload import reread
from career_relay.tokens import LinkSigner
from consent_site.app import create_app
from consent_site.metrics import Metrics
from gateway import delivery, pipeline
from tests.conftest import ConfigMaker, GatewayThread, Sink, wait_until
from tests.pg import PostgresServer
from tests.test_rejection import rejection
from tests.test_rejection import send as _send

LINK = re.compile(rb"http://consent\.test/c/[A-Za-z0-9._-]+")


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look for the ledger every 0.2 s, not every 30 s (the production values)."""
    monkeypatch.setattr(delivery, "HELD_RETRY", 0.2)
    monkeypatch.setattr(pipeline, "LEDGER_AWAY_SECONDS", 0.3)


def _config(make_config: ConfigMaker, sink: Sink, **ledger: str) -> Path:
    return make_config(upstream_port=sink.port, site={"public_url": "http://consent.test"},
                       ledger=ledger or {"path": "ledger.db"},
                       companies=[{"id": "acme", "name": "株式会社アクメ",
                                   "domains": ["acme.example"],
                                   "allow_ips": ["127.0.0.1/32"]}])


def send(port: int, data: bytes, rcpts: list[str]) -> str:
    """The queue id of the 250 ("2.0.0 OK: queued as <id>")."""
    return _send(port, data, rcpts).rsplit(" ", 1)[-1]


def _ledger_fails(gw: GatewayThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit of the gateway's ledger says it is unavailable (a failing disk)."""
    def away(*args: object, **kwargs: object) -> dict[str, str]:
        raise LedgerUnavailable("disk I/O error")

    assert gw.gateway.rejections is not None
    _commits(monkeypatch, gw.gateway.rejections._writer, away)


def _commits(monkeypatch: pytest.MonkeyPatch, writer: LedgerWriter,
             commit: Callable[..., object] | None) -> None:
    """The writer's commits (the event loop's, a thread's) replaced by ``commit``, or put
    back (None)."""
    for name in ("record_now", "record"):
        if commit is None:
            monkeypatch.setattr(writer, name, getattr(LedgerWriter, name).__get__(writer))
        else:
            monkeypatch.setattr(writer, name, commit)


def _held(gw: GatewayThread) -> list[str]:
    spool = gw.gateway.spool
    held = {r.env.id for r in spool.journal_records() if r.env.held is not None}
    return sorted(held | {i for i in spool.ids() if spool.read_envelope(i).held is not None})


def test_a_rejection_while_the_ledger_is_away_is_held_then_sent_with_its_link(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        rejections = gw.gateway.rejections
        assert rejections is not None
        writer = rejections._writer
        calls: list[str] = []

        def away(*args: object, **kwargs: object) -> dict[str, str]:
            calls.append("tried")
            raise LedgerUnavailable("the ledger cannot be used now: database is locked")

        _commits(monkeypatch, writer, away)
        queue_id = send(gw.port, rejection("<away@acme.example>"), ["a@example.net",
                                                                    "b@example.net"])
        assert _held(gw) == [queue_id]  # accepted (250), kept whole, not sent
        wait_until(lambda: len(calls) >= 3, what="the ledger looked for again")
        assert sink.messages == [] and _held(gw) == [queue_id]
        _commits(monkeypatch, writer, None)  # the ledger is back
        got = sink.wait_for(2)
        wait_until(lambda: gw.queue_ids() == [], what="an empty queue")
    finally:
        gw.stop()
    links = {LINK.search(m.data).group(0) for m in got if LINK.search(m.data)}  # type: ignore[union-attr]
    assert len(links) == 2  # one personal link per candidate
    assert all(b"[[CAREER_RELAY_LINK]]" not in m.data for m in got)  # never the bare marker
    assert sorted(r for m in got for r in m.rcpts) == ["a@example.net", "b@example.net"]


def test_a_held_rejection_survives_a_restart(make_config: ConfigMaker, sink: Sink,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(make_config, sink)
    gw = GatewayThread(config).start()
    try:
        _ledger_fails(gw, monkeypatch)
        queue_id = send(gw.port, rejection("<restart@acme.example>"), ["c@example.net"])
        assert _held(gw) == [queue_id]
    finally:
        gw.stop()
    monkeypatch.undo()
    monkeypatch.setattr(delivery, "HELD_RETRY", 0.2)
    again = GatewayThread(config).start()  # the ledger works in this process
    try:
        (got,) = sink.wait_for(1)
        wait_until(lambda: again.queue_ids() == [], what="an empty queue")
    finally:
        again.stop()
    assert LINK.search(got.data) and got.rcpts == ["c@example.net"]


def test_postgresql_stopped_and_started_loses_nothing(make_config: ConfigMaker,
                                                      sink: Sink) -> None:
    """The real thing: the shared ledger's server goes away under a running gateway."""
    with PostgresServer() as pg:
        url = pg.url(pg.create_database())
        config = _config(make_config, sink, url=url)
        gw = GatewayThread(config).start()
        try:
            before = send(gw.port, rejection("<before@acme.example>"), ["d@example.net"])
            sink.wait_for(1)
            pg.stop("immediate")
            during = send(gw.port, rejection("<during@acme.example>"), ["e@example.net"])
            assert _held(gw) == [during] and before != during
            pg.start()
            got = sink.wait_for(2, timeout=60)
            wait_until(lambda: gw.queue_ids() == [], what="an empty queue")
        finally:
            gw.stop()
        with open_configured(settings_mod.load(config)) as ledger, ledger.read() as conn:
            offers = conn.execute("SELECT recipient FROM offers ORDER BY recipient").fetchall()
        assert [r[0] for r in offers] == ["d@example.net", "e@example.net"]
    assert all(LINK.search(m.data) for m in got)


def test_a_gateway_and_a_site_started_while_postgresql_is_away(
        make_config: ConfigMaker, sink: Sink) -> None:
    """A restart during the outage: the gateway starts and holds, the site starts and
    answers 503 (its metrics say the ledger is down); both work once the server is back,
    and the first to reach it migrates the empty database."""
    with PostgresServer() as pg:
        url = pg.url(pg.create_database())
        pg.stop("fast")
        config = _config(make_config, sink, url=url)
        settings = settings_mod.load(config)
        gw = GatewayThread(config).start()
        try:
            held = send(gw.port, rejection("<cold@acme.example>"), ["f@example.net"])
            assert _held(gw) == [held]
            ledger = open_configured(settings, wait=False)  # as the site opens it
            app = create_app(settings, ledger)
            link = f"/c/{LinkSigner.from_settings(settings).token('AAAAAAAAAAAAAAAA')}"

            async def visit() -> tuple[int, int]:
                async with TestClient(TestServer(app)) as client:
                    away = (await client.get(link)).status
                    await asyncio.get_running_loop().run_in_executor(None, pg.start)
                    deadline = time.monotonic() + 30
                    while (back := (await client.get(link)).status) == 503 \
                            and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                    return away, back

            assert "career_relay_ledger_up 0.0" in Metrics(settings, ledger).render().decode()
            away, back = asyncio.run(visit())
            assert (away, back) == (503, 410)  # away; then back (no such offer: gone)
            assert "career_relay_ledger_up 1.0" in Metrics(settings, ledger).render().decode()
            (got,) = sink.wait_for(1, timeout=60)
            wait_until(lambda: gw.queue_ids() == [], what="an empty queue")
        finally:
            gw.stop()
            ledger.close()
    assert LINK.search(got.data) and got.rcpts == ["f@example.net"]


def test_a_held_rejection_of_a_company_added_by_a_reload_is_released(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline takes the reloaded companies too: release found a held rejection's
    company among those of the start only, so a company added by SIGHUP had its mail held
    through an outage retried as "no longer configured" until queue.max_age bounced it
    (attack review)."""
    config = _config(make_config, sink)
    gw = GatewayThread(config).start()
    try:
        first = settings_mod.load(config)
        make_config(upstream_port=sink.port, site={"public_url": "http://consent.test"},
                    gateway={"listen": first.gateway.listen},
                    companies=[
                        {"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"],
                         "allow_ips": ["127.0.0.1/32"]},
                        {"id": "neo", "name": "Neo", "domains": ["neo.example"],
                         "allow_ips": ["127.0.0.1/32"]}])
        new = reread(first)
        assert new is not None and new.company("neo") is not None
        gw.loop.call_soon_threadsafe(gw.gateway.reload, new)
        rejections = gw.gateway.rejections
        assert rejections is not None
        writer = rejections._writer
        _commits(monkeypatch, writer, lambda *a, **k: (_ for _ in ()).throw(
            LedgerUnavailable("the ledger cannot be used now: database is locked")))
        data = rejection("<neo@neo.example>").replace(b"hr@acme.example", b"hr@neo.example")
        with smtplib.SMTP("127.0.0.1", gw.port) as client:
            client.sendmail("hr@neo.example", ["n@example.net"], data)
        wait_until(lambda: len(_held(gw)) == 1, what="the rejection held")
        _commits(monkeypatch, writer, None)  # the ledger is back
        (got,) = sink.wait_for(1)
        wait_until(lambda: gw.queue_ids() == [], what="an empty queue")
    finally:
        gw.stop()
    assert LINK.search(got.data) and b"[[CAREER_RELAY_LINK]]" not in got.data


def test_a_held_rejection_filed_before_a_restart_is_looked_at_once_after_it(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its queue file's next attempt is the retry schedule's (up to hours after a long
    outage), not HELD_RETRY's: after a restart it waited that long with the ledger back
    (attack review)."""
    config = make_config(upstream_port=sink.port, site={"public_url": "http://consent.test"},
                         queue={"retry_schedule": [3600]},
                         companies=[{"id": "acme", "name": "株式会社アクメ",
                                     "domains": ["acme.example"],
                                     "allow_ips": ["127.0.0.1/32"]}])
    gw = GatewayThread(config).start()
    try:
        _ledger_fails(gw, monkeypatch)
        queue_id = send(gw.port, rejection("<filed@acme.example>"), ["g@example.net"])
        spool = gw.gateway.spool
        # The queue file is written before its state: wait for the state, which says when
        # the next attempt is.
        wait_until(lambda: spool.load_state(queue_id).attempts > 0,
                   what="the held rejection filed with its state")
        assert queue_id in spool.ids()
        assert spool.load_state(queue_id).next_attempt > time.time() + 3000
    finally:
        gw.stop()
    monkeypatch.undo()
    again = GatewayThread(config).start()  # the ledger works in this process
    try:
        (got,) = sink.wait_for(1, timeout=15)
        wait_until(lambda: again.queue_ids() == [], what="an empty queue")
    finally:
        again.stop()
    assert LINK.search(got.data) and got.rcpts == ["g@example.net"]
