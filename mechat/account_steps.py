"""The Matchmaker's steps for accounts: /register, /login, stored /msg, /users, /delete (§5.13-§5.16, §7.7).

:class:`AccountSteps` is a mix-in of :class:`mechat.matchmaker.Matchmaker`:
its methods run under the Matchmaker's one lock, on the Matchmaker's own
fields, like every other step.  They live here because they are a concern
of their own, and the Matchmaker's module would otherwise be twice the
size; the lock is not split, only the code.

The store itself is never called here (rule 7 of protocol 2): the handler
(:mod:`mechat.logins`) calls it between two of these steps.  So each step
is one side of a call to the store: a /register's name is reserved before
the hash and the insert, and a /login claims its name, reads its mailbox
outside the lock, then is owed the mailbox, with the lines sent to it
meanwhile parked until then.
"""

import threading
from typing import Any, Callable, Iterable, List, Optional, Tuple

from mechat.chatter import SESSION_OVER, Chatter, Step
from mechat.names import Names
from mechat.protocol import CLOSED, Event, Notice, notice


class AccountSteps:
    """The account steps of the Matchmaker; every method takes its lock, as the Matchmaker's own do."""

    # What the Matchmaker that mixes this in provides.
    _changed: threading.Condition
    _named: Names[Chatter]
    #: Every account's name (§3.1, §5.15), mirrored from the store so that
    #: a name is checked under the lock without a database call.
    accounts: Names[bool]
    #: Names being registered: taken, while the store makes the account.
    _reserved: Names[Chatter]
    _move: Callable[[Chatter, Event], bool]
    _answer: Callable[[Chatter, Event], Step]
    _queue_up: Callable[[Chatter, Optional[Chatter]], Step]
    _with_live_waiter: Callable[[Callable[[Optional[Chatter]], Step]], Step]
    _list: Callable[[Chatter, Event, "Names[Any]", str], Step]
    _taken: Callable[[str, Chatter], bool]
    _name: Callable[[Chatter, str], None]
    _unpair: Callable[[Chatter, Chatter], None]
    _exit: Callable[[Chatter], List[Chatter]]
    _withdraw: Callable[[Chatter], None]

    def know_accounts(self, names: Iterable[str]) -> None:
        """Learn the names of the accounts in the store, as the server starts."""
        with self._changed:
            for name in names:
                self.accounts.add(name, True)

    def reserve(self, chatter: Chatter, name: str) -> Optional[Step]:
        """Hold ``name`` while the store makes its account, or return the step refusing it (§5.13)."""
        with self._changed:
            if self._taken(name, chatter):
                return self._answer(chatter, Event.NICKNAME_TAKEN)
            self._reserved.add(name, chatter)
            return None

    def unreserve(self, chatter: Chatter, name: str) -> None:
        """Free a name held by :meth:`reserve` whose account the store did not make."""
        with self._changed:
            self._reserved.discard(name, chatter)

    def register(self, chatter: Chatter, name: str) -> Step:
        """Log ``chatter`` in to the account just made, and queue it up as a nickname would (§5.13)."""

        def log_in_and_queue(waiter: Optional[Chatter]) -> Step:
            self._reserved.discard(name, chatter)
            self.accounts.add(name, True)
            if not self._move(chatter, Event.REGISTER):
                return SESSION_OVER
            chatter.owe(notice(Notice.REGISTERED, name))
            self._log_in(chatter, name)
            return self._queue_up(chatter, waiter)

        return self._with_live_waiter(log_in_and_queue)

    def claim(self, chatter: Chatter, name: str) -> Optional[Step]:
        """Log ``chatter`` in to ``name`` and end the account's older session, if any (§5.14).

        ``chatter`` keeps its phase while its handler reads the mailbox:
        lines sent to it meanwhile are parked, and the mailbox is then
        delivered before them by :meth:`deliver_mailbox`.  Return None,
        changing nothing, if the account is gone or not yet made: deleted,
        or still being registered, since its password was checked.
        """
        with self._changed:
            if chatter.phase is CLOSED:
                return SESSION_OVER
            if self.accounts.holder(name) is None or self._reserved.holder(name) is not None:
                return None
            older = self._named.holder(name)
            if older is not None and not older.account:  # a guest cannot hold an account's name
                return None
            replaced = self._replace(older) if older is not None else Step(CLOSED)
            self._log_in(chatter, name)
            chatter.parked = []
            chatter.owe(notice(Notice.LOGGED_IN, name))
            return Step(chatter.phase, (chatter, *replaced.filled), replaced.ended)

    def deliver_mailbox(self, chatter: Chatter, stored: List[Tuple[int, bytes]]) -> Step:
        """Owe the mailbox read at login, oldest first; queue up; then owe the parked lines (§5.14, §7.7).

        ``stored`` is ``(id, line)`` for each message read.  Messages
        stored while it was read are in ``chatter.late``; the store gives
        ids in the order it stores, so sorting by id puts all of them in
        that order, and a message in both is owed once.
        """

        def deliver_and_queue(waiter: Optional[Chatter]) -> Step:
            if chatter.phase is CLOSED:  # replaced or shut down meanwhile: the store keeps its mail
                return SESSION_OVER
            mail = dict(stored)
            mail.update(chatter.late)
            for message_id in sorted(mail):
                chatter.owe(mail[message_id])
            chatter.stored_up_to = max(mail, default=0)
            chatter.stored_mark = chatter.taken + chatter.owed
            parked, chatter.parked, chatter.late = chatter.parked or [], None, []
            self._move(chatter, Event.LOGIN)
            step = self._queue_up(chatter, waiter)
            for line in parked:
                chatter.owe(line)
            return step

        return self._with_live_waiter(deliver_and_queue)

    def stored(self, sender: Chatter, name: str, message_id: int, line: bytes) -> Step:
        """Owe the sender ``#stored_for_`` once the message is on disk (§5.5), and hand it to a new login.

        A session of ``name`` that logged in while the message was being
        stored may have read its mailbox before the message was in it: it is
        owed the message now, unless its mailbox already had it (§7.7).
        """
        with self._changed:
            filled = []
            if sender.phase is not CLOSED:
                sender.owe(notice(Notice.STORED_FOR, name))
                filled.append(sender)
            session = self._named.holder(name)
            if session is not None and session.account:
                if session.parked is not None:
                    session.late.append((message_id, line))
                elif message_id > session.stored_up_to:
                    session.owe(line)
                    session.stored_up_to = message_id
                    session.stored_mark = session.taken + session.owed
                    filled.append(session)
            return Step(sender.phase, tuple(filled))

    def not_stored(self, sender: Chatter, name: str, why: Notice) -> Step:
        """Owe the sender why a message was not kept for ``name``: a full mailbox, or no account (§5.5).

        ``name`` is spelled as the account was for a full mailbox, and as
        the sender wrote it for an account that is gone.
        """
        with self._changed:
            if sender.phase is CLOSED:
                return SESSION_OVER
            sender.owe(notice(why, name))
            return Step(sender.phase, (sender,))

    def users(self, chatter: Chatter, pattern: str) -> Step:
        """Owe ``chatter`` the accounts whose name matches ``pattern`` (§5.15, §6.1).

        The names are copied under the lock and listed outside it, as
        :meth:`~mechat.matchmaker.Matchmaker.who` lists.
        """
        return self._list(chatter, Event.USERS, self.accounts, pattern)

    def deleting(self, chatter: Chatter) -> str:
        """Take ``chatter``'s account off the list before the store deletes it; return its name or "" (§5.16).

        From here on no login can claim it, so none can be told
        ``#logged_in_`` for an account about to go.  "" means the session
        was replaced or ended since its password was checked: it no
        longer speaks for the account, and nothing is deleted.
        """
        with self._changed:
            name = chatter.account
            if chatter.phase is CLOSED or not name:
                return ""
            self.accounts.discard(name, True)
            return name

    def not_deleted(self, name: str) -> None:
        """Put an account back on the list: the store could not delete it."""
        with self._changed:
            self.accounts.add(name, True)

    def deleted(self, chatter: Chatter) -> Step:
        """Log ``chatter`` out of the account the store has just deleted; it goes on as a guest (§5.16)."""
        with self._changed:
            chatter.account = ""
            if not self._move(chatter, Event.DELETE):
                return SESSION_OVER
            chatter.owe(notice(Notice.ACCOUNT_DELETED))
            return Step(chatter.phase, (chatter,))

    def stored_owed(self, chatter: Chatter) -> Tuple[int, int]:
        """Return ``chatter``'s newest stored message owed, and where its line ends (§7.7)."""
        with self._changed:
            return chatter.stored_up_to, chatter.stored_mark

    # -- Helpers: the caller must hold the lock ----------------------------

    def _log_in(self, chatter: Chatter, name: str) -> None:
        """Name ``chatter`` after the account ``name`` and log it in; call with the lock held."""
        self._name(chatter, name)
        chatter.account = name

    def _replace(self, older: Chatter) -> Step:
        """End an account's older session for a newer login (§5.14); call with the lock held.

        It is owed ``#session_replaced``; its partner ``#user_quit``, or its
        room its ``#exited_``, as when a client hangs up.
        """
        partner = older.partner
        if partner is not None:
            self._unpair(older, partner)
        members = self._exit(older)
        self._withdraw(older)
        older.owe(notice(Notice.SESSION_REPLACED))
        self._move(older, Event.SESSION_REPLACED)
        if partner is not None:
            return Step(CLOSED, (older, partner), (older, partner))
        return Step(CLOSED, (older, *members), (older,))
