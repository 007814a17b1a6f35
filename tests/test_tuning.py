"""Tests for the start-up settings of mechat.tuning, each in a fresh interpreter.

They change the whole process (CPU set, stack size, descriptor limit), so
each runs in a child process and reports what it sees.
"""

import os
import subprocess
import sys

import pytest


def in_child(code: str) -> str:
    """Run ``code`` after ``from mechat import tuning`` in a new interpreter; return its output."""
    done = subprocess.run(
        [sys.executable, "-c", "from mechat import tuning\n" + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_pin_to_one_cpu_leaves_one_cpu_for_new_threads() -> None:
    """After pinning, threads started later run on exactly one CPU, one the process was allowed."""
    code = (
        "import os, threading\n"
        "tuning.pin_to_one_cpu()\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))\n"
        "t.start(); t.join()\n"
        "print(sorted(seen[0]))\n"
    )
    assert in_child(code) == str([max(os.sched_getaffinity(0))])
