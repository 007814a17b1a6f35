"""The limits of spec §9, each driven to its boundary on a live server.

Every test starts its own server with small limits (``start_server(**limits)``)
so that a limit is crossed in milliseconds: a 0.3 s nickname timeout, three
clients, a 0.3 s send timeout, a rate of a few lines a second.  Small limits
are limits, not clocks: no test asserts how long anything took, and none
sleeps; each waits, with a deadline, for the line the spec says comes next.
"""

import select
import socket
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, ClassVar, List, Optional, Tuple

import pytest

from mechat.connection import Connection
from mechat.flood import TokenBucket
from mechat.protocol import Line, Parsed, Phase
from mechat.server import ChatHandler, ChatServer
from tests.background import in_background
from tests.conftest import StartServer
from tests.leaks import Baseline
from tests.peers import NICKNAME_ROOM, TIMEOUT, Peer, meet, meet_non_reader, pair, waiting
from tests.streams import numbered, read_to_close

#: A flood chunk, made once so that the test's own allocations stay out of the trace.
CHUNK = b"x" * 65536

#: The 10 MB that a hostile peer sends without a newline (issue 4).
FLOOD_OCTETS = 10 * 1024 * 1024

#: The most the server may allocate while it swallows that flood: its
#: recv() buffer, one line and slack for the interpreter, not the flood.
FLOOD_MEMORY_BOUND = 1024 * 1024


def send_flood(peer: Peer, octets: int = FLOOD_OCTETS) -> None:
    """Send ``octets`` bytes that hold no newline."""
    for _ in range(octets // len(CHUNK)):
        peer.send_raw(CHUNK)


def peak_allocation(action: Callable[[], None]) -> int:
    """Run ``action`` and return the most memory the process allocated meanwhile."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- §9.1 line length --------------------------------------------------------


def test_ten_megabytes_without_newline_cost_bounded_memory(start_server: StartServer) -> None:
    """§2.3, §9.1: a 10 MB line is answered once, kept bounded, and the next line is relayed."""
    server = start_server(max_rate=0)
    alice, bob = pair(server.port)

    def flood_then_end_line() -> None:
        send_flood(alice)
        alice.send_raw(b"\n")
        alice.expect("#invalid_message")  # the server has read every byte by now

    peak = peak_allocation(flood_then_end_line)
    assert peak < FLOOD_MEMORY_BOUND, "server held %d bytes of a 10 MB line" % peak
    alice.send("after the flood")
    bob.expect("after the flood")
    bob.send("and back")
    alice.expect("and back")  # nothing else reached alice between: answered once


def test_ten_megabyte_nickname_is_refused_once(start_server: StartServer) -> None:
    """§2.3, §7.1: an over-long first line is one #invalid_nickname, then a nickname works."""
    server = start_server(max_rate=0)
    peer = Peer(server.port)
    send_flood(peer)
    peer.send_raw(b"\n")
    peer.send("alice")
    peer.expect("#invalid_nickname", "#wait")


@pytest.mark.parametrize("limit", [1, 10])
def test_line_limit_is_enforced_at_its_boundary(start_server: StartServer, limit: int) -> None:
    """§9.1: a server's max_line octets pass and one more is refused, however the bytes arrive."""
    server = start_server(max_line=limit, max_rate=0)
    alice, bob = pair(server.port, "a", "b")  # nicknames short enough for the limit
    alice.send_raw(b"m" * limit + b"\n")
    for octet in b"n" * (limit + 1) + b"\n":  # one byte per write
        alice.send_raw(bytes([octet]))
    alice.send("o")
    bob.expect(b"m" * limit, "o")
    alice.expect("#invalid_message")


# -- §9.2 nickname timeout ---------------------------------------------------


@pytest.mark.parametrize(
    "sent, refusal",
    [(b"", None), (b"ali", None), (b"/nope\n", "#invalid_command"), (b"bad nick\n", "#invalid_nickname")],
)
def test_no_nickname_in_time_is_told_and_closed(
    start_server: StartServer, sent: bytes, refusal: Optional[str]
) -> None:
    """§9.2: silence, half a line or refused lines still end in #nickname_timeout, then close."""
    server = start_server(nickname_timeout=0.3 if refusal is None else NICKNAME_ROOM)
    peer = Peer(server.port)
    peer.send_raw(sent)
    if refusal is not None:
        peer.expect(refusal)
    peer.expect("#nickname_timeout", timeout=NICKNAME_ROOM + TIMEOUT)
    peer.expect_closed()


def test_nickname_timeout_spares_those_who_chose_one(start_server: StartServer) -> None:
    """§9.2: the timeout applies only to the nickname phase; waiting and chatting clients stay."""
    server = start_server(nickname_timeout=NICKNAME_ROOM)  # room for the others to name themselves first
    alice, bob = pair(server.port)
    carol = waiting(server.port, "carol")
    silent = Peer(server.port)
    silent.expect("#nickname_timeout", timeout=NICKNAME_ROOM + TIMEOUT)  # passed for everybody above
    silent.expect_closed()
    alice.send("still here")
    bob.expect("still here")
    meet(server.port, carol, "carol", "dave")


# -- §9.3 maximum clients ----------------------------------------------------


def test_client_past_the_maximum_is_refused_and_others_carry_on(start_server: StartServer) -> None:
    """§9.3: the N+1-th connection gets #server_full and is closed; a freed place is reused."""
    server = start_server(max_clients=3)
    alice, bob = pair(server.port)
    carol = waiting(server.port, "carol")
    extra = Peer(server.port)
    extra.expect("#server_full")
    extra.expect_closed()
    alice.send("hi bob")
    bob.expect("hi bob")
    alice.send("/quit")
    alice.expect_closed()  # alice's handler has left the Matchmaker before it closed
    bob.expect("#user_quit")
    meet(server.port, carol, "carol", "dave")


# -- §9.4 send timeout (slow consumer) ---------------------------------------


def send_until_refused(sock: socket.socket, line: bytes, count: int) -> bool:
    """Send ``line`` ``count`` times; return True if the server hung up first."""
    try:
        for _ in range(count):
            sock.sendall(line)
    except OSError:
        return True  # the server closed us: what the test is waiting for
    return False


#: Seconds the slow-consumer defence may take to drop a non-reader: a hang
#: detector only.  The drop takes --send-timeout once the send buffer is
#: full, and SmallSendBuffer below keeps that buffer small.
DROP_DEADLINE = 30.0


class SmallSendBuffer(ChatHandler):
    """A handler whose kernel send buffer stays at a few kilobytes.

    A write blocks, and the §9.4 timer starts, only once the send buffer
    to the non-reader is full.  Left to itself, Linux grows that buffer to
    megabytes, so the server would first have to refuse or relay hundreds
    of thousands of lines: seconds of work under coverage on a busy machine.
    With 4 KB the drop comes after a few hundred, and the tests' deadlines
    are never approached.
    """

    def setup(self) -> None:
        """Prepare as usual, with a send buffer that fills at once."""
        super().setup()
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


def alice_and_non_reader(port: int) -> Tuple[Peer, Peer]:
    """Return alice, and bob who never reads, matched; bob's sends may wait as long as a drop takes."""
    alice = waiting(port, "alice")
    bob = meet_non_reader(port, alice, "bob")
    bob.sock.settimeout(DROP_DEADLINE)  # its sender must outlast a slow server, or nothing fills up
    return alice, bob


def slow_consumer_drops_partner(port: int, flood: Callable[[socket.socket, socket.socket], object]) -> None:
    """Pair alice with a non-reader, run ``flood`` on their sockets; alice must get #user_quit, a close."""
    baseline = Baseline()
    alice, bob = alice_and_non_reader(port)
    with in_background(lambda: flood(alice.sock, bob.sock), DROP_DEADLINE):
        alice.expect("#user_quit", timeout=DROP_DEADLINE)
        alice.expect_closed()
    alice.close()
    bob.close()
    baseline.settle()  # the server let go of bob's thread and socket too


def test_partner_that_never_reads_is_dropped(start_server: StartServer) -> None:
    """§9.4: a write blocked past --send-timeout drops the non-reader; the sender gets #user_quit."""
    server = start_server(SmallSendBuffer, send_timeout=0.3, max_rate=0)
    line = b"y" * 999 + b"\n"
    slow_consumer_drops_partner(server.port, lambda alice, bob: send_until_refused(alice, line, 40_000))


def test_non_reader_that_floods_its_own_replies_is_dropped(start_server: StartServer) -> None:
    """§9.4, §8: a client whose refusals back up is dropped; its partner gets #user_quit and a close."""
    server = start_server(SmallSendBuffer, send_timeout=0.3, max_rate=0)
    slow_consumer_drops_partner(server.port, lambda alice, bob: send_until_refused(bob, b"#x\n" * 1000, 1000))


class LateReader(SmallSendBuffer):
    """A handler that notes every line it parses after its session has closed (§7.4)."""

    #: The lines parsed too late, and every connection served; each test clears both.
    late: ClassVar[List[Line]] = []
    connections: ClassVar[List[Connection]] = []

    def setup(self) -> None:
        """Prepare as usual, and remember the connection."""
        super().setup()
        LateReader.connections.append(self.conn)

    def parse(self, line: Line) -> Parsed:
        """Note ``line`` if the session is already over, then parse it as usual."""
        if self.matchmaker.phase_of(self.conn) is Phase.CLOSED:
            LateReader.late.append(line)
        return super().parse(line)


def test_dropped_client_is_read_no_further(start_server: StartServer) -> None:
    """§7.4, §9.4: once a client is dropped, its handler parses nothing more and ends.

    bob never reads and sends 30 MB of lines that are refused, far more than
    the socket buffers between him and the server hold.  His replies back
    up and he is dropped while megabytes of his lines are still buffered.
    His handler must not go on parsing them (it would burn the CPU that the
    clients still connected need), and must close his socket while he is
    still sending.  The drop is made by another thread, so one line may
    already be in the handler's hands: its refusal is the step that finds
    the session over, and nothing after it is parsed.
    """
    LateReader.late.clear()
    LateReader.connections.clear()
    server = start_server(LateReader, send_timeout=0.3, max_rate=0)
    alice, bob = alice_and_non_reader(server.port)
    [bobs] = [conn for conn in LateReader.connections if conn.nickname == "bob"]
    refused: List[bool] = []

    def flood() -> None:
        refused.append(send_until_refused(bob.sock, b"#x\n" * 1000, 10_000))

    with in_background(flood, DROP_DEADLINE):
        alice.expect("#user_quit", timeout=DROP_DEADLINE)
        alice.expect_closed()
        assert bobs.finished.wait(DROP_DEADLINE), "bob's handler never closed his socket"
    assert refused == [True], "bob sent all 30 MB: the server was still reading him"
    assert len(LateReader.late) <= 1, "parsed %d lines after bob was dropped" % len(LateReader.late)


#: A line refused in every phase: NUL is in neither a nickname nor a message (§3, §4).
REFUSED = b"\x00\n"


@pytest.mark.parametrize(
    "phase, ending, last_notice",
    [
        ("chatting", "partner quits", "#user_quit"),
        ("chatting", "server stops", "#server_shutdown"),
        ("nickname", "server stops", "#server_shutdown"),
    ],
)
def test_session_closed_by_another_thread_is_read_no_further(
    start_server: StartServer, phase: str, ending: str, last_notice: str
) -> None:
    """§7.4, §8, §10: when another thread ends a session, its handler stops at the next line.

    bob floods lines that are refused, and reads his refusals all along, so
    he is never a slow consumer.  Then his partner quits, or the server
    stops.  His handler may parse the one line that finds the session over,
    not one more, though bob is still sending.
    """
    LateReader.late.clear()
    server = start_server(LateReader, max_rate=0)
    alice, bob = pair(server.port) if phase == "chatting" else (None, Peer(server.port))
    refusal = "#invalid_message" if phase == "chatting" else "#invalid_nickname"
    bob.sock.settimeout(DROP_DEADLINE)  # his sends may wait on a busy server
    with ThreadPoolExecutor(max_workers=2) as pool:
        flood = pool.submit(send_until_refused, bob.sock, REFUSED * 1000, 10_000)
        bob.expect(refusal)  # the flood is being read
        received = pool.submit(read_to_close, bob, DROP_DEADLINE)
        if alice is not None and ending == "partner quits":
            alice.send("/quit")
        else:
            server.shutdown()
            server.server_close()
        lines = received.result(DROP_DEADLINE)
        assert flood.result(DROP_DEADLINE), "bob sent all 20 MB: the server was still reading him"
    assert lines[-1] == last_notice.encode() and set(lines[:-1]) <= {refusal.encode()}
    assert len(LateReader.late) <= 1, "parsed %d lines after the session closed" % len(LateReader.late)


# -- §9.5 flood control ------------------------------------------------------


def gather(peers: List[Peer], total: int) -> List[List[bytes]]:
    """Read from several peers at once until ``total`` lines arrived in all; return each one's."""
    received: List[List[bytes]] = [[] for _ in peers]
    deadline = time.monotonic() + TIMEOUT
    while sum(map(len, received)) < total:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "only %d of %d lines arrived" % (sum(map(len, received)), total)
        readable, _, _ = select.select([peer.sock for peer in peers], [], [], remaining)
        for index, peer in enumerate(peers):
            if peer.sock in readable:
                data = peer.sock.recv(65536)
                assert data, "connection closed while lines were still due"
                peer.take(data)
            while peer.unread:
                received[index].append(peer.read_line())
    return received


def test_lines_over_the_rate_are_refused_never_dropped(start_server: StartServer) -> None:
    """§9.5: past --max-rate each line gets #rate_limited; refused plus relayed is all that was sent."""
    server = start_server(max_rate=1)
    alice, bob = pair(server.port)
    sent = numbered("alice", 20)
    alice.send(*sent)
    replies, relayed = gather([alice, bob], len(sent))
    assert replies and set(replies) == {b"#rate_limited"}
    assert relayed == [line for line in sent if line in relayed]  # in order


def test_burst_below_the_rate_passes(start_server: StartServer) -> None:
    """§9.5: right after its nickname a client may send max_rate - 1 lines at once, all relayed."""
    server = start_server(max_rate=5)
    alice, bob = pair(server.port)
    alice.send("1", "2", "3", "4")  # the nickname took the fifth token
    bob.expect("1", "2", "3", "4")


def all_relayed_at_once(server: ChatServer, count: int) -> None:
    """Send ``count`` lines in one write; fail unless all are relayed and none refused."""
    alice, bob = pair(server.port)
    sent = numbered("alice", count)
    alice.send(*sent)
    bob.expect(*sent)
    bob.send("done")
    alice.expect("done")  # and alice got no #rate_limited before it


def test_default_rate_lets_a_script_through(start_server: StartServer) -> None:
    """§9.5: the default rate relays a script's 300 lines sent at once, none refused."""
    all_relayed_at_once(start_server(), 300)


def test_rate_zero_turns_flood_control_off(start_server: StartServer) -> None:
    """§9.5: --max-rate 0 relays every line, however fast."""
    all_relayed_at_once(start_server(max_rate=0), 5000)


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_of_rate_then_rate_per_second() -> None:
    """§9.5: a bucket of rate N takes N lines at once, then one more each 1/N s."""
    clock = FakeClock()
    bucket = TokenBucket(4, clock)
    assert [bucket.allow() for _ in range(5)] == [True] * 4 + [False]
    clock.now += 0.25
    assert [bucket.allow() for _ in range(2)] == [True, False]
    clock.now += 60  # a long pause refills one second's worth, no more
    assert [bucket.allow() for _ in range(5)] == [True] * 4 + [False]


def test_token_bucket_of_rate_zero_allows_everything() -> None:
    """§9.5: a rate of 0 turns flood control off."""
    bucket = TokenBucket(0, FakeClock())
    assert all(bucket.allow() for _ in range(10_000))


def test_token_bucket_below_one_a_second_allows_one_then_one_per_period() -> None:
    """§9.7: a rate of 0.01 (one /all in 100 s) still allows the first, then one each 100 s."""
    clock = FakeClock()
    bucket = TokenBucket(0.01, clock)
    assert [bucket.allow() for _ in range(2)] == [True, False]
    clock.now += 99
    assert not bucket.allow()
    clock.now += 1
    assert [bucket.allow() for _ in range(2)] == [True, False]
