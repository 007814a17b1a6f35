"""The server's fast paths keep the rules they replace.

Each optimisation of issue 6 changes how the server does something, never
what it does.  These tests pin the behaviour each one could have broken,
against the real server on 127.0.0.1.
"""

import select

from tests.conftest import StartServer
from tests.peers import Peer, pair

#: Lines of 1,999 octets that one sendall() carries in the slow-consumer test.
CHUNK = (b"x" * 1999 + b"\n") * 100

#: Upper bound on what the test sends before it gives up: 40 MB, far more
#: than loopback socket buffers hold.
MAX_CHUNKS = 200


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(start_server: StartServer) -> None:
    """A write blocked for the send timeout drops that client; its partner gets #user_quit (§9.4).

    Once chatting, the server's sockets are blocking and the kernel keeps
    the send timeout (SO_SNDTIMEO) instead of Python; this is the rule
    that change must keep.
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


def test_an_idle_chatter_is_not_timed_out(start_server: StartServer) -> None:
    """Without a read timeout, a quiet pair still relays the next line (§7.3)."""
    server = start_server(max_rate=0, send_timeout=0.2, nickname_timeout=0.2)
    alice, bob = pair(server.port)
    quiet = Peer(server.port)  # outlives both timeouts before anyone speaks again
    quiet.expect("#nickname_timeout", timeout=5)
    alice.send("still here")
    bob.expect("still here")
    for peer in (alice, bob, quiet):
        peer.close()
