"""Name the likely mistake behind a wrong reply, in plain words.

A FAIL that says only "expected '#wait', got nothing within 5 s" sends a
student looking for a hang that is not there: most often the server did
answer, but in a way the kit could not read as a line.  So when a read goes
wrong, the kit hands the evidence (what was expected, what came back, the
bytes that never got their LF, and what the clients had sent) to the rules
below.  Each rule recognises one classic mistake of student servers and
says, in one sentence that cites the spec, what the server probably does
and what it must do instead.

The rules only look at the evidence; they never talk to the server.  Each
is a plain function from :class:`Evidence` to a sentence, or to "" when its
mistake does not fit, so adding one is adding a function to :data:`RULES`.
Several may fit at once (a reply without LF that is also a refusal of the
LF itself); :func:`explain` joins them in the order of :data:`RULES`.
"""

from typing import Callable, FrozenSet, List, NamedTuple, Optional, Tuple, Union

from mechat.protocol import CR, LF, Notice


class Outcome:
    """What a read found instead of a line: an end of the connection, or silence."""

    ENDED = "ended"  # closed or reset by the server
    SILENCE = "silence"  # nothing more within the timeout

    def __init__(self, text: str, kind: str) -> None:
        self.text = text
        self.kind = kind

    def __repr__(self) -> str:
        return self.text


Reply = Union[bytes, Outcome]

CLOSED = Outcome("<connection closed>", Outcome.ENDED)
RESET = Outcome("<connection reset>", Outcome.ENDED)


def wire(name: Notice, nickname: bytes = b"") -> bytes:
    """Return a notice as it appears on the wire, without its LF (§6)."""
    return name.value.encode("ascii") + nickname


WAIT = wire(Notice.WAIT)
USER_QUIT = wire(Notice.USER_QUIT)
REFUSALS = tuple(
    wire(name) for name in (Notice.INVALID_NICKNAME, Notice.INVALID_MESSAGE, Notice.INVALID_COMMAND)
)
NOTICES = tuple(wire(name) for name in Notice)
#: The answers that find a room by its name (§5.8, §5.10), and those that miss it.
ROOM_FOUND = (wire(Notice.ROOM_EXISTS), wire(Notice.JOINED))
ROOM_MISSED = (wire(Notice.ROOM_CREATED), wire(Notice.NO_SUCH_ROOM))


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


def plural(count: int, noun: str) -> str:
    """Return ``count`` and ``noun``, with an s unless the count is one: "1 check", "2 checks"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class Evidence(NamedTuple):
    """What one client saw when a read went wrong, and what had been sent."""

    reader: str  # the client that read
    expected: Reply
    got: Reply
    unterminated: bytes  # bytes after the last LF the reader received
    last_read: Optional[bytes]  # the line the reader read before this one
    own_write: bytes  # the reader's own last write, exactly as sent
    last_write: bytes  # the last write of any client in the check
    own_lines: FrozenSet[bytes]  # every line the reader itself sent
    others: Tuple["Other", ...]  # the other clients of the check
    nicknames_work: bool  # the preflight saw a plain nickname, sent with LF, accepted

    @property
    def text(self) -> bytes:
        """Return what arrived in place of the expected line, LF or not."""
        return self.got if isinstance(self.got, bytes) else self.unterminated

    @property
    def replies(self) -> List[bytes]:
        """Return what arrived for every client of the check: the reader's text, then the others' unread."""
        return [self.text, *(other.pending for other in self.others)]

    @property
    def silent(self) -> bool:
        """Tell whether the read timed out with not one byte of a line waiting."""
        got = self.got
        return isinstance(got, Outcome) and got.kind == Outcome.SILENCE and not self.unterminated


class Other(NamedTuple):
    """Another client of the same check, seen when the reader's read went wrong."""

    name: str
    pending: bytes  # what it received and has not read, lines with their LF
    connected: bool  # whether its connection is still open, as far as the kit has seen


Rule = Callable[[Evidence], str]


def missing_lf(evidence: Evidence) -> str:
    """Bytes arrived, but no LF after them, so they never became a line (§2.1)."""
    if not (isinstance(evidence.got, Outcome) and evidence.unterminated):
        return ""  # a whole line came: bytes after it may be the next line, still on their way
    return f"got {show(evidence.unterminated)} with no LF after it: every line ends in LF (§2.1)"


def glued_notices(evidence: Evidence) -> str:
    """Two notices arrived as one line: the first lost its LF (§2.1, §6)."""
    text = evidence.text
    starts = [text.find(notice, 1) for notice in NOTICES if text.startswith(b"#")]
    if not any(start > 0 for start in starts):
        return ""
    return f"{show(text)} is two notices with no LF between them: end each line with LF (§2.1, §6)"


def line_end_in_nickname(evidence: Evidence) -> str:
    """A nickname was refused because the server kept its LF, or its CR, in the name (§2.1, §2.2, §3)."""
    text, sent = evidence.text, evidence.own_write
    refused = text.startswith(wire(Notice.INVALID_NICKNAME))
    expected = evidence.expected
    wanted_a_name = isinstance(expected, bytes) and expected.startswith((WAIT, wire(Notice.MATCHED_TO)))
    if not (refused and wanted_a_name and sent.endswith(LF) and sent.count(LF) == 1):
        return ""
    if evidence.nicknames_work and not sent.endswith(CR + LF):
        return ""  # 'alice' and its LF were accepted: this name is refused for another reason
    return line_end_kept(sent, "#invalid_nickname", "nickname", "§3")


def line_end_in_command(evidence: Evidence) -> str:
    """A valid command was refused because the server kept its LF, or its CR, in it (§2.1, §2.2, §5.3)."""
    sent = evidence.last_write
    command = sent.rstrip(CR + LF)
    replies = evidence.replies
    refused = any(reply.startswith(wire(Notice.INVALID_COMMAND)) for reply in replies)
    name = command[len(b"/nickname ") :] if command.startswith(b"/nickname ") else b""
    valid = command == b"/quit" or (name and b" " not in name)
    if not (refused and valid and sent.endswith(LF) and sent.count(LF) == 1):
        return ""
    if evidence.nicknames_work and not sent.endswith(CR + LF):
        return ""  # the server does not keep the LF: the preflight's nickname was accepted
    return line_end_kept(sent, "#invalid_command", "command", "§5.3")


def line_end_kept(sent: bytes, refusal: str, what: str, section: str) -> str:
    """Say that ``sent`` was refused because the server kept its line end, CR or LF, as part of ``what``."""
    answered = f"your server answered {show(sent)} with {refusal}"
    if sent.endswith(CR + LF):
        return f"{answered}: it may keep the CR as part of the {what} (§2.2, {section})"
    return f"{answered}: it may be reading the LF as part of the {what} (§2.1, {section})"


def lines_taken_as_one(evidence: Evidence) -> str:
    """Two lines sent in one write were refused together: one recv() was taken as one message (§2.1)."""
    sent = evidence.last_write
    replies = evidence.replies
    refusals = [refusal for refusal in REFUSALS for reply in replies if reply.startswith(refusal)]
    if sent.count(LF) < 2 or not refusals:
        return ""
    if sent.startswith(b"/") and refusals[0] == b"#invalid_command":
        return ""  # a server that lacks the first command refuses it alone just the same
    refusal = refusals[0]
    return (
        f"your server answered {show(sent)}, {sent.count(LF)} lines in one write, with {refusal.decode()}:"
        " it may take each recv() as one message; cut lines at each LF instead (§2.1)"
    )


#: Protocol 2's commands, and the section of each, for a server that lacks one.
PROTOCOL_2_COMMANDS = {
    b"/who": "§5.4",
    b"/msg": "§5.5",
    b"/all": "§5.6",
    b"/next": "§5.7",
    b"/create": "§5.8",
    b"/rooms": "§5.9",
    b"/join": "§5.10",
    b"/members": "§5.11",
    b"/leave": "§5.12",
    b"/register": "§5.13",
    b"/login": "§5.14",
    b"/users": "§5.15",
    b"/delete": "§5.16",
}


def command_missing(evidence: Evidence) -> str:
    """A protocol 2 command got #invalid_command where the spec has an answer: the server lacks it."""
    return lacks_command(evidence.own_write, evidence.text)


def lacks_command(write: bytes, reply: bytes) -> str:
    """Say that a server lacks the protocol 2 command that starts ``write``, if ``reply`` refused it."""
    first = write.split(LF, 1)[0]
    verb = first.split(b" ", 1)[0]
    if verb not in PROTOCOL_2_COMMANDS or reply != b"#invalid_command":
        return ""
    return (
        f"your server answered {show(first)} with #invalid_command: it may not have {verb.decode()} yet"
        f" (§5.3, {PROTOCOL_2_COMMANDS[verb]}); a server of protocol 1 passes --features core only"
    )


def half_a_line(evidence: Evidence) -> str:
    """Only the start of a line arrived: one recv() was taken as a whole line (§2.1)."""
    got, expected = evidence.got, evidence.expected
    if not (isinstance(got, bytes) and isinstance(expected, bytes) and got and expected.startswith(got)):
        return ""
    return (
        f"{evidence.reader} got {show(got)}, only the start of the line: your server may take each recv()"
        " as a whole line; keep reading until the LF (§2.1)"
    )


def carriage_return(evidence: Evidence) -> str:
    """A CR arrived before the LF: kept from the sender's CRLF, or the server's own line end (§2.1, §2.2)."""
    got, expected = evidence.got, evidence.expected
    if not (isinstance(got, bytes) and isinstance(expected, bytes) and got == expected + CR):
        return ""
    if CR + LF in evidence.last_write:
        return "your server kept the CR of a CR LF line end: drop a CR that comes just before the LF (§2.2)"
    return "your server ends its lines with CR LF: end every line it sends with LF alone (§2.1)"


def echo(evidence: Evidence) -> str:
    """A client got back a line it had sent itself (§7.3)."""
    got = evidence.got
    if not (isinstance(got, bytes) and got in evidence.own_lines and got != evidence.expected):
        return ""
    return (
        f"{evidence.reader} got back its own line {show(got)}: your server echoes lines to their sender;"
        " relay each line to the partner only (§7.3)"
    )


def room_echo(evidence: Evidence) -> str:
    """A member got its own line back from its room, as ``#in_ROOM_NICK LINE`` (§7.6)."""
    got = evidence.got
    prefix = wire(Notice.IN)
    if not (isinstance(got, bytes) and got.startswith(prefix) and got != evidence.expected):
        return ""
    member, _, line = got[len(prefix) :].partition(b" ")
    room, _, sender = member.partition(b"_")
    if sender != evidence.reader.encode("ascii", "replace") or line not in evidence.own_lines:
        return ""
    return (
        f"{evidence.reader} got its own line {show(line)} back from {room.decode('ascii', 'replace')}:"
        " your server sends a room's lines to every member, the sender too; send #in_ to the others (§7.6)"
    )


def room_case(evidence: Evidence) -> str:
    """A room was missed, or misnamed, as if room names were compared case and all (§3.2)."""
    got, expected = evidence.got, evidence.expected
    if not (isinstance(got, bytes) and isinstance(expected, bytes) and got != expected):
        return ""
    found = next((name for name in ROOM_FOUND if expected.startswith(name)), b"")
    if not found:
        return ""
    room = expected[len(found) :]
    if got.startswith(found) and got[len(found) :].lower() == room.lower():
        spelled = show(got[len(found) :])
        return f"your server spelled the room {spelled}: name a room as its creator spelled it (§3.2)"
    missed = next((name for name in ROOM_MISSED if got.startswith(name)), b"")
    asked = got[len(missed) :]
    if not missed or asked == room or asked.lower() != room.lower():
        return ""
    if missed == wire(Notice.ROOM_CREATED) and evidence.last_read != expected:
        return ""  # the name as written was not just refused: the server may not look for rooms at all
    return (
        f"your server answered {show(got)}, but {show(asked)} is the room {show(room)} in another"
        " case: compare room names case-insensitively (§3.2)"
    )


def line_of_another_room(evidence: Evidence) -> str:
    """A member got a line of a room it is not in: one it left, or moved from to another (§7.6)."""
    got, expected = evidence.got, evidence.expected
    prefix = wire(Notice.IN)
    if not (isinstance(got, bytes) and isinstance(expected, bytes)):
        return ""
    if not (got.startswith(prefix) and expected.startswith(prefix)):
        return ""
    heard, here = (line[len(prefix) :].partition(b"_")[0] for line in (got, expected))
    if heard.lower() == here.lower():
        return ""
    return (
        f"{evidence.reader} got a line of {show(heard)} while a member of {show(here)}: a member gets the"
        " lines of its own room only, none after its #left_ or its #joined_ of another room (§7.6)"
    )


def rooms_used_up(evidence: Evidence) -> str:
    """No room could be made: the server holds as many as it may, perhaps from earlier runs (§5.8, §9.8)."""
    expected = evidence.expected
    wanted_a_room = isinstance(expected, bytes) and expected.startswith(wire(Notice.ROOM_CREATED))
    if not (wanted_a_room and evidence.got == wire(Notice.TOO_MANY_ROOMS)):
        return ""
    return (
        "the server holds as many rooms as it may: rooms last until it stops, each run of the kit leaves"
        " some, and the room-limits checks fill it; restart the server and run the kit again (§5.8, §9.8)"
    )


def one_at_a_time(evidence: Evidence) -> str:
    """A client got no answer at all while another is connected: the server serves one at a time (§7.1)."""
    expected = evidence.expected
    connected = [other.name for other in evidence.others if other.connected]
    wanted_a_partner = isinstance(expected, bytes) and expected.startswith(wire(Notice.MATCHED_TO))
    if not (evidence.silent and evidence.last_read is None and connected and wanted_a_partner):
        return ""
    return (
        f"{evidence.reader} got no answer at all while {connected[-1]} was connected: your server may serve"
        " one client at a time; serve each connection in a thread of its own, or with select() (§7.1)"
    )


def no_wait(evidence: Evidence) -> str:
    """A client that should wait got no answer at all: #wait was never sent (§7.1, §7.2)."""
    if not (evidence.silent and evidence.expected == WAIT):
        return ""
    return (
        f"{evidence.reader} got no answer to {show(evidence.own_write)}: a client with nobody to meet is"
        " told #wait at once, after its nickname and after each line it sends while it waits (§7.1, §7.2)"
    )


def closed_early(evidence: Evidence) -> str:
    """The server closed a connection that the spec keeps open (§7, §8)."""
    got = evidence.got
    if not (isinstance(got, Outcome) and got.kind == Outcome.ENDED and isinstance(evidence.expected, bytes)):
        return ""
    if evidence.unterminated:
        return ""  # the line may have come, without its LF: missing_lf says so
    if evidence.expected == USER_QUIT:
        return f"{evidence.reader} was closed without #user_quit: tell the partner before closing it (§8)"
    if evidence.last_read is not None and evidence.last_read.startswith(REFUSALS):
        return closed_after(evidence.reader, evidence.last_read)
    return (
        f"your server closed {evidence.reader}'s connection: it closes a connection only after /quit,"
        " when the partner leaves, or on a fault (§8)"
    )


def not_closed(evidence: Evidence) -> str:
    """A connection the spec ends stayed open: after end of file, or after /quit (§5.1, §8)."""
    expected = evidence.expected
    if not (evidence.silent and isinstance(expected, Outcome) and expected.kind == Outcome.ENDED):
        return ""
    if not evidence.own_write:
        return (
            f"{evidence.reader} hung up (end of file) and your server kept the connection open, or never read"
            " from it: when recv() returns no bytes the client has gone, so close the connection (§8)"
        )
    if evidence.last_read == USER_QUIT:
        return (
            f"your server told {evidence.reader} #user_quit and kept its connection open: close it too (§8)"
        )
    if evidence.own_write == evidence.last_write:  # the reader's own line was the last thing sent
        kept = f"your server kept {evidence.reader}'s connection open after {show(evidence.own_write)}"
        return f"{kept}: close it (§5.1, §8)"
    return f"your server kept {evidence.reader}'s connection open where the spec closes it (§8)"


def partner_closed_after_refusal(evidence: Evidence) -> str:
    """The chat ended right after the other side's line was refused: the server closed it (§7, §8)."""
    if evidence.got != USER_QUIT or evidence.expected == USER_QUIT:
        return ""
    for other in evidence.others:
        if other.pending.startswith(REFUSALS):
            return closed_after(other.name, other.pending.split(LF)[0], "ended the chat of")
    return ""


def closed_after(name: str, refusal: bytes, what: str = "closed") -> str:
    """Say that the server ended ``name``'s session after ``refusal``, which the spec does not allow (§7)."""
    return (
        f"your server {what} {name} after {show(refusal)}: a refused line leaves the connection open,"
        " so the client can try again (§7)"
    )


#: Every rule, in the order their sentences are joined.
RULES: List[Rule] = [
    missing_lf,
    glued_notices,
    line_end_in_nickname,
    line_end_in_command,
    lines_taken_as_one,
    command_missing,
    half_a_line,
    carriage_return,
    echo,
    room_echo,
    line_of_another_room,
    room_case,
    rooms_used_up,
    no_wait,
    one_at_a_time,
    closed_early,
    not_closed,
    partner_closed_after_refusal,
]


def explain(evidence: Evidence) -> str:
    """Return every fitting rule's sentence, joined; "" when none fits."""
    sentences = [sentence for sentence in (rule(evidence) for rule in RULES) if sentence]
    return "; ".join(sentences)
