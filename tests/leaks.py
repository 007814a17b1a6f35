"""Leak checks: the server's threads and descriptors return to their baseline.

The server runs in this very process (conftest.py starts it in a thread), so
its handler threads show in :func:`threading.enumerate` and its sockets in
``/proc/self/fd``.  A :class:`Baseline` is taken before the clients of a
test connect; after the test has closed its own clients, the counts must
come back to it.

Handlers finish on their own threads a moment after the last byte, so
:meth:`Baseline.settle` does not read the counts at once, nor poll them
against a clock: it joins every thread that was born since the baseline.
A handler closes its socket before its thread ends, so once the joins
return, the counts are final, and a wrong count is a leak, never a thread
that was still on its way out.  The deadline only stops a test from hanging
on a thread that never ends; no correct run comes near it.
"""

import os
import threading
import time
from typing import NamedTuple

#: Seconds the server's threads may take to end before the test fails.  A
#: hang detector, not a clock: how promptly a dropped client's thread ends
#: is pinned by its own test (test_hardening.py), not by this number.
SETTLE_TIMEOUT = 60.0

#: Seconds between two looks while no new thread is left to join: a thread
#: the server is still starting for a connection the test already closed.
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
        self.threads = set(threading.enumerate())
        self.before = counts()

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> Counts:
        """Wait until every thread born since the baseline has ended; fail unless the counts are back."""
        deadline = time.monotonic() + timeout
        now = counts()
        while not self.holds(now) and time.monotonic() < deadline:
            newcomers = [thread for thread in threading.enumerate() if thread not in self.threads]
            if newcomers:
                newcomers[0].join(max(0.0, deadline - time.monotonic()))
            else:
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
