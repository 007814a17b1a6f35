"""Deliberately broken servers, one planted bug each, for the conformance kit's tests.

Each one is mechat's own server with one small method overridden, so the
bug is the only difference and the test shows which check of
:mod:`mechat.conform` notices it.  The bugs are the ones students' servers
really have: a command matched by prefix, a waiter handed out after it
left, a long line cut into pieces, a waiter matched with itself, and a
partner never told that the chat is over.  :data:`DIRECTORY_BUGS` are
protocol 2's (:mod:`mechat.conform.directory`): a nickname taken twice, a
direct message to the wrong client, a broadcast echoed, /next back to the
same partner, and a /who list out of order or miscounted.  :data:`ROOM_BUGS`
are those of rooms (:mod:`mechat.conform.rooms`): a room's line echoed to
its sender, or sent on to a member who left or moved to another room, a
/join that leaves the partner chatting, #members_ miscounted, and room
names compared case and all.  :data:`ACCOUNT_BUGS` are those of accounts
(:mod:`mechat.conform.accounts`): a password compared in lower case, an
account deleted with SQL's LIKE, a mailbox read newest first, and a
guest let take an account's name.  Two more, a store kept in memory
though the server was given a file, and messages kept in memory beside
accounts kept in it, need a server process that the kit can kill: run
this module, ``python -m tests.buggy_servers --port P --db FILE
--forget`` (or ``--forget-mail``), as the kit's ``--server-command``.
"""

import argparse
import collections
import contextlib
import threading
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from mechat import protocol
from mechat.accounts import MEMORY, AccountStore
from mechat.chatter import SESSION_OVER, Chatter, Step
from mechat.matchmaker import Matchmaker
from mechat.names import matching
from mechat.protocol import LF, SP, Event, Line, Notice, Phase
from mechat.rooms import Room, Rooms
from mechat.server import ChatHandler, ChatServer, Limits, Received


class PrefixQuitHandler(ChatHandler):
    """Bug: any line that starts with "/quit" quits, "/quitnow" too (§5.3)."""

    def parse(self, line: Line) -> protocol.Parsed:
        """Match /quit by prefix."""
        if isinstance(line, bytes) and line.startswith(protocol.quit_command):
            return protocol.QUIT
        return super().parse(line)


class PiecesHandler(ChatHandler):
    """Bug: a line over the limit is cut into 2000-octet pieces and each is relayed (§2.3).

    Run it with a large ``max_line`` so that the framing hands it whole lines.
    """

    def receive(self) -> Iterator[Received]:
        """Cut long lines instead of refusing them."""
        size = protocol.MAX_LINE_OCTETS
        for line in super().receive():
            if isinstance(line, bytes) and len(line) > size:
                yield from (line[start : start + size] for start in range(0, len(line), size))
            else:
                yield line


class GhostMatchmaker(Matchmaker):
    """Bug: a waiter that leaves stays in the queue and is handed out (§7.2, §8)."""

    def _live_waiter(self) -> Optional[Chatter]:
        """Return the longest waiter without asking whether it is still there."""
        with self._changed:
            return self._head()

    def _withdraw(self, chatter: Chatter) -> None:
        """Leave the queue alone."""


class SelfMatchmaker(Matchmaker):
    """Bug: a waiter that sends a line joins again, and meets the head of the queue: itself (§7.2)."""

    def relay(self, sender: Chatter, lines: List[bytes]) -> Step:
        """Treat a waiter's lines as a new request for a partner."""
        with self._changed:
            if sender.phase is Phase.WAITING:
                partner = self._waiting.popleft()
                sender.partner = partner
                self._move(sender, Event.PARTNER_FOUND)
                sender.owe(protocol.notice(Notice.MATCHED_TO, partner.nickname))
                return Step(sender.phase, (sender,))
        return super().relay(sender, lines)


class SilentMatchmaker(Matchmaker):
    """Bug: the partner of a client that leaves is closed without #user_quit (§8)."""

    def _unpair(self, chatter: Chatter, partner: Chatter) -> None:
        """End a pair and close the partner, owing it nothing."""
        chatter.partner = partner.partner = None
        self._move(partner, Event.PARTNER_LEFT)


class DuplicateMatchmaker(Matchmaker):
    """Bug: a first line is never compared with the nicknames in use; only /nickname is (§3.1)."""

    def join(self, chatter: Chatter, nickname: str) -> Step:
        """Name and queue ``chatter`` without asking who holds ``nickname``."""
        with self._changed:
            waiter = self._head()
            if not self._move(chatter, Event.NICKNAME):
                return SESSION_OVER
            self._name(chatter, nickname)
            return self._queue_up(chatter, waiter)


class MisdirectedMatchmaker(Matchmaker):
    """Bug: a direct message from a chat goes to the sender's partner, whoever it names (§5.5)."""

    def direct(self, sender: Chatter, nickname: str, text: bytes) -> Step:
        """Deliver to the partner, as a relayed line would go, and say it went to ``nickname``."""
        with self._changed:
            partner, recipient = sender.partner, self._named.holder(nickname)
            if partner is None or recipient is None:
                return super().direct(sender, nickname, text)
            partner.owe(protocol.notice(Notice.FROM, sender.nickname, text))
            sender.owe(protocol.notice(Notice.SENT_TO, recipient.nickname))
            return Step(sender.phase, (partner, sender))


class EchoMatchmaker(Matchmaker):
    """Bug: /all goes to every named client, its sender included (§5.6)."""

    def broadcast(self, sender: Chatter, text: bytes) -> Step:
        """Send the sender its own line first, then broadcast as usual."""
        with self._changed:
            sender.owe(protocol.notice(Notice.ALL_FROM, sender.nickname, text))
            return super().broadcast(sender, text)


class RematchMatchmaker(Matchmaker):
    """Bug: /next puts the old partner back at the head of the queue, where the sender meets it (§5.7)."""

    def next_partner(self, chatter: Chatter) -> Step:
        """Queue both sides again, the partner first."""
        with self._changed:
            partner = chatter.partner
            if partner is None:
                return super().next_partner(chatter)
            chatter.partner = partner.partner = None
            self._move(partner, Event.NEXT)
            self._waiting.appendleft(partner)
            self._move(chatter, Event.NEXT)
            return self._queue_up(chatter, partner)


class UnsortedMatchmaker(Matchmaker):
    """Bug: /who lists the nicknames in the order they were chosen, not sorted (§6.1)."""

    def who(self, chatter: Chatter, pattern: str) -> Step:
        """List the matches as they come, cut to the line."""
        with self._changed:
            if not self._move(chatter, Event.WHO):
                return SESSION_OVER
            names = matching(self._named.copy(), pattern)  # in the order the names were chosen
            line = (Notice.ONLINE.value + str(len(names))).encode("ascii")
            for name in names:
                if len(line) + 1 + len(name) <= protocol.MAX_LINE_OCTETS:
                    line += SP + name.encode("ascii")
            chatter.owe(line + LF)
            return Step(chatter.phase, (chatter,))


def recount(chatter: Chatter, name: Notice, count: Callable[[int, int], int]) -> None:
    """Give the last ``name`` list owed to ``chatter`` the count ``count(counted, shown)``; lock held."""
    prefix = name.value.encode("ascii")
    for index in reversed(range(len(chatter.outbox))):
        line = chatter.outbox[index]
        if line.startswith(prefix):
            counted, *names = line.rstrip(LF).split(SP)
            number = count(int(counted[len(prefix) :]), len(names))
            chatter.outbox[index] = SP.join([prefix + str(number).encode("ascii"), *names]) + LF
            chatter.owed += len(chatter.outbox[index]) - len(line)
            return


class ShownCountMatchmaker(Matchmaker):
    """Bug: a /who list counts the names it shows, not every match, so a cut list hides the cut (§6.1)."""

    def who(self, chatter: Chatter, pattern: str) -> Step:
        """List as usual, then count only the names shown."""
        with self._changed:
            step = super().who(chatter, pattern)
            recount(chatter, Notice.ONLINE, lambda counted, shown: shown)
            return step


# -- Rooms (§3.2, §5.8-§5.12, §7.6) ------------------------------------------------


class OverheardMatchmaker(Matchmaker):
    """The shape of three bugs: a room's lines also reach whoever :meth:`overhears` names (§7.6)."""

    def relay(self, sender: Chatter, lines: List[bytes]) -> Step:
        """Relay as usual, then the room's lines to those who overhear them too."""
        with self._changed:
            room = sender.room
            step = super().relay(sender, lines)
            if room is None:
                return step
            member = f"{room.name}_{sender.nickname}"
            owed = [protocol.notice(Notice.IN, member, line.rstrip(LF)) for line in lines]
            listeners = self.overhears(room, sender)
            for listener in listeners:
                listener.owe_all(owed, sum(map(len, owed)))
            return Step(step.phase, (*step.filled, *listeners))

    def overhears(self, room: Room, sender: Chatter) -> List[Chatter]:
        """Return who gets the room's lines besides its other members; call with the lock held."""
        return []


class RoomEchoMatchmaker(OverheardMatchmaker):
    """Bug: a line in a room goes to every member, its sender included (§7.6)."""

    def overhears(self, room: Room, sender: Chatter) -> List[Chatter]:
        """Hand the sender its own lines."""
        return [sender]


class FormerMembersMatchmaker(OverheardMatchmaker):
    """The shape of two bugs: a member that has left a room, as :meth:`remember` is told, still hears it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._former: Dict[Room, List[Chatter]] = collections.defaultdict(list)  # with the lock held

    def remember(self, chatter: Chatter, room: Optional[Room], step: Step) -> Step:
        """Keep ``chatter`` among the readers of ``room`` if ``step`` took it out; return ``step``."""
        if room is not None and chatter.room is not room:  # only its own thread moves it between rooms
            with self._changed:
                self._former[room].append(chatter)
        return step

    def overhears(self, room: Room, sender: Chatter) -> List[Chatter]:
        """Hand the room's lines to every member that left it and is still connected."""
        return [chatter for chatter in self._former[room] if chatter.phase is not Phase.CLOSED]


class LeftMemberMatchmaker(FormerMembersMatchmaker):
    """Bug: a member who left with /leave still gets the lines of the room it left (§5.12, §7.6)."""

    def leave_room(self, chatter: Chatter) -> Step:
        """Leave as usual, but stay on the room's list of readers."""
        room = chatter.room  # before the step moves it
        return self.remember(chatter, room, super().leave_room(chatter))


class MovedMemberMatchmaker(FormerMembersMatchmaker):
    """Bug: a member who /join'ed another room still gets the lines of the room it came from (§7.6)."""

    def join_room(self, chatter: Chatter, name: str) -> Step:
        """Join as usual, but stay on the old room's list of readers."""
        room = chatter.room  # before the step moves it
        return self.remember(chatter, room, super().join_room(chatter, name))


class KeptPartnerMatchmaker(Matchmaker):
    """Bug: /join from a chat forgets the partner, who is never told #user_quit nor closed (§5.10)."""

    def join_room(self, chatter: Chatter, name: str) -> Step:
        """Drop the partner without a word, then join; a refused join keeps the chat."""
        with self._changed:
            partner = chatter.partner
            if partner is None or self.rooms.find(name) is None:
                return super().join_room(chatter, name)
            chatter.partner = partner.partner = None  # the partner chats on with nobody
            return super().join_room(chatter, name)


class OthersCountedMatchmaker(Matchmaker):
    """Bug: #members_ counts the other members, not the asker, though the asker is listed (§5.11)."""

    def members(self, chatter: Chatter) -> Step:
        """List the members as usual, then count one fewer."""
        with self._changed:
            step = super().members(chatter)
            recount(chatter, Notice.MEMBERS, lambda counted, shown: counted - 1)
            return step


class CaseSensitiveRooms(Rooms):
    """Bug: a room is found only by its name exactly as created, case and all (§3.2)."""

    def find(self, name: str) -> Optional[Room]:
        """Find the room only if ``name`` is spelled as its creator spelled it."""
        room = super().find(name)
        return room if room is not None and room.name == name else None


# -- Accounts (§3.1, §5.13-§5.16, §7.7) ---------------------------------------------


class LowerCasePasswords(AccountStore):
    """Bug: a password is kept and checked in lower case, as if it were a name (§3.3)."""

    def register(self, name: str, password: str) -> bool:
        """Make the account with the password folded to lower case."""
        return super().register(name, password.lower())

    def check_password(self, name: str, password: str) -> bool:
        """Check the password folded to lower case: 'Secret' opens 'sECRET' too."""
        return super().check_password(name, password.lower())


class LikeDeletingStore(AccountStore):
    """Bug: an account is deleted with SQL's LIKE, blind to case, so its '%' and '_' match others (§5.16)."""

    def delete(self, name: str) -> bool:
        """Delete every account whose name LIKE ``name`` matches."""
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM accounts WHERE name LIKE ?", (name,)).rowcount
        return bool(deleted)


class NewestFirstHandler(ChatHandler):
    """Bug: the mailbox is read as a stack, newest first, as list.pop() would hand it out (§7.7)."""

    def read_mailbox(self, name: str) -> List[Tuple[int, bytes]]:
        """Return the stored lines newest first, each under the id of the message in its place."""
        mailbox = super().read_mailbox(name)
        return list(zip([message_id for message_id, _ in mailbox], [line for _, line in reversed(mailbox)]))


class GuestTakesAccountMatchmaker(Matchmaker):
    """Bug: a guest's nickname is compared with the connected clients only, not with the accounts (§3.1)."""

    def _taken(self, name: str, chatter: Chatter) -> bool:
        """Tell whether another connected client holds ``name``, forgetting the accounts that are away."""
        return self._named.holder(name) not in (None, chatter) or self._reserved.holder(name) is not None


class ForgetfulStore(AccountStore):
    """Bug: the store is kept in memory whatever file it is given, so a restart loses every message (§7.7)."""

    def __init__(self, path: Any = MEMORY, *args: Any, **kwargs: Any) -> None:
        super().__init__(MEMORY, *args, **kwargs)


class MailInMemoryStore(AccountStore):
    """Bug: the accounts are kept in the file, the messages in a TEMP table, which lives in memory (§7.7).

    SQLite looks an unqualified name up in ``temp`` first, so every query
    of the store finds this table instead of the file's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with self._transaction() as db:
            db.execute(
                "CREATE TEMP TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, recipient INTEGER"
                " NOT NULL, sender TEXT NOT NULL, sent_at TEXT NOT NULL, text BLOB NOT NULL)"
            )


class Bug(NamedTuple):
    """One planted bug: the classes that carry it, and the line limit it needs."""

    handler: type = ChatHandler
    matchmaker: type = Matchmaker
    max_line: int = protocol.MAX_LINE_OCTETS
    rooms: type = Rooms
    store: Optional[Callable[[], AccountStore]] = None  # None: the server's own store, in memory


BUGS = {
    "prefix-matched /quit": Bug(handler=PrefixQuitHandler),
    "ghost waiter handed out": Bug(matchmaker=GhostMatchmaker),
    "long line forwarded in pieces": Bug(handler=PiecesHandler, max_line=1_000_000),
    "waiter matched with itself": Bug(matchmaker=SelfMatchmaker),
    "no #user_quit": Bug(matchmaker=SilentMatchmaker),
}

#: The planted bugs of protocol 2's directory, kept apart from BUGS, which grade the core checks.
DIRECTORY_BUGS = {
    "duplicate nickname accepted": Bug(matchmaker=DuplicateMatchmaker),
    "direct message to the partner": Bug(matchmaker=MisdirectedMatchmaker),
    "broadcast echoed to its sender": Bug(matchmaker=EchoMatchmaker),
    "/next back to the old partner": Bug(matchmaker=RematchMatchmaker),
    "list not sorted": Bug(matchmaker=UnsortedMatchmaker),
    "list counts only the names shown": Bug(matchmaker=ShownCountMatchmaker),
}

#: The planted bugs of rooms (:mod:`mechat.conform.rooms`), kept apart as DIRECTORY_BUGS are.
ROOM_BUGS = {
    "room line echoed to its sender": Bug(matchmaker=RoomEchoMatchmaker),
    "room line to a member who left": Bug(matchmaker=LeftMemberMatchmaker),
    "room line to a member who moved to another room": Bug(matchmaker=MovedMemberMatchmaker),
    "/join leaves the partner chatting": Bug(matchmaker=KeptPartnerMatchmaker),
    "#members_ counts the others only": Bug(matchmaker=OthersCountedMatchmaker),
    "room names compared case-sensitively": Bug(rooms=CaseSensitiveRooms),
}


#: The planted bugs of accounts (:mod:`mechat.conform.accounts`), kept apart as ROOM_BUGS are.
ACCOUNT_BUGS = {
    "password accepted in another case": Bug(store=LowerCasePasswords),
    "/delete deletes every account its name matches with LIKE": Bug(store=LikeDeletingStore),
    "stored messages delivered newest first": Bug(handler=NewestFirstHandler),
    "an account's name taken by a guest": Bug(matchmaker=GuestTakesAccountMatchmaker),
}


class BuggyServer(ChatServer):
    """A ChatServer whose handler, matchmaker or store carries a planted bug."""

    def __init__(self, bug: Bug) -> None:
        limits = Limits(max_rate=0, max_line=bug.max_line)
        store = bug.store() if bug.store is not None else None
        super().__init__(("127.0.0.1", 0), limits, bug.handler, store=store)
        self.owns_store = True  # the bug's store too is closed with the server
        rooms = bug.rooms(limits.max_rooms, limits.max_members)
        self.matchmaker = bug.matchmaker(limits.max_clients, rooms)  # no client has connected yet
        self.matchmaker.know_accounts(self.store.names())


@contextlib.contextmanager
def running(bug: Bug) -> Iterator[ChatServer]:
    """Serve with ``bug`` planted in a thread; stop the server afterwards."""
    server = BuggyServer(bug)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve(argv: Optional[List[str]] = None) -> None:
    """Serve mechat on 127.0.0.1 until killed, with its store in ``--db``, maybe with a bug planted in it.

    For the kit's ``--server-command``, which kills the process with SIGKILL
    and runs it again: ``--forget`` plants :class:`ForgetfulStore`, and
    ``--forget-mail`` :class:`MailInMemoryStore`.
    """
    parser = argparse.ArgumentParser(prog="python -m tests.buggy_servers")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    bugs = parser.add_mutually_exclusive_group()
    bugs.add_argument("--forget", action="store_true", help="plant a bug: keep the whole store in memory")
    bugs.add_argument("--forget-mail", action="store_true", help="plant a bug: keep the messages in memory")
    args = parser.parse_args(argv)
    kind = ForgetfulStore if args.forget else MailInMemoryStore if args.forget_mail else AccountStore
    store = kind(args.db)
    ChatServer(("127.0.0.1", args.port), Limits(max_rate=0), store=store).serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    serve()
