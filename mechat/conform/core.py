"""The checks of protocol 1 (feature ``core``): one per clause of spec/protocol.md.

Each check acts out one clause with real connections and returns the
exchange that decided it, or raises :class:`~mechat.conform.clients.Failure`
with the exchange that broke it.  Three habits keep the verdicts honest:

* Every read has a deadline (``--timeout``), so a server that hangs is a
  FAIL, never a kit that hangs with it.
* The kit never waits for the *absence* of a line, which would need a sleep
  and a guess.  To show that a refused line was not forwarded, and was
  refused only once, both partners then send a marker, and each marker must
  be the very next line the other side reads: lines are relayed in order
  (§7.3), so anything forwarded or answered in between shows up first.
* Checks do not inherit each other's leftovers: each ends by hanging up
  its clients and waiting until the server has closed them, and the runner
  pairs off any client an earlier check left waiting (§7.1).

Not checked, because they need control of the server rather than a client:
the configurable limits of §9.2-§9.5 and shutdown (§10).
"""

import contextlib
import functools
import threading
import time
from typing import Callable, Dict, List

from mechat.conform.clients import MATCHED_TO, Client, Exchange, Failure, Session, show
from mechat.conform.diagnose import CLOSED, USER_QUIT, WAIT, wire
from mechat.conform.registry import Check, Stage, add, checker
from mechat.numbered import make_line
from mechat.protocol import LF, MAX_LINE_OCTETS, MAX_NICKNAME_CHARS, Notice

FEATURE = "core"
check = checker(FEATURE)

#: Clients that join at once in the perfect-matching check (§7.1).
CROWD = 100

#: Lines each side sends in the full-duplex check, and their size: more
#: than default socket buffers hold, so a server that relays one way at a
#: time stalls, and well under the default flood limit of 1000 lines a
#: second (§9.5).
DUPLEX_LINES = 200
DUPLEX_OCTETS = 1000

#: Seconds between the pieces of a line sent in several segments (§2.1).
#: Not a synchronisation: it only makes it likely that the server's reads
#: see the pieces apart.  The verdict does not depend on it.
SEGMENT_GAP = 0.05

INVALID_NICKNAME = wire(Notice.INVALID_NICKNAME)
INVALID_MESSAGE = wire(Notice.INVALID_MESSAGE)
INVALID_COMMAND = wire(Notice.INVALID_COMMAND)


def marker(client: Client) -> bytes:
    """Return the marker line that ``client`` sends to show what came before it."""
    return b"marker from " + client.name.encode("ascii")


def still_chatting(first: Client, second: Client) -> None:
    """Show that both sides still chat and that nothing else was sent between them.

    Each side sends a marker and each marker must be the other side's very
    next line: a stray forwarded line or a stray notice would arrive first (§7.3).
    """
    first.send(marker(first))
    second.expect(marker(first))
    second.send(marker(second))
    first.expect(marker(second))


def refused_once(sender: Client, partner: Client, reply: bytes) -> Exchange:
    """Expect ``reply`` to what ``sender`` just sent, once, with nothing of it forwarded.

    The sender's marker must be the partner's next line, so a forwarded piece
    shows; the partner's marker must follow the one reply, so a second
    refusal shows.
    """
    refused = sender.session.last_sent
    sender.send(marker(sender))
    partner.expect(marker(sender))
    sender.session.last_sent = refused  # report the refused line, not the marker
    exchange = sender.expect(reply)
    partner.send(marker(partner))
    sender.expect(marker(partner))
    return exchange


def relayed(sender: Client, receiver: Client, line: bytes) -> Exchange:
    """Send a message and expect the partner to get it verbatim (§7.3)."""
    sender.send(line)
    return receiver.expect(line)


# Message lines at and just over the limit (§2.3, §2.4).  The euro sign is
# three octets in UTF-8, so 666 of them and one two-octet "é" end exactly at
# the limit, and 667 of them cross it in the middle of a character.
AT_LIMIT = b"x" * MAX_LINE_OCTETS
OVER_LIMIT = b"x" * (MAX_LINE_OCTETS + 1)
MULTIBYTE_AT_LIMIT = ("\u20ac" * ((MAX_LINE_OCTETS - 2) // 3) + "\u00e9").encode("utf-8")
MULTIBYTE_OVER_LIMIT = ("\u20ac" * ((MAX_LINE_OCTETS + 1) // 3)).encode("utf-8")

# Nicknames at the limits (§3): one character, and thirty that are all VCHAR
# (letters, digits and punctuation, "#" and "/" included after the first).
NICK_1 = "Q"
NICK_30 = "Zz09" + "".join(chr(code) for code in range(0x21, 0x3B))
NICK_31 = "n" * (MAX_NICKNAME_CHARS + 1)


# -- §2 Framing ------------------------------------------------------------------


@check("two-lines-in-one-write", "§2.1", "two lines in one segment are two lines")
def two_lines_in_one_segment(session: Session) -> Exchange:
    """Cut lines at each LF, not at each read: one write may hold several lines."""
    alice, bob = session.pair()
    alice.send(b"first of two", b"second of two")
    bob.expect(b"first of two")
    return bob.expect(b"second of two")


@check("line-in-pieces", "§2.1", "one line split over several segments is one line")
def line_over_segments(session: Session) -> Exchange:
    """Keep reading until the LF: one line may take several reads."""
    alice, bob = session.pair()
    for piece in (b"one line ", b"in three ", b"pieces\n"):
        alice.send_raw(piece, show(piece))
        time.sleep(SEGMENT_GAP)
    alice.note("'one line in three pieces' in three segments")
    return bob.expect(b"one line in three pieces")


@check("crlf-nickname", "§2.2", "a CR before the LF is dropped from a nickname", Stage.PAIR)
def crlf_nickname(session: Session) -> Exchange:
    """Take 'carol\\r\\n' as the nickname 'carol' (a CR is no VCHAR)."""
    carol = session.connect("carol")
    carol.send_raw(b"carol\r\n", "'carol\\r\\n'")
    carol.expect(WAIT)
    dave = session.connect("dave")
    return dave.ask(b"dave", MATCHED_TO + b"carol")


@check("crlf-quit", "§2.2", "a CR before the LF is dropped from /quit", Stage.PAIR)
def crlf_quit(session: Session) -> Exchange:
    """Treat '/quit\\r\\n' as /quit: the partner is told and both are closed."""
    alice, bob = session.pair()
    alice.send_raw(b"/quit\r\n", "'/quit\\r\\n'")
    exchange = bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    return exchange


def relayed_as(data: bytes, line: bytes, session: Session) -> Exchange:
    """Send ``data`` as it is and expect the partner to get exactly ``line`` (§7.3)."""
    alice, bob = session.pair()
    alice.send_raw(data, show(data))
    return bob.expect(line)


RELAYS = [
    (
        "crlf-message",
        "§2.2",
        "a CR before the LF is dropped from a message",
        b"sent with CRLF\r\n",
        b"sent with CRLF",
    ),
    (
        "message-at-limit",
        "§2.3",
        "a message of exactly 2000 octets is relayed whole",
        AT_LIMIT + LF,
        AT_LIMIT,
    ),
    (
        "crlf-at-limit",
        "§2.3",
        "the CR of a CRLF does not count towards the 2000 octets",
        AT_LIMIT + b"\r\n",
        AT_LIMIT,
    ),
    (
        "utf8-at-limit",
        "§2.4",
        "2000 octets of multibyte UTF-8 are relayed whole",
        MULTIBYTE_AT_LIMIT + LF,
        MULTIBYTE_AT_LIMIT,
    ),
]
for _id, _section, _title, _data, _line in RELAYS:
    add(Check(_id, FEATURE, _section, _title, functools.partial(relayed_as, _data, _line)))


@check("huge-line", "§9.1", "a 100 000-octet line is refused once and never forwarded")
def huge_line(session: Session) -> Exchange:
    """Discard an over-long line as it arrives, answer it once, forward none of it."""
    alice, bob = session.pair()
    for _ in range(10):
        alice.send_raw(b"y" * 10_000, "10 000 octets")
    alice.send_raw(LF, "LF")
    alice.note("one line of 100 000 octets in 11 writes")
    return refused_once(alice, bob, INVALID_MESSAGE)


# -- §3 Nicknames and §7.1 the nickname phase --------------------------------------


def accepted_nickname(nickname: str, session: Session) -> Exchange:
    """Accept ``nickname``: it waits, and its partner is told that exact name."""
    session.join(nickname)
    partner = session.connect("partner")
    return partner.ask(b"partner", MATCHED_TO + nickname.encode("ascii"))


def refused_nickname(line: bytes, reply: bytes, session: Session) -> Exchange:
    """Refuse ``line`` as a nickname, then let the client retry on the same connection."""
    client = session.connect("newcomer")
    exchange = client.ask(line, reply)
    client.ask(b"newcomer", WAIT)
    return exchange


for _id, _nickname, _title in (
    ("nickname-1-character", NICK_1, "a 1-character nickname"),
    ("nickname-30-characters", NICK_30, "a 30-character nickname"),
):
    _accepted = functools.partial(accepted_nickname, _nickname)
    add(Check(_id, FEATURE, "§3", f"{_title} is accepted", _accepted, Stage.PAIR))

NICKNAME_PHASE_REFUSALS = [
    ("nickname-empty", "§3", "an empty nickname gets #invalid_nickname", b"", INVALID_NICKNAME),
    (
        "nickname-31-characters",
        "§3",
        "a 31-character nickname gets #invalid_nickname",
        NICK_31.encode("ascii"),
        INVALID_NICKNAME,
    ),
    (
        "nickname-space",
        "§3",
        "a nickname with a space gets #invalid_nickname",
        b"two words",
        INVALID_NICKNAME,
    ),
    (
        "nickname-non-ascii",
        "§3",
        "a non-ASCII nickname gets #invalid_nickname",
        "zo\u00eb".encode(),
        INVALID_NICKNAME,
    ),
    (
        "nickname-control",
        "§3",
        "a nickname with a control character gets #invalid_nickname",
        b"tab\there",
        INVALID_NICKNAME,
    ),
    (
        "nickname-over-long",
        "§2.3",
        "an over-long first line gets #invalid_nickname",
        OVER_LIMIT,
        INVALID_NICKNAME,
    ),
    (
        "first-line-command",
        "§7.1",
        "a first line starting with '/' is a command: #invalid_command",
        b"/slash",
        INVALID_COMMAND,
    ),
    (
        "rename-before-nickname",
        "§7.1",
        "/nickname before a nickname gets #invalid_command",
        b"/nickname bob",
        INVALID_COMMAND,
    ),
]
for _id, _section, _title, _line, _reply in NICKNAME_PHASE_REFUSALS:
    _retry = functools.partial(refused_nickname, _line, _reply)
    add(Check(_id, FEATURE, _section, _title + ", and a retry works", _retry, Stage.WAIT))


@check("quit-before-nickname", "§7.1", "/quit before a nickname closes the connection", Stage.CONNECT)
def quit_before_nickname(session: Session) -> Exchange:
    """Close at once, with no reply, on /quit in the nickname phase."""
    client = session.connect("newcomer")
    return client.ask(b"/quit", CLOSED)


@check(
    "wait-then-matched",
    "§7.1",
    "the first client gets #wait, then both get #matched_to_ the other",
    Stage.PAIR,
)
def wait_then_matched(session: Session) -> Exchange:
    """Queue a lone client with #wait; name each partner to the other on a match."""
    alice = session.join("alice")
    bob = session.connect("bob")
    bob.ask(b"bob", MATCHED_TO + b"alice")
    return alice.expect(MATCHED_TO + b"bob")


@check("first-come-first-served", "§7.1", "pairs form first come, first served", Stage.PAIR)
def first_come_first_served(session: Session) -> Exchange:
    """Pair each newcomer with the client that waits; a client after a full pair waits."""
    session.pair("first", "second")
    session.join("third")
    fourth = session.connect("fourth")
    return fourth.ask(b"fourth", MATCHED_TO + b"third")


@check("perfect-matching", "§7.1", f"{CROWD} clients at once form a perfect matching")
def perfect_matching(session: Session) -> Exchange:
    """Match every client exactly once, never to itself, partners naming each other."""
    crowd = [session.connect(f"c{number:03d}") for number in range(CROWD)]
    for client in crowd:
        client.send(client.name.encode("ascii"))
    partners = {client.name: partner_of(client) for client in crowd}
    sent = f"{CROWD} clients: {CROWD} unique nicknames at once"
    expected = f"{CROWD // 2} pairs that name each other"
    for problem in matching_problems(partners):
        raise Failure(Exchange(sent, expected, problem))
    for client in crowd:  # and the pairs are real: each line reaches the named partner
        client.send(b"hello from " + client.name.encode("ascii"))
    for client in crowd:
        client.expect(b"hello from " + partners[client.name].encode("ascii"))
    return Exchange(sent, expected, f"{CROWD // 2} pairs, each line relayed to the named partner")


def partner_of(client: Client) -> str:
    """Read a client's #wait (if any) and #matched_to_; return the partner's name."""
    line = client.read_line()
    if line == WAIT:
        line = client.read_line()
    if not isinstance(line, bytes) or not line.startswith(MATCHED_TO):
        expected = f"{client.name} gets {show(WAIT)} or #matched_to_NICK"
        raise Failure(Exchange(client.session.last_sent, expected, show(line)))
    return line[len(MATCHED_TO) :].decode("ascii", "replace")


def matching_problems(partners: Dict[str, str]) -> List[str]:
    """List every way ``partners`` falls short of a perfect matching."""
    problems = []
    for name, partner in sorted(partners.items()):
        if partner == name:
            problems.append(f"{name} was matched to itself")
        elif partners.get(partner) != name:
            problems.append(f"{name} was matched to {partner}, who was matched to {partners.get(partner)}")
    return problems


# -- §4 Messages and §5 commands, while chatting ------------------------------------


@check("valid-messages", "§4", "valid messages are relayed verbatim")
def valid_messages(session: Session) -> Exchange:
    """Relay 1-octet, tab, inner '#' and '/', and 4-octet UTF-8 messages unchanged."""
    alice, bob = session.pair()
    for line in (b"x", b"\tstarts with a tab", b" a # and a / inside", "caf\u00e9 \U0001f600".encode()):
        exchange = relayed(alice, bob, line)
    return exchange


def refused_in_chat(line: bytes, reply: bytes, session: Session) -> Exchange:
    """Answer ``line`` with ``reply`` once, forward none of it, and keep the chat going."""
    alice, bob = session.pair()
    alice.send(line)
    return refused_once(alice, bob, reply)


CHAT_REFUSALS = [
    ("message-2001-octets", "§2.3", "a 2001-octet message", OVER_LIMIT, INVALID_MESSAGE),
    (
        "message-2001-octets-utf8",
        "§2.4",
        "2001 octets of multibyte UTF-8",
        MULTIBYTE_OVER_LIMIT,
        INVALID_MESSAGE,
    ),
    ("message-0xff", "§2.4", "an 0xFF octet (not UTF-8)", b"\xffbad", INVALID_MESSAGE),
    ("message-truncated-utf8", "§2.4", "a truncated UTF-8 sequence", b"caf\xc3", INVALID_MESSAGE),
    ("message-surrogate", "§2.4", "an encoded surrogate (not UTF-8)", b"\xed\xa0\x80", INVALID_MESSAGE),
    ("message-empty", "§4", "an empty line", b"", INVALID_MESSAGE),
    ("message-hash", "§4", "a line starting with '#'", b"#not_a_notice", INVALID_MESSAGE),
    ("message-control", "§4", "a C0 control character", b"bell\x07", INVALID_MESSAGE),
    ("message-del", "§4", "a DEL character", b"del\x7f", INVALID_MESSAGE),
    ("rename-alone", "§5.2", "'/nickname' alone", b"/nickname", INVALID_NICKNAME),
    (
        "rename-space",
        "§5.2",
        "'/nickname' with a space in the name",
        b"/nickname two words",
        INVALID_NICKNAME,
    ),
    (
        "rename-31-characters",
        "§5.2",
        "'/nickname' with a 31-character name",
        b"/nickname " + NICK_31.encode(),
        INVALID_NICKNAME,
    ),
    (
        "rename-slash",
        "§5.2",
        "'/nickname' with a name starting with '/'",
        b"/nickname /slash",
        INVALID_NICKNAME,
    ),
    ("quitnow", "§5.3", "'/quitnow' (not /quit)", b"/quitnow", INVALID_COMMAND),
    ("quit-uppercase", "§5.3", "'/QUIT' (commands are case-sensitive)", b"/QUIT", INVALID_COMMAND),
    ("quit-argument", "§5.3", "'/quit x' (/quit takes nothing)", b"/quit x", INVALID_COMMAND),
    ("quit-trailing-space", "§5.3", "'/quit ' with a trailing space", b"/quit ", INVALID_COMMAND),
    ("rename-capital", "§5.3", "'/Nickname carol' (case-sensitive)", b"/Nickname carol", INVALID_COMMAND),
    ("rename-no-space", "§5.3", "'/nicknamecarol' (no space)", b"/nicknamecarol", INVALID_COMMAND),
    ("unknown-command", "§5.3", "an unknown command", b"/foo", INVALID_COMMAND),
    ("slash-alone", "§5.3", "'/' alone", b"/", INVALID_COMMAND),
]
for _id, _section, _what, _line, _reply in CHAT_REFUSALS:
    _title = f"{_what} gets {_reply.decode()} and is not relayed"
    add(Check(_id, FEATURE, _section, _title, functools.partial(refused_in_chat, _line, _reply)))


@check("quit-in-chat", "§5.1", "/quit: the partner gets #user_quit and both are closed", Stage.PAIR)
def quit_in_chat(session: Session) -> Exchange:
    """End the chat on /quit: no reply to the quitter, #user_quit to the partner (§8)."""
    alice, bob = session.pair()
    alice.send(b"/quit")
    exchange = bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    alice.expect(CLOSED)
    return exchange


@check(
    "rename-in-chat", "§5.2", "/nickname: #nickname_changed_ to the renamer, #partner_renamed_ to the partner"
)
def rename_in_chat(session: Session) -> Exchange:
    """Rename while chatting and tell both sides, each with its own notice."""
    alice, bob = session.pair()
    alice.ask(b"/nickname alicia", wire(Notice.NICKNAME_CHANGED, b"alicia"))
    exchange = bob.expect(wire(Notice.PARTNER_RENAMED, b"alicia"))
    still_chatting(alice, bob)
    return exchange


# -- §7.2 Waiting ----------------------------------------------------------------


@check(
    "line-while-waiting",
    "§7.2",
    "a line while waiting gets #wait, is never matched to itself, and goes nowhere",
)
def line_while_waiting(session: Session) -> Exchange:
    """Answer a waiter's message with #wait; the partner who comes later never sees it."""
    wanda = session.join("wanda")
    exchange = wanda.ask(b"anyone there?", WAIT)
    still_chatting(wanda, session.meet(wanda, "walter"))
    return exchange


@check(
    "refusals-while-waiting",
    "§7.2",
    "refused lines while waiting get their notice and the client still waits",
    Stage.PAIR,
)
def refusals_while_waiting(session: Session) -> Exchange:
    """Refuse a bad message and a bad command while waiting, and keep the place in the queue."""
    wanda = session.join("wanda")
    wanda.ask(b"#bad", INVALID_MESSAGE)
    exchange = wanda.ask(b"/foo", INVALID_COMMAND)
    session.meet(wanda, "walter")
    return exchange


@check(
    "rename-while-waiting",
    "§7.2",
    "/nickname while waiting: #nickname_changed_, and the partner sees the new name",
    Stage.PAIR,
)
def rename_while_waiting(session: Session) -> Exchange:
    """Rename a waiter; whoever it is matched with later is told the new name."""
    early = session.join("early")
    exchange = early.ask(b"/nickname later", wire(Notice.NICKNAME_CHANGED, b"later"))
    partner = session.connect("partner")
    partner.ask(b"partner", MATCHED_TO + b"later")
    early.expect(MATCHED_TO + b"partner")
    return exchange


@check("waiter-quits", "§7.2", "a waiter that sends /quit is closed and never handed out", Stage.WAIT)
def waiter_quits(session: Session) -> Exchange:
    """Withdraw a waiter on /quit: the next client waits instead of meeting it."""
    ghost = session.join("ghost")
    ghost.ask(b"/quit", CLOSED)
    return session.connect("next").ask(b"next", WAIT)


def ghost_waiter(leave: Callable[[Client], None], session: Session) -> Exchange:
    """Withdraw a waiter that leaves: the next client waits instead of meeting a ghost."""
    ghost = session.join("ghost")
    leave(ghost)
    return session.connect("next").ask(b"next", WAIT)


#: The two ways to leave without /quit (§8): how, and the word for it in a title.
LEAVINGS = ((Client.close, "closes"), (Client.reset, "resets"))


def check_each_leaving(
    id: str, title: str, function: Callable[[Callable[[Client], None], Session], Exchange], needs: Stage
) -> None:
    """Register a §8 check of ``function`` for each way to leave; ``{how}`` names it in id and title."""
    for leave, how in LEAVINGS:
        add(
            Check(
                id.format(how=how),
                FEATURE,
                "§8",
                title.format(how=how),
                functools.partial(function, leave),
                needs,
            )
        )


check_each_leaving("waiter-{how}", "a waiter that {how} is never handed out", ghost_waiter, Stage.WAIT)


# -- §7.3 Chatting and §8 ending a session -----------------------------------------


@check("full-duplex", "§7.3", "relay runs both ways at once (both send before either reads)")
def full_duplex(session: Session) -> Exchange:
    """Relay each direction on its own: neither side's flood waits for the other to read."""
    alice, bob = session.pair()
    lines = {client.name: duplex_lines(client.name) for client in (alice, bob)}
    senders = [threading.Thread(target=send_quietly, args=(peer, lines[peer.name])) for peer in (alice, bob)]
    session.last_sent = f"alice and bob: {DUPLEX_LINES} lines of {DUPLEX_OCTETS} octets each, at once"
    session.last_write = b""  # two threads write: no one write is the last
    for sender in senders:
        sender.start()
    for receiver, sender_name in ((bob, alice.name), (alice, bob.name)):
        for line in lines[sender_name]:
            exchange = receiver.expect(line)
    for sender in senders:
        sender.join()
    return exchange


def duplex_lines(name: str) -> List[bytes]:
    """Number each line, so that a lost or reordered line shows."""
    sender = name.encode("ascii")
    return [make_line(sender, number, size=DUPLEX_OCTETS) for number in range(DUPLEX_LINES)]


def send_quietly(client: Client, lines: List[bytes]) -> None:
    """Send lines from a thread; a failure shows up as missing lines at the reader."""
    with contextlib.suppress(OSError):
        client.sock.sendall(b"".join(line + LF for line in lines))


def partner_leaves(leave: Callable[[Client], None], session: Session) -> Exchange:
    """Tell the partner #user_quit and close it when the other side leaves mid-chat."""
    alice, bob = session.pair()
    leave(alice)
    exchange = bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    return exchange


check_each_leaving(
    "partner-{how}", "a partner that {how} mid-chat: #user_quit, then close", partner_leaves, Stage.PAIR
)


@check(
    "line-as-partner-quits",
    "§8",
    "a line sent as the partner quits is answered with #user_quit, never lost in silence",
    Stage.PAIR,
)
def line_as_partner_quits(session: Session) -> Exchange:
    """Tell a sender whose partner has gone: no line disappears without the sender being told."""
    alice, bob = session.pair()
    alice.send(b"/quit")
    bob.send(b"are you still there?")
    exchange = bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    return exchange
