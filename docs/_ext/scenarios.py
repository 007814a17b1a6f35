"""The scenarios that the protocol chapters draw, one function each.

Each scenario is a short script that a student could type with a few
terminals and ``nc``.  It runs against a fresh real server, with the
default limits unless ``LIMITS`` names others; the lines it expects are
checked as they arrive (see ``wire.py``), and what it recorded becomes a
sequence diagram.  The spec sections each one shows are in its docstring.
"""

import re
from typing import Callable, Dict, List, Tuple

from wire import Party, ScenarioError, Transcript, running_server, wait_until_all_left

from mechat.protocol import stored_time
from mechat.server import ChatServer
from tests.peers import Peer

Script = Callable[[Transcript, ChatServer], None]


def matched_after_a_wait(t: Transcript, server: ChatServer) -> None:
    """§7.1, §7.2: the first client waits, even if it talks; the second is matched at once."""
    alice = waiting(t, server, "alice")
    alice.send("anyone there?")
    alice.expect("#wait")
    bob = Party(t, "bob", server.port)
    bob.send("bob")
    bob.expect("#matched_to_alice")
    alice.expect("#matched_to_bob")
    alice.send("hi bob")
    bob.expect("hi bob")


def retry_after_invalid_nickname(t: Transcript, server: ChatServer) -> None:
    """§3, §5.3, §7.1: a refused nickname or command leaves the client free to try again."""
    alice = Party(t, "alice", server.port)
    alice.send("alice smith")
    alice.expect("#invalid_nickname")
    alice.send("/alice")
    alice.expect("#invalid_command")
    alice.send("/nickname alice")
    alice.expect("#invalid_command")
    alice.send("alice")
    alice.expect("#wait")


def chatting_with_nickname(t: Transcript, server: ChatServer) -> None:
    """§5.2, §7.3: lines are relayed both ways; a rename is told to both sides."""
    alice, bob = pair(t, server)
    alice.send("hi bob")
    bob.expect("hi bob")
    bob.send("/nickname robert")
    bob.expect("#nickname_changed_robert")
    alice.expect("#partner_renamed_robert")
    alice.send("hello robert")
    bob.expect("hello robert")
    bob.send("/Nickname rob")
    bob.expect("#invalid_command")


def ending_with_quit(t: Transcript, server: ChatServer) -> None:
    """§5.1, §8: the quitter gets no reply, only the close; the partner gets #user_quit."""
    alice, bob = pair(t, server)
    alice.send("/quit now")
    alice.expect("#invalid_command")
    alice.send("/quit")
    bob.expect("#user_quit")
    bob.expect_closed()
    alice.expect_closed()


def ending_by_disconnect(t: Transcript, server: ChatServer) -> None:
    """§8: a reset (or end of file) ends the session just as /quit does."""
    alice, bob = pair(t, server)
    bob.send("see you")
    alice.expect("see you")
    bob.reset()
    alice.expect("#user_quit")
    alice.expect_closed()


def ghost_waiter(t: Transcript, server: ChatServer) -> None:
    """§7.2, §8: a waiter that leaves is withdrawn at once and never handed out."""
    alice = waiting(t, server, "alice")
    alice.close()
    wait_until_all_left(server)
    t.note("end of file: alice leaves the queue")
    bob = waiting(t, server, "bob")
    carol = Party(t, "carol", server.port)
    carol.send("carol")
    carol.expect("#matched_to_bob")
    bob.expect("#matched_to_carol")


# -- Protocol 2: named users (§3.1, §5.4-§5.7); drawn by the pages in named-users/ ------


def nickname_taken(t: Transcript, server: ChatServer) -> None:
    """§3.1: a name held in any case is refused; your own may change case; a leaver's is free at once."""
    alice = Party(t, "alice", server.port)
    alice.send("Alice")
    alice.expect("#wait")
    bob = Party(t, "bob", server.port)
    bob.send("ALICE")
    bob.expect("#nickname_taken")
    bob.send("bob")
    bob.expect("#matched_to_Alice")
    alice.expect("#matched_to_bob")
    bob.send("/nickname alice")
    bob.expect("#nickname_taken")
    bob.send("/nickname Bob")
    bob.expect("#nickname_changed_Bob")
    alice.expect("#partner_renamed_Bob")
    alice.send("/quit")
    bob.expect("#user_quit")
    bob.expect_closed()
    alice.expect_closed()
    newcomer = Party(t, "newcomer", server.port)
    newcomer.send("alice")
    newcomer.expect("#wait")


def who_is_online(t: Transcript, server: ChatServer) -> None:
    """§5.4, §6.1: one sorted list, counted, of every named client; a pattern matches in any case."""
    _, bob = pair(t, server)  # alice is only there to be listed
    carol = Party(t, "carol", server.port)
    carol.send("Carol")
    carol.expect("#wait")
    carol.send("/who")
    carol.expect("#online_3 alice bob Carol")
    carol.send("/who *O*")
    carol.expect("#online_2 bob Carol")
    bob.send("/who ?o?")
    bob.expect("#online_1 bob")
    bob.send("/who dave")
    bob.expect("#online_0")
    bob.send("/who a b")
    bob.expect("#invalid_command")


def direct_message(t: Transcript, server: ChatServer) -> None:
    """§5.5: a direct message reaches its one recipient, wherever it is; the sender gets a receipt."""
    alice, bob = pair(t, server)
    carol = waiting(t, server, "carol")
    carol.send("/msg ALICE #psst /it's carol")
    alice.expect("#from_carol #psst /it's carol")
    carol.expect("#sent_to_alice")
    alice.send("/msg carol hi carol")
    carol.expect("#from_alice hi carol")
    alice.expect("#sent_to_carol")
    alice.send("back to you, bob")
    bob.expect("back to you, bob")
    carol.send("/msg dave hello")
    carol.expect("#no_such_user_dave")
    carol.send("/msg bob")
    carol.expect("#invalid_command")


def broadcast_and_its_rate(t: Transcript, server: ChatServer) -> None:
    """§5.6, §9.7: /all reaches every other named client, not its sender; one more too soon is refused."""
    alice, bob = pair(t, server)
    carol = waiting(t, server, "carol")
    dave = Party(t, "dave", server.port)
    dave.send("dave smith")
    dave.expect("#invalid_nickname")  # connected, and not yet named
    bob.send("/all hello, everyone")
    alice.expect("#all_from_bob hello, everyone")
    carol.expect("#all_from_bob hello, everyone")
    bob.expect("#broadcast_2")
    bob.send("/all again!")
    bob.expect("#rate_limited")
    alice.send("/all hi all")
    bob.expect("#all_from_alice hi all")
    carol.expect("#all_from_alice hi all")
    alice.expect("#broadcast_2")
    dave.send("dave")
    dave.expect("#matched_to_carol")
    carol.expect("#matched_to_dave")


def next_partner(t: Transcript, server: ChatServer) -> None:
    """§5.7: /next ends the chat as /quit would for the partner, and queues the sender again."""
    alice, bob = pair(t, server)
    carol = waiting(t, server, "carol")
    alice.send("/next")
    bob.expect("#user_quit")
    bob.expect_closed()
    alice.expect("#matched_to_carol")
    carol.expect("#matched_to_alice")
    alice.send("/next")
    carol.expect("#user_quit")
    carol.expect_closed()
    alice.expect("#wait")
    alice.send("/next")
    alice.expect("#wait")
    dave = Party(t, "dave", server.port)
    dave.send("dave")
    dave.expect("#matched_to_alice")
    alice.expect("#matched_to_dave")


# -- Protocol 2: rooms (§3.2, §5.8-§5.12, §7.6, §9.8, §9.9); drawn by the pages in rooms/ ----


def creating_and_listing_rooms(t: Transcript, server: ChatServer) -> None:
    """§3.2, §5.8, §5.9: a room is made as spelled, found in any case, and listed sorted; nobody joins it."""
    alice = waiting(t, server, "alice")
    alice.send("/create Lab-3")
    alice.expect("#room_created_Lab-3")
    alice.send("/create LAB-3")
    alice.expect("#room_exists_Lab-3")
    alice.send("/create lab_3")
    alice.expect("#invalid_room")
    alice.send("/create help")
    alice.expect("#room_created_help")
    alice.send("/rooms")
    alice.expect("#rooms_2 help Lab-3")
    alice.send("/rooms l*")
    alice.expect("#rooms_1 Lab-3")
    alice.send("/rooms maths")
    alice.expect("#rooms_0")
    bob = Party(t, "bob", server.port)
    bob.send("bob")
    bob.expect("#matched_to_alice")  # alice made two rooms, and is still the one waiting
    alice.expect("#matched_to_bob")


def joining_a_room(t: Transcript, server: ChatServer) -> None:
    """§5.10: /join leaves the queue, a partner or a room, and every member hears who came and went."""
    carol = waiting(t, server, "carol")
    carol.send("/create lab3")
    carol.expect("#room_created_lab3")
    carol.send("/join lab3")
    carol.expect("#joined_lab3")
    alice, bob = pair(t, server)
    alice.send("/join LAB3")
    alice.expect("#joined_lab3")
    carol.expect("#entered_lab3_alice")
    bob.expect("#user_quit")
    bob.expect_closed()
    alice.send("/join lab9")
    alice.expect("#no_such_room_lab9")
    alice.send("/join lab3")
    alice.expect("#joined_lab3")
    carol.send("/create help")
    carol.expect("#room_created_help")
    carol.send("/join help")
    carol.expect("#joined_help")
    alice.expect("#exited_lab3_carol")
    alice.send("/join help")
    alice.expect("#joined_help")
    carol.expect("#entered_help_alice")


def talking_in_a_room(t: Transcript, server: ChatServer) -> None:
    """§7.6, §5.11: a line reaches every other member; /members lists them; a rename is told to all."""
    alice, bob, carol = room_of(t, server, "lab3", "alice", "bob", "carol")
    alice.send("hi both")
    each_expects("#in_lab3_alice hi both", bob, carol)
    bob.send("/members")
    bob.expect("#members_3 alice bob carol")
    carol.send("/nickname Caro")
    carol.expect("#nickname_changed_Caro")
    each_expects("#renamed_lab3_carol Caro", alice, bob)
    carol.send("hello again")
    each_expects("#in_lab3_Caro hello again", alice, bob)
    alice.send("#lab3")
    alice.expect("#invalid_message")
    alice.send("/next")
    alice.expect("#invalid_command")


def member_resets(t: Transcript, server: ChatServer) -> None:
    """§7.6, §8: a member that resets mid-conversation is gone for the others, told in their one order."""
    alice, bob, carol = room_of(t, server, "lab3", "alice", "bob", "carol")
    alice.send("who has the slides?")
    each_expects("#in_lab3_alice who has the slides?", bob, carol)
    carol.send("I do, one moment")
    each_expects("#in_lab3_carol I do, one moment", alice, bob)
    carol.reset()
    each_expects("#exited_lab3_carol", alice, bob)
    bob.send("carol has gone")
    alice.expect("#in_lab3_bob carol has gone")
    alice.send("/members")
    alice.expect("#members_2 alice bob")


def leaving_a_room(t: Transcript, server: ChatServer) -> None:
    """§5.12: /leave tells the members, then pairs the leaver as a newcomer; outside a room it is refused."""
    alice, bob = room_of(t, server, "lab3", "alice", "bob")
    carol = waiting(t, server, "carol")
    bob.send("/leave")
    bob.expect("#left_lab3")
    alice.expect("#exited_lab3_bob")
    bob.expect("#matched_to_carol")
    carol.expect("#matched_to_bob")
    alice.send("/leave")
    alice.expect("#left_lab3")
    alice.expect("#wait")
    alice.send("/leave")
    alice.expect("#not_in_room")
    alice.send("/members")
    alice.expect("#not_in_room")
    alice.send("/members lab3")
    alice.expect("#invalid_command")


def room_limits(t: Transcript, server: ChatServer) -> None:
    """§9.8, §9.9: past the room limit /create is refused; a full room refuses /join, and nothing changes."""
    alice, _ = room_of(t, server, "lab3", "alice", "bob")  # bob is there to fill the room
    alice.send("/create help")
    alice.expect("#too_many_rooms")
    carol = waiting(t, server, "carol")
    carol.send("/join LAB3")
    carol.expect("#room_full_lab3")
    dave = Party(t, "dave", server.port)
    dave.send("dave")
    dave.expect("#matched_to_carol")  # carol never left the queue
    carol.expect("#matched_to_dave")


# -- Protocol 2: accounts (§5.13-§5.16, §7.7, §9.11); drawn by the pages in accounts/ --------

#: The password of the accounts in these scenarios: 8 to 64 visible ASCII characters (§3.3).
PASSWORD = "s3cret-pw"

#: What a diagram shows for the TIME of a ``#stored_from_`` line, which is different at every run.
TIME = "TIME"


def registering_and_logging_in(t: Transcript, server: ChatServer) -> None:
    """§5.13, §5.14, §5.2, §3.1: an account keeps its name while away; one reply hides why a login failed."""
    laptop = Party(t, "laptop", server.port)  # alice's laptop, and later her phone
    laptop.send("/register alice secret")
    laptop.expect("#invalid_password")
    laptop.send("/register alice %s" % PASSWORD)
    laptop.expect("#registered_alice")
    laptop.expect("#wait")
    laptop.send("/nickname ally")
    laptop.expect("#nickname_locked")
    laptop.send("/quit")
    laptop.expect_closed()
    mallory = Party(t, "mallory", server.port)
    mallory.send("Alice")
    mallory.expect("#nickname_taken")  # the account's name, even while it is away
    mallory.send("/login alice password1")
    mallory.expect("#login_failed")  # a wrong password
    mallory.send("/login carol %s" % PASSWORD)
    mallory.expect("#login_failed")  # no such account
    mallory.send("/login alice pw")
    mallory.expect("#login_failed")  # no password at all
    phone = Party(t, "phone", server.port)
    phone.send("/login ALICE %s" % PASSWORD)
    phone.expect("#logged_in_alice")
    phone.expect("#wait")


def session_replaced(t: Transcript, server: ChatServer) -> None:
    """§5.14, §8: a login to an account that is connected ends the older session, as a quit would."""
    laptop = Party(t, "laptop", server.port)  # alice's laptop, and then her phone
    laptop.send("/register alice %s" % PASSWORD)
    laptop.expect("#registered_alice")
    laptop.expect("#wait")
    bob = Party(t, "bob", server.port)
    bob.send("bob")
    bob.expect("#matched_to_alice")
    laptop.expect("#matched_to_bob")
    phone = Party(t, "phone", server.port)
    phone.send("/login alice %s" % PASSWORD)
    laptop.expect("#session_replaced")
    laptop.expect_closed()
    bob.expect("#user_quit")
    bob.expect_closed()
    phone.expect("#logged_in_alice")
    phone.expect("#wait")


def stored_while_away(t: Transcript, server: ChatServer) -> None:
    """§5.5, §5.14, §7.7: a /msg to an account that is away is kept, sent at its next login, then deleted."""
    laptop = Party(t, "laptop", server.port)  # alice's laptop, and later her phone
    laptop.send("/register alice %s" % PASSWORD)
    laptop.expect("#registered_alice")
    laptop.expect("#wait")
    laptop.send("/quit")
    laptop.expect_closed()
    bob = waiting(t, server, "bob")
    bob.send("/msg Alice are you there?")
    bob.expect("#stored_for_alice")
    bob.send("/quit")
    bob.expect_closed()
    phone = Party(t, "phone", server.port)
    phone.send("/login alice %s" % PASSWORD)
    phone.expect("#logged_in_alice")
    expect_stored_from(phone, "bob", "are you there?")
    phone.expect("#wait")
    phone.send("/quit")
    phone.expect_closed()
    if server.store.stored_messages("alice"):  # the server closes only after it has deleted them
        raise ScenarioError("alice quit after her stored message, and the store still holds it")
    t.note("alice had it: deleted from the store")


def waiting(t: Transcript, server: ChatServer, nickname: str) -> Party:
    """Connect a client that names itself ``nickname`` and see it wait (§7.1); its label is its name."""
    party = Party(t, nickname, server.port)
    party.send(nickname)
    party.expect("#wait")
    return party


def pair(t: Transcript, server: ChatServer) -> Tuple[Party, Party]:
    """Connect alice and bob and see them matched, alice after a #wait."""
    alice = waiting(t, server, "alice")
    bob = Party(t, "bob", server.port)
    bob.send("bob")
    bob.expect("#matched_to_alice")
    alice.expect("#matched_to_bob")
    return alice, bob


def each_expects(line: str, *parties: Party) -> None:
    """See ``line`` reach each of ``parties``, in turn: a line to a room, or a notice to all its members."""
    for party in parties:
        party.expect(line)


def room_of(t: Transcript, server: ChatServer, room: str, *nicknames: str) -> List[Party]:
    """Connect a client for each nickname and put each in ``room``, which the first creates (§5.8, §5.10).

    Each joins before the next one arrives, so nobody is ever matched.
    """
    members: List[Party] = []
    for nickname in nicknames:
        member = waiting(t, server, nickname)
        if not members:
            member.send("/create %s" % room)
            member.expect("#room_created_%s" % room)
        member.send("/join %s" % room)
        member.expect("#joined_%s" % room)
        each_expects("#entered_%s_%s" % (room, nickname), *members)
        members.append(member)
    return members


def expect_stored_from(party: Party, sender: str, text: str) -> None:
    """See a stored message arrive (§5.14); record its TIME as ``TIME``, the same at every run."""
    line = party.read_line().decode("utf-8")
    pattern = "#stored_from_%s (%s) %s" % (re.escape(sender), stored_time, re.escape(text))
    match = re.fullmatch(pattern, line)
    if match is None:
        raise ScenarioError("%s expected %r stored by %s, and got %r" % (party.name, text, sender, line))
    steps = party.transcript.steps  # the line just read is the last step
    steps[-1] = steps[-1]._replace(text=line[: match.start(1)] + TIME + line[match.end(1) :])


#: Every scenario the docs draw, by the name of its diagram file.
SCENARIOS: Dict[str, Script] = {
    "matched-after-a-wait": matched_after_a_wait,
    "retry-after-invalid-nickname": retry_after_invalid_nickname,
    "chatting-with-nickname": chatting_with_nickname,
    "ending-with-quit": ending_with_quit,
    "ending-by-disconnect": ending_by_disconnect,
    "ghost-waiter": ghost_waiter,
    "nickname-taken": nickname_taken,
    "who-is-online": who_is_online,
    "direct-message": direct_message,
    "broadcast-and-its-rate": broadcast_and_its_rate,
    "next-partner": next_partner,
    "creating-and-listing-rooms": creating_and_listing_rooms,
    "joining-a-room": joining_a_room,
    "talking-in-a-room": talking_in_a_room,
    "member-resets": member_resets,
    "leaving-a-room": leaving_a_room,
    "room-limits": room_limits,
    "registering-and-logging-in": registering_and_logging_in,
    "session-replaced": session_replaced,
    "stored-while-away": stored_while_away,
}

#: The server limits a scenario runs with, where the defaults would not do.
LIMITS: Dict[Script, Dict[str, float]] = {
    # One /all per 100 s (--all-rate 0.01): the second /all is refused
    # however slowly the build machine runs, as in the spec's example (§11).
    broadcast_and_its_rate: {"all_rate": 0.01},
    # One room, of two members at most (--max-rooms 1 --max-members 2).
    room_limits: {"max_rooms": 1, "max_members": 2},
}


def record(script: Script) -> Transcript:
    """Run one scenario against a fresh server and return what went over the wire."""
    transcript = Transcript()
    with running_server(**LIMITS.get(script, {})) as server:
        try:
            script(transcript, server)
        finally:
            for party in transcript.parties:
                party.sock.close()  # not Party.close(): this is cleanup, not part of the story
                Peer.opened.remove(party)
    return transcript
