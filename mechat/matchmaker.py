"""The Matchmaker: who is connected, who is waiting, who is paired with whom.

This is the only state that handler threads share, and all of it sits behind
one lock, the Condition ``self._changed``.  It is shaped like CPython's
``queue.Queue``: small methods, each of which takes the lock, changes a few
fields and lets go.  No socket is ever touched here.

Handlers never write to each other's sockets without asking the Matchmaker
first.  Every line that some connection is owed, whether a notice or a
partner's message, is appended to that connection's :attr:`Chatter.outbox`
*under the lock*.  The order of the appends is therefore the order in which
the Matchmaker decided things, and the server writes each outbox in that
order.  That is what makes these races impossible:

* a waiting client is told ``#wait`` about a line it sent just before it was
  matched, but the ``#wait`` is written *after* ``#matched_to_`` (§7.2);
* a partner's last message is written after ``#user_quit`` (§8).

Pairing and unpairing always change both sides in one step under the lock,
so no thread ever sees half a pair.  A chatter is in the waiting queue only
while its phase is WAITING, and it is removed in the same step that changes
its phase, so a client that has left is never handed out as a partner (the
"ghost waiter"), and a waiting client is never matched with itself.

The Condition has one waiter: the server thread during shutdown, in
:meth:`Matchmaker.wait_until_empty`.  :meth:`~Matchmaker.leave` notifies it each time a
connection goes.  Pairing needs no waiting at all: the second client's
thread does the whole match, so neither handler ever blocks here.
"""

import threading
from collections import deque
from typing import Deque, List, Optional, Set

from mechat.protocol import DEFAULT_MAX_CLIENTS, Notice, Phase, notice


class Chatter:
    """One connection as the Matchmaker sees it.

    The fields below change only under the Matchmaker's lock.  The server
    subclasses this to add the socket; the Matchmaker never uses it.
    """

    def __init__(self, address: str = "") -> None:
        self.address = address
        self.nickname = ""
        self.phase = Phase.NICKNAME
        self.partner: Optional[Chatter] = None
        #: Lines owed to this connection, oldest first, LF included.
        self.outbox: Deque[bytes] = deque()

    def hung_up(self) -> bool:
        """Tell whether the client has already closed or reset; the server knows how."""
        return False

    def __repr__(self) -> str:
        return "<%s %s %r %s>" % (type(self).__name__, self.address, self.nickname, self.phase.name)


class Matchmaker:
    """Pairs chatters first come, first served, and keeps what each is owed."""

    def __init__(self, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        self.max_clients = max_clients
        # The one lock.  Notified by leave() and close(); waited on only by
        # wait_until_empty(), which the server calls while shutting down.
        self._changed = threading.Condition()
        self._connected: Set[Chatter] = set()
        self._waiting: Deque[Chatter] = deque()  # FIFO, all in phase WAITING
        self._closed = False

    # -- Arriving and leaving ---------------------------------------------

    def arrive(self, chatter: Chatter) -> bool:
        """Admit a new connection; return False if the server is full or closed (§9.3)."""
        with self._changed:
            if self._closed or len(self._connected) >= self.max_clients:
                chatter.phase = Phase.CLOSED
                return False
            self._connected.add(chatter)
            return True

    def join(self, chatter: Chatter, nickname: str) -> Optional[Chatter]:
        """Name ``chatter`` and pair it with the longest waiter, or queue it (§7.1).

        Return the partner, who is owed ``#matched_to_``, or None when
        ``chatter`` now waits.
        """
        with self._changed:
            if chatter.phase is not Phase.NICKNAME:
                return None  # closed by shutdown while it chose a name
            chatter.nickname = nickname
            partner = self._next_live_waiter()
            if partner is None:
                chatter.phase = Phase.WAITING
                self._waiting.append(chatter)
                self._owe(chatter, notice(Notice.WAIT))
                return None
            self._pair(chatter, partner)
            return partner

    def leave(self, chatter: Chatter) -> Optional[Chatter]:
        """Forget ``chatter``; return its partner, who is now owed ``#user_quit`` (§8)."""
        with self._changed:
            partner = chatter.partner
            if partner is not None:
                self._unpair(chatter, partner)
                self._owe(partner, notice(Notice.USER_QUIT))
            self._withdraw(chatter)
            chatter.phase = Phase.CLOSED
            self._connected.discard(chatter)
            self._changed.notify_all()
            return partner

    def close(self) -> List[Chatter]:
        """Refuse newcomers, end every session, and return who is still connected (§10)."""
        with self._changed:
            self._closed = True
            for chatter in self._connected:
                chatter.partner = None
                chatter.phase = Phase.CLOSED
                self._owe(chatter, notice(Notice.SERVER_SHUTDOWN))
            self._waiting.clear()
            self._changed.notify_all()
            return list(self._connected)

    def wait_until_empty(self, timeout: float) -> bool:
        """Block until every connection has left; return False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._connected, timeout)

    # -- While connected ---------------------------------------------------

    def relay(self, sender: Chatter, line: bytes) -> Optional[Chatter]:
        """Owe ``line`` to the sender's partner; return who is owed something (§7.2, §7.3).

        A sender still waiting is owed ``#wait`` instead: the line goes
        nowhere, and it is told so.  A sender whose session has ended is
        owed nothing: it has already been told why (§8).
        """
        return self.relay_lines(sender, [line])

    def relay_lines(self, sender: Chatter, lines: List[bytes]) -> Optional[Chatter]:
        """Do what :meth:`relay` does for each of ``lines``, in one step under the lock."""
        with self._changed:
            if sender.phase is Phase.CHATTING:
                assert sender.partner is not None
                for line in lines:
                    self._owe(sender.partner, line)
                return sender.partner
            if sender.phase is Phase.WAITING:
                for _ in lines:
                    self._owe(sender, notice(Notice.WAIT))
                return sender
            return None

    def rename(self, chatter: Chatter, nickname: str) -> Optional[Chatter]:
        """Change a nickname and tell both sides (§5.2); return the partner, if any."""
        with self._changed:
            if chatter.phase is Phase.CLOSED:
                return None
            chatter.nickname = nickname
            self._owe(chatter, notice(Notice.NICKNAME_CHANGED, nickname))
            partner = chatter.partner
            if partner is not None:
                self._owe(partner, notice(Notice.PARTNER_RENAMED, nickname))
            return partner

    def owe(self, chatter: Chatter, line: bytes) -> None:
        """Queue a line for ``chatter``, in order with everything else it is owed."""
        with self._changed:
            self._owe(chatter, line)

    def owe_reply(self, chatter: Chatter, line: bytes) -> bool:
        """Queue a reply to a line ``chatter`` sent; return False if its session is over.

        Once a session is closed its last line is already owed: #user_quit
        or #server_shutdown.  A reply to a line read after that would follow
        the final notice (§6, §8), so it is not sent, and the caller learns
        that it should stop reading (§7.4).
        """
        with self._changed:
            if chatter.phase is Phase.CLOSED:
                return False
            self._owe(chatter, line)
            return True

    def take_owed(self, chatter: Chatter) -> bytes:
        """Remove and return everything ``chatter`` is owed, as one block of lines."""
        with self._changed:
            owed = b"".join(chatter.outbox)
            chatter.outbox.clear()
            return owed

    def phase_of(self, chatter: Chatter) -> Phase:
        """Return the phase of ``chatter`` as of now."""
        with self._changed:
            return chatter.phase

    # -- Helpers: the caller must hold the lock ----------------------------

    def _owe(self, chatter: Chatter, line: bytes) -> None:
        """Append to an outbox; call with the lock held."""
        chatter.outbox.append(line)

    def _pair(self, chatter: Chatter, partner: Chatter) -> None:
        """Pair two chatters and owe each the other's name; call with the lock held."""
        chatter.partner, partner.partner = partner, chatter
        chatter.phase = partner.phase = Phase.CHATTING
        self._owe(partner, notice(Notice.MATCHED_TO, chatter.nickname))
        self._owe(chatter, notice(Notice.MATCHED_TO, partner.nickname))

    def _unpair(self, chatter: Chatter, partner: Chatter) -> None:
        """End a pair on both sides at once; call with the lock held."""
        chatter.partner = partner.partner = None
        chatter.phase = partner.phase = Phase.CLOSED

    def _next_live_waiter(self) -> Optional[Chatter]:
        """Pop the longest waiter whose client is still there; call with the lock held.

        A waiter's own thread withdraws it when it reads the close, but a
        newcomer may be paired in the moment between the close arriving and
        that thread waking.  Asking first closes that window (§7.2).
        """
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.hung_up():
                return waiter
            waiter.phase = Phase.CLOSED  # its own thread will leave() soon
        return None

    def _withdraw(self, chatter: Chatter) -> None:
        """Take a chatter out of the waiting queue if it is there; call with the lock held."""
        if chatter.phase is Phase.WAITING:
            self._waiting.remove(chatter)
