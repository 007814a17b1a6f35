"""The Matchmaker: who is connected, who is waiting, who is paired with whom.

This is the only state that handler threads share, and all of it sits behind
one lock, the Condition ``self._changed``.  It is shaped like CPython's
``queue.Queue``: small methods, each of which takes the lock, changes a few
fields and lets go.  No socket is touched here, and nothing that can block
runs while the lock is held (see "Locks" below).

Every event of §7.5 that involves more than one connection's own thread
comes here, and each one moves a phase by the state table alone:
``Matchmaker._move`` looks the event up with
:func:`mechat.protocol.next_phase`, which raises for an event the table has
no cell for.  A closed session takes no more events (§7.4): ``_move``
refuses them, and the method that was asked reports the session over.
Each public method returns a :class:`Step`, the one shape in which the
handler hears what its event did.

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

Locks.  The Matchmaker's lock is one of three kinds in the server; the
other two belong to each connection (:mod:`mechat.connection` says why).
The order is fixed: a connection's send lock may be held while this lock is
taken (to empty its outbox), never the other way round, and this lock is
never held with a connection's life lock.  So while the lock is held no
thread waits for anything but the lock itself, and no thread calls the
operating system about a socket: :meth:`Matchmaker.join` asks whether the
longest waiter has hung up *before* it takes the lock.
tests/test_locks.py checks that no socket call runs under it.

The Condition has one waiter: the server thread during shutdown, in
:meth:`Matchmaker.wait_until_empty`.  :meth:`~Matchmaker.leave` notifies it each time a
connection goes.  Pairing needs no waiting at all: the second client's
thread does the whole match, so neither handler ever blocks here.
"""

import fnmatch
import re
import threading
from collections import deque
from typing import Callable, Deque, Dict, List, NamedTuple, Optional, Set, Tuple

from mechat.protocol import (
    ANSWERS,
    CLOSED,
    DEFAULT_MAX_CLIENTS,
    Event,
    Notice,
    Phase,
    list_line,
    next_phase,
    notice,
)


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
        #: Octets in the outbox, so that a handler knows when to write it out early.
        self.owed = 0
        #: Octets written to the outbox but not yet taken by the socket: the
        #: server's connection keeps it (its send queue, §9.6), under its own
        #: lock; others read it without one, as a hint.
        self.queued = 0

    def hung_up(self) -> bool:
        """Tell whether the client has already closed or reset; the server knows how."""
        return False

    def __repr__(self) -> str:
        return "<%s %s %r %s>" % (type(self).__name__, self.address, self.nickname, self.phase.name)


class Step(NamedTuple):
    """What one event did, as the Matchmaker tells the thread that brought it.

    ``phase`` is the phase of the chatter the event happened to, afterwards.
    ``filled`` are the chatters whose outboxes it added to: the caller writes
    them out at its next flush point.  ``ended`` are the other sessions it
    closed: the caller wakes their handlers, which may be idle in recv() (§8).
    """

    phase: Phase
    filled: Tuple[Chatter, ...] = ()
    ended: Tuple[Chatter, ...] = ()


#: The event of every relayed batch, as a plain name (see protocol.CLOSED for why).
MESSAGE = Event.MESSAGE

#: The Step of an event that came after its session was closed (§7.4).
SESSION_OVER = Step(Phase.CLOSED)


class Matchmaker:
    """Pairs chatters first come, first served, and keeps what each is owed."""

    def __init__(self, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        self.max_clients = max_clients
        # The one lock.  Notified by leave() and close(); waited on only by
        # wait_until_empty(), which the server calls while shutting down.
        self._changed = threading.Condition()
        self._connected: Set[Chatter] = set()
        self._waiting: Deque[Chatter] = deque()  # FIFO, all in phase WAITING
        #: Every named chatter, by its nickname in lower case (§3.1).
        self._named: Dict[str, Chatter] = {}
        #: The same names, lower case to as chosen, for /who to copy at C speed.
        self._nicknames: Dict[str, str] = {}
        self._closed = False

    # -- Arriving and leaving ---------------------------------------------

    def arrive(self, chatter: Chatter) -> Step:
        """Admit a new connection, or owe it #server_full if the server is full or closed (§9.3)."""
        with self._changed:
            if self._closed or len(self._connected) >= self.max_clients:
                return self._answer(chatter, Event.SERVER_FULL)
            self._connected.add(chatter)
            return Step(chatter.phase)

    def join(self, chatter: Chatter, nickname: str) -> Step:
        """Name ``chatter`` and pair it with the longest waiter, or queue it (§7.1).

        ``filled`` is ``(chatter,)`` when it now waits, and ``(chatter,
        partner)`` when it was matched.  A nickname that another client
        holds, in any case, is refused in the same step that would take it
        (§3.1), so two clients racing for one name can never both get it.
        """
        while True:
            waiter = self._live_waiter()
            with self._changed:
                if self._head() is not waiter:
                    continue  # the queue moved on while we looked: look again
                if chatter.phase is not CLOSED and self._holder(nickname) is not None:
                    return self._answer(chatter, Event.NICKNAME_TAKEN)
                if not self._move(chatter, Event.NICKNAME):
                    return SESSION_OVER  # closed by shutdown while it chose a name
                self._name(chatter, nickname)
                return self._queue_up(chatter, waiter)

    def next_partner(self, chatter: Chatter) -> Step:
        """End a chat and queue up for another partner, never the same one (§5.7).

        The partner is told ``#user_quit`` and closed, as if the sender had
        sent /quit; it is closed, so it cannot be in the queue to be
        matched again.  A waiting client is told ``#wait`` and keeps its place.
        """
        while True:
            waiter = self._live_waiter()
            with self._changed:
                if self._head() is not waiter:
                    continue
                partner = chatter.partner
                if not self._move(chatter, Event.NEXT):
                    return SESSION_OVER
                if partner is None:  # waiting: it keeps its place
                    self._post(chatter, notice(Notice.WAIT))
                    return Step(chatter.phase, (chatter,))
                self._unpair(chatter, partner)
                step = self._queue_up(chatter, waiter)
                return Step(step.phase, (*step.filled, partner), (partner,))

    def leave(self, chatter: Chatter, event: Event) -> Step:
        """Forget ``chatter`` after ``event``; its partner is owed ``#user_quit`` and ended (§8).

        ``event`` is how it went: /quit, a hang-up, or a write that failed
        (§9.4).  A session that is already over just leaves.
        """
        with self._changed:
            partner = chatter.partner
            if partner is not None:
                self._unpair(chatter, partner)
            self._withdraw(chatter)
            self._move(chatter, event)
            self._connected.discard(chatter)
            self._changed.notify_all()
            if partner is None:
                return SESSION_OVER
            return Step(Phase.CLOSED, (partner,), (partner,))

    def close(self) -> List[Chatter]:
        """Refuse newcomers, end every session, and return who is still connected (§10)."""
        with self._changed:
            self._closed = True
            for chatter in self._connected:
                chatter.partner = None
                self._answer(chatter, Event.SHUTDOWN)
            self._waiting.clear()
            self._changed.notify_all()
            return list(self._connected)

    def wait_until_empty(self, timeout: float) -> bool:
        """Block until every connection has left; return False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._connected, timeout)

    # -- While connected ---------------------------------------------------

    def relay(self, sender: Chatter, lines: List[bytes]) -> Step:
        """Owe ``lines`` to the sender's partner, in order, in one step (§7.2, §7.3).

        A sender still waiting is owed one ``#wait`` a line instead: the
        lines go nowhere, and it is told so.
        """
        with self._changed:
            partner = sender.partner
            if not self._move(sender, MESSAGE):
                return SESSION_OVER
            if partner is None:  # still waiting: nobody to relay to
                for _ in lines:
                    self._post(sender, notice(Notice.WAIT))
                return Step(sender.phase, (sender,))
            for line in lines:
                self._post(partner, line)
            return Step(sender.phase, (partner,))

    def rename(self, chatter: Chatter, nickname: str) -> Step:
        """Change a nickname and tell both sides (§5.2), unless another client holds it (§3.1)."""
        with self._changed:
            if self._holder(nickname) not in (None, chatter):
                return self._answer(chatter, Event.NICKNAME_TAKEN)
            if not self._move(chatter, Event.RENAME):
                return SESSION_OVER
            self._unname(chatter)
            self._name(chatter, nickname)
            self._post(chatter, notice(Notice.NICKNAME_CHANGED, nickname))
            partner = chatter.partner
            if partner is None:
                return Step(chatter.phase, (chatter,))
            self._post(partner, notice(Notice.PARTNER_RENAMED, nickname))
            return Step(chatter.phase, (chatter, partner))

    def refuse(self, chatter: Chatter, event: Event) -> Step:
        """Owe ``chatter`` the notice that refuses a line it sent (§6); ``event`` says why.

        Once a session is closed its last line is already owed: #user_quit
        or #server_shutdown.  A refusal of a line read after that would
        follow the final notice (§6, §8), so it is not owed.
        """
        with self._changed:
            return self._answer(chatter, event)

    def time_out(self, chatter: Chatter) -> Step:
        """End a session that chose no nickname in time, and owe it the reason (§9.2)."""
        with self._changed:
            return self._answer(chatter, Event.TIMEOUT)

    def who(self, chatter: Chatter, pattern: str) -> Step:
        """Owe ``chatter`` the list of named clients whose nickname matches ``pattern`` (§5.4, §6.1).

        Matching, sorting and formatting 10,000 names takes milliseconds,
        and every handler waits while the lock is held.  So the lock is held
        only to copy the names (a dict copy, in C) and then to post the
        list; the list is of the names held at the moment of the copy.
        """
        with self._changed:
            names = list(self._nicknames.items())
        if pattern != "*":
            matches = matcher(pattern)
            names = [(key, nickname) for key, nickname in names if matches(key)]
        line = list_line(Notice.ONLINE, [nickname for _, nickname in names])
        with self._changed:
            if not self._move(chatter, Event.WHO):
                return SESSION_OVER
            self._post(chatter, line)
            return Step(chatter.phase, (chatter,))

    def direct(self, sender: Chatter, nickname: str, text: bytes) -> Step:
        """Owe the client named ``nickname`` a direct message, and the sender its receipt (§5.5).

        The receipt spells the nickname as its holder chose it; a nickname
        that nobody holds is echoed as the sender wrote it.
        """
        with self._changed:
            recipient = self._holder(nickname)
            if not self._move(sender, Event.DIRECT):
                return SESSION_OVER
            if recipient is None:
                self._post(sender, notice(Notice.NO_SUCH_USER, nickname))
                return Step(sender.phase, (sender,))
            self._post(recipient, notice(Notice.FROM, sender.nickname, text))
            self._post(sender, notice(Notice.SENT_TO, recipient.nickname))
            return Step(sender.phase, (recipient, sender))

    def broadcast(self, sender: Chatter, text: bytes) -> Step:
        """Owe every other named client the sender's text, and the sender their count (§5.6)."""
        with self._changed:
            if not self._move(sender, Event.BROADCAST):
                return SESSION_OVER
            line = notice(Notice.ALL_FROM, sender.nickname, text)
            recipients = tuple(other for other in self._named.values() if other is not sender)
            for recipient in recipients:
                self._post(recipient, line)
            self._post(sender, notice(Notice.BROADCAST, str(len(recipients))))
            return Step(sender.phase, (*recipients, sender))

    def take_outbox(self, chatter: Chatter) -> bytes:
        """Empty the outbox of ``chatter``, and return its lines as one block."""
        with self._changed:
            lines = b"".join(chatter.outbox)
            chatter.outbox.clear()
            chatter.owed = 0
            return lines

    def phase_of(self, chatter: Chatter) -> Phase:
        """Return the phase of ``chatter`` as of now."""
        with self._changed:
            return chatter.phase

    # -- Helpers: the caller must hold the lock ----------------------------

    def _move(self, chatter: Chatter, event: Event) -> bool:
        """Move ``chatter`` by the state table; return False if its session was over.

        The only place a phase changes (§7.5).  Call with the lock held.
        """
        if chatter.phase is CLOSED:
            return False  # §7.4: a closed session takes no more events
        chatter.phase = next_phase(chatter.phase, event)
        if chatter.phase is CLOSED:
            self._unname(chatter)  # §3.1: a closed session's name is free at once
        return True

    def _answer(self, chatter: Chatter, event: Event) -> Step:
        """Move ``chatter`` by ``event`` and owe it the notice ANSWERS gives, unless its session was over.

        Every event that only its own client is told of takes this shape.
        Call with the lock held.
        """
        if not self._move(chatter, event):
            return SESSION_OVER
        self._post(chatter, notice(ANSWERS[event]))
        return Step(chatter.phase, (chatter,))

    def _post(self, chatter: Chatter, line: bytes) -> None:
        """Append a line to the outbox of ``chatter``; call with the lock held."""
        chatter.outbox.append(line)
        chatter.owed += len(line)

    def _pair(self, chatter: Chatter, partner: Chatter) -> None:
        """Pair two chatters and owe each the other's name; call with the lock held."""
        chatter.partner, partner.partner = partner, chatter
        self._move(partner, Event.PARTNER_FOUND)
        self._move(chatter, Event.PARTNER_FOUND)
        self._post(partner, notice(Notice.MATCHED_TO, chatter.nickname))
        self._post(chatter, notice(Notice.MATCHED_TO, partner.nickname))

    def _unpair(self, chatter: Chatter, partner: Chatter) -> None:
        """End a pair; the partner is owed #user_quit and closed.  Call with the lock held."""
        chatter.partner = partner.partner = None
        self._move(partner, Event.PARTNER_LEFT)
        self._post(partner, notice(Notice.USER_QUIT))

    def _queue_up(self, chatter: Chatter, waiter: Optional[Chatter]) -> Step:
        """Pair a chatter just made WAITING with ``waiter``, or queue it; call with the lock held."""
        if waiter is None:
            self._waiting.append(chatter)
            self._post(chatter, notice(Notice.WAIT))
            return Step(chatter.phase, (chatter,))
        self._waiting.popleft()
        self._pair(chatter, waiter)
        return Step(chatter.phase, (chatter, waiter))

    def _holder(self, nickname: str) -> Optional[Chatter]:
        """Return the chatter named ``nickname`` in any case, or None; call with the lock held."""
        return self._named.get(nickname.lower())

    def _name(self, chatter: Chatter, nickname: str) -> None:
        """Give ``chatter`` a nickname no other holds; call with the lock held."""
        chatter.nickname = nickname
        self._named[nickname.lower()] = chatter
        self._nicknames[nickname.lower()] = nickname

    def _unname(self, chatter: Chatter) -> None:
        """Free the nickname of ``chatter``, if it holds one; call with the lock held."""
        key = chatter.nickname.lower()
        if self._named.get(key) is chatter:
            del self._named[key]
            del self._nicknames[key]

    def _withdraw(self, chatter: Chatter) -> None:
        """Take a chatter out of the waiting queue if it is there; call with the lock held."""
        if chatter.phase is Phase.WAITING:
            self._waiting.remove(chatter)

    def _head(self) -> Optional[Chatter]:
        """Return the longest waiter, or None; call with the lock held."""
        return self._waiting[0] if self._waiting else None

    # -- The ghost waiter: call without the lock ---------------------------

    def _live_waiter(self) -> Optional[Chatter]:
        """Return the longest waiter whose client is still there, forgetting any that is not (§7.2).

        A waiter's own thread leaves the Matchmaker when it reads the close,
        but a newcomer may come in the moment between the close arriving and
        that thread waking.  Asking first closes that window.  The question
        goes to the waiter's socket, so it is asked without the lock.
        """
        while True:
            with self._changed:
                waiter = self._head()
            if waiter is None or not waiter.hung_up():
                return waiter
            with self._changed:
                if waiter.phase is Phase.WAITING:
                    self._withdraw(waiter)
                    self._move(waiter, Event.HANG_UP)


def matcher(pattern: str) -> Callable[[str], object]:
    """Return a test of a lower-case nickname against a /who pattern (§6.1).

    ``*`` stands for any run of characters and ``?`` for one, as in
    :mod:`fnmatch`, in any case.  A ``[`` is itself, not the start of a
    set.  The pattern is compiled here rather than by fnmatch.fnmatch(),
    whose cache keeps up to 32,768 patterns a client could choose; the re
    module's own cache is bounded, and a pattern is at most 30 characters.
    """
    return re.compile(fnmatch.translate(pattern.lower().replace("[", "[[]"))).fullmatch
