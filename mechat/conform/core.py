"""The conformance kit: grade any server that claims to speak mechat.

``python -m mechat conform --port P`` connects to a running server as an
ordinary TCP client and walks through the clauses of ``spec/protocol.md``,
one check per clause.  Each check prints one line: PASS or FAIL, the spec
section, and the exchange that decided it (what was sent, what the spec
says must come back, what did).  The kit is a black box on purpose: the
server may be mechat, a student's Python, or a C program, so the kit knows
nothing but the wire.  It borrows the notice names, the limits and the
line cutter from :mod:`mechat.protocol`, and the format of the lines it
counts from :mod:`mechat.numbered`, and nothing else.

Three habits keep the verdicts honest:

* Every read has a deadline (``--timeout``).  A server that hangs, or
  closes early, is a FAIL with "<nothing within 5 s>" or "<connection
  closed>", never a kit that hangs with it.
* The kit never waits for the *absence* of a line, which would need a sleep
  and a guess.  To show that a refused line was not forwarded, and was
  refused only once, both partners then send a marker, and each marker must
  be the very next line the other side reads: lines are relayed in order
  (§7.3), so anything forwarded or answered in between shows up first.
* Checks do not inherit each other's leftovers.  Each check ends by hanging
  up its clients and waiting until the server has closed them, and before
  each check any client an earlier check left waiting (a server that keeps
  ghosts) is deliberately paired off, so the queue is empty (§7.1).

Not checked, because they need control of the server rather than a client:
the configurable limits of §9.2-§9.5 and shutdown (§10).
"""

import collections
import contextlib
import functools
import socket
import sys
import threading
import time
from typing import Callable, Deque, Dict, Iterator, List, NamedTuple, Optional, TextIO, Tuple, Union

from mechat.connection import abort
from mechat.numbered import make_line
from mechat.protocol import LF, MAX_LINE_OCTETS, MAX_NICKNAME_CHARS, LineCutter, Notice

#: Seconds any one expected line may take to arrive (``--timeout``).
DEFAULT_TIMEOUT = 5.0

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

#: Leftover waiters the kit pairs off before one check, at most.
MAX_LEFTOVERS = 5

RECV_SIZE = 65536
Address = Tuple[str, int]


def wire(name: Notice, nickname: bytes = b"") -> bytes:
    """Return a notice as it appears on the wire, without its LF (§6)."""
    return name.value.encode("ascii") + nickname


WAIT = wire(Notice.WAIT)
USER_QUIT = wire(Notice.USER_QUIT)
INVALID_NICKNAME = wire(Notice.INVALID_NICKNAME)
INVALID_MESSAGE = wire(Notice.INVALID_MESSAGE)
INVALID_COMMAND = wire(Notice.INVALID_COMMAND)
MATCHED_TO = wire(Notice.MATCHED_TO)


# -- What came back ------------------------------------------------------------


class Outcome:
    """What a read found instead of a line: a close, a reset, or silence."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


CLOSED = Outcome("<connection closed>")
RESET = Outcome("<connection reset>")

Reply = Union[bytes, Outcome]


def show(value: Reply, limit: int = 40) -> str:
    """Return a short printable form of a line or an outcome."""
    if isinstance(value, Outcome):
        return value.text
    try:
        text = repr(value.decode("utf-8"))
    except UnicodeDecodeError:
        text = repr(value)
    if len(text) > limit:
        text = f"{text[: limit - 10]}... ({len(value)} octets)"
    return text


class Exchange(NamedTuple):
    """One step of a check: what was sent, what must come back, and what did."""

    sent: str
    expected: str
    got: str

    def __str__(self) -> str:
        return f"sent {self.sent}; expected {self.expected}; got {self.got}"


class Failure(Exception):
    """A check failed; ``exchange`` is the step that showed it."""

    def __init__(self, exchange: Exchange) -> None:
        super().__init__(str(exchange))
        self.exchange = exchange


# -- Clients -------------------------------------------------------------------


class Client:
    """One connection to the server under test; every read has a deadline."""

    def __init__(self, session: "Session", name: str) -> None:
        self.session = session
        self.name = name
        self.sock = socket.create_connection(session.address, timeout=session.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming = LineCutter()  # what the server sent, cut exactly as sent
        self.unread: Deque[bytes] = collections.deque()  # whole lines received, not yet read
        self.ended: Optional[Outcome] = None  # how the connection ended, once it has

    # -- Sending -----------------------------------------------------------

    def send(self, *lines: bytes) -> None:
        """Send each line with an LF after it, all in one write."""
        self.send_raw(b"".join(line + LF for line in lines), ", ".join(show(line) for line in lines))

    def send_raw(self, data: bytes, description: str) -> None:
        """Send bytes exactly as given, and note them as the last thing sent."""
        self.note(description)
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise Failure(Exchange(self.session.last_sent, "the server to take it", f"<{error}>")) from None

    def note(self, action: str) -> None:
        """Record what this client just did, for the report."""
        self.session.last_sent = f"{self.name}: {action}"

    # -- Receiving ---------------------------------------------------------

    def read_line(self) -> Reply:
        """Return the next line without its LF, or how the connection ended."""
        deadline = time.monotonic() + self.session.timeout
        while not self.unread:
            if self.ended is not None:
                if self.incoming.unterminated:
                    return Outcome(f"<closed after the unterminated {show(self.incoming.unterminated)}>")
                return self.ended
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Outcome(f"<nothing within {self.session.timeout:g} s>")
            self.receive(remaining)
        return self.unread.popleft()

    def receive(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for bytes, and note a close or a reset."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(RECV_SIZE)
        except socket.timeout:
            return
        except ConnectionResetError:
            self.ended = RESET
            return
        except OSError as error:
            self.ended = Outcome(f"<{error}>")
            return
        if not data:
            self.ended = CLOSED
        self.unread.extend(self.incoming.cut(data))

    def expect(self, expected: Reply) -> Exchange:
        """Read one line; raise Failure unless it is ``expected``."""
        got = self.read_line()
        exchange = Exchange(self.session.last_sent, f"{self.name} gets {show(expected)}", show(got))
        # A close may arrive as a reset when the server had unread bytes (§8).
        closed_as_expected = expected is CLOSED and got is RESET
        if got != expected and not closed_as_expected:
            raise Failure(exchange)
        return exchange

    def ask(self, line: bytes, expected: Reply) -> Exchange:
        """Send one line and expect one reply."""
        self.send(line)
        return self.expect(expected)

    # -- Ending ------------------------------------------------------------

    def close(self) -> None:
        """Close the connection normally: the server sees end of file (§8)."""
        self.note("<closes the connection>")
        self.ended = CLOSED
        self.sock.close()

    def reset(self) -> None:
        """Abort the connection with a TCP reset (SO_LINGER 0), not a FIN (§8)."""
        self.note("<resets the connection>")
        self.ended = RESET
        abort(self.sock)

    def hang_up(self) -> None:
        """Send end of file but keep reading, so we can see the server close."""
        with contextlib.suppress(OSError):  # already closed or reset
            self.sock.shutdown(socket.SHUT_WR)

    def wait_closed(self, deadline: float) -> None:
        """Discard what arrives until the server closes or ``deadline`` passes, then close."""
        while self.ended is None and time.monotonic() < deadline:
            self.unread.clear()
            self.incoming.unterminated = b""
            self.receive(deadline - time.monotonic())
        self.sock.close()


class Session:
    """The clients of one check: it makes them, names them, and cleans them up."""

    def __init__(self, address: Address, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self.clients: List[Client] = []
        self.last_sent = "nothing yet"

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def connect(self, name: str) -> Client:
        """Open a connection; ``name`` is its nickname in the report."""
        client = Client(self, name)
        self.clients.append(client)
        return client

    def join(self, nickname: str) -> Client:
        """Connect and choose ``nickname``, expecting #wait (§7.1)."""
        client = self.connect(nickname)
        client.ask(nickname.encode("ascii"), WAIT)
        return client

    def meet(self, waiter: Client, nickname: str) -> Client:
        """Connect as ``nickname`` and see it matched with ``waiter``, each told the other's name (§7.1)."""
        newcomer = self.connect(nickname)
        newcomer.ask(nickname.encode("ascii"), MATCHED_TO + waiter.name.encode("ascii"))
        waiter.expect(MATCHED_TO + nickname.encode("ascii"))
        return newcomer

    def pair(self, first: str = "alice", second: str = "bob") -> Tuple[Client, Client]:
        """Connect two clients and see them matched to each other (§7.1)."""
        waiter = self.join(first)
        return waiter, self.meet(waiter, second)

    def close(self) -> None:
        """Hang up every client and wait, within one timeout, for the server to close them.

        Waiting matters: a waiter is withdrawn from the queue when the
        server reads its end of file (§7.2), and the next check must not
        race with that.
        """
        deadline = time.monotonic() + self.timeout
        open_clients = [client for client in self.clients if client.ended is None]
        for client in open_clients:
            client.hang_up()
        for client in self.clients:
            client.wait_closed(deadline)


# -- The registry of checks ------------------------------------------------------


CheckFunction = Callable[[Session], Exchange]


class Check(NamedTuple):
    """One spec clause: its section, a title, and the function that tries it."""

    section: str
    title: str
    run: CheckFunction


CHECKS: List[Check] = []


def check(section: str, title: str) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check function for ``section`` under ``title``."""

    def register(function: CheckFunction) -> CheckFunction:
        CHECKS.append(Check(section, title, function))
        return function

    return register


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


@check("§2.1", "two lines in one segment are two lines")
def two_lines_in_one_segment(session: Session) -> Exchange:
    """Cut lines at each LF, not at each read: one write may hold several lines."""
    alice, bob = session.pair()
    alice.send(b"first of two", b"second of two")
    bob.expect(b"first of two")
    return bob.expect(b"second of two")


@check("§2.1", "one line split over several segments is one line")
def line_over_segments(session: Session) -> Exchange:
    """Keep reading until the LF: one line may take several reads."""
    alice, bob = session.pair()
    for piece in (b"one line ", b"in three ", b"pieces\n"):
        alice.send_raw(piece, show(piece))
        time.sleep(SEGMENT_GAP)
    alice.note("'one line in three pieces' in three segments")
    return bob.expect(b"one line in three pieces")


@check("§2.2", "a CR before the LF is dropped from a nickname")
def crlf_nickname(session: Session) -> Exchange:
    """Take 'carol\\r\\n' as the nickname 'carol' (a CR is no VCHAR)."""
    carol = session.connect("carol")
    carol.send_raw(b"carol\r\n", "'carol\\r\\n'")
    carol.expect(WAIT)
    dave = session.connect("dave")
    return dave.ask(b"dave", MATCHED_TO + b"carol")


@check("§2.2", "a CR before the LF is dropped from /quit")
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
    ("§2.2", "a CR before the LF is dropped from a message", b"sent with CRLF\r\n", b"sent with CRLF"),
    ("§2.3", "a message of exactly 2000 octets is relayed whole", AT_LIMIT + LF, AT_LIMIT),
    ("§2.3", "the CR of a CRLF does not count towards the 2000 octets", AT_LIMIT + b"\r\n", AT_LIMIT),
    ("§2.4", "2000 octets of multibyte UTF-8 are relayed whole", MULTIBYTE_AT_LIMIT + LF, MULTIBYTE_AT_LIMIT),
]
for _section, _title, _data, _line in RELAYS:
    CHECKS.append(Check(_section, _title, functools.partial(relayed_as, _data, _line)))


@check("§9.1", "a 100 000-octet line is refused once and never forwarded")
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


for _nickname, _title in ((NICK_1, "a 1-character nickname"), (NICK_30, "a 30-character nickname")):
    CHECKS.append(Check("§3", f"{_title} is accepted", functools.partial(accepted_nickname, _nickname)))

NICKNAME_PHASE_REFUSALS = [
    ("§3", "an empty nickname gets #invalid_nickname", b"", INVALID_NICKNAME),
    ("§3", "a 31-character nickname gets #invalid_nickname", NICK_31.encode("ascii"), INVALID_NICKNAME),
    ("§3", "a nickname with a space gets #invalid_nickname", b"two words", INVALID_NICKNAME),
    ("§3", "a non-ASCII nickname gets #invalid_nickname", "zo\u00eb".encode(), INVALID_NICKNAME),
    ("§3", "a nickname with a control character gets #invalid_nickname", b"tab\there", INVALID_NICKNAME),
    ("§2.3", "an over-long first line gets #invalid_nickname", OVER_LIMIT, INVALID_NICKNAME),
    ("§7.1", "a first line starting with '/' is a command: #invalid_command", b"/slash", INVALID_COMMAND),
    ("§7.1", "/nickname before a nickname gets #invalid_command", b"/nickname bob", INVALID_COMMAND),
]
for _section, _title, _line, _reply in NICKNAME_PHASE_REFUSALS:
    _retry = functools.partial(refused_nickname, _line, _reply)
    CHECKS.append(Check(_section, _title + ", and a retry works", _retry))


@check("§7.1", "/quit before a nickname closes the connection")
def quit_before_nickname(session: Session) -> Exchange:
    """Close at once, with no reply, on /quit in the nickname phase."""
    client = session.connect("newcomer")
    return client.ask(b"/quit", CLOSED)


@check("§7.1", "the first client gets #wait, then both get #matched_to_ the other")
def wait_then_matched(session: Session) -> Exchange:
    """Queue a lone client with #wait; name each partner to the other on a match."""
    alice = session.join("alice")
    bob = session.connect("bob")
    bob.ask(b"bob", MATCHED_TO + b"alice")
    return alice.expect(MATCHED_TO + b"bob")


@check("§7.1", "pairs form first come, first served")
def first_come_first_served(session: Session) -> Exchange:
    """Pair each newcomer with the client that waits; a client after a full pair waits."""
    session.pair("first", "second")
    session.join("third")
    fourth = session.connect("fourth")
    return fourth.ask(b"fourth", MATCHED_TO + b"third")


@check("§7.1", f"{CROWD} clients at once form a perfect matching")
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


@check("§4", "valid messages are relayed verbatim")
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
    ("§2.3", "a 2001-octet message", OVER_LIMIT, INVALID_MESSAGE),
    ("§2.4", "2001 octets of multibyte UTF-8", MULTIBYTE_OVER_LIMIT, INVALID_MESSAGE),
    ("§2.4", "an 0xFF octet (not UTF-8)", b"\xffbad", INVALID_MESSAGE),
    ("§2.4", "a truncated UTF-8 sequence", b"caf\xc3", INVALID_MESSAGE),
    ("§2.4", "an encoded surrogate (not UTF-8)", b"\xed\xa0\x80", INVALID_MESSAGE),
    ("§4", "an empty line", b"", INVALID_MESSAGE),
    ("§4", "a line starting with '#'", b"#not_a_notice", INVALID_MESSAGE),
    ("§4", "a C0 control character", b"bell\x07", INVALID_MESSAGE),
    ("§4", "a DEL character", b"del\x7f", INVALID_MESSAGE),
    ("§5.2", "'/nickname' alone", b"/nickname", INVALID_NICKNAME),
    ("§5.2", "'/nickname' with a space in the name", b"/nickname two words", INVALID_NICKNAME),
    ("§5.2", "'/nickname' with a 31-character name", b"/nickname " + NICK_31.encode(), INVALID_NICKNAME),
    ("§5.2", "'/nickname' with a name starting with '/'", b"/nickname /slash", INVALID_NICKNAME),
    ("§5.3", "'/quitnow' (not /quit)", b"/quitnow", INVALID_COMMAND),
    ("§5.3", "'/QUIT' (commands are case-sensitive)", b"/QUIT", INVALID_COMMAND),
    ("§5.3", "'/quit x' (/quit takes nothing)", b"/quit x", INVALID_COMMAND),
    ("§5.3", "'/quit ' with a trailing space", b"/quit ", INVALID_COMMAND),
    ("§5.3", "'/Nickname carol' (case-sensitive)", b"/Nickname carol", INVALID_COMMAND),
    ("§5.3", "'/nicknamecarol' (no space)", b"/nicknamecarol", INVALID_COMMAND),
    ("§5.3", "an unknown command", b"/foo", INVALID_COMMAND),
    ("§5.3", "'/' alone", b"/", INVALID_COMMAND),
]
for _section, _what, _line, _reply in CHAT_REFUSALS:
    _title = f"{_what} gets {_reply.decode()} and is not relayed"
    CHECKS.append(Check(_section, _title, functools.partial(refused_in_chat, _line, _reply)))


@check("§5.1", "/quit: the partner gets #user_quit and both are closed")
def quit_in_chat(session: Session) -> Exchange:
    """End the chat on /quit: no reply to the quitter, #user_quit to the partner (§8)."""
    alice, bob = session.pair()
    alice.send(b"/quit")
    exchange = bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    alice.expect(CLOSED)
    return exchange


@check("§5.2", "/nickname: #nickname_changed_ to the renamer, #partner_renamed_ to the partner")
def rename_in_chat(session: Session) -> Exchange:
    """Rename while chatting and tell both sides, each with its own notice."""
    alice, bob = session.pair()
    alice.ask(b"/nickname alicia", wire(Notice.NICKNAME_CHANGED, b"alicia"))
    exchange = bob.expect(wire(Notice.PARTNER_RENAMED, b"alicia"))
    still_chatting(alice, bob)
    return exchange


# -- §7.2 Waiting ----------------------------------------------------------------


@check("§7.2", "a line while waiting gets #wait, is never matched to itself, and goes nowhere")
def line_while_waiting(session: Session) -> Exchange:
    """Answer a waiter's message with #wait; the partner who comes later never sees it."""
    wanda = session.join("wanda")
    exchange = wanda.ask(b"anyone there?", WAIT)
    still_chatting(wanda, session.meet(wanda, "walter"))
    return exchange


@check("§7.2", "refused lines while waiting get their notice and the client still waits")
def refusals_while_waiting(session: Session) -> Exchange:
    """Refuse a bad message and a bad command while waiting, and keep the place in the queue."""
    wanda = session.join("wanda")
    wanda.ask(b"#bad", INVALID_MESSAGE)
    exchange = wanda.ask(b"/foo", INVALID_COMMAND)
    session.meet(wanda, "walter")
    return exchange


@check("§7.2", "/nickname while waiting: #nickname_changed_, and the partner sees the new name")
def rename_while_waiting(session: Session) -> Exchange:
    """Rename a waiter; whoever it is matched with later is told the new name."""
    early = session.join("early")
    exchange = early.ask(b"/nickname later", wire(Notice.NICKNAME_CHANGED, b"later"))
    partner = session.connect("partner")
    partner.ask(b"partner", MATCHED_TO + b"later")
    early.expect(MATCHED_TO + b"partner")
    return exchange


@check("§7.2", "a waiter that sends /quit is closed and never handed out")
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


def check_each_leaving(title: str, function: Callable[[Callable[[Client], None], Session], Exchange]) -> None:
    """Register a §8 check of ``function`` for each way to leave; ``{how}`` in ``title`` names it."""
    for leave, how in LEAVINGS:
        CHECKS.append(Check("§8", title.format(how=how), functools.partial(function, leave)))


check_each_leaving("a waiter that {how} is never handed out", ghost_waiter)


# -- §7.3 Chatting and §8 ending a session -----------------------------------------


@check("§7.3", "relay runs both ways at once (both send before either reads)")
def full_duplex(session: Session) -> Exchange:
    """Relay each direction on its own: neither side's flood waits for the other to read."""
    alice, bob = session.pair()
    lines = {client.name: duplex_lines(client.name) for client in (alice, bob)}
    senders = [threading.Thread(target=send_quietly, args=(peer, lines[peer.name])) for peer in (alice, bob)]
    for sender in senders:
        sender.start()
    for receiver, sender_name in ((bob, alice.name), (alice, bob.name)):
        for line in lines[sender_name]:
            exchange = receiver.expect(line)
    for sender in senders:
        sender.join()
    return exchange._replace(sent=f"alice and bob: {DUPLEX_LINES} lines of {DUPLEX_OCTETS} octets each")


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


check_each_leaving("a partner that {how} mid-chat: #user_quit, then close", partner_leaves)


@check("§8", "a line sent as the partner quits is answered with #user_quit, never lost in silence")
def line_as_partner_quits(session: Session) -> Exchange:
    """Tell a sender whose partner has gone: no line disappears without the sender being told."""
    alice, bob = session.pair()
    alice.send(b"/quit")
    bob.send(b"are you still there?")
    exchange = bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    return exchange


# -- Running the checks ------------------------------------------------------------


class Result(NamedTuple):
    """The verdict on one check."""

    check: Check
    passed: bool
    exchange: Exchange

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict} {self.check.section} {self.check.title}: {self.exchange}"


def section_key(check: Check) -> Tuple[int, ...]:
    """Order checks by spec section, numerically (§2.3 before §2.10)."""
    return tuple(int(number) for number in check.section.lstrip("§").split("."))


def run_check(check: Check, address: Address, timeout: float) -> Result:
    """Run one check in a fresh session; a server error is a FAIL, not a crash."""
    pair_off_leftovers(address, timeout)
    session = Session(address, timeout)
    try:
        with session:
            return Result(check, True, check.run(session))
    except Failure as failure:
        return Result(check, False, failure.exchange)
    except OSError as error:
        return Result(check, False, Exchange(session.last_sent, "a working connection", f"<{error}>"))


def pair_off_leftovers(address: Address, timeout: float) -> None:
    """Empty the waiting queue that an earlier check may have left behind (§7.1).

    A sweeper joins.  If it is matched, it met a leftover, and closing it
    ends that chat; then try again.  Once a sweeper waits, the queue was
    empty, and a second sweeper pairs with it so that nobody is left.
    Whatever else happens is the next check's to report.
    """
    for _ in range(MAX_LEFTOVERS):
        with contextlib.suppress(OSError, Failure), Session(address, timeout) as session:
            sweeper = session.connect("sweeper")
            sweeper.send(b"conform-sweeper")
            reply = sweeper.read_line()
            if reply == WAIT:
                second = session.connect("sweeper2")
                second.send(b"conform-sweeper2")
                second.read_line()  # its #matched_to_, before either hangs up
            if not (isinstance(reply, bytes) and reply.startswith(MATCHED_TO)):
                return


def run_all(address: Address, timeout: float, checks: Optional[List[Check]] = None) -> Iterator[Result]:
    """Run the checks (all of them by default) in spec order, yielding each verdict."""
    for check in sorted(CHECKS if checks is None else checks, key=section_key):
        yield run_check(check, address, timeout)


def run(
    host: str,
    port: int,
    timeout: float = DEFAULT_TIMEOUT,
    out: Optional[TextIO] = None,
    checks: Optional[List[Check]] = None,
) -> int:
    """Run the checks against host:port, print one line each, and return the exit status."""
    out = out or sys.stdout
    problem = unreachable((host, port), timeout)
    if problem:
        print(f"mechat conform: cannot connect to {host}:{port}: {problem}", file=sys.stderr)
        return 2
    passed = failed = 0
    for result in run_all((host, port), timeout, checks):
        print(result, file=out, flush=True)
        passed, failed = passed + result.passed, failed + (not result.passed)
    print(f"{passed + failed} checks: {passed} passed, {failed} failed", file=out)
    return 1 if failed else 0


def unreachable(address: Address, timeout: float) -> str:
    """Return why no connection can be made to ``address``, or "" if one can."""
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError as error:
        return error.strerror or str(error)
    return ""
