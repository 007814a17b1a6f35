"""Every cell of the state table (§7.5), driven on a live server.

Each test brings a client to the phase of its cell, makes the event happen,
and reads the reply the cell gives.  Then it shows the next phase by what
the client can still do: a client still naming itself can choose a
nickname, a waiting one is answered ``#wait``, a chatting one is relayed,
and a closed one is closed.  The Matchmaker's lookups in the table are
recorded too, so each test also proves that the server took the very cell
it is about.

The tests are made from :data:`~mechat.protocol.TRANSITIONS` itself: a new
row of the table with no scenario here fails, as does a scenario for a cell
the table does not have.
"""

import socket
import threading
from typing import Callable, Dict, List, Tuple

import pytest

from mechat.flood import TokenBucket
from mechat.protocol import TRANSITIONS, Event, Phase
from mechat.server import ChatHandler, ChatServer
from mechat.throttle import MAX_FAILED_LOGINS
from tests.conftest import Cell, StartServer
from tests.peers import TIMEOUT, Peer, in_room, meet, pair, waiting
from tests.test_hardening import DROP_DEADLINE, FakeClock, SmallSendBuffer, send_until_refused

N, W, C, R = Phase.NICKNAME, Phase.WAITING, Phase.CHATTING, Phase.IN_ROOM
Scenario = Callable[[StartServer], None]

#: Each cell's scenario; filled in by @scenario below.
SCENARIOS: Dict[Cell, Scenario] = {}


def scenario(phase: Phase, event: Event) -> Callable[[Scenario], Scenario]:
    """Register a function as the scenario of the cell (phase, event)."""

    def register(function: Scenario) -> Scenario:
        SCENARIOS[phase, event] = function
        return function

    return register


@pytest.mark.parametrize("cell", list(TRANSITIONS), ids=lambda cell: "%s-%s" % (cell[0].name, cell[1].name))
def test_every_cell_gives_its_reply_and_its_next_phase(
    cell: Cell, start_server: StartServer, cells_taken: List[Cell]
) -> None:
    """§7.5: in each phase, each event gets the cell's reply and leads to the cell's next phase."""
    assert cell in SCENARIOS, "no scenario for %s in %s" % (cell[1].value, cell[0].name)
    SCENARIOS[cell](start_server)
    assert cell in cells_taken, "the server never took the cell it was driven to"


def test_every_scenario_is_a_cell_of_the_table() -> None:
    """§7.5: no scenario here tests a cell that the table does not have."""
    assert set(SCENARIOS) == set(TRANSITIONS)


# -- Getting to a phase, and showing which phase a client is in ---------------


def naming(server: ChatServer) -> List[Peer]:
    """Connect a client that the server has admitted, still without a nickname."""
    peer = Peer(server.port)
    peer.send("no name")
    peer.expect("#invalid_nickname")  # so it has been read: admitted, and naming itself
    return [peer]


def queued(server: ChatServer) -> List[Peer]:
    """Connect a client that waits in the queue, as alice."""
    return [waiting(server.port, "alice")]


def paired(server: ChatServer) -> List[Peer]:
    """Connect alice and bob, chatting with each other."""
    return pair(server.port)


def in_the_lab(server: ChatServer) -> List[Peer]:
    """Connect alice and bob, in room lab (alice made it)."""
    return in_room(server.port, "lab", "alice", "bob")


#: How to bring clients to each phase; the event happens to the first of them.
REACH = {N: naming, W: queued, C: paired, R: in_the_lab}


def still_in(phase: Phase, peers: List[Peer]) -> None:
    """Show that the clients are still in ``phase``, by what the first of them can do."""
    if phase is N:
        peers[0].send("late")  # it may still choose a nickname
        peers[0].expect("#wait")
    elif phase is W:
        peers[0].send("anyone?")  # a message goes nowhere
        peers[0].expect("#wait")
    elif phase is R:
        for sender, member in (peers, reversed(peers)):  # a line reaches the other member, as #in_
            sender.send("in the room")
            line = member.read_line()
            assert line.startswith(b"#in_") and line.endswith(b" in the room"), line
    else:
        peers[0].send("to bob")  # a line goes each way
        peers[1].expect("to bob")
        peers[1].send("to alice")
        peers[0].expect("to alice")


def alone_in_the_queue(server: ChatServer) -> None:
    """Show that nobody waits: a newcomer is told #wait, not matched."""
    waiting(server.port, "newcomer")


def left_nothing_behind(server: ChatServer, phase: Phase, peers: List[Peer]) -> None:
    """Show that the session of the first of ``peers`` is over for everyone (§8).

    A waiter has left the queue; a partner is told, and closed.
    """
    if phase is W:
        alone_in_the_queue(server)
    if phase is C:
        peers[1].expect("#user_quit", timeout=DROP_DEADLINE)
        peers[1].expect_closed()
    if phase is R:
        peers[1].expect("#exited_lab_alice", timeout=DROP_DEADLINE)


# -- Lines answered in the phase they came in ---------------------------------


#: The cells whose event is one line that its sender alone is answered, in
#: the same phase: the line, and the reply.
ANSWERED = {
    (N, Event.INVALID_NICKNAME): ("has space", "#invalid_nickname"),
    (N, Event.INVALID_COMMAND): ("/nickname alice", "#invalid_command"),  # no renames before a name
    (W, Event.MESSAGE): ("hello?", "#wait"),
    (W, Event.RENAME): ("/nickname alicia", "#nickname_changed_alicia"),
    (W, Event.INVALID_NICKNAME): ("/nickname has space", "#invalid_nickname"),
    (W, Event.INVALID_MESSAGE): ("#not yours", "#invalid_message"),
    (W, Event.INVALID_COMMAND): ("/whom", "#invalid_command"),
    (W, Event.WHO): ("/who", "#online_1 alice"),
    (W, Event.BROADCAST): ("/all anyone?", "#broadcast_0"),
    (W, Event.NEXT): ("/next", "#wait"),
    (C, Event.INVALID_NICKNAME): ("/nickname has space", "#invalid_nickname"),
    (C, Event.INVALID_MESSAGE): ("#not yours", "#invalid_message"),
    (C, Event.INVALID_COMMAND): ("/whom", "#invalid_command"),
    (C, Event.WHO): ("/who ?o*", "#online_1 bob"),
    (W, Event.INVALID_ROOM): ("/create no_underscores", "#invalid_room"),
    (W, Event.CREATE): ("/create Lab", "#room_created_Lab"),
    (W, Event.ROOMS): ("/rooms", "#rooms_0"),
    (W, Event.JOIN_REFUSED): ("/join nowhere", "#no_such_room_nowhere"),
    (W, Event.MEMBERS): ("/members", "#not_in_room"),
    (W, Event.LEAVE): ("/leave", "#not_in_room"),
    (C, Event.INVALID_ROOM): ("/join", "#invalid_room"),
    (C, Event.CREATE): ("/create lab-2", "#room_created_lab-2"),
    (C, Event.ROOMS): ("/rooms x*", "#rooms_0"),
    (C, Event.JOIN_REFUSED): ("/join Nowhere", "#no_such_room_Nowhere"),
    (C, Event.MEMBERS): ("/members", "#not_in_room"),
    (C, Event.LEAVE): ("/leave", "#not_in_room"),
    (R, Event.INVALID_NICKNAME): ("/nickname has space", "#invalid_nickname"),
    (R, Event.INVALID_MESSAGE): ("#not yours", "#invalid_message"),
    (R, Event.INVALID_COMMAND): ("/next", "#invalid_command"),  # §5.7: /leave goes back to pairing
    (R, Event.INVALID_ROOM): ("/join lab!", "#invalid_room"),
    (R, Event.NICKNAME_TAKEN): ("/nickname BOB", "#nickname_taken"),
    (R, Event.WHO): ("/who", "#online_2 alice bob"),
    (R, Event.CREATE): ("/create LAB", "#room_exists_lab"),  # spelled as created (§5.8)
    (R, Event.ROOMS): ("/rooms L*", "#rooms_1 lab"),
    (R, Event.JOIN_REFUSED): ("/join nowhere", "#no_such_room_nowhere"),
    (R, Event.MEMBERS): ("/members", "#members_2 alice bob"),
}


def answered(phase: Phase, line: str, reply: str) -> Scenario:
    """Make the scenario of a line answered with ``reply`` in ``phase``, which it stays in."""

    def run(start_server: StartServer) -> None:
        peers = REACH[phase](start_server())
        peers[0].send(line)
        peers[0].expect(reply)
        still_in(phase, peers)

    return run


class Rationed(ChatHandler):
    """A handler whose flood control runs on the test's clock: ``lines`` lines, then as many more a tick."""

    clock = FakeClock()
    lines = 1

    def setup(self) -> None:
        """Prepare as usual, with a bucket of ``lines`` tokens that the test refills."""
        super().setup()
        self.flood = TokenBucket(Rationed.lines, clock=Rationed.clock)


#: Lines a client sends to reach each phase, at most: its nickname, and in a room /create and /join.
LINES_TO_REACH = {N: 1, W: 1, C: 1, R: 3}


def over_the_rate(phase: Phase) -> Scenario:
    """Make the scenario of a line over the rate in ``phase``: refused, and the phase stays (§9.5)."""

    def run(start_server: StartServer) -> None:
        Rationed.lines = LINES_TO_REACH[phase]
        peers = REACH[phase](start_server(Rationed))  # each has sent its lines
        if phase is R:
            peers[1].send("/who")  # bob, who made no room, spends his third token
            peers[1].expect("#online_2 alice bob")
        peers[0].send("alice")
        peers[0].expect("#rate_limited")
        Rationed.clock.now += 1  # one more line each
        still_in(phase, peers)

    return run


# -- Sessions that end ---------------------------------------------------------


def ending(phase: Phase, end: Callable[[Peer], None]) -> Scenario:
    """Make the scenario of a client in ``phase`` that ends its session with ``end`` (§8)."""

    def run(start_server: StartServer) -> None:
        server = start_server()
        peers = REACH[phase](server)
        end(peers[0])
        peers[0].expect_closed()
        left_nothing_behind(server, phase, peers)

    return run


def quit(peer: Peer) -> None:
    """Send /quit."""
    peer.send("/quit")


def hang_up(peer: Peer) -> None:
    """Send end of file, and keep reading."""
    peer.sock.shutdown(socket.SHUT_WR)


def shutdown_in(phase: Phase) -> Scenario:
    """Make the scenario of a server that stops while its clients are in ``phase`` (§10)."""

    def run(start_server: StartServer) -> None:
        server = start_server()
        peers = REACH[phase](server)
        server.shutdown()
        server.server_close()
        for peer in peers:
            peer.expect("#server_shutdown")
            peer.expect_closed()

    return run


def dropped(phase: Phase, line: bytes) -> Scenario:
    """Make the scenario of a client in ``phase`` that sends ``line`` and never reads (§9.4).

    Its replies, or its partner's lines, back up until a write to it takes
    longer than the send timeout, and the server drops it.
    """

    def run(start_server: StartServer) -> None:
        server = start_server(SmallSendBuffer, send_timeout=0.3, max_rate=0)
        peers = REACH[phase](server)
        sock = peers[0].sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the replies back up at once
        sock.settimeout(DROP_DEADLINE)
        assert send_until_refused(sock, line * 1000, 10_000), "never dropped: the server still reads"
        left_nothing_behind(server, phase, peers)

    return run


for _cell, (_line, _reply) in ANSWERED.items():
    scenario(*_cell)(answered(_cell[0], _line, _reply))
for _phase in (N, W, C, R):
    scenario(_phase, Event.RATE_LIMITED)(over_the_rate(_phase))
    scenario(_phase, Event.QUIT)(ending(_phase, quit))
    scenario(_phase, Event.HANG_UP)(ending(_phase, hang_up))
    scenario(_phase, Event.SHUTDOWN)(shutdown_in(_phase))
    scenario(_phase, Event.DROPPED)(dropped(_phase, b"#not a nickname nor a message\n"))


# -- The cells that change more than one client, or come from the server -------------


@scenario(N, Event.NICKNAME)
def nickname_while_naming(start_server: StartServer) -> None:
    peers = naming(start_server())
    peers[0].send("alice")
    peers[0].expect("#wait")
    still_in(W, peers)


@scenario(N, Event.TIMEOUT)
def timeout_while_naming(start_server: StartServer) -> None:
    alice = Peer(start_server(nickname_timeout=0.3).port)
    alice.expect("#nickname_timeout")
    alice.expect_closed()


@scenario(N, Event.SERVER_FULL)
def server_full_on_arrival(start_server: StartServer) -> None:
    server = start_server(max_clients=1)
    naming(server)
    late = Peer(server.port)
    late.expect("#server_full")
    late.expect_closed()


@scenario(W, Event.PARTNER_FOUND)
def partner_found_while_waiting(start_server: StartServer) -> None:
    server = start_server()
    [alice] = queued(server)
    bob = meet(server.port, alice, "alice", "bob")
    still_in(C, [alice, bob])


@scenario(C, Event.MESSAGE)
def message_while_chatting(start_server: StartServer) -> None:
    alice, bob = pair(start_server().port)
    alice.send("hi bob")
    bob.expect("hi bob")
    still_in(C, [alice, bob])


@scenario(C, Event.RENAME)
def rename_while_chatting(start_server: StartServer) -> None:
    alice, bob = pair(start_server().port)
    alice.send("/nickname alicia")
    alice.expect("#nickname_changed_alicia")
    bob.expect("#partner_renamed_alicia")
    still_in(C, [alice, bob])


@scenario(C, Event.PARTNER_LEFT)
def partner_left_while_chatting(start_server: StartServer) -> None:
    alice, bob = pair(start_server().port)
    bob.close()
    alice.expect("#user_quit")
    alice.expect_closed()


# -- Protocol 2: names, lists, direct messages, broadcast, skipping (§3.1, §5.4-§5.7) --


@scenario(N, Event.NICKNAME_TAKEN)
def taken_while_naming(start_server: StartServer) -> None:
    server = start_server()
    holder = waiting(server.port, "Alice")
    [peer] = naming(server)
    peer.send("aLiCe")  # §3.1: names are compared in any case
    peer.expect("#nickname_taken")
    peer.send("bob")  # still naming: another name is accepted
    peer.expect("#matched_to_Alice")
    holder.expect("#matched_to_bob")


@scenario(W, Event.NICKNAME_TAKEN)
def taken_while_waiting(start_server: StartServer) -> None:
    server = start_server()
    pair(server.port)
    carol = waiting(server.port, "carol")
    carol.send("/nickname BOB")
    carol.expect("#nickname_taken")
    still_in(W, [carol])


@scenario(C, Event.NICKNAME_TAKEN)
def taken_while_chatting(start_server: StartServer) -> None:
    server = start_server()
    peers = pair(server.port)
    waiting(server.port, "carol")
    peers[0].send("/nickname Carol")
    peers[0].expect("#nickname_taken")
    still_in(C, peers)


@scenario(W, Event.DIRECT)
def direct_message_to_yourself_while_waiting(start_server: StartServer) -> None:
    [alice] = queued(start_server())
    alice.send("/msg ALICE note to self")  # §5.5: delivered to yourself
    alice.expect("#from_alice note to self", "#sent_to_alice")
    still_in(W, [alice])


@scenario(C, Event.DIRECT)
def direct_message_while_chatting(start_server: StartServer) -> None:
    server = start_server()
    alice, bob = pair(server.port)
    carol = waiting(server.port, "carol")
    alice.send("/msg CAROL #psst /not a command")
    carol.expect("#from_alice #psst /not a command")
    alice.expect("#sent_to_carol")  # spelled as its owner chose it (§5.5)
    alice.send("/msg dave hello")
    alice.expect("#no_such_user_dave")
    still_in(C, [alice, bob])


@scenario(C, Event.BROADCAST)
def broadcast_while_chatting(start_server: StartServer) -> None:
    server = start_server()
    alice, bob = pair(server.port)
    carol = waiting(server.port, "carol")
    alice.send("/all hello everyone")
    bob.expect("#all_from_alice hello everyone")
    carol.expect("#all_from_alice hello everyone")
    alice.expect("#broadcast_2")
    still_in(C, [alice, bob])


@scenario(C, Event.NEXT)
def next_while_chatting(start_server: StartServer) -> None:
    server = start_server()
    alice, bob = pair(server.port)
    alice.send("/next")
    bob.expect("#user_quit")
    bob.expect_closed()
    alice.expect("#wait")  # bob is gone: never matched again
    meet(server.port, alice, "alice", "carol")


# -- Protocol 2: rooms (§5.8-§5.12, §7.6) ----------------------------------------


@scenario(W, Event.JOIN)
def join_from_the_queue(start_server: StartServer) -> None:
    server = start_server()
    [bob] = in_room(server.port, "lab", "bob")
    alice = waiting(server.port, "alice")  # bob is in a room, not the queue
    alice.send("/join LAB")
    alice.expect("#joined_lab")
    bob.expect("#entered_lab_alice")
    alone_in_the_queue(server)  # alice has left the queue
    still_in(R, [alice, bob])


@scenario(C, Event.JOIN)
def join_from_a_pair(start_server: StartServer) -> None:
    server = start_server()
    alice, bob = pair(server.port)
    [carol] = in_room(server.port, "lab", "carol")
    alice.send("/join lab")
    bob.expect("#user_quit")  # §5.10: as if alice had sent /quit
    bob.expect_closed()
    alice.expect("#joined_lab")
    carol.expect("#entered_lab_alice")
    still_in(R, [alice, carol])


@scenario(R, Event.JOIN)
def join_from_another_room(start_server: StartServer) -> None:
    server = start_server()
    alice, bob = in_the_lab(server)
    [carol] = in_room(server.port, "den", "carol")
    alice.send("/join den")
    bob.expect("#exited_lab_alice")
    carol.expect("#entered_den_alice")
    alice.expect("#joined_den")
    alice.send("/join DEN")  # §5.10: the room it is in: #joined_ again, and nothing else
    alice.expect("#joined_den")
    still_in(R, [alice, carol])


#: The cells in a room whose event is one line of alice's, told to her and bob:
#: the line, then what she gets, and what bob gets.
TOLD_IN_THE_LAB = {
    (R, Event.MESSAGE): ("hello, lab", [], ["#in_lab_alice hello, lab"]),  # never back to alice
    (R, Event.RENAME): ("/nickname alicia", ["#nickname_changed_alicia"], ["#renamed_lab_alice alicia"]),
    (R, Event.DIRECT): ("/msg bob #not a room line", ["#sent_to_bob"], ["#from_alice #not a room line"]),
    (R, Event.BROADCAST): ("/all hello, server", ["#broadcast_1"], ["#all_from_alice hello, server"]),
}


def told_in_the_lab(line: str, hers: List[str], his: List[str]) -> Scenario:
    """Make the scenario of alice's ``line`` in the lab: she is told ``hers``, bob ``his``, and both stay."""

    def run(start_server: StartServer) -> None:
        alice, bob = in_the_lab(start_server())
        alice.send(line)
        bob.expect(*his)
        alice.expect(*hers)
        still_in(R, [alice, bob])  # alice's next line is bob's: nothing else came to her

    return run


for _cell, (_line, _hers, _his) in TOLD_IN_THE_LAB.items():
    scenario(*_cell)(told_in_the_lab(_line, _hers, _his))


@scenario(R, Event.LEAVE)
def leave_a_room(start_server: StartServer) -> None:
    alice, bob = in_the_lab(start_server())
    alice.send("/leave")
    bob.expect("#exited_lab_alice")
    alice.expect("#left_lab", "#wait")  # back to pairing, and nobody else waits
    still_in(W, [alice])


# -- Protocol 2: accounts (§5.13-§5.16, §7.7, §9.11) ------------------------------

PASSWORD = "password1"


def registered(server: ChatServer, nickname: str = "alice") -> Peer:
    """Connect a client that registers ``nickname`` and waits, logged in (§5.13)."""
    peer = Peer(server.port)
    peer.send("/register %s %s" % (nickname, PASSWORD))
    peer.expect("#registered_" + nickname, "#wait")
    return peer


def away(server: ChatServer, nickname: str = "dora") -> None:
    """Make an account ``nickname`` whose owner is not connected."""
    peer = registered(server, nickname)
    peer.send("/quit")
    peer.expect_closed()


def logged_in(phase: Phase, server: ChatServer) -> List[Peer]:
    """Bring alice, logged in to her account, to ``phase``, with bob as her partner or fellow member."""
    alice = registered(server)
    if phase is W:
        return [alice]
    if phase is C:
        return [alice, meet(server.port, alice, "alice", "bob")]
    alice.send("/create lab", "/join lab")
    alice.expect("#room_created_lab", "#joined_lab")
    bob = waiting(server.port, "bob")
    bob.send("/join lab")
    bob.expect("#joined_lab")
    alice.expect("#entered_lab_bob")
    return [alice, bob]


def by_an_account(phase: Phase, line: str, reply: str) -> Scenario:
    """Make the scenario of alice, logged in, sending ``line``: answered ``reply``, she stays in ``phase``."""

    def run(start_server: StartServer) -> None:
        peers = logged_in(phase, start_server())
        peers[0].send(line)
        peers[0].expect(reply)
        still_in(phase, peers)

    return run


def to_an_account_away(phase: Phase) -> Scenario:
    """Make the scenario of a /msg to an account that is away: kept, and #stored_for_ (§5.5)."""

    def run(start_server: StartServer) -> None:
        server = start_server()
        away(server, "Dora")
        peers = REACH[phase](server)
        peers[0].send("/msg dORA see you later")
        peers[0].expect("#stored_for_Dora")  # spelled as registered
        still_in(phase, peers)

    return run


def too_many_failures(phase: Phase) -> Scenario:
    """Make the scenario of the last failed /delete a connection may make: closed (§9.11)."""

    def run(start_server: StartServer) -> None:
        server = start_server()
        peers = logged_in(phase, server)
        for _ in range(MAX_FAILED_LOGINS):
            peers[0].send("/delete wrong-password")
            peers[0].expect("#login_failed")
        peers[0].expect_closed()
        left_nothing_behind(server, phase, peers)

    return run


def replaced(phase: Phase) -> Scenario:
    """Make the scenario of a newer login of alice's account: her older session ends (§5.14)."""

    def run(start_server: StartServer) -> None:
        server = start_server()
        peers = logged_in(phase, server)
        newer = Peer(server.port)
        newer.send("/login alice " + PASSWORD)
        peers[0].expect("#session_replaced")
        peers[0].expect_closed()
        if phase is not W:
            left_nothing_behind(server, phase, peers)
        newer.expect("#logged_in_alice", "#wait")  # the older session is not in the queue to be matched

    return run


for _phase in (W, C, R):
    scenario(_phase, Event.USERS)(answered(_phase, "/users", "#accounts_0"))
    scenario(_phase, Event.NOT_LOGGED_IN)(answered(_phase, "/delete " + PASSWORD, "#not_logged_in"))
    scenario(_phase, Event.DELETE)(by_an_account(_phase, "/delete " + PASSWORD, "#account_deleted"))
    scenario(_phase, Event.LOGIN_FAILED)(by_an_account(_phase, "/delete wrong-password", "#login_failed"))
    scenario(_phase, Event.NICKNAME_LOCKED)(by_an_account(_phase, "/nickname alicia", "#nickname_locked"))
    scenario(_phase, Event.STORE)(to_an_account_away(_phase))
    scenario(_phase, Event.TOO_MANY_FAILURES)(too_many_failures(_phase))
    scenario(_phase, Event.SESSION_REPLACED)(replaced(_phase))


@scenario(N, Event.REGISTER)
def register_while_naming(start_server: StartServer) -> None:
    peers = naming(start_server())
    peers[0].send("/register alice " + PASSWORD)
    peers[0].expect("#registered_alice", "#wait")
    still_in(W, peers)


@scenario(N, Event.INVALID_PASSWORD)
def invalid_password_while_naming(start_server: StartServer) -> None:
    peers = naming(start_server())
    peers[0].send("/register alice short")  # §3.3: 8 to 64 visible characters
    peers[0].expect("#invalid_password")
    still_in(N, peers)


@scenario(N, Event.LOGIN)
def login_while_naming(start_server: StartServer) -> None:
    server = start_server()
    away(server, "alice")
    carol = waiting(server.port, "carol")
    carol.send("/msg alice are you there?")
    carol.expect("#stored_for_alice")
    peers = naming(server)
    peers[0].send("/login ALICE " + PASSWORD)
    peers[0].expect("#logged_in_alice")
    stored = peers[0].read_line()
    assert stored.startswith(b"#stored_from_carol ") and stored.endswith(b"Z are you there?"), stored
    peers[0].expect("#matched_to_carol")
    carol.expect("#matched_to_alice")
    still_in(C, [peers[0], carol])


@scenario(N, Event.LOGIN_FAILED)
def failed_login_while_naming(start_server: StartServer) -> None:
    server = start_server()
    away(server, "alice")
    peers = naming(server)
    for line in ("/login alice wrong-password", "/login nobody " + PASSWORD, "/login alice short"):
        peers[0].send(line)
        peers[0].expect("#login_failed")  # §5.14: one notice for all three
    still_in(N, peers)


@scenario(N, Event.TOO_MANY_FAILURES)
def too_many_failed_logins_while_naming(start_server: StartServer) -> None:
    peers = naming(start_server())
    for _ in range(MAX_FAILED_LOGINS):
        peers[0].send("/login nobody " + PASSWORD)
        peers[0].expect("#login_failed")
    peers[0].expect_closed()


class HeldMailbox(ChatHandler):
    """A handler whose first login waits, reading its mailbox, until the test lets it go on."""

    reading = threading.Event()
    go_on = threading.Event()

    def read_mailbox(self, name: str) -> List[Tuple[int, bytes]]:
        """Hold the first login here, still in the nickname phase, until ``go_on`` is set."""
        if not HeldMailbox.reading.is_set():
            HeldMailbox.reading.set()
            HeldMailbox.go_on.wait(TIMEOUT)
        return super().read_mailbox(name)


@scenario(N, Event.SESSION_REPLACED)
def replaced_while_reading_the_mailbox(start_server: StartServer) -> None:
    HeldMailbox.reading.clear()
    HeldMailbox.go_on.clear()
    server = start_server(HeldMailbox)
    away(server, "alice")
    first = Peer(server.port)
    first.send("/login alice " + PASSWORD)
    assert HeldMailbox.reading.wait(TIMEOUT), "the first login never read its mailbox"
    newer = Peer(server.port)
    newer.send("/login alice " + PASSWORD)
    newer.expect("#logged_in_alice", "#wait")
    first.expect("#logged_in_alice", "#session_replaced")
    HeldMailbox.go_on.set()
    first.expect_closed()
    still_in(W, [newer])
