"""The tests' port helper (tests/ports.py): a fixture asking for five ports once got the
same port twice, and its ``serve`` refused to start on its own port."""

from __future__ import annotations

import socket

import pytest

from tests import ports
from tests.ports import free_port


def test_free_port_never_hands_out_a_port_twice_and_each_is_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_port_skips_a_port_somebody_listens_on() -> None:
    first = free_port()
    # The port the helper would hand out next in its slice (or any port, on a machine whose
    # ephemeral range reaches down there): taken, it must not be handed out.
    after = first + 1 if first + 1 < ports._start + ports._SLICE else ports._start
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", after))
        taken.listen()
        assert all(free_port() != after for _ in range(50))


def test_the_workers_slices_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many workers xdist starts (the slices once repeated after eight)."""
    seen: set[int] = set()
    for index in range(12):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "12")
        start, size = ports._slice()
        mine = set(range(start, start + size))
        assert size > 0 and not mine & seen and max(mine) < ports._LAST
        seen |= mine
