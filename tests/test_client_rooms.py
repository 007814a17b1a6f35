"""Client tests for rooms (§5.8-§5.12, §7.6): what the terminal shows, where typed lines go, the prompt, Tab.

The helpers of tests/test_client.py run a real ChatClient against a real
server; the other members of a room are test Peers, which fail on any line
nobody expected.  The client changes its prompt before it shows the notice
that moved it, so a test that has seen the sentence may read the prompt.
"""

import io
import re
import socket
import sys
from typing import List, Tuple

import pytest

from mechat import client, keyboard, screen
from mechat.protocol import Notice, NoticeLine, Phase
from mechat.screen import Place, Screen
from mechat.server import ChatServer
from tests.conftest import StartServer
from tests.peers import Peer, in_room, waiting
from tests.test_client import Session, alice_meets, bob_meets, scripted, session


def alice_joins(port: int, room: str, *members: str) -> Tuple[Session, List[Peer]]:
    """Put peers in ``room`` (the first makes it), then a client as alice, who joins; all are told (§5.10)."""
    peers = in_room(port, room, *members)
    alice = session(port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("/join " + room)
    alice.screen.expect("You are in #%s: what you type goes to everyone in it." % room)
    for peer in peers:
        peer.expect("#entered_%s_alice" % room)
    return alice, peers


def alice_quits(alice: Session, *told: Peer, notice: str = "#user_quit") -> None:
    """Type /quit: each peer gets ``notice``, and the client exits 0 (§5.1)."""
    alice.keyboard.type("/quit")
    alice.screen.expect("Leaving.")
    for peer in told:
        peer.expect(notice)
    assert alice.exit_status() == 0


def test_room_lines_show_the_room_and_the_sender(server: ChatServer) -> None:
    """§7.6: `#in_lab-3_dave hi` shows as `#lab-3 dave: hi`; a typed line goes to every other member."""
    alice, (dave, erin) = alice_joins(server.port, "lab-3", "dave", "erin")
    dave.send("hi alice")
    erin.expect("#in_lab-3_dave hi alice")
    alice.screen.expect("#lab-3 dave: hi alice")
    alice.keyboard.type("hello both")
    dave.expect("#in_lab-3_alice hello both")
    erin.expect("#in_lab-3_alice hello both")
    alice_quits(alice, dave, erin, notice="#exited_lab-3_alice")


def test_screen_shows_a_room_line_after_its_time_stamp() -> None:
    """A line in a room reads `[10:02] #lab-3 alice: hi`, as a pair's reads `[10:02] alice: hi`."""
    out = io.StringIO()
    shown = Screen(out, color=False, interactive=False)
    shown.notice(NoticeLine(Notice.IN, "lab-3_alice", "hi all"), Place(Phase.IN_ROOM, "bob", room="lab-3"))
    assert re.fullmatch(r"\[\d\d:\d\d\] #lab-3 alice: hi all\n", out.getvalue()), out.getvalue()


def test_entries_exits_and_renames_are_sentences(server: ChatServer) -> None:
    """§5.10, §5.12, §7.6: #entered_, #renamed_ and #exited_ (by /leave, /quit or a close) are sentences."""
    alice, (dave,) = alice_joins(server.port, "lab-3", "dave")
    erin = waiting(server.port, "erin")
    erin.send("/join LAB-3")  # any case finds the room; the notices spell it as created
    erin.expect("#joined_lab-3")
    dave.expect("#entered_lab-3_erin")
    alice.screen.expect("erin entered #lab-3.")
    erin.send("/nickname erica")
    erin.expect("#nickname_changed_erica")
    dave.expect("#renamed_lab-3_erin erica")
    alice.screen.expect("erin is now known as erica in #lab-3.")
    erin.send("/leave")
    erin.expect("#left_lab-3", "#wait")
    dave.expect("#exited_lab-3_erica")
    alice.screen.expect("erica left #lab-3.")
    dave.close()
    alice.screen.expect("dave left #lab-3.")
    alice_quits(alice)


def test_the_prompt_says_where_a_typed_line_goes(server: ChatServer) -> None:
    """The prompt follows the session: waiting, chatting with a partner, in a room, and renames (§7)."""
    alice = session(server.port)
    assert alice.screen.prompt == "Nickname: "
    alice.keyboard.type("alice")
    alice.screen.expect("Waiting for a partner")
    assert alice.screen.prompt == "alice (waiting)> "
    bob = bob_meets(server.port, alice)
    assert alice.screen.prompt == "alice → bob> "
    bob.send("/nickname robert")
    bob.expect("#nickname_changed_robert")
    alice.screen.expect("bob is now known as robert.")
    assert alice.screen.prompt == "alice → robert> "
    alice.keyboard.type("/nickname alicia")
    alice.screen.expect("You are now known as alicia.")
    assert alice.screen.prompt == "alicia → robert> "
    bob.expect("#partner_renamed_alicia")
    (dave,) = in_room(server.port, "lab-3", "dave")
    alice.keyboard.type("/join lab-3")
    alice.screen.expect("You are in #lab-3", "You left robert")
    assert alice.screen.prompt == "alicia → #lab-3> "
    bob.expect("#user_quit")
    dave.expect("#entered_lab-3_alicia")
    carol = waiting(server.port, "carol")
    alice.keyboard.type("/leave")
    alice.screen.expect("You left #lab-3.", "You are now chatting with carol")
    assert alice.screen.prompt == "alicia → carol> "
    dave.expect("#exited_lab-3_alicia")
    carol.expect("#matched_to_alicia")
    carol.send("/quit")
    alice.screen.expect("carol has left the chat.", screen.OFFER)
    assert alice.screen.prompt == ""
    alice_quits(alice)


def test_join_from_a_pair_leaves_the_partner_and_what_follows_goes_to_the_room(server: ChatServer) -> None:
    """§5.10: /join while chatting: the partner gets #user_quit, and the client says so; the lines typed
    next reach the room."""
    (dave,) = in_room(server.port, "lab-3", "dave")
    alice, bob = alice_meets(server.port)
    alice.keyboard.type("/join lab-3", "hello room")
    bob.expect("#user_quit")
    bob.expect_closed()
    dave.expect("#entered_lab-3_alice", "#in_lab-3_alice hello room")
    alice.screen.expect("You are in #lab-3", "You left bob, who is told that you have left the chat.")
    alice_quits(alice, dave, notice="#exited_lab-3_alice")


def test_join_while_waiting_drops_the_held_lines_and_sends_the_next_to_the_room(server: ChatServer) -> None:
    """§5.10: lines held for a partner are not sent to a room, and are counted; lines typed after /join are.

    The client waits for the answer to /join before it acts on the next
    line, so that line goes to the room, not to a hold for a partner.
    """
    (dave,) = in_room(server.port, "lab-3", "dave")
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("for a partner", "/join lab-3", "for the room")
    dave.expect("#entered_lab-3_alice", "#in_lab-3_alice for the room")
    alice.screen.expect(
        "You are in #lab-3", "1 line(s) were not sent: they were for a partner, and you went into #lab-3."
    )
    alice_quits(alice, dave, notice="#exited_lab-3_alice")


def test_lines_typed_after_leave_wait_for_the_next_partner(server: ChatServer) -> None:
    """§5.12: after /leave the client is waiting again: lines are held, then sent to the next partner."""
    alice, (dave,) = alice_joins(server.port, "lab-3", "dave")
    alice.keyboard.type("/leave", "for whoever comes")
    alice.screen.expect("You left #lab-3.", "Waiting for a partner")
    dave.expect("#exited_lab-3_alice")
    bob = bob_meets(server.port, alice)
    bob.expect("for whoever comes")
    alice_quits(alice, bob)


def test_room_commands_are_answered_in_sentences_and_lists(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§5.8, §5.9, §5.11, §5.12, §5.7: each answer to a room command is a sentence or a headed list."""
    monkeypatch.setenv("COLUMNS", "40")
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    typed_and_shown = [
        ("/members", "You are not in a room. /rooms lists the rooms, and /join ROOM goes into one."),
        ("/leave", "You are not in a room."),
        ("/rooms", "No room matches."),
        ("/create Lab-3", "Room #Lab-3 is made. Type /join Lab-3 to go in."),
        ("/create lab-3", "There is a room #Lab-3 already. Type /join Lab-3 to go in."),
        ("/create attic", "Room #attic is made."),
        ("/rooms", "2 rooms match:\n#attic  #Lab-3"),
        ("/rooms l*", "1 room matches:\n#Lab-3"),
        ("/join lab-3", "You are in #Lab-3"),
        ("/members", "1 person is in #Lab-3:\nalice"),
        ("/next", "in a room, /leave takes you back to finding a partner."),
    ]
    for typed, shown in typed_and_shown:
        alice.keyboard.type(typed)
        alice.screen.expect(shown)
    dave = waiting(server.port, "dave")
    dave.send("/join Lab-3")
    dave.expect("#joined_Lab-3")
    alice.screen.expect("dave entered #Lab-3.")
    alice.keyboard.type("/members")
    alice.screen.expect("2 people are in #Lab-3:\nalice  dave")
    alice.keyboard.type("/leave")
    dave.expect("#exited_Lab-3_alice")
    alice.screen.expect("You left #Lab-3.", "Waiting for a partner")
    alice_quits(alice)


def test_refusals_are_sentences_and_leave_the_user_where_they_were(start_server: StartServer) -> None:
    """§5.10, §3.2, §9.8, §9.9: after #no_such_room_, #invalid_room, #too_many_rooms or #room_full_,
    each said in words, the lines typed next go where they went before."""
    server = start_server(max_rooms=1, max_members=1)
    in_room(server.port, "solo", "dave")
    alice, bob = alice_meets(server.port)
    alice.keyboard.type("/join nowhere", "/join #lab-3", "/create another", "/join SOLO", "still with you")
    alice.screen.expect(
        "There is no room #nowhere. /rooms lists the rooms; /create nowhere makes it.",
        "That is not a room name: use 1 to 30 letters, digits or -, with no # in front",
        "The server has as many rooms as it allows; no room was made.",
        "#solo is full; you are where you were.",
    )
    bob.expect("still with you")
    assert alice.screen.prompt == "alice → bob> "
    alice_quits(alice, bob)


# -- Tab completion ------------------------------------------------------------------


def completions(completer: keyboard.Completer, word: str, monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Return what Tab offers for ``word`` typed right after ``/join ``, asked as readline asks."""
    offered: List[str] = []
    with monkeypatch.context() as patch:
        patch.setattr(keyboard, "typed_before_word", lambda: "/join ")
        while True:
            completion = completer.complete(word, len(offered))
            if completion is None:
                return offered
            offered.append(completion)


def test_tab_after_join_completes_the_rooms_the_client_has_seen(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `/join `, Tab offers the rooms the client has seen listed or made, in any case and with no
    space after; a room only echoed by #no_such_room_ is not; a member who entered is a nickname."""
    dave, erin = in_room(server.port, "Lab-3", "dave", "erin")
    alice = session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("/rooms", "/create attic", "/create kitchen", "/create Kitchen", "/join ghost")
    alice.screen.expect("1 room matches", "Room #attic is made", "Room #kitchen is made", "There is a room")
    alice.screen.expect("There is no room #ghost")
    completer = alice.client.completer
    assert completions(completer, "", monkeypatch) == ["attic", "kitchen", "Lab-3"]
    assert completions(completer, "L", monkeypatch) == ["Lab-3"]
    assert completions(completer, "g", monkeypatch) == []
    alice.keyboard.type("/join lab-3")
    alice.screen.expect("You are in #Lab-3")
    dave.expect("#entered_Lab-3_alice")
    erin.expect("#entered_Lab-3_alice")
    assert completer.complete("e", 0) is None  # erin was never named to alice
    frank = waiting(server.port, "frank")
    frank.send("/join lab-3")
    frank.expect("#joined_Lab-3")
    dave.expect("#entered_Lab-3_frank")
    erin.expect("#entered_Lab-3_frank")
    alice.screen.expect("frank entered #Lab-3.")
    assert completer.complete("f", 0) == "frank "  # a nickname, then a space for what follows
    assert completer.complete("/jo", 0) == "/join "
    alice_quits(alice, dave, erin, frank, notice="#exited_Lab-3_alice")


def test_rooms_are_learned_from_every_notice_that_names_one() -> None:
    """Each notice that names a room that exists teaches it; members' notices teach nicknames too."""
    completer = keyboard.Completer()
    for notice in [
        NoticeLine(Notice.ROOM_CREATED, "created"),
        NoticeLine(Notice.ROOM_EXISTS, "exists"),
        NoticeLine(Notice.ROOMS, "2", "listed1 listed2"),
        NoticeLine(Notice.JOINED, "joined"),
        NoticeLine(Notice.ENTERED, "entered_eve"),
        NoticeLine(Notice.ROOM_FULL, "full"),
        NoticeLine(Notice.LEFT, "left"),
        NoticeLine(Notice.EXITED, "exited_ann"),
        NoticeLine(Notice.IN, "in_bea", "hi"),
        NoticeLine(Notice.RENAMED, "renamed_cyd", "cydney"),
        NoticeLine(Notice.MEMBERS, "1", "dot"),
        NoticeLine(Notice.NO_SUCH_ROOM, "echoed"),
    ]:
        completer.learn_from(notice)
    rooms = ["created", "entered", "exists", "exited", "full", "in", "joined", "left", "listed1", "listed2"]
    assert completer.candidates("", "/join ") == [*rooms, "renamed"]
    assert completer.candidates("", "") == ["ann ", "bea ", "cyd ", "cydney ", "dot ", "eve "]
    assert completer.candidates("/j", "") == ["/join "]


def test_without_readline_completion_sees_no_line_and_the_prompt_still_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows has no readline: Tab cannot be pressed, nothing breaks, and input() gets the prompt."""
    monkeypatch.setitem(sys.modules, "readline", None)  # `import readline` now raises ImportError
    assert keyboard.typed_before_word() == ""
    assert keyboard.Completer().complete("/jo", 0) == "/join "
    prompts: List[str] = []

    def fake_input(prompt: str) -> str:
        prompts.append(prompt)
        return "hi"

    monkeypatch.setattr("builtins.input", fake_input)
    shown = Screen(io.StringIO(), color=False, interactive=True)
    shown.prompt = Place(Phase.IN_ROOM, "alice", room="lab-3").prompt()
    assert shown.read_line() == "hi"
    assert prompts == ["alice → #lab-3> "]
    assert not shown.reading


# -- Which notice answers a /join (§5.10, §6) ---------------------------------------


class ScriptedServer:
    """The test's end of a client's connection: it plays the server, and reads each line with a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lines = sock.makefile("rb")

    def expect(self, *lines: str) -> None:
        """Fail unless the client sends these lines next."""
        for line in lines:
            try:
                got = self.lines.readline()
            except socket.timeout:
                raise AssertionError("the client sent nothing; expected %r" % line) from None
            assert got == line.encode() + b"\n", "expected %r, the client sent %r" % (line, got)

    def send(self, *lines: str) -> None:
        """Send lines to the client, as the server would."""
        self.sock.sendall(b"".join(line.encode() + b"\n" for line in lines))

    def quit(self, alice: Session) -> None:
        """Type Ctrl-D: the client says only that it leaves, sends only /quit, and exits 0 (§5.1)."""
        alice.keyboard.type(None)
        alice.screen.expect("Leaving.")
        self.expect("/quit")
        self.lines.close()  # the socket closes with its last file
        self.sock.close()
        assert alice.exit_status() == 0


def waiting_alice() -> Tuple[Session, ScriptedServer]:
    """Start a client as alice on a scripted server, which tells it to wait for a partner (§7.1)."""
    alice, sock = scripted("alice")
    server = ScriptedServer(sock)
    server.expect("alice")
    server.send("#wait")
    alice.screen.expect("Waiting for a partner")
    return alice, server


@pytest.mark.parametrize(
    "refusal, said",
    [
        ("#invalid_command", ["Unknown or incomplete command", screen.NO_ROOMS]),
        ("#rate_limited", ["You are sending too fast"]),
    ],
)
def test_a_join_refused_as_a_command_or_for_speed_has_its_answer(refusal: str, said: List[str]) -> None:
    """§5.3, §9.5: a server without rooms answers /join with #invalid_command, a busy one with #rate_limited:
    either is the /join's answer, and the client reads the keyboard again."""
    alice, server = waiting_alice()
    alice.keyboard.type("/join lab", "/who")
    server.expect("/join lab")
    server.send(refusal)
    alice.screen.expect(*said)
    server.expect("/who")
    server.send("#online_1 alice")
    alice.screen.expect("1 person online matches")  # and never that /join had no answer
    assert alice.screen.prompt == "alice (waiting)> "
    server.quit(alice)


def test_a_join_with_no_answer_is_given_up_and_its_late_answer_still_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that never answers /join does not stop the keyboard: after JOIN_TIMEOUT the client says so
    and goes on; an answer that comes after that still moves it (§5.10)."""
    monkeypatch.setattr(client, "JOIN_TIMEOUT", 0.01)
    alice, server = waiting_alice()
    alice.keyboard.type("/join lab", "/who")
    server.expect("/join lab")
    alice.screen.expect("The server has not answered /join lab yet")
    server.expect("/who")
    server.send("#joined_lab", "#online_1 alice")
    alice.screen.expect("You are in #lab", "1 person online matches")
    assert alice.screen.prompt == "alice → #lab> "
    server.quit(alice)


def test_a_malformed_join_is_not_waited_for() -> None:
    """§3.2: a /join of no room name moves nobody; the client sends the next line without waiting."""
    alice, server = waiting_alice()
    alice.keyboard.type("/join lab_3", "/join", "/who")
    server.expect("/join lab_3", "/join", "/who")
    server.send("#invalid_room", "#invalid_room", "#online_1 alice")
    alice.screen.expect("That is not a room name", "That is not a room name", "1 person online matches")
    server.quit(alice)


def test_refusals_of_lines_sent_before_a_join_do_not_answer_it() -> None:
    """§6: replies come in the order of the lines they answer, so the refusals of a /create and a command
    typed just before /join are theirs; the line typed after /join waits for its answer, then goes to the
    room."""
    alice, server = waiting_alice()
    alice.keyboard.type("/create lab_3", "/frobnicate", "#not a message", "/join LAB")
    server.expect("/create lab_3", "/frobnicate", "/join LAB")  # the held message is not sent
    server.send("#invalid_room", "#invalid_command")
    alice.screen.expect("That is not a room name", "Unknown or incomplete command")
    assert alice.client.joining == "LAB", "a refusal of an earlier line ended the wait for /join"
    alice.keyboard.type("hello room")
    server.send("#joined_lab")  # the room as its creator spelled it
    alice.screen.expect("You are in #lab", "1 line(s) were not sent: they were for a partner")
    server.expect("hello room")
    server.quit(alice)


def test_a_room_less_servers_refusal_ends_the_wait_once_earlier_lines_have_their_answers() -> None:
    """§5.3, §6: on a server without rooms, the #invalid_command after the answers owed to earlier lines
    is the /join's."""
    alice, server = waiting_alice()
    alice.keyboard.type("/create lab", "/join lab", "/who")
    server.expect("/create lab", "/join lab")
    server.send("#invalid_command")
    alice.screen.expect("Unknown or incomplete command")
    assert alice.client.joining == "lab"
    server.send("#invalid_command")
    alice.screen.expect("Unknown or incomplete command", screen.NO_ROOMS)
    server.expect("/who")
    server.quit(alice)


def test_lines_held_for_a_partner_found_during_a_join_never_reach_the_room() -> None:
    """§5.10: the server may pair a waiting client before it reads its /join.  The lines held for a
    partner then wait for the /join's answer: #joined_ drops them, and counts them."""
    alice, server = waiting_alice()
    alice.keyboard.type("for a partner", "/join lab")
    server.expect("/join lab")
    server.send("#matched_to_bob")
    alice.screen.expect("You are now chatting with bob")
    server.send("#joined_lab")
    alice.screen.expect(
        "You are in #lab",
        "You left bob",
        "1 line(s) were not sent: they were for a partner, and you went into #lab.",
    )
    server.quit(alice)  # "for a partner" never went out


def test_lines_held_for_a_partner_found_during_a_refused_join_go_to_that_partner() -> None:
    """§5.10: if the /join lets the client in nowhere, the partner found meanwhile gets the held lines,
    before any typed later."""
    alice, server = waiting_alice()
    alice.keyboard.type("for a partner", "/join lab", "typed later")
    server.expect("/join lab")
    server.send("#matched_to_bob", "#no_such_room_lab")
    alice.screen.expect("You are now chatting with bob", "There is no room #lab")
    server.expect("for a partner", "typed later")
    assert alice.screen.prompt == "alice → bob> "
    server.quit(alice)


def test_a_join_typed_quickly_after_a_bad_create_takes_the_next_line_to_the_room(server: ChatServer) -> None:
    """§6, §5.10, with a real server: `/create bad_name`, `/join ROOM` and a line typed at once; the line
    reaches the room, whatever moment the answers arrive."""
    for run in range(5):
        room = "lab-%d" % run
        (dave,) = in_room(server.port, room, "dave%d" % run)
        alice = session(server.port, "alice%d" % run)
        alice.screen.expect("Waiting for a partner")
        alice.keyboard.type("/create bad_name", "/join " + room, "hello room")
        dave.expect("#entered_%s_alice%d" % (room, run), "#in_%s_alice%d hello room" % (room, run))
        alice.screen.expect("That is not a room name", "You are in #" + room)
        alice_quits(alice, dave, notice="#exited_%s_alice%d" % (room, run))


@pytest.mark.parametrize(
    "line, phase, owed",
    [
        ("/who", Phase.WAITING, True),
        ("/join lab", Phase.CHATTING, True),
        ("/leave", Phase.WAITING, True),  # #left_, or #not_in_room
        ("/next", Phase.IN_ROOM, True),  # #invalid_command
        ("/next", Phase.WAITING, False),  # #wait, which also comes unasked
        ("/quit", Phase.CHATTING, False),  # the close
        ("hello", Phase.CHATTING, False),  # relayed: no answer
        ("#hello", Phase.IN_ROOM, True),  # #invalid_message
        ("x" * 2001, Phase.CHATTING, True),  # over the limit: #invalid_message
        ("alice", Phase.NICKNAME, False),  # a nickname has its own wait
    ],
)
def test_the_lines_owed_one_answer(line: str, phase: Phase, owed: bool) -> None:
    """§5, §6: which lines the server answers with exactly one notice, which the client counts."""
    assert client.owes_an_answer(line, phase) is owed
