"""Nothing lost: floods in both directions at full speed (spec §8, §9.5).

Every pair runs with flood control off (``max_rate=0``, as the benchmarks
do) and both partners send numbered lines at once, each from its own
thread, while another thread per client reads.  Every line must arrive
exactly once, in order and unmodified.  When a partner leaves in the middle,
what the other received before is a gap-free prefix, and it is told by
``#user_quit``: a line is delivered when the server has written it to the
partner (§8), and a line it could no longer deliver is never lost silently.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from typing import List

from mechat.server import ChatServer
from tests.peers import Peer, pair
from tests.streams import assert_prefix, numbered, read_to_close, read_until, send_all, send_until_closed

#: Pairs flooding at once, and lines each client sends.
PAIRS = 20
LINES = 2000

#: Seconds a whole flood may take to arrive.  The deadline is for the whole
#: flood, not per line: with 120 busy threads on two cores, one reader can
#: wait seconds for its first line while the other pairs run (3 s seen under
#: coverage), and that is scheduling, not a lost line.
FLOOD_DEADLINE = 60.0


def receive(peer: Peer, count: int) -> List[bytes]:
    """Read exactly ``count`` lines, all within FLOOD_DEADLINE."""
    deadline = time.monotonic() + FLOOD_DEADLINE
    return [peer.read_line(deadline - time.monotonic()) for _ in range(count)]


def test_every_line_arrives_once_in_order_unmodified(checked_server: ChatServer) -> None:
    """§8: 20 pairs flood both ways at full speed; each side receives exactly what the other sent."""
    pairs = [pair(checked_server.port, "a%d" % index, "b%d" % index) for index in range(PAIRS)]
    clients = [peer for both in pairs for peer in both]
    for peer in clients:  # a send may wait for a starved handler as long as a read may
        peer.sock.settimeout(FLOOD_DEADLINE)
    sent = {peer: numbered(str(index), LINES) for index, peer in enumerate(clients)}
    with ThreadPoolExecutor(max_workers=2 * len(clients)) as pool:
        readers = {peer: pool.submit(receive, peer, LINES) for peer in clients}
        for peer in clients:
            pool.submit(send_all, peer, sent[peer])
        for first, second in pairs:
            assert readers[first].result() == sent[second]
            assert readers[second].result() == sent[first]
    for first, second in pairs:
        first.send("/quit")
        second.expect("#user_quit")
        second.expect_closed()
        first.expect_closed()


def test_partner_quitting_mid_flood_is_told(checked_server: ChatServer) -> None:
    """§8: bob quits while alice floods; alice gets bob's lines intact, then #user_quit, then close."""
    alice, bob = pair(checked_server.port)
    alice_lines, bob_lines = numbered("alice", 100_000), numbered("bob", LINES)
    with ThreadPoolExecutor(max_workers=2) as pool:
        flooder = pool.submit(send_until_closed, alice, alice_lines)
        # Bob reads all along, as a client does: however small his buffers,
        # alice's handler never waits on him, so no step here races the
        # server's send timeout.
        bob_reader = pool.submit(read_to_close, bob, FLOOD_DEADLINE)
        send_all(bob, [*bob_lines, b"/quit"])
        assert read_until(alice, b"#user_quit") == bob_lines
        alice.expect_closed()
        flooder.result(FLOOD_DEADLINE)  # the close ended the flood
        assert_prefix(bob_reader.result(FLOOD_DEADLINE), alice_lines)  # the quitter gets no reply (§8)
