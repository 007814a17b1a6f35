"""Login throttling: tries per connection and failures per address (protocol 2, accounts).

The clock is a :class:`FakeClock` stepped by hand, as in the flood tests'
use of :class:`mechat.flood.TokenBucket`: nothing here waits for real time.
"""

import threading
from typing import List

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mechat import throttle
from mechat.throttle import AddressThrottle, LoginTries, address_key

#: Seconds any wait on another thread may take.
TIMEOUT = 30.0


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_connection_is_closed_at_its_fifth_failure() -> None:
    """Per connection: 5 failed logins, and the fifth says close."""
    tries = LoginTries()
    assert [tries.fail() for _ in range(throttle.MAX_FAILED_LOGINS)] == [False] * 4 + [True]


def test_an_address_fails_five_times_then_once_a_second() -> None:
    """Per address: a burst of 5 failures, then one a second; the answer says how long to wait."""
    clock = FakeClock()
    limit = AddressThrottle(clock=clock)
    assert [limit.take("192.0.2.1") for _ in range(5)] == [0.0] * 5
    assert limit.take("192.0.2.1") == pytest.approx(1.0)
    clock.now = 0.25
    assert limit.take("192.0.2.1") == pytest.approx(0.75)  # a refused try takes nothing
    clock.now = 1.0
    assert limit.take("192.0.2.1") == 0.0
    assert limit.take("192.0.2.1") == pytest.approx(1.0)
    assert limit.take("192.0.2.2") == 0.0  # another address has its own bucket


def test_a_login_that_succeeds_costs_nothing() -> None:
    """Only failures count: a try given back after a right password leaves the bucket full."""
    limit = AddressThrottle(clock=FakeClock())
    for _ in range(20):
        assert limit.take("192.0.2.1") == 0.0
        limit.give_back("192.0.2.1")
    assert [limit.take("192.0.2.1") for _ in range(6)] == [0.0] * 5 + [pytest.approx(1.0)]


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    """Giving back to a full bucket, or to one never seen, adds nothing."""
    limit = AddressThrottle(clock=FakeClock())
    limit.give_back("192.0.2.1")
    limit.take("192.0.2.1")
    limit.give_back("192.0.2.1")
    limit.give_back("192.0.2.1")
    assert [limit.take("192.0.2.1") for _ in range(6)] == [0.0] * 5 + [pytest.approx(1.0)]


def test_a_rate_of_zero_turns_it_off() -> None:
    """rate=0: every try may go ahead, and nothing is kept."""
    limit = AddressThrottle(rate=0, clock=FakeClock())
    assert [limit.take("192.0.2.1") for _ in range(100)] == [0.0] * 100
    assert len(limit) == 0


def test_addresses_that_stopped_failing_are_forgotten() -> None:
    """Memory: a bucket full again is dropped at the next sweep; one still short is kept, and still short."""
    clock = FakeClock()
    limit = AddressThrottle(clock=clock)
    for _ in range(5):
        limit.take("guesser")
    for number in range(throttle._FIRST_SWEEP - 2):
        limit.take("10.0.%d.%d" % divmod(number, 256))
    clock.now = 2.0  # the one-failure buckets are full again; the guesser has 2 tokens
    assert limit.take("newcomer") == 0.0
    assert len(limit) == 2
    assert [limit.take("guesser") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_threads_of_one_address_share_its_burst() -> None:
    """Take and the bucket's update are one step: 20 threads at once get exactly 5 tries."""
    limit = AddressThrottle(clock=FakeClock())
    start = threading.Barrier(20)
    waits: List[float] = []

    def take() -> None:
        start.wait(TIMEOUT)
        waits.append(limit.take("192.0.2.1"))

    threads = [threading.Thread(target=take) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert len(waits) == 20 and waits.count(0.0) == 5


@given(steps=st.lists(st.floats(min_value=0, max_value=3), max_size=200))
def test_failures_never_outrun_burst_plus_rate(steps: List[float]) -> None:
    """Over any run of tries, those allowed are at most the burst plus the rate times the time."""
    clock = FakeClock()
    limit = AddressThrottle(clock=clock)
    allowed = 0
    for step in steps:
        clock.now += step
        allowed += limit.take("192.0.2.1") == 0.0
    bound = throttle.DEFAULT_FAILED_LOGIN_BURST + clock.now * throttle.DEFAULT_FAILED_LOGIN_RATE
    assert allowed <= bound + 1e-9  # a hair for the rounding of the summed steps


@pytest.mark.parametrize(
    "host, key",
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
        ("2001:db8:0:1:aaaa:bbbb:cccc:dddd", "2001:db8:0:1::/64"),
        ("2001:db8:0:2::1", "2001:db8:0:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
    ],
)
def test_an_ipv6_slash_64_is_one_address(host: str, key: str) -> None:
    """One IPv6 host may pick any address in its /64: the /64 is counted as one address."""
    assert address_key(host) == key
