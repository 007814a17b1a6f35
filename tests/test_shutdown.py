"""Graceful shutdown (spec §10): every client is told, every socket closes.

In-process, ``server_close()`` is called with a client in every phase of §7
(choosing a nickname, waiting, chatting, in the middle of a flood); each
gets ``#server_shutdown`` and the close, and afterwards the process holds no
handler thread and no socket more than before the server started.

As a real process, ``python -m mechat serve --port 0`` is stopped with
SIGINT and with SIGTERM: the clients are told, the process exits with
status 0, and stderr holds no traceback.  The terminal client, run as a
process, shows the notice as a sentence and exits with status 0.
"""

import contextlib
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, ContextManager, Iterator, List, Optional

import pytest

from mechat.server import SHUTDOWN_GRACE, ChatServer
from tests.background import in_background
from tests.conftest import SHUTDOWN_WAIT, StartServer
from tests.leaks import Baseline
from tests.peers import TIMEOUT, Peer, meet_non_reader, pair, waiting
from tests.streams import numbered, read_to_close, send_until_closed

#: The worktree root, so that the subprocesses import this very mechat.
ROOT = Path(__file__).resolve().parent.parent

#: Seconds a subprocess may take to start or to stop before the test fails.
PROCESS_TIMEOUT = 10.0


def one_in_every_phase(port: int) -> List[Peer]:
    """Connect clients choosing a nickname, waiting and chatting; return them all."""
    choosing = Peer(port)
    choosing.send_raw(b"half a nick")
    alice, bob = pair(port)
    alice.send("hello")
    bob.expect("hello")
    return [choosing, alice, bob, waiting(port)]


def expect_shutdown(peers: List[Peer]) -> None:
    """Every peer gets #server_shutdown as its last line, then the close."""
    for peer in peers:
        peer.expect("#server_shutdown")
        peer.expect_closed()


def stopping(server: ChatServer) -> ContextManager[None]:
    """Stop ``server`` in another thread while the test reads; fail if server_close() never returns.

    server_close() waits for the clients to take #server_shutdown, and a
    client with megabytes still to read takes it only if someone reads
    meanwhile.
    """

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return in_background(stop, SHUTDOWN_WAIT)


def test_server_close_tells_every_phase_and_leaves_nothing(start_server: StartServer) -> None:
    """§10: server_close() sends #server_shutdown in every phase and leaves no thread or socket."""
    baseline = Baseline()
    server = start_server()
    peers = one_in_every_phase(server.port)
    server.shutdown()
    server.server_close()
    expect_shutdown(peers)
    for peer in peers:
        peer.close()
    baseline.settle()


def test_server_close_during_a_flood(start_server: StartServer) -> None:
    """§10: a flood in progress ends with #server_shutdown after the lines relayed so far."""
    baseline = Baseline()
    server = start_server(max_rate=0)
    alice, bob = pair(server.port)
    sent = numbered("alice", 200_000)
    flooder = threading.Thread(target=send_until_closed, args=(alice, sent), daemon=True)
    flooder.start()
    bob.expect(sent[0])  # the flood is under way
    with stopping(server):
        number = 1
        line = bob.read_line()
        while line != b"#server_shutdown":
            assert line == sent[number]
            number += 1
            line = bob.read_line()
        bob.expect_closed()
    flooder.join(timeout=TIMEOUT)
    alice.close()
    bob.close()
    baseline.settle()


#: Seconds alice's socket must stay unwritable before the test takes her
#: handler to be stuck writing to the client that does not read.
STUCK_AFTER = 1.0

#: Bound on what the test sends to get there: 40 MB, far more than loopback
#: socket buffers hold.
MAX_FLOOD = 40_000_000


def flood_until_stuck(peer: Peer) -> bool:
    """Send lines from ``peer`` until the server stops reading them; return False if it never does."""
    chunk = b"z" * 1023 + b"\n"
    peer.sock.setblocking(False)
    sent = 0
    while sent < MAX_FLOOD:
        if not select.select([], [peer.sock], [], STUCK_AFTER)[1]:
            peer.sock.setblocking(True)
            return True  # the server's handler has stopped reading us
        with contextlib.suppress(BlockingIOError):
            sent += peer.sock.send(chunk * 64)
    return False


def test_server_close_cuts_off_a_client_that_does_not_read(start_server: StartServer) -> None:
    """§9.4, §10: a handler stuck writing to a non-reader does not hold shutdown up; nothing is left.

    The reader whose handler is stuck is still owed #server_shutdown, so the
    server must cut off only the non-reader first.
    """
    baseline = Baseline()
    # A send timeout longer than the whole shutdown: only the cut-off of the
    # non-reader can free the handler stuck writing to it in time.
    server = start_server(max_rate=0, send_timeout=2 * SHUTDOWN_WAIT)
    server.shutdown_grace = SHUTDOWN_GRACE  # the real grace: what runs out here is what is tested
    alice = waiting(server.port, "alice")
    stuck = meet_non_reader(server.port, alice, "stuck")
    assert flood_until_stuck(alice), "the server never stopped reading alice"
    server.shutdown()
    server.server_close()
    alice.expect("#server_shutdown")
    alice.expect_closed()
    alice.close()
    stuck.close()
    baseline.settle()


@pytest.mark.parametrize("phase", ["nickname", "chatting"])
def test_burst_in_flight_ends_with_shutdown(start_server: StartServer, phase: str) -> None:
    """§6, §10: with a burst of refused lines in flight, #server_shutdown still comes, and last."""
    server = start_server(max_rate=0)
    flooder = pair(server.port)[0] if phase == "chatting" else Peer(server.port)
    flooder.send_raw(b"bad nick\x00\n" * 5000)
    flooder.read_line()  # the first refusal: the burst is being answered
    with stopping(server):
        received = read_to_close(flooder, SHUTDOWN_WAIT)
    assert received[-1:] == [b"#server_shutdown"] and not flooder.buffer  # the last line, then the close
    assert b"#server_shutdown" not in received[:-1]


# -- The real process ---------------------------------------------------------


class LineReader:
    """Read a subprocess's pipe in a thread, so that every wait for a line has a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.seen: List[str] = []
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)  # end of file

    def wait_for(self, pattern: str, timeout: float = PROCESS_TIMEOUT) -> "re.Match[str]":
        """Return the match of the first line that matches ``pattern``; fail at end of file or timeout."""
        while True:
            line = self.lines.get(timeout=timeout)
            assert line is not None, "end of output before %r; saw %r" % (pattern, self.seen)
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def rest(self, timeout: float = PROCESS_TIMEOUT) -> str:
        """Return everything up to end of file."""
        line = self.lines.get(timeout=timeout)
        while line is not None:
            self.seen.append(line)
            line = self.lines.get(timeout=timeout)
        return "".join(self.seen)


class Served:
    """A ``mechat serve`` process, its port and its log."""

    def __init__(self, process: "subprocess.Popen[str]") -> None:
        assert process.stderr is not None
        self.process = process
        self.log = LineReader(process.stderr)
        self.port = int(self.log.wait_for(r"listening on [\d.]+:(\d+)").group(1))


def run_mechat(*args: str, **popen: Any) -> "subprocess.Popen[str]":
    """Start ``python -m mechat`` with ``args``, importing this worktree's mechat."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "mechat", *args], cwd=ROOT, env=env, text=True, **popen)


def stop(process: "subprocess.Popen[str]") -> None:
    """Kill ``process`` if it is still running, and reap it."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=PROCESS_TIMEOUT)


@pytest.fixture
def served() -> Iterator[Served]:
    """Run ``python -m mechat serve --port 0``; kill it after the test if it is still up."""
    process = run_mechat("serve", "--port", "0", stderr=subprocess.PIPE)
    try:
        yield Served(process)
    finally:
        stop(process)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_process_cleanly(served: Served, signum: int) -> None:
    """§10: SIGINT or SIGTERM: every client gets #server_shutdown, exit status 0, no traceback."""
    peers = one_in_every_phase(served.port)
    served.process.send_signal(signum)
    expect_shutdown(peers)
    assert served.process.wait(timeout=PROCESS_TIMEOUT) == 0
    log = served.log.rest()
    assert "Traceback" not in log, log


def test_client_shows_shutdown_as_a_sentence(served: Served) -> None:
    """§10: the terminal client says the server is shutting down, in words, and exits 0."""
    client = run_mechat(
        "chat", "--port", str(served.port), "--nick", "alice", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert client.stdout is not None
        screen = LineReader(client.stdout)
        screen.wait_for("Waiting for a partner")
        served.process.send_signal(signal.SIGTERM)
        screen.wait_for("The server is shutting down")
        assert client.wait(timeout=PROCESS_TIMEOUT) == 0
    finally:
        stop(client)
    assert "#server_shutdown" not in screen.rest()
