"""The mechat wire protocol: every rule, limit and notice, and no I/O at all.

This module is the code's copy of ``spec/protocol.md`` and ``spec/mechat.abnf``.
Each grammar rule the code needs is one constant named after its ABNF rule
(hyphens become underscores), with the rule quoted above it and the spec
section cited.  Nothing here touches a socket or a thread, so every rule can
be tested by handing it bytes (the same split as h11's ``_abnf.py`` and
``_readers.py``).

The pieces, in the order a line meets them:

* :class:`LineBuffer` cuts a byte stream into lines (§2), never holding more
  than one line's worth of bytes, and flags over-long lines without keeping
  them.
* :func:`parse_line` says what a line means in the current :class:`Phase`
  (§3-§5) and raises a :class:`ProtocolError` whose ``notice`` is the reply
  the spec requires.
* :data:`TRANSITIONS` is the state machine of §7 as data: for each phase and
  event, the reply and the next phase.  The tests drive a real server through
  every cell of it, and the docs draw the state diagram from it.
* :func:`notice` formats the server's lines (§6).
"""

import enum
import re
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

#: Protocol version, §1.  There is no version exchange on the wire; the
#: number names the edition of the spec that this code implements.
PROTOCOL_VERSION = "1.0"

#: The port that both ``serve`` and ``chat`` use when none is given (§1).
DEFAULT_PORT = 7878

# -- Limits (§9) ------------------------------------------------------------
# Each limit is one constant with its reason; the server takes an override
# for each from its constructor and its command line.

#: §2.3: a line holds at most this many octets before its LF (a CR before
#: the LF is not counted).  The seed design's 2,000-byte message limit; it
#: is also the framing limit, so that the reader never needs to keep more.
MAX_LINE_OCTETS = 2000

#: §3: the longest nickname, in characters (all of them ASCII, so octets).
MAX_NICKNAME_CHARS = 30

#: §9.2: seconds a new connection has to send a valid nickname.  IRC servers
#: use a registration timeout for the same reason: a connection that never
#: identifies itself holds a thread and a descriptor for nothing.
DEFAULT_NICKNAME_TIMEOUT = 30.0

#: §9.3: connections served at once.  5,000 pairs is the largest load the
#: benchmarks measure; each connection costs a thread and a descriptor.
DEFAULT_MAX_CLIENTS = 10_000

#: §9.4: seconds a write to a client may block before that client is judged
#: not to be reading and is disconnected (IRC's SendQ limit, in time).
DEFAULT_SEND_TIMEOUT = 10.0

#: §9.5: lines per second one client may send, averaged over one second of
#: burst.  Far above any human and above a script sending a few hundred lines
#: a second; 0 turns flood control off.
DEFAULT_MAX_RATE = 1000.0


# -- Framing (§2) -----------------------------------------------------------

LF = b"\n"
CR = b"\r"


class TooLong:
    """Stands for a line that crossed :data:`MAX_LINE_OCTETS` (§2.3)."""

    def __repr__(self) -> str:
        return "TOO_LONG"


#: The one :class:`TooLong` value; :class:`LineBuffer` yields it in place of
#: a line that was too long, whose bytes were thrown away as they arrived.
TOO_LONG = TooLong()

Line = Union[bytes, TooLong]


class LineBuffer:
    """Cut a byte stream into lines (§2), holding at most one line at a time.

    ``feed`` takes bytes as they came from ``recv`` and returns the complete
    lines, each without its LF and without one CR just before it (§2.2).  A
    line longer than ``max_line`` octets is returned once as :data:`TOO_LONG`;
    its bytes are discarded as they arrive, so a peer that sends ten
    megabytes without a newline costs no more than ``max_line`` plus the
    chunk being cut (§2.3).
    """

    def __init__(self, max_line: int = MAX_LINE_OCTETS) -> None:
        self.max_line = max_line
        self._partial = b""
        self._discarding = False  # inside a line that is already too long

    def feed(self, data: bytes) -> List[Line]:
        """Add ``data`` and return every line it completes, in order."""
        pieces = data.split(LF)
        pieces[0] = self._partial + pieces[0]
        self._partial = pieces.pop()  # the unterminated tail, maybe empty
        lines: List[Line] = []
        for piece in pieces:
            lines.append(self._finish(piece))
            self._discarding = False
        if len(self._partial) > self.max_line + len(CR):
            self._partial = b""
            self._discarding = True
        return lines

    def _finish(self, piece: bytes) -> Line:
        """Return one complete line, or TOO_LONG for one that crossed the limit."""
        if piece.endswith(CR):
            piece = piece[:-1]
        if self._discarding or len(piece) > self.max_line:
            return TOO_LONG
        return piece

    @property
    def pending(self) -> int:
        """How many octets of an unfinished line are held."""
        return len(self._partial)


# -- Grammar rules (spec/mechat.abnf) ---------------------------------------
# The patterns match whole decoded lines (``fullmatch``).  Octet limits are
# checked by the framing (§2.3) and by ``len(line)``; the patterns check the
# characters.

# nick-first = %x21-2E / %x30-7E   ; VCHAR except "/"                   §3
nick_first = r"[\x21-\x2e\x30-\x7e]"
# nickname = nick-first *29VCHAR                                          §3
VCHAR = r"[\x21-\x7e]"
nickname = r"%s%s{0,%d}" % (nick_first, VCHAR, MAX_NICKNAME_CHARS - 1)
NICKNAME_RE = re.compile(nickname)

# message-char = HTAB / %x20-7E / UTF8-2 / UTF8-3 / UTF8-4                 §4
# (checked on the decoded text: any character but the C0 controls other
# than HTAB, and DEL; UTF-8 validity itself is checked by decoding)
FORBIDDEN_IN_MESSAGE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# The same characters as octets.  UTF-8 never uses these octets inside a
# multi-octet character, so they can be looked for in the undecoded line:
# bytes.translate() does that 4x faster than the regex on a 1,900-octet line
# (1.3 us against 5.5 us).  Measured, flood of 100 pairs with 1,900-octet
# lines on one CPU: server CPU per line 14.8 -> 8.3 us, 69k -> 116k lines/s.
FORBIDDEN_IN_MESSAGE_OCTETS = bytes(o for o in range(0x80) if FORBIDDEN_IN_MESSAGE_RE.match(chr(o)))

# quit-command = %s"/quit"                                                §5.1
quit_command = b"/quit"
# nickname-command = %s"/nickname" SP nickname                            §5.2
nickname_command = b"/nickname"

COMMAND_PREFIX = b"/"  # §5: a line that starts with "/" is a command
NOTICE_PREFIX = b"#"  # §4: a line that starts with "#" is the server's


# -- Notices (§6) -----------------------------------------------------------


class Notice(str, enum.Enum):
    """Every line the server sends of its own, by name (§6).

    A notice that carries a nickname is the text below followed directly by
    the nickname, as in ``#matched_to_bob``.
    """

    WAIT = "#wait"
    MATCHED_TO = "#matched_to_"
    USER_QUIT = "#user_quit"
    NICKNAME_CHANGED = "#nickname_changed_"
    PARTNER_RENAMED = "#partner_renamed_"
    INVALID_NICKNAME = "#invalid_nickname"
    INVALID_MESSAGE = "#invalid_message"
    INVALID_COMMAND = "#invalid_command"
    RATE_LIMITED = "#rate_limited"
    NICKNAME_TIMEOUT = "#nickname_timeout"
    SERVER_FULL = "#server_full"
    SERVER_SHUTDOWN = "#server_shutdown"


#: The notices that end with a nickname (§6).
NOTICES_WITH_NICKNAME = (Notice.MATCHED_TO, Notice.NICKNAME_CHANGED, Notice.PARTNER_RENAMED)


def notice(name: Notice, nick: str = "") -> bytes:
    """Format one notice as a wire line, LF included (§6)."""
    if (name in NOTICES_WITH_NICKNAME) != bool(nick):
        raise ValueError("%s takes a nickname exactly when it names a person" % name.value)
    return (name.value + nick).encode("ascii") + LF


def parse_notice(line: str) -> Tuple[Notice, str]:
    """Split a notice line into its name and nickname; raise ValueError if unknown."""
    for name in Notice:
        if name in NOTICES_WITH_NICKNAME and line.startswith(name.value):
            nick = line[len(name.value) :]
            if NICKNAME_RE.fullmatch(nick):
                return name, nick
        elif line == name.value:
            return name, ""
    raise ValueError("not a mechat notice: %r" % line)


# -- Errors: each carries the reply the spec requires ----------------------


class ProtocolError(Exception):
    """A line the spec refuses; ``notice`` is the reply it requires."""

    notice = Notice.INVALID_MESSAGE


class InvalidNickname(ProtocolError):
    """§3, §5.2: not a nickname."""

    notice = Notice.INVALID_NICKNAME


class InvalidMessage(ProtocolError):
    """§4: not a message."""

    notice = Notice.INVALID_MESSAGE


class InvalidCommand(ProtocolError):
    """§5.3: not a command, or not one allowed in this phase."""

    notice = Notice.INVALID_COMMAND


# -- Phases and events (§7) -------------------------------------------------


class Phase(enum.Enum):
    """Where a connection is in its life (§7)."""

    NICKNAME = "nickname"
    WAITING = "waiting"
    CHATTING = "chatting"
    CLOSED = "closed"


class Event(enum.Enum):
    """What happened to a connection: a kind of line, or something else (§7.5)."""

    NICKNAME = "valid nickname"
    MESSAGE = "valid message"
    QUIT = "/quit"
    RENAME = "/nickname NICK"
    INVALID_NICKNAME = "invalid nickname"
    INVALID_MESSAGE = "invalid message"
    INVALID_COMMAND = "invalid command"
    RATE_LIMITED = "line over the rate"
    PARTNER_FOUND = "partner found"
    PARTNER_LEFT = "partner left"
    HANG_UP = "end of file or reset"
    TIMEOUT = "nickname timeout"
    SHUTDOWN = "server shutdown"


class Transition(NamedTuple):
    """One cell of the state table: what the server sends, and where it goes."""

    reply: str  # human-readable, for the spec and the docs
    next_phase: Phase


_N, _W, _C, _X = Phase.NICKNAME, Phase.WAITING, Phase.CHATTING, Phase.CLOSED
_SHUT = Transition("#server_shutdown, close", _X)

#: The state table of §7.5.  Every (phase, event) pair that can happen has a
#: cell; the tests drive a live server through each one.  A pair that is
#: missing cannot happen (a waiting client has no partner to lose).
TRANSITIONS: Dict[Tuple[Phase, Event], Transition] = {
    (_N, Event.NICKNAME): Transition("#wait, or #matched_to_NICK to both", _W),
    (_N, Event.INVALID_NICKNAME): Transition("#invalid_nickname", _N),
    (_N, Event.INVALID_COMMAND): Transition("#invalid_command", _N),
    (_N, Event.QUIT): Transition("close", _X),
    (_N, Event.RATE_LIMITED): Transition("#rate_limited", _N),
    (_N, Event.HANG_UP): Transition("close", _X),
    (_N, Event.TIMEOUT): Transition("#nickname_timeout, close", _X),
    (_N, Event.SHUTDOWN): _SHUT,
    (_W, Event.PARTNER_FOUND): Transition("#matched_to_NICK", _C),
    (_W, Event.MESSAGE): Transition("#wait (the line goes nowhere)", _W),
    (_W, Event.RENAME): Transition("#nickname_changed_NICK", _W),
    (_W, Event.INVALID_NICKNAME): Transition("#invalid_nickname", _W),
    (_W, Event.INVALID_MESSAGE): Transition("#invalid_message", _W),
    (_W, Event.INVALID_COMMAND): Transition("#invalid_command", _W),
    (_W, Event.RATE_LIMITED): Transition("#rate_limited", _W),
    (_W, Event.QUIT): Transition("close (withdrawn from the queue)", _X),
    (_W, Event.HANG_UP): Transition("close (withdrawn from the queue)", _X),
    (_W, Event.SHUTDOWN): _SHUT,
    (_C, Event.MESSAGE): Transition("relay the line to the partner", _C),
    (_C, Event.RENAME): Transition("#nickname_changed_NICK; partner: #partner_renamed_NICK", _C),
    (_C, Event.INVALID_NICKNAME): Transition("#invalid_nickname", _C),
    (_C, Event.INVALID_MESSAGE): Transition("#invalid_message", _C),
    (_C, Event.INVALID_COMMAND): Transition("#invalid_command", _C),
    (_C, Event.RATE_LIMITED): Transition("#rate_limited", _C),
    (_C, Event.QUIT): Transition("close; partner: #user_quit, close", _X),
    (_C, Event.HANG_UP): Transition("close; partner: #user_quit, close", _X),
    (_C, Event.PARTNER_LEFT): Transition("#user_quit, close", _X),
    (_C, Event.SHUTDOWN): _SHUT,
}

#: Which notice each refusal event answers with (§6).
REFUSALS = {
    Event.INVALID_NICKNAME: Notice.INVALID_NICKNAME,
    Event.INVALID_MESSAGE: Notice.INVALID_MESSAGE,
    Event.INVALID_COMMAND: Notice.INVALID_COMMAND,
    Event.RATE_LIMITED: Notice.RATE_LIMITED,
}


# -- Parsing a line ---------------------------------------------------------


class Parsed(NamedTuple):
    """A line the spec accepts: what it is, and its nickname or message."""

    event: Event
    nickname: str = ""


MESSAGE = Parsed(Event.MESSAGE)
QUIT = Parsed(Event.QUIT)


def parse_line(phase: Phase, line: Line) -> Parsed:
    """Say what ``line`` means in ``phase``; raise ProtocolError if it is refused."""
    if line is TOO_LONG:  # §2.3: the phase's own refusal
        raise (InvalidNickname if phase is Phase.NICKNAME else InvalidMessage)()
    assert isinstance(line, bytes)
    if line.startswith(COMMAND_PREFIX):
        return parse_command(phase, line)
    if phase is Phase.NICKNAME:
        return Parsed(Event.NICKNAME, parse_nickname(line))
    check_message(line)
    return MESSAGE


def parse_nickname(raw: bytes) -> str:
    """Return ``raw`` as a nickname (§3), or raise InvalidNickname."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidNickname() from None
    if not NICKNAME_RE.fullmatch(text):
        raise InvalidNickname()
    return text


def check_message(line: bytes) -> None:
    """Raise InvalidMessage unless ``line`` is a message (§4)."""
    if not line or len(line) > MAX_LINE_OCTETS or line.startswith(NOTICE_PREFIX):
        raise InvalidMessage()
    if len(line.translate(None, FORBIDDEN_IN_MESSAGE_OCTETS)) != len(line):
        raise InvalidMessage()
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage() from None


def parse_command(phase: Phase, line: bytes) -> Parsed:
    """Match a command exactly, case and all (§5.3); raise if refused."""
    name, space, argument = line.partition(b" ")
    if line == quit_command:
        return QUIT
    if name == nickname_command and phase is not Phase.NICKNAME:
        # §5.2: "/nickname" alone, or with a bad name, is a bad nickname.
        return Parsed(Event.RENAME, parse_nickname(argument if space else b""))
    raise InvalidCommand()


def event_of(error: ProtocolError) -> Event:
    """Return the refusal event that ``error`` stands for (§7.5)."""
    for event, name in REFUSALS.items():
        if name is error.notice:
            return event
    raise ValueError(error)
