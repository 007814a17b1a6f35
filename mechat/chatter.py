"""What the Matchmaker knows of one connection, and what one of its steps did.

Plain data, with no lock of its own: every field of a :class:`Chatter`
changes only under the Matchmaker's lock (:mod:`mechat.matchmaker`), and a
:class:`Step` is how the Matchmaker tells a handler what an event did.
The server's :class:`~mechat.connection.Connection` is a Chatter that also
owns a socket.
"""

from collections import deque
from typing import TYPE_CHECKING, Deque, List, NamedTuple, Optional, Tuple

from mechat.protocol import Phase

if TYPE_CHECKING:
    from mechat.rooms import Room


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
        self.room: Optional[Room] = None
        #: Lines owed to this connection, oldest first, LF included.
        self.outbox: Deque[bytes] = deque()
        #: Octets in the outbox, so that a handler knows when to write it out early.
        self.owed = 0
        #: Octets written to the outbox but not yet taken by the socket: the
        #: server's connection keeps it (its send queue, §9.6), under its own
        #: lock; others read it without one, as a hint.
        self.queued = 0
        #: The account this session is logged in to, as registered; "" for a guest.
        self.account = ""
        #: While a login reads its mailbox (§7.7), the live lines sent to it
        #: wait here, and the stored ones that came in meanwhile in ``late``,
        #: so that every stored message comes before them; None otherwise.
        self.parked: Optional[List[bytes]] = None
        self.late: List[Tuple[int, bytes]] = []
        #: The id of the newest stored message owed to this session, and
        #: where its line ends in all this session has been owed, in octets (§7.7).
        self.stored_up_to = 0
        self.stored_mark = 0
        #: Octets taken from the outbox so far, for the writer.
        self.taken = 0

    def owe(self, line: bytes) -> None:
        """Append a line to the outbox; the Matchmaker calls this with its lock held."""
        self.outbox.append(line)
        self.owed += len(line)

    def owe_all(self, lines: List[bytes], octets: int) -> None:
        """Append lines of ``octets`` octets in all to the outbox, as owe() does one."""
        self.outbox.extend(lines)
        self.owed += octets

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
    #: The account, as registered, that a /msg is to be stored for (§5.5): the
    #: caller stores it outside the lock, then calls
    #: :meth:`~mechat.account_steps.AccountSteps.stored`.
    store_for: str = ""


#: The Step of an event that came after its session was closed (§7.4).
SESSION_OVER = Step(Phase.CLOSED)
