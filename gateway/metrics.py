"""The gateway's live metrics (prometheus-client), updated by each intake worker.

With several worker processes, ``career-relay serve``/``gateway`` sets
``PROMETHEUS_MULTIPROC_DIR`` before this module is imported: every value is
then a few bytes in a memory-mapped file of that directory (one file per
process and metric type), and the consent site's ``/metrics`` adds up the
files of every worker, living or dead.  An update is a write to memory, never
a system call: the SMTP path pays about a microsecond per counter and a few
per histogram observation.

Delivery figures count recipients (each is settled on its own, RFC 5321
section 4.2.1); ``accepted`` counts messages (one per 250).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

ACCEPTED = Counter("career_relay_messages_accepted",
                   "Messages answered 250 (on disk): one per SMTP transaction.")
RELAYED = Counter("career_relay_messages_relayed",
                  "Recipients the upstream accepted (2xx), DSNs included.")
DEFERRED = Counter("career_relay_messages_deferred",
                   "Recipients left waiting by a delivery attempt (4xx, timeout, no "
                   "connection): one per recipient per attempt.")
BOUNCED = Counter("career_relay_messages_bounced",
                  "Recipients given up (5xx, or queue.max_age reached).")
REJECTIONS = Counter(
    "career_relay_rejection_outcomes",
    "Messages of a company the rejection step acted on, by outcome: rejection (copies "
    "with links), not_injected (a rejection relayed unchanged), unmarked (taken for a "
    "rejection by the classifier under detect = marker; relayed unchanged), held (spooled "
    "while the ledger was unavailable; its copies follow when it is back).",
    ["outcome"])
_OUTCOMES = {"Rejection": REJECTIONS.labels("rejection"),
             "NotInjectable": REJECTIONS.labels("not_injected"),
             "Held": REJECTIONS.labels("held")}
_UNMARKED = REJECTIONS.labels("unmarked")
LEDGER_COMMITS = Counter(
    "career_relay_rejection_commits",
    "Rejections whose offers were committed in the event loop (loop) or, because that "
    "would have waited or the rejection is large, in a thread (thread).",
    ["where"])
_COMMITTED = {True: LEDGER_COMMITS.labels("loop"), False: LEDGER_COMMITS.labels("thread")}
LOOP_TRANSACTIONS = Counter(
    "career_relay_rejection_loop_transactions",
    "Transactions of the commits in the event loop: the rejections that end within "
    "a few milliseconds share one (rejection_commits_total{where=\"loop\"} over this is "
    "how many).")
PROCESSING = Histogram(
    "career_relay_processing_seconds",
    "From the end of DATA to the 250: checks, rejection handling, spool fsync.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
DELIVERY = Histogram(
    "career_relay_delivery_seconds",
    "From acceptance (the 250) to the upstream's 2xx, per recipient delivered.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
             900.0, 3600.0, 14400.0, 86400.0))
QUEUE_DEPTH = Gauge("career_relay_queue_messages",
                    "Messages not yet settled (fresh and deferred), all workers.",
                    multiprocess_mode="livesum")
#: The site turns this into ``career_relay_queue_oldest_age_seconds`` at scrape time
#: (an age must grow between two updates); +Inf while a worker's queue is empty.
QUEUE_OLDEST = Gauge("career_relay_queue_oldest_arrival_timestamp_seconds",
                     "Arrival time of the oldest message not yet settled.",
                     multiprocess_mode="livemin")


def accepted(started: float) -> None:
    """One message answered 250; ``started`` is ``time.perf_counter()`` at the end of DATA."""
    ACCEPTED.inc()
    PROCESSING.observe(time.perf_counter() - started)


def outcome(name: str, unmarked: bool) -> None:
    """The rejection step's outcome for one message (ordinary mail is not counted here)."""
    counter = _UNMARKED if unmarked else _OUTCOMES.get(name)
    if counter is not None:
        counter.inc()


def committed(in_loop: bool) -> None:
    """A rejection's offers recorded, in the event loop or in a thread."""
    _COMMITTED[in_loop].inc()


def loop_transaction() -> None:
    """One transaction of the event loop's commits (``gateway.loop_commits``)."""
    LOOP_TRANSACTIONS.inc()


def delivered(arrival: float, recipients: int) -> None:
    if recipients:
        RELAYED.inc(recipients)
        waited = time.time() - arrival
        for _ in range(recipients):
            DELIVERY.observe(waited)


def queue(arrivals: Iterable[float]) -> None:
    """The worker's queue as it stands (called about once a second, off the SMTP path)."""
    count, oldest = 0, math.inf
    for arrival in arrivals:
        count += 1
        oldest = min(oldest, arrival)
    QUEUE_DEPTH.set(count)
    QUEUE_OLDEST.set(oldest)
