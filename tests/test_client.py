"""Client tests: the reader and writer threads against a real server and a test Peer.

In-process tests feed the client's keyboard from a queue and record what it
shows; a few end-to-end tests run ``python -m mechat chat`` as a subprocess
with piped standard input, as a script would.  Where a test needs a server
line that a real server will not send on demand (a list cut short, a rate
refusal), a scripted server on the other end of a socket pair sends it.
"""

import io
import os
import queue
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Callable, Iterator, List, Optional, Tuple, TypeVar

import pytest

from mechat import client, keyboard, protocol, screen
from mechat.client import ChatClient
from mechat.screen import Screen
from mechat.server import ChatServer
from tests.conftest import StartServer
from tests.peers import TIMEOUT, Peer, meet, pair, waiting
from tests.ports import refusing_port

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


class RecordingScreen(Screen):
    """A Screen that keeps every line shown, for tests to expect in order."""

    def __init__(self) -> None:
        super().__init__(io.StringIO(), color=False, interactive=False)
        self.shown: queue.Queue[str] = queue.Queue()

    def show(self, text: str, when: str = "") -> None:
        """Record instead of printing; a line stamped with a time other than now keeps its stamp."""
        self.shown.put("[%s] %s" % (when, text) if when else text)

    def expect(self, *fragments: str) -> None:
        """Fail unless the next lines shown contain these fragments, in order.

        A line that is a notice fails too: the user sees sentences, never a
        raw notice.  (A line said in a room starts with ``#`` and its room.)
        """
        for fragment in fragments:
            try:
                line = self.shown.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError("nothing shown; expected %r" % fragment) from None
            assert fragment in line, "expected %r, shown %r" % (fragment, line)
            assert not is_notice(line), "a raw notice was shown: %r" % line


def is_notice(line: str) -> bool:
    """Say whether a line shown is a notice as the server sent it (§6)."""
    try:
        protocol.parse_notice(line)
    except ValueError:
        return False
    return True


class Keyboard:
    """Typed lines from a queue; None ends the input like Ctrl-D."""

    def __init__(self) -> None:
        self.typed: queue.Queue[Optional[str]] = queue.Queue()

    def type(self, *lines: Optional[str]) -> None:
        """Type each line (None for Ctrl-D)."""
        for line in lines:
            self.typed.put(line)

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                line = self.typed.get(timeout=30)
            except queue.Empty:
                return  # a test that never typed Ctrl-D: end the input, don't kill the thread
            if line is None:
                return
            yield line


class Session:
    """A ChatClient running in a thread, with its keyboard and screen."""

    def __init__(
        self,
        sock: socket.socket,
        nickname: Optional[str] = None,
        reconnect: Optional[Callable[[], socket.socket]] = None,
    ) -> None:
        self.keyboard = Keyboard()
        self.screen = RecordingScreen()
        self.sock = sock
        self.client = ChatClient(sock, self.keyboard, self.screen, nickname, reconnect)
        self.status: List[int] = []
        self.thread = threading.Thread(target=lambda: self.status.append(self.client.run()))
        self.thread.start()

    def exit_status(self) -> int:
        """Wait for the client to finish and return its exit status."""
        self.thread.join(timeout=TIMEOUT)
        assert not self.thread.is_alive(), "the client did not finish"
        self.keyboard.type(None)  # and let its writer thread go now, not in 30 s
        self.sock.close()
        return self.status[0]


def session(port: int, nickname: Optional[str] = None, offer_new_partner: bool = True) -> Session:
    """Start a client on the server at ``port``, able to reconnect as `mechat chat` is, unless told not to."""
    reconnect = (lambda: client.connect("127.0.0.1", port)) if offer_new_partner else None
    return Session(client.connect("127.0.0.1", port), nickname, reconnect)


def alice_meets(port: int) -> Tuple[Session, Peer]:
    """Start bob waiting, then a client as alice, and see both told of the pair (§7.1)."""
    bob = waiting(port, "bob")
    alice = session(port, "alice")
    alice.screen.expect("You are now chatting with bob")
    bob.expect("#matched_to_alice")
    return alice, bob


def bob_meets(port: int, alice: Session) -> Peer:
    """Connect bob to alice's client, which waits, and see both told of the pair (§7.1)."""
    bob = Peer(port)
    bob.send("bob")
    bob.expect("#matched_to_alice")
    alice.screen.expect("You are now chatting with bob")
    return bob


def scripted(nickname: str) -> Tuple[Session, socket.socket]:
    """Start a client whose server is the test: return it and the server's end of its connection."""
    ours, theirs = socket.socketpair()
    theirs.settimeout(TIMEOUT)
    return Session(ours, nickname), theirs


def test_client_without_a_way_to_reconnect_ends_when_the_partner_quits(server: ChatServer) -> None:
    """Given no way to reconnect (as the docs' recorded session), the client ends with 0 on #user_quit."""
    bob = waiting(server.port, "bob")
    alice = session(server.port, "alice", offer_new_partner=False)
    alice.screen.expect("You are now chatting with bob. Type /quit to leave.")
    bob.expect("#matched_to_alice")
    alice.keyboard.type("hello bob")
    bob.expect("hello bob")
    bob.send("hi alice", "/nickname robert", "/quit")
    alice.screen.expect("bob: hi alice", "bob is now known as robert", "robert has left the chat.")
    assert alice.exit_status() == 0


def test_client_offers_a_new_partner_when_the_partner_quits(server: ChatServer) -> None:
    """After #user_quit the client offers a new partner instead of exiting; Ctrl-D then exits 0."""
    alice, bob = alice_meets(server.port)
    bob.send("bye", "/quit")
    alice.screen.expect("bob: bye", "bob has left the chat.", screen.OFFER)
    alice.keyboard.type(None)
    alice.screen.expect("Leaving.")
    assert alice.exit_status() == 0


def test_client_asks_again_after_an_invalid_nickname(server: ChatServer) -> None:
    """§3: after #invalid_nickname the next typed line is sent as the nickname."""
    alice = session(server.port)
    alice.keyboard.type("bad nick", "/nickname x", "alice")
    alice.screen.expect("That nickname is not allowed", "other command is /quit", "Waiting for a partner")
    bob = bob_meets(server.port, alice)
    alice.keyboard.type("/quit")
    bob.expect("#user_quit")
    assert alice.exit_status() == 0


def test_lines_typed_while_waiting_are_sent_once_matched(server: ChatServer) -> None:
    """§7.2: the client holds lines typed before a partner exists, then sends them in order."""
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("early one", "early two")
    bob = Peer(server.port)
    bob.send("bob")
    bob.expect("#matched_to_alice", "early one", "early two")
    alice.screen.expect("You are now chatting with bob")
    alice.keyboard.type("/nickname alicia")
    alice.screen.expect("You are now known as alicia")
    alice.keyboard.type("#hash")
    alice.screen.expect("That line was not sent")
    alice.keyboard.type(None)
    alice.screen.expect("Leaving.")
    bob.expect("#partner_renamed_alicia", "#user_quit")
    assert alice.exit_status() == 0


def test_end_of_input_while_waiting_says_what_was_not_sent(server: ChatServer) -> None:
    """Ctrl-D sends /quit and exits 0; held lines are reported, never dropped silently."""
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("nobody will read this", None)
    alice.screen.expect("1 line(s) were not sent", "Leaving.")
    assert alice.exit_status() == 0


def test_full_server_is_reported_with_a_nonzero_status(start_server: StartServer) -> None:
    """§9.3: #server_full is shown as a sentence and the client exits 1."""
    server = start_server(max_clients=1)
    occupant = waiting(server.port, "occupant")
    late = session(server.port, "late")
    late.screen.expect("The server is full")
    assert late.exit_status() == 1
    occupant.close()


def test_server_shutdown_is_a_goodbye(start_server: StartServer) -> None:
    """§10: #server_shutdown is shown as a sentence and the client exits 0."""
    server = start_server()
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    server.shutdown()
    server.server_close()
    alice.screen.expect("The server is shutting down")
    assert alice.exit_status() == 0


class WatchedClient(ChatClient):
    """A client that tells ``either`` when its main thread starts to wait for its reader to finish."""

    either = threading.Event()

    def start_reader(self) -> None:
        super().start_reader()
        assert self.reader is not None
        real_join = self.reader.join

        def join(timeout: Optional[float] = None) -> None:
            WatchedClient.either.set()
            real_join(timeout)

        self.reader.join = join  # type: ignore[method-assign]


def test_the_client_ends_only_once_its_reader_has_shown_the_last_notice() -> None:
    """§10: run() returns after the reader has shown the notice that ended the session.

    A reader still printing when the process exits holds stdout's lock, and
    the interpreter's exit then aborts ("Fatal Python error").  The screen
    here shows #server_shutdown only once the main thread either waits for
    the reader or has returned: the order of the two must be the reader's
    line first.
    """
    WatchedClient.either.clear()
    order: List[str] = []

    class HeldScreen(RecordingScreen):
        def show(self, text: str, when: str = "") -> None:
            if "shutting down" in text:
                assert WatchedClient.either.wait(TIMEOUT), "run() neither returned nor waited for the reader"
                order.append("shown")
            super().show(text, when)

    ours, theirs = socket.socketpair()
    theirs.settimeout(TIMEOUT)
    keyboard = Keyboard()
    chat = WatchedClient(ours, keyboard, HeldScreen(), "alice", None)

    def run() -> None:
        chat.run()
        order.append("returned")
        WatchedClient.either.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert theirs.recv(100) == b"alice\n"
    theirs.sendall(b"#wait\n#server_shutdown\n")
    theirs.close()
    thread.join(TIMEOUT)
    keyboard.type(None)
    assert order == ["shown", "returned"]


def test_server_closing_without_notice_is_reported() -> None:
    """A server that just closes is reported in plain words; the client exits 0."""
    listener = socket.create_server(("127.0.0.1", 0))
    alice = Session(client.connect("127.0.0.1", listener.getsockname()[1]), "alice")
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(TIMEOUT)
        assert conn.recv(100) == b"alice\n"
        conn.sendall(b"#nonsense_notice\n")
    alice.screen.expect("The server sent something unexpected", "The server closed the connection.")
    assert alice.exit_status() == 0
    listener.close()


def test_enter_after_the_partner_left_finds_a_new_partner_with_the_same_nickname(server: ChatServer) -> None:
    """Enter at the offer reconnects with the same nickname; other lines are not sent and the offer stands."""
    alice, bob = alice_meets(server.port)
    bob.send("/quit")
    alice.screen.expect("bob has left the chat.", screen.OFFER)
    alice.keyboard.type("are you still there?")
    alice.screen.expect("That line was not sent: your partner has left. " + screen.OFFER)
    carol = waiting(server.port, "carol")
    alice.keyboard.type("")
    carol.expect("#matched_to_alice")
    alice.screen.expect("You are now chatting with carol")
    alice.keyboard.type("hi carol")
    carol.expect("hi carol")
    carol.send("/quit")
    alice.screen.expect("carol has left the chat.", screen.OFFER)
    alice.keyboard.type("/quit")
    alice.screen.expect("Leaving.")
    assert alice.exit_status() == 0


def test_a_nickname_taken_while_away_is_said_in_a_sentence_and_another_asked(server: ChatServer) -> None:
    """§3.1: reconnecting as a nickname someone took meanwhile (in any case) asks for another one."""
    alice, bob = alice_meets(server.port)
    bob.send("/quit")
    alice.screen.expect("bob has left the chat.", screen.OFFER)
    taker = waiting(server.port, "ALICE")  # the closed session's name was free at once (§3.1)
    alice.keyboard.type("")
    alice.screen.expect("The nickname alice is taken. Type another nickname.")
    assert alice.screen.prompt == "Nickname: "
    alice.keyboard.type("alice2")
    taker.expect("#matched_to_alice2")
    alice.screen.expect("You are now chatting with ALICE")
    alice.keyboard.type(None)
    taker.expect("#user_quit")
    assert alice.exit_status() == 0


def test_a_server_gone_at_the_offer_is_reported_with_a_nonzero_status(server: ChatServer) -> None:
    """A new partner cannot be found without the server: one sentence, and the client exits 1."""
    bob = waiting(server.port, "bob")
    with refusing_port() as gone:
        alice = Session(
            client.connect("127.0.0.1", server.port), "alice", lambda: client.connect("127.0.0.1", gone)
        )
        alice.screen.expect("You are now chatting with bob")
        bob.expect("#matched_to_alice")
        bob.send("/quit")
        alice.screen.expect("bob has left the chat.", screen.OFFER)
        alice.keyboard.type("")
        alice.screen.expect("Cannot reach the server again")
        assert alice.exit_status() == 1


def test_next_leaves_the_partner_and_finds_a_new_one(server: ChatServer) -> None:
    """§5.7: /next says it left the partner; the partner gets #user_quit; lines then go to the new partner."""
    alice, bob = alice_meets(server.port)
    carol = waiting(server.port, "carol")
    alice.keyboard.type("/next", "for whoever is next")
    alice.screen.expect("You left bob; looking for a new partner", "You are now chatting with carol")
    bob.expect("#user_quit")
    bob.expect_closed()
    carol.expect("#matched_to_alice", "for whoever is next")
    alice.keyboard.type(None)
    carol.expect("#user_quit")
    assert alice.exit_status() == 0


def test_next_while_waiting_keeps_the_place(server: ChatServer) -> None:
    """§5.7: /next while waiting is answered with #wait, shown as a sentence; the client still pairs."""
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("/next")
    alice.screen.expect("Waiting for a partner")
    bob = bob_meets(server.port, alice)
    alice.keyboard.type("/quit")
    bob.expect("#user_quit")
    assert alice.exit_status() == 0


def test_help_is_answered_locally_and_lists_every_command(server: ChatServer) -> None:
    """/help is never sent: it lists each command on a line of its own, in any phase."""
    alice = session(server.port)
    alice.keyboard.type("/help")
    alice.screen.expect("Commands")
    alice.keyboard.type("alice")
    alice.screen.expect("Waiting for a partner")  # /help was not taken for a nickname
    bob = bob_meets(server.port, alice)
    alice.keyboard.type("/help")
    help_lines = alice.screen.shown.get(timeout=TIMEOUT).splitlines()
    for usage in (
        "/who [PATTERN]",
        "/msg NICK TEXT",
        "/all TEXT",
        "/next",
        "/nickname NEW",
        "/create ROOM",
        "/rooms [PATTERN]",
        "/join ROOM",
        "/members",
        "/leave",
        "/users [PATTERN]",
        "/delete",
        "/login NICK",
        "/register NICK",
        "/help",
        "/quit",
    ):
        assert sum(line.strip().startswith(usage + " ") for line in help_lines) == 1, usage
    alice.keyboard.type("after help")
    bob.expect("after help")  # the first line bob gets: /help never reached the server
    alice.keyboard.type("/quit")
    bob.expect("#user_quit")
    assert alice.exit_status() == 0


def test_direct_messages_show_sender_and_receipt(server: ChatServer) -> None:
    """§5.5: a DM shows as `carol → you: TEXT`, its receipt as a sentence; it goes at once while waiting."""
    carol, dave = pair(server.port, "carol", "dave")
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    carol.send("/msg alice psst")
    carol.expect("#sent_to_alice")
    alice.screen.expect("carol → you: psst")
    longest = "x" * 1989  # a 2,000-octet /msg line: its #from_carol line is 2,001 octets (§2.3)
    carol.send("/msg alice " + longest)
    carol.expect("#sent_to_alice")
    alice.screen.expect("carol → you: " + longest)
    alice.keyboard.type("/msg DAVE hi dave")  # any case reaches dave; the receipt spells it his way
    dave.expect("#from_alice hi dave")
    alice.screen.expect("Sent to dave.")
    alice.keyboard.type("/msg alice note to self")
    alice.screen.expect("alice → you: note to self", "Sent to alice.")
    alice.keyboard.type(None)
    alice.screen.expect("Leaving.")
    assert alice.exit_status() == 0


def test_broadcast_shows_sender_and_count(server: ChatServer) -> None:
    """§5.6: an /all shows as `carol → all: TEXT`; its receipt says how many people it reached."""
    carol, dave = pair(server.port, "carol", "dave")
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("/all hello everyone")
    carol.expect("#all_from_alice hello everyone")
    dave.expect("#all_from_alice hello everyone")
    alice.screen.expect("Sent to 2 people.")
    carol.send("/all hi alice")
    dave.expect("#all_from_carol hi alice")
    carol.expect("#broadcast_2")
    alice.screen.expect("carol → all: hi alice")
    alice.keyboard.type(None)
    alice.screen.expect("Leaving.")
    assert alice.exit_status() == 0


def test_refusals_are_sentences_never_raw_notices(server: ChatServer) -> None:
    """§5.5, §3.1, §5.3: #no_such_user_, #nickname_taken and #invalid_command are shown in words."""
    pair(server.port, "carol", "dave")
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("/msg nobody hello?")
    alice.screen.expect("Nobody called nobody is online; that message was not sent.")
    alice.keyboard.type("/nickname CAROL")
    alice.screen.expect("Someone else has that nickname; you are still alice.")
    alice.keyboard.type("/msg carol")
    alice.screen.expect("/who [PATTERN], /msg NICK TEXT, /all TEXT, /next, /nickname NEW")
    alice.keyboard.type("/frobnicate")
    alice.screen.expect("Unknown or incomplete command.")
    alice.keyboard.type(None)
    alice.screen.expect("Leaving.")
    assert alice.exit_status() == 0


def test_an_all_over_the_rate_is_refused_in_words(start_server: StartServer) -> None:
    """§5.6, §9.7: an /all over the server's /all rate is answered #rate_limited, shown as a sentence."""
    server = start_server(all_rate=0.001)  # one /all, then none for 1,000 s
    carol = waiting(server.port, "carol")
    alice = session(server.port, "alice")
    alice.screen.expect("You are now chatting with carol")
    carol.expect("#matched_to_alice")
    alice.keyboard.type("/all one")
    carol.expect("#all_from_alice one")
    alice.screen.expect("Sent to 1 person.")
    alice.keyboard.type("/all two", "after")
    alice.screen.expect("You are sending too fast (/all at most once a second); that line was not sent.")
    carol.expect("after")  # and never "two"
    alice.keyboard.type("/quit")
    carol.expect("#user_quit")
    assert alice.exit_status() == 0


def test_who_prints_names_in_columns_under_a_heading(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§5.4, §6.1: /who shows how many match, then the names down columns that fit the terminal."""
    monkeypatch.setenv("COLUMNS", "40")  # 32 after the time stamp: 4 columns of 7
    pair(server.port, "ann", "bea")
    pair(server.port, "cyd", "dot")
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("/who")
    alice.screen.expect("5 people online match:\nalice  bea    dot\nann    cyd")
    alice.keyboard.type("/who A*")
    alice.screen.expect("2 people online match:\nalice  ann")
    alice.keyboard.type("/who d?t")
    alice.screen.expect("1 person online matches:\ndot")
    alice.keyboard.type("/who zz*")
    alice.screen.expect("Nobody online matches.")
    alice.keyboard.type(None)
    alice.screen.expect("Leaving.")
    assert alice.exit_status() == 0


def test_who_heading_says_when_the_server_cut_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """§6.1: a count above the names shown means the list was cut, and the heading says so.

    A real server cuts a list only past 2,000 octets of names, so a scripted
    one sends it, and with it the /all receipts for one person and for
    nobody (§5.6), in words.
    """
    monkeypatch.setenv("COLUMNS", "80")
    alice, server_end = scripted("alice")
    assert server_end.recv(100) == b"alice\n"
    server_end.sendall(b"#wait\n#online_250 ann bea\n#broadcast_1\n#broadcast_0\n")
    alice.screen.expect(
        "Waiting for a partner",
        "250 people online match; the server's list stops after the first 2:\nann  bea",
        "Sent to 1 person.",
        "Sent to nobody: no one else is online.",
    )
    server_end.close()
    alice.screen.expect("The server closed the connection.")
    assert alice.exit_status() == 0


def test_in_columns_fills_columns_first_within_the_width() -> None:
    """Names go down the columns, as ls lays them out, and no row is wider than the width."""
    names = ["a", "bb", "ccc", "dddd", "e", "f", "g"]
    assert screen.in_columns(names, 20) == ["a     dddd  g", "bb    e", "ccc   f"]
    assert screen.in_columns(names, 1) == names  # too narrow for two: one a row
    assert screen.in_columns([], 80) == []
    for width in range(1, 40):
        assert all(len(row) <= max(width, 4) for row in screen.in_columns(names, width))


# -- Tab completion ------------------------------------------------------------------


def test_tab_completes_commands_and_nicknames_learned_from_notices(server: ChatServer) -> None:
    """Tab completes commands, and nicknames learned from #matched_to_, #partner_renamed_, #from_,
    #all_from_ and #online_."""
    alice, bob = alice_meets(server.port)
    bob.send("/nickname Robert")
    bob.expect("#nickname_changed_Robert")
    alice.screen.expect("bob is now known as Robert")
    carol = waiting(server.port, "carol")
    carol.send("/msg alice hi")
    carol.expect("#sent_to_alice")
    alice.screen.expect("carol → you: hi")
    dave = meet(server.port, carol, "carol", "dave")
    dave.send("/all hey")
    dave.expect("#broadcast_3")
    bob.expect("#all_from_dave hey")
    carol.expect("#all_from_dave hey")
    alice.screen.expect("dave → all: hey")
    waiting(server.port, "erin")
    alice.keyboard.type("/who e*")
    alice.screen.expect("1 person online matches")

    complete = alice.client.completer.complete
    assert [complete("/n", state) for state in range(3)] == ["/next", "/nickname ", None]
    assert complete("/wh", 0) == "/who"  # no space: "/who " would be refused (§5.3)
    assert complete("/ms", 0) == "/msg "  # a space, for the nickname that must follow
    everything = [complete("/", state) for state in range(len(screen.COMMANDS) + 1)]
    assert everything == [*screen.COMMAND_COMPLETIONS, None]
    for typed, nickname in [("bo", "bob"), ("r", "Robert"), ("C", "carol"), ("d", "dave"), ("e", "erin")]:
        assert complete(typed, 0) == nickname + " ", typed
        assert complete(typed, 1) is None
    assert complete("zed", 0) is None
    alice.keyboard.type("/quit")
    bob.expect("#user_quit")
    assert alice.exit_status() == 0


def test_line_editing_installs_the_completer() -> None:
    """Where readline exists, Tab calls the client's completer, only a space ends a word, and readline
    tells the screen when it draws the prompt."""
    readline = pytest.importorskip("readline")
    before, delimiters = readline.get_completer(), readline.get_completer_delims()
    completer = keyboard.Completer()
    shown = Screen(io.StringIO(), color=False, interactive=True)
    try:
        keyboard.enable_line_editing(completer.complete, shown)
        assert readline.get_completer() == completer.complete
        assert readline.get_completer_delims() == " "
        assert shown.hooked or not hasattr(readline, "set_pre_input_hook")
    finally:
        readline.set_completer(before)
        readline.set_completer_delims(delimiters)
        readline.set_startup_hook()  # no argument: no hook
        if hasattr(readline, "set_pre_input_hook"):
            readline.set_pre_input_hook()


class EnteredWait(threading.Condition):
    """A Condition that says when a thread has begun to wait on it."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self.entered = threading.Event()

    def wait_for(self, predicate: Callable[[], T], timeout: Optional[float] = None) -> T:
        """Say so, then wait as usual: the lock is held until the wait itself lets it go."""
        self.entered.set()
        return super().wait_for(predicate, timeout)


def test_a_line_shown_while_readline_draws_the_prompt_waits_and_draws_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line shown between readline's startup hook and its pre-input hook is printed once the prompt is
    whole, with the prompt drawn again under it, never in the middle of it."""
    out = io.StringIO()
    shown = Screen(out, color=False, interactive=True)
    shown.prompt, shown.hooked = "> ", True
    shown.DRAW_WAIT = 10 * TIMEOUT  # the bound is for a readline that never says; this one will
    shown._drawn = drawn = EnteredWait(shown._lock)  # show() waits on it while readline draws
    monkeypatch.setattr(screen, "typed_so_far", lambda: "")
    monkeypatch.setattr("builtins.input", lambda prompt: "reading" if shown.reading else "not yet")
    assert shown.read_line() == "not yet"  # with the hooks, only prompt_drawn() says the prompt is up
    shown.prompt_drawing()
    answer = threading.Thread(target=shown.info, args=("an answer",))
    answer.start()
    assert drawn.entered.wait(TIMEOUT), "the line never waited for the prompt"
    assert out.getvalue() == ""  # nothing in the middle of the prompt
    shown.prompt_drawn()  # the lock is free only once the line waits: it is woken, not raced
    answer.join(TIMEOUT)
    assert not answer.is_alive()
    assert shown.reading
    assert out.getvalue().endswith("an answer\n> "), out.getvalue()


def test_without_readline_the_client_still_reads_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no readline: line editing is skipped, and input() is read as before."""
    monkeypatch.setitem(sys.modules, "readline", None)  # `import readline` now raises ImportError
    keyboard.enable_line_editing(keyboard.Completer().complete)
    assert screen.typed_so_far() == ""
    typed = iter(["alice"])

    def fake_input(prompt: str) -> str:
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    completer = keyboard.Completer()
    shown = Screen(io.StringIO(), color=False, interactive=True)
    assert list(keyboard.keyboard_lines(io.StringIO(), True, shown, completer.complete)) == ["alice"]
    assert not shown.hooked


# -- The screen --------------------------------------------------------------------


def test_screen_stamps_colours_and_redraws_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """An incoming line clears the prompt line, prints, and redraws the prompt and typed text.

    Between Enter and the next input() no prompt is drawn: input() draws it.
    """
    out = io.StringIO()
    shown = Screen(out, color=True, interactive=True)
    shown.prompt = "> "
    monkeypatch.setattr(screen, "typed_so_far", lambda: "half-typ")
    shown.reading = True  # as while input() waits
    shown.message("bob", "hello")
    text = out.getvalue()
    assert text.startswith("\r\x1b[K[")
    assert text.endswith(Screen.BOLD_CYAN + "bob" + Screen.RESET + ": hello\n> half-typ")
    shown.reading = False
    shown.message("bob", "again")
    assert out.getvalue().endswith(Screen.RESET + ": again\n")


def test_screen_stamps_direct_messages_broadcasts_and_blocks() -> None:
    """A DM reads `[10:02] bob → you: hi`, a broadcast `→ all`; further lines of a block are indented."""
    out = io.StringIO()
    shown = Screen(out, color=False, interactive=False)
    shown.message("bob", "hi", to="you")
    shown.message("bob", "hi all", to="all")
    shown.message("bob", "hi partner")
    shown.info("heading\nrow")
    stamp = r"\[\d\d:\d\d\] "
    expected = [
        stamp + "bob → you: hi",
        stamp + "bob → all: hi all",
        stamp + "bob: hi partner",
        stamp + "heading",
    ]
    lines = out.getvalue().splitlines()
    assert all(re.fullmatch(pattern, line) for pattern, line in zip(expected, lines)), lines
    assert lines[4] == " " * Screen.STAMP_WIDTH + "row"


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_colour_respects_no_color_and_pipes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour only on a terminal, only when asked, and never with NO_COLOR set."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert screen.use_color(True, FakeTerminal())
    assert not screen.use_color(False, FakeTerminal())
    assert not screen.use_color(True, io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not screen.use_color(True, FakeTerminal())


def test_keyboard_lines_from_a_pipe_and_from_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped lines lose their newline; interactive input ends at Ctrl-D (EOFError)."""
    monkeypatch.setitem(sys.modules, "readline", None)  # no line editing: this test reads lines only
    shown = Screen(io.StringIO(), color=False, interactive=True)
    assert list(keyboard.keyboard_lines(io.StringIO("a\r\nb\n"), False, shown)) == ["a", "b"]
    typed = iter(["x", "y"])

    def fake_input(prompt: str) -> str:
        assert prompt == "> ", prompt  # the screen's prompt, as it is when input() starts
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    shown.prompt = "> "
    assert list(keyboard.keyboard_lines(io.StringIO(), True, shown)) == ["x", "y"]


def test_typed_so_far_is_text() -> None:
    """Outside an interactive readline session the typed text is a string (usually empty)."""
    assert isinstance(screen.typed_so_far(), str)


# -- End to end: python -m mechat chat ----------------------------------------------


def run_chat(port: int, stdin: bytes, *args: str) -> "subprocess.CompletedProcess[bytes]":
    """Run the client as a script would, with piped standard input."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    command = [sys.executable, "-m", "mechat", "chat", "--port", str(port), *args]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=30, env=env, check=False)


def test_piped_client_end_to_end(server: ChatServer) -> None:
    """printf 'alice\\nhello\\n' | mechat chat: matched, says hello, quits at end of input, exits 0."""
    bob = waiting(server.port, "bob")
    result = run_chat(server.port, b"alice\nhello\n")
    bob.expect("#matched_to_alice", "hello", "#user_quit")
    bob.expect_closed()
    assert result.returncode == 0, result.stderr
    assert b"You are now chatting with bob" in result.stdout
    assert b"Traceback" not in result.stderr


class OutputLines:
    """The lines a subprocess prints, read by a thread so that a test can wait for one with a deadline."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.seen: List[bytes] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.lines.put(line)

    def expect(self, fragment: bytes) -> None:
        """Read lines until one holds ``fragment``; fail if none comes within the timeout."""
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError("%r never shown; shown: %r" % (fragment, self.seen)) from None
            self.seen.append(line)
            if fragment in line:
                return


def test_nick_option_end_to_end(server: ChatServer) -> None:
    """--nick sends the nickname first; after #user_quit an empty line finds a new partner as that nick."""
    bob = waiting(server.port, "bob")
    command = [sys.executable, "-m", "mechat", "chat", "--port", str(server.port), "--nick", "alice"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    pipe = subprocess.PIPE
    with subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=pipe, env=env) as chat:
        assert chat.stdin is not None and chat.stdout is not None and chat.stderr is not None
        out = OutputLines(chat.stdout)
        bob.expect("#matched_to_alice")
        bob.send("hi there", "/quit")
        out.expect(b"bob: hi there")
        out.expect(b"bob has left the chat.")
        out.expect(screen.OFFER.encode())  # standard input stays open: the client waits for an answer
        carol = waiting(server.port, "carol")
        chat.stdin.write(b"\n")
        chat.stdin.flush()
        carol.expect("#matched_to_alice")
        out.expect(b"You are now chatting with carol")
        chat.stdin.close()  # end of input: /quit
        carol.expect("#user_quit")
        assert chat.wait(timeout=30) == 0
        assert b"Traceback" not in chat.stderr.read()


def test_refused_connection_is_one_clear_line() -> None:
    """No server: one line on stderr, a non-zero status, no traceback."""
    with refusing_port() as port:
        result = run_chat(port, b"alice\n")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0] and "mechat serve" in lines[0]
    assert result.stdout == b""


def test_main_in_process_with_piped_input(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """client.main reads the nickname and lines from a pipe and returns 0 at the end."""
    bob = waiting(server.port, "bob")
    monkeypatch.setattr(sys, "stdin", io.StringIO("alice\nhello\n"))
    assert client.main("127.0.0.1", server.port, None, color=True) == 0
    bob.expect("#matched_to_alice", "hello", "#user_quit")
    out = capsys.readouterr().out
    assert "You are now chatting with bob" in out
    assert "\x1b[" not in out  # a pipe is never coloured


def test_output_that_cannot_encode_arrows_gets_plain_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows' pipes and files are cp1252, which has no →: the prompt and the lines shown use -> instead,
    and any other character the output lacks is a ?, rather than an error that loses the line."""
    cp1252, plain = io.BytesIO(), io.BytesIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(cp1252, encoding="cp1252", write_through=True))
    shown = Screen(sys.stdout, color=False, interactive=True)
    shown.prompt = "alice → bob> "
    assert shown.read_line() == "hi"  # input() writes the prompt to sys.stdout
    shown.message("bob", "hi ☺", to="you")
    assert cp1252.getvalue().startswith(b"alice -> bob> ")
    assert cp1252.getvalue().endswith(b"bob -> you: hi ?\n")
    out = io.TextIOWrapper(plain, encoding="ascii", write_through=True)
    Screen(out, color=False, interactive=False).info("Waiting for a partner…")
    assert plain.getvalue().endswith(b"Waiting for a partner...\n")
    assert screen.encodable("alice → bob", io.StringIO()) == "alice → bob"  # a str holds anything


def test_run_waits_for_the_end_in_timed_waits_that_ctrl_c_can_interrupt() -> None:
    """Ctrl-C on Windows interrupts no untimed wait: run() waits for the end in short timed ones, and when
    one is interrupted, it leaves (§5.1)."""
    untimed: List[Optional[float]] = []

    class Interrupted(threading.Condition):
        """The Condition of run(): the first timed wait of run()'s thread is cut short by Ctrl-C."""

        def wait(self, timeout: Optional[float] = None) -> bool:
            if threading.current_thread() is runner:
                if timeout is None:
                    untimed.append(timeout)
                else:
                    raise KeyboardInterrupt
            return super().wait(timeout)

    ours, theirs = socket.socketpair()
    theirs.settimeout(TIMEOUT)
    shown = RecordingScreen()
    chat = ChatClient(ours, Keyboard(), shown)  # no nickname: the writer waits for one, sending nothing
    chat.changed = Interrupted()
    runner = threading.Thread(target=chat.run, daemon=True)  # daemon: a failing run() may wait for ever
    runner.start()
    shown.expect("Leaving.")
    assert not untimed, "run() waited with no time limit"
    with theirs, theirs.makefile("rb") as lines:
        assert lines.readline() == b"/quit\n"
    runner.join(TIMEOUT)
    assert not runner.is_alive()
    ours.close()


def test_screen_with_closed_output_stays_quiet() -> None:
    """Output that has gone away (a closed pipe) is not an error in the reader thread."""
    out = io.StringIO()
    out.close()
    Screen(out, color=False, interactive=False).info("nobody sees this")
