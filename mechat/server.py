"""The mechat server: one thread per connection, one Matchmaker between them.

The shape is CPython's ``socketserver``: :class:`ChatServer` is a
``ThreadingTCPServer`` that accepts connections and starts a thread for each,
and :class:`ChatHandler` is the code that thread runs.  A handler reads its
own socket and nothing else::

    client A --> A's handler --> Matchmaker.relay() --> A's partner's outbox
                                                         |
    client B <-------------- B.flush() <-----------------+

Reading is the only thing a handler waits for.  Everything it decides goes
through the :class:`~mechat.matchmaker.Matchmaker`, which appends the lines
each connection is owed to that connection's outbox, under its one lock.
Then, with the lock released, the handler writes those outboxes out: its own
(replies) and its partner's (relayed lines).  Writing someone else's socket
takes that connection's send lock, so two threads never interleave their
bytes on one socket, and the outbox order survives onto the wire.

What keeps one bad client from hurting the others (spec §9):

* a line is cut at the read, so memory per connection is bounded (§2.3);
* every write has a deadline (send_within), so a client that stops reading is disconnected
  instead of blocking its partner's thread for ever (§9.4);
* any error writing to one client ends that client's session only;
* lines over the rate are refused with a notice (§9.5);
* a connection that never sends a nickname is timed out (§9.2).
"""

import contextlib
import fcntl
import logging
import select
import socket
import socketserver
import struct
import termios
import threading
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, Iterator, List, Optional, Set, Tuple

from mechat import protocol
from mechat.flood import TokenBucket
from mechat.matchmaker import Chatter, Matchmaker
from mechat.protocol import Event, Line, Notice, Phase, ProtocolError, notice, parse_line

log = logging.getLogger(__name__)

#: Bytes asked of each recv().  Several lines arrive per call under load,
#: and all of them are relayed with one write (see ChatHandler.read_lines).
RECV_SIZE = 65536

#: Seconds that shutdown waits for clients to take their last notice (§10).
SHUTDOWN_GRACE = 1.0

#: Seconds shutdown then gives the handlers of clients it had to cut off,
#: twice: first those a write is stuck on, then any still open.  With the
#: grace, the whole stop stays under the 2 s that §10 promises.
SHUTDOWN_CUTOFF = 0.25

#: Seconds a closing connection keeps reading a client that is still sending,
#: so that its last notice is not lost to a reset (see Connection.close).
CLOSE_LINGER = 0.5

#: Seconds between two looks at what a closing connection has yet to deliver.
LINGER_POLL = 0.005

#: Linux's tcpi_state for a connection that is over (include/net/tcp_states.h).
TCP_CLOSE = 7


@dataclass(frozen=True)
class Limits:
    """Every limit of spec §9, with its default."""

    max_line: int = protocol.MAX_LINE_OCTETS
    nickname_timeout: float = protocol.DEFAULT_NICKNAME_TIMEOUT
    max_clients: int = protocol.DEFAULT_MAX_CLIENTS
    send_timeout: float = protocol.DEFAULT_SEND_TIMEOUT
    max_rate: float = protocol.DEFAULT_MAX_RATE


class Connection(Chatter):
    """A Chatter with a socket: writes what it is owed, and can be hung up."""

    def __init__(
        self, sock: socket.socket, address: str, send_timeout: float = protocol.DEFAULT_SEND_TIMEOUT
    ) -> None:
        super().__init__(address)
        self.sock = sock
        self.send_timeout = send_timeout
        self._send_lock = threading.Lock()  # one writer at a time
        self._life_lock = threading.Lock()  # close() versus hang_up()
        self._closed = False
        self._cut_off = False  # hung up for writing too: nothing more will be acknowledged
        #: Set once the socket is closed, so that shutdown can wait for the last write (§10).
        self.finished = threading.Event()

    def flush(self, matchmaker: Matchmaker) -> None:
        """Write everything this connection is owed; raise OSError if it can't be."""
        with self._send_lock:
            owed = matchmaker.take_owed(self)
            if owed and not self._closed:
                send_within(self.sock, owed, self.send_timeout)

    def is_being_written(self) -> bool:
        """Tell whether some thread is writing to this connection at this moment."""
        return self._send_lock.locked()

    def hung_up(self) -> bool:
        """Tell, without reading, whether the client has closed or reset.

        poll() reports POLLRDHUP once the client's FIN has arrived and
        POLLHUP or POLLERR after a reset, while the unread bytes stay where
        they are for the handler.  Where POLLRDHUP does not exist (it is
        Linux's), the answer is "not yet", and the handler finds out itself.
        """
        gone = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR
        with self._life_lock:
            return self._closed or poll_for(self.sock, gone, 0)

    def hang_up(self, how: int = socket.SHUT_RDWR) -> None:
        """Shut the socket from another thread, which wakes its handler's recv()."""
        with self._life_lock:
            if not self._closed:
                self._cut_off = self._cut_off or how != socket.SHUT_RD
                with contextlib.suppress(OSError):  # already reset by the peer
                    self.sock.shutdown(how)

    def close(self) -> None:
        """Close the socket once no other thread is writing to it, without losing the last line."""
        with self._send_lock, self._life_lock:
            self._closed = True  # from now on no other thread writes to it or shuts it
        if not self._cut_off:  # a client cut off will acknowledge nothing more
            self._linger(CLOSE_LINGER)
        self.sock.close()
        self.finished.set()

    def _linger(self, seconds: float) -> None:
        """Wait, at most ``seconds``, until the client has acknowledged every byte written.

        Closing a socket that holds unread input makes the kernel send a
        reset and drop every byte the client has not yet acknowledged, such
        as the final #user_quit or #server_shutdown (§8, §10).  Once they are
        acknowledged they are the client's, reset or not.  Meanwhile read
        and discard what it sends, so that a client stuck in sending can get
        to reading.  Nothing signals the acknowledgement, hence the short poll.
        """
        deadline = time.monotonic() + seconds
        self.sock.setblocking(False)
        while unacknowledged(self.sock) and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.sock.recv(RECV_SIZE)
            time.sleep(LINGER_POLL)


def send_within(sock: socket.socket, data: bytes, seconds: float) -> None:
    """Send all of ``data``, or raise socket.timeout if that takes over ``seconds`` (§9.4).

    This is sendall() with a deadline of its own, for a socket that blocks
    and has no Python timeout; with one, send() would wait out that timeout
    itself, and the deadline here would not hold.  A Python socket timeout
    costs a poll() before every recv() and send(): two system calls where
    one would do, each releasing and retaking the GIL.  Here each send() is
    kept from blocking by MSG_DONTWAIT, and poll() waits only when the
    client's receive window is full.  Measured, ping-pong of 100 pairs on
    one CPU (median of 2): 19.0k -> 28.2k round trips/s, p99 20 -> 7.2 ms.
    """
    deadline = time.monotonic() + seconds
    unsent = memoryview(data)
    while unsent:
        try:
            unsent = unsent[sock.send(unsent, socket.MSG_DONTWAIT) :]
            continue
        except BlockingIOError:
            pass  # the client's window is full: wait until it reads
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poll_for(sock, select.POLLOUT, remaining):
            raise socket.timeout("sending took over %.1f s" % seconds)


def poll_for(sock: socket.socket, events: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for one of ``events`` on ``sock``; return False if none came.

    A hang-up or an error (POLLHUP, POLLERR) always counts, so a caller
    waiting to read or write wakes, and finds out from recv() or send().
    """
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(seconds * 1000))


def unacknowledged(sock: socket.socket) -> int:
    """Return how many bytes written to ``sock`` may still reach the peer; 0 where the OS won't say."""
    try:
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_CLOSE:
            return 0  # reset by the peer: nothing more will reach it
        answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # SIOCOUTQ on Linux
    except (OSError, AttributeError):
        return 0
    return int(struct.unpack("i", answer)[0])


def connection_of(chatter: Chatter) -> Connection:
    """Return a chatter as the Connection the server made it."""
    assert isinstance(chatter, Connection), chatter
    return chatter


class ChatHandler(socketserver.BaseRequestHandler):
    """Serve one connection from its nickname to its close (spec §7)."""

    server: "ChatServer"
    request: socket.socket

    def setup(self) -> None:
        """Prepare the connection and the per-connection state."""
        self.matchmaker = self.server.matchmaker
        self.limits = self.server.limits
        self.conn = Connection(self.request, "%s:%s" % self.client_address[:2], self.limits.send_timeout)
        self.owed: Set[Chatter] = set()  # whose outbox to write at the next flush point
        self.batch: List[bytes] = []  # messages read but not yet given to the Matchmaker
        self.over = False  # the session has ended: read no more (§7.4)
        self.flood = TokenBucket(self.limits.max_rate)
        #: Seconds read_lines() waits for input before it yields None; None
        #: waits for ever.  The socket itself blocks, with no Python timeout,
        #: so every write can rely on send_within()'s deadline.
        self.read_timeout: Optional[float] = self.limits.nickname_timeout
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # DEBUG, not INFO: the nickname line that follows names the address
        # too, and at 10,000 connections each INFO line costs about 9 us of
        # the one core (with gc tuning: all matched in 2.25 -> 2.00 s).
        log.debug("%s connected", self.conn.address)

    def handle(self) -> None:
        """Admit, name, pair and relay until the session ends."""
        if not self.matchmaker.arrive(self.conn):
            log.warning("%s refused: server full or closing", self.conn.address)
            self.matchmaker.owe(self.conn, notice(Notice.SERVER_FULL))
            return
        lines = self.read_lines()
        if self.choose_nickname(lines):
            self.read_timeout = None  # a chatter may stay quiet as long as it likes (§7.3)
            self.chat(lines)

    def finish(self) -> None:
        """Leave the Matchmaker, tell the partner, and close (spec §8)."""
        partner = self.matchmaker.leave(self.conn)
        if partner is not None:
            log.info("%s (%s) left; telling %s", self.conn.address, self.conn.nickname, partner.nickname)
            self.deliver(partner)
            # Wake the partner's handler to close it; not SHUT_RDWR, whose FIN
            # makes the kernel answer a still-sending partner with a reset that
            # can drop the #user_quit just written (its close() lingers instead).
            connection_of(partner).hang_up(socket.SHUT_RD)
        self.deliver(self.conn)
        self.conn.close()
        log.info("%s (%s) closed", self.conn.address, self.conn.nickname or "no nickname")

    # -- Reading -------------------------------------------------------------

    def read_lines(self) -> Iterator[Optional[Line]]:
        """Yield each line as it arrives, and None whenever no more is buffered.

        None is the flush point: the caller writes what it owes before this
        generator blocks in recv() again, so all the lines of one recv() are
        answered or relayed with one write.  Waiting longer than
        ``self.read_timeout`` for input also yields None.  The generator ends
        at end of file or on a reset.
        """
        buffer = protocol.LineBuffer(self.limits.max_line)
        while True:
            if self.read_timeout is not None and not poll_for(self.request, select.POLLIN, self.read_timeout):
                yield None
                continue
            try:
                data = self.request.recv(RECV_SIZE)
            except OSError:
                return  # reset, or hung up by another thread (§8)
            if not data:
                return
            yield from buffer.feed(data)
            yield None

    # -- Phases ----------------------------------------------------------------

    def choose_nickname(self, lines: Iterator[Optional[Line]]) -> bool:
        """Read lines until one is a nickname (§7.1); return False if the session ends."""
        deadline = time.monotonic() + self.limits.nickname_timeout
        for line in lines:
            if line is None:
                self.flush_owed()
                if self.session_over():
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self.time_out()
                self.read_timeout = remaining
                continue
            parsed = self.parse(Phase.NICKNAME, line)
            if parsed is None:
                if self.over:
                    return False
                continue
            if parsed.event is Event.QUIT:
                return False
            self.join(parsed.nickname)
            return True
        return False

    def chat(self, lines: Iterator[Optional[Line]]) -> None:
        """Relay, rename and refuse until /quit, a hang-up or the partner leaves (§7.2-§7.3)."""
        for line in lines:
            if line is None:
                self.pass_on()
                self.flush_owed()
                if self.session_over():
                    break
                continue
            parsed = self.parse(Phase.CHATTING, line)
            if parsed is None:
                if self.over:
                    break
                continue
            if not self.dispatch[parsed.event](self, parsed, line):
                break
        self.pass_on()
        self.flush_owed()

    # -- What a line can do ----------------------------------------------------

    def parse(self, phase: Phase, line: Line) -> Optional[protocol.Parsed]:
        """Return what ``line`` means, or None after owing the refusal (§6)."""
        if not self.flood.allow():
            self.refuse(Notice.RATE_LIMITED)
            return None
        try:
            return parse_line(phase, line)
        except ProtocolError as error:
            self.refuse(error.notice)
            return None

    def refuse(self, reply: Notice) -> None:
        """Owe our own client a refusal notice, unless its session is over.

        The messages batched before the refused line are passed on first; if
        that finds the session over, the refusal is not owed either, and
        ``self.over`` tells the caller to stop reading (§7.4).
        """
        if self.pass_on() and self.matchmaker.owe_reply(self.conn, notice(reply)):
            self.owed.add(self.conn)
        else:
            self.over = True

    def session_over(self) -> bool:
        """Tell whether the session has closed, by this thread or another (§7.4).

        Another thread closes it when it drops this client or its partner,
        and so does this one when a write to its own client fails (§9.4).
        Once closed, nothing more is read: a client that has been dropped
        may still have megabytes on the way, and parsing them would cost
        the CPU that the clients still connected need.  Asked at each flush
        point, so at most the rest of one recv() is looked at after the
        decision.
        """
        if not self.over:
            self.over = self.matchmaker.phase_of(self.conn) is Phase.CLOSED
        return self.over

    def join(self, nickname: str) -> None:
        """Enter the matchmaker's queue, or pair with the longest waiter (§7.1)."""
        partner = self.matchmaker.join(self.conn, nickname)
        self.owed.add(self.conn)
        if partner is None:
            log.info("%s (%s) is waiting", self.conn.address, nickname)
            return
        self.owed.add(partner)
        log.info(
            "%s (%s) matched with %s (%s)", self.conn.address, nickname, partner.address, partner.nickname
        )

    def relay(self, parsed: protocol.Parsed, line: Line) -> bool:
        """Queue a message for the partner, verbatim; pass_on() relays the batch (§7.3)."""
        assert isinstance(line, bytes)  # parse_line accepted it, so it is not TOO_LONG
        self.batch.append(line + protocol.LF)
        return True

    def pass_on(self) -> bool:
        """Relay the messages batched since the last call; return False once the session is over.

        Batching the lines of one recv() takes the Matchmaker's lock once
        instead of once a line.  Anything else a line does (a refusal, a
        rename, /quit) passes the batch on first, so the order is kept.
        Measured, flood of 100 pairs with 64-octet lines on one CPU (median
        of 3): server CPU per line 3.75 -> 2.42 us, 283k -> 450k lines/s.
        """
        if self.batch:
            recipient = self.matchmaker.relay_lines(self.conn, self.batch)
            self.batch = []
            if recipient is None:
                self.over = True
            else:
                self.owed.add(recipient)
        return not self.over

    def rename(self, parsed: protocol.Parsed, line: Line) -> bool:
        """Change our nickname and tell both sides (§5.2)."""
        if not self.pass_on():
            return False
        old = self.conn.nickname
        partner = self.matchmaker.rename(self.conn, parsed.nickname)
        self.owed.add(self.conn)
        if partner is not None:
            self.owed.add(partner)
        log.info("%s renamed %s to %s", self.conn.address, old, parsed.nickname)
        return True

    def quit(self, parsed: protocol.Parsed, line: Line) -> bool:
        """End the session; finish() tells the partner (§5.1)."""
        self.pass_on()
        log.info("%s (%s) sent /quit", self.conn.address, self.conn.nickname)
        return False

    dispatch: ClassVar[Dict[Event, Callable[["ChatHandler", protocol.Parsed, Line], bool]]] = {
        Event.MESSAGE: relay,
        Event.RENAME: rename,
        Event.QUIT: quit,
    }

    def time_out(self) -> bool:
        """Tell a client that never chose a nickname why it is closed (§9.2)."""
        log.warning("%s sent no nickname in %.0f s", self.conn.address, self.limits.nickname_timeout)
        self.matchmaker.owe_reply(self.conn, notice(Notice.NICKNAME_TIMEOUT))
        return False

    # -- Writing ---------------------------------------------------------------

    def flush_owed(self) -> None:
        """Write every outbox we added to since the last flush point."""
        owed, self.owed = self.owed, set()
        for chatter in owed:
            self.deliver(chatter)

    def deliver(self, chatter: Chatter) -> None:
        """Write what ``chatter`` is owed; disconnect it if it cannot take it (§9.4)."""
        connection = connection_of(chatter)
        try:
            connection.flush(self.matchmaker)
        except OSError as error:
            self.drop(connection, error)

    def drop(self, chatter: Connection, error: OSError) -> None:
        """Disconnect a client we could not write to, maybe our own; its partner is told (§9.4)."""
        log.warning("%s (%s) dropped: %s", chatter.address, chatter.nickname, error.__class__.__name__)
        partner = self.matchmaker.leave(chatter)
        chatter.hang_up()
        if partner is not None:
            assert isinstance(partner, Connection)
            self.owed.add(partner)
            # Wake the partner's handler, which ends its session and closes it (§8);
            # the partner may be idle in recv(), and would otherwise stay open.
            partner.hang_up(socket.SHUT_RD)


class ChatServer(socketserver.ThreadingTCPServer):
    """A ThreadingTCPServer whose handlers meet in one Matchmaker."""

    allow_reuse_address = True
    daemon_threads = True  # stragglers never keep the process alive
    block_on_close = False  # server_close() waits through the Matchmaker
    #: Connections the kernel may queue before accept(); socketserver's
    #: default of 5 resets clients when a class connects at once.
    request_queue_size = 4096
    #: Seconds server_close() gives clients to take #server_shutdown, then
    #: each round of cutting off (§10).  Class attributes, as socketserver's
    #: own settings are: a test on a busy machine gives its server longer,
    #: since a client there may be slow to read for no fault of the server's.
    shutdown_grace = SHUTDOWN_GRACE
    shutdown_cutoff = SHUTDOWN_CUTOFF

    def __init__(
        self,
        address: Tuple[str, int],
        limits: Limits = Limits(),
        handler: type = ChatHandler,
    ) -> None:
        self.limits = limits
        self.matchmaker = Matchmaker(limits.max_clients)
        super().__init__(address, handler)

    @property
    def port(self) -> int:
        """The port the server listens on (useful after binding port 0)."""
        return int(self.server_address[1])

    def server_close(self) -> None:
        """Stop listening, send every client #server_shutdown, and wait for them (§10)."""
        super().server_close()
        connections = [connection_of(chatter) for chatter in self.matchmaker.close()]
        for conn in connections:
            conn.hang_up(socket.SHUT_RD)  # wakes the handler, which writes the notice
        # A handler leaves the Matchmaker before it writes its last notice and
        # closes; wait for both, or the process may exit in between and the
        # client sees the close without #server_shutdown.
        grace = self.shutdown_grace
        deadline = time.monotonic() + grace
        if not (self.matchmaker.wait_until_empty(grace) and all_finished(connections, deadline)):
            # First cut off the clients that will not read: a handler may be
            # stuck writing to one, and the client it serves is still owed its
            # own notice.  Then cut off whatever is left.
            for conn in connections:
                if conn.is_being_written():
                    conn.hang_up()
            if not all_finished(connections, time.monotonic() + self.shutdown_cutoff):
                for conn in connections:
                    conn.hang_up()
                all_finished(connections, time.monotonic() + self.shutdown_cutoff)


def all_finished(connections: List[Connection], deadline: float) -> bool:
    """Wait until every connection is closed, or the monotonic ``deadline`` passes."""
    return all(conn.finished.wait(max(0.0, deadline - time.monotonic())) for conn in connections)
