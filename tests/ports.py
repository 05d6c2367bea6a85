"""Loopback ports for the servers the tests start, never the same one twice.

Asking the kernel (``bind(("127.0.0.1", 0))``, then close) is not enough: the port is
free again the moment the probe closes, so two calls may return the same port (a
fixture asking for five ports once got one twice, and its ``serve`` failed on its own
port), and any client connection may take it as its local port before the server
binds. So ports come from below the kernel's ephemeral range
(``net.ipv4.ip_local_port_range``, 32768 and up by default), which nothing assigns
automatically, in a slice of its own for each pytest-xdist worker, handed out in turn
from a random place in it and each checked by binding it.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import socket

_FIRST, _LAST = 20_000, 32_000       # below the ephemeral range: only we take these


def _slice() -> tuple[int, int]:
    """(first port, count) of this worker's slice: the range split among as many workers
    as pytest-xdist started, so no two share a port whatever their number."""
    found = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    index = int(found.group(1)) if found else 0
    try:
        workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), index + 1)
    except ValueError:
        workers = index + 1
    size = (_LAST - _FIRST) // workers
    return _FIRST + index * size, size


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


_start, _SLICE = _slice()
# From a random place in the slice: two test runs on one machine (two worktrees, two CI
# jobs) then rarely walk the same ports in step.
_offset = random.randrange(_SLICE)
_turn = itertools.cycle([*range(_start + _offset, _start + _SLICE),
                         *range(_start, _start + _offset)])
# A machine whose ephemeral range reaches down here: ours could collide with its clients,
# so the kernel chooses (never the same port twice).
_KERNEL_CHOOSES = _ephemeral_floor() <= _LAST
_given: set[int] = set()        # the kernel's choices, then


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nobody listens on, not handed out before in this process."""
    if _KERNEL_CHOOSES:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
    for _ in range(_SLICE):
        port = next(_turn)
        if _bindable(port):
            return port
    raise OSError(f"no free loopback port in {_start}-{_start + _SLICE - 1}")
