"""Protocol 2's accounts on a live server: names, logins, stored messages, and guessing.

The state table's cells for the account commands are driven in
tests/test_transitions.py; here are the rules a cell cannot show: a name
raced for, what a login is sent and in what order, the races between a
login and the lines sent to it, when a stored message leaves the store
(§7.7), a full mailbox, the two limits on guessing a password (§9.11),
and logs that never hold a password or a message.

Where a test needs two server threads to meet in one order, a handler
subclass stops at a :class:`Gate` until the test opens it, and the
address throttle runs on a clock that only the test moves: nothing here
sleeps, and nothing depends on how fast anything runs.
"""

import calendar
import collections
import logging
import os
import re
import socket
import threading
import time
from typing import Iterator, List, NamedTuple, Optional, Tuple, Type

import pytest

from mechat.accounts import AccountStore
from mechat.chatter import Chatter, Step
from mechat.connection import HAVE_TIOCOUTQ, POLLIN, Connection, poll_for
from mechat.protocol import LineCutter, Phase
from mechat.server import ChatHandler, ChatServer, connection_of
from mechat.throttle import DEFAULT_FAILED_LOGIN_BURST, MAX_FAILED_LOGINS, AddressThrottle
from tests.conftest import StartServer
from tests.peers import NICKNAME_ROOM, TIMEOUT, Peer, pair, waiting
from tests.test_hardening import FakeClock

PASSWORD = "password1"

#: Where every test client connects from: one address to the throttle (§9.11).
ADDRESS = "127.0.0.1"

#: Seconds a server thread may be held at a Gate; the gates fixture opens
#: every gate when its test ends, so only a test that hangs waits this long.
GATE_WAIT = 60.0

#: ``#stored_from_SENDER TIME TEXT`` (§5.14), TIME as RFC 3339 in UTC to the second.
STORED_FROM = re.compile(
    rb"#stored_from_([^ ]+) ([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z) (.*)", re.S
)


# -- Helpers ----------------------------------------------------------------------


def registered(server: ChatServer, nickname: str, password: str = PASSWORD) -> Peer:
    """Connect a client that registers ``nickname`` and waits, logged in (§5.13)."""
    peer = Peer(server.port)
    peer.send("/register %s %s" % (nickname, password))
    peer.expect("#registered_" + nickname, "#wait")
    return peer


def away(server: ChatServer, nickname: str, password: str = PASSWORD) -> None:
    """Make an account ``nickname`` whose owner is not connected."""
    peer = registered(server, nickname, password)
    peer.send("/quit")
    peer.expect_closed()


def log_in(server: ChatServer, nickname: str, password: str = PASSWORD) -> Peer:
    """Connect a client that sends ``/login``; its replies are the test's to read."""
    peer = Peer(server.port)
    peer.send("/login %s %s" % (nickname, password))
    return peer


def store(sender: Peer, account: str, *texts: str, spelled: Optional[str] = None) -> None:
    """Send ``account``, which is away, each text, and see each kept (§5.5)."""
    for text in texts:
        sender.send("/msg %s %s" % (account, text))
        sender.expect("#stored_for_" + (spelled or account))


def expect_stored(peer: Peer, sender: str, text: str) -> float:
    """Read one ``#stored_from_`` line from ``sender`` with exactly ``text``; return its TIME (§5.14)."""
    line = peer.read_line()
    found = STORED_FROM.fullmatch(line)
    assert found, "expected #stored_from_%s, got %r" % (sender, line)
    assert (found[1], found[3]) == (sender.encode("ascii"), text.encode("utf-8")), line
    return float(calendar.timegm(time.strptime(found[2].decode("ascii"), "%Y-%m-%dT%H:%M:%SZ")))


def with_two_stored(server: ChatServer) -> Peer:
    """Log alice in, with two messages from carol stored while she was away, read up to her #wait."""
    away(server, "alice")
    carol, _ = pair(server.port, "carol", "dave")
    store(carol, "alice", "first", "second")
    alice = log_in(server, "alice")
    alice.expect("#logged_in_alice")
    expect_stored(alice, "carol", "first")
    expect_stored(alice, "carol", "second")
    alice.expect("#wait")
    return alice


def session_of(server: ChatServer, nickname: str) -> Connection:
    """Return the server's connection for the client named ``nickname``."""
    matchmaker = server.matchmaker
    with matchmaker._changed:
        found = [chatter for chatter in matchmaker._connected if chatter.nickname == nickname]
    assert len(found) == 1, found
    return connection_of(found[0])


def messages_kept(accounts: AccountStore) -> int:
    """Count every message in the store, whoever it is for: a deleted account has no name to ask by."""
    with accounts._lock:
        return int(accounts._db.execute("SELECT count(*) FROM messages").fetchone()[0])


def unanswered(peer: Peer) -> bool:
    """Tell whether nothing at all has come for ``peer`` yet."""
    return not peer.unread and not poll_for(peer.sock, POLLIN, 0)


class Gate:
    """A point where a server thread stops until the test opens it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()

    def stop(self) -> None:
        """Stop the calling thread here until the gate is opened."""
        self.reached.set()
        self.opened.wait(GATE_WAIT)

    def wait_until_reached(self, what: str) -> None:
        """Wait until a server thread stops here; fail if none does in time."""
        assert self.reached.wait(TIMEOUT), "%s never came" % what

    def open(self) -> None:
        """Let every thread stopped here go on, and any that comes later pass."""
        self.opened.set()


class Gates(NamedTuple):
    """The gates of :func:`gated`: each stops one step of the race between a login and a stored message."""

    #: dave's /msg to an account that is away, before the store is called.
    store: Gate
    #: dave's /msg, committed, before the Matchmaker hears of it (Matchmaker.stored).
    told: Gate
    #: A login that has read its mailbox, before it owes what it read (§5.14).
    read: Gate


@pytest.fixture
def gates(start_server: StartServer) -> Iterator[Gates]:
    """Closed gates, all opened when the test ends so that no server thread stays stopped.

    It asks for ``start_server`` so that it ends first: the gates open
    before the servers stop, which waits for every handler.
    """
    made = Gates(Gate(), Gate(), Gate())
    yield made
    for gate in made:
        gate.open()


def gated(gates: Gates) -> Type[ChatHandler]:
    """Return a handler that stops at ``gates.read`` after reading a mailbox, and dave at ``gates.store``."""

    class Gated(ChatHandler):
        def read_mailbox(self, name: str) -> List[Tuple[int, bytes]]:
            mail = super().read_mailbox(name)
            gates.read.stop()
            return mail

        def store_for(self, name: str, written: str, text: bytes) -> Step:
            if self.conn.nickname == "dave":
                gates.store.stop()
            return super().store_for(name, written, text)

    return Gated


def hold_what_dave_stored(server: ChatServer, gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop dave's thread at ``gate`` after his message is committed and before the Matchmaker is told."""
    real = server.matchmaker.stored

    def stored(sender: Chatter, name: str, message_id: int, line: bytes) -> Step:
        if sender.nickname == "dave":
            gate.stop()
        return real(sender, name, message_id, line)

    monkeypatch.setattr(server.matchmaker, "stored", stored)


class HeldTries(AddressThrottle):
    """The address throttle on a clock that only the test moves; it says when a try finds no token."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        super().__init__(clock=self.clock)
        self.holding = threading.Event()

    def take(self, address: str) -> float:
        wait = super().take(address)
        if wait:
            self.holding.set()
        return wait


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    """Put the process's local time 11 hours east of UTC, so that a local TIME could not pass for UTC."""
    if not hasattr(time, "tzset"):  # Windows: the zone stays, and UTC is checked as well as it can be
        yield
        return
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC-11"  # POSIX spelling: the offset is west of UTC, so this is UTC+11
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


# -- Registration: unique names and passwords (§3.1, §3.3, §5.13) ------------------------------


def test_register_is_refused_a_name_that_a_connected_guest_holds_in_any_case(
    start_server: StartServer,
) -> None:
    """§3.1, §5.13: /register of a guest's nickname in another case is #nickname_taken; no account is made."""
    server = start_server()
    waiting(server.port, "alice")
    other = Peer(server.port)
    other.send("/register ALICE " + PASSWORD)
    other.expect("#nickname_taken")
    other.send("/register alicia " + PASSWORD)  # still choosing: it may try again
    other.expect("#registered_alicia", "#matched_to_alice")
    assert server.store.names() == ["alicia"]


def test_register_is_refused_an_accounts_name_in_any_case(start_server: StartServer) -> None:
    """§3.1, §5.13: an account's name is taken in any case, whether or not its owner is connected."""
    server = start_server()
    away(server, "Alice")
    bob = Peer(server.port)
    bob.send("/register aLICE password2")
    bob.expect("#nickname_taken")
    owner = log_in(server, "alice")
    owner.expect("#logged_in_Alice", "#wait")
    bob.send("/register ALICE password2")
    bob.expect("#nickname_taken")
    assert server.store.names() == ["Alice"]


@pytest.mark.parametrize("how", ["all register", "half register, half choose it as a nickname"])
def test_clients_racing_to_register_one_name_never_both_get_it(start_server: StartServer, how: str) -> None:
    """§3.1, §5.13: of 12 clients asking at once for one name, in any case, exactly one gets it.

    The winner is answered ``#registered_`` (or ``#wait`` for a plain
    nickname), every other ``#nickname_taken``; the store then holds one
    account at most, spelled as the winner spelled it.
    """
    server = start_server()
    peers = [Peer(server.port) for _ in range(12)]
    spellings = ["Same" if index % 2 else "sAME" for index in range(len(peers))]
    asks = [
        ("/register %s %s" % (name, PASSWORD)) if how == "all register" or index % 4 < 2 else name
        for index, name in enumerate(spellings)
    ]
    start = threading.Barrier(len(peers))

    def ask(peer: Peer, line: str) -> None:
        start.wait(TIMEOUT)
        peer.send(line)

    threads = [threading.Thread(target=ask, args=(peer, line)) for peer, line in zip(peers, asks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    answers = [peer.read_line() for peer in peers]
    winners = [index for index, answer in enumerate(answers) if answer != b"#nickname_taken"]
    assert len(winners) == 1, answers
    winner = winners[0]
    if asks[winner].startswith("/register"):
        assert answers[winner] == b"#registered_" + spellings[winner].encode()
        peers[winner].expect("#wait")
        assert server.store.names() == [spellings[winner]]
    else:
        assert answers[winner] == b"#wait"
        assert server.store.names() == []


def test_a_guest_cannot_take_an_accounts_name_in_any_case(start_server: StartServer) -> None:
    """§3.1: a guest asking for an account's name, as its first line or by /nickname, gets #nickname_taken."""
    server = start_server()
    away(server, "Alice")
    guest = Peer(server.port)
    guest.send("aLiCe")
    guest.expect("#nickname_taken")
    guest.send("gus")
    guest.expect("#wait")
    guest.send("/nickname ALICE", "/who")
    guest.expect("#nickname_taken", "#online_1 gus")  # nothing changed


@pytest.mark.parametrize(
    "password, reply",
    [
        ("a" * 7, "#invalid_password"),
        ("a" * 8, "#registered_alice"),
        ("a" * 64, "#registered_alice"),
        ("a" * 65, "#invalid_password"),
        ("pass word1", "#invalid_password"),  # a space is not VCHAR
        ("pässword1", "#invalid_password"),  # nor is anything outside ASCII
        ("~!#$%^&*()_+{}|:<>?`-=[]\\;',./\"", "#registered_alice"),  # every other VCHAR is
    ],
)
def test_a_password_is_8_to_64_visible_ascii_characters(
    start_server: StartServer, password: str, reply: str
) -> None:
    """§3.3, §5.13: 8 and 64 characters register; 7, 65, a space or a non-ASCII one: #invalid_password."""
    server = start_server()
    peer = Peer(server.port)
    peer.send("/register alice " + password)
    peer.expect(reply)
    if reply == "#invalid_password":
        assert server.store.names() == []
        peer.send("alice")  # still choosing a nickname, and the name is free
        peer.expect("#wait")
        return
    peer.expect("#wait")
    peer.send("/quit")
    peer.expect_closed()
    again = log_in(server, "alice", password)  # the password is kept exactly
    again.expect("#logged_in_alice", "#wait")


def test_register_answers_a_bad_nickname_before_a_bad_password(start_server: StartServer) -> None:
    """§5.13: the nickname is checked first, then the password; the verb alone lacks a nickname."""
    peer = Peer(start_server().port)
    peer.send("/register %s short" % ("n" * 31), "/register /alice short", "/register")
    peer.expect("#invalid_nickname", "#invalid_nickname", "#invalid_nickname")
    peer.send("/register %s short" % ("n" * 30), "/register alice", "/register alice ")
    peer.expect("#invalid_password", "#invalid_password", "#invalid_password")


def test_register_and_login_after_the_nickname_are_invalid_commands(start_server: StartServer) -> None:
    """§5.13, §5.14: an account is taken up instead of a nickname, never after one, by a guest or not."""
    server = start_server()
    away(server, "dora")
    guest = waiting(server.port, "gus")
    guest.send("/register bob " + PASSWORD, "/login dora " + PASSWORD, "/who")
    guest.expect("#invalid_command", "#invalid_command", "#online_1 gus")
    owner = Peer(server.port)
    owner.send("/register alice " + PASSWORD)
    owner.expect("#registered_alice", "#matched_to_gus")
    guest.expect("#matched_to_alice")
    owner.send("/register bob " + PASSWORD, "/login dora " + PASSWORD, "/users")
    owner.expect("#invalid_command", "#invalid_command", "#accounts_2 alice dora")


# -- Login: the stored messages, in order, and the lines that race them (§5.14, §7.7) ---------


def test_a_login_gets_its_stored_messages_oldest_first_verbatim_then_queues_up(
    start_server: StartServer, far_from_utc: None
) -> None:
    """§5.14: #logged_in_ spelled as registered, then each stored message, oldest first, then #wait.

    Each line is ``#stored_from_SENDER TIME TEXT``: SENDER as the sender
    was named when it sent, TEXT exactly as sent (a leading ``#`` or ``/``,
    UTF-8, tabs and runs of spaces kept), TIME the moment it was stored, in
    UTC although the server's local zone is not.
    """
    server = start_server()
    away(server, "Alice")
    carol, dave = pair(server.port, "carol", "dave")
    before = time.time()
    sent = [
        (carol, "carol", "#wait is not a notice here"),
        (dave, "dave", "/quit is not a command here"),
        (carol, "carol", "naïve café, Grüße, 日本語 ✓"),
        (dave, "dave", "  tab\there,  runs of spaces  "),
    ]
    for sender, _, text in sent:
        store(sender, "aLICE", text, spelled="Alice")
    carol.send("/nickname caroline")
    carol.expect("#nickname_changed_caroline")
    dave.expect("#partner_renamed_caroline")
    store(carol, "alice", "a new name", spelled="Alice")
    sent.append((carol, "caroline", "a new name"))
    after = time.time()
    alice = log_in(server, "ALICE")
    alice.expect("#logged_in_Alice")
    times = [expect_stored(alice, sender, text) for _, sender, text in sent]
    alice.expect("#wait")
    assert times == sorted(times), times
    assert int(before) <= times[0] and times[-1] <= after, (before, times, after)


def test_lines_sent_while_a_login_reads_its_mailbox_come_after_the_stored_ones(
    start_server: StartServer, gates: Gates
) -> None:
    """§5.14, §7.7: a direct message and a broadcast sent to a login still reading its mailbox follow it.

    The login is held after reading; the others are told their lines went
    (it is named already), and its client gets them after its stored
    messages and its ``#wait``, never before.
    """
    server = start_server(gated(gates))
    away(server, "alice")
    carol, dave = pair(server.port, "carol", "dave")
    store(carol, "alice", "kept for later")
    alice = log_in(server, "alice")
    gates.read.wait_until_reached("alice's login reading her mailbox")
    carol.send("/msg alice sent live")
    carol.expect("#sent_to_alice")
    dave.send("/all to everyone")
    dave.expect("#broadcast_2")
    carol.expect("#all_from_dave to everyone")
    gates.read.open()
    alice.expect("#logged_in_alice")
    expect_stored(alice, "carol", "kept for later")
    alice.expect("#wait", "#from_carol sent live", "#all_from_dave to everyone")


#: When dave's message, sent while alice is away, is committed and when the Matchmaker is told of it,
#: against alice's login, held after it has read her mailbox.
RACES = [
    ("committed before the read", "told while the login holds what it read"),
    ("committed before the read", "told after the login"),
    ("committed while the login holds what it read", "told while the login holds what it read"),
    ("committed while the login holds what it read", "told after the login"),
    ("committed after the login", "told after the login"),
]


@pytest.mark.parametrize("committed, told", RACES)
def test_a_message_stored_as_its_account_logs_in_is_delivered_in_that_session_once(
    start_server: StartServer, gates: Gates, monkeypatch: pytest.MonkeyPatch, committed: str, told: str
) -> None:
    """§7.7 race rule: dave's message, sent while alice was away, reaches her login exactly once.

    dave's thread decides that alice is away before her login claims the
    name, and is then stopped before the store, or after the commit, while
    her login is stopped after reading her mailbox; the test lets each go
    on in one of five orders.  Whatever the order, alice gets his message
    in this session, once, after the message she had before; when it came
    in time, with her mailbox, before her ``#wait``.
    """
    server = start_server(gated(gates))
    hold_what_dave_stored(server, gates.told, monkeypatch)
    away(server, "alice")
    carol, dave = pair(server.port, "carol", "dave")
    store(carol, "alice", "from before")
    if committed == "committed before the read":
        gates.store.open()
    dave.send("/msg alice on its way")
    if committed == "committed before the read":
        gates.told.wait_until_reached("dave's commit")
    else:
        gates.store.wait_until_reached("dave's store")
    alice = log_in(server, "alice")
    gates.read.wait_until_reached("alice's login reading her mailbox")
    if committed == "committed while the login holds what it read":
        gates.store.open()
        gates.told.wait_until_reached("dave's commit")
    if told == "told while the login holds what it read":
        gates.told.open()
        dave.expect("#stored_for_alice")
    gates.read.open()
    alice.expect("#logged_in_alice")
    expect_stored(alice, "carol", "from before")
    with_the_login = committed == "committed before the read" or told.startswith("told while")
    if with_the_login:
        expect_stored(alice, "dave", "on its way")
    alice.expect("#wait")
    if told == "told after the login":
        gates.store.open()
        gates.told.open()
        dave.expect("#stored_for_alice")
    if not with_the_login:
        expect_stored(alice, "dave", "on its way")
    alice.send("/users")
    alice.expect("#accounts_1 alice")  # the next line: nothing came twice


# -- One session per account (§5.14) --------------------------------------------------------


def test_a_newer_login_ends_the_older_session_and_its_partner(start_server: StartServer) -> None:
    """§5.14: the older session gets #session_replaced and is closed; its partner #user_quit, as for /quit."""
    server = start_server()
    older = registered(server, "alice")
    bob = Peer(server.port)
    bob.send("bob")
    bob.expect("#matched_to_alice")
    older.expect("#matched_to_bob")
    newer = log_in(server, "ALICE")
    older.expect("#session_replaced")
    older.expect_closed()
    bob.expect("#user_quit")
    bob.expect_closed()
    newer.expect("#logged_in_alice", "#wait")


def test_a_newer_login_takes_the_older_session_out_of_its_room(start_server: StartServer) -> None:
    """§5.14: the older session's room is told #exited_ROOM_NICK, and the other members stay in it."""
    server = start_server()
    older = registered(server, "alice")
    older.send("/create lab", "/join lab")
    older.expect("#room_created_lab", "#joined_lab")
    bob = waiting(server.port, "bob")
    bob.send("/join lab")
    bob.expect("#joined_lab")
    older.expect("#entered_lab_bob")
    newer = log_in(server, "alice")
    older.expect("#session_replaced")
    older.expect_closed()
    bob.expect("#exited_lab_alice")
    newer.expect("#logged_in_alice", "#wait")
    bob.send("/members")
    bob.expect("#members_1 bob")


def test_a_newer_login_is_never_matched_with_the_older_session(start_server: StartServer) -> None:
    """§5.14, §7.1: the older session, alone in the queue, leaves it as it is replaced; the newer waits."""
    server = start_server()
    older = registered(server, "alice")
    newer = log_in(server, "alice")
    older.expect("#session_replaced")
    older.expect_closed()
    newer.expect("#logged_in_alice", "#wait")
    carol = Peer(server.port)
    carol.send("carol")
    carol.expect("#matched_to_alice")
    newer.expect("#matched_to_carol")


# -- When a stored message leaves the store (§7.7) -------------------------------------------


@pytest.mark.skipif(not HAVE_TIOCOUTQ, reason="only Linux says what TCP has acknowledged (SIOCOUTQ)")
def test_stored_messages_are_forgotten_once_the_clients_tcp_acknowledged_them(
    start_server: StartServer,
) -> None:
    """§7.7 sign 1: once the client's next line arrives after it took them, they leave the store.

    The client read every line before sending, so its TCP has acknowledged
    them; they are gone before its next line is answered, and a later
    login, after a session that ends with a reset, gets none of them again.
    """
    server = start_server()
    alice = with_two_stored(server)
    assert len(server.store.stored_messages("alice")) == 2  # sent, and not yet known to have arrived
    alice.send("/users")
    alice.expect("#accounts_1 alice")
    assert server.store.stored_messages("alice") == []
    alice.reset()  # no /quit: the kernel's word was enough
    again = log_in(server, "alice")
    again.expect("#logged_in_alice", "#wait")


class TinyWindowPeer(Peer):
    """A client whose receive window is as small as its kernel allows from its first packet on.

    The buffer must be small before connecting: the window offered in the
    handshake, and its scale, are fixed by then.
    """

    def __init__(self, port: int) -> None:  # Peer's own, but for the buffer set before connect()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel raises it to its least
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((ADDRESS, port))
        self.incoming = LineCutter()
        self.unread = collections.deque()
        self.eof = False
        Peer.opened.append(self)


def watched_login(
    written: threading.Event, asked: threading.Event, sessions: List[Connection]
) -> Type[ChatHandler]:
    """Return a handler that says when its stored lines went out, and when it next asked if they arrived."""

    class Watched(ChatHandler):
        def write_outboxes(self) -> None:
            super().write_outboxes()
            if self.conn.taken >= self.conn.stored_mark > 0 and not written.is_set():
                sessions.append(self.conn)
                written.set()

        def forget_what_was_delivered(self) -> None:
            was_written = written.is_set()
            super().forget_what_was_delivered()
            if was_written:
                asked.set()

    return Watched


def test_stored_messages_a_client_never_acknowledged_are_delivered_again(start_server: StartServer) -> None:
    """§7.7: a session that ends by a reset before its TCP acknowledged them leaves them for the next login.

    The client's receive window is a few kilobytes and it never reads, so
    its TCP cannot have acknowledged the 36 kB of stored lines: not when
    its next line arrives, nor when it resets.  The next login gets every
    one of them again, in order: at least once, never zero times.
    """
    written, asked = threading.Event(), threading.Event()
    sessions: List[Connection] = []
    server = start_server(watched_login(written, asked, sessions), send_timeout=60, max_rate=0)
    away(server, "alice")
    carol, _ = pair(server.port, "carol", "dave")
    texts = ["first", *["x" * 450] * 78, "last"]  # 36 kB; repeated lines cost the wire check nothing
    store(carol, "alice", *texts)
    non_reader = TinyWindowPeer(server.port)
    non_reader.send("/login alice " + PASSWORD)
    assert written.wait(TIMEOUT), "the stored lines were never written"
    non_reader.send("/users")
    assert asked.wait(TIMEOUT), "the next line never made the server ask"
    assert len(server.store.stored_messages("alice")) == len(texts)
    non_reader.reset()
    assert sessions[0].finished.wait(TIMEOUT), "the server never closed the session"
    assert len(server.store.stored_messages("alice")) == len(texts)
    again = log_in(server, "alice")
    again.expect("#logged_in_alice")
    for text in texts:
        expect_stored(again, "carol", text)
    again.expect("#wait")


@pytest.mark.parametrize("ending", ["/quit", "a reset"])
def test_where_tcp_cannot_say_only_a_quit_after_delivery_forgets(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """§7.7 sign 2, the portable one: a /quit read after the lines were written; a reset keeps them.

    The kernel's answer is taken away, as on a system that has none: the
    client reads its stored messages and sends another line either way.
    """
    monkeypatch.setattr(Connection, "has_received", lambda self, mark: False)
    server = start_server()
    alice = with_two_stored(server)
    alice.send("/users")
    alice.expect("#accounts_1 alice")
    session = session_of(server, "alice")
    if ending == "/quit":
        alice.send("/quit")
        alice.expect_closed()
    else:
        alice.reset()
    assert session.finished.wait(TIMEOUT)
    again = log_in(server, "alice")
    again.expect("#logged_in_alice")
    if ending == "a reset":
        expect_stored(again, "carol", "first")
        expect_stored(again, "carol", "second")
    again.expect("#wait")


def test_a_quit_read_before_the_stored_lines_were_written_keeps_them(start_server: StartServer) -> None:
    """§7.7 sign 2: a /quit sent with the /login is read before the lines go out: no sign that they came."""
    server = start_server()
    away(server, "alice")
    carol, _ = pair(server.port, "carol", "dave")
    store(carol, "alice", "kept")
    alice = Peer(server.port)
    alice.send("/login alice " + PASSWORD, "/quit")  # one write: the server reads both at once
    alice.expect("#logged_in_alice")
    expect_stored(alice, "carol", "kept")
    alice.expect("#wait")
    alice.expect_closed()
    assert [message.text for message in server.store.stored_messages("alice")] == [b"kept"]
    again = log_in(server, "alice")
    again.expect("#logged_in_alice")
    expect_stored(again, "carol", "kept")
    again.expect("#wait")


# -- The mailbox and /delete (§9.10, §5.16) -----------------------------------------------------


def test_a_full_mailbox_refuses_the_next_message_and_keeps_nothing_of_it(start_server: StartServer) -> None:
    """§5.5, §9.10: with --mailbox-size 3 the fourth /msg gets #mailbox_full_NICK; no login ever sees it.

    Once the three are delivered and the owner quits (§7.7), the mailbox
    has room again.
    """
    server = start_server(mailbox_size=3)
    away(server, "Dora")
    carol, _ = pair(server.port, "carol", "dave")
    carol.send("/msg dora one", "/msg DORA two", "/msg dora three", "/msg dOrA four")
    carol.expect("#stored_for_Dora", "#stored_for_Dora", "#stored_for_Dora", "#mailbox_full_Dora")
    dora = log_in(server, "dora")
    dora.expect("#logged_in_Dora")
    for text in ("one", "two", "three"):
        expect_stored(dora, "carol", text)
    dora.expect("#wait")
    dora.send("/quit")
    dora.expect_closed()
    store(carol, "dora", "five", spelled="Dora")


def test_delete_removes_the_account_and_its_mailbox_and_frees_the_name(start_server: StartServer) -> None:
    """§5.16: the account and its stored messages are gone; the name is free once the guest lets it go.

    A new account of the name is a new account: none of the old one's
    messages, nor its password.
    """
    server = start_server()
    away(server, "dora")
    carol, _ = pair(server.port, "carol", "dave")
    store(carol, "dora", "one", "two")
    dora = log_in(server, "dora")
    dora.expect("#logged_in_dora")
    expect_stored(dora, "carol", "one")
    expect_stored(dora, "carol", "two")
    dora.expect("#wait")
    dora.send("/delete " + PASSWORD)  # the first line since: nothing has been forgotten yet
    dora.expect("#account_deleted")
    assert messages_kept(server.store) == 0
    newcomer = Peer(server.port)
    newcomer.send("/register DORA password2")
    newcomer.expect("#nickname_taken")  # the guest still holds it (§3.1)
    dora.send("/nickname dorothy")
    dora.expect("#nickname_changed_dorothy")
    newcomer.send("/register DORA password2")
    newcomer.expect("#registered_DORA", "#matched_to_dorothy")
    dora.expect("#matched_to_DORA")
    newcomer.send("/quit")
    newcomer.expect_closed()
    dora.expect("#user_quit")
    dora.expect_closed()
    old_password = log_in(server, "dora")
    old_password.expect("#login_failed")
    again = log_in(server, "dora", "password2")
    again.expect("#logged_in_DORA", "#wait")


@pytest.mark.parametrize(
    "pattern, listed",
    [
        ("", "#accounts_5 Alice Bea bob carol zed"),
        (" *", "#accounts_5 Alice Bea bob carol zed"),
        (" b*", "#accounts_2 Bea bob"),
        (" ?O?", "#accounts_1 bob"),
        (" A*E", "#accounts_1 Alice"),
        (" gus", "#accounts_0"),  # a guest is no account
    ],
)
def test_users_lists_every_account_connected_or_not_sorted_in_any_case(
    start_server: StartServer, pattern: str, listed: str
) -> None:
    """§5.15, §6.1: accounts as registered, sorted in any case, counted; a pattern matches whole names."""
    server = start_server()
    for name in ("zed", "bob", "carol", "Bea"):
        away(server, name)
    alice = registered(server, "Alice")
    gus = Peer(server.port)
    gus.send("gus")
    gus.expect("#matched_to_Alice")
    alice.expect("#matched_to_gus")
    gus.send("/users" + pattern)
    gus.expect(listed)


def test_delete_by_a_guest_is_not_logged_in_and_is_no_failed_try(start_server: StartServer) -> None:
    """§5.16, §9.11: a guest's /delete, whatever follows the verb, is #not_logged_in, and never closes it."""
    guest = waiting(start_server().port, "gus")
    for line in ["/delete", "/delete short", "/delete " + PASSWORD] * MAX_FAILED_LOGINS:
        guest.send(line)
        guest.expect("#not_logged_in")
    guest.send("still here")
    guest.expect("#wait")


def test_a_deleted_account_goes_on_as_a_guest_that_may_rename(start_server: StartServer) -> None:
    """§5.16: a wrong password is #login_failed only; after #account_deleted the client is a guest."""
    server = start_server()
    alice = registered(server, "alice")
    alice.send("/delete wrong-password", "/nickname alicia", "/users")
    alice.expect("#login_failed", "#nickname_locked", "#accounts_1 alice")
    alice.send("/delete " + PASSWORD, "/users", "/who")
    alice.expect("#account_deleted", "#accounts_0", "#online_1 alice")
    alice.send("/delete " + PASSWORD, "/nickname alicia")
    alice.expect("#not_logged_in", "#nickname_changed_alicia")
    assert server.store.names() == []


def test_a_login_that_claims_an_account_deleted_meanwhile_fails(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§5.14, §5.16: a login whose password was right, but which claims the name after the delete, fails.

    The login is stopped after its password check, before it takes the
    name up; meanwhile the owner deletes the account and is told so.  By
    then there is no account called alice, so the login gets
    ``#login_failed``, and the guest who holds the name, no account's
    session, is not replaced.
    """
    server = start_server()
    owner = registered(server, "alice")
    gate = Gate()
    real = server.matchmaker.claim

    def claim(chatter: Chatter, name: str) -> Optional[Step]:
        gate.stop()
        return real(chatter, name)

    monkeypatch.setattr(server.matchmaker, "claim", claim)
    try:
        intruder = log_in(server, "alice")
        gate.wait_until_reached("the login's claim")
        owner.send("/delete " + PASSWORD)
        owner.expect("#account_deleted")
    finally:
        gate.open()
    intruder.expect("#login_failed")
    owner.send("/who")
    owner.expect("#online_1 alice")
    assert server.store.names() == []


def test_a_login_during_the_registration_of_its_name_never_makes_two_holders(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§3.1, §5.13, §5.14: a login while its account is being made fails; one client holds the name.

    The registration is stopped after the store made the account and
    before ``#registered_``; a login with the same password comes then.
    Until the registration is done there is no account to log in to, and
    whatever happens, two sessions never both hold alice, nor are matched
    with each other.
    """
    server = start_server()
    gate = Gate()
    real = server.matchmaker.register

    def register(chatter: Chatter, name: str) -> Step:
        gate.stop()
        return real(chatter, name)

    monkeypatch.setattr(server.matchmaker, "register", register)
    try:
        registrant = Peer(server.port)
        registrant.send("/register alice " + PASSWORD)
        gate.wait_until_reached("the registration's last step")
        second = log_in(server, "alice")
        second.expect("#login_failed")
    finally:
        gate.open()
    registrant.expect("#registered_alice", "#wait")
    registrant.send("/who")
    registrant.expect("#online_1 alice")


def held_delete(gate: Gate) -> Type[ChatHandler]:
    """Return a handler whose /delete stops at ``gate`` once its password is found right."""

    class HeldDelete(ChatHandler):
        def password_is(self, name: str, password: str) -> Optional[bool]:
            right = super().password_is(name, password)
            if self.phase is not Phase.NICKNAME:
                gate.stop()
            return right

    return HeldDelete


def test_a_delete_from_a_session_replaced_meanwhile_deletes_nothing(start_server: StartServer) -> None:
    """§5.14, §5.16, §7.4: a /delete whose session a newer login ends before it deletes leaves the account.

    The newer session was told ``#logged_in_alice``; the account it is
    logged in to must still be there, and still log in.
    """
    gate = Gate()
    server = start_server(held_delete(gate))
    try:
        older = registered(server, "alice")
        older.send("/delete " + PASSWORD)
        gate.wait_until_reached("the /delete's password check")
        newer = log_in(server, "alice")
        newer.expect("#logged_in_alice", "#wait")
        older.expect("#session_replaced")
    finally:
        gate.open()
    older.expect_closed()  # its handler has gone on from the gate, and ended
    newer.send("/users")
    newer.expect("#accounts_1 alice")
    assert server.store.names() == ["alice"]


# -- Guessing passwords (§9.11) -------------------------------------------------------------------


def test_the_fifth_failed_try_on_a_connection_closes_it(start_server: StartServer) -> None:
    """§9.11: wrong passwords, unknown names, malformed lines count; the fifth is answered, then closes."""
    server = start_server()
    server.failed_logins = AddressThrottle(rate=0)  # this test is about the connection's count only
    away(server, "alice")
    guesser = Peer(server.port)
    tries = ["/login alice wrong-one", "/login nobody " + PASSWORD, "/login alice short", "/login alice"]
    for line in tries:
        guesser.send(line)
        guesser.expect("#login_failed")
    assert len(tries) == MAX_FAILED_LOGINS - 1
    guesser.send("/login alice wrong-two")
    guesser.expect("#login_failed")
    guesser.expect_closed()


def test_a_try_that_succeeds_does_not_reset_the_connections_count(start_server: StartServer) -> None:
    """§9.11: failures are counted over the connection's life; its fifth, a /delete, ends it, and the pair."""
    server = start_server()
    server.failed_logins = AddressThrottle(rate=0)
    away(server, "alice")
    bob = waiting(server.port, "bob")
    alice = Peer(server.port)
    alice.send("/login alice wrong-one", "/login alice wrong-two")
    alice.expect("#login_failed", "#login_failed")
    alice.send("/login alice " + PASSWORD)
    alice.expect("#logged_in_alice", "#matched_to_bob")
    bob.expect("#matched_to_alice")
    for _ in range(MAX_FAILED_LOGINS - 3):
        alice.send("/delete wrong-password")
        alice.expect("#login_failed")
    alice.send("/delete wrong-password")
    alice.expect("#login_failed")
    alice.expect_closed()
    bob.expect("#user_quit")
    bob.expect_closed()
    assert server.store.names() == ["alice"]


def test_past_the_address_burst_a_guess_waits_for_a_token_and_nothing_else_waits(
    start_server: StartServer,
) -> None:
    """§9.11: after 5 failures from one address, its next guess, on a new connection, waits for the clock.

    Meanwhile the server serves everyone else: a pair chats both ways.
    Only when the throttle's clock moves on a second is the guess checked
    and answered.
    """
    server = start_server()
    throttle = server.failed_logins = HeldTries()
    away(server, "alice")
    first = Peer(server.port)
    for number in range(DEFAULT_FAILED_LOGIN_BURST):
        first.send("/login alice wrong-%d-guess" % number)
        first.expect("#login_failed")
    first.expect_closed()  # its own limit; the address's tokens are spent too
    assert not throttle.holding.is_set()
    second = log_in(server, "alice", "wrong-next-guess")
    assert throttle.holding.wait(TIMEOUT), "the sixth guess was never held"
    bob, carol = pair(server.port, "bob", "carol")
    bob.send("hello carol")
    carol.expect("hello carol")
    carol.send("hello bob")
    bob.expect("hello bob")
    assert unanswered(second)  # the clock has not moved: no token, no answer
    throttle.clock.now += 1.0
    second.expect("#login_failed")


def test_a_guess_held_past_the_nickname_deadline_is_timed_out(start_server: StartServer) -> None:
    """§9.11, §9.2: a /login that finds no token before the nickname timeout is not answered but timed out."""
    server = start_server(nickname_timeout=NICKNAME_ROOM)
    throttle = server.failed_logins = HeldTries()
    for _ in range(DEFAULT_FAILED_LOGIN_BURST):
        assert throttle.take(ADDRESS) == 0
    guesser = log_in(server, "nobody")
    guesser.expect("#nickname_timeout")
    guesser.expect_closed()
    assert throttle.holding.is_set()


def test_only_checked_failures_take_the_addresss_tokens(start_server: StartServer) -> None:
    """§9.11: a right password gives its token back, a malformed try takes none; 5 failures then spend them.

    The throttle's clock never moves until the end, so a token taken by
    mistake would hold a later try for ever.
    """
    server = start_server()
    throttle = server.failed_logins = HeldTries()
    older = registered(server, "alice")
    for _ in range(DEFAULT_FAILED_LOGIN_BURST + 1):
        newer = log_in(server, "alice")
        newer.expect("#logged_in_alice", "#wait")
        older.expect("#session_replaced")
        older.expect_closed()
        older = newer
    malformed = Peer(server.port)
    for _ in range(MAX_FAILED_LOGINS):
        malformed.send("/login alice short")
        malformed.expect("#login_failed")
    malformed.expect_closed()
    wrong = Peer(server.port)
    for _ in range(DEFAULT_FAILED_LOGIN_BURST):
        wrong.send("/login alice wrong-password")
        wrong.expect("#login_failed")
    wrong.expect_closed()
    assert not throttle.holding.is_set()
    last = log_in(server, "alice", "wrong-password")
    assert throttle.holding.wait(TIMEOUT), "a sixth failure found a token"
    throttle.clock.now += 1.0
    last.expect("#login_failed")


# -- What the log never holds (§3.3) --------------------------------------------------------------


def test_logs_hold_no_password_and_no_message_text(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """§3.3: no password, right, wrong or malformed, and no text, stored or live, is ever logged."""
    caplog.set_level(logging.DEBUG, logger="mechat")
    secrets = ["Right-Pass-1", "Wrong-Pass-2", "Other-Pass-3", "shortpw", "stored-text-4", "live-text-5"]
    secrets += ["chat-text-6", "all-text-7"]
    server = start_server()
    alice = registered(server, "alice", "Right-Pass-1")
    alice.send("/quit")
    alice.expect_closed()
    carol, dave = pair(server.port, "carol", "dave")
    store(carol, "alice", "stored-text-4")
    bob = Peer(server.port)
    bob.send("/login alice Wrong-Pass-2", "/login alice shortpw", "/register bob Other-Pass-3")
    bob.expect("#login_failed", "#login_failed", "#registered_bob", "#wait")
    alice = log_in(server, "alice", "Right-Pass-1")
    alice.expect("#logged_in_alice")
    expect_stored(alice, "carol", "stored-text-4")
    alice.expect("#matched_to_bob")
    bob.expect("#matched_to_alice")
    carol.send("/msg alice live-text-5", "chat-text-6")
    carol.expect("#sent_to_alice")
    dave.expect("chat-text-6")
    alice.expect("#from_carol live-text-5")
    dave.send("/all all-text-7")
    dave.expect("#broadcast_3")
    for peer in (carol, alice, bob):
        peer.expect("#all_from_dave all-text-7")
    alice.send("/delete Wrong-Pass-2", "/delete Right-Pass-1", "/quit")
    alice.expect("#login_failed", "#account_deleted")
    alice.expect_closed()
    bob.expect("#user_quit")
    bob.expect_closed()
    logged = [record.getMessage() for record in caplog.records]
    assert any("registered alice" in message for message in logged), logged  # the log was captured
    for record in caplog.records:
        told = "%s %r %s" % (record.getMessage(), record.args, record.exc_text or "")
        assert not [secret for secret in secrets if secret in told], told
