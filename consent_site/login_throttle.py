"""Admin login throttling that protects without locking anyone out (SPEC 6).

A lock-out per email let anyone lock an admin out by typing five wrong
passwords for her address.  Instead, failures slow down whoever fails:

- **Per client address** (IPv6 by /64): after ``FREE_PER_ADDRESS`` failures in
  ``WINDOW``, that address must wait 1 s, 2 s, 4 s ... (at most
  ``MAX_ADDRESS_DELAY``) after each further failure.  A flood from one
  address is cut to a handful of password checks.
- **Per account** (the email typed, known or not, so the answers never tell
  which addresses have a login): after ``FREE_PER_ACCOUNT`` failures from
  anywhere, each further try waits a growing delay of at most
  ``MAX_ACCOUNT_DELAY``: a distributed guesser is slowed, while an address
  that logged in to the account before is not held back by it at all, and a
  new one waits seconds at worst, never a lock-out.  One address adds at most
  ``FREE_PER_ADDRESS`` failures to an account (then it is slowed on its own),
  so a flood from one address never slows the owner at all.

Attempts refused for waiting run no argon2 and do not count.  The state is in
the site's memory (a flood writes nothing to the ledger); each site process
keeps its own, and a restart forgets it.
"""

from __future__ import annotations

import collections
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from career_relay.clients import client_key

WINDOW = 900.0  # failures older than this are forgotten
FREE_PER_ADDRESS = 5
FREE_PER_ACCOUNT = 10
MAX_ADDRESS_DELAY = 900.0
MAX_ACCOUNT_DELAY = 60.0
_MAX_KEYS = 100_000  # memory stays bounded whatever is typed
IN_FLIGHT_PER_ADDRESS = 2  # password checks one address may have running at once
_KNOWN = 8  # addresses remembered per account that logged in to it


@dataclass
class _Record:
    failures: list[float]
    not_before: float = 0.0


class LoginThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._addresses: OrderedDict[str, _Record] = OrderedDict()
        self._accounts: OrderedDict[str, _Record] = OrderedDict()
        self._in_flight: collections.Counter[str] = collections.Counter()
        # Per account, the addresses that logged in to it (the latest few).
        self._known: OrderedDict[str, list[str]] = OrderedDict()

    def wait(self, email: str, address: str) -> float:
        """Seconds until this address may try this account again; 0 when it may now.

        The account's own delay does not hold back an address that logged in to that
        account before: a guesser spread over many addresses slows strangers, never
        the owner at her usual desk.
        """
        now = self._clock()
        net, account = client_key(address), _account(email)
        found = [self._addresses.get(net)]
        if net not in self._known.get(account, ()):
            found.append(self._accounts.get(account))
        return max([0.0] + [r.not_before - now for r in found if r is not None])

    def begin(self, email: str, address: str) -> float:
        """Before a password check: 0 and a slot taken, or the seconds to wait.

        Checks in flight count as failures to come: twenty parallel posts from one
        address must not all pass the gate before the first failure is counted.
        Every 0 must be followed by ``failed`` or ``succeeded``.
        """
        wait = self.wait(email, address)
        key = client_key(address)
        record = self._addresses.get(key)
        recent = len(record.failures) if record is not None else 0
        if wait <= 0 and (self._in_flight[key] >= IN_FLIGHT_PER_ADDRESS
                          or recent + self._in_flight[key] >= FREE_PER_ADDRESS):
            wait = 1.0
        if wait <= 0:
            self._in_flight[key] += 1
        return wait

    def _end(self, address: str) -> None:
        key = client_key(address)
        self._in_flight[key] -= 1
        if self._in_flight[key] <= 0:
            del self._in_flight[key]

    def failed(self, email: str, address: str) -> None:
        self._end(address)
        now = self._clock()
        count = self._count(self._addresses, client_key(address), FREE_PER_ADDRESS,
                            MAX_ADDRESS_DELAY, now)
        if count <= FREE_PER_ADDRESS:
            # An address already slowed on its own adds nothing to the account: one
            # address, however patient, never slows the owner elsewhere.
            self._count(self._accounts, _account(email), FREE_PER_ACCOUNT,
                        MAX_ACCOUNT_DELAY, now)

    @staticmethod
    def _count(table: OrderedDict[str, _Record], key: str, free: int, cap: float,
               now: float) -> int:
        record = table.pop(key, None) or _Record([])
        record.failures = [t for t in record.failures if t > now - WINDOW] + [now]
        extra = len(record.failures) - free  # the free-th failure starts the delays
        if extra >= 0:
            record.not_before = now + min(cap, 2.0 ** extra)
        table[key] = record  # most recent last: the oldest go first when full
        while len(table) > _MAX_KEYS:
            table.popitem(last=False)
        return len(record.failures)

    def succeeded(self, email: str, address: str) -> None:
        """The owner got in: the account's failures are forgotten (the address's stay:
        a guesser who knows one password must not buy more guesses at others)."""
        self._end(address)
        account, net = _account(email), client_key(address)
        self._accounts.pop(account, None)
        known = [n for n in self._known.pop(account, []) if n != net][-(_KNOWN - 1):]
        self._known[account] = [*known, net]
        while len(self._known) > _MAX_KEYS:
            self._known.popitem(last=False)


def _account(email: str) -> str:
    return email.strip().lower()[:254]


class UsedNonces:
    """Login form nonces, each good for one POST (the form is minted anew each time)."""

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_age = max_age
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def use(self, nonce: str) -> bool:
        """True the first time ``nonce`` is used; False after."""
        now = self._clock()
        while self._seen and next(iter(self._seen.values())) < now - self._max_age:
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        while len(self._seen) > _MAX_KEYS:
            self._seen.popitem(last=False)
        return True
