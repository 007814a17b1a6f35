"""Regression tests for the defects of the seed systems (issue 4).

The student servers that mechat's design grew from fail in the same few
ways.  Each test below reproduces one of those defect patterns against
mechat and pins the behaviour the spec requires instead.  All of them run
against ``checked_server`` (tests/conftest.py): after each test a fresh pair
must still chat and no thread or descriptor may be left behind, which is the
"the server did not die" half of every test here.
"""

import contextlib
import threading
import time

from mechat import protocol
from mechat.server import ChatServer
from tests.peers import Peer, meet, meet_non_reader, pair, waiting
from tests.streams import numbered, send_all, send_until_closed


def test_long_nickname_command_does_not_crash(checked_server: ChatServer) -> None:
    """§2.3, §5.2: a 100 KB /nickname is one over-long line: refused once, the chat goes on."""
    alice, bob = pair(checked_server.port)
    alice.send("/nickname " + "x" * 100_000)
    alice.expect("#invalid_message")  # §2.3: past the nickname phase, an over-long line is a bad message
    alice.send("/nickname " + "x" * (protocol.MAX_NICKNAME_CHARS + 1))
    alice.expect("#invalid_nickname")
    alice.send("still alice")
    bob.expect("still alice")


def test_long_first_line_does_not_crash(checked_server: ChatServer) -> None:
    """§2.3, §7.1: a 100 KB nickname is refused once, and a real one is then accepted."""
    peer = Peer(checked_server.port)
    peer.send("n" * 100_000, "alice")
    peer.expect("#invalid_nickname", "#wait")


def test_silent_connection_does_not_block_joins(checked_server: ChatServer) -> None:
    """§9.2: a connection that says nothing holds its own thread only; others pair at once."""
    Peer(checked_server.port)  # connects and never sends a byte
    alice, bob = pair(checked_server.port)
    alice.send("not blocked")
    bob.expect("not blocked")


#: Seconds a flood may go on at most.  A hang detector, not a clock: the
#: test ends its flood itself, long before, by resetting the client that
#: reads nothing.
FLOOD_DEADLINE = 60.0


class Flood(threading.Thread):
    """Send 1 KB lines from a thread: ``megabytes`` of them at most, within FLOOD_DEADLINE at most.

    ``sent`` counts the lines the kernel has taken.  A send waits as long as
    the server does not read (that is the point); only the connection
    failing, or the deadline, ends the wait.
    """

    LINE = b"z" * 1023 + b"\n"

    def __init__(self, peer: Peer, megabytes: int) -> None:
        super().__init__(daemon=True)
        self.peer = peer
        self.lines = megabytes * 1024
        self.sent = 0

    def run(self) -> None:
        """Send until every line is sent, the connection fails, or the deadline passes."""
        deadline = time.monotonic() + FLOOD_DEADLINE
        with contextlib.suppress(OSError):  # reset or closed: how the test ends the flood
            for _ in range(self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                # Not the Peer's per-read 5 s: a slow machine may keep a send waiting longer.
                self.peer.sock.settimeout(remaining)
                self.peer.send_raw(self.LINE)
                self.sent += 1


def test_non_reading_client_does_not_stall_others(checked_server: ChatServer) -> None:
    """§9.4: while one client does not read, other pairs keep chatting at full speed."""
    alice = waiting(checked_server.port, "alice")
    stuck = meet_non_reader(checked_server.port, alice, "stuck")
    flood = Flood(alice, 30)
    flood.start()  # far more than the kernel buffers: alice's handler blocks writing to stuck
    carol, dave = pair(checked_server.port, "carol", "dave")
    lines = numbered("carol", 1000)
    send_all(carol, lines)
    dave.expect(*lines)
    assert flood.sent < flood.lines, "the whole flood went through: stuck never held alice back"
    stuck.reset()  # frees alice's handler; checked_server then sees everything end
    alice.expect("#user_quit")
    flood.join(FLOOD_DEADLINE)
    assert not flood.is_alive()  # the server closed alice, which ended the flood


def test_failed_write_does_not_kill_the_server(checked_server: ChatServer) -> None:
    """§8: a write that fails because the partner reset ends that session only; alice is told."""
    alice, bob = pair(checked_server.port)
    bob.reset()
    send_until_closed(alice, numbered("alice", 1000))  # some of these meet the reset
    alice.expect("#user_quit")
    alice.expect_closed()


def test_garbage_packet_does_not_kill_the_server(checked_server: ChatServer) -> None:
    """§2: binary with a huge length-like header is just bytes: refused line by line."""
    peer = Peer(checked_server.port)
    peer.send_raw(b"\xff\xff\xff\xff" + bytes(range(256)) + b"\x00" * 5000 + b"\n")
    peer.expect("#invalid_nickname", "#invalid_nickname")  # LF at 0x0a splits it in two lines
    peer.reset()


def test_waiting_client_is_never_matched_with_itself(checked_server: ChatServer) -> None:
    """§7.2: a waiter sending its own nickname again is told #wait, and pairs with the next client."""
    wanda = waiting(checked_server.port)
    wanda.send("wanda", "wanda")
    wanda.expect("#wait", "#wait")
    meet(checked_server.port, wanda, "wanda", "other")


def test_two_messages_in_one_segment_are_two_messages(checked_server: ChatServer) -> None:
    """§2.1: lines are cut at LF, not at recv(): one write of two lines is two messages."""
    alice, bob = pair(checked_server.port)
    alice.send_raw(b"one\ntwo\n")
    bob.expect("one", "two")


def test_one_message_in_many_segments_is_one_message(checked_server: ChatServer) -> None:
    """§2.1: a line written a byte at a time is still one message."""
    alice, bob = pair(checked_server.port)
    for octet in b"piece by piece\n":
        alice.send_raw(bytes([octet]))
    bob.expect("piece by piece")
