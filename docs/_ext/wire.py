"""Drive a real mechat server and record every line on the wire, for the docs.

A :class:`Party` is the test suite's own fake client, :class:`tests.peers.Peer`,
with a name.  Each thing it does or sees becomes a :class:`Step` in a shared
:class:`Transcript`, in the order the scenario saw it: a line sent, a line
received, a hang-up, a close by the server.  Every read has the Peer's
deadline, so a server that hangs fails the docs build instead of stalling
it; a line that differs from the one the scenario expects fails it too,
because the prose around the diagram would be wrong.
"""

import threading
from contextlib import contextmanager
from typing import Any, Iterator, List, NamedTuple

from mechat.server import ChatServer, Limits
from tests.peers import TIMEOUT, Peer

SERVER = "server"


class ScenarioError(Exception):
    """The server did not do what the scenario (and so the docs) says it does."""


class Step(NamedTuple):
    """One event in a transcript."""

    sender: str
    receiver: str
    text: str
    is_line: bool  # a protocol line, rather than a description of an event


class Transcript:
    """The steps of one scenario, in the order they happened."""

    def __init__(self) -> None:
        self.parties: List[Party] = []
        self.steps: List[Step] = []

    def add(self, sender: str, receiver: str, text: str, is_line: bool = False) -> None:
        """Record a step: a protocol line, or an event such as a close."""
        self.steps.append(Step(sender, receiver, text, is_line))

    def note(self, text: str) -> None:
        """Record what the server did unseen, as a note over the server."""
        self.add(SERVER, SERVER, text)


class Party(Peer):
    """A test Peer with a name, whose every line goes into a transcript."""

    def __init__(self, transcript: Transcript, name: str, port: int) -> None:
        self.transcript = transcript
        self.name = name
        super().__init__(port)
        transcript.parties.append(self)

    def record(self, direction: str, line: bytes) -> None:
        """Add a line the Peer sent ("c2s") or received ("s2c") to the transcript."""
        sender, receiver = (self.name, SERVER) if direction == "c2s" else (SERVER, self.name)
        self.transcript.add(sender, receiver, line.decode("utf-8"), is_line=True)

    def expect_closed(self, timeout: float = TIMEOUT) -> None:
        """Fail unless the server closes the connection with nothing more to say."""
        super().expect_closed(timeout)
        self.transcript.add(SERVER, self.name, "closes the connection")

    def close(self) -> None:
        """Close the connection normally (the server reads end of file)."""
        if self.sock.fileno() >= 0:
            self.transcript.add(self.name, SERVER, "closes the connection")
        super().close()

    def reset(self) -> None:
        """Abort the connection with a TCP reset."""
        self.transcript.add(self.name, SERVER, "resets the connection")
        super().reset()


@contextmanager
def running_server(**limits: Any) -> Iterator[ChatServer]:
    """Run a ChatServer on 127.0.0.1, port 0, in a thread, and stop it afterwards."""
    server = ChatServer(("127.0.0.1", 0), Limits(**limits))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def wait_until_all_left(server: ChatServer) -> None:
    """Wait until the server has seen every connection go, or fail."""
    if not server.matchmaker.wait_until_empty(TIMEOUT):
        raise ScenarioError("the server still holds a connection after %.0f s" % TIMEOUT)
