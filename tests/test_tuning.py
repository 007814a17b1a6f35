"""Tests for the start-up settings of mechat.tuning, each in a fresh interpreter.

They change the whole process (CPU set, stack size, descriptor limit), so
each runs in a child process and reports what it sees.
"""

import os
import subprocess
import sys

import pytest


def in_child(code: str, first: str = "") -> str:
    """Run ``first``, ``from mechat import tuning`` and ``code`` in a new interpreter; return its output."""
    done = subprocess.run(
        [sys.executable, "-c", first + "from mechat import tuning\n" + code],
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


def test_collect_garbage_less_often_freezes_start_up_and_still_collects() -> None:
    """Start-up objects leave the collector's reach, and a cycle made later is still freed."""
    code = (
        "import gc, weakref\n"
        "tuning.collect_garbage_less_often(1000)\n"
        "class Node: pass\n"
        "a, b = Node(), Node()\n"
        "a.other, b.other = b, a\n"
        "gone = weakref.ref(a)\n"
        "del a, b\n"
        "keep = [[] for _ in range(2000)]\n"  # past the threshold: a collection runs by itself
        "print(gc.get_freeze_count() > 1000, gc.get_threshold()[0], gone() is None)\n"
    )
    assert in_child(code) == "True 1000 True"


def test_raise_file_limit_covers_the_clients_when_allowed() -> None:
    """With a high enough hard limit, the soft limit is raised to fit every client (§9.3)."""
    code = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
        "print(repr(tuning.raise_file_limit(100)), resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 164)\n"
    )
    assert in_child(code) == "'' True"


def test_raise_file_limit_says_when_it_cannot() -> None:
    """Below the hard limit's reach, the server says how many clients fit and what to raise."""
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (100, 200))\n"
        "print(tuning.raise_file_limit(10000))\n"
    )
    out = in_child(code)
    assert "only 200 file descriptors" in out
    assert "ulimit -Hn" in out


def test_thread_settings_apply_to_new_threads() -> None:
    """Smaller stacks and a longer switch interval are set for the threads that follow."""
    code = "import sys, threading\ntuning.shrink_thread_stacks()\ntuning.switch_threads_less_often()\n"
    code += "print(threading.stack_size() == tuning.THREAD_STACK_SIZE,"
    code += " sys.getswitchinterval() == tuning.SWITCH_INTERVAL)\n"
    assert in_child(code) == "True True"


def test_load_tester_says_why_its_clients_did_not_fit() -> None:
    """mechat load raises the limit with the same function, and adds its warning to a failed run."""
    code = (
        "import argparse, resource, socket\n"
        "from mechat import load\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (100, 200))\n"
        "silent = socket.create_server(('127.0.0.1', 0))\n"  # never answers: the run fails
        "options = argparse.Namespace(\n"
        "    mode='pingpong', pairs=500, messages=1, size=64, window=8, timeout=0.5\n"
        ")\n"
        "error = load.run('127.0.0.1', silent.getsockname()[1], options).error\n"
        "warning = tuning.raise_file_limit(1000)\n"
        "print(error.endswith(' (%s)' % warning), 'not 1000:' in warning)\n"
    )
    assert in_child(code) == "True True"


def test_raise_file_limit_without_resource_does_nothing() -> None:
    """Where there is no resource module (Windows), the limit is left alone, with no warning."""
    blocked = "import sys\nsys.modules['resource'] = None\n"
    code = "print(repr(tuning.raise_file_limit(10**6)), tuning.HAVE_RLIMIT)\n"
    assert in_child(code, first=blocked) == "'' False"
