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

This module is the protocol's side of a connection.  The socket's side, its
two locks and every trick asked of the operating system (with the portable
fallback that lets the server run on macOS and Windows too) are in
:mod:`mechat.connection`.

What keeps one bad client from hurting the others (spec §9):

* a line is cut at the read, so memory per connection is bounded (§2.3);
* every write has a deadline (:func:`~mechat.connection.send_within`), so
  a client that stops reading holds up the thread writing to it, its
  partner's, for at most the send timeout, and is then disconnected (§9.4);
* any error writing to one client ends that client's session only;
* lines over the rate are refused with a notice (§9.5);
* a connection that never sends a nickname is timed out (§9.2).

TLS.  Given an :class:`ssl.SSLContext`, the server speaks TLS on every
connection, through a :class:`~mechat.tls.TLSChannel` that its handler
reads and every writer encrypts with (:mod:`mechat.tls` says why not an
``SSLSocket``).  The handler is admitted first, so a handshake counts
against ``max_clients``, then shakes hands within the nickname deadline
(§9.2): a client that never finishes is dropped then, and costs only its
own thread meanwhile.  A handshake that fails, for instance a plaintext
client on the TLS port, is logged in one line and ends the connection.
The reverse, a TLS client on a plaintext port, is told from its first
octets (:func:`~mechat.tls.looks_like_tls`): its ClientHello is no
nickname, so it is refused at once rather than at the nickname timeout.
"""

import contextlib
import logging
import socket
import socketserver
import ssl
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, Iterator, List, Optional, Set, Tuple, Union

from mechat import protocol, tls
from mechat.accounts import MEMORY, AccountStore
from mechat.chatter import Chatter, Step
from mechat.connection import CAUGHT_UP, POLLIN, Connection, poll_for, send_within
from mechat.drain import Drainer
from mechat.flood import TokenBucket
from mechat.logins import AccountCommands
from mechat.matchmaker import Matchmaker
from mechat.protocol import CLOSED, IN_ROOM, NICKNAME, Event, Line, Parsed, Phase, ProtocolError, parse_line
from mechat.rooms import Rooms
from mechat.throttle import AddressThrottle

log = logging.getLogger(__name__)

#: Bytes asked of each recv().  Several lines arrive per call under load,
#: and all of them are relayed with one write (see ChatHandler.receive).
RECV_SIZE = 65536

#: Octets of replies a handler may owe its own client before it writes them
#: out, without waiting for the end of what one recv() brought.  One recv()
#: of tiny lines can earn far more than that in replies (65,536 octets of
#: "/who" earn up to 26 MB of lists); writing them as they mount keeps the
#: client's send queue well under its cap, and makes a client that sends
#: faster than it reads wait (ChatHandler.keep_pace).
REPLIES_PER_WRITE = 65536

#: Seconds that shutdown waits for clients to take their last notice (§10).
SHUTDOWN_GRACE = 1.0

#: Seconds shutdown then gives the handlers of clients it had to cut off,
#: twice: first those a write is stuck on, then any still open.  With the
#: grace, the whole stop stays under the 2 s that §10 promises.
SHUTDOWN_CUTOFF = 0.25


@dataclass(frozen=True)
class Limits:
    """Every limit of spec §9, with its default."""

    max_line: int = protocol.MAX_LINE_OCTETS
    nickname_timeout: float = protocol.DEFAULT_NICKNAME_TIMEOUT
    max_clients: int = protocol.DEFAULT_MAX_CLIENTS
    send_timeout: float = protocol.DEFAULT_SEND_TIMEOUT
    max_rate: float = protocol.DEFAULT_MAX_RATE
    send_queue: int = protocol.DEFAULT_SEND_QUEUE
    all_rate: float = protocol.DEFAULT_ALL_RATE
    max_rooms: int = protocol.DEFAULT_MAX_ROOMS
    max_members: int = protocol.DEFAULT_MAX_MEMBERS
    mailbox_size: int = protocol.DEFAULT_MAILBOX_SIZE


def connection_of(chatter: Chatter) -> Connection:
    """Return a chatter as the Connection the server made it."""
    assert isinstance(chatter, Connection), chatter
    return chatter


class FlushPoint:
    """Stands for "no more input is buffered": write what is owed before waiting for more."""

    def __repr__(self) -> str:
        return "FLUSH_POINT"


#: The one :class:`FlushPoint`; the reader yields it between lines.
FLUSH_POINT = FlushPoint()

#: What the reader yields: a line, or a flush point.
Received = Union[Line, FlushPoint]

#: A command: what the handler does for one kind of line (§7.5).
Command = Callable[["ChatHandler", Parsed], Step]


class ChatHandler(AccountCommands, socketserver.BaseRequestHandler):
    """Serve one connection from its nickname to its close (spec §7).

    The contract, in one place:

    * :meth:`receive` yields each line read, and :data:`FLUSH_POINT` once
      nothing more is buffered (or the nickname timer may have run out).
    * :meth:`parse` turns every line into a :class:`~mechat.protocol.Parsed`
      whose event is a row of §7.5, refusals included.
    * :meth:`act_on` batches messages, and for any other event first passes
      the batch on (so lines keep their order, §7.3), then looks the event
      up in :attr:`commands`.  A command returns the Matchmaker's
      :class:`~mechat.chatter.Step`, and nothing else.
    * At a flush point the handler writes every outbox the steps filled,
      wakes the sessions they ended, and asks the Matchmaker for its phase:
      another thread may have closed the session.  Once it is closed,
      nothing more is read (§7.4).

    A new command is one entry in :attr:`commands` and one method.
    """

    server: "ChatServer"
    request: socket.socket

    def setup(self) -> None:
        """Prepare the connection and the per-connection state."""
        self.matchmaker = self.server.matchmaker
        self.limits = self.server.limits
        context = self.server.ssl_context
        self.conn = Connection(
            self.request,
            "%s:%s" % self.client_address[:2],
            self.server.drainer,
            self.limits.send_timeout,
            self.limits.send_queue,
            tls.TLSChannel(context, server_side=True) if context is not None else None,
        )
        #: What came with the end of the TLS handshake, read before anything else.
        self.early = NOTHING_YET
        self.first_read = True  # the next recv() is the first: it may be a TLS client's hello
        #: Our phase as the Matchmaker last told it; only the Matchmaker changes phases.
        self.phase = Phase.NICKNAME
        self.batch: List[bytes] = []  # messages read but not yet passed on
        self.room_batch_octets = 0  # what the batch owes each other member of our room
        self.outboxes_to_write: Set[Chatter] = set()  # filled since the last flush point
        self.sessions_to_wake: List[Chatter] = []  # ended by our steps; woken after the writes
        self.flood = TokenBucket(self.limits.max_rate)
        self.broadcasts = TokenBucket(self.limits.all_rate)  # §9.7: /all has a rate of its own
        self.nickname_deadline = time.monotonic() + self.limits.nickname_timeout
        self.setup_accounts()
        #: Seconds receive() waits for input before it yields a flush point;
        #: None waits for ever.  The socket itself blocks, with no Python
        #: timeout, so every write can rely on send_within()'s deadline.
        self.read_timeout: Optional[float] = self.limits.nickname_timeout
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # DEBUG, not INFO: the nickname line that follows names the address
        # too, and at 10,000 connections each INFO line costs about 9 us of
        # the one core (with gc tuning: all matched in 2.25 -> 2.00 s).
        log.debug("%s connected", self.conn.address)

    def handle(self) -> None:
        """Admit the client, then act on each line it sends until its session is over."""
        self.follow(self.matchmaker.arrive(self.conn))
        if self.phase is CLOSED:
            log.warning("%s refused: server full or closing", self.conn.address)
            if self.conn.channel is not None:
                self.shake_hands()  # by the nickname deadline, as any client: finish() then says why
            return
        if self.conn.channel is not None and not self.shake_hands():
            return
        for received in self.receive():
            if isinstance(received, FlushPoint):
                self.reach_flush_point()
            else:
                self.act_on(received)
            if self.phase is CLOSED:
                break  # §7.4: nothing more is read
        self.pass_on()

    def finish(self) -> None:
        """Leave the Matchmaker, tell the partner, and close (spec §8)."""
        step = self.matchmaker.leave(self.conn, Event.HANG_UP)  # a session already over just leaves
        if step.ended:
            log.info("%s (%s) left; telling its partner", self.conn.address, self.conn.nickname)
        self.follow(step)
        self.outboxes_to_write.add(self.conn)
        self.forget_what_was_delivered()  # before the last notice, which its client may not wait for
        self.write_outboxes()
        self.conn.close()
        log.info("%s (%s) closed", self.conn.address, self.conn.nickname or "no nickname")

    def shake_hands(self) -> bool:
        """Do the TLS handshake by the nickname deadline (§9.2); return False, logged, if it failed."""
        assert self.conn.channel is not None
        try:
            self.early = self.conn.channel.handshake(self.request, self.nickname_deadline)
        except tls.NotTLS as error:  # a plaintext client: tell it in its own terms (§2.5)
            log.warning("%s: %s", self.conn.address, error)
            with contextlib.suppress(OSError):
                send_within(self.request, protocol.notice(protocol.Notice.TLS_REQUIRED), 1.0)
        except tls.TLSError as error:  # its message is one line: no traceback
            log.warning("%s: %s", self.conn.address, error)
        except OSError as error:
            log.warning("%s reset during the TLS handshake: %s", self.conn.address, error.strerror or error)
        else:
            if self.early.reply_pending:
                self.outboxes_to_write.add(self.conn)
            return True
        self.conn.abandon()  # nothing can be said to it: close() writes nothing
        return False

    # -- Reading -------------------------------------------------------------

    def receive(self) -> Iterator[Received]:
        """Yield each line as it arrives, and FLUSH_POINT whenever no more is buffered.

        At the flush point the caller writes what it owes before this
        generator blocks in recv() again, so all the lines of one recv() are
        answered or relayed with one write.  Waiting longer than
        ``self.read_timeout`` for input also yields FLUSH_POINT.  The
        generator ends at end of file, on a reset, or at the end of TLS.
        """
        buffer = protocol.LineBuffer(self.limits.max_line)
        data, more = self.early.plaintext, not self.early.ended
        while data or more:
            yield from buffer.feed(data)
            yield FLUSH_POINT
            if not more:
                return
            data, more = self.read_some()

    def read_some(self) -> Tuple[bytes, bool]:
        """Return the plaintext that came next and whether more may follow; b"" if nothing came in time."""
        if self.read_timeout is not None and not poll_for(self.request, POLLIN, self.read_timeout):
            return b"", True
        try:
            data = self.request.recv(RECV_SIZE)
        except OSError:
            return b"", False  # reset, or hung up by another thread (§8)
        first, self.first_read = self.first_read, False
        if not data:  # kept from TLS, to which it is an error: it may be our own hang_up(SHUT_RD)
            return b"", False
        if self.conn.channel is not None:
            return self.decrypt(data)
        if first and tls.looks_like_tls(data):
            self.refuse_tls()
            return b"", False
        return data, True

    def decrypt(self, data: bytes) -> Tuple[bytes, bool]:
        """Return the plaintext that ``data`` completes and whether more may follow; note a TLS reply owed."""
        assert self.conn.channel is not None
        try:
            decrypted = self.conn.channel.decrypt(data)
        except ssl.SSLError as error:  # the client broke TLS: as good as a reset
            log.warning("%s broke TLS: %s", self.conn.address, tls.reason_of(error))
            return b"", False
        if decrypted.reply_pending:  # a KeyUpdate's answer, say: the next flush point sends it
            self.outboxes_to_write.add(self.conn)
        return decrypted.plaintext, not decrypted.ended

    def refuse_tls(self) -> None:
        """Refuse a TLS client on this plaintext port at once: its hello is no nickname (§3, §9.2)."""
        log.warning("%s spoke TLS to this plaintext server; closing", self.conn.address)
        self.follow(self.matchmaker.refuse(self.conn, Event.INVALID_NICKNAME))

    def parse(self, line: Line) -> Parsed:
        """Say which event of §7.5 ``line`` is in our phase; a refused line is an event too (§6)."""
        if not self.flood.allow():
            return Parsed(Event.RATE_LIMITED)
        try:
            return parse_line(self.phase, line)
        except ProtocolError as error:
            return Parsed(error.event)

    # -- Acting on a line --------------------------------------------------------

    def act_on(self, line: Line) -> None:
        """Do what one line asks: batch a message, or pass the batch on and run the command."""
        parsed = self.parse(line)
        if parsed is protocol.MESSAGE:  # parse_line's one Parsed for every message
            assert isinstance(line, bytes)  # parse_line accepted it, so it is not TOO_LONG
            self.batch.append(line + protocol.LF)
            if self.phase is IN_ROOM:
                self.keep_the_room_batch_small(line)
            return
        self.pass_on()  # the messages read before this line go first (§7.3)
        if self.phase is not CLOSED:
            self.follow(self.commands[parsed.event](self, parsed))
        if self.conn.owed > REPLIES_PER_WRITE:
            self.reach_flush_point()

    def keep_the_room_batch_small(self, line: bytes) -> None:
        """Pass the batch on once it owes every other member of our room REPLIES_PER_WRITE octets.

        In a room each message becomes a longer line for each member
        (``#in_ROOM_SENDER``, up to 66 octets more), and one recv() of
        short messages would otherwise owe every member megabytes at once,
        past its send queue's cap (§9.6), and hold the Matchmaker's lock
        while it queued them all.
        """
        self.room_batch_octets += protocol.MAX_ROOM_LINE_PREFIX_OCTETS + len(line) + len(protocol.LF)
        if self.room_batch_octets > REPLIES_PER_WRITE:
            self.reach_flush_point()

    def pass_on(self) -> None:
        """Relay the messages batched since the last call, in one step (§7.3).

        Batching the lines of one recv() takes the Matchmaker's lock once
        instead of once a line.  Measured, flood of 100 pairs with 64-octet
        lines on one CPU (median of 3): server CPU per line 3.75 -> 2.42 us,
        283k -> 450k lines/s.
        """
        if self.batch:
            step = self.matchmaker.relay(self.conn, self.batch)
            self.batch = []
            self.room_batch_octets = 0
            self.follow(step)

    def choose_nickname(self, parsed: Parsed) -> Step:
        """Enter the matchmaker's queue, or pair with the longest waiter (§7.1)."""
        step = self.matchmaker.join(self.conn, parsed.nickname)
        self.read_timeout = None  # a chatter may stay quiet as long as it likes (§7.3)
        if step.phase is Phase.WAITING:
            log.info("%s (%s) is waiting", self.conn.address, parsed.nickname)
        elif step.phase is Phase.CHATTING:
            partner = step.filled[-1]
            log.info(
                "%s (%s) matched with %s (%s)",
                self.conn.address,
                parsed.nickname,
                partner.address,
                partner.nickname,
            )
        return step

    def rename(self, parsed: Parsed) -> Step:
        """Change our nickname and tell both sides (§5.2)."""
        log.info("%s renamed %s to %s", self.conn.address, self.conn.nickname, parsed.nickname)
        return self.matchmaker.rename(self.conn, parsed.nickname)

    def quit(self, parsed: Parsed) -> Step:
        """End the session; the partner is told (§5.1, §8)."""
        log.info("%s (%s) sent /quit", self.conn.address, self.conn.nickname)
        self.said_quit = True
        return self.matchmaker.leave(self.conn, Event.QUIT)

    def next_partner(self, parsed: Parsed) -> Step:
        """Leave the partner, as /quit would, and queue up for another (§5.7)."""
        log.info("%s (%s) sent /next", self.conn.address, self.conn.nickname)
        step = self.matchmaker.next_partner(self.conn)
        self.conn.release_waiters()  # the old partner's handler may wait for us to catch up
        return step

    def who(self, parsed: Parsed) -> Step:
        """Answer with the named clients that match the pattern (§5.4)."""
        return self.matchmaker.who(self.conn, parsed.pattern)

    def direct(self, parsed: Parsed) -> Step:
        """Send a direct message to one named client, or keep it for an account that is away (§5.5)."""
        step = self.matchmaker.direct(self.conn, parsed.nickname, parsed.text)
        return self.store_for(step.store_for, parsed.nickname, parsed.text) if step.store_for else step

    def broadcast(self, parsed: Parsed) -> Step:
        """Send a line to every other named client, at most at the /all rate (§5.6, §9.7)."""
        if not self.broadcasts.allow():
            return self.matchmaker.refuse(self.conn, Event.RATE_LIMITED)
        return self.matchmaker.broadcast(self.conn, parsed.text)

    def create_room(self, parsed: Parsed) -> Step:
        """Make a room, which nobody joins yet (§5.8)."""
        log.debug("%s (%s) asks for room %s", self.conn.address, self.conn.nickname, parsed.room)
        return self.matchmaker.create_room(self.conn, parsed.room)

    def list_rooms(self, parsed: Parsed) -> Step:
        """Answer with the rooms that match the pattern (§5.9)."""
        return self.matchmaker.list_rooms(self.conn, parsed.pattern)

    def join_room(self, parsed: Parsed) -> Step:
        """Leave the queue, the partner or the room we are in, and join a room (§5.10)."""
        step = self.matchmaker.join_room(self.conn, parsed.room)
        if step.phase is Phase.IN_ROOM:
            log.info("%s (%s) is in room %s", self.conn.address, self.conn.nickname, parsed.room)
        self.conn.release_waiters()  # as for /next: a partner left behind may wait for us
        return step

    def members(self, parsed: Parsed) -> Step:
        """Answer with the members of our room (§5.11)."""
        return self.matchmaker.members(self.conn)

    def leave_room(self, parsed: Parsed) -> Step:
        """Leave our room and go back to pairing (§5.12)."""
        log.info("%s (%s) leaves its room", self.conn.address, self.conn.nickname)
        return self.matchmaker.leave_room(self.conn)

    def refuse(self, parsed: Parsed) -> Step:
        """Owe our client the notice that refuses its line (§6)."""
        return self.matchmaker.refuse(self.conn, parsed.event)

    #: Every event a line can be, and the command that acts on it.
    #: Messages are batched by act_on() instead (see pass_on).
    commands: ClassVar[Dict[Event, Command]] = {
        Event.NICKNAME: choose_nickname,
        Event.RENAME: rename,
        Event.QUIT: quit,
        Event.NEXT: next_partner,
        Event.WHO: who,
        Event.DIRECT: direct,
        Event.BROADCAST: broadcast,
        Event.CREATE: create_room,
        Event.ROOMS: list_rooms,
        Event.JOIN: join_room,
        Event.MEMBERS: members,
        Event.LEAVE: leave_room,
        Event.REGISTER: AccountCommands.register,
        Event.LOGIN: AccountCommands.log_in,
        Event.USERS: AccountCommands.users,
        Event.DELETE: AccountCommands.delete_account,
        Event.LOGIN_FAILED: AccountCommands.refused_login,
        Event.INVALID_PASSWORD: refuse,
        Event.INVALID_ROOM: refuse,
        Event.INVALID_NICKNAME: refuse,
        Event.INVALID_MESSAGE: refuse,
        Event.INVALID_COMMAND: refuse,
        Event.RATE_LIMITED: refuse,
    }

    # -- Flush points ------------------------------------------------------------

    def reach_flush_point(self) -> None:
        """Pass the batch on, write what is owed, and learn whether the session goes on."""
        self.pass_on()
        if self.conn.stored_up_to > self.forgotten_up_to:  # before our replies: the last write had time
            self.forget_what_was_delivered()
        self.write_outboxes()
        self.keep_pace()
        # Another thread may have closed the session: the partner left, the
        # server is stopping, or a write to us failed (§7.4, §9.4).  Once it
        # is closed, nothing more is read: a client that has been dropped
        # may still have megabytes on the way, and parsing them would cost
        # the CPU that the clients still connected need.
        self.phase = self.matchmaker.phase_of(self.conn)
        if self.phase is NICKNAME:
            self.watch_the_nickname_timer()

    def watch_the_nickname_timer(self) -> None:
        """Time out a client that has not chosen a nickname in time (§9.2)."""
        remaining = self.nickname_deadline - time.monotonic()
        if remaining > 0:
            self.read_timeout = remaining
            return
        log.warning("%s sent no nickname in %.0f s", self.conn.address, self.limits.nickname_timeout)
        self.follow(self.matchmaker.time_out(self.conn))

    # -- Writing ---------------------------------------------------------------

    def follow(self, step: Step) -> None:
        """Take our phase from a step of our session, and note what to write and whom to wake."""
        self.phase = step.phase
        self.outboxes_to_write.update(step.filled)
        if step.ended:
            self.sessions_to_wake.extend(step.ended)

    def write_outboxes(self) -> None:
        """Write every outbox filled since the last flush point, then wake the sessions we ended."""
        self.server.write_out(self.outboxes_to_write, self.sessions_to_wake)

    def keep_pace(self) -> None:
        """Wait until our client and its partner have caught up with what they are owed (§9.6).

        Writes never wait, but a handler that went on reading while its own
        client or its partner fell behind would fill their send queues
        until they were dropped.  Waiting here passes TCP's flow control
        through the server instead: a client that sends faster than it, or
        its partner, reads is simply read more slowly, as before there
        were send queues.  Direct messages and broadcasts do not wait:
        one slow recipient among many must not hold up the sender.  A
        queue that does not move is dropped by the drain thread (§9.4),
        which ends this wait, and so does the end of our session or of
        the pair, whoever ends it.
        """
        conn = self.conn
        if conn.queued > CAUGHT_UP:  # read without a lock: the wait looks again under it
            conn.wait_until_caught_up(self.limits.send_timeout, still=lambda: conn.phase is not CLOSED)
        partner = conn.partner
        if partner is not None and partner.queued > CAUGHT_UP:
            connection_of(partner).wait_until_caught_up(
                self.limits.send_timeout, still=lambda: conn.partner is partner
            )


#: What a connection has read before its first recv(): nothing, and more to come.
NOTHING_YET = tls.Decrypted(b"", ended=False, reply_pending=False)


class ChatServer(socketserver.ThreadingTCPServer):
    """A ThreadingTCPServer whose handlers meet in one Matchmaker, over TLS if given a context."""

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
        ssl_context: Optional[ssl.SSLContext] = None,
        store: Optional[AccountStore] = None,
    ) -> None:
        self.limits = limits
        self.ssl_context = ssl_context  # made by mechat.tls.server_context(); None for plain TCP
        self.matchmaker = Matchmaker(limits.max_clients, Rooms(limits.max_rooms, limits.max_members))
        #: The accounts and their mailboxes (§7.7, §9.12); without one, a throwaway store in memory.
        self.store = store if store is not None else AccountStore(MEMORY, limits.mailbox_size)
        self.owns_store = store is None
        self.matchmaker.know_accounts(self.store.names())
        self.failed_logins = AddressThrottle()  # §9.11: shared by every handler
        # Before binding: a failed bind calls server_close(), which stops it.
        self.drainer = Drainer(self.drop_and_tell)
        super().__init__(address, handler)

    def drop(self, connection: Connection, error: OSError) -> Step:
        """Disconnect a client that reset or fell behind, and return the step that tells the others (§9.4).

        The others are its partner, who is owed ``#user_quit`` and ended,
        or the members of its room, who are owed its ``#exited_``.
        """
        if connection.abandon():
            log.warning("%s (%s) dropped: %s", connection.address, connection.nickname, type(error).__name__)
        step = self.matchmaker.leave(connection, Event.DROPPED)
        connection.hang_up()
        return step

    def drop_and_tell(self, connection: Connection, error: OSError) -> None:
        """Drop a client for the drain thread, then write what that owes the others (§9.4)."""
        step = self.drop(connection, error)
        self.write_out(set(step.filled), list(step.ended))

    def write_out(self, owed: Set[Chatter], ended: List[Chatter]) -> None:
        """Write every outbox in ``owed``, then wake the sessions in ``ended``; empty both (§8, §9.4).

        A client that cannot take what it is owed is dropped, and what its
        drop owes others (a partner's ``#user_quit``, a room's ``#exited_``)
        joins the same loop, however many drops follow from one another: a
        room line can find several members past their cap at once.  Both a
        handler at its flush point and the drain thread write this way.
        """
        while owed:
            chatter = connection_of(owed.pop())
            try:
                chatter.flush(self.matchmaker)
            except OSError as error:
                step = self.drop(chatter, error)
                owed.update(step.filled)
                ended.extend(step.ended)
        while ended:
            # Wake its handler, which closes it; not SHUT_RDWR, whose FIN makes
            # the kernel answer a still-sending client with a reset that can
            # drop the #user_quit just written (its close() lingers instead).
            connection_of(ended.pop()).hang_up(socket.SHUT_RD)

    def handle_error(self, request: object, client_address: object) -> None:
        """Log a handler's unexpected exception, a bug in the server; the other clients carry on."""
        log.exception("%s: the handler failed", client_address)

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
            # First cut off the clients that will not read: each one's own
            # handler may be stuck in close(), writing the rest of its send
            # queue.  Then cut off whatever is left.
            for conn in connections:
                if conn.is_behind():
                    conn.hang_up()
            if not all_finished(connections, time.monotonic() + self.shutdown_cutoff):
                for conn in connections:
                    conn.hang_up()
                all_finished(connections, time.monotonic() + self.shutdown_cutoff)
        self.drainer.stop()
        if self.owns_store:
            self.store.close()


def all_finished(connections: List[Connection], deadline: float) -> bool:
    """Wait until every connection is closed, or the monotonic ``deadline`` passes."""
    return all(conn.finished.wait(max(0.0, deadline - time.monotonic())) for conn in connections)
