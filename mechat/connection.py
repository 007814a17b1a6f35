"""A connection as the server holds it: a socket, who may write to it, and how it ends.

The :class:`~mechat.matchmaker.Matchmaker` decides what each client is owed
and knows nothing of sockets.  A :class:`Connection` is the
:class:`~mechat.chatter.Chatter` that also owns one: it writes out what
the Matchmaker queued for it, and it can be hung up from another thread and
closed without losing its last line.  Every operating-system detail of the
server lives here, so that :mod:`mechat.server` reads as the protocol.

The send queue (§9.6).  A write never waits for a client to read.
:meth:`Connection.flush` sends what the socket takes at once and keeps the
rest in the connection's send queue, ``_unsent``; the drain thread
(:mod:`mechat.drain`) writes it as the client reads.  So a handler relaying
a line, a direct message or a broadcast is never held up by a recipient
that has stopped reading: IRC servers call this queue the SendQ.  Once a
queue is longer than its cap, or has not moved for the send timeout, its
client is dropped (§9.4).  The queue is bounded by that cap plus the
lines of one flush, so memory per connection stays bounded too.

Locks.  A connection's socket is read by one thread only, its handler.  It
is written to by several (its own handler sends replies, other handlers
relay lines to it, the drain thread writes its send queue) and shut from
others (a partner leaving, the server stopping).  Each connection has two
locks for that:

* ``_send_lock`` lets one thread write at a time, and guards the send
  queue.  :meth:`Connection.flush` holds it across both the Matchmaker
  call that empties the outbox and the send, and new lines go behind any
  still queued, so no thread can send newer lines before older ones: the
  outbox order survives onto the wire.
* ``_life_lock`` keeps :meth:`Connection.close` apart from
  :meth:`Connection.hang_up` and :meth:`Connection.hung_up`: once a socket
  is closed its descriptor number may already belong to a newer client, so
  no thread may shut it or poll it any more.

The locks are always taken in one order, so no two threads can each hold
one while waiting for the other's: ``_send_lock`` before the Matchmaker's
lock (in ``flush``), and ``_send_lock`` before ``_life_lock`` (in
``close``).  The Matchmaker's lock and ``_life_lock`` are never held
together: the Matchmaker asks ``hung_up()`` with its own lock released.

TLS.  A connection served over TLS has a :class:`~mechat.tls.TLSChannel`.
Writers encrypt under the send lock as they take the outbox, so the send
queue, its cap and the drain thread all deal in ciphertext and need not
know that TLS is there; the handler decrypts what it reads
(:mod:`mechat.tls` says why this and not :class:`ssl.SSLSocket`).  The
channel's own lock is taken after ``_send_lock``, and is the innermost.

Operating systems.  Each trick below was measured on Linux, where the tests
and CI run, and the function that plays it says why, with numbers where
there are some.  Where a trick does not exist, a portable fallback keeps
the server correct, if slower or less careful, so that it also runs on
macOS and Windows:

* ``MSG_DONTWAIT`` (Linux, macOS) lets :func:`send_within` send without a
  Python socket timeout.  Windows: wait for room with :func:`poll_for`,
  then send a page at a time.
* ``select.poll`` (Linux, macOS) has no limit on descriptor numbers.
  Windows: :func:`poll_for` uses ``select.select``.
* ``POLLRDHUP`` (Linux) lets :meth:`Connection.hung_up` see a FIN without
  reading.  Elsewhere the answer is "not yet", and the handler finds out
  when it reads.
* ``TCP_INFO`` and ``TIOCOUTQ`` (Linux) tell :func:`unacknowledged` what a
  closing connection has yet to deliver.  Elsewhere it answers 0, and a
  closing connection does not linger.
"""

import contextlib
import logging
import select
import socket
import struct
import sys
import threading
import time
from typing import Callable, Optional, Union

from mechat import protocol
from mechat.chatter import Chatter
from mechat.drain import Drainer
from mechat.matchmaker import Matchmaker
from mechat.tls import TLSChannel

log = logging.getLogger(__name__)

try:  # Unix only: Windows has neither module
    import fcntl
    import termios
except ImportError:
    HAVE_TIOCOUTQ = False
else:
    HAVE_TIOCOUTQ = hasattr(termios, "TIOCOUTQ")

#: poll()'s event bits.  Windows has no poll() and none of its constants;
#: there :func:`poll_for` uses select(), and only ever tests these bits.
POLLIN: int = getattr(select, "POLLIN", 0x001)
POLLOUT: int = getattr(select, "POLLOUT", 0x004)
POLLERR: int = getattr(select, "POLLERR", 0x008)
POLLHUP: int = getattr(select, "POLLHUP", 0x010)
#: Linux's "the peer has sent its FIN"; elsewhere 0, which nothing reports.
POLLRDHUP: int = getattr(select, "POLLRDHUP", 0)

#: Whether the select module offers poll(); Windows has only select().
HAVE_POLL = hasattr(select, "poll")

#: send()'s flag for "never block"; 0 on Windows, which lacks it.
MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)

#: Bytes send_within() sends at once where there is no MSG_DONTWAIT: a
#: socket that select() finds writable has, in practice, room for a page.
ROOMY_SEND = 4096

#: Seconds a closing connection keeps reading a client that is still sending,
#: so that its last notice is not lost to a reset (see Connection.close).
CLOSE_LINGER = 0.5

#: Seconds between two looks at what a closing connection has yet to deliver.
LINGER_POLL = 0.005

#: Bytes a lingering connection reads, and throws away, per recv().
LINGER_READ = 65536

#: Octets of send queue at or below which a client counts as caught up: its
#: handler reads on (Connection.wait_until_caught_up).  The size of one
#: flush of a handler's own replies (server.REPLIES_PER_WRITE), so that a
#: client's own traffic keeps its queue at two of these, well under the cap.
CAUGHT_UP = 65536

#: Linux's tcpi_state for a connection that is over (include/net/tcp_states.h).
TCP_CLOSE = 7


class SendQueueFull(OSError):
    """A client fell further behind in reading than its send queue's cap (§9.6)."""


class Connection(Chatter):
    """A Chatter with a socket: writes what it is owed, and can be hung up."""

    def __init__(
        self,
        sock: socket.socket,
        address: str,
        drainer: Drainer,
        send_timeout: float = protocol.DEFAULT_SEND_TIMEOUT,
        send_queue: int = protocol.DEFAULT_SEND_QUEUE,
        channel: Optional[TLSChannel] = None,
    ) -> None:
        super().__init__(address)
        self.sock = sock
        #: TLS between the outbox and the socket, or None for plain TCP.  Its
        #: handler does the handshake before anyone else may write to it.
        self.channel = channel
        self.drainer = drainer
        self.send_timeout = send_timeout
        self.send_queue = send_queue  # the cap, in octets
        self._send_lock = threading.Lock()  # one writer at a time; guards the fields below
        self._sent = threading.Condition(self._send_lock)  # notified as the queue shrinks, or ends
        self._unsent = bytearray()  # the send queue: owed, but not yet taken by the socket
        self.queued = 0  # len(self._unsent), kept with it under the send lock (see Chatter.queued)
        self._stalled_since = 0.0  # when the queue last moved, while it is not empty
        self._finishing = False  # close() has begun: nobody else writes any more
        self._life_lock = threading.Lock()  # close() versus hang_up()
        self._closed = False
        self._cut_off = False  # hung up for writing too: nothing more will be acknowledged
        #: Set once the socket is closed, so that shutdown can wait for the last write (§10).
        self.finished = threading.Event()

    def flush(self, matchmaker: Matchmaker) -> None:
        """Write what this connection is owed, or queue what the socket won't take yet (§9.6).

        Raise OSError if the client has reset, and SendQueueFull if it has
        fallen too far behind; the caller drops it either way (§9.4).
        """
        with self._send_lock:
            lines = matchmaker.take_outbox(self)
            if self._finishing:
                return
            if self.channel is not None:  # even with no lines: reading may have left TLS bytes to send
                lines = self.channel.encrypt(lines)
            if not lines:
                return
            if self.queued > self.send_queue:
                raise SendQueueFull("over %d octets behind" % self.send_queue)
            if self._unsent:  # behind already: new lines go after the queue, for the drain thread
                self._unsent += lines
                self.queued = len(self._unsent)
                return
            sent = send_now(self.sock, lines)
            if sent < len(lines):  # rare: the client's window is full
                self._unsent += memoryview(lines)[sent:]
                self.queued = len(self._unsent)
                self._stalled_since = time.monotonic()
                self.drainer.watch(self)

    def drain(self) -> bool:
        """Write what the socket takes of the send queue; return True once it is empty or moot.

        The drain thread calls this when the socket has room.  Raise
        OSError if the client has reset.
        """
        with self._send_lock:
            if self._finishing or not self._unsent:
                return True
            sent = send_now(self.sock, self._unsent)
            if sent:
                del self._unsent[:sent]
                self.queued = len(self._unsent)
                self._stalled_since = time.monotonic()
            if len(self._unsent) <= CAUGHT_UP:
                self._sent.notify_all()
            return not self._unsent

    def wait_until_caught_up(self, seconds: float, still: Callable[[], bool]) -> None:
        """Wait, at most ``seconds``, until the send queue is down to CAUGHT_UP, or ``still()`` is false.

        A handler calls this after a flush point for its own client, or its
        partner, when ``queued`` says it is more than CAUGHT_UP behind, so
        that it reads no more from its client while they are behind: TCP's
        flow control, carried through the server.  The
        wait holds no lock, so it delays only this handler.  ``still`` says
        whether the wait still matters (the session is open, the partner
        is still the partner); whoever makes it false calls hang_up() or
        release_waiters(), which wake the wait to look again.
        """
        with self._sent:
            self._sent.wait_for(lambda: self._finishing or self.queued <= CAUGHT_UP or not still(), seconds)

    def release_waiters(self) -> None:
        """Wake every handler waiting for this client to catch up, to check whether it still must."""
        with self._sent:
            self._sent.notify_all()

    def abandon(self) -> bool:
        """Give up on writing to this client: forget its send queue; return False if done before.

        A client that is dropped is owed nothing more (§9.4), so neither
        the drain thread nor its own close() tries to write what is queued.
        """
        with self._send_lock:
            first = not self._finishing
            self._finishing = True
            self._unsent.clear()
            self.queued = 0
            self._sent.notify_all()
            return first

    def stalled_for(self, now: float) -> float:
        """Return the seconds since the send queue last moved; 0 when it is empty."""
        return now - self._stalled_since if self._unsent else 0.0

    def has_received(self, mark: int) -> bool:
        """Tell whether the client's TCP has acknowledged the first ``mark`` octets it was owed (§7.7).

        They must all have left the outbox (``taken``) and the send queue,
        and the kernel must say that every octet it was given has been
        acknowledged.  Only Linux says (SIOCOUTQ); elsewhere the answer is
        always False, never a guess.  Over TLS the kernel holds ciphertext,
        but nothing is in the kernel that was not owed before what is still
        queued, so "all acknowledged" covers the first ``mark`` octets too.
        The send lock keeps a flush from being between the outbox and the
        socket while this looks.
        """
        if not HAVE_TIOCOUTQ:
            return False
        with self._send_lock, self._life_lock:
            if self._closed or self._unsent or self.taken < mark:
                return False
            return in_flight(self.sock) == 0

    def is_behind(self) -> bool:
        """Tell whether this connection owes its client bytes that its socket has not taken."""
        return bool(self._unsent)

    def hung_up(self) -> bool:
        """Tell, without reading, whether the client has closed or reset.

        poll() reports POLLRDHUP once the client's FIN has arrived and
        POLLHUP or POLLERR after a reset, while the unread bytes stay where
        they are for the handler.  Where POLLRDHUP does not exist (it is
        Linux's), the answer is "not yet", and the handler finds out itself;
        so it is where there is no poll(), since select() cannot tell a
        hang-up from data without reading.
        """
        with self._life_lock:
            return self._closed or poll_for(self.sock, POLLRDHUP | POLLHUP | POLLERR, 0)

    def hang_up(self, how: int = socket.SHUT_RDWR) -> None:
        """Shut the socket from another thread, which wakes its handler's recv() or its wait to catch up."""
        with self._life_lock:
            if not self._closed:
                self._cut_off = self._cut_off or how != socket.SHUT_RD
                with contextlib.suppress(OSError):  # already reset by the peer
                    self.sock.shutdown(how)
        self.release_waiters()

    def close(self) -> None:
        """Close the socket once no other thread is writing to it, without losing the last line.

        The client's own handler calls this, so it may wait for the client
        to read the rest of its send queue, up to the send timeout: the
        last line, such as ``#user_quit``, is often in it (§8).
        """
        with self._send_lock:
            self._finishing = True  # from now on no other thread writes to it
            self._sent.notify_all()
            rest = bytes(self._unsent)
            if self.channel is not None and not self._cut_off:
                rest += self.channel.close_notify()  # after the last record, so made under the lock
        if rest and not self._cut_off:
            try:
                send_within(self.sock, rest, self.send_timeout)
            except OSError as error:
                log.debug("%s: %d octets not written at close: %s", self.address, len(rest), error)
        self._unsent.clear()  # only now: is_behind() stays true while the rest is written
        self.queued = 0
        with self._life_lock:
            self._closed = True  # from now on no other thread shuts it or polls it
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
        Where unacknowledged() cannot count (see there), this returns at once.
        """
        deadline = time.monotonic() + seconds
        self.sock.setblocking(False)
        while unacknowledged(self.sock) and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.sock.recv(LINGER_READ)
            time.sleep(LINGER_POLL)


def send_now(sock: socket.socket, data: Union[bytes, bytearray]) -> int:
    """Send what ``sock`` takes of ``data`` without waiting; return how many octets it took.

    MSG_DONTWAIT keeps each send() from blocking without a Python socket
    timeout (see send_within()).  Windows has no MSG_DONTWAIT: there a
    send() goes only when poll_for() reports room, a page at a time
    (ROOMY_SEND), which a socket with room takes at once in practice; but
    room for one octet is all that select() promises, so there a send() to
    a client that stops reading at that very moment can block, holding
    the connection's send lock, as in send_within().
    """
    if MSG_DONTWAIT:  # the usual case, in one call: the socket has room for all of it
        try:
            sent = sock.send(data, MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        if sent == len(data):
            return sent
    else:
        sent = 0
    with memoryview(data) as unsent:  # released before the caller resizes ``data``
        while sent < len(unsent):
            if MSG_DONTWAIT:
                try:
                    sent += sock.send(unsent[sent:], MSG_DONTWAIT)
                except BlockingIOError:
                    break  # the client's window is full
            elif poll_for(sock, POLLOUT, 0):
                sent += sock.send(unsent[sent : sent + ROOMY_SEND])
            else:
                break
    return sent


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

    Windows has no MSG_DONTWAIT, and making the socket non-blocking would
    make its handler's recv() fail.  There each send() waits until
    poll_for() reports room, and then blocks, so it sends only a little
    (ROOMY_SEND), which a socket with room takes at once.  The deadline is
    checked between sends: a client that stops reading in the middle of one
    can still hold it longer than ``seconds``.
    """
    deadline = time.monotonic() + seconds
    unsent = memoryview(data)
    while unsent:
        if MSG_DONTWAIT:
            try:
                unsent = unsent[sock.send(unsent, MSG_DONTWAIT) :]
                continue
            except BlockingIOError:
                pass  # the client's window is full: wait until it reads
        elif poll_for(sock, POLLOUT, 0):
            unsent = unsent[sock.send(unsent[:ROOMY_SEND]) :]
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poll_for(sock, POLLOUT, remaining):
            raise socket.timeout("sending took over %.1f s" % seconds)


def poll_for(sock: socket.socket, events: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for one of ``events`` on ``sock``; return False if none came.

    A hang-up or an error (POLLHUP, POLLERR) always counts, so a caller
    waiting to read or write wakes, and finds out from recv() or send().
    """
    if not HAVE_POLL:
        return select_for(sock, events, seconds)
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(seconds * 1000))


def select_for(sock: socket.socket, events: int, seconds: float) -> bool:
    """Do what poll_for() does with select(), for Windows, which has no poll().

    select() reports a hang-up or a reset as readable or writable, so a
    caller waiting to read or write still wakes for one.  But it cannot
    report one alone: asked for POLLHUP or POLLERR only, the answer is
    False.  select()'s limit on descriptor numbers (FD_SETSIZE) does not
    bite here: Linux, where it would, has poll(), and Windows counts
    sockets, not numbers, and this passes one.
    """
    readers = [sock] if events & POLLIN else []
    writers = [sock] if events & POLLOUT else []
    if not (readers or writers):
        return False  # Windows' select() refuses empty lists
    return any(select.select(readers, writers, [], seconds))


def unacknowledged(sock: socket.socket) -> int:
    """Return how many bytes written to ``sock`` may still reach the peer; 0 where the OS won't say.

    Linux answers TIOCOUTQ on a TCP socket (SIOCOUTQ) with the bytes not yet
    acknowledged.  Windows has no ioctl() to ask with (no fcntl or termios),
    and elsewhere TIOCOUTQ is a terminal's, which a socket refuses.  There
    the answer is 0, so a closing connection does not linger, and a client
    still sending as it is closed may lose its last notice to the reset.
    """
    return in_flight(sock) or 0  # reset, or the OS won't say: nothing to wait for


def in_flight(sock: socket.socket) -> Optional[int]:
    """Return how many bytes written to ``sock`` its peer has not acknowledged; None if nobody can say.

    None where the OS has no answer, and once the peer has reset: then
    nothing more will reach it, and nothing unacknowledged ever will be.
    """
    if not HAVE_TIOCOUTQ:
        return None
    try:
        if reset_by_peer(sock):
            return None
        answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    return int(struct.unpack("i", answer)[0])


def reset_by_peer(sock: socket.socket) -> bool:
    """Tell whether Linux's TCP_INFO says the connection is over; False where there is none."""
    if not hasattr(socket, "TCP_INFO"):
        return False
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_CLOSE)


def abort(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset, not a FIN: the peer's next read fails (§8)."""
    # SO_LINGER on with a time of 0 makes close() drop what is unsent and
    # send a reset.  struct linger is two ints, but two shorts on Windows.
    linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    sock.close()
