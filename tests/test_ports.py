"""The tests' port helper (tests/ports.py): a fixture asking for five ports once got the
same port twice, and its ``serve`` refused to start on its own port."""

from __future__ import annotations

import socket

from tests.ports import free_port


def test_free_port_never_hands_out_a_port_twice_and_each_is_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_port_skips_a_port_somebody_listens_on() -> None:
    first = free_port()
    with socket.socket() as taken:
        # Bind the port the helper would hand out next in its slice (or any port, on a
        # machine whose ephemeral range reaches down there): it must not be handed out.
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        assert all(free_port() != first + 1 for _ in range(50))
