"""consent_site.login_throttle with a clock that is told (SPEC 6: throttles that protect,
never lock out)."""

from __future__ import annotations

from consent_site.login_throttle import (
    FREE_PER_ACCOUNT,
    FREE_PER_ADDRESS,
    IN_FLIGHT_PER_ADDRESS,
    MAX_ACCOUNT_DELAY,
    MAX_ADDRESS_DELAY,
    WINDOW,
    LoginThrottle,
    UsedNonces,
)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_one_address_waits_longer_after_each_failure_up_to_the_cap() -> None:
    clock = Clock()
    t = LoginThrottle(clock)
    waits = []
    for _ in range(FREE_PER_ADDRESS + 7):
        clock.now += t.wait("hr@acme.example", "198.51.100.7")  # it waits, then fails again
        t.failed("hr@acme.example", "198.51.100.7")
        waits.append(t.wait("hr@acme.example", "198.51.100.7"))
    assert waits[:FREE_PER_ADDRESS - 1] == [0.0] * (FREE_PER_ADDRESS - 1)
    growing = waits[FREE_PER_ADDRESS - 1:]
    assert growing == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
    assert max(growing) <= MAX_ADDRESS_DELAY
    assert t.wait("hr@acme.example", "203.0.113.9") == 0.0  # the owner elsewhere: no wait


def test_many_addresses_slow_the_account_by_seconds_never_lock_it() -> None:
    clock = Clock()
    t = LoginThrottle(clock)
    for i in range(FREE_PER_ACCOUNT + 30):  # a distributed guesser, one try per address
        clock.now += t.wait("hr@acme.example", f"198.51.100.{i}")
        t.failed("hr@acme.example", f"198.51.100.{i}")
    owner = t.wait("hr@acme.example", "203.0.113.9")
    assert 0 < owner <= MAX_ACCOUNT_DELAY
    assert t.wait("other@acme.example", "203.0.113.9") == 0.0
    clock.now += owner
    t.succeeded("hr@acme.example", "203.0.113.9")
    assert t.wait("hr@acme.example", "203.0.113.10") == 0.0


def test_failures_are_forgotten_after_the_window_and_ipv6_counts_by_64() -> None:
    clock = Clock()
    t = LoginThrottle(clock)
    for i in range(FREE_PER_ADDRESS - 1):
        t.failed("a@acme.example", f"2001:db8:5:6::{i + 1}")
    t.failed("a@acme.example", "2001:db8:5:6::ff")
    assert t.wait("b@acme.example", "2001:db8:5:6::1234") > 0  # one /64, one client
    clock.now += WINDOW + 60
    t.failed("a@acme.example", "2001:db8:5:6::1")
    assert t.wait("b@acme.example", "2001:db8:5:6::1") == 0.0  # the old ones expired


def test_a_nonce_is_good_once_and_forgotten_after_its_age() -> None:
    clock = Clock()
    used = UsedNonces(60, clock)
    assert used.use("n1") and not used.use("n1") and used.use("n2")
    clock.now += 61
    assert used.use("n3") and used.use("n1")  # n1 is past its age: the Csrf check refuses it


def test_parallel_posts_from_one_address_do_not_all_pass_the_gate() -> None:
    """Twenty posts at once must not all reach argon2 before the first failure counts."""
    t = LoginThrottle(Clock())
    gates = [t.begin("hr@acme.example", "198.51.100.7") for _ in range(20)]
    assert gates.count(0.0) == IN_FLIGHT_PER_ADDRESS and all(g > 0 for g in gates if g)
    assert t.begin("hr@acme.example", "203.0.113.9") == 0.0  # the owner elsewhere
    for _ in range(IN_FLIGHT_PER_ADDRESS):
        t.failed("hr@acme.example", "198.51.100.7")
    checked = IN_FLIGHT_PER_ADDRESS
    while t.begin("hr@acme.example", "198.51.100.7") == 0.0:
        t.failed("hr@acme.example", "198.51.100.7")
        checked += 1
    assert checked == FREE_PER_ADDRESS  # then the address waits


def test_an_address_that_logged_in_before_is_not_held_back_by_the_account() -> None:
    """Several addresses keeping the account's delay up must not keep its owner out."""
    clock = Clock()
    t = LoginThrottle(clock)
    assert t.begin("hr@acme.example", "203.0.113.9") == 0.0
    t.succeeded("hr@acme.example", "203.0.113.9")  # the owner's usual desk
    for i in range(FREE_PER_ACCOUNT + 20):
        clock.now += t.wait("hr@acme.example", f"198.51.100.{i}")
        t.failed("hr@acme.example", f"198.51.100.{i}")
    assert t.wait("hr@acme.example", "192.0.2.50") > 0  # a stranger waits
    assert t.wait("hr@acme.example", "203.0.113.9") == 0.0  # the owner does not
