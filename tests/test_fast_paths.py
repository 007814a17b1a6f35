"""The server's fast paths keep the rules they replace.

Each optimisation of issue 6 changes how the server does something, never
what it does.  These tests pin the behaviour each one could have broken,
against the real server on 127.0.0.1.
"""

import select
import socket
from typing import List

import pytest

from mechat import protocol
from mechat.connection import Connection, send_within
from mechat.server import ChatServer, connection_of
from tests.conftest import StartServer
from tests.peers import NICKNAME_ROOM, TIMEOUT, Peer, meet, pair
from tests.test_connection import assert_send_within_delivers_all

#: Lines of 1,999 octets that one sendall() carries in the slow-consumer test.
CHUNK = (b"x" * 1999 + b"\n") * 100

#: Upper bound on what the test sends before it gives up: 40 MB, far more
#: than loopback socket buffers hold.
MAX_CHUNKS = 200


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(start_server: StartServer) -> None:
    """A write blocked for the send timeout drops that client; its partner gets #user_quit (§9.4).

    Relaying in batches (ChatHandler.pass_on) must keep this: the batch is
    written like a single line, under the same timeout.
    """
    server = start_server(max_rate=0, send_timeout=0.3)
    sender, sleeper = pair(server.port)
    for _ in range(MAX_CHUNKS):
        if select.select([sender.sock], [], [], 0)[0]:
            break  # the server has something to say: the sleeper is gone
        try:
            sender.sock.sendall(CHUNK)
        except OSError:
            break  # the server closed us after telling us
    sender.expect("#user_quit")
    sender.expect_closed()
    sender.close()
    sleeper.close()


def test_send_within_delivers_everything_past_a_full_window() -> None:
    """send_within() waits out a full receive window and sends the rest, in order."""
    writer, reader = socket.socketpair()
    assert_send_within_delivers_all(writer, reader)
    writer.close()
    reader.close()


def test_send_within_gives_up_on_a_peer_that_does_not_read() -> None:
    """With nobody reading, send_within() raises socket.timeout instead of blocking (§9.4)."""
    writer, reader = socket.socketpair()
    with pytest.raises(socket.timeout):
        send_within(writer, b"x" * 10_000_000, seconds=0.2)
    writer.close()
    reader.close()


def test_sockets_have_no_python_timeout_in_any_phase(start_server: StartServer) -> None:
    """Every client socket blocks, so send_within()'s deadline is the only one on a write (§9.4)."""
    server = start_server(max_rate=0)
    alice = Peer(server.port)
    alice.send("not a nickname!")
    alice.expect("#invalid_nickname")  # its handler is in the nickname phase now
    assert [conn.sock.gettimeout() for conn in connections(server)] == [None]
    alice.send("alice")
    alice.expect("#wait")
    bob = meet(server.port, alice, "alice", "bob")
    assert [conn.sock.gettimeout() for conn in connections(server)] == [None, None]
    alice.close()
    bob.close()


def connections(server: ChatServer) -> List[Connection]:
    """Return the server's open connections."""
    return [connection_of(chatter) for chatter in server.matchmaker._connected]


def test_an_idle_chatter_is_not_timed_out(start_server: StartServer) -> None:
    """Without a read timeout, a quiet pair still relays the next line (§7.3)."""
    # alice and bob must be read before their nickname timeouts fire, so
    # that one is not short; the pair then idles through both timeouts.
    server = start_server(max_rate=0, send_timeout=0.2, nickname_timeout=NICKNAME_ROOM)
    alice, bob = pair(server.port)
    quiet = Peer(server.port)  # outlives both timeouts before anyone speaks again
    quiet.expect("#nickname_timeout", timeout=NICKNAME_ROOM + TIMEOUT)
    alice.send("still here")
    bob.expect("still here")
    for peer in (alice, bob, quiet):
        peer.close()


def test_octet_check_agrees_with_the_message_rule() -> None:
    """The undecoded-octet check refuses exactly what §4's MESSAGE_RE refuses, first and later characters."""
    for code in [*range(0x80), 0xA0, 0x85, 0x2028, 0xFEFF, 0x1F600]:
        for text in ("ok" + chr(code) + "ok", chr(code) + "ok", chr(code)):
            refused = protocol.MESSAGE_RE.fullmatch(text) is None
            try:
                protocol.check_message(text.encode("utf-8"))
            except protocol.InvalidMessage:
                assert refused, "%r refused but allowed by §4" % text
            else:
                assert not refused, "%r allowed but refused by §4" % text


def test_invalid_utf8_is_still_refused() -> None:
    """A line that is not UTF-8 is refused even with no forbidden octet in it (§2.4, §4)."""
    for line in (b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf"):
        with pytest.raises(protocol.InvalidMessage):
            protocol.check_message(line)
