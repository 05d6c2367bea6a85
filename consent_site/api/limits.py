"""Rate limits of the company API: a token bucket per key (``api.rate_limit`` requests a
minute, SPEC 10) and one per client address for failed authentications.

A bucket holds up to a minute's worth of requests and refills continuously, so a key
may burst to its limit and then goes at limit/60 a second; a refused request learns how
many seconds until it may try again (``Retry-After``, RFC 9110 10.2.3).  Counted in this
process's memory: several sites each count their own.  The table is bounded: when full,
the bucket used least recently is dropped (a flood of new addresses may push a
blocked one out early: what that costs is a few more guesses at a 256-bit key).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

#: Failed authentications a client address may make a minute before its bad keys get 429
#: (a key is 256 random bits: this tells a guesser to stop, it is not what stops one).
AUTH_FAILURES_PER_MINUTE = 30
MAX_BUCKETS = 10_000


class Buckets:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = MAX_BUCKETS) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.per_minute), now))
        return min(float(self.per_minute), tokens + (now - at) * self.per_minute / 60.0)

    def blocked(self, key: str) -> int | None:
        """Whole seconds until ``key`` may be spent again, None when it may now: spends
        nothing (the API asks before it reads the database for a bad key)."""
        tokens = self._level(key, self._clock()) if key in self._buckets else 1.0
        return None if tokens >= 1.0 else max(
            1, math.ceil((1.0 - tokens) * 60.0 / self.per_minute))

    def take(self, key: str) -> int | None:
        """Spend one request of ``key``: None when allowed, else whole seconds to wait."""
        now = self._clock()
        tokens = self._level(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            return max(1, math.ceil((1.0 - tokens) * 60.0 / self.per_minute))
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max:  # the least recently used go first
            self._buckets.popitem(last=False)
        return None

    def __len__(self) -> int:
        return len(self._buckets)
