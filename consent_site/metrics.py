"""``GET /metrics``: Prometheus text exposition of the gateway and the ledger.

Two sources, each the simplest that stays correct:

* the gateway's live figures (messages accepted, relayed, deferred, bounced,
  the latencies, the queue) come from its worker processes through
  prometheus-client's multiprocess files (``career_relay.paths.metrics_dir``);
  the oldest message's arrival becomes an age here, at scrape time;
* the ledger's figures (rejections, offers, views, decisions, forwards,
  credits) are counted in the ledger at scrape time
  (``career_relay.ledger.totals``): exact, shared by every process, and
  unchanged by a restart.

Aggregates only (counts per company): no address, name or token.  The page
needs no login; operators restrict it to their monitoring network
(docs/operations.md, "Metrics").
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from career_relay.errors import LedgerUnavailable
from career_relay.ledger import Ledger, totals
from career_relay.paths import metrics_dir
from career_relay.settings import Settings

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_OLDEST = "career_relay_queue_oldest_arrival_timestamp_seconds"

_HELP = {
    "rejections": "Rejection emails the gateway relayed (ledger).",
    "offers": "Consent links sent: one per outside recipient of a rejection (ledger).",
    "views": "Offers whose consent page was opened, counted once per offer (ledger).",
    "decisions": "Consent receipts by decision (ledger).",
    "forwards": "Forward attempts to the agency by kind and outcome (ledger).",
    "credits": "Referral credits earned and redeemed (ledger).",
}
# Label values that always exist, so a rate() has a series from the first scrape.
_KNOWN: dict[str, tuple[tuple[str, ...], ...]] = {
    "decisions": tuple((d,) for d in ("accept", "decline", "withdraw", "erase")),
    "forwards": tuple(itertools.product(("consent", "withdrawal", "erasure"),
                                        ("delivered", "failed", "cancelled"))),
    "credits": (("earned",), ("redeemed",)),
}


log = logging.getLogger("career_relay.metrics")


class LedgerCollector(Collector):
    def __init__(self, ledger: Ledger, companies: list[str]) -> None:
        self._ledger = ledger
        self._companies = companies

    def collect(self) -> Iterator[Metric]:
        try:
            found = totals.totals(self._ledger).values
        except LedgerUnavailable as exc:
            log.warning("the ledger cannot be read for /metrics: %s", exc)
            # Say so, rather than fail the scrape: the gateway's figures still matter then.
            yield GaugeMetricFamily("career_relay_ledger_up",
                                    "1 when the ledger could be read at this scrape, else 0.",
                                    value=0)
            return
        yield GaugeMetricFamily("career_relay_ledger_up",
                                "1 when the ledger could be read at this scrape, else 0.",
                                value=1)
        for name, labels in totals.LABELS.items():
            family = CounterMetricFamily(f"career_relay_{name}", _HELP[name], labels=labels)
            values = {(c, *rest): 0 for c in self._companies
                      for rest in _KNOWN.get(name, ((),))}
            values.update(found.get(name, {}))
            for key, value in sorted(values.items()):
                family.add_metric(list(key), value)
            yield family


class GatewayCollector(Collector):
    """The workers' metrics, with the oldest arrival turned into an age."""

    def __init__(self, source: Collector) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            if family.name != _OLDEST:
                yield family
                continue
            oldest = min((s.value for s in family.samples), default=math.inf)
            yield GaugeMetricFamily(
                "career_relay_queue_oldest_age_seconds",
                "Seconds since the oldest message not yet settled arrived (0: none).",
                value=0.0 if math.isinf(oldest) else max(0.0, time.time() - oldest))


class Metrics:
    """What ``/metrics`` serves; scraped in a thread (the ledger reads block)."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self._settings = settings
        self._ledger = ledger  # the site's
        self._dir = metrics_dir(settings.queue.dir)
        self._companies = [c.id for c in settings.companies]
        self._lock = threading.Lock()  # two scrapes at once share the connection in turn

    def render(self) -> bytes:
        with self._lock:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(GatewayCollector(_workers(self._dir)))
            registry.register(LedgerCollector(self._ledger, self._companies))
            return generate_latest(registry)


def _workers(directory: Path) -> Collector:
    """The worker processes' files when the gateway runs them; else this process's own
    metrics (a gateway running in the same process, as in tests)."""
    if directory.is_dir():
        return MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]
    return REGISTRY


METRICS = web.AppKey("metrics", Metrics)


async def metrics(request: web.Request) -> web.Response:
    body = await asyncio.get_running_loop().run_in_executor(
        None, request.app[METRICS].render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE,
                                            "Cache-Control": "no-store"})


def create_metrics_app(settings: Settings, ledger: Ledger) -> web.Application:
    """GET /metrics alone, served on ``site.metrics_listen`` (SPEC 6): the candidates'
    listener never shows queue depths or per-company counts."""
    app = web.Application(client_max_size=1024)
    app[METRICS] = Metrics(settings, ledger)
    app.router.add_get("/metrics", metrics)
    return app
