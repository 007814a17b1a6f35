"""Process-wide settings that make a thread-per-connection server fast and steady.

None of this changes what the server does; it changes what the operating
system does for it.  ``mechat serve`` applies each one at start-up, before
the first thread exists (threads inherit their CPU set and stack size).
Each function below is one optimisation, named, with the measurement that
justified it (``bench/`` in the repository, numbers on a 2-core machine).
"""

import gc
import logging
import os
import sys
import threading

try:  # Unix only
    import resource
except ImportError:  # Windows: no limit on open files to raise
    HAVE_RLIMIT = False
else:
    HAVE_RLIMIT = True

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


#: Stack reserved for each thread.  Python code runs on its own frame stack,
#: so a handler's C stack stays shallow; 256 KiB is far more than it uses.
THREAD_STACK_SIZE = 256 * 1024


def shrink_thread_stacks(size: int = THREAD_STACK_SIZE) -> None:
    """Reserve ``size`` bytes of stack per thread instead of the default 8 MiB.

    Only the pages a thread touches count in its RSS, so this saves address
    space, not memory: 10,000 threads reserve 2.5 GB instead of 80 GB, which
    a system with strict overcommit (vm.overcommit_memory=2) would refuse.
    Measured at 10,000 connections: VmPeak 86 GB -> 7.0 GB, RSS unchanged
    (about 50 KB a connection under load, 29 KB idle: 12 KB of it is the
    stack pages each thread touches, most of the rest malloc arenas).
    """
    threading.stack_size(size)


#: Seconds a thread may run Python before it must hand the GIL to a waiter.
SWITCH_INTERVAL = 1.0


def switch_threads_less_often(interval: float = SWITCH_INTERVAL) -> None:
    """Let a thread keep the GIL until it blocks, instead of forcing a hand-off every 5 ms.

    The forced hand-off is meant for threads that compute; mechat's handlers
    block in recv() or send() after some microseconds of Python.  With
    thousands of runnable threads, every forced hand-off is a storm of
    futex wake-ups (perf: most of the server's time in futex_wait and
    finish_task_switch).  Measured at 10,000 connections (5,000 pairs, 5
    ping-pongs each, one CPU, two runs each): 1.6k and 1.0k round trips/s
    with 5 ms, 2.7k and 6.1k with 0.1 s, 7.5k and 7.0k with 1 s; p99 12 s
    and 24 s -> 1.8 s and 2.2 s.
    """
    sys.setswitchinterval(interval)


#: Allocations of container objects between two collections of the youngest
#: generation; Python's default is 700.
GC_THRESHOLD = 50_000


def collect_garbage_less_often(threshold: int = GC_THRESHOLD) -> None:
    """Keep the start-up objects out of the cycle collector, and run it less often.

    Every connection owns a few dozen container objects (its handler,
    socket, locks, generator) that live as long as it does.  The cycle
    collector visits the young ones each time 700 have been allocated, and
    at every full collection walks them all, with the ~50,000 objects of the
    imported modules on top.  gc.freeze() moves those start-up objects where
    no collection looks; the higher threshold makes young collections rarer.
    Cycles are still collected, a little later, so memory stays bounded.
    perf at 10,000 connections: 11% of the server's CPU in gc_collect_main
    and its visitors.  Measured, 5,000 pairs with 5 ping-pongs each on one
    CPU, 3 runs each: all matched in 2.23 s -> 2.06 s (median), p99 of the
    round trip 2.9 s -> 2.7 s.
    """
    gc.freeze()
    gc.set_threshold(threshold, *gc.get_threshold()[1:])


#: Descriptors a process needs besides its connections: stdio, logs, a
#: listening socket, and some to spare.
SPARE_FILES = 64


def raise_file_limit(connections: int) -> str:
    """Raise the soft RLIMIT_NOFILE to fit ``connections``; return a warning if the hard limit won't.

    Each connection is a file descriptor, and the soft limit (often 1,024)
    is far below what a class of clients, or a load test, opens.  A soft
    limit that is already high enough, or unlimited, is left alone.  Windows
    has no such limit, and no ``resource`` module: there this does nothing.
    """
    if not HAVE_RLIMIT:
        return ""
    needed = connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return ""
    new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if new >= needed:
        return ""
    return (
        "only %d file descriptors allowed (hard limit), so at most about %d connections fit, not %d:"
        " raise the hard limit (ulimit -Hn, or LimitNOFILE= in systemd)"
        % (new, new - SPARE_FILES, connections)
    )
