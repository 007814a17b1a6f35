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
  them.  The cutting itself is :class:`LineCutter`'s, which every reader of
  a server uses as it is, to see exactly what was sent.
* :func:`parse_line` says what a line means in the current :class:`Phase`
  (§3-§5) and raises a :class:`ProtocolError` whose ``notice`` is the reply
  the spec requires.
* :data:`TRANSITIONS` is the state machine of §7 as data: for each phase and
  event, the reply and the next phase.  :func:`next_phase` looks a cell up,
  and raises :class:`NoTransition` for a pair that cannot happen; the
  Matchmaker changes a phase only through it.  The tests drive a live server
  through every cell, and the docs draw the state diagram from the table.
* :func:`notice` formats the server's lines (§6).
"""

import enum
import fnmatch
import re
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

#: Protocol version, §1.  There is no version exchange on the wire; the
#: number names the edition of the spec that this code implements.
PROTOCOL_VERSION = "2.0"

#: The port that both ``serve`` and ``chat`` use when none is given (§1).
DEFAULT_PORT = 7878

# -- Limits (§9) ------------------------------------------------------------
# Each limit is one constant with its reason; the server takes an override
# for each from its constructor and its command line.

#: §2.3: a line holds at most this many octets before its LF (a CR before
#: the LF is not counted): the grammar's ``line-octets`` rule.  The seed
#: design's 2,000-byte message limit; it is also the framing limit, so that
#: the reader never needs to keep more.
MAX_LINE_OCTETS = 2000

#: §2.3: a server line holds at most this many octets before its LF: the
#: grammar's ``server-line-octets`` rule.  The longest prefix before a
#: client's text is a room line's (below); 2100 leaves room to spare.
MAX_SERVER_LINE_OCTETS = 2100

#: §3: the longest nickname, in characters (all of them ASCII, so octets).
MAX_NICKNAME_CHARS = 30

#: §6.1: the longest /who pattern, in characters: a nickname's length.
MAX_PATTERN_CHARS = 30

#: §3.2: the longest room name, in characters (all of them ASCII).
MAX_ROOM_CHARS = 30

#: §2.3, §7.6: the most a room line adds before a message: ``#in_``, the
#: room, ``_``, the sender's nickname and a SP: 66 octets.
MAX_ROOM_LINE_PREFIX_OCTETS = len("#in_") + MAX_ROOM_CHARS + len("_") + MAX_NICKNAME_CHARS + len(" ")

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

#: §9.6: octets a connection may owe its client beyond what the socket has
#: taken (IRC's SendQ, in bytes).  128 lines of the longest kind: a client
#: that falls that far behind has stopped reading.  With the 10,000 clients
#: of §9.3, no more than 2.5 GiB however many of them stop reading.
DEFAULT_SEND_QUEUE = 262_144

#: §9.7: /all lines per second one client may send, in bursts of one.  One
#: /all is written to every named client, so its rate is its own, far below
#: the rate of lines (§9.5).  0 turns the limit off.
DEFAULT_ALL_RATE = 1.0

#: §9.8: rooms the server keeps at once.  Rooms live until the server stops
#: (§5.8), so without a limit a script could grow the server's memory one
#: /create at a time; a thousand rooms is one for every ten clients of §9.3,
#: and costs well under a megabyte.
DEFAULT_MAX_ROOMS = 1000

#: §9.9: members of one room.  A line in a room is appended to every other
#: member's outbox under the Matchmaker's lock, and written by the sender's
#: thread: a class of 300 fits with room to spare, and one line to 500
#: members costs the sender's thread about a millisecond.
DEFAULT_MAX_MEMBERS = 500

#: §9.10: messages kept for one account while it is away.  A login posts
#: the whole mailbox at once, and 100 of the longest ``#stored_from_``
#: lines (2,059 octets each) come to 205,900 octets, inside one send queue
#: (DEFAULT_SEND_QUEUE): a login is never dropped for its own mailbox.  It
#: also caps what a stranger can make the disk keep for one account.
DEFAULT_MAILBOX_SIZE = 100

#: §3.3: a password's length, in visible ASCII characters.
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 64


# -- Framing (§2) -----------------------------------------------------------

# LF = %x0A   (an RFC 5234 core rule): ends every line                   §2.1
LF = b"\n"
# CR = %x0D   (an RFC 5234 core rule): one just before LF is dropped      §2.2
CR = b"\r"


class TooLong:
    """Stands for a line that crossed :data:`MAX_LINE_OCTETS` (§2.3)."""

    def __repr__(self) -> str:
        return "TOO_LONG"


#: The one :class:`TooLong` value; :class:`LineBuffer` yields it in place of
#: a line that was too long, whose bytes were thrown away as they arrived.
TOO_LONG = TooLong()

Line = Union[bytes, TooLong]


class LineCutter:
    """Cut a byte stream at each LF (§2.1), keeping every other octet as it came.

    This is the one place where bytes become lines.  A reader that must see
    exactly what a server sent, a CR or a line of any length included (the
    conformance kit, the load tester, the tests' peers), needs nothing more.
    The server and the chat client read with :class:`LineBuffer`, which adds
    the rules of §2.2 and §2.3 to this one.
    """

    def __init__(self) -> None:
        self.unterminated = b""  # the bytes after the last LF

    def cut(self, data: bytes) -> List[bytes]:
        """Add ``data`` and return every line it completes, in order, without its LF."""
        pieces = data.split(LF)
        pieces[0] = self.unterminated + pieces[0]  # copies one piece, not all of ``data``
        self.unterminated = pieces.pop()  # maybe empty
        return pieces


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
        self._cutter = LineCutter()
        self._discarding = False  # inside a line that is already too long

    def feed(self, data: bytes) -> List[Line]:
        """Add ``data`` and return every line it completes, in order."""
        lines: List[Line] = []
        for piece in self._cutter.cut(data):
            lines.append(self._finish(piece))
            self._discarding = False
        if len(self._cutter.unterminated) > self.max_line + len(CR):
            self._cutter.unterminated = b""
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
        return len(self._cutter.unterminated)


# -- Grammar rules (spec/mechat.abnf) ---------------------------------------
# One constant per rule that the code needs, named after the rule, with the
# rule quoted above it.  The patterns match whole lines (``fullmatch``).
# Two things ABNF says at the octet level are checked another way here:
#
# * line-octets = 0*2000( %x00-09 / %x0B-FF )                           §2.3
#   is LineBuffer's job (it cuts at LF and counts, MAX_LINE_OCTETS), and
#   check_message's ``len(line)``;
# * the UTF8-2, UTF8-3, UTF8-4 and UTF8-tail rules of RFC 3629            §2.4
#   are the strict UTF-8 decoder's: a line that decodes matches them, and
#   each UTF8-2/3/4 sequence becomes one code point from U+0080 up.  So the
#   message rules below are written over decoded text.

# SP = %x20   (an RFC 5234 core rule)                                    §5.2
SP = b" "
# VCHAR = %x21-7E   (an RFC 5234 core rule)                              §3
VCHAR = r"[\x21-\x7e]"
# nick-first = %x21-2E / %x30-7E                                          §3
nick_first = r"[\x21-\x2e\x30-\x7e]"
# nickname = nick-first *29VCHAR                                          §3
nickname = r"%s%s{0,%d}" % (nick_first, VCHAR, MAX_NICKNAME_CHARS - 1)
NICKNAME_RE = re.compile(nickname)

# message-char = HTAB / %x20-7E / UTF8-2 / UTF8-3 / UTF8-4                 §4
message_char = r"[\t\x20-\x7e\x80-\U0010ffff]"
# message-first = HTAB / %x20-22 / %x24-2E / %x30-7E / UTF8-2 / UTF8-3 / UTF8-4   §4
message_first = r"[\t\x20-\x22\x24-\x2e\x30-\x7e\x80-\U0010ffff]"
# message = message-first *1999message-char                                §4
# (the count is left to len(): 2000 octets is the limit, and characters
# can be longer than one octet)
message = message_first + message_char + "*"
MESSAGE_RE = re.compile(message)
# The octets of the ASCII characters that are not a message-char (the C0
# controls but HTAB, and DEL).  UTF-8 never uses them inside a multi-octet
# character, so check_message() looks for them in the undecoded line:
# bytes.translate() does that 4x faster than the regex on a 1,900-octet line
# (1.3 us against 5.5 us).  Measured, flood of 100 pairs with 1,900-octet
# lines on one CPU: server CPU per line 14.8 -> 8.3 us, 69k -> 116k lines/s.
FORBIDDEN_IN_MESSAGE_OCTETS = bytes(o for o in range(0x80) if not re.fullmatch(message_char, chr(o)))

# quit-command = %s"/quit"                                                §5.1
quit_command = b"/quit"
# nickname-verb = %s"/nickname"                                           §5.2
nickname_verb = b"/nickname"
# who-verb = %s"/who"                                                      §5.4
who_verb = b"/who"
# pattern = 1*30VCHAR                                                      §6.1
pattern = r"%s{1,%d}" % (VCHAR, MAX_PATTERN_CHARS)
PATTERN_RE = re.compile(pattern)
# msg-verb = %s"/msg"                                                      §5.5
msg_verb = b"/msg"
# all-verb = %s"/all"                                                      §5.6
all_verb = b"/all"
# next-command = %s"/next"                                                 §5.7
next_command = b"/next"
# text = 1*message-char                                                     §5.5
# (the octet limit is line-octets': decode_text counts with len(); the
# notices that carry a text match it through NOTICE_TAILS)
text = message_char + "+"
# count = %x30 / %x31-39 *9DIGIT                                           §6.1
count = r"0|[1-9][0-9]{0,9}"
COUNT_RE = re.compile(count)
# room = 1*30( ALPHA / DIGIT / %x2D )                                       §3.2
room = r"[A-Za-z0-9-]{1,%d}" % MAX_ROOM_CHARS
ROOM_RE = re.compile(room)
# create-verb = %s"/create"                                                 §5.8
create_verb = b"/create"
# rooms-verb = %s"/rooms"                                                   §5.9
rooms_verb = b"/rooms"
# join-verb = %s"/join"                                                     §5.10
join_verb = b"/join"
# members-command = %s"/members"                                           §5.11
members_command = b"/members"
# leave-command = %s"/leave"                                               §5.12
leave_command = b"/leave"
# password = 8*64VCHAR                                                       §3.3
password = r"%s{%d,%d}" % (VCHAR, MIN_PASSWORD_CHARS, MAX_PASSWORD_CHARS)
PASSWORD_RE = re.compile(password)
# register-verb = %s"/register"                                             §5.13
register_verb = b"/register"
# login-verb = %s"/login"                                                   §5.14
login_verb = b"/login"
# users-verb = %s"/users"                                                   §5.15
users_verb = b"/users"
# delete-verb = %s"/delete"                                                 §5.16
delete_verb = b"/delete"
# stored-time = 4DIGIT %x2D 2DIGIT %x2D 2DIGIT %s"T" 2DIGIT %x3A 2DIGIT %x3A 2DIGIT %s"Z"   §5.14
stored_time = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"

COMMAND_PREFIX = b"/"  # §5: a line that starts with "/" is a command
NOTICE_PREFIX = b"#"  # §4, §6: a line that starts with "#" is the server's


# -- Notices (§6) -----------------------------------------------------------


class Notice(str, enum.Enum):
    """Every line the server sends of its own, by name (§6).

    Each member is named after its ABNF rule (``matched-to`` is
    MATCHED_TO), whose text is quoted above it.  A notice that carries a
    nickname is the value below followed directly by the nickname, as in
    ``#matched_to_bob``.
    """

    # wait = %s"#wait"                                       §6, §7.1, §7.2
    WAIT = "#wait"
    # matched-to = %s"#matched_to_" nickname                 §6, §7.1
    MATCHED_TO = "#matched_to_"
    # user-quit = %s"#user_quit"                             §6, §8
    USER_QUIT = "#user_quit"
    # nickname-changed = %s"#nickname_changed_" nickname     §6, §5.2
    NICKNAME_CHANGED = "#nickname_changed_"
    # partner-renamed = %s"#partner_renamed_" nickname       §6, §5.2
    PARTNER_RENAMED = "#partner_renamed_"
    # invalid-nickname = %s"#invalid_nickname"               §6, §3, §5.2
    INVALID_NICKNAME = "#invalid_nickname"
    # invalid-message = %s"#invalid_message"                 §6, §4
    INVALID_MESSAGE = "#invalid_message"
    # invalid-command = %s"#invalid_command"                 §6, §5.3
    INVALID_COMMAND = "#invalid_command"
    # rate-limited = %s"#rate_limited"                       §6, §9.5
    RATE_LIMITED = "#rate_limited"
    # nickname-timeout = %s"#nickname_timeout"               §6, §9.2
    NICKNAME_TIMEOUT = "#nickname_timeout"
    # server-full = %s"#server_full"                         §6, §9.3
    SERVER_FULL = "#server_full"
    # server-shutdown = %s"#server_shutdown"                 §6, §10
    SERVER_SHUTDOWN = "#server_shutdown"
    # nickname-taken = %s"#nickname_taken"                   §6, §3.1
    NICKNAME_TAKEN = "#nickname_taken"
    # online = %s"#online_" count *( SP nickname )           §6, §5.4, §6.1
    ONLINE = "#online_"
    # from = %s"#from_" nickname SP text                     §6, §5.5
    FROM = "#from_"
    # sent-to = %s"#sent_to_" nickname                       §6, §5.5
    SENT_TO = "#sent_to_"
    # no-such-user = %s"#no_such_user_" nickname             §6, §5.5
    NO_SUCH_USER = "#no_such_user_"
    # all-from = %s"#all_from_" nickname SP text             §6, §5.6
    ALL_FROM = "#all_from_"
    # broadcast = %s"#broadcast_" count                      §6, §5.6
    BROADCAST = "#broadcast_"
    # room-created = %s"#room_created_" room                 §6, §5.8
    ROOM_CREATED = "#room_created_"
    # room-exists = %s"#room_exists_" room                   §6, §5.8
    ROOM_EXISTS = "#room_exists_"
    # too-many-rooms = %s"#too_many_rooms"                   §6, §5.8, §9.8
    TOO_MANY_ROOMS = "#too_many_rooms"
    # invalid-room = %s"#invalid_room"                       §6, §3.2
    INVALID_ROOM = "#invalid_room"
    # rooms = %s"#rooms_" count *( SP room )                 §6, §5.9, §6.1
    ROOMS = "#rooms_"
    # joined = %s"#joined_" room                             §6, §5.10
    JOINED = "#joined_"
    # entered = %s"#entered_" room %x5F nickname              §6, §5.10
    ENTERED = "#entered_"
    # no-such-room = %s"#no_such_room_" room                 §6, §5.10
    NO_SUCH_ROOM = "#no_such_room_"
    # room-full = %s"#room_full_" room                       §6, §5.10, §9.9
    ROOM_FULL = "#room_full_"
    # in = %s"#in_" room %x5F nickname SP message             §6, §7.6
    IN = "#in_"
    # members = %s"#members_" count *( SP nickname )         §6, §5.11, §6.1
    MEMBERS = "#members_"
    # not-in-room = %s"#not_in_room"                         §6, §5.11, §5.12
    NOT_IN_ROOM = "#not_in_room"
    # left = %s"#left_" room                                 §6, §5.12
    LEFT = "#left_"
    # exited = %s"#exited_" room %x5F nickname                §6, §5.12, §7.6
    EXITED = "#exited_"
    # renamed = %s"#renamed_" room %x5F nickname SP nickname  §6, §7.6
    RENAMED = "#renamed_"
    # registered = %s"#registered_" nickname                 §6, §5.13
    REGISTERED = "#registered_"
    # invalid-password = %s"#invalid_password"               §6, §3.3, §5.13
    INVALID_PASSWORD = "#invalid_password"
    # logged-in = %s"#logged_in_" nickname                   §6, §5.14
    LOGGED_IN = "#logged_in_"
    # login-failed = %s"#login_failed"                       §6, §5.14, §9.11
    LOGIN_FAILED = "#login_failed"
    # stored-from = %s"#stored_from_" nickname SP stored-time SP text   §6, §5.14
    STORED_FROM = "#stored_from_"
    # session-replaced = %s"#session_replaced"               §6, §5.14
    SESSION_REPLACED = "#session_replaced"
    # stored-for = %s"#stored_for_" nickname                 §6, §5.5, §7.7
    STORED_FOR = "#stored_for_"
    # mailbox-full = %s"#mailbox_full_" nickname             §6, §5.5, §9.10
    MAILBOX_FULL = "#mailbox_full_"
    # accounts = %s"#accounts_" count *( SP nickname )       §6, §5.15, §6.1
    ACCOUNTS = "#accounts_"
    # account-deleted = %s"#account_deleted"                 §6, §5.16
    ACCOUNT_DELETED = "#account_deleted"
    # not-logged-in = %s"#not_logged_in"                     §6, §5.16
    NOT_LOGGED_IN = "#not_logged_in"
    # nickname-locked = %s"#nickname_locked"                 §6, §5.2
    NICKNAME_LOCKED = "#nickname_locked"
    # tls-required = %s"#tls_required"                       §6, §2.5
    TLS_REQUIRED = "#tls_required"


#: A room, ``_`` and a nickname: the argument of a notice about a member.
member = room + "_" + nickname
#: A list's items after its count (§6.1).
nicknames = "%s(?: %s)*" % (nickname, nickname)
rooms = "%s(?: %s)*" % (room, room)


class Tail(NamedTuple):
    """The rules for what follows a notice's name (§6): its argument, then maybe SP and a rest.

    ``rest`` is None when nothing may follow; ``listed`` says that the SP
    and the rest may be left out, as in a list that is empty.
    """

    argument: str
    rest: Optional[str] = None
    listed: bool = False

    def compile(self) -> "re.Pattern[str]":
        """Return one pattern whose groups are the argument and the rest."""
        if self.rest is None:
            return re.compile("(%s)()" % self.argument)
        space = "(?: (%s))?" if self.listed else " (%s)"
        return re.compile("(%s)" % self.argument + space % self.rest)


#: Every notice that carries an argument, and the rules of its tail.
NOTICE_TAILS: Dict[Notice, Tail] = {
    Notice.MATCHED_TO: Tail(nickname),
    Notice.NICKNAME_CHANGED: Tail(nickname),
    Notice.PARTNER_RENAMED: Tail(nickname),
    Notice.SENT_TO: Tail(nickname),
    Notice.NO_SUCH_USER: Tail(nickname),
    Notice.ONLINE: Tail(count, nicknames, listed=True),
    Notice.FROM: Tail(nickname, text),
    Notice.ALL_FROM: Tail(nickname, text),
    Notice.BROADCAST: Tail(count),
    Notice.ROOM_CREATED: Tail(room),
    Notice.ROOM_EXISTS: Tail(room),
    Notice.ROOMS: Tail(count, rooms, listed=True),
    Notice.JOINED: Tail(room),
    Notice.ENTERED: Tail(member),
    Notice.NO_SUCH_ROOM: Tail(room),
    Notice.ROOM_FULL: Tail(room),
    Notice.IN: Tail(member, message),
    Notice.MEMBERS: Tail(count, nicknames, listed=True),
    Notice.LEFT: Tail(room),
    Notice.EXITED: Tail(member),
    Notice.RENAMED: Tail(member, nickname),
    Notice.REGISTERED: Tail(nickname),
    Notice.LOGGED_IN: Tail(nickname),
    Notice.STORED_FROM: Tail(nickname, stored_time + " " + text),
    Notice.STORED_FOR: Tail(nickname),
    Notice.MAILBOX_FULL: Tail(nickname),
    Notice.ACCOUNTS: Tail(count, nicknames, listed=True),
}

#: Every notice that carries an argument after its name: ``_`` is its last character.
NOTICES_WITH_ARGUMENT = tuple(NOTICE_TAILS)


def _notices_whose(argument: str, ending: bool = False) -> Tuple[Notice, ...]:
    """Return the notices whose argument has the rule ``argument``; with ``ending``, those that end there."""
    return tuple(
        name
        for name, tail in NOTICE_TAILS.items()
        if tail.argument == argument and not (ending and tail.rest is not None)
    )


#: The notices that end with a nickname, and nothing after it (§6).
NOTICES_WITH_NICKNAME = _notices_whose(nickname, ending=True)

#: The notices that end with a room name (§6).
NOTICES_WITH_ROOM = _notices_whose(room, ending=True)

#: The notices whose argument is a room, ``_`` and a nickname (§6): a room
#: name has no ``_`` (§3.2), so the first one splits the two.
NOTICES_ABOUT_A_MEMBER = _notices_whose(member)

#: The notices about a member that end with it: entries and exits.
NOTICES_WITH_MEMBER = _notices_whose(member, ending=True)

#: The notices whose argument is followed by SP and a text: what a client
#: wrote (for #stored_from_, after the time it was stored), or (for
#: #renamed_) the new nickname (§6).
NOTICES_WITH_TEXT = tuple(
    name for name, tail in NOTICE_TAILS.items() if tail.rest is not None and not tail.listed
)

#: The notices that end with a count, maybe followed by a list (§6.1).
NOTICES_WITH_COUNT = _notices_whose(count)

_TAIL_RES = {name: tail.compile() for name, tail in NOTICE_TAILS.items()}


def notice(name: Notice, argument: str = "", text: bytes = b"") -> bytes:
    """Format one notice as a wire line, LF included (§6).

    ``argument`` is the nickname, room or count that follows the name
    directly; ``text`` is what follows it after one SP.
    """
    if (name in NOTICES_WITH_ARGUMENT) != bool(argument) or (name in NOTICES_WITH_TEXT) != bool(text):
        raise ValueError("%s takes an argument, or a text, exactly when its rule has one" % name.value)
    line = (name.value + argument).encode("ascii")
    return line + SP + text + LF if text else line + LF


class NoticeLine(NamedTuple):
    """A notice as a client reads it: its name, its argument, and what follows the first SP."""

    name: Notice
    argument: str = ""
    text: str = ""


def parse_notice(line: str) -> NoticeLine:
    """Split a notice line into its name, argument and text; raise ValueError if it is none (§6).

    No notice's name is the start of another's (§6), so at most one name fits.
    """
    for name in Notice:
        if name not in _TAIL_RES:
            if line == name.value:
                return NoticeLine(name)
        elif line.startswith(name.value):
            match = _TAIL_RES[name].fullmatch(line, len(name.value))
            if match:
                return NoticeLine(name, match.group(1), match.group(2) or "")
    raise ValueError("not a mechat notice: %r" % line)


def list_line(name: Notice, names: List[str]) -> bytes:
    """Format a list (§6.1): the count of all ``names``, then those sorted first that fit in a line."""
    names = sorted(names, key=str.lower)
    line = (name.value + str(len(names))).encode("ascii")
    for item in names:
        entry = SP + item.encode("ascii")
        if len(line) + len(entry) > MAX_LINE_OCTETS:
            break
        line += entry
    return line + LF


def matcher(pattern: str) -> Callable[[str], object]:
    """Return a test of a lower-case name against a list's pattern (§6.1).

    ``*`` stands for any run of characters and ``?`` for one, as in
    :mod:`fnmatch`, in any case.  A ``[`` is itself, not the start of a
    set.  The pattern is compiled here rather than by fnmatch.fnmatch(),
    whose cache keeps up to 32,768 patterns a client could choose; the re
    module's own cache is bounded, and a pattern is at most 30 characters.
    """
    return re.compile(fnmatch.translate(pattern.lower().replace("[", "[[]"))).fullmatch


# -- Phases and events (§7) -------------------------------------------------


class Phase(enum.Enum):
    """Where a connection is in its life (§7)."""

    NICKNAME = "nickname"
    WAITING = "waiting"
    CHATTING = "chatting"
    IN_ROOM = "in a room"
    CLOSED = "closed"

    # Each member is one object, equal only to itself, so identity is a
    # true hash.  Enum's own __hash__ is Python code, and every relayed
    # batch looks a (phase, event) pair up in TRANSITIONS: two Python calls
    # fewer a batch (ping-pong of one pair: 72 -> 68 calls a round trip).
    __hash__ = object.__hash__


#: The phases the relay path asks about, as plain names.  On Python 3.11
#: each ``Phase.X`` goes through the enum metaclass's __getattr__ hook, 0.13 us
#: against 0.01 us for a global, and the server asks a few times a line.
NICKNAME, IN_ROOM, CLOSED = Phase.NICKNAME, Phase.IN_ROOM, Phase.CLOSED


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
    SERVER_FULL = "server full"
    DROPPED = "write failed or too slow"
    NICKNAME_TAKEN = "nickname taken"
    WHO = "/who [PATTERN]"
    DIRECT = "/msg NICK TEXT"
    BROADCAST = "/all TEXT"
    NEXT = "/next"
    CREATE = "/create ROOM"
    ROOMS = "/rooms [PATTERN]"
    JOIN = "/join ROOM"
    JOIN_REFUSED = "/join ROOM, unknown or full"
    MEMBERS = "/members"
    LEAVE = "/leave"
    INVALID_ROOM = "invalid room name"
    REGISTER = "/register NICK PASSWORD"
    INVALID_PASSWORD = "/register with an invalid password"
    LOGIN = "/login NICK PASSWORD"
    LOGIN_FAILED = "failed login or /delete"
    TOO_MANY_FAILURES = "failed login or /delete, the last allowed"
    SESSION_REPLACED = "a newer login of the account"
    STORE = "/msg NICK TEXT, NICK an account away"
    USERS = "/users [PATTERN]"
    DELETE = "/delete PASSWORD"
    NOT_LOGGED_IN = "/delete as a guest"
    NICKNAME_LOCKED = "/nickname NICK, logged in"

    __hash__ = object.__hash__  # as Phase's, for the lookups in TRANSITIONS


#: The notice of §6 for each event that only its own client is told of:
#: the refusals (the line is not acted on; the phase stays as it was), and
#: the ends that are the server's doing.
ANSWERS: Dict[Event, Notice] = {
    Event.INVALID_NICKNAME: Notice.INVALID_NICKNAME,
    Event.INVALID_MESSAGE: Notice.INVALID_MESSAGE,
    Event.INVALID_COMMAND: Notice.INVALID_COMMAND,
    Event.RATE_LIMITED: Notice.RATE_LIMITED,
    Event.TIMEOUT: Notice.NICKNAME_TIMEOUT,
    Event.SERVER_FULL: Notice.SERVER_FULL,
    Event.SHUTDOWN: Notice.SERVER_SHUTDOWN,
    Event.NICKNAME_TAKEN: Notice.NICKNAME_TAKEN,
    Event.INVALID_ROOM: Notice.INVALID_ROOM,
    Event.INVALID_PASSWORD: Notice.INVALID_PASSWORD,
    Event.LOGIN_FAILED: Notice.LOGIN_FAILED,
    Event.NOT_LOGGED_IN: Notice.NOT_LOGGED_IN,
    Event.NICKNAME_LOCKED: Notice.NICKNAME_LOCKED,
}


# -- Errors: each carries the reply the spec requires ----------------------


class ProtocolError(Exception):
    """A line the spec refuses; ``event`` is its row of §7.5, ``notice`` the reply it requires."""

    event: Event
    notice: Notice


class InvalidNickname(ProtocolError):
    """§3, §5.2: not a nickname."""

    event = Event.INVALID_NICKNAME
    notice = Notice.INVALID_NICKNAME


class InvalidMessage(ProtocolError):
    """§4: not a message."""

    event = Event.INVALID_MESSAGE
    notice = Notice.INVALID_MESSAGE


class InvalidCommand(ProtocolError):
    """§5.3: not a command, or not one allowed in this phase."""

    event = Event.INVALID_COMMAND
    notice = Notice.INVALID_COMMAND


class InvalidRoom(ProtocolError):
    """§3.2: /create or /join with something that is not a room name."""

    event = Event.INVALID_ROOM
    notice = Notice.INVALID_ROOM


class InvalidPassword(ProtocolError):
    """§3.3: /register with something that is not a password."""

    event = Event.INVALID_PASSWORD
    notice = Notice.INVALID_PASSWORD


class LoginFailed(ProtocolError):
    """§5.14, §5.16: a /login or /delete whose nickname or password is malformed: a failed login."""

    event = Event.LOGIN_FAILED
    notice = Notice.LOGIN_FAILED


class Transition(NamedTuple):
    """One cell of the state table: what the server sends, and where it goes."""

    reply: str  # human-readable, for the spec and the docs
    next_phase: Phase


_N, _W, _C, _R, _X = Phase.NICKNAME, Phase.WAITING, Phase.CHATTING, Phase.IN_ROOM, Phase.CLOSED
_SHUT = Transition("#server_shutdown, close", _X)
_JOINED = "#joined_ROOM; members: #entered_ROOM_NICK"

#: The rows that are the same wherever a named client is (§5.4-§5.12): they
#: answer the client alone and leave it where it was.
_ANYWHERE: Dict[Event, str] = {
    Event.INVALID_NICKNAME: "#invalid_nickname",
    Event.INVALID_MESSAGE: "#invalid_message",
    Event.INVALID_COMMAND: "#invalid_command",
    Event.INVALID_ROOM: "#invalid_room",
    Event.RATE_LIMITED: "#rate_limited",
    Event.NICKNAME_TAKEN: "#nickname_taken",
    Event.WHO: "#online_N NICK ...",
    Event.DIRECT: "#sent_to_NICK, and NICK: #from_SENDER TEXT; or #no_such_user_NICK",
    Event.BROADCAST: "#broadcast_N, and every other named client: #all_from_SENDER TEXT",
    Event.CREATE: "#room_created_ROOM; or #room_exists_ROOM, #too_many_rooms",
    Event.ROOMS: "#rooms_N ROOM ...",
    Event.JOIN_REFUSED: "#no_such_room_ROOM or #room_full_ROOM",
    Event.STORE: "#stored_for_NICK once on disk; or #mailbox_full_NICK",
    Event.USERS: "#accounts_N NICK ...",
    Event.DELETE: "#account_deleted (the session goes on as a guest)",
    Event.NOT_LOGGED_IN: "#not_logged_in",
    Event.LOGIN_FAILED: "#login_failed",
    Event.NICKNAME_LOCKED: "#nickname_locked",
}

#: How a named client's session ends when the server ends it, by phase: the
#: reply is the ending's notice (or none) followed by these.
_ENDS = {
    Phase.WAITING: "close (withdrawn from the queue)",
    Phase.CHATTING: "close; partner: #user_quit, close",
    Phase.IN_ROOM: "close; members: #exited_ROOM_NICK",
}


def _ended(phase: Phase) -> Dict[Tuple[Phase, Event], Transition]:
    """Return the cells of the endings that are the same in every named phase but for what the others see."""
    return {
        (phase, Event.TOO_MANY_FAILURES): Transition("#login_failed, " + _ENDS[phase], Phase.CLOSED),
        (phase, Event.SESSION_REPLACED): Transition("#session_replaced, " + _ENDS[phase], Phase.CLOSED),
    }


#: The state table of §7.5.  Every (phase, event) pair that can happen has a
#: cell; the tests drive a live server through each one.  A pair that is
#: missing cannot happen (a waiting client has no partner to lose), and
#: :func:`next_phase` raises if asked for one.
TRANSITIONS: Dict[Tuple[Phase, Event], Transition] = {
    (_N, Event.NICKNAME): Transition("#wait, or #matched_to_NICK to both", _W),
    (_N, Event.INVALID_NICKNAME): Transition("#invalid_nickname", _N),
    (_N, Event.INVALID_COMMAND): Transition("#invalid_command", _N),
    (_N, Event.QUIT): Transition("close", _X),
    (_N, Event.RATE_LIMITED): Transition("#rate_limited", _N),
    (_N, Event.HANG_UP): Transition("close", _X),
    (_N, Event.TIMEOUT): Transition("#nickname_timeout, close", _X),
    (_N, Event.SHUTDOWN): _SHUT,
    (_N, Event.SERVER_FULL): Transition("#server_full, close", _X),
    (_N, Event.DROPPED): Transition("close", _X),
    (_N, Event.NICKNAME_TAKEN): Transition("#nickname_taken", _N),
    (_N, Event.REGISTER): Transition("#registered_NICK, then #wait, or #matched_to_NICK to both", _W),
    (_N, Event.INVALID_PASSWORD): Transition("#invalid_password", _N),
    (_N, Event.LOGIN): Transition(
        "#logged_in_NICK, each #stored_from_SENDER TIME TEXT oldest first, then #wait, or"
        " #matched_to_NICK to both; an older session of NICK: #session_replaced, close",
        _W,
    ),
    (_N, Event.LOGIN_FAILED): Transition("#login_failed", _N),
    (_N, Event.TOO_MANY_FAILURES): Transition("#login_failed, close", _X),
    (_N, Event.SESSION_REPLACED): Transition("#session_replaced, close (a login reading its mailbox)", _X),
    **{(_W, event): Transition(reply, _W) for event, reply in _ANYWHERE.items()},
    (_W, Event.PARTNER_FOUND): Transition("#matched_to_NICK", _C),
    (_W, Event.MESSAGE): Transition("#wait (the line goes nowhere)", _W),
    (_W, Event.RENAME): Transition("#nickname_changed_NICK", _W),
    (_W, Event.QUIT): Transition("close (withdrawn from the queue)", _X),
    (_W, Event.HANG_UP): Transition("close (withdrawn from the queue)", _X),
    (_W, Event.SHUTDOWN): _SHUT,
    (_W, Event.DROPPED): Transition("close (withdrawn from the queue)", _X),
    (_W, Event.NEXT): Transition("#wait (it keeps its place)", _W),
    (_W, Event.JOIN): Transition(_JOINED + " (withdrawn from the queue)", _R),
    (_W, Event.MEMBERS): Transition("#not_in_room", _W),
    (_W, Event.LEAVE): Transition("#not_in_room", _W),
    **_ended(_W),
    **{(_C, event): Transition(reply, _C) for event, reply in _ANYWHERE.items()},
    (_C, Event.MESSAGE): Transition("relay the line to the partner", _C),
    (_C, Event.RENAME): Transition("#nickname_changed_NICK; partner: #partner_renamed_NICK", _C),
    (_C, Event.QUIT): Transition("close; partner: #user_quit, close", _X),
    (_C, Event.HANG_UP): Transition("close; partner: #user_quit, close", _X),
    (_C, Event.PARTNER_LEFT): Transition("#user_quit, close", _X),
    (_C, Event.SHUTDOWN): _SHUT,
    (_C, Event.DROPPED): Transition("close; partner: #user_quit, close", _X),
    (_C, Event.NEXT): Transition("#wait, or #matched_to_NICK to both; partner: #user_quit, close", _W),
    (_C, Event.JOIN): Transition(_JOINED + "; partner: #user_quit, close", _R),
    (_C, Event.MEMBERS): Transition("#not_in_room", _C),
    (_C, Event.LEAVE): Transition("#not_in_room", _C),
    **_ended(_C),
    **{(_R, event): Transition(reply, _R) for event, reply in _ANYWHERE.items()},
    (_R, Event.MESSAGE): Transition("every other member: #in_ROOM_SENDER MESSAGE", _R),
    (_R, Event.RENAME): Transition("#nickname_changed_NICK; members: #renamed_ROOM_OLD NICK", _R),
    (_R, Event.QUIT): Transition("close; members: #exited_ROOM_NICK", _X),
    (_R, Event.HANG_UP): Transition("close; members: #exited_ROOM_NICK", _X),
    (_R, Event.SHUTDOWN): _SHUT,
    (_R, Event.DROPPED): Transition("close; members: #exited_ROOM_NICK", _X),
    (_R, Event.JOIN): Transition(
        _JOINED + "; old room's members: #exited_OLD_NICK (the same room: #joined_ROOM alone)", _R
    ),
    (_R, Event.MEMBERS): Transition("#members_N NICK ...", _R),
    **_ended(_R),
    (_R, Event.LEAVE): Transition(
        "#left_ROOM; members: #exited_ROOM_NICK; then #wait, or #matched_to_NICK to both", _W
    ),
}


class NoTransition(LookupError):
    """An event that §7.5 says cannot happen in the phase it came in: a bug in the server."""


#: TRANSITIONS' next phases, by phase and then event: the same cells, looked
#: up without building a key, since every relayed batch looks one up.
_NEXT_PHASES: Dict[Phase, Dict[Event, Phase]] = {phase: {} for phase in Phase}
for (_phase, _event), _cell in TRANSITIONS.items():
    _NEXT_PHASES[_phase][_event] = _cell.next_phase


def next_phase(phase: Phase, event: Event) -> Phase:
    """Return the phase §7.5 gives ``event`` in ``phase``; raise NoTransition if it has no cell.

    The one way a phase changes (h11's ``_state.py`` has the same shape): a
    new row of the table is then a new entry in TRANSITIONS, and an event
    the code sends where the table has no cell fails loudly instead of
    leaving a connection in a phase the spec does not know.
    """
    try:
        return _NEXT_PHASES[phase][event]
    except KeyError:
        raise NoTransition("%s cannot happen in phase %s (§7.5)" % (event.value, phase.name)) from None


# -- Parsing a line ---------------------------------------------------------


class Parsed(NamedTuple):
    """A line the spec accepts: what it is, and the nickname, text, pattern or room it carries."""

    event: Event
    nickname: str = ""
    text: bytes = b""
    pattern: str = ""
    room: str = ""


#: What every message parses as: one object, so a reader can test ``is MESSAGE``.
MESSAGE = Parsed(Event.MESSAGE)
QUIT = Parsed(Event.QUIT)
NEXT = Parsed(Event.NEXT)
MEMBERS = Parsed(Event.MEMBERS)
LEAVE = Parsed(Event.LEAVE)


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
    decoded = decode_text(line)
    # With no forbidden octet, every character is a message-char, so what
    # is left of MESSAGE_RE is its message-first (which also refuses "").
    if decoded is None or not MESSAGE_RE.fullmatch(decoded[:1]):
        raise InvalidMessage()


def decode_text(line: bytes) -> Optional[str]:
    """Return ``line`` decoded if it is all message-chars within the octet limit, else None (§2.3, §4)."""
    if len(line) > MAX_LINE_OCTETS:  # line-octets, §2.3
        return None
    if len(line.translate(None, FORBIDDEN_IN_MESSAGE_OCTETS)) != len(line):
        return None
    try:
        return line.decode("utf-8")  # the UTF8- rules, §2.4
    except UnicodeDecodeError:
        return None


#: The commands that list names, and the event of each (§6.1).
LIST_VERBS = {who_verb: Event.WHO, rooms_verb: Event.ROOMS, users_verb: Event.USERS}


def parse_account_command(verb: bytes, argument: bytes) -> Parsed:
    """Parse what follows /register or /login (§5.13, §5.14); raise if /register's is refused.

    register-command = register-verb SP nickname SP password        §5.13
    login-command = login-verb SP nickname SP password              §5.14

    A /register with a bad nickname gets #invalid_nickname, then one with
    a bad password #invalid_password.  A malformed /login is a failed
    login (LoginFailed), answered and counted as any other (§5.14, §9.11).
    """
    nick, space, secret = argument.partition(SP)
    nickname_ok = bool(NICKNAME_RE.fullmatch(nick.decode("latin-1")))
    password_ok = bool(space and parse_password(secret))
    if verb == register_verb:
        if not nickname_ok:
            raise InvalidNickname()
        if not password_ok:
            raise InvalidPassword()
        return Parsed(Event.REGISTER, nick.decode("ascii"), secret)
    if not (nickname_ok and password_ok):
        raise LoginFailed()
    return Parsed(Event.LOGIN, nick.decode("ascii"), secret)


def parse_password(raw: bytes) -> Optional[str]:
    """Return ``raw`` as a password (§3.3), or None if it is none."""
    text = raw.decode("latin-1")
    return text if PASSWORD_RE.fullmatch(text) else None


def parse_command(phase: Phase, line: bytes) -> Parsed:
    """Match a command exactly, case and all (§5.3); raise if refused."""
    # nickname-command = nickname-verb SP nickname                          §5.2
    # The verb alone makes a line a rename: whatever follows the first SP
    # must then be a nickname, or the reply is #invalid_nickname.
    name, space, argument = line.partition(SP)
    if line == quit_command:
        return QUIT
    if name in (register_verb, login_verb):
        if phase is not Phase.NICKNAME:
            raise InvalidCommand()  # §5.13, §5.14: an account is chosen instead of a nickname
        return parse_account_command(name, argument if space else b"")
    if phase is Phase.NICKNAME:
        raise InvalidCommand()  # §7.1: nothing but /quit, /register and /login before a nickname
    if name == nickname_verb:
        return Parsed(Event.RENAME, parse_nickname(argument if space else b""))
    if line == next_command:
        if phase is Phase.IN_ROOM:
            raise InvalidCommand()  # §5.7: /leave goes back to pairing
        return NEXT
    if name in LIST_VERBS and (not space or PATTERN_RE.fullmatch(argument.decode("latin-1"))):
        # who-command = who-verb [ SP pattern ]                              §5.4
        # rooms-command = rooms-verb [ SP pattern ]                          §5.9
        # users-command = users-verb [ SP pattern ]                          §5.15
        return Parsed(LIST_VERBS[name], pattern=argument.decode("ascii") if space else "*")
    if name == delete_verb:
        # delete-command = delete-verb SP password                           §5.16
        # The verb alone makes the line a /delete, and a malformed one a
        # failed login; the server still answers a guest #not_logged_in first.
        if not (space and parse_password(argument)):
            raise LoginFailed()
        return Parsed(Event.DELETE, text=argument)
    if name in (create_verb, join_verb):
        # create-command = create-verb SP room                              §5.8
        # join-command = join-verb SP room                                   §5.10
        # As for /nickname, the verb alone makes the line this command.
        if not (space and ROOM_RE.fullmatch(argument.decode("latin-1"))):
            raise InvalidRoom()
        return Parsed(Event.CREATE if name == create_verb else Event.JOIN, room=argument.decode("ascii"))
    if line == members_command:
        return MEMBERS
    if line == leave_command:
        return LEAVE
    if name == msg_verb:
        # msg-command = msg-verb SP nickname SP text                         §5.5
        nick, space, text = argument.partition(SP)
        if space and NICKNAME_RE.fullmatch(nick.decode("latin-1")) and decode_text(text):
            return Parsed(Event.DIRECT, nick.decode("ascii"), text)
    if name == all_verb and decode_text(argument):
        # all-command = all-verb SP text                                     §5.6
        return Parsed(Event.BROADCAST, text=argument)
    raise InvalidCommand()  # §5.3, and a malformed /msg or /all, or a list's bad pattern (§5.4-§5.6, §6.1)
