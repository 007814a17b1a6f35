"""Process-wide settings that make a thread-per-connection server fast and steady.

None of this changes what the server does; it changes what the operating
system does for it.  ``mechat serve`` applies each one at start-up, before
the first thread exists (threads inherit their CPU set and stack size).
Each function below is one optimisation, named, with the measurement that
justified it (``bench/`` in the repository, numbers on a 2-core machine).
"""

import logging
import os

log = logging.getLogger(__name__)


def pin_to_one_cpu() -> None:
    """Run every thread of this process on one CPU, the last one allowed.

    Only one thread runs Python at a time (the GIL), so a second CPU buys
    this server almost nothing, and costs it a lot: a thread woken on the
    other CPU must take the GIL from a thread running here, and each such
    hand-off is a futex wake-up across CPUs.  With thousands of threads the
    hand-offs turn into storms that burn system time on both CPUs.
    Measured with the scheduler free to place the server (``--pin none``),
    server CPU time per relayed line: 59 -> 30 us at 100 pairs and
    154 -> 52 us at 1,000 pairs in ping-pong (round trips/s 7.2k -> 11.2k
    and 3.7k -> 5.5k on a machine that other jobs kept busy).
    """
    if not hasattr(os, "sched_setaffinity"):
        return  # not Linux: leave the scheduler alone
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {allowed[-1]})
    log.info("running on CPU %d of %s (--all-cpus to use them all)", allowed[-1], allowed)
