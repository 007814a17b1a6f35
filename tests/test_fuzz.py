"""Fuzzing: random byte streams, split at random points, sent to a live server.

Each example connects a waiting partner, then a fuzzing client that sends a
stream drawn by Hypothesis in random chunks: raw binary mixed with pieces of
real protocol (nicknames, commands, messages, CR, LF), so that the stream
reaches every phase of §7 and not only the nickname phase.  The fuzzer then
hangs up (end of file, §8), and both clients read until the server closes.

The properties:

* every line the server sends is a ``server-line`` of spec/mechat.abnf
  (tests/grammar.py), and also, by the code's own rules, a notice of §6
  (``protocol.parse_notice``) or a message of §4 (``protocol.check_message``);
* a relayed message is one of the fuzzer's own complete lines, in the order
  sent (nothing invented, cut or reordered);
* nothing follows a final notice (``#user_quit``, ``#nickname_timeout``,
  ``#server_full``, ``#server_shutdown``): it is the last line before the close;
* the server never crashes: after all examples a fresh pair still chats, and
  no thread or descriptor is left behind (``checked_server`` in conftest.py).

Profiles: the normal suite runs the ``ci`` profile, 50 examples with a fixed
seed so that the suite is deterministic.  For a long random run, by hand::

    MECHAT_FUZZ_PROFILE=long python -m pytest tests/test_fuzz.py
"""

import contextlib
import os
import socket
from typing import List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechat import protocol
from mechat.protocol import Notice
from mechat.server import ChatServer
from tests.grammar import valid
from tests.leaks import Baseline
from tests.peers import Peer

SLOW_IS_FINE = [HealthCheck.too_slow]  # each example is a real connection
settings.register_profile(
    "ci", max_examples=50, derandomize=True, deadline=None, suppress_health_check=SLOW_IS_FINE
)
settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=SLOW_IS_FINE)
PROFILE = settings.get_profile(os.environ.get("MECHAT_FUZZ_PROFILE", "ci"))

#: Notices after which the server closes the connection (§6).
FINAL_NOTICES = {Notice.USER_QUIT, Notice.NICKNAME_TIMEOUT, Notice.SERVER_FULL, Notice.SERVER_SHUTDOWN}

#: Pieces of real protocol, so that random streams get past the nickname phase.
TOKENS = [b"fuzzer\n", b"/quit\n", b"/nickname new\n", b"/nickname\n", b"/quitnow\n", b"hello\n", b"#wait\n"]
TOKENS += [b"\r", b"\n", b"\r\n", b"\x00", b"\xff", "é".encode(), b"x" * 2100]

#: Messages, so that a matched fuzzer has something to relay (§4).
MESSAGES = [b"hello\n", "été ☃\tok\n".encode(), b"x" * 1999 + b"\n"]

piece = st.one_of(st.sampled_from(TOKENS), st.sampled_from(MESSAGES), st.binary(max_size=80))
#: Half the streams open with a valid nickname, so they reach the chatting phase (§7.3).
streams = st.builds(
    lambda named, rest: [b"fuzzer\n"] * named + rest, st.booleans(), st.lists(piece, max_size=30)
)


def sent_lines(stream: bytes) -> List[bytes]:
    """Return the complete lines of ``stream`` as the server frames them (§2.1, §2.2)."""
    lines = stream.split(protocol.LF)[:-1]
    return [line[:-1] if line.endswith(protocol.CR) else line for line in lines]


def read_to_close(peer: Peer) -> List[bytes]:
    """Read every line until the server closes the connection."""
    lines = []
    line = peer.next_line()
    while line is not None:
        lines.append(line)
        line = peer.next_line()
    assert not peer.buffer, "unterminated bytes before the close: %r" % peer.buffer
    return lines


def check_server_lines(lines: List[bytes]) -> List[bytes]:
    """Check each line is a notice or a message, nothing after a final notice; return the messages."""
    messages = []
    for index, line in enumerate(lines):
        assert valid("server-line", line), "not a server-line of spec/mechat.abnf: %r" % line[:80]
        if line.startswith(protocol.NOTICE_PREFIX):
            name = protocol.parse_notice(line.decode("ascii")).name
            assert name not in FINAL_NOTICES or index == len(lines) - 1, "lines after %r" % line
        else:
            protocol.check_message(line)  # raises InvalidMessage if it is not one (§4)
            assert not line.startswith(protocol.COMMAND_PREFIX), "a command was relayed: %r" % line
            messages.append(line)
    return messages


def fuzz_once(port: int, chunks: List[bytes]) -> None:
    """Send one fuzzed stream next to a waiting partner, and check all the server says.

    Whatever happens, both clients are closed and the server must be back
    to its baseline before the next example, so that no example sees
    another's leftover waiter.
    """
    baseline = Baseline()
    partner = Peer(port)
    fuzzer = Peer(port)
    try:
        check_one_stream(partner, fuzzer, chunks)
    finally:
        partner.close()
        fuzzer.close()
        baseline.settle()


def check_one_stream(partner: Peer, fuzzer: Peer, chunks: List[bytes]) -> None:
    """Let ``partner`` wait, have ``fuzzer`` send ``chunks`` and hang up, then check both."""
    partner.send("partner")
    partner.expect("#wait")
    with contextlib.suppress(OSError):  # the stream may hold a /quit: the server closes
        for chunk in chunks:
            fuzzer.send_raw(chunk)
        fuzzer.sock.shutdown(socket.SHUT_WR)  # end of file, which ends the session (§8)
    assert check_server_lines(read_to_close(fuzzer)) == []  # the partner said nothing
    with contextlib.suppress(OSError):  # the fuzzer's hang-up may have closed it already
        partner.send("/quit")
    relayed = check_server_lines(read_to_close(partner))
    sent = iter(sent_lines(b"".join(chunks)))
    assert all(line in sent for line in relayed), "relayed lines the fuzzer never sent, or out of order"


def test_random_streams_get_only_valid_lines_back(checked_server: ChatServer) -> None:
    """§2-§8: whatever bytes arrive, the server answers with valid lines only, and survives."""

    @PROFILE
    @given(streams)
    def fuzz(chunks: List[bytes]) -> None:
        fuzz_once(checked_server.port, chunks)

    fuzz()
