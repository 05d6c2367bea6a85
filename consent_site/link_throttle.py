"""How often the company link's form may send mail (SPEC 10), in the site's memory.

Three counts, each over a sliding window, as the login throttle keeps its own:

- **per client** (its address, IPv6 by /64): ``CLIENT_LIMIT`` accepted forms
  an hour.  Over it, the client gets a 429 page with ``Retry-After``; that
  says nothing about any address.
- **per company**: ``COMPANY_LIMIT`` mails an hour through one company's
  link, which bounds what a crowd of clients can make its upstream send (and
  the offers it can make) while an admin looks.  Over it, a 429 page too.
- **per address**: ``ADDRESS_LIMIT`` mails a day to one mailbox (``+tags``
  and case folded, across every company), so nobody can bomb a victim's
  inbox through the form.  Over it, the form answers exactly as when it sends
  (the page never tells whether an address was used) and sends nothing.

Addresses are kept only as keyed hashes under a key made at start, never as
typed.  Each site process counts alone and a restart forgets: the limits
bound a flood, and the review of every link forward (SPEC 10) stops credits
being farmed whatever gets through.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from career_relay.clients import client_key

CLIENT_LIMIT, CLIENT_WINDOW = 10, 3600.0
COMPANY_LIMIT, COMPANY_WINDOW = 200, 3600.0
ADDRESS_LIMIT, ADDRESS_WINDOW = 3, 86400.0
_MAX_KEYS = 100_000  # memory stays bounded whatever is typed


class _Counts:
    """Events per key over a sliding window; the least recently counted keys go first."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float]:
        times = self._times.get(key) or deque()
        while times and times[0] <= self._clock() - self.window:
            times.popleft()
        return times

    def full(self, key: str) -> bool:
        return len(self._recent(key)) >= self.limit

    def retry_after(self, key: str) -> int:
        times = self._recent(key)
        return max(1, int(times[0] + self.window - self._clock()) + 1) if times else 1

    def add(self, key: str) -> None:
        times = self._recent(key)
        self._times.pop(key, None)
        times.append(self._clock())
        self._times[key] = times  # most recent last
        while len(self._times) > _MAX_KEYS:
            self._times.popitem(last=False)


class LinkThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clients = _Counts(CLIENT_LIMIT, CLIENT_WINDOW, clock)
        self.companies = _Counts(COMPANY_LIMIT, COMPANY_WINDOW, clock)
        self.addresses = _Counts(ADDRESS_LIMIT, ADDRESS_WINDOW, clock)
        self._key = secrets.token_bytes(32)

    def client_wait(self, address: str | None) -> int:
        """Seconds this client must wait before its next form counts; 0 when it may now."""
        key = client_key(address or "")
        return self.clients.retry_after(key) if self.clients.full(key) else 0

    def count_client(self, address: str | None) -> None:
        self.clients.add(client_key(address or ""))

    def company_wait(self, company: str) -> int:
        return self.companies.retry_after(company) if self.companies.full(company) else 0

    def take_address(self, mailbox: str) -> bool:
        """Count one mail to ``mailbox`` (``company_link.throttle_key``); False, counting
        nothing, when it had its share today."""
        key = hashlib.blake2b(mailbox.encode("utf-8"), key=self._key, digest_size=16).hexdigest()
        if self.addresses.full(key):
            return False
        self.addresses.add(key)
        return True

    def count_company(self, company: str) -> None:
        self.companies.add(company)
