"""Tests for mechat.connection: each trick asked of Linux, and the fallback used where it is missing.

Each fallback is switched on in this process by setting the module's own
flag, as importing it on Windows would (tests/test_portability.py runs the
whole server that way).  They run on real TCP connections over loopback.
"""

import contextlib
import hashlib
import queue
import select
import socket
import threading
from typing import Iterator, List, Tuple

import pytest

from mechat import connection, drain
from mechat.connection import (
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLOUT,
    POLLRDHUP,
    Connection,
    abort,
    poll_for,
    reset_by_peer,
    send_within,
    unacknowledged,
)
from mechat.drain import Drainer, SendTimeout
from mechat.matchmaker import Matchmaker
from tests.peers import TIMEOUT

#: Two ends of one TCP connection: (ours, theirs).
Pair = Tuple[socket.socket, socket.socket]

#: Bytes a test writes to a peer that reads nothing: far more than loopback buffers hold.
FLOOD = 10_000_000


@pytest.fixture
def tcp_pair() -> Iterator[Pair]:
    """Yield a connected pair of blocking TCP sockets on loopback: (ours, theirs)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        ours, _ = listener.accept()
    theirs.settimeout(None)
    ours.settimeout(None)
    yield ours, theirs
    ours.close()
    theirs.close()


@pytest.fixture(params=["poll", "select"])
def waiting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with poll(), then again with the select() that Windows has instead."""
    if request.param == "select":
        monkeypatch.setattr(connection, "HAVE_POLL", False)
    return str(request.param)


@pytest.fixture
def drainer() -> Iterator["Drops"]:
    """Yield a running drain thread, and the drops it reports; stop it afterwards."""
    drops = Drops()
    thread = Drainer(drops.drop)
    drops.drainer = thread
    yield drops
    thread.stop()


class Drops:
    """The drain thread's reports of connections it gave up on (§9.4), for a test to wait for."""

    drainer: Drainer

    def __init__(self) -> None:
        self.dropped: queue.Queue[Tuple[Connection, OSError]] = queue.Queue()

    def drop(self, conn: Connection, error: OSError) -> None:
        """Record one drop, as the server's callback would act on it."""
        self.dropped.put((conn, error))


@pytest.fixture
def without_msg_dontwait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send as on Windows: no MSG_DONTWAIT, and select() instead of poll()."""
    monkeypatch.setattr(connection, "MSG_DONTWAIT", 0)
    monkeypatch.setattr(connection, "HAVE_POLL", False)


def fill(sock: socket.socket) -> None:
    """Write to ``sock``, whose peer reads nothing, until its window and our buffer are full.

    A send() may find the buffer full just before an acknowledgement frees
    some of it, so write again until select() itself finds no room.
    """
    sock.setblocking(False)
    while select.select([], [sock], [], 0)[1]:
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.send(b"x" * 65536)


# -- poll_for ------------------------------------------------------------------


def test_poll_for_waits_for_input(waiting: str, tcp_pair: Pair) -> None:
    """Nothing to read is False at once; a byte that arrives wakes the wait."""
    ours, theirs = tcp_pair
    assert not poll_for(ours, POLLIN, 0)
    theirs.sendall(b"x")
    assert poll_for(ours, POLLIN, TIMEOUT)


def test_poll_for_wakes_a_reader_at_a_close(waiting: str, tcp_pair: Pair) -> None:
    """A reader waiting for input wakes when the peer closes, to read the end of file."""
    ours, theirs = tcp_pair
    theirs.close()
    assert poll_for(ours, POLLIN, TIMEOUT)
    assert ours.recv(1) == b""


def test_poll_for_sees_room_to_write(waiting: str, tcp_pair: Pair) -> None:
    """An idle socket has room; one whose peer reads nothing and whose buffer is full has none."""
    ours, _ = tcp_pair
    assert poll_for(ours, POLLOUT, 0)
    fill(ours)
    assert not poll_for(ours, POLLOUT, 0)


def test_only_poll_sees_a_hang_up_without_reading(waiting: str, tcp_pair: Pair, drainer: Drops) -> None:
    """Asked for a hang-up alone, poll() reports the FIN (Linux); select() can only say "not yet"."""
    ours, theirs = tcp_pair
    theirs.close()
    assert poll_for(ours, POLLIN, TIMEOUT)  # the FIN is here
    conn = Connection(ours, "test", drainer.drainer)
    assert conn.hung_up() is (waiting == "poll" and POLLRDHUP != 0)
    assert poll_for(ours, POLLHUP | POLLERR, 0) is False


# -- send_within ---------------------------------------------------------------


def assert_send_within_delivers_all(ours: socket.socket, theirs: socket.socket) -> None:
    """Write 5 MB, more than any window, with send_within() while a thread reads; all must arrive in order."""
    data = bytes(range(256)) * 20_000
    received: List[bytes] = []
    theirs.settimeout(TIMEOUT)

    def read_all() -> None:
        while sum(map(len, received)) < len(data):
            received.append(theirs.recv(65536))

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    send_within(ours, data, seconds=TIMEOUT)
    reader.join(TIMEOUT)
    whole = b"".join(received)
    assert len(whole) == len(data)
    assert hashlib.sha256(whole).digest() == hashlib.sha256(data).digest()  # no 5 MB diff on failure


def test_send_within_delivers_everything_without_msg_dontwait(
    without_msg_dontwait: None, tcp_pair: Pair
) -> None:
    """As on Windows, all of a block larger than any window arrives, in order."""
    assert_send_within_delivers_all(*tcp_pair)


def test_send_within_gives_up_without_msg_dontwait(without_msg_dontwait: None, tcp_pair: Pair) -> None:
    """As on Windows, a peer that reads nothing still makes the write fail by its deadline (§9.4)."""
    ours, _ = tcp_pair
    failures: List[BaseException] = []

    def send() -> None:
        try:
            send_within(ours, b"x" * FLOOD, seconds=0.2)
        except socket.timeout as error:
            failures.append(error)

    writer = threading.Thread(target=send, daemon=True)
    writer.start()
    writer.join(TIMEOUT)
    assert not writer.is_alive(), "a blocking send() overran the deadline"
    assert len(failures) == 1


# -- unacknowledged, and closing ------------------------------------------------


@pytest.mark.skipif(not connection.HAVE_TIOCOUTQ or not hasattr(socket, "TCP_INFO"), reason="Linux only")
def test_unacknowledged_counts_on_linux(tcp_pair: Pair) -> None:
    """Linux says how much a peer that reads nothing has yet to take; after a reset, nothing."""
    ours, theirs = tcp_pair
    assert unacknowledged(ours) == 0
    fill(ours)
    assert unacknowledged(ours) > 0
    abort(theirs)
    assert poll_for(ours, POLLERR, TIMEOUT)  # the reset has arrived
    assert reset_by_peer(ours)
    assert unacknowledged(ours) == 0


def test_unacknowledged_is_zero_without_tiocoutq(monkeypatch: pytest.MonkeyPatch, tcp_pair: Pair) -> None:
    """Where the OS cannot be asked (Windows), the answer is 0 even with bytes in flight."""
    ours, _ = tcp_pair
    monkeypatch.setattr(connection, "HAVE_TIOCOUTQ", False)
    fill(ours)
    assert unacknowledged(ours) == 0


def test_reset_by_peer_is_false_without_tcp_info(monkeypatch: pytest.MonkeyPatch, tcp_pair: Pair) -> None:
    """Where there is no TCP_INFO (Windows, macOS), a connection is never known to be reset."""
    ours, theirs = tcp_pair
    monkeypatch.delattr(socket, "TCP_INFO", raising=False)
    abort(theirs)
    assert poll_for(ours, POLLIN, TIMEOUT)
    assert not reset_by_peer(ours)


def test_close_does_not_linger_where_nothing_can_be_counted(
    monkeypatch: pytest.MonkeyPatch, tcp_pair: Pair, drainer: Drops
) -> None:
    """Without TIOCOUTQ, closing a connection whose peer reads nothing does not linger."""
    ours, _ = tcp_pair
    monkeypatch.setattr(connection, "HAVE_TIOCOUTQ", False)
    monkeypatch.setattr(connection, "CLOSE_LINGER", 3600.0)  # lingering would outlast the test
    fill(ours)
    conn = Connection(ours, "test", drainer.drainer)
    closer = threading.Thread(target=conn.close, daemon=True)
    closer.start()
    assert conn.finished.wait(TIMEOUT)


def test_abort_resets_the_connection(tcp_pair: Pair) -> None:
    """abort() ends with a reset, not a FIN: the peer's read fails instead of reading end of file (§8)."""
    ours, theirs = tcp_pair
    abort(theirs)
    assert select.select([ours], [], [], TIMEOUT)[0]
    with pytest.raises(ConnectionResetError):
        ours.recv(1)


# -- The send queue and the drain thread (§9.4, §9.6) ---------------------------------


def owe(matchmaker: Matchmaker, conn: Connection, data: bytes) -> None:
    """Put ``data`` in the outbox of ``conn`` and flush it, as a handler would."""
    conn.outbox.append(data)
    conn.flush(matchmaker)


@pytest.mark.parametrize("platform", ["MSG_DONTWAIT", "Windows"])
def test_a_flush_never_waits_and_the_drain_thread_writes_the_rest_in_order(
    platform: str, monkeypatch: pytest.MonkeyPatch, tcp_pair: Pair, drainer: Drops
) -> None:
    """§9.6: what the socket does not take is queued, and written, in order, as the client reads."""
    if platform == "Windows":
        monkeypatch.setattr(connection, "MSG_DONTWAIT", 0)
        monkeypatch.setattr(connection, "HAVE_POLL", False)
        monkeypatch.setattr(drain, "HAVE_POLL", False)
    ours, theirs = tcp_pair
    matchmaker = Matchmaker()
    conn = Connection(ours, "test", drainer.drainer, send_timeout=TIMEOUT, send_queue=FLOOD * 2)
    blocks = [hashlib.sha256(b"%d" % number).hexdigest().encode() * 512 for number in range(FLOOD // 32768)]
    for block in blocks:
        owe(matchmaker, conn, block)  # the peer reads nothing yet: this returns regardless
    assert conn.is_behind()
    expected = b"".join(blocks)
    received = bytearray()
    theirs.settimeout(TIMEOUT)
    while len(received) < len(expected):
        chunk = theirs.recv(65536)
        assert chunk, "closed after %d octets" % len(received)
        received += chunk
    assert bytes(received) == expected
    assert drainer.dropped.empty()


def test_a_send_queue_past_its_cap_is_refused_at_once(tcp_pair: Pair, drainer: Drops) -> None:
    """§9.6: a client more than the cap behind is dropped by the flush that finds it."""
    ours, _ = tcp_pair
    matchmaker = Matchmaker()
    conn = Connection(ours, "test", drainer.drainer, send_timeout=TIMEOUT, send_queue=65536)
    with pytest.raises(connection.SendQueueFull):
        for _ in range(FLOOD // 4096):
            owe(matchmaker, conn, b"x" * 4096)
    assert conn.abandon() and not conn.is_behind()


def test_the_drain_thread_drops_a_queue_that_does_not_move(tcp_pair: Pair, drainer: Drops) -> None:
    """§9.4: a client that reads nothing for the send timeout is reported to be dropped."""
    ours, _ = tcp_pair
    matchmaker = Matchmaker()
    conn = Connection(ours, "test", drainer.drainer, send_timeout=0.2, send_queue=FLOOD * 2)
    while not conn.is_behind():
        owe(matchmaker, conn, b"x" * 65536)
    dropped, error = drainer.dropped.get(timeout=TIMEOUT)
    assert dropped is conn and isinstance(error, SendTimeout)


#: Seconds a read waits for the drain thread's turn to come: a hang detector only.
TURNS_DEADLINE = 30.0


def test_select_takes_turns_when_more_sockets_are_behind_than_it_may_ask_about(
    monkeypatch: pytest.MonkeyPatch, drainer: Drops
) -> None:
    """Windows: select() asks about SELECT_LIMIT sockets a pass, starting further on each, so all drain."""
    monkeypatch.setattr(drain, "HAVE_POLL", False)
    monkeypatch.setattr(drain, "SELECT_LIMIT", 2)
    matchmaker = Matchmaker()
    pairs = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        for _ in range(5):
            theirs = socket.create_connection(listener.getsockname(), timeout=TURNS_DEADLINE)
            ours, _ = listener.accept()
            pairs.append((ours, theirs))
    try:
        # The test reads one client at a time, so the others' queues stand still
        # meanwhile: on a busy machine for longer than TIMEOUT, and a drop is
        # not what this test is about.
        connections = [
            Connection(ours, "test", drainer.drainer, send_timeout=TURNS_DEADLINE, send_queue=FLOOD)
            for ours, _ in pairs
        ]
        for conn in connections:
            while not conn.is_behind():
                owe(matchmaker, conn, b"x" * 65536)
        for conn, (_, theirs) in zip(connections, pairs):
            while conn.is_behind():  # read until the drain thread has written it all
                assert theirs.recv(1 << 20), "closed while behind"
        assert drainer.dropped.empty()
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_a_connection_handed_over_after_the_drain_thread_stopped_is_ignored(tcp_pair: Pair) -> None:
    """A straggler's flush after shutdown neither fails nor restarts anything: its close() writes the rest."""
    ours, _ = tcp_pair
    stopped = Drainer(lambda conn, error: None)
    stopped.stop()
    conn = Connection(ours, "test", stopped, send_timeout=TIMEOUT, send_queue=FLOOD * 2)
    while not conn.is_behind():
        owe(Matchmaker(), conn, b"x" * 65536)
