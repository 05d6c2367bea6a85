"""SMTP AUTH failures counted per client address, across connections (SPEC 4).

Each connection may try AUTH five times (``server.CALL_LIMITS``), but a guesser
simply reconnects.  So every intake worker remembers the failures of each
client address: after ``LIMIT`` in ``WINDOW`` seconds, that address gets
``454 4.7.0`` for AUTH for ``BLOCK`` seconds, before any password is checked
(argon2 is what a flood would otherwise keep busy).  A correct login from
another address is not affected, and a success never clears an address's
failures (one known login must not buy more guesses at the others).

The kernel spreads one address's connections over the workers
(SO_REUSEPORT), and each worker counts alone, so each allows ``LIMIT //
workers`` failures: together never more than ``LIMIT``.  IPv6 clients are
counted by their /64, which one host usually owns whole.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from career_relay.clients import client_key

LIMIT = 10  # failures ...
WINDOW = 600.0  # ... in this many seconds ...
BLOCK = 600.0  # ... block AUTH from that address for this long
_MAX_ADDRESSES = 100_000  # memory stays bounded under a spoofing-free flood of addresses


class AuthThrottle:
    def __init__(self, workers: int = 1, *, clock: Callable[[], float] = time.monotonic):
        self.limit = max(1, LIMIT // max(1, workers))
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocked: dict[str, float] = {}

    def blocked(self, ip: str) -> bool:
        key = client_key(ip)
        until = self._blocked.get(key)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._blocked[key]
        return False

    def failed(self, ip: str) -> bool:
        """Count one failure; True when it blocks the address."""
        key, now = client_key(ip), self._clock()
        times = self._failures.pop(key, None) or deque()
        times.append(now)
        while times and times[0] <= now - WINDOW:
            times.popleft()
        if len(times) >= self.limit:
            self._blocked[key] = now + BLOCK
            return True
        self._failures[key] = times  # most recent last
        while len(self._failures) > _MAX_ADDRESSES:
            self._failures.popitem(last=False)
        if len(self._blocked) > _MAX_ADDRESSES:
            self._blocked = {k: t for k, t in self._blocked.items() if t > now}
        return False
