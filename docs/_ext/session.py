"""Record what two people see in their terminals during a real session.

Two real :class:`~mechat.client.ChatClient` objects talk to a real server.
Their keyboards are queues that this script types into, one line at a
time, and their screens record every line the client shows.  Before typing
the next line, the script waits (with a deadline) for the lines the last one
should cause, so both terminals come out in a fixed order.
"""

import io
import queue
import socket
import threading
import time
from typing import Dict, List, Optional, Tuple

from wire import ScenarioError, running_server

from mechat.client import ChatClient
from mechat.screen import Screen
from tests.peers import TIMEOUT


class RecordingScreen(Screen):
    """A Screen that keeps what it shows, and what the user typed, as terminal lines."""

    def __init__(self) -> None:
        super().__init__(io.StringIO(), color=False, interactive=False)
        self.lines: List[str] = []
        self.shown: queue.Queue[str] = queue.Queue()

    def show(self, text: str, when: str = "") -> None:
        """Keep a line stamped with the time now, or ``when``, as the terminal would print it."""
        line = "[%s] %s" % (when or time.strftime("%H:%M"), text)
        self.lines.append(line)
        self.shown.put(line)

    def echo(self, typed: str) -> None:
        """Keep a typed line, after the prompt it was typed at."""
        self.lines.append(self.prompt + typed)

    def wait_for(self, count: int) -> None:
        """Wait until ``count`` more lines have been shown, or fail."""
        for _ in range(count):
            try:
                self.shown.get(timeout=TIMEOUT)
            except queue.Empty:
                raise ScenarioError("the client showed fewer lines than expected") from None


class Terminal:
    """One person at a real client: a keyboard queue, a recording screen, a thread."""

    def __init__(self, port: int) -> None:
        self.screen = RecordingScreen()
        self.screen.prompt = "Nickname: "
        self.keys: queue.Queue[Optional[str]] = queue.Queue()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.settimeout(None)
        client = ChatClient(self.sock, iter(self.keys.get, None), self.screen)
        self.thread = threading.Thread(target=client.run, daemon=True)
        self.thread.start()

    def type(self, line: str) -> None:
        """Type one line and press Enter."""
        self.screen.echo(line)
        self.keys.put(line)

    def end(self) -> List[str]:
        """Stop typing, wait for the client to finish, and return the terminal's lines."""
        lines = list(self.screen.lines)
        self.keys.put(None)
        self.thread.join(TIMEOUT)
        self.sock.close()
        return lines


#: Who types what, and how many lines each terminal then shows: (alice, bob).
SCRIPT: List[Tuple[str, str, int, int]] = [
    ("alice", "alice", 1, 0),
    ("bob", "bob", 1, 1),
    ("alice", "hi bob, where are you from?", 0, 1),
    ("bob", "Lisbon. And you?", 1, 0),
    ("bob", "/nickname robert", 1, 1),
    ("alice", "Oslo. Nice to meet you, robert", 0, 1),
    ("bob", "/quit", 1, 1),
]


def record_session() -> Dict[str, List[str]]:
    """Run the script against a fresh server and return each terminal's lines."""
    with running_server() as server:
        people = {"alice": Terminal(server.port), "bob": Terminal(server.port)}
        for who, typed, for_alice, for_bob in SCRIPT:
            people[who].type(typed)
            people["alice"].screen.wait_for(for_alice)
            people["bob"].screen.wait_for(for_bob)
        return {name: terminal.end() for name, terminal in people.items()}
