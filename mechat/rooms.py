"""Rooms: which rooms there are, and who is in each (spec §3.2, §5.8-§5.12, §7.6).

Plain data, with no lock of its own.  Rooms are part of the Matchmaker's
state, and every method here is called by the Matchmaker with its one lock
held: a room's members change in the same step as the phases of the
clients who come and go, so the two can never disagree.  This module only
keeps the data apart from the Matchmaker's code, as ``queue.Queue`` keeps
its deque apart from its locking.

A room is found by its name in lower case (§3.2) and answers with the name
as its creator spelled it.  Rooms live until the server stops, empty or not
(§5.8); :class:`Rooms` refuses to make more than its limit (§9.8), and a
room refuses members past its own (§9.9).
"""

from typing import TYPE_CHECKING, Dict, List, Optional

from mechat.names import Names
from mechat.protocol import DEFAULT_MAX_MEMBERS, DEFAULT_MAX_ROOMS, SP, Notice, notice

if TYPE_CHECKING:  # only for the annotations: matchmaker imports this module
    from mechat.chatter import Chatter


class Room:
    """One room: its name as created, and its members in the order they came.

    Each method that changes the room owes the other members the notice
    that says so, and returns them: the Matchmaker's caller writes their
    outboxes out once the lock is released.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        #: The members, as an ordered set (a dict's keys keep their order).
        self.members: Dict[Chatter, None] = {}
        #: Counts every change to the members or their nicknames, so that a
        #: list made outside the lock can tell whether it is still true.
        self.version = 0

    def enter(self, chatter: "Chatter") -> List["Chatter"]:
        """Add ``chatter``, owe it ``#joined_`` and the others ``#entered_`` (§5.10)."""
        told = self.tell(chatter, self._about(Notice.ENTERED, chatter.nickname))
        self.members[chatter] = None
        self.version += 1
        chatter.room = self
        chatter.owe(notice(Notice.JOINED, self.name))
        return told

    def exit(self, chatter: "Chatter") -> List["Chatter"]:
        """Take ``chatter`` out, and owe the others ``#exited_`` (§5.12, §7.6)."""
        del self.members[chatter]
        self.version += 1
        chatter.room = None
        return self.tell(chatter, self._about(Notice.EXITED, chatter.nickname))

    def renamed(self, chatter: "Chatter", old: str) -> List["Chatter"]:
        """Owe the others ``#renamed_`` for a member who was called ``old`` (§7.6)."""
        self.version += 1
        return self.tell(chatter, notice(Notice.RENAMED, self.member(old), chatter.nickname.encode("ascii")))

    def say(self, sender: "Chatter", lines: List[bytes]) -> List["Chatter"]:
        """Owe every other member each of the sender's lines as ``#in_`` (§7.6).

        The lines are made once and appended to every outbox: a room of
        300 costs 300 appends a line under the lock, and no copies.
        """
        prefix = (Notice.IN.value + self.member(sender.nickname)).encode("ascii") + SP
        owed = [prefix + line for line in lines]
        octets = sum(map(len, owed))
        others = self.others(sender)
        for member in others:
            member.owe_all(owed, octets)
        return others

    def tell(self, chatter: "Chatter", line: bytes) -> List["Chatter"]:
        """Owe ``line`` to every member but ``chatter``; return them."""
        others = self.others(chatter)
        for member in others:
            member.owe(line)
        return others

    def others(self, chatter: "Chatter") -> List["Chatter"]:
        """Return every member but ``chatter``."""
        return [member for member in self.members if member is not chatter]

    def nicknames(self) -> List[str]:
        """Return the members' nicknames, in the order they came."""
        return [member.nickname for member in self.members]

    def member(self, nickname: str) -> str:
        """Return ROOM_NICK, the argument of every notice about a member (§6): a room has no ``_`` (§3.2)."""
        return self.name + "_" + nickname

    def _about(self, name: Notice, nickname: str) -> bytes:
        """Format a notice that ends with a member, as #entered_ and #exited_ do."""
        return notice(name, self.member(nickname))

    def __repr__(self) -> str:
        return "<Room %s, %d members>" % (self.name, len(self.members))


class Rooms:
    """Every room of the server, by its name in lower case."""

    def __init__(self, max_rooms: int = DEFAULT_MAX_ROOMS, max_members: int = DEFAULT_MAX_MEMBERS) -> None:
        self.max_rooms = max_rooms
        self.max_members = max_members
        self.names: Names[Room] = Names()

    def find(self, name: str) -> Optional[Room]:
        """Return the room called ``name`` in any case, or None."""
        return self.names.holder(name)

    def create(self, name: str) -> bytes:
        """Make a room called ``name`` unless one exists or there are enough; return the answer (§5.8)."""
        existing = self.find(name)
        if existing is not None:
            return notice(Notice.ROOM_EXISTS, existing.name)
        if len(self.names) >= self.max_rooms:
            return notice(Notice.TOO_MANY_ROOMS)
        self.names.add(name, Room(name))
        return notice(Notice.ROOM_CREATED, name)

    def is_full(self, room: Room) -> bool:
        """Tell whether ``room`` has as many members as a room may have (§9.9)."""
        return len(room.members) >= self.max_members

    def empty_all(self) -> None:
        """Forget every room's members, as the server stops (§10)."""
        for room in self.names.holders():
            room.members.clear()
            room.version += 1
