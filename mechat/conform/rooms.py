"""The checks of protocol 2's rooms (feature ``rooms``): /create, /rooms, /join, /members, /leave.

A room is a place a client can be instead of the queue or a pair (§7.6):
it is made by name (§3.2, §5.8), listed (§5.9), joined from anywhere
(§5.10), and left for pairing again (§5.12); its members hear each other's
lines, comings and goings, all in one order.  These checks act out each
rule with the habits of :mod:`~mechat.conform.directory`: a random tag in
every nickname, and now in every room name, so that a check finds only its
own clients and rooms on a server other people use; markers, never
waiting, to show that nothing else came.  In a room the marker is
:func:`still_together`: each member says one line in turn, and every
other member's very next line must be it, so a line echoed to its sender,
or a notice nobody asked for, shows up first.

Rooms outlive the checks that make them: the spec keeps a room until the
server stops, empty or not.  So a run leaves its rooms behind, about
forty of them (:data:`ROOMS_A_RUN`), and a server with the default limit
of 1000 rooms (§9.8) takes some twenty-five runs before it must be
restarted.  For the same reason the checks of the limits themselves are a
feature of their own, ``room-limits``, graded only when asked for:

* ``too-many-rooms`` (§9.8) makes rooms until the server refuses one, and
  so leaves it full: no room can be made there until it restarts.
* ``room-full`` (§9.9) brings members into one room until the server
  refuses one.

Neither is told the server's limits (the kit knows only the wire), so each
finds its limit by reaching it, and stops with a FAIL one past the
default (1000 rooms, 500 members).  Against a server started with small
limits (``mechat serve --max-rooms 5 --max-members 3``) they take a
moment; against the defaults, a few seconds.  Run them last, then
restart the server.

``room-full`` needs a room: one of its own, or, on a server that can make
no more, an empty one that ``too-many-rooms`` left.  With neither (rooms
used up by earlier runs, or a server that allows none) it has nothing to
fill, which is no fault of the server, so it is skipped
(:class:`~mechat.conform.runner.CannotCheck`) and told to restart it.
At the default it holds some five hundred connections open at once
(:data:`MOST_CONNECTIONS`): more than some systems let one process open
(macOS allows 256 unless told otherwise), and a kit out of file
descriptors skips the check, saying so, rather than fail the server.
"""

from functools import partial
from typing import Callable, Dict, Iterable, List, NamedTuple, Sequence, Tuple

from mechat.conform.clients import MATCHED_TO, Client, Exchange, Failure, Session, show
from mechat.conform.core import INVALID_MESSAGE, marker, refused_once, still_chatting
from mechat.conform.diagnose import CLOSED, USER_QUIT, WAIT, Reply, lacks_command, plural, wire
from mechat.conform.directory import (
    INVALID_COMMAND,
    LIST_SHOWN,
    Listing,
    Names,
    add_before_nickname,
    broadcast,
    direct,
    expect_recipients,
    nick,
    stops_early,
    too_long,
    unsorted,
)
from mechat.conform.registry import Check, CheckFunction, Stage, add, checker
from mechat.conform.runner import CannotCheck
from mechat.protocol import (
    COUNT_RE,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_ROOMS,
    LF,
    MAX_ROOM_CHARS,
    SP,
    Notice,
    list_line,
)

FEATURE = "rooms"
LIMITS_FEATURE = "room-limits"
check = checker(FEATURE)
limit_check = checker(LIMITS_FEATURE)

#: Rooms that one run of the feature ``rooms`` leaves on the server, at most.
ROOMS_A_RUN = 40

#: Lines each of two members sends, a write each, in the check of the one order (§7.6).
ORDER_LINES = 20

#: The start of every room that ``too-many-rooms`` makes, so ``room-full`` can find one (§9.8).
FILLER = "fill"

#: Connections the kit holds open at once, at most: ``room-full``'s members at the default
#: limit, the one it refuses, and that one's partner (§9.9).
MOST_CONNECTIONS = DEFAULT_MAX_MEMBERS + 2

INVALID_ROOM = wire(Notice.INVALID_ROOM)
NOT_IN_ROOM = wire(Notice.NOT_IN_ROOM)
TOO_MANY_ROOMS = wire(Notice.TOO_MANY_ROOMS)


def add_all(rows: Iterable[Tuple[str, str, str, CheckFunction, Stage]]) -> None:
    """Register a check of rooms for each row of a table: its id, section, title, function and needs."""
    for name, section, title, run, needs in rows:
        add(Check(name, FEATURE, section, title, run, needs))


def notice(name: Notice, room: str) -> bytes:
    """Return a notice whose argument is ``room``, as in ``#joined_ROOM`` (§6)."""
    return wire(name, room.encode("ascii"))


def about(name: Notice, room: str, member: Client) -> bytes:
    """Return a notice about one member, as in ``#entered_ROOM_NICK`` (§6)."""
    return wire(name, f"{room}_{member.name}".encode("ascii"))


def said(room: str, sender: Client, text: bytes) -> bytes:
    """Return the line that carries ``text`` from ``sender`` to the other members (§7.6)."""
    return wire(Notice.IN, f"{room}_{sender.name}".encode("ascii")) + SP + text


def command(verb: bytes, room: str) -> bytes:
    """Return a room command, as in ``/join ROOM``."""
    return verb + SP + room.encode("ascii")


# -- Bringing members together ------------------------------------------------------


def create(client: Client, room: str) -> Exchange:
    """Make ``room``; the creator is answered with the name as it wrote it (§5.8)."""
    return client.ask(command(b"/create", room), notice(Notice.ROOM_CREATED, room))


def enter(client: Client, room: str, members: Sequence[Client]) -> Exchange:
    """Join ``room``: the joiner gets #joined_, each member already there #entered_ (§5.10)."""
    exchange = client.ask(command(b"/join", room), notice(Notice.JOINED, room))
    for member in members:
        member.expect(about(Notice.ENTERED, room, client))
    return exchange


def gather(session: Session, names: Names, room: str, *roles: str) -> List[Client]:
    """Name a client for each of ``roles``; the first makes ``room``, and one by one all join it."""
    members: List[Client] = []
    for role in roles:
        client = session.join(names.of(role))
        if not members:
            create(client, room)
        enter(client, room, members)
        members.append(client)
    return members


def in_a_room(session: Session, *roles: str) -> Tuple[Names, str, List[Client]]:
    """Gather a client for each of ``roles`` in a room of their own, 'qzkfw-Room'; return the names too."""
    names = Names()
    room = names.of("Room")
    return names, room, gather(session, names, room, *roles)


def still_together(room: str, members: Sequence[Client]) -> Exchange:
    """Show that ``members`` are all in ``room`` and that nothing else was sent to them (§7.6).

    Each member in turn says a marker, and it must be every other
    member's very next line; the sender hears nothing, so a line echoed to
    it shows up when it next reads.
    """
    for sender in members:
        sender.send(marker(sender))
        for other in members:
            if other is not sender:
                exchange = other.expect(said(room, sender, marker(sender)))
    return exchange


def leaves(client: Client, room: str, then: bytes, members: Sequence[Client]) -> Exchange:
    """Send /leave: #left_ROOM, then ``then`` (#wait or a match); each member gets #exited_ (§5.12)."""
    exchange = client.ask(b"/leave", notice(Notice.LEFT, room))
    client.expect(then)
    for member in members:
        member.expect(about(Notice.EXITED, room, client))
    return exchange


# -- Lists (§5.9, §5.11, §6.1) ------------------------------------------------------


class ListRule(NamedTuple):
    """What a list of rooms or of members holds, and where its rules are."""

    section: str  # where the list is defined
    noun: str  # what it lists
    holds: str  # what it should count, with {} for the number and the noun
    stranger: str  # why a name that should not be there is wrong


LISTS: Dict[Notice, ListRule] = {
    Notice.ROOMS: ListRule("§5.9", "room", "the pattern matches {}", "it does not match the pattern"),
    Notice.MEMBERS: ListRule(
        "§5.11", "member", "the room has {}, the asker among them", "it is not a member of the room"
    ),
}


def split_list(got: Reply, name: Notice, mine: Sequence[str], only_mine: bool) -> Listing:
    """Split a list line into its count and names; raise ValueError if it is not one (§6.1)."""
    prefix = wire(name)
    if not (isinstance(got, bytes) and got.startswith(prefix)):
        raise ValueError(got)
    count, space, names = got[len(prefix) :].decode("utf-8", "replace").partition(" ")
    if not COUNT_RE.fullmatch(count):
        raise ValueError(got)
    return Listing(int(count), names.split(" ") if space else [], len(got), mine, only_mine)


def list_problems(got: Reply, name: Notice, mine: Sequence[str], only_mine: bool) -> List[str]:
    """Say every way ``got`` breaks the rules of a ``name`` list; a line that is no list gets one sentence."""
    rule = LISTS[name]
    try:
        listing = split_list(got, name, mine, only_mine)
    except ValueError:
        return [f"it is not a {name.value}N list ({rule.section})"]
    problems = [miscounted(listing, name), too_long(listing), unsorted(listing), stops_early(listing)]
    strangers = [item for item in listing.names if item not in mine]
    if only_mine and strangers:
        problems.append(f"'{strangers[0]}' is listed, but {rule.stranger} ({rule.section})")
    missing = [item for item in sorted(mine, key=str.lower) if item not in listing.names]
    cut_after = listing.names[-1].lower() if listing.names else ""
    if missing and (len(listing.names) >= listing.counted or missing[0].lower() < cut_after):
        problems.append(f"'{missing[0]}' is not listed ({rule.section})")
    return [problem for problem in problems if problem]


def miscounted(listing: Listing, name: Notice) -> str:
    """The count is not the number of every match (§6.1)."""
    counted, matches, rule = listing.counted, len(listing.mine), LISTS[name]
    if listing.only_mine and counted != matches:
        holds = rule.holds.format(plural(matches, rule.noun))
        return f"the count is {counted}, but {holds}: count every one ({rule.section}, §6.1)"
    if counted < matches or counted < len(listing.names):
        return f"the count is {counted}, fewer than the names it must count (§6.1)"
    return ""


def expect_list(client: Client, name: Notice, mine: Sequence[str], only_mine: bool = True) -> Exchange:
    """Read a list; expect exactly the list of ``mine``, or, with others' rooms too, one that holds them."""
    got = client.read_line()
    wanted = list_line(name, list(mine)).rstrip(LF)
    if only_mine:
        expected = f"{client.name} gets {show(wanted, LIST_SHOWN)}"
    else:
        expected = f"{client.name} gets {name.value}N, N >= {len(mine)}, with {', '.join(mine)} unless cut"
    problems = list_problems(got, name, mine, only_mine)
    if isinstance(got, bytes) and lacks_command(client.last_write, got):
        problems = [lacks_command(client.last_write, got)]
    exchange = Exchange(client.session.last_sent, expected, show(got, LIST_SHOWN))
    if (only_mine and got != wanted) or problems:
        diagnosis = (
            "; ".join(problems) or f"it differs from the list the spec asks for ({LISTS[name].section})"
        )
        raise Failure(exchange._replace(diagnosis=diagnosis))
    return exchange


# -- §3.2 Room names --------------------------------------------------------------------


def longest_room(names: Names) -> str:
    """Return a room name of exactly 30 characters: the tag, then letters and digits in both cases."""
    return names.of("Az09" * MAX_ROOM_CHARS)[:MAX_ROOM_CHARS]


@check(
    "room-name-at-limit", "§3.2", "a room name of 30 letters, digits and '-' is made and joined", Stage.WAIT
)
def room_name_at_limit(session: Session) -> Exchange:
    """Take the longest room name, mixed case and all, and answer with it as written."""
    names = Names()
    room = longest_room(names)
    solo = session.join(names.of("solo"))
    exchange = create(solo, room)
    enter(solo, room, [])
    return exchange


def refused_in_chat(line: bytes, reply: bytes, session: Session) -> Exchange:
    """Refuse a line from a chat once with ``reply``; nothing of it reaches the partner."""
    names = Names()
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    alice.send(line.replace(b"{tag}", names.tag.encode("ascii")))
    return refused_once(alice, bob, reply)


BAD_ROOMS = [
    ("create-no-room", "§3.2", "'/create' alone", b"/create"),
    ("create-empty-room", "§3.2", "'/create ' with an empty name", b"/create "),
    ("create-room-too-long", "§3.2", "'/create' with a 31-character name", b"/create " + b"r" * 31),
    ("create-room-underscore", "§3.2", "'/create' with '_' in the name", b"/create {tag}_room"),
    ("join-no-room", "§3.2", "'/join' alone", b"/join"),
    ("join-room-dot", "§3.2", "'/join' with '.' in the name", b"/join {tag}.room"),
]
add_all(
    (
        name,
        section,
        f"{what} gets #invalid_room and reaches nobody",
        partial(refused_in_chat, line, INVALID_ROOM),
        Stage.RELAY,
    )
    for name, section, what, line in BAD_ROOMS
)


# -- §5.8 /create ---------------------------------------------------------------------------


@check(
    "create-room",
    "§5.8",
    "/create gets #room_created_ROOM as written, and the creator still waits",
    Stage.PAIR,
)
def create_room(session: Session) -> Exchange:
    """Make a room from the queue; the creator does not join it, so a newcomer still meets it."""
    names = Names()
    solo = session.join(names.of("solo"))
    exchange = create(solo, names.of("Lobby"))
    session.meet(solo, names.of("newcomer"))
    return exchange


@check("create-exists", "§5.8", "/create of a room that exists gets #room_exists_ROOM once, from a chat")
def create_exists(session: Session) -> Exchange:
    """Refuse a second room of one name; the chat it came from goes on, and hears nothing of it."""
    names = Names()
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    room = names.of("Lobby")
    create(alice, room)
    bob.send(command(b"/create", room))
    return refused_once(bob, alice, notice(Notice.ROOM_EXISTS, room))


@check(
    "create-exists-any-case",
    "§5.8",
    "/create of a room in another case gets #room_exists_ROOM, spelled as its creator did",
    Stage.WAIT,
)
def create_exists_any_case(session: Session) -> Exchange:
    """Find 'QZKFW-lOBBY' as the room 'qzkfw-Lobby' (§3.2), and name it as it was made.

    'qzkfw-Lobby' itself is refused first: a server that finds a room only
    as written then fails on the case alone, and is told so.
    """
    names = Names()
    solo = session.join(names.of("solo"))
    room = names.of("Lobby")
    create(solo, room)
    solo.ask(command(b"/create", room), notice(Notice.ROOM_EXISTS, room))
    return solo.ask(command(b"/create", room.swapcase()), notice(Notice.ROOM_EXISTS, room))


@check(
    "create-in-room",
    "§5.8",
    "/create in a room makes the room, and the creator stays where it is",
    Stage.WAIT,
)
def create_in_room(session: Session) -> Exchange:
    """Make a second room from inside a room; the members hear nothing, and all stay together."""
    names, room, (alice, bob) = in_a_room(session, "alice", "Bob")
    exchange = create(alice, names.of("other"))
    still_together(room, [alice, bob])
    return exchange


# -- §5.9 /rooms ------------------------------------------------------------------------------


def make_rooms(session: Session, names: Names, roles: Sequence[str]) -> Tuple[Client, List[str]]:
    """Name a client, and have it make a room for each role, in that order; return it and the rooms."""
    solo = session.join(names.of("solo"))
    rooms = [names.of(role) for role in roles]
    for room in rooms:
        create(solo, room)
    return solo, rooms


@check(
    "rooms-pattern", "§5.9", "/rooms PATTERN counts the rooms that match and lists them sorted", Stage.WAIT
)
def rooms_pattern(session: Session) -> Exchange:
    """Sort as if all were in one case: a, B, c; neither the order they were made nor ASCII order."""
    names = Names()
    solo, rooms = make_rooms(session, names, ["c", "a", "B"])
    solo.send(b"/rooms " + names.pattern())
    return expect_list(solo, Notice.ROOMS, rooms)


@check(
    "rooms-everything", "§5.9", "/rooms alone lists every room, sorted, the asker's own included", Stage.WAIT
)
def rooms_everything(session: Session) -> Exchange:
    """List every room of the server; others' rooms may be there too, so hold the list to its rules."""
    solo, rooms = make_rooms(session, Names(), ["a"])
    solo.send(b"/rooms")
    return expect_list(solo, Notice.ROOMS, rooms, only_mine=False)


@check(
    "rooms-question-mark",
    "§5.9",
    "'?' in a /rooms pattern is one character, and case does not count",
    Stage.WAIT,
)
def rooms_question_mark(session: Session) -> Exchange:
    """Match 'QZKFW-?' with 'qzkfw-a' alone, not with 'qzkfw-ab'."""
    names = Names()
    solo, rooms = make_rooms(session, names, ["a", "ab"])
    solo.send(b"/rooms " + names.tag.upper().encode("ascii") + b"-?")
    return expect_list(solo, Notice.ROOMS, rooms[:1])


@check("rooms-no-match", "§5.9", "/rooms with a pattern no room matches gets #rooms_0", Stage.WAIT)
def rooms_no_match(session: Session) -> Exchange:
    """Answer a pattern that matches no room with a count of 0 and no names."""
    names = Names()
    solo = session.join(names.of("solo"))
    solo.send(b"/rooms " + names.pattern("nowhere*"))
    return expect_list(solo, Notice.ROOMS, [])


# -- §5.10 /join -------------------------------------------------------------------------------


def expect_waiting(session: Session, nickname: str, gone: Client, how: str) -> Exchange:
    """Name a newcomer and expect #wait: ``gone`` left the queue, ``how`` says how (§5.10)."""
    newcomer = session.connect(nickname)
    newcomer.send(nickname.encode("ascii"))
    got = newcomer.read_line()
    if got == WAIT:
        return Exchange(session.last_sent, f"{newcomer.name} gets {show(WAIT)}", show(got))
    exchange = newcomer.judged(WAIT, got)
    if got == MATCHED_TO + nick(gone):
        left = f"{newcomer.name} was matched with {gone.name}, who {how}"
        exchange = exchange._replace(diagnosis=f"{left}: a client in a room is not in the queue (§5.10)")
    raise Failure(exchange)


@check(
    "join-from-queue",
    "§5.10",
    "/join from the queue: #joined_ROOM, #entered_ to the members, out of the queue",
    Stage.WAIT,
)
def join_from_queue(session: Session) -> Exchange:
    """Take a waiter into a room; the next newcomer waits, for the waiter is no longer in the queue."""
    names, room, (member,) = in_a_room(session, "member")
    waiter = session.join(names.of("waiter"))
    exchange = enter(waiter, room, [member])
    expect_waiting(session, names.of("newcomer"), waiter, f"had joined {room}")
    return exchange


@check("join-from-pair", "§5.10", "/join from a chat: the partner gets #user_quit and is closed", Stage.PAIR)
def join_from_pair(session: Session) -> Exchange:
    """End the chat as /quit would for the partner, before the joiner is told #joined_.

    A direct message for the partner, once the joiner is in, must find
    nobody: a closed session's nickname is free at once (§3.1).
    """
    names, room, (member,) = in_a_room(session, "member")
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    exchange = enter(alice, room, [member])
    carol = session.join(names.of("carol"))
    carol.send(b"/msg " + nick(bob) + b" still there?")
    expect_partner_gone(carol, bob, alice)
    bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    return exchange


def expect_partner_gone(asker: Client, partner: Client, joiner: Client) -> Exchange:
    """Expect #no_such_user_ for ``partner``, whom ``joiner`` left for a room (§3.1, §5.10)."""
    expected = wire(Notice.NO_SUCH_USER, nick(partner))
    got = asker.read_line()
    if got == expected:
        return Exchange(asker.session.last_sent, f"{asker.name} gets {show(expected)}", show(got))
    exchange = asker.judged(expected, got)
    if got == wire(Notice.SENT_TO, nick(partner)):
        still = f"{partner.name} was still connected after {joiner.name} joined a room from their chat"
        exchange = exchange._replace(
            diagnosis=f"{still}: the partner is told #user_quit and closed, before the #joined_ (§5.10)"
        )
    raise Failure(exchange)


@check(
    "join-from-room",
    "§5.10",
    "/join from another room: #exited_ to the old room, #entered_ to the new, and no more of the old",
    Stage.WAIT,
)
def join_from_room(session: Session) -> Exchange:
    """Move a member from one room to another in one step; each room hears of it once.

    Then Bob, left behind, says a line in the old room, and the mover
    must not get it (§7.6, rule 4).  Bob's /members, answered after his
    line, shows the server has dealt with it, so a line wrongly sent to
    alice would reach her before the markers of the new room.
    """
    names, old, (alice, bob) = in_a_room(session, "alice", "Bob")
    new = names.of("New")
    (carol,) = gather(session, names, new, "carol")
    exchange = alice.ask(command(b"/join", new), notice(Notice.JOINED, new))
    bob.expect(about(Notice.EXITED, old, alice))
    carol.expect(about(Notice.ENTERED, new, alice))
    bob.send(b"after alice moved", b"/members")
    expect_list(bob, Notice.MEMBERS, [bob.name])
    still_together(new, [alice, carol])
    return exchange


@check(
    "join-again",
    "§5.10",
    "/join of the room one is in gets #joined_ROOM again, and nothing else happens",
    Stage.WAIT,
)
def join_again(session: Session) -> Exchange:
    """Answer a second /join of the same room, in another case, with #joined_ alone: no exit, no entry."""
    _, room, (alice, bob) = in_a_room(session, "alice", "Bob")
    exchange = alice.ask(command(b"/join", room.swapcase()), notice(Notice.JOINED, room))
    still_together(room, [alice, bob])
    return exchange


@check(
    "join-any-case",
    "§5.10",
    "/join ROOM matches in any case, and #joined_ spells ROOM as its creator did",
    Stage.WAIT,
)
def join_any_case(session: Session) -> Exchange:
    """Find 'QZKFW-rOOM' as the room 'qzkfw-Room' (§3.2), and name it as it was made."""
    names, room, (alice,) = in_a_room(session, "alice")
    bob = session.join(names.of("Bob"))
    exchange = bob.ask(command(b"/join", room.swapcase()), notice(Notice.JOINED, room))
    alice.expect(about(Notice.ENTERED, room, bob))
    return exchange


@check(
    "join-no-such-room", "§5.10", "/join of no room gets #no_such_room_ROOM as written, and the chat goes on"
)
def join_no_such_room(session: Session) -> Exchange:
    """Refuse a room nobody made, once, spelling it as the sender did; nothing changes."""
    names = Names()
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    nowhere = names.of("NoWhere")
    alice.send(command(b"/join", nowhere))
    return refused_once(alice, bob, notice(Notice.NO_SUCH_ROOM, nowhere))


# -- §5.11 /members -----------------------------------------------------------------------------


@check(
    "members-list", "§5.11", "/members counts and lists the members, sorted, the asker included", Stage.WAIT
)
def members_list(session: Session) -> Exchange:
    """List carol, alice and Bob, who came in that order, as alice, Bob, carol."""
    *_, (carol, alice, bob) = in_a_room(session, "carol", "alice", "Bob")
    bob.send(b"/members")
    return expect_list(bob, Notice.MEMBERS, [alice.name, bob.name, carol.name])


@check("members-after-exit", "§5.11", "/members no longer lists a member who has gone", Stage.WAIT)
def members_after_exit(session: Session) -> Exchange:
    """Count two once the third has closed its connection, and its #exited_ was told."""
    _, room, (alice, bob, carol) = in_a_room(session, "alice", "Bob", "carol")
    carol.close()
    for member in (alice, bob):
        member.expect(about(Notice.EXITED, room, carol))
    alice.send(b"/members")
    return expect_list(alice, Notice.MEMBERS, [alice.name, bob.name])


def not_in_room_waiting(line: bytes, session: Session) -> Exchange:
    """Answer ``line`` from the queue with #not_in_room; the waiter keeps its place."""
    names = Names()
    solo = session.join(names.of("solo"))
    exchange = solo.ask(line, NOT_IN_ROOM)
    session.meet(solo, names.of("newcomer"))
    return exchange


def not_in_room_chatting(line: bytes, session: Session) -> Exchange:
    """Answer ``line`` from a chat with #not_in_room, once; the partner hears nothing of it."""
    return refused_in_chat(line, NOT_IN_ROOM, session)


NOT_IN_ROOM_CASES: List[Tuple[str, str, bytes, Callable[[bytes, Session], Exchange], Stage, str]] = [
    ("members-waiting", "§5.11", b"/members", not_in_room_waiting, Stage.PAIR, "while waiting"),
    ("members-chatting", "§5.11", b"/members", not_in_room_chatting, Stage.RELAY, "in a chat"),
    ("leave-waiting", "§5.12", b"/leave", not_in_room_waiting, Stage.PAIR, "while waiting"),
    ("leave-chatting", "§5.12", b"/leave", not_in_room_chatting, Stage.RELAY, "in a chat"),
]
add_all(
    (
        name,
        section,
        f"{show(line)} {where} gets #not_in_room, and nothing changes",
        partial(outside, line),
        needs,
    )
    for name, section, line, outside, needs, where in NOT_IN_ROOM_CASES
)


def refused_in_room(line: bytes, reply: bytes, session: Session) -> Exchange:
    """Refuse ``line`` in a room once with ``reply``; the members hear nothing, and stay together."""
    _, room, (alice, bob) = in_a_room(session, "alice", "Bob")
    alice.send(line)
    exchange = alice.expect(reply)
    still_together(room, [alice, bob])
    return exchange


REFUSED_IN_ROOM = [
    ("members-argument", "§5.11", "'/members x' (/members takes nothing)", b"/members x", INVALID_COMMAND),
    ("leave-argument", "§5.12", "'/leave now' (/leave takes nothing)", b"/leave now", INVALID_COMMAND),
    ("rooms-empty-pattern", "§5.9", "'/rooms ' with an empty pattern", b"/rooms ", INVALID_COMMAND),
    ("next-in-room", "§5.7", "'/next' in a room (/leave goes back to pairing)", b"/next", INVALID_COMMAND),
    ("room-hash-line", "§7.6", "a line in a room that starts with '#'", b"#not a message", INVALID_MESSAGE),
]
add_all(
    (
        name,
        section,
        f"{what} gets {reply.decode()}, and the room hears nothing",
        partial(refused_in_room, line, reply),
        Stage.WAIT,
    )
    for name, section, what, line, reply in REFUSED_IN_ROOM
)


# -- §5.12 /leave --------------------------------------------------------------------------------


@check(
    "leave-to-wait",
    "§5.12",
    "/leave: #left_ROOM, #exited_ to the members, then #wait in the queue",
    Stage.PAIR,
)
def leave_to_wait(session: Session) -> Exchange:
    """Go back to pairing with nobody to meet: the leaver waits, and the next newcomer meets it."""
    names, room, (alice, bob) = in_a_room(session, "alice", "Bob")
    exchange = leaves(alice, room, WAIT, [bob])
    session.meet(alice, names.of("newcomer"))
    return exchange


@check("leave-to-match", "§5.12", "/leave with a client waiting: #left_ROOM, then #matched_to_ the waiter")
def leave_to_match(session: Session) -> Exchange:
    """Go back to pairing and meet the waiter at once; the two chat, and the room hears no more."""
    names, room, (alice, bob) = in_a_room(session, "alice", "Bob")
    carol = session.join(names.of("carol"))
    exchange = leaves(alice, room, MATCHED_TO + nick(carol), [bob])
    carol.expect(MATCHED_TO + nick(alice))
    still_chatting(alice, carol)
    return exchange


@check("leave-hears-nothing", "§5.12", "a member who has left gets none of the room's lines", Stage.WAIT)
def leave_hears_nothing(session: Session) -> Exchange:
    """Say a line in the room after alice left; her next line is the #wait for her own, not the room's."""
    _, room, (alice, bob, carol) = in_a_room(session, "alice", "Bob", "carol")
    leaves(alice, room, WAIT, [bob, carol])
    bob.send(b"after alice left")
    carol.expect(said(room, bob, b"after alice left"))
    alice.send(marker(alice))
    got = alice.read_line()
    if got == WAIT:  # §7.2: a line while waiting
        return Exchange(session.last_sent, f"{alice.name} gets {show(WAIT)}", show(got))
    exchange = alice.judged(WAIT, got)
    if isinstance(got, bytes) and got.startswith(said(room, bob, b"")):
        gone = f"{alice.name} got a line of {room} after its #left_"
        exchange = exchange._replace(
            diagnosis=f"{gone}: take a member off the room's list as it leaves (§5.12)"
        )
    raise Failure(exchange)


# -- §5.5, §5.6 Direct messages and /all reach members -----------------------------------------------


@check(
    "room-msg", "§5.5", "/msg reaches a member of a room, and a member's /msg reaches a waiter", Stage.WAIT
)
def room_msg(session: Session) -> Exchange:
    """Deliver direct messages into and out of a room; the other member hears neither."""
    names, room, (alice, bob) = in_a_room(session, "alice", "Bob")
    carol = session.join(names.of("carol"))
    carol.ask(b"/msg " + nick(alice) + b" into the room", wire(Notice.SENT_TO, nick(alice)))
    exchange = alice.expect(direct(carol, b"into the room"))
    alice.ask(b"/msg " + nick(carol) + b" out of the room", wire(Notice.SENT_TO, nick(carol)))
    carol.expect(direct(alice, b"out of the room"))
    still_together(room, [bob, alice])
    return exchange


@check(
    "room-all",
    "§5.6",
    "/all from the queue reaches the members of a room, and nothing else reaches them",
    Stage.WAIT,
)
def room_all(session: Session) -> Exchange:
    """Broadcast to every named client: the members of a room are among them."""
    names, room, (alice, bob) = in_a_room(session, "alice", "Bob")
    carol = session.join(names.of("carol"))
    carol.send(b"/all hello rooms")
    expect_recipients(carol, 2)
    for member in (alice, bob):
        exchange = member.expect(broadcast(carol, b"hello rooms"))
    still_together(room, [alice, bob])
    return exchange


# -- §7.1 Room commands before a nickname -------------------------------------------------------------

add_before_nickname(
    FEATURE,
    [
        ("create-before-nickname", b"/create somewhere"),
        ("rooms-before-nickname", b"/rooms"),
        ("join-before-nickname", b"/join somewhere"),
        ("members-before-nickname", b"/members"),
        ("leave-before-nickname", b"/leave"),
    ],
)


# -- §7.6 The room phase --------------------------------------------------------------------------------


@check(
    "room-line-to-all",
    "§7.6",
    "a line in a room reaches every other member as #in_, and never its sender",
    Stage.WAIT,
)
def room_line_to_all(session: Session) -> Exchange:
    """Relay two lines sent in one write to both other members, in order; the sender's next line is theirs."""
    _, room, (alice, bob, carol) = in_a_room(session, "alice", "Bob", "carol")
    alice.send(b"hello room", b"with # and / inside")
    for member in (bob, carol):
        exchange = member.expect(said(room, alice, b"hello room"))
        member.expect(said(room, alice, b"with # and / inside"))
    still_together(room, [bob, alice, carol])
    return exchange


@check(
    "room-rename",
    "§7.6",
    "/nickname in a room: #nickname_changed_, and #renamed_ROOM_OLD NEW to the others",
    Stage.WAIT,
)
def room_rename(session: Session) -> Exchange:
    """Rename a member; the others are told the old name and the new, and its lines carry the new."""
    names, room, (alice, bob, carol) = in_a_room(session, "alice", "Bob", "carol")
    new = names.of("Robert")
    bob.ask(b"/nickname " + new.encode("ascii"), wire(Notice.NICKNAME_CHANGED, new.encode("ascii")))
    for member in (alice, carol):
        exchange = member.expect(about(Notice.RENAMED, room, bob) + SP + new.encode("ascii"))
    bob.name = new
    still_together(room, [bob, alice, carol])
    return exchange


def exit_by(leave: Callable[[Client], None], session: Session) -> Exchange:
    """End a member's session by ``leave``; the other members get #exited_ and stay together (§7.6)."""
    _, room, (alice, bob, carol) = in_a_room(session, "alice", "Bob", "carol")
    leave(bob)
    exchange = alice.expect(about(Notice.EXITED, room, bob))
    carol.expect(about(Notice.EXITED, room, bob))
    still_together(room, [alice, carol])
    return exchange


def quit_room(member: Client) -> None:
    """Send /quit, and see the connection closed (§5.1)."""
    member.ask(b"/quit", CLOSED)


EXITS: List[Tuple[str, str, Callable[[Client], None]]] = [
    ("room-exit-quit", "/quit", quit_room),
    ("room-exit-close", "a close", Client.close),
    ("room-exit-reset", "a reset", Client.reset),
]
add_all(
    (
        name,
        "§7.6",
        f"a member that leaves by {how}: the others get #exited_ROOM_NICK",
        partial(exit_by, leave),
        Stage.WAIT,
    )
    for name, how, leave in EXITS
)


@check("room-one-order", "§7.6", "two members' lines and an exit reach every member in one order", Stage.WAIT)
def room_one_order(session: Session) -> Exchange:
    """Let alice and Bob say many lines, in turns, while carol quits; everyone sees one order.

    dave, who says nothing, sees every line and the exit: his order is
    the room's.  alice and Bob see all but their own, and must see those in
    dave's order.
    """
    _, room, (alice, bob, carol, dave) = in_a_room(session, "alice", "Bob", "carol", "dave")
    lines = {
        sender: [b"line %02d from %s" % (number, nick(sender)) for number in range(ORDER_LINES)]
        for sender in (alice, bob)
    }
    for number in range(ORDER_LINES):  # a write each, taking turns, so the server's threads race
        alice.send(lines[alice][number])
        bob.send(lines[bob][number])
        if number == ORDER_LINES // 2:
            carol.send(b"/quit")
    everything = [said(room, sender, line) for sender in (alice, bob) for line in lines[sender]]
    everything.append(about(Notice.EXITED, room, carol))
    order = read_in_order(dave, everything)
    for member in (alice, bob):
        heard = [line for line in order if not line.startswith(said(room, member, b""))]
        exchange = expect_order(member, heard, dave)
    return exchange


def read_in_order(reader: Client, lines: Sequence[bytes]) -> List[bytes]:
    """Read as many lines as ``lines`` holds: each of them once, each sender's in the order sent."""
    unread = list(lines)
    order: List[bytes] = []
    while unread:
        got = reader.read_line()
        if not isinstance(got, bytes) or got not in unread:
            raise Failure(reader.judged(unread[0], got))
        owner = got.partition(SP)[0]
        first_of_its_owner = next(line for line in unread if line.partition(SP)[0] == owner)
        if got != first_of_its_owner:
            early = f"{show(got)} came before {show(first_of_its_owner)}"
            diagnosis = f"{early}: a sender's lines reach every member in the order it sent them (§7.6)"
            raise Failure(reader.judged(first_of_its_owner, got)._replace(diagnosis=diagnosis))
        unread.remove(got)
        order.append(got)
    return order


def expect_order(member: Client, heard: Sequence[bytes], witness: Client) -> Exchange:
    """Read ``heard`` from ``member``, line for line: the order ``witness`` saw (§7.6)."""
    for number, line in enumerate(heard):
        got = member.read_line()
        if got != line:
            exchange = member.judged(line, got)
            if isinstance(got, bytes) and got in heard[number:]:
                orders = (
                    f"{member.name} and {witness.name} got the room's lines and exits in different orders"
                )
                exchange = exchange._replace(
                    diagnosis=f"{orders}: every member sees them in one order (§7.6)"
                )
            raise Failure(exchange)
    return Exchange(
        member.session.last_sent,
        f"{member.name} gets its {len(heard)} lines in the order {witness.name} got them",
        f"the same order ({show(heard[0])} first)",
    )


# -- §9.8, §9.9 The room limits (feature room-limits) ------------------------------------------------


def room_count(client: Client) -> int:
    """Ask for every room, and return how many there are (§5.9)."""
    client.send(b"/rooms")
    got = client.read_line()
    try:
        return split_list(got, Notice.ROOMS, [], False).counted
    except ValueError:
        raise Failure(client.judged(wire(Notice.ROOMS) + b"N", got)) from None


def filler(names: Names, number: int) -> str:
    """Return the name of the room ``number`` that ``too-many-rooms`` makes."""
    return f"{FILLER}-{names.tag}-{number}"


@limit_check(
    "too-many-rooms",
    "§9.8",
    "past the server's room limit, /create gets #too_many_rooms and makes nothing",
    Stage.WAIT,
)
def too_many_rooms(session: Session) -> Exchange:
    """Make rooms until one is refused, at most one past the default limit; the refused one does not exist.

    The server is left full of rooms: run this check last.
    """
    names = Names()
    solo = session.join(names.of("solo"))
    before = room_count(solo)
    made = make_until_refused(solo, names, max(DEFAULT_MAX_ROOMS - before, 0) + 1)
    refused = filler(names, made)
    solo.ask(command(b"/join", refused), notice(Notice.NO_SUCH_ROOM, refused))
    exchange = solo.ask(command(b"/create", names.of("again")), TOO_MANY_ROOMS)
    after = room_count(solo)
    if after != before + made:
        expected = f"{solo.name} gets '#rooms_{before + made}': {before} rooms, and {made} made"
        wrong = Exchange(
            session.last_sent, expected, f"'#rooms_{after}'", "a refused /create made a room (§9.8)"
        )
        raise Failure(wrong)
    return exchange


def make_until_refused(solo: Client, names: Names, most: int) -> int:
    """Make rooms until the server refuses one; return how many it made (§9.8)."""
    for number in range(most):
        room = filler(names, number)
        solo.send(command(b"/create", room))
        got = solo.read_line()
        if got == TOO_MANY_ROOMS:
            return number
        if got != notice(Notice.ROOM_CREATED, room):
            raise Failure(solo.judged(notice(Notice.ROOM_CREATED, room), got))
    made = f"{plural(most, 'room')} made, the last past the default limit of {DEFAULT_MAX_ROOMS}"
    diagnosis = beyond_default("the server", "room", DEFAULT_MAX_ROOMS, "--max-rooms", "§9.8")
    raise Failure(Exchange(solo.session.last_sent, "#too_many_rooms", made, diagnosis))


def beyond_default(holder: str, noun: str, default: int, flag: str, section: str) -> str:
    """Say that ``holder`` took more than the default limit: it has none, or a higher one (§9)."""
    return (
        f"{holder} has no {noun} limit, or one above the default of {default} ({section}): run this check"
        f" against a server started with a limit of {default} or less, such as mechat serve {flag} {default}"
    )


#: Why ``room-full`` is skipped on a server that can make no room, and has no empty one to fill.
NO_ROOM_TO_FILL = (
    "/create got #too_many_rooms, and no room that too-many-rooms left empty is there, so room-full has"
    " no room to fill (§9.8, §9.9). That is no fault of the server: rooms last until it stops, and each"
    " run of the kit leaves some; restart the server, with a room limit of 1 or more, and run room-full"
    " again"
)


def room_for_members(client: Client, names: Names) -> str:
    """Make a room for ``room-full``; on a server full of rooms, take one ``too-many-rooms`` left empty."""
    room = names.of("full")
    client.send(command(b"/create", room))
    got = client.read_line()
    if got == notice(Notice.ROOM_CREATED, room):
        return room
    if got != TOO_MANY_ROOMS:
        raise Failure(client.judged(notice(Notice.ROOM_CREATED, room), got))
    client.send(b"/rooms " + FILLER.encode("ascii") + b"-*")
    got = client.read_line()
    try:
        listing = split_list(got, Notice.ROOMS, [], False)
    except ValueError:
        raise Failure(client.judged(wire(Notice.ROOMS) + b"N ROOM", got)) from None
    if not listing.counted:
        raise CannotCheck(NO_ROOM_TO_FILL)
    if not listing.names:
        raise Failure(client.judged(wire(Notice.ROOMS) + b"N ROOM", got))
    return listing.names[0]


@limit_check(
    "room-full",
    "§9.9",
    "past a room's member limit, /join gets #room_full_ROOM and nothing changes",
    Stage.RELAY,
)
def room_full(session: Session) -> Exchange:
    """Bring members in until one is refused; the room lists those it took, and the refused one chats on."""
    names = Names()
    first = session.join(names.of("m0"))
    room = room_for_members(first, names)
    enter(first, room, [])
    members, refused = fill_room(session, names, room, first)
    for member in members[1:]:
        first.expect(about(Notice.ENTERED, room, member))
    first.send(b"/members")
    expect_list(first, Notice.MEMBERS, [member.name for member in members])
    partner = session.meet(refused, names.of("partner"))
    refused.send(command(b"/join", room))
    return refused_once(refused, partner, notice(Notice.ROOM_FULL, room))


def fill_room(session: Session, names: Names, room: str, first: Client) -> Tuple[List[Client], Client]:
    """Bring newcomers into ``room`` until one is refused; return the members and the refused one (§9.9)."""
    members = [first]
    for number in range(1, DEFAULT_MAX_MEMBERS + 1):
        joiner = session.join(names.of(f"m{number}"))
        joiner.send(command(b"/join", room))
        got = joiner.read_line()
        if got == notice(Notice.ROOM_FULL, room):
            return members, joiner
        if got != notice(Notice.JOINED, room):
            raise Failure(joiner.judged(notice(Notice.JOINED, room), got))
        members.append(joiner)
    joined = f"{plural(len(members), 'member')} joined, past the default limit of {DEFAULT_MAX_MEMBERS}"
    diagnosis = beyond_default("a room", "member", DEFAULT_MAX_MEMBERS, "--max-members", "§9.9")
    raise Failure(Exchange(session.last_sent, f"#room_full_{room}", joined, diagnosis))
