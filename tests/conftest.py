"""Fixtures: a real ChatServer on 127.0.0.1 port 0, run in a thread, and the wire check."""

import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple, Type

import pytest
import trustme

from mechat import protocol
from mechat.protocol import Event, Phase
from mechat.server import ChatHandler, ChatServer, Limits
from tests import wire
from tests.certificates import Files, issue
from tests.leaks import Baseline
from tests.peers import Peer, pair

StartServer = Callable[..., ChatServer]

#: A cell of the state table (§7.5): a phase and an event.
Cell = Tuple[Phase, Event]

#: Seconds a test server's shutdown waits for its clients to take their last
#: notice, in place of the 1 s of §10.  A test often calls server_close()
#: and only then reads; on a busy machine the handlers may not even have
#: been scheduled within 1 s.  The wait ends as soon as every handler has
#: finished, so a passing test never spends it; a test of the cut-off itself
#: sets the real grace again.
SHUTDOWN_WAIT = 30.0


class CheckedServer(ChatServer):
    """A ChatServer that keeps the traceback of every handler that failed.

    A handler's exception is a bug in the server (an event with no cell in
    §7.5 raises one), yet socketserver only reports it and goes on; the
    fixture makes it fail the test that caused it.  socketserver reports it
    after the handler has closed its socket, so the fixture first waits for
    every handler thread to be done with it.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.failures: List[str] = []
        self._handlers_running = 0
        self._handler_done = threading.Condition()  # notified as each handler thread ends

    def process_request(self, request: Any, client_address: Any) -> None:
        """Count the handler thread before it starts, so no wait can miss it."""
        with self._handler_done:
            self._handlers_running += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection as usual, and count the thread out when it ends."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._handler_done:
                self._handlers_running -= 1
                self._handler_done.notify_all()

    def handle_error(self, request: object, client_address: object) -> None:
        """Keep the traceback, then log it as the server does."""
        self.failures.append(traceback.format_exc())
        super().handle_error(request, client_address)

    def failures_once_done(self, timeout: float) -> List[str]:
        """Wait, at most ``timeout`` seconds, for every handler thread to end; return the failures."""
        with self._handler_done:
            self._handler_done.wait_for(lambda: not self._handlers_running, timeout)
        return self.failures


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start servers with the given limits (and handler class); stop them all after the test.

    The test fails if any handler of theirs raised.
    """
    running: List[Tuple[CheckedServer, threading.Thread]] = []

    def start(handler: Type[ChatHandler] = ChatHandler, **limits: Any) -> ChatServer:
        server = CheckedServer(("127.0.0.1", 0), Limits(**limits), handler)
        server.shutdown_grace = server.shutdown_cutoff = SHUTDOWN_WAIT
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    failures = [failure for server, _ in running for failure in server.failures_once_done(SHUTDOWN_WAIT)]
    assert not failures, "a handler raised:\n" + failures[0]


@pytest.fixture
def server(start_server: StartServer) -> ChatServer:
    """One server with the default limits."""
    return start_server()


@pytest.fixture(autouse=True)
def close_peers() -> Iterator[None]:
    """Close every test Peer a test leaves open."""
    yield
    for peer in Peer.opened:
        peer.close()
    Peer.opened.clear()


@pytest.fixture
def checked_server(start_server: StartServer) -> Iterator[ChatServer]:
    """A server that must still pair newcomers after the test, and leak nothing.

    After the test every Peer is closed, and the process's threads and
    descriptors must come back to what they were before the first client
    connected; then a fresh pair must still chat (the server survived
    whatever the test did), and leave nothing behind either.
    """
    server = start_server(max_rate=0)
    baseline = Baseline()
    yield server
    for peer in Peer.opened:
        peer.close()
    baseline.settle()  # every handler has left the Matchmaker, so nobody is waiting
    survivors = pair(server.port, "fresh1", "fresh2")
    survivors[0].send("still serving")
    survivors[1].expect("still serving")
    for peer in survivors:
        peer.close()
    baseline.settle()


# -- The wire check (tests/wire.py) ---------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker that exempts a test from the wire check."""
    config.addinivalue_line(
        "markers", "unchecked_wire: the test runs a deliberately broken server; its lines are not checked"
    )


@pytest.fixture(scope="session")
def wire_log() -> Iterator[wire.WireLog]:
    """Record every line on the wire, the whole session long."""
    with wire.SESSION.installed() as log:
        yield log


@pytest.fixture(autouse=True)
def wire_check(request: pytest.FixtureRequest, wire_log: wire.WireLog) -> Iterator[None]:
    """After each test, hold the lines it put on the wire to spec/mechat.abnf."""
    yield
    if request.node.get_closest_marker("unchecked_wire"):
        wire_log.discard()
    else:
        wire_log.check()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many wire lines the grammar checked, and how many it could not."""
    log = wire.SESSION
    terminalreporter.write_line(
        f"wire check: {log.total.client_lines} client lines judged by the server, "
        f"{log.total.server_lines} lines received and {log.total.queued_lines} lines queued by the "
        "server matched against spec/mechat.abnf "
        f"({log.sent} lines sent by test peers; {log.too_long} over-long lines; "
        f"{log.total.skipped} lines over the per-test budget, unchecked)"
    )


@pytest.fixture
def cells_taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[List[Cell]]:
    """Record every cell the Matchmaker looks up while the test runs."""
    taken: List[Cell] = []
    real = protocol.next_phase

    def recording(phase: Phase, event: Event) -> Phase:
        taken.append((phase, event))
        return real(phase, event)

    monkeypatch.setattr("mechat.matchmaker.next_phase", recording)
    yield taken


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    """A certificate authority for one test module's TLS tests."""
    return trustme.CA()


@pytest.fixture
def files(authority: trustme.CA, tmp_path: Path) -> Files:
    """A certificate for 127.0.0.1 and localhost, its key and its authority, as files."""
    return issue(authority, tmp_path)
