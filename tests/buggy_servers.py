"""Deliberately broken servers, one planted bug each, for the conformance kit's tests.

Each one is mechat's own server with one small method overridden, so the
bug is the only difference and the test shows which check of
:mod:`mechat.conform` notices it.  The bugs are the ones students' servers
really have: a command matched by prefix, a waiter handed out after it
left, a long line cut into pieces, a waiter matched with itself, and a
partner never told that the chat is over.
"""

import contextlib
import threading
from typing import Iterator, List, NamedTuple, Optional

from mechat import protocol
from mechat.matchmaker import Chatter, Matchmaker, Step
from mechat.protocol import Event, Line, Notice, Phase
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
                self._post(sender, protocol.notice(Notice.MATCHED_TO, partner.nickname))
                return Step(sender.phase, (sender,))
        return super().relay(sender, lines)


class SilentMatchmaker(Matchmaker):
    """Bug: the partner of a client that leaves is closed without #user_quit (§8)."""

    def _post(self, chatter: Chatter, line: bytes) -> None:
        """Post every line but #user_quit."""
        if line != protocol.notice(Notice.USER_QUIT):
            super()._post(chatter, line)


class Bug(NamedTuple):
    """One planted bug: the classes that carry it, and the line limit it needs."""

    handler: type = ChatHandler
    matchmaker: type = Matchmaker
    max_line: int = protocol.MAX_LINE_OCTETS


BUGS = {
    "prefix-matched /quit": Bug(handler=PrefixQuitHandler),
    "ghost waiter handed out": Bug(matchmaker=GhostMatchmaker),
    "long line forwarded in pieces": Bug(handler=PiecesHandler, max_line=1_000_000),
    "waiter matched with itself": Bug(matchmaker=SelfMatchmaker),
    "no #user_quit": Bug(matchmaker=SilentMatchmaker),
}


class BuggyServer(ChatServer):
    """A ChatServer whose handler and matchmaker carry a planted bug."""

    def __init__(self, bug: Bug) -> None:
        limits = Limits(max_rate=0, max_line=bug.max_line)
        super().__init__(("127.0.0.1", 0), limits, bug.handler)
        self.matchmaker = bug.matchmaker(limits.max_clients)  # no client has connected yet


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
