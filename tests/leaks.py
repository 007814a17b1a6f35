"""Leak checks: the server's threads and descriptors return to their baseline.

The server runs in this very process (conftest.py starts it in a thread), so
its handler threads show in :func:`threading.enumerate` and its sockets in
``/proc/self/fd``.  A :class:`Baseline` is taken before the clients of a
test connect; after the test has closed its own clients, the counts must
come back to it.

Handlers finish on their own threads a moment after the last byte, so
:meth:`Baseline.settle` does not read the counts at once, nor poll them
against a clock: while the counts are above the baseline, it joins the
threads born since the baseline, one after another.  A handler closes its
socket before its thread ends, so once those joins return, the counts are
final, and a wrong count is a leak, never a thread that was still on its
way out.  The deadline only stops a test from hanging on a thread that
never ends; no correct run comes near it.
"""

import os
import threading
import time
from typing import List, NamedTuple

#: Seconds the server's threads may take to end before the test fails.  A
#: hang detector, not a clock: how promptly a dropped client's thread ends
#: is pinned by its own test (test_hardening.py), not by this number.
SETTLE_TIMEOUT = 60.0

#: Seconds between two looks while no new thread can be joined yet: one
#: the server is still starting for a connection the test already closed.
POLL_INTERVAL = 0.002


def join_once_started(thread: threading.Thread, timeout: float) -> None:
    """Join ``thread``, or give it a moment if it is still starting.

    threading.enumerate() lists a thread from the moment another thread
    calls its start(), but join() refuses it until it runs: here, the
    handler of a connection that the server has only just accepted.
    """
    try:
        thread.join(timeout)
    except RuntimeError:  # "cannot join thread before it is started"
        time.sleep(POLL_INTERVAL)


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
        """Join the threads born since the baseline until the counts are back; fail if they never are."""
        deadline = time.monotonic() + timeout
        now = counts()
        while not self.holds(now) and time.monotonic() < deadline:
            newcomers = self.newcomers()
            if newcomers:
                join_once_started(newcomers[0], max(0.0, deadline - time.monotonic()))
            else:
                time.sleep(POLL_INTERVAL)
            now = counts()
        assert self.holds(now), self.leak_report(now)
        return now

    def newcomers(self) -> List[threading.Thread]:
        """Return the threads alive now that were not at the baseline."""
        return [thread for thread in threading.enumerate() if thread not in self.threads]

    def leak_report(self, now: Counts) -> str:
        """Say what the counts were and are, and which threads born since are still alive."""
        alive = [thread.name for thread in self.newcomers()]
        return "leaked: before %s, after %s; still alive: %s" % (self.before, now, alive)

    def holds(self, now: Counts) -> bool:
        """Tell whether ``now`` is back at the baseline.

        Below it counts as back: a handler of an earlier test's server may
        still have been finishing when the baseline was taken.
        """
        return now.threads <= self.before.threads and now.fds <= self.before.fds
