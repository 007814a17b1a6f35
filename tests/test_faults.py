"""Garbage and faults: each is answered as the spec says, and nothing leaks.

Every test here runs against ``checked_server`` (tests/conftest.py): after the
test a fresh pair must still chat, and once every client is closed the
process's thread and descriptor counts must come back to their baseline.
So each test pins two things, the spec's answer to the fault and the
absence of a leak or a crash behind it.

The faults: bytes that are not text (invalid UTF-8, NUL, a lone CR, binary),
a half-closed connection (``shutdown(SHUT_WR)``: end of file, which §8 reads
as hanging up), and a reset (``SO_LINGER`` 0) in every phase of §7,
including in the middle of a flood.
"""

import socket
import threading
from typing import List

import pytest

from mechat.server import ChatServer
from tests import leaks
from tests.leaks import Baseline
from tests.peers import Peer, expect_refused, pair, until_heard_leaving, waiting
from tests.streams import numbered, numbered_line, read_until

#: Every octet value, so every LF in it splits off a line of binary.
BINARY = bytes(range(256)) * 4

#: Lines that are neither nicknames nor messages: not UTF-8, NUL, lone CR,
#: DEL, an escape sequence, and one CR too many before the LF (§2.2, §2.4, §4).
GARBAGE_LINES = [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"a\x00b", b"a\rb", b"a\x7f", b"\x1b[2J", b"a\r\r"]


def binary_lines() -> List[bytes]:
    """Return the lines that BINARY splits into (the tail after the last LF is unfinished)."""
    return BINARY.split(b"\n")[:-1]


# -- Garbage ------------------------------------------------------------------


@pytest.mark.parametrize("garbage", GARBAGE_LINES, ids=repr)
def test_garbage_nickname_is_refused(checked_server: ChatServer, garbage: bytes) -> None:
    """§3, §2.4: a first line that is not a nickname gets #invalid_nickname, then a retry works."""
    peer = Peer(checked_server.port)
    peer.send(garbage, "alice")
    peer.expect("#invalid_nickname", "#wait")


@pytest.mark.parametrize("garbage", GARBAGE_LINES, ids=repr)
def test_garbage_message_is_refused_and_never_relayed(checked_server: ChatServer, garbage: bytes) -> None:
    """§4, §2.4: a line that is not a message gets #invalid_message and reaches nobody."""
    alice, bob = pair(checked_server.port)
    expect_refused(alice, bob, garbage, "#invalid_message")


def test_garbage_while_waiting_is_refused(checked_server: ChatServer) -> None:
    """§7.2: garbage while waiting gets #invalid_message; a message gets #wait."""
    wanda = waiting(checked_server.port)
    wanda.send(*GARBAGE_LINES, "hello?")
    wanda.expect(*["#invalid_message"] * len(GARBAGE_LINES), "#wait")


def test_binary_in_nickname_phase(checked_server: ChatServer) -> None:
    """§3: each line of binary is refused as a nickname; the connection still works."""
    peer = Peer(checked_server.port)
    peer.send_raw(BINARY + b"\nalice\n")  # the LF ends the unfinished tail
    peer.expect(*["#invalid_nickname"] * (len(binary_lines()) + 1), "#wait")


def test_binary_while_chatting(checked_server: ChatServer) -> None:
    """§4: each line of binary is refused as a message, and none of it is relayed."""
    alice, bob = pair(checked_server.port)
    alice.send_raw(BINARY + b"\n")
    alice.send("clean")
    alice.expect(*["#invalid_message"] * (len(binary_lines()) + 1))
    bob.expect("clean")


def test_crlf_and_utf8_pass(checked_server: ChatServer) -> None:
    """§2.2, §2.4: one CR before LF is dropped; valid multi-byte UTF-8 and HTAB are relayed."""
    alice, bob = pair(checked_server.port)
    alice.send_raw("crlf\r\nété ☃ 🐍\tok\r\n".encode())
    bob.expect("crlf", "été ☃ 🐍\tok")


# -- Half-close: end of file from the client ----------------------------------


def half_close(peer: Peer) -> None:
    """Send FIN (shutdown SHUT_WR) but keep reading."""
    peer.sock.shutdown(socket.SHUT_WR)


def test_half_close_in_nickname_phase_closes(checked_server: ChatServer) -> None:
    """§8: end of file before a nickname closes the connection without a reply."""
    peer = Peer(checked_server.port)
    peer.send_raw(b"ali")  # and never the rest of the line
    half_close(peer)
    peer.expect_closed()


def test_half_close_while_waiting_withdraws(checked_server: ChatServer) -> None:
    """§7.2, §8: a waiter that sends end of file is closed and never handed out."""
    wanda = waiting(checked_server.port)
    half_close(wanda)
    wanda.expect_closed()
    waiting(checked_server.port, "next")  # waits: the half-closed waiter is gone


def test_half_close_while_chatting_is_hanging_up(checked_server: ChatServer) -> None:
    """§8: end of file is hanging up; lines sent before it arrive, then #user_quit and close."""
    alice, bob = pair(checked_server.port)
    alice.send("last words")
    half_close(alice)
    bob.expect("last words", "#user_quit")
    bob.expect_closed()
    alice.expect_closed()


# -- Reset in every phase -----------------------------------------------------


def test_reset_in_nickname_phase(checked_server: ChatServer) -> None:
    """§8: a reset before a nickname just ends that connection."""
    peer = Peer(checked_server.port)
    peer.send_raw(b"half a nick")
    peer.reset()


def test_reset_while_waiting_withdraws(checked_server: ChatServer) -> None:
    """§7.2, §8: a reset waiter is never handed out (the ghost waiter)."""
    waiting(checked_server.port).reset()
    until_heard_leaving(checked_server, "wanda")
    waiting(checked_server.port, "next")


def test_reset_while_chatting_tells_partner(checked_server: ChatServer) -> None:
    """§8: a reset while chatting is hanging up: the partner gets #user_quit and is closed."""
    alice, bob = pair(checked_server.port)
    alice.send("before the reset")
    bob.expect("before the reset")
    alice.reset()
    bob.expect("#user_quit")
    bob.expect_closed()


def flood(peer: Peer, count: int) -> None:
    """Send numbered lines until ``count`` are sent or the connection fails."""
    try:
        for number in range(count):
            peer.send_raw(numbered_line("flooder", number) + b"\n")
    except OSError:
        pass  # reset by the test, or closed by the server


@pytest.mark.parametrize("who_resets", ["flooder", "reader"])
def test_reset_during_a_flood(checked_server: ChatServer, who_resets: str) -> None:
    """§8: a reset mid-flood: what arrived is a gap-free prefix, then #user_quit, then close."""
    alice, bob = pair(checked_server.port)
    sender = threading.Thread(target=flood, args=(alice, 1_000_000), daemon=True)
    sender.start()
    bob.expect(*numbered("flooder", 3))  # the flood is under way
    resetter, survivor = (alice, bob) if who_resets == "flooder" else (bob, alice)
    resetter.reset()
    sender.join(timeout=10)
    assert not sender.is_alive()
    first = 3 if survivor is bob else 0
    received = read_until(survivor, b"#user_quit")
    assert received == [numbered_line("flooder", number) for number in range(first, first + len(received))]
    survivor.expect_closed()


def test_leak_check_can_fail(checked_server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The leak check itself: one descriptor more than at the baseline is reported as a leak.

    The counts are fixed by the test, not read from the process: a real stray
    socket could be cancelled out by a descriptor of an earlier test that
    closes meanwhile.  Everything else is the real settle().
    """
    at_baseline = leaks.Counts(threads=5, fds=20)
    monkeypatch.setattr(leaks, "counts", lambda: at_baseline)
    baseline = Baseline()
    monkeypatch.setattr(leaks, "counts", lambda: at_baseline._replace(fds=21))  # a descriptor left open
    with pytest.raises(AssertionError, match="leaked"):
        baseline.settle(timeout=0.05)
    monkeypatch.setattr(leaks, "counts", lambda: at_baseline)  # closed: the same check now passes
    baseline.settle()
