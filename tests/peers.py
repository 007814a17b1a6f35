"""Test peers: real sockets on 127.0.0.1 that check every line they receive.

A :class:`Peer` is a fake client in the style of 500 Lines' ``cluster``
tests: it fails on any line nobody expected, so a test that ignores an
unexpected reply cannot pass by accident.  Every read has a deadline; no
test ever sleeps to wait for the server.
"""

import collections
import socket
import time
from typing import Callable, ClassVar, Deque, List, Optional, Union

from mechat.connection import POLLERR, POLLHUP, POLLIN, POLLRDHUP, abort, poll_for
from mechat.protocol import LF, LineCutter
from mechat.server import ChatServer, connection_of

#: Seconds any single expected line may take to arrive.
TIMEOUT = 5.0

#: Seconds of nickname timeout (§9.2) for a server on which some client
#: must be read before that timer fires: it starts when the connection is
#: accepted, and on a busy machine the handler's thread may start late.
#: Where only silence is tested, a fraction of a second will do.
NICKNAME_ROOM = 2.0

#: Called with (the Peer, "c2s" or "s2c", line) for every whole line a Peer
#: sends or receives; the wire-check fixture in conftest.py installs it.  The
#: Peer is passed so that the check can follow each connection's phase.
Recorder = Callable[["Peer", str, bytes], None]


class Peer:
    """One test client connected to a server."""

    recorder: Optional[Recorder] = None
    #: Every Peer not yet closed; conftest.py closes them after each test.
    opened: ClassVar[List["Peer"]] = []

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.incoming = LineCutter()  # what the server sent, cut exactly as sent
        self.unread: Deque[bytes] = collections.deque()  # whole lines received, not yet read
        self.eof = False
        Peer.opened.append(self)

    # -- Sending --------------------------------------------------------------

    def send(self, *lines: Union[str, bytes]) -> None:
        """Send each line with an LF after it, all in one write."""
        encoded = [line.encode("utf-8") if isinstance(line, str) else line for line in lines]
        for line in encoded:
            self.record("c2s", line)
        self.sock.sendall(b"".join(line + LF for line in encoded))

    def send_raw(self, data: bytes) -> None:
        """Send bytes exactly as given: no LF added, nothing recorded."""
        self.sock.sendall(data)

    # -- Receiving ------------------------------------------------------------

    def read_line(self, timeout: float = TIMEOUT) -> bytes:
        """Return the next line without its LF; fail on timeout or end of file."""
        line = self.next_line(timeout)
        assert line is not None, "connection closed; still buffered: %r" % self.buffer
        return line

    def next_line(self, timeout: float = TIMEOUT) -> Optional[bytes]:
        """Return the next line, or None at end of file; fail on timeout."""
        deadline = time.monotonic() + timeout
        while not self.unread:
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no line within %.1f s; buffered: %r" % (timeout, self.buffer[:200])
            # Wait with poll, not settimeout: the socket's timeout is shared
            # with a thread that may be sending on it at the same moment.
            if not poll_for(self.sock, POLLIN, remaining):
                continue
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.eof = not data
            self.take(data)
        line = self.unread.popleft()
        self.record("s2c", line)
        return line

    def take(self, data: bytes) -> None:
        """Add bytes received from the server; read_line then returns its lines."""
        self.unread.extend(self.incoming.cut(data))

    @property
    def buffer(self) -> bytes:
        """Every octet received and not yet read, as it came: for reports, and to check a close left none."""
        return b"".join(line + LF for line in self.unread) + self.incoming.unterminated

    def expect(self, *lines: Union[str, bytes], timeout: float = TIMEOUT) -> None:
        """Read one line per argument and fail unless each is exactly as given."""
        for expected in lines:
            want = expected.encode("utf-8") if isinstance(expected, str) else expected
            got = self.read_line(timeout)
            assert got == want, "expected %r, got %r" % (want, got)

    def expect_closed(self, timeout: float = TIMEOUT) -> None:
        """Fail unless the server closes the connection with nothing more to say."""
        line = self.next_line(timeout)
        assert line is None, "expected the connection to close, got %r" % line
        assert not self.buffer, "unterminated bytes before close: %r" % self.buffer

    def record(self, direction: str, line: bytes) -> None:
        """Hand a whole line to the wire recorder, if one is installed."""
        if Peer.recorder is not None:
            Peer.recorder(self, direction, line)

    # -- Ending ---------------------------------------------------------------

    def reset(self) -> None:
        """Abort the connection with a TCP reset (SO_LINGER 0), not a FIN."""
        abort(self.sock)

    def close(self) -> None:
        """Close the connection normally."""
        self.sock.close()


def waiting(port: int, nickname: str = "wanda") -> Peer:
    """Connect a peer, choose ``nickname`` and see it wait for a partner (§7.1)."""
    peer = Peer(port)
    peer.send(nickname)
    peer.expect("#wait")
    return peer


def meet(port: int, waiter: Peer, waiter_nickname: str, nickname: str) -> Peer:
    """Connect a peer as ``nickname`` and see it matched with ``waiter``, each named to the other (§7.1)."""
    newcomer = Peer(port)
    newcomer.send(nickname)
    newcomer.expect("#matched_to_" + waiter_nickname)
    waiter.expect("#matched_to_" + nickname)
    return newcomer


def meet_non_reader(port: int, waiter: Peer, nickname: str) -> Peer:
    """Connect a peer as ``nickname`` that will never read, and see ``waiter`` matched with it (§7.1)."""
    non_reader = Peer(port)
    non_reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills quickly
    non_reader.send(nickname)
    waiter.expect("#matched_to_" + nickname)
    return non_reader


def pair(port: int, first: str = "alice", second: str = "bob") -> List[Peer]:
    """Connect two peers and see them matched, the first one after a #wait."""
    waiter = waiting(port, first)
    return [waiter, meet(port, waiter, first, second)]


def expect_refused(sender: Peer, partner: Peer, line: Union[str, bytes], refusal: str) -> None:
    """Send ``line`` and one more: ``refusal`` comes back, and the partner gets the second line only."""
    sender.send(line, "after")
    sender.expect(refusal)
    partner.expect("after")


def in_room(port: int, room: str, *nicknames: str) -> List[Peer]:
    """Connect a peer for each nickname, one after another, into ``room``, which the first creates (§5.10).

    Each newcomer waits alone first (everyone before it is in the room, not
    the queue), then joins; every member already there is told it entered.
    """
    members: List[Peer] = []
    for nickname in nicknames:
        peer = waiting(port, nickname)
        if not members:
            peer.send("/create " + room)
            peer.expect("#room_created_" + room)
        peer.send("/join " + room)
        peer.expect("#joined_" + room)
        for member in members:
            member.expect("#entered_%s_%s" % (room, nickname))
        members.append(peer)
    return members


def until_heard_leaving(server: ChatServer, nickname: str, timeout: float = TIMEOUT) -> None:
    """Wait until the server's socket for ``nickname`` shows its FIN or reset, or it is gone.

    A close or a reset crosses even the loopback on the kernel's time, not
    the closer's: on a busy machine the kernel may hand the packet to a
    thread of its own, and a later client's line can overtake it.  No
    server can act on a hang-up its socket does not show yet (§7.2), so a
    test that a newcomer is not paired with a ghost waits for this first.
    Unlike waiting for the ghost to be gone, this leaves the race between
    the ghost's handler and the newcomer's open, which is what such a test
    is for.  Where poll() has no POLLRDHUP (it is Linux's), the server
    learns of a FIN only when the handler reads it, so this waits for that.
    """
    matchmaker = server.matchmaker
    with matchmaker._changed:
        chatters = [chatter for chatter in matchmaker._connected if chatter.nickname == nickname]
        if chatters and not POLLRDHUP:  # no poll() can show a FIN here: wait for the handler
            gone = matchmaker._changed.wait_for(lambda: chatters[0] not in matchmaker._connected, timeout)
            assert gone, "the server still holds %s after %s s" % (nickname, timeout)
            return
    if not chatters:
        return
    conn = connection_of(chatters[0])
    with conn._life_lock:  # the handler may not close, and free the descriptor, meanwhile
        if not conn._closed:
            shown = poll_for(conn.sock, POLLRDHUP | POLLHUP | POLLERR, timeout)
            assert shown, "the server's socket for %s showed no hang-up in %s s" % (nickname, timeout)
