"""gateway.throttle: AUTH failures per client address (SPEC 4), with a clock that is told."""

from __future__ import annotations

from gateway.throttle import BLOCK, LIMIT, WINDOW, AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ten_failures_in_the_window_block_for_ten_minutes() -> None:
    clock = Clock()
    t = AuthThrottle(clock=clock)
    assert [t.failed("198.51.100.7") for _ in range(LIMIT)] == [False] * (LIMIT - 1) + [True]
    assert t.blocked("198.51.100.7") and not t.blocked("198.51.100.8")
    clock.now += BLOCK - 1
    assert t.blocked("198.51.100.7")
    clock.now += 2
    assert not t.blocked("198.51.100.7")


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    t = AuthThrottle(clock=clock)
    for _ in range(LIMIT - 1):
        t.failed("198.51.100.7")
    clock.now += WINDOW + 1
    assert not t.failed("198.51.100.7") and not t.blocked("198.51.100.7")


def test_workers_share_the_limit_and_ipv6_counts_by_its_64() -> None:
    t = AuthThrottle(workers=2, clock=Clock())
    assert t.limit == LIMIT // 2  # each worker counts alone: together never more than LIMIT
    for host in range(t.limit):
        t.failed(f"2001:db8:1:2::{host + 1}")  # one /64, many addresses
    assert t.blocked("2001:db8:1:2::ffff") and not t.blocked("2001:db8:1:3::1")
    assert t.failed("::ffff:192.0.2.1") is False and t.blocked("192.0.2.1") is False
