"""The Matchmaker: who is connected, who is waiting, who is paired with whom, who is in which room.

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
Each public method returns a :class:`~mechat.chatter.Step`, the one shape in which the
handler hears what its event did.

Handlers never write to each other's sockets without asking the Matchmaker
first.  Every line that some connection is owed, whether a notice or a
partner's message, is appended to that connection's :attr:`~mechat.chatter.Chatter.outbox`
*under the lock*.  The order of the appends is therefore the order in which
the Matchmaker decided things, and the server writes each outbox in that
order.  That is what makes these races impossible:

* a waiting client is told ``#wait`` about a line it sent just before it was
  matched, but the ``#wait`` is written *after* ``#matched_to_`` (§7.2);
* a partner's last message is written after ``#user_quit`` (§8);
* a room's members are told its lines, entries and exits in one order, so
  none gets a line from someone after that someone's ``#exited_`` (§7.6).

Pairing and unpairing always change both sides in one step under the lock,
so no thread ever sees half a pair.  A chatter is in the waiting queue only
while its phase is WAITING, and it is removed in the same step that changes
its phase, so a client that has left is never handed out as a partner (the
"ghost waiter"), and a waiting client is never matched with itself.

Rooms and names are part of this state too.  Their data lives in
:mod:`mechat.rooms` and :mod:`mechat.names`, plain classes with no lock of
their own that this class uses under its lock: the data is split by
concern, the lock is not.  A client is in one place at a time, the queue,
a pair or one room, and :meth:`Matchmaker.join_room` moves it from any of
them in one step.

Accounts are part of it in the same way (§5.13-§5.16, §7.7), and their
steps are in :mod:`mechat.account_steps`, a mix-in of this class under
this same lock.  The store itself, SQLite, is never called under it: the
handler (:mod:`mechat.logins`) calls the store between two of those
steps.  The names of all accounts are mirrored in
:attr:`~mechat.account_steps.AccountSteps.accounts`, so that a guest's
nickname is checked against them in the same step that takes it.  What
one connection is, to the Matchmaker, and what a step did, are plain
data in :mod:`mechat.chatter`.

Locks.  The Matchmaker's lock is one of several kinds in the server
(docs/architecture.rst has the table); the others that handlers meet
belong to each connection (:mod:`mechat.connection` says why).
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

import threading
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Set, Tuple

from mechat.account_steps import AccountSteps
from mechat.chatter import SESSION_OVER, Chatter, Step
from mechat.names import Names, matching
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
from mechat.rooms import Room, Rooms

#: The event of every relayed batch, as a plain name (see protocol.CLOSED for why).
MESSAGE = Event.MESSAGE


class Matchmaker(AccountSteps):
    """Pairs chatters first come, first served, and keeps what each is owed."""

    def __init__(self, max_clients: int = DEFAULT_MAX_CLIENTS, rooms: Optional[Rooms] = None) -> None:
        self.max_clients = max_clients
        self.rooms = rooms if rooms is not None else Rooms()
        # The one lock.  Notified by leave() and close(); waited on only by
        # wait_until_empty(), which the server calls while shutting down.
        self._changed = threading.Condition()
        self._connected: Set[Chatter] = set()
        self._waiting: Deque[Chatter] = deque()  # FIFO, all in phase WAITING
        #: Every named chatter, by its nickname in any case (§3.1).
        self._named: Names[Chatter] = Names()
        #: Every account's name (§3.1, §5.15), mirrored from the store so that
        #: a name is checked under the lock without a database call.
        self.accounts: Names[bool] = Names()
        #: Names being registered: taken, while the store makes the account.
        self._reserved: Names[Chatter] = Names()
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

        def name_and_queue(waiter: Optional[Chatter]) -> Step:
            if chatter.phase is not CLOSED and self._taken(nickname, chatter):
                return self._answer(chatter, Event.NICKNAME_TAKEN)
            if not self._move(chatter, Event.NICKNAME):
                return SESSION_OVER  # closed by shutdown while it chose a name
            self._name(chatter, nickname)
            return self._queue_up(chatter, waiter)

        return self._with_live_waiter(name_and_queue)

    def next_partner(self, chatter: Chatter) -> Step:
        """End a chat and queue up for another partner, never the same one (§5.7).

        The partner is told ``#user_quit`` and closed, as if the sender had
        sent /quit; it is closed, so it cannot be in the queue to be
        matched again.  A waiting client is told ``#wait`` and keeps its place.
        """

        def requeue(waiter: Optional[Chatter]) -> Step:
            partner = chatter.partner
            if not self._move(chatter, Event.NEXT):
                return SESSION_OVER
            if partner is None:  # waiting: it keeps its place
                chatter.owe(notice(Notice.WAIT))
                return Step(chatter.phase, (chatter,))
            self._unpair(chatter, partner)
            step = self._queue_up(chatter, waiter)
            return Step(step.phase, (*step.filled, partner), (partner,))

        return self._with_live_waiter(requeue)

    def leave(self, chatter: Chatter, event: Event, last_word: Optional[Notice] = None) -> Step:
        """Forget ``chatter`` after ``event``; its partner is owed ``#user_quit`` and ended (§8).

        ``event`` is how it went: /quit, a hang-up, a write that failed
        (§9.4), or one failed login too many, whose ``last_word`` is owed to
        it first (§9.11).  A session that is already over just leaves.
        """
        with self._changed:
            if last_word is not None and chatter.phase is not CLOSED:
                chatter.owe(notice(last_word))
            partner = chatter.partner
            if partner is not None:
                self._unpair(chatter, partner)
            members = self._exit(chatter)
            self._withdraw(chatter)
            self._move(chatter, event)
            self._connected.discard(chatter)
            self._changed.notify_all()
            if partner is not None:
                return Step(CLOSED, (partner,), (partner,))
            return Step(CLOSED, tuple(members))

    def close(self) -> List[Chatter]:
        """Refuse newcomers, end every session, and return who is still connected (§10)."""
        with self._changed:
            self._closed = True
            for chatter in self._connected:
                chatter.partner = chatter.room = None
                self._answer(chatter, Event.SHUTDOWN)
            self._waiting.clear()
            self.rooms.empty_all()
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
            if sender.room is not None:
                return Step(sender.phase, tuple(sender.room.say(sender, lines)))
            if partner is None:  # still waiting: nobody to relay to
                for _ in lines:
                    sender.owe(notice(Notice.WAIT))
                return Step(sender.phase, (sender,))
            for line in lines:
                partner.owe(line)
            return Step(sender.phase, (partner,))

    def rename(self, chatter: Chatter, nickname: str) -> Step:
        """Change a nickname and tell both sides (§5.2), unless another client holds it (§3.1)."""
        with self._changed:
            if chatter.account:
                return self._answer(chatter, Event.NICKNAME_LOCKED)  # §5.2: an account's name is its own
            if self._taken(nickname, chatter):
                return self._answer(chatter, Event.NICKNAME_TAKEN)
            if not self._move(chatter, Event.RENAME):
                return SESSION_OVER
            old = chatter.nickname
            self._named.discard(chatter.nickname, chatter)
            self._name(chatter, nickname)
            chatter.owe(notice(Notice.NICKNAME_CHANGED, nickname))
            if chatter.room is not None:
                told = chatter.room.renamed(chatter, old)
                return Step(chatter.phase, (chatter, *told))
            partner = chatter.partner
            if partner is None:
                return Step(chatter.phase, (chatter,))
            partner.owe(notice(Notice.PARTNER_RENAMED, nickname))
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
        return self._list(chatter, Event.WHO, self._named, pattern)

    def direct(self, sender: Chatter, nickname: str, text: bytes) -> Step:
        """Owe the client named ``nickname`` a direct message, and the sender its receipt (§5.5).

        The receipt spells the nickname as its holder chose it; a nickname
        that nobody holds is echoed as the sender wrote it.
        """
        with self._changed:
            recipient = self._named.holder(nickname)
            if recipient is None and self.accounts.holder(nickname):
                if not self._move(sender, Event.STORE):
                    return SESSION_OVER
                return Step(sender.phase, store_for=self.accounts.spelling(nickname))
            if not self._move(sender, Event.DIRECT):
                return SESSION_OVER
            if recipient is None:
                sender.owe(notice(Notice.NO_SUCH_USER, nickname))
                return Step(sender.phase, (sender,))
            delivered = self._deliver(recipient, notice(Notice.FROM, sender.nickname, text))
            sender.owe(notice(Notice.SENT_TO, recipient.nickname))
            return Step(sender.phase, (*delivered, sender))

    def broadcast(self, sender: Chatter, text: bytes) -> Step:
        """Owe every other named client the sender's text, and the sender their count (§5.6)."""
        with self._changed:
            if not self._move(sender, Event.BROADCAST):
                return SESSION_OVER
            line = notice(Notice.ALL_FROM, sender.nickname, text)
            recipients = [other for other in self._named.holders() if other is not sender]
            filled = [chatter for recipient in recipients for chatter in self._deliver(recipient, line)]
            sender.owe(notice(Notice.BROADCAST, str(len(recipients))))
            return Step(sender.phase, (*filled, sender))

    # -- Rooms (§5.8-§5.12, §7.6) -------------------------------------------

    def create_room(self, chatter: Chatter, name: str) -> Step:
        """Make a room, unless one of that name exists or there are enough (§5.8); nobody joins it."""
        with self._changed:
            if not self._move(chatter, Event.CREATE):
                return SESSION_OVER
            chatter.owe(self.rooms.create(name))
            return Step(chatter.phase, (chatter,))

    def list_rooms(self, chatter: Chatter, pattern: str) -> Step:
        """Owe ``chatter`` the rooms whose name matches ``pattern`` (§5.9), copied as /who copies."""
        return self._list(chatter, Event.ROOMS, self.rooms.names, pattern)

    def join_room(self, chatter: Chatter, name: str) -> Step:
        """Move ``chatter`` into a room from wherever it is (§5.10), in one step.

        It leaves the queue, its partner (who is told ``#user_quit`` and
        closed) or its room (whose members are told ``#exited_``), and the
        members of the new room are told ``#entered_``, all under the lock:
        no member ever sees it in two places.  An unknown or full room
        changes nothing.
        """
        with self._changed:
            room = self.rooms.find(name)
            if chatter.phase is CLOSED:
                return SESSION_OVER
            if room is chatter.room and room is not None:  # already there: nothing else happens
                self._move(chatter, Event.JOIN)
                chatter.owe(notice(Notice.JOINED, room.name))
                return Step(chatter.phase, (chatter,))
            if room is None or self.rooms.is_full(room):
                self._move(chatter, Event.JOIN_REFUSED)
                refusal = Notice.NO_SUCH_ROOM if room is None else Notice.ROOM_FULL
                chatter.owe(notice(refusal, name if room is None else room.name))
                return Step(chatter.phase, (chatter,))
            partner = chatter.partner
            if partner is not None:
                self._unpair(chatter, partner)
            left_behind = self._exit(chatter)
            self._withdraw(chatter)
            self._move(chatter, Event.JOIN)
            entered = room.enter(chatter)
            ended = (partner,) if partner is not None else ()
            return Step(chatter.phase, (chatter, *ended, *left_behind, *entered), ended)

    def members(self, chatter: Chatter) -> Step:
        """Owe ``chatter`` the members of its room (§5.11), or ``#not_in_room``.

        The list is made outside the lock, from a copy, as /who's is; it is
        posted only if the room has not changed since the copy, so it never
        names someone whose exit its reader was already told of.  A room
        that keeps changing gets its list made under the lock, after
        :data:`MEMBERS_TRIES` tries.
        """
        for _ in range(MEMBERS_TRIES):
            with self._changed:
                room = chatter.room
                if room is None:
                    return self._post_members(chatter, None, None)
                version, names = room.version, room.nicknames()
            line = list_line(Notice.MEMBERS, names)
            with self._changed:
                if chatter.room is room and room.version == version:
                    return self._post_members(chatter, room, line)
        with self._changed:
            return self._post_members(chatter, chatter.room, None)

    def leave_room(self, chatter: Chatter) -> Step:
        """Leave the room and go back to pairing (§5.12): ``#left_``, then ``#wait`` or a match."""

        def exit_and_queue(waiter: Optional[Chatter]) -> Step:
            room = chatter.room
            if not self._move(chatter, Event.LEAVE):
                return SESSION_OVER
            if room is None:
                chatter.owe(notice(Notice.NOT_IN_ROOM))
                return Step(chatter.phase, (chatter,))
            told = room.exit(chatter)
            chatter.owe(notice(Notice.LEFT, room.name))
            step = self._queue_up(chatter, waiter)
            return Step(step.phase, (*step.filled, *told))

        return self._with_live_waiter(exit_and_queue)

    def take_outbox(self, chatter: Chatter) -> bytes:
        """Empty the outbox of ``chatter``, and return its lines as one block."""
        with self._changed:
            lines = b"".join(chatter.outbox)
            chatter.outbox.clear()
            chatter.owed = 0
            chatter.taken += len(lines)
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
            self._named.discard(chatter.nickname, chatter)  # §3.1: a closed session's name is free at once
        return True

    def _answer(self, chatter: Chatter, event: Event) -> Step:
        """Move ``chatter`` by ``event`` and owe it the notice ANSWERS gives, unless its session was over.

        Every event that only its own client is told of takes this shape.
        Call with the lock held.
        """
        if not self._move(chatter, event):
            return SESSION_OVER
        chatter.owe(notice(ANSWERS[event]))
        return Step(chatter.phase, (chatter,))

    def _pair(self, chatter: Chatter, partner: Chatter) -> None:
        """Pair two chatters and owe each the other's name; call with the lock held."""
        chatter.partner, partner.partner = partner, chatter
        self._move(partner, Event.PARTNER_FOUND)
        self._move(chatter, Event.PARTNER_FOUND)
        partner.owe(notice(Notice.MATCHED_TO, chatter.nickname))
        chatter.owe(notice(Notice.MATCHED_TO, partner.nickname))

    def _unpair(self, chatter: Chatter, partner: Chatter) -> None:
        """End a pair; the partner is owed #user_quit and closed.  Call with the lock held."""
        chatter.partner = partner.partner = None
        self._move(partner, Event.PARTNER_LEFT)
        partner.owe(notice(Notice.USER_QUIT))

    def _queue_up(self, chatter: Chatter, waiter: Optional[Chatter]) -> Step:
        """Pair a chatter just made WAITING with ``waiter``, or queue it; call with the lock held."""
        if waiter is None:
            self._waiting.append(chatter)
            chatter.owe(notice(Notice.WAIT))
            return Step(chatter.phase, (chatter,))
        self._waiting.popleft()
        self._pair(chatter, waiter)
        return Step(chatter.phase, (chatter, waiter))

    def _taken(self, name: str, chatter: Chatter) -> bool:
        """Tell whether ``name`` is another's, an account's or being registered (§3.1); hold the lock."""
        return (
            self._named.holder(name) not in (None, chatter)
            or self.accounts.holder(name) is not None
            or self._reserved.holder(name) is not None
        )

    def _deliver(self, recipient: Chatter, line: bytes) -> Tuple[Chatter, ...]:
        """Owe ``recipient`` a line, or park it while its login reads the mailbox; return whom to write."""
        if recipient.parked is not None:
            recipient.parked.append(line)
            return ()
        recipient.owe(line)
        return (recipient,)

    def _name(self, chatter: Chatter, nickname: str) -> None:
        """Give ``chatter`` a nickname no other holds; call with the lock held."""
        chatter.nickname = nickname
        self._named.add(nickname, chatter)

    def _withdraw(self, chatter: Chatter) -> None:
        """Take a chatter out of the waiting queue if it is there; call with the lock held."""
        if chatter.phase is Phase.WAITING:
            self._waiting.remove(chatter)

    def _list(self, chatter: Chatter, event: Event, names: "Names[Any]", pattern: str) -> Step:
        """Owe ``chatter`` the names that match ``pattern``, copied under the lock and listed outside it."""
        with self._changed:
            copied = names.copy()
        line = list_line(LISTS[event], matching(copied, pattern))
        with self._changed:
            if not self._move(chatter, event):
                return SESSION_OVER
            chatter.owe(line)
            return Step(chatter.phase, (chatter,))

    def _exit(self, chatter: Chatter) -> List[Chatter]:
        """Take ``chatter`` out of its room, if any; return the members told.  Call with the lock held."""
        return chatter.room.exit(chatter) if chatter.room is not None else []

    def _post_members(self, chatter: Chatter, room: Optional[Room], line: Optional[bytes]) -> Step:
        """Owe ``chatter`` the members' list, made now if ``line`` is None; call with the lock held."""
        if not self._move(chatter, Event.MEMBERS):
            return SESSION_OVER
        if room is None:
            line = notice(Notice.NOT_IN_ROOM)
        elif line is None:
            line = list_line(Notice.MEMBERS, room.nicknames())
        chatter.owe(line)
        return Step(chatter.phase, (chatter,))

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

    def _with_live_waiter(self, step: Callable[[Optional[Chatter]], Step]) -> Step:
        """Run ``step`` under the lock with the live longest waiter, or None, still at the head.

        Every event that may queue a chatter up (a nickname, /next, /leave)
        needs the head of the queue to be a waiter that is still there,
        which is asked without the lock; if the queue moved on while it was
        asked, it asks again.
        """
        while True:
            waiter = self._live_waiter()
            with self._changed:
                if self._head() is waiter:
                    return step(waiter)


#: The notice that answers each command that lists names from a copy.
LISTS = {Event.WHO: Notice.ONLINE, Event.ROOMS: Notice.ROOMS, Event.USERS: Notice.ACCOUNTS}

#: Tries that /members makes outside the lock before it makes the list under it.
MEMBERS_TRIES = 3
