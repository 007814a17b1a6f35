"""The account commands of a connection's handler: /register, /login, /users, /delete, and stored /msg.

:class:`AccountCommands` is a mix-in for :class:`mechat.server.ChatHandler`,
in the way socketserver's ``ThreadingMixIn`` is one for its servers: the
handler reads and writes, this class knows what the account commands mean.

Every call to the store (:class:`mechat.accounts.AccountStore`) and every
password hash happens here, in the client's own handler thread, with no
lock of the Matchmaker's held (rule 7 of protocol 2).  A command is
therefore split into steps around the slow part:

* /register reserves the name under the lock, hashes and stores the
  account outside it, then logs in and queues up under it (§5.13);
* /login checks the password outside the lock, claims the name under it
  (ending an older session), reads the mailbox outside it, then owes the
  mailbox and queues up under it (§5.14, §7.7);
* a /msg to an account that is away is stored outside the lock, and
  ``#stored_for_`` is owed only after the commit has returned (§5.5).

Failed logins are throttled twice (§9.11, :mod:`mechat.throttle`): each
connection has :data:`~mechat.throttle.MAX_FAILED_LOGINS` tries, and each
address a bucket of them that only this handler's thread waits on.

A message leaves the store only once the server knows the client has it
(§7.7): the kernel says the client's TCP acknowledged every octet
(:meth:`~mechat.connection.Connection.has_received`, asked at each
flush point and when the session ends), or the client sent /quit after it.
"""

import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from mechat.accounts import Stored, StoredMessage
from mechat.chatter import Step
from mechat.connection import Connection
from mechat.matchmaker import Matchmaker
from mechat.protocol import Event, Notice, Parsed, Phase, notice
from mechat.throttle import LoginTries, address_key

if TYPE_CHECKING:
    from mechat.server import ChatServer

log = logging.getLogger("mechat.server")


def stored_line(message: StoredMessage) -> bytes:
    """Return the ``#stored_from_`` line of a stored message (§5.14)."""
    return notice(Notice.STORED_FROM, message.sender, message.sent_at.encode("ascii") + b" " + message.text)


class AccountCommands:
    """The handler's account commands; :meth:`setup_accounts` runs in the handler's setup()."""

    # What the handler that mixes this in provides.
    server: "ChatServer"
    client_address: Any
    conn: Connection
    matchmaker: Matchmaker
    phase: Phase
    nickname_deadline: float
    read_timeout: Optional[float]
    follow: Callable[[Step], None]

    def setup_accounts(self) -> None:
        """Prepare this connection's share of the login throttle."""
        self.login_tries = LoginTries()
        self.address_key = address_key(self.client_address[0])  # what the address throttle counts
        #: Whether the client has sent /quit: the portable sign that it has its stored messages (§7.7).
        self.said_quit = False
        #: The id of the newest stored message deleted from the store as delivered.
        self.forgotten_up_to = 0

    # -- /register (§5.13) ----------------------------------------------------

    def register(self, parsed: Parsed) -> Step:
        """Make an account and log in to it, then queue up as a nickname would."""
        name = parsed.nickname
        refused = self.matchmaker.reserve(self.conn, name)
        if refused is not None:
            return refused
        try:
            made = self.server.store.register(name, parsed.text.decode("ascii"))
        except sqlite3.Error as error:
            log.error("%s: the store cannot register an account: %s", self.conn.address, error)
            made = False
        if not made:
            self.matchmaker.unreserve(self.conn, name)
            return self.matchmaker.refuse(self.conn, Event.NICKNAME_TAKEN)
        log.info("%s registered %s", self.conn.address, name)
        self.read_timeout = None  # as for a nickname: a chatter may stay quiet (§7.3)
        return self.matchmaker.register(self.conn, name)

    # -- /login (§5.14) -----------------------------------------------------------

    def log_in(self, parsed: Parsed) -> Step:
        """Log in, ending the account's older session, get the stored messages, then queue up."""
        right = self.password_is(parsed.nickname, parsed.text.decode("ascii"))
        if right is None:
            return self.matchmaker.time_out(self.conn)
        name = self.server.store.account_name(parsed.nickname) if right else None
        if name is None:  # a wrong password, or the account deleted since the check
            return self.failed()
        step = self.matchmaker.claim(self.conn, name)
        if step is None:  # deleted, or not yet made, since the check
            return self.failed()
        self.follow(step)
        if step.ended:
            log.info("%s logged in to %s; its older session is replaced", self.conn.address, name)
        else:
            log.info("%s logged in to %s", self.conn.address, name)
        self.read_timeout = None
        return self.matchmaker.deliver_mailbox(self.conn, self.read_mailbox(name))

    def read_mailbox(self, name: str) -> List[Tuple[int, bytes]]:
        """Return the account's stored messages as ``(id, line)``, oldest first; none if the store fails."""
        try:
            messages = self.server.store.stored_messages(name)
        except sqlite3.Error as error:  # they stay in the store for the next login
            log.error("%s: the store cannot read %s's mailbox: %s", self.conn.address, name, error)
            return []
        return [(message.id, stored_line(message)) for message in messages]

    def password_is(self, name: str, password: str) -> Optional[bool]:
        """Check a password once the address may try again (§9.11); None if the nickname deadline came first.

        Hashing takes tens of milliseconds, and only this client's thread
        waits for it, or for the address's next try.
        """
        throttle = self.server.failed_logins
        while True:
            wait = throttle.take(self.address_key)
            if not wait:
                break
            if self.phase is Phase.NICKNAME:
                remaining = self.nickname_deadline - time.monotonic()
                if remaining < wait:
                    time.sleep(max(0.0, remaining))
                    return None
            time.sleep(wait)
        try:
            right = self.server.store.check_password(name, password)
        except sqlite3.Error as error:
            log.error("%s: the store cannot check a password: %s", self.conn.address, error)
            right = False
        if right:
            throttle.give_back(self.address_key)
        return right

    def refused_login(self, parsed: Parsed) -> Step:
        """Answer a malformed /login or /delete: a failed login, but a guest's /delete is answered first."""
        if self.phase is not Phase.NICKNAME and not self.conn.account:
            return self.matchmaker.refuse(self.conn, Event.NOT_LOGGED_IN)
        return self.failed()

    def failed(self) -> Step:
        """Answer a failed login or /delete; the last one a connection may make ends it (§9.11)."""
        if self.login_tries.fail():
            log.warning("%s: %d failed logins; closing", self.conn.address, self.login_tries.failed)
            return self.matchmaker.leave(self.conn, Event.TOO_MANY_FAILURES, Notice.LOGIN_FAILED)
        log.info("%s: failed login", self.conn.address)
        return self.matchmaker.refuse(self.conn, Event.LOGIN_FAILED)

    # -- /users and /delete (§5.15, §5.16) --------------------------------------

    def users(self, parsed: Parsed) -> Step:
        """Answer with the accounts whose names match the pattern."""
        return self.matchmaker.users(self.conn, parsed.pattern)

    def delete_account(self, parsed: Parsed) -> Step:
        """Delete our account and its mailbox; the session goes on as a guest."""
        name = self.conn.account
        if not name:
            return self.matchmaker.refuse(self.conn, Event.NOT_LOGGED_IN)
        if not self.password_is(name, parsed.text.decode("ascii")):  # no deadline after the nickname
            return self.failed()
        if not self.matchmaker.deleting(self.conn):  # replaced meanwhile: it speaks for nobody now
            return self.matchmaker.refuse(self.conn, Event.NOT_LOGGED_IN)
        try:
            self.server.store.delete(name)
        except sqlite3.Error as error:
            log.error("%s: the store cannot delete %s: %s", self.conn.address, name, error)
            self.matchmaker.not_deleted(name)
            return self.matchmaker.refuse(self.conn, Event.LOGIN_FAILED)  # not a guess: not counted
        log.info("%s deleted the account %s", self.conn.address, name)
        return self.matchmaker.deleted(self.conn)

    # -- A /msg to an account that is away (§5.5, §7.7) -----------------------

    def store_for(self, name: str, written: str, text: bytes) -> Step:
        """Keep a message for ``name`` (``written`` by the sender); ``#stored_for_`` only after the commit."""
        try:
            result, message = self.server.store.store(name, self.conn.nickname, text, time.time())
        except sqlite3.Error as error:
            log.error("%s: the store cannot keep a message: %s", self.conn.address, error)
            result, message = Stored.MAILBOX_FULL, None
        if message is not None:
            return self.matchmaker.stored(self.conn, name, message.id, stored_line(message))
        if result is Stored.MAILBOX_FULL:
            return self.matchmaker.not_stored(self.conn, name, Notice.MAILBOX_FULL)
        return self.matchmaker.not_stored(self.conn, written, Notice.NO_SUCH_USER)  # deleted meanwhile

    # -- When the stored messages leave the store (§7.7) --------------------------

    def forget_what_was_delivered(self) -> None:
        """Delete from the store the stored messages the client is known to have (§7.7)."""
        conn = self.conn
        up_to, mark = self.matchmaker.stored_owed(conn)
        if up_to <= self.forgotten_up_to or not conn.account:
            return
        if not (conn.has_received(mark) or (self.said_quit and conn.taken >= mark and not conn.is_behind())):
            return
        try:
            self.server.store.forget(conn.account, up_to)
        except sqlite3.Error as error:  # kept: delivered again at the next login (§7.7)
            log.error("%s: the store cannot forget delivered messages: %s", conn.address, error)
            return
        self.forgotten_up_to = up_to
