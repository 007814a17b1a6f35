"""The drain thread: it finishes the writes that handler threads could not (spec §9.4, §9.6).

A handler that owes bytes to a client writes them with
:meth:`~mechat.connection.Connection.flush`, which never waits: what the
client's socket does not take at once stays in that connection's send
queue.  Waiting there would make the sender of a direct message, a
broadcast or a relayed line wait for the slowest of its recipients, and a
line to a thousand clients wait for all of them.  So one thread, this one,
waits for every backed-up socket at once and writes more to each as soon as
its client has read some.

It drops a client whose queue has not moved for the send timeout (§9.4);
the cap on a queue's size (§9.6) is checked where bytes join it, in
``flush``.  Either way the server's ``drop`` callback tells the partner,
exactly as when a write fails.

How it waits.  Each pass asks :func:`select.poll` (:func:`select.select`
on Windows) about the sockets it watches, plus one end of a socket pair
that :meth:`Drainer.watch` writes a byte to, so that a connection newly
backed up is watched at once.  A fresh poll object each pass costs one
registration per watched socket, but only clients that are behind are
watched, and it needs no bookkeeping when a connection closes: a closed
socket is simply not asked about again.  The descriptor number of a socket
closed during a pass may already belong to a new connection; then a pass
wakes for nothing, since every write goes through the connection's send
lock and is refused once the connection is finishing.

Locks.  ``_lock`` guards only the list of connections handed over by
:meth:`Drainer.watch`; it is never held while taking another lock.  A
write takes one connection's send lock at a time, then (in ``drop``) the
Matchmaker's lock, which is the order :mod:`mechat.connection` fixes.
"""

import contextlib
import logging
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Set

if TYPE_CHECKING:  # a Connection is handed to watch(); drain imports nothing of it
    from mechat.connection import Connection

log = logging.getLogger(__name__)

#: What the drain thread calls when it gives up on a connection: the server drops it.
Drop = Callable[["Connection", OSError], None]

#: Whether the select module offers poll(); Windows has only select().
HAVE_POLL = hasattr(select, "poll")

#: The most sockets one select() may ask about on Windows (FD_SETSIZE is 512
#: there, and one place is the wake-up socket).  Each pass then starts
#: SELECT_LIMIT further along the watched connections and waits at most
#: TURN_PASS, so any more soon get their turn.
SELECT_LIMIT = 500

#: Seconds a pass waits at most, so that a stop is noticed even if no wake-up arrives.
IDLE_PASS = 1.0

#: Seconds a select() pass waits at most while more sockets are behind than
#: it may ask about, so that the next ones get their turn soon.
TURN_PASS = 0.05


class SendTimeout(OSError):
    """A client's send queue did not move for the send timeout (§9.4)."""


class Drainer:
    """One thread that writes queued bytes to each client as it reads (§9.6)."""

    def __init__(self, drop: Drop) -> None:
        self._drop = drop
        self._lock = threading.Lock()  # guards _arrivals and _stopping
        self._arrivals: List[Connection] = []
        self._stopping = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="mechat-drain", daemon=True)
        self._thread.start()

    def watch(self, connection: "Connection") -> None:
        """Have the thread write the rest of ``connection``'s send queue as its client reads."""
        with self._lock:
            if self._stopping:
                return  # a straggler after shutdown: its own close() writes the rest
            first = not self._arrivals
            self._arrivals.append(connection)
        if first:
            self._wake()

    def stop(self) -> None:
        """Stop the thread and wait for it; queued bytes not yet written stay unwritten."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._wake()
        self._thread.join()
        self._wake_reader.close()
        self._wake_writer.close()

    def _wake(self) -> None:
        """Make the thread's current wait return."""
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            self._wake_writer.send(b"\0")

    def _run(self) -> None:
        """Wait for backed-up sockets to have room, write to them, drop the stuck ones."""
        watched: Set[Connection] = set()
        passes = 0
        while True:
            with self._lock:
                if self._stopping:
                    return
                watched.update(self._arrivals)
                self._arrivals.clear()
            passes += 1
            try:
                self._pass(watched, passes)
            except Exception:  # a bug here must not stop every queue from draining
                log.exception("the drain thread's pass failed; going on")

    def _pass(self, watched: Set["Connection"], number: int) -> None:
        """Wait once for room, write where there is some, and drop the connections stuck too long."""
        order = list(watched)
        seconds = self._next_deadline(watched)
        start = 0
        if not HAVE_POLL and len(order) > SELECT_LIMIT:  # select() asks about SELECT_LIMIT at a time
            start = number * SELECT_LIMIT % len(order)
            seconds = min(seconds, TURN_PASS)
        try:
            ready = writable(self._wake_reader, order[start:] + order[:start], seconds)
        except OSError:  # Windows' select() refuses a socket closed meanwhile: try each once
            ready = order
        with contextlib.suppress(BlockingIOError):
            self._wake_reader.recv(4096)
        for connection in ready:
            if self._write(connection):
                watched.discard(connection)
        now = time.monotonic()
        for connection in [c for c in watched if c.stalled_for(now) > c.send_timeout]:
            watched.discard(connection)
            self._drop(connection, SendTimeout("no progress in %.1f s" % connection.send_timeout))

    def _write(self, connection: "Connection") -> bool:
        """Write what ``connection``'s socket takes now; return True once nothing is left to watch."""
        try:
            return connection.drain()
        except OSError as error:  # the client reset
            self._drop(connection, error)
            return True

    @staticmethod
    def _next_deadline(watched: Set["Connection"]) -> float:
        """Return how long the next wait may last: until the first send timeout, or one idle pass."""
        now = time.monotonic()
        waits = [c.send_timeout - c.stalled_for(now) for c in watched]
        return max(0.0, min([*waits, IDLE_PASS]))


def writable(wake: socket.socket, connections: List["Connection"], seconds: float) -> List["Connection"]:
    """Wait up to ``seconds`` for ``wake`` to be readable or any connection to take bytes.

    Return the connections whose socket has room, or has failed (a write
    then says how).  A connection already closed is returned too: its
    drain() finds that nothing is left to write.
    """
    by_descriptor: Dict[int, Connection] = {}
    closed = []
    for connection in connections:
        descriptor = connection.sock.fileno()
        if descriptor < 0:
            closed.append(connection)
        else:
            by_descriptor[descriptor] = connection
    if closed:
        seconds = 0
    if not HAVE_POLL:
        return closed + select_writable(wake, by_descriptor, seconds)
    poller = select.poll()
    poller.register(wake, select.POLLIN)
    for descriptor in by_descriptor:
        poller.register(descriptor, select.POLLOUT)
    events = poller.poll(seconds * 1000)
    return closed + [by_descriptor[fd] for fd, _ in events if fd in by_descriptor]


def select_writable(
    wake: socket.socket, by_descriptor: Dict[int, "Connection"], seconds: Optional[float]
) -> List["Connection"]:
    """Do what writable() does with select(), for Windows, for the first SELECT_LIMIT sockets."""
    descriptors = list(by_descriptor)[:SELECT_LIMIT]
    _, ready, failed = select.select([wake], descriptors, descriptors, seconds)
    return [by_descriptor[fd] for fd in set(ready) | set(failed)]
