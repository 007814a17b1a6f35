"""Leak checks: the server's threads and descriptors return to their baseline.

The server runs in this very process (conftest.py starts it in a thread), so
its handler threads show in :func:`threading.active_count` and its sockets in
``/proc/self/fd``.  A :class:`Baseline` is taken once the server listens and
before any client connects; after the test has closed its own clients, the
counts must come back to it.  Handlers finish on their own threads a moment
after the last byte, so :meth:`Baseline.settle` polls the counts until they
match or a deadline passes.  That is waiting for a condition, not sleeping
to synchronise: the test asserts the end state, never how long it took.
"""

import os
import threading
import time
from typing import NamedTuple

#: Seconds the counts may take to come back before the test fails.
SETTLE_TIMEOUT = 5.0

#: Seconds between two looks at the counts: short, so a test is never slowed.
POLL_INTERVAL = 0.002


class Counts(NamedTuple):
    """What the process holds at one moment."""

    threads: int
    fds: int


def counts() -> Counts:
    """Count this process's threads and open file descriptors now."""
    return Counts(threading.active_count(), len(os.listdir("/proc/self/fd")))


class Baseline:
    """The thread and descriptor counts that a test must return to."""

    def __init__(self) -> None:
        self.before = counts()

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> Counts:
        """Wait until the counts are back to the baseline; fail with both if they never are."""
        deadline = time.monotonic() + timeout
        now = counts()
        while not self.holds(now) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
            now = counts()
        assert self.holds(now), "leaked: before %s, after %s" % (self.before, now)
        return now

    def holds(self, now: Counts) -> bool:
        """Tell whether ``now`` is back at the baseline.

        Below it counts as back: a handler of an earlier test's server may
        still have been finishing when the baseline was taken.
        """
        return now.threads <= self.before.threads and now.fds <= self.before.fds
