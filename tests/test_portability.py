"""mechat without the parts of the standard library that only Unix, or only Linux, has.

The tests and CI run on Linux, but the command line must start everywhere,
and the server must run on macOS and Windows too, with the portable
fallbacks of :mod:`mechat.connection` in place of Linux's tricks (README,
"Platforms").  So these tests play Windows on Linux: a child interpreter
loses what Windows lacks before it imports mechat, and then runs it as
``python -m mechat`` would.
"""

import os
import re
import select
import signal
import subprocess
import sys
import time
from typing import IO, Iterator, List

import pytest

from tests.peers import pair

#: Modules Windows lacks; None in sys.modules makes importing one fail.
UNIX_ONLY_MODULES = ["fcntl", "termios", "resource"]

#: Names Windows lacks (POLLRDHUP, TCP_INFO and CPU affinity are Linux's alone).
MISSING_ON_WINDOWS = [
    "select.poll",
    "select.epoll",
    "select.POLLIN",
    "select.POLLOUT",
    "select.POLLERR",
    "select.POLLHUP",
    "select.POLLRDHUP",
    "socket.MSG_DONTWAIT",
    "socket.TCP_INFO",
    "os.sched_setaffinity",
]

#: The code the child runs: take away what Windows lacks, run mechat with
#: the rest of its command line, and at the end say which tricks the
#: server module found (FALLBACKS if it found none).
AS_ON_WINDOWS = (
    "import importlib, runpy, sys\n"
    "for module in %r:\n"
    "    sys.modules[module] = None\n"
    "for dotted in %r:\n"
    "    module, name = dotted.split('.')\n"
    "    delattr(importlib.import_module(module), name)\n"
    "try:\n"
    "    runpy.run_module('mechat', run_name='__main__', alter_sys=True)\n"
    "finally:\n"
    "    connection = sys.modules.get('mechat.connection')\n"
    "    tricks = connection and (connection.HAVE_POLL, connection.MSG_DONTWAIT, connection.HAVE_TIOCOUTQ)\n"
    "    print('tricks found:', tricks, file=sys.stderr)\n"
) % (UNIX_ONLY_MODULES, MISSING_ON_WINDOWS)

#: What the child says at the end when the server module fell back on every trick.
FALLBACKS = "tricks found: (False, 0, False)"

#: Where mechat is: the child imports it from the working tree.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Seconds the child may take to start, answer or stop; a deadline for a hang only.
CHILD_TIMEOUT = 30.0


def as_on_windows(*argv: str) -> List[str]:
    """Return the command that runs ``mechat ARGV`` as on Windows."""
    return [sys.executable, "-c", AS_ON_WINDOWS, *argv]


@pytest.mark.parametrize("command", ["serve", "chat", "conform", "load"])
def test_every_command_starts_without_unix_modules(command: str) -> None:
    """--help works for every command where fcntl, termios and resource do not exist."""
    done = subprocess.run(
        as_on_windows(command, "--help"),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
        cwd=REPOSITORY,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: mechat %s" % command)
    assert FALLBACKS in done.stderr


#: The line in which 'mechat serve' names its port.
LISTENING = rb"listening on 127\.0\.0\.1:(\d+)\n"


@pytest.fixture
def server_as_on_windows() -> Iterator[int]:
    """Run 'mechat serve' on port 0 as on Windows; yield its port, then stop it with SIGTERM (§10)."""
    child = subprocess.Popen(
        as_on_windows("serve", "--port", "0", "--log-level", "info"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPOSITORY,
    )
    try:
        assert child.stderr is not None
        said = read_until(child.stderr, LISTENING)
        yield int(re.findall(LISTENING, said)[0])
        child.send_signal(signal.SIGTERM)
        _, rest = child.communicate(timeout=CHILD_TIMEOUT)
        said += rest
        assert child.returncode == 0, said
        assert FALLBACKS.encode() in said
        assert b"Traceback" not in said
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(CHILD_TIMEOUT)


def read_until(stream: IO[bytes], pattern: bytes) -> bytes:
    """Read ``stream`` until what it said matches ``pattern``; fail at end of file or on timeout."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    said = b""
    while not re.search(pattern, said):
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no %r within %.0f s; said %r" % (pattern, CHILD_TIMEOUT, said)
        if select.select([stream], [], [], remaining)[0]:
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, "the server exited; it said %r" % said
            said += chunk
    return said


def test_server_pairs_relays_and_quits_as_on_windows(server_as_on_windows: int) -> None:
    """With only portable calls, two clients pair, chat, and /quit tells the partner (§7.1-§7.3, §8)."""
    alice, bob = pair(server_as_on_windows)
    alice.send("hi bob")
    bob.expect("hi bob")
    bob.send("hi alice")
    alice.expect("hi alice")
    bob.send("/quit")
    alice.expect("#user_quit")
    alice.expect_closed()
    bob.expect_closed()
