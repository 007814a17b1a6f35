"""Protocol 2's named users on a live server: unique names, /who, /msg, /all, /next, the send queue.

The state table's cells for these commands are driven in
tests/test_transitions.py; here are the rules a cell cannot show: two
clients racing for one name, a pattern's details, a list cut to the line
limit, the /all rate, and a recipient that stops reading.
"""

import socket
import threading
from typing import List

import pytest

from mechat import protocol
from mechat.connection import CAUGHT_UP
from mechat.server import connection_of
from tests.background import in_background
from tests.conftest import StartServer
from tests.peers import TIMEOUT, Peer, pair, waiting
from tests.test_hardening import DROP_DEADLINE, SmallSendBuffer, send_until_refused


def test_two_clients_racing_for_one_name_never_both_get_it(start_server: StartServer) -> None:
    """§3.1: of clients that ask for one name in any case at the same moment, exactly one holds it."""
    server = start_server()
    peers = [Peer(server.port) for _ in range(12)]
    start = threading.Barrier(len(peers))

    def ask(peer: Peer, nickname: str) -> None:
        start.wait(TIMEOUT)
        peer.send(nickname)

    threads = [
        threading.Thread(target=ask, args=(peer, "Same" if index % 2 else "sAME"))
        for index, peer in enumerate(peers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    answers = [peer.read_line() for peer in peers]
    assert sorted(answers) == [b"#nickname_taken"] * (len(peers) - 1) + [b"#wait"]


def test_a_name_is_free_as_soon_as_its_session_is_closed(start_server: StartServer) -> None:
    """§3.1: a client that quits frees its name for the next client at once."""
    server = start_server()
    alice = waiting(server.port, "alice")
    alice.send("/quit")
    alice.expect_closed()
    waiting(server.port, "ALICE")


def test_a_client_may_change_the_case_of_its_own_name(start_server: StartServer) -> None:
    """§3.1: the name is the client's own, in any case."""
    alice = waiting(start_server().port, "alice")
    alice.send("/nickname ALICE", "/who")
    alice.expect("#nickname_changed_ALICE", "#online_1 ALICE")


@pytest.mark.parametrize(
    "pattern, listed",
    [
        ("*", "#online_4 [x] Bea bob Tom"),
        ("b*", "#online_2 Bea bob"),
        ("?O?", "#online_2 bob Tom"),
        ("[x]", "#online_1 [x]"),  # no sets: a bracket is itself
        ("[xy]", "#online_0"),
        ("bo", "#online_0"),  # a pattern matches the whole name
    ],
)
def test_who_matches_whole_names_in_any_case_with_star_and_question_mark(
    start_server: StartServer, pattern: str, listed: str
) -> None:
    """§5.4, §6.1: the list of matching names, sorted in any case, and their count."""
    server = start_server()
    pair(server.port, "bob", "Tom")
    _, bea = pair(server.port, "[x]", "Bea")
    bea.send("/who " + pattern)
    bea.expect(listed)


def test_a_long_list_is_cut_to_the_line_limit_and_counts_every_match(start_server: StartServer) -> None:
    """§6.1: as many names as fit in 2000 octets; the count says how many matched in all."""
    server = start_server()
    names = ["user-%02d-%s" % (number, "x" * 22) for number in range(70)]  # 30 characters each
    peers = [Peer(server.port) for _ in names]
    for peer, name in zip(peers, names):
        peer.send(name)
    for peer in peers:
        assert peer.read_line().startswith((b"#wait", b"#matched_to_"))
    peers[0].send("/who user-*")
    line = peers[0].read_line()
    while not line.startswith(b"#online_"):  # a #matched_to_ may come first
        line = peers[0].read_line()
    head, *shown = line.split(b" ")
    assert head == b"#online_70" and len(line) <= protocol.MAX_LINE_OCTETS
    assert [name.decode() for name in shown] == names[: len(shown)]
    assert len(line) + len(b" ") + 30 > protocol.MAX_LINE_OCTETS  # not one more would fit


def test_a_second_all_within_the_rate_is_refused_and_sent_to_nobody(start_server: StartServer) -> None:
    """§9.7: one /all per period; the next is answered #rate_limited, and nobody gets it."""
    server = start_server(all_rate=0.001)  # one per 1,000 s: the second is refused however slow the run
    alice, bob = pair(server.port)
    alice.send("/all first", "/all second", "after")
    alice.expect("#broadcast_1", "#rate_limited")
    bob.expect("#all_from_alice first", "after")


def test_a_recipient_that_stops_reading_never_holds_up_the_sender(start_server: StartServer) -> None:
    """§9.6: direct messages to a client that reads nothing fill its send queue, not the sender's time.

    The sender keeps getting its receipts, and another recipient its
    messages, while the non-reader falls behind; once the non-reader is
    more than the cap behind it is dropped, and its partner is told.
    """
    server = start_server(SmallSendBuffer, send_queue=65536, max_rate=0, send_timeout=60)
    sleeper, partner = pair(server.port, "sleeper", "partner")
    sleeper.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    carol, sender = pair(server.port, "carol", "sender")
    text = "z" * 1000
    receipts = []
    for number in range(400):  # 400 kB: far past the cap and both kernels' buffers
        sender.send("/msg sleeper %d %s" % (number, text), "/msg carol %d" % number)
        receipts.append(sender.read_line(DROP_DEADLINE))
        sender.expect("#sent_to_carol", timeout=DROP_DEADLINE)
        carol.expect("#from_sender %d" % number)
        if receipts[-1] == b"#no_such_user_sleeper":
            break  # dropped: its name is free
    assert set(receipts[:-1]) == {b"#sent_to_sleeper"} and receipts[-1] == b"#no_such_user_sleeper"
    assert 65 < len(receipts) < 400  # past the cap, and long before all of it
    partner.expect("#user_quit", timeout=DROP_DEADLINE)  # the send timeout of 60 s never came into it
    partner.expect_closed()


def test_a_client_that_floods_but_reads_slowly_is_slowed_not_dropped(start_server: StartServer) -> None:
    """§9.4: replies a client has not read make the server read it more slowly; nothing is lost."""
    server = start_server(SmallSendBuffer, send_queue=4096, max_rate=0)
    alice = waiting(server.port, "alice")
    count = 20_000  # 20,000 replies of #online_1 alice: over 300 kB, many times the cap
    with in_background(lambda: alice.send_raw(b"/who\n" * count), DROP_DEADLINE):
        lines: List[bytes] = [alice.read_line(DROP_DEADLINE) for _ in range(count)]
    assert set(lines) == {b"#online_1 alice"}
    alice.send("/next")
    alice.expect("#wait")


def test_next_closes_the_old_partner_even_while_the_sender_is_behind(start_server: StartServer) -> None:
    """§5.7, §8: the old partner is closed at once, though the sender has a backlog of DMs unread.

    alice reads nothing while carol's direct messages pile up in her send
    queue, so her handler waits for her to catch up after each line it
    reads.  The partner it ended must not wait with it.
    """
    server = start_server(SmallSendBuffer, send_queue=10_000_000, max_rate=0, send_timeout=60)
    alice, bob = pair(server.port)
    alice.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    _, carol = pair(server.port, "dave", "carol")
    for number in range(150):  # 150 kB: past what alice's handler lets pile up before it waits
        carol.send("/msg alice %d %s" % (number, "z" * 1000))
        carol.expect("#sent_to_alice", timeout=DROP_DEADLINE)
    alice.send("/next")
    bob.expect("#user_quit", timeout=DROP_DEADLINE)
    bob.expect_closed(DROP_DEADLINE)  # not after the 60 s send timeout
    alice.reset()  # or the server's shutdown waits for her to read her backlog


class WaitWatched(SmallSendBuffer):
    """A handler that says when it is about to wait for a partner that is behind (§9.6)."""

    partner_behind = threading.Event()

    def keep_pace(self) -> None:
        """Flag a partner past CAUGHT_UP, then wait as usual."""
        partner = self.conn.partner
        if partner is not None and len(connection_of(partner)._unsent) > CAUGHT_UP:
            WaitWatched.partner_behind.set()
        super().keep_pace()


def test_next_frees_the_old_partners_handler_from_waiting_for_the_sender(start_server: StartServer) -> None:
    """§5.7, §9.6: bob floods alice, who reads nothing, so his handler waits for her; /next ends the wait."""
    WaitWatched.partner_behind.clear()
    server = start_server(WaitWatched, send_queue=10_000_000, max_rate=0, send_timeout=60)
    alice, bob = pair(server.port)
    alice.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with in_background(lambda: send_until_refused(bob.sock, b"z" * 999 + b"\n", 1000), DROP_DEADLINE):
        assert WaitWatched.partner_behind.wait(DROP_DEADLINE), "bob's handler never had to wait for alice"
        alice.send("/next")
        bob.expect("#user_quit", timeout=DROP_DEADLINE)
        bob.expect_closed(DROP_DEADLINE)  # not after the 60 s send timeout
    alice.reset()  # or the server's shutdown waits for her to read her backlog
