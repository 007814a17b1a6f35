"""Table-driven tests of the wire rules in mechat.protocol, with N and N+1 cases for every limit."""

from typing import List

import pytest

from mechat import protocol
from mechat.protocol import (
    TOO_LONG,
    TRANSITIONS,
    Event,
    InvalidCommand,
    InvalidMessage,
    InvalidNickname,
    InvalidRoom,
    LineBuffer,
    LineCutter,
    Notice,
    Parsed,
    Phase,
    ProtocolError,
    notice,
    parse_line,
    parse_notice,
)

# -- §2 Framing -----------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks, lines",
    [
        ([b"hello\n"], [b"hello"]),
        ([b"hel", b"lo\n"], [b"hello"]),  # one line split over two reads
        ([b"one\ntwo\n"], [b"one", b"two"]),  # two lines in one read
        ([b"crlf\r\n"], [b"crlf"]),  # §2.2: the CR before LF is dropped
        ([b"crlf\r", b"\n"], [b"crlf"]),  # ... even when split from its LF
        ([b"two\r\r\n"], [b"two\r"]),  # only one CR is dropped
        ([b"lone\rcr\n"], [b"lone\rcr"]),  # a CR elsewhere is data
        ([b"\n"], [b""]),  # an empty line is a line
        ([b"no end"], []),  # nothing until the LF
    ],
)
def test_line_buffer_cuts_lines(chunks: List[bytes], lines: List[bytes]) -> None:
    """§2.1-§2.2: a line ends at LF; one CR before it is dropped; reads may split or join lines."""
    buffer = LineBuffer()
    got: List[protocol.Line] = []
    for chunk in chunks:
        got.extend(buffer.feed(chunk))
    assert got == lines


@pytest.mark.parametrize(
    "chunks, lines, unterminated",
    [
        ([b"crlf\r\n"], [b"crlf\r"], b""),  # a reader of a server keeps the CR it was sent
        ([b"x" * 70_000 + b"\n"], [b"x" * 70_000], b""),  # and a line of any length
        ([b"one\ntw", b"o\nthr"], [b"one", b"two"], b"thr"),
        ([b"no end"], [], b"no end"),
    ],
)
def test_line_cutter_keeps_every_octet(chunks: List[bytes], lines: List[bytes], unterminated: bytes) -> None:
    """§2.1: the cutter under LineBuffer cuts at LF only, and holds what follows the last LF."""
    cutter = LineCutter()
    got: List[bytes] = []
    for chunk in chunks:
        got.extend(cutter.cut(chunk))
    assert (got, cutter.unterminated) == (lines, unterminated)


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_line_at_the_limit_is_kept(terminator: bytes) -> None:
    """§2.3: a line of exactly 2000 octets, with either terminator, is a line."""
    line = b"x" * protocol.MAX_LINE_OCTETS
    assert LineBuffer().feed(line + terminator) == [line]


@pytest.mark.parametrize("split", [False, True])
def test_line_over_the_limit_is_too_long_once(split: bool) -> None:
    """§2.3: a line of 2001 octets is reported once as TOO_LONG and the next line is intact."""
    buffer = LineBuffer()
    data = b"x" * (protocol.MAX_LINE_OCTETS + 1) + b"\nnext\n"
    chunks = [data[:1000], data[1000:]] if split else [data]
    got = [line for chunk in chunks for line in buffer.feed(chunk)]
    assert got == [TOO_LONG, b"next"]


def test_endless_line_is_held_in_bounded_memory() -> None:
    """§2.3: ten megabytes without a newline never make the buffer hold more than the limit."""
    buffer = LineBuffer()
    chunk = b"y" * 65536
    for _ in range(160):
        assert buffer.feed(chunk) == []
        assert buffer.pending <= protocol.MAX_LINE_OCTETS + 1
    assert buffer.feed(b"tail\nafter\n") == [TOO_LONG, b"after"]


# -- §3 Nicknames ---------------------------------------------------------------

VALID_NICKNAMES = ["a", "x" * 30, "bob-42", "B.o_b!", "#hash", "~tilde", "a/b"]
INVALID_NICKNAMES = [b"", b"x" * 31, b"two words", b"tab\there", b"caf\xc3\xa9", b"\xff", b"nul\x00"]


@pytest.mark.parametrize("nickname", VALID_NICKNAMES)
def test_valid_nicknames(nickname: str) -> None:
    """§3: 1 to 30 characters of letters, digits and punctuation are a nickname."""
    assert parse_line(Phase.NICKNAME, nickname.encode()) == Parsed(Event.NICKNAME, nickname)


@pytest.mark.parametrize("raw", INVALID_NICKNAMES)
def test_invalid_nicknames(raw: bytes) -> None:
    """§3: empty, 31 characters, spaces, controls or non-ASCII are not a nickname."""
    with pytest.raises(InvalidNickname):
        parse_line(Phase.NICKNAME, raw)


def test_too_long_line_in_nickname_phase_is_an_invalid_nickname() -> None:
    """§2.3: an over-long line is refused with the phase's refusal."""
    with pytest.raises(InvalidNickname):
        parse_line(Phase.NICKNAME, TOO_LONG)


# -- §4 Messages ----------------------------------------------------------------

AT_LIMIT_MULTIBYTE = "é" * (protocol.MAX_LINE_OCTETS // 2)  # 2000 octets, 1000 characters


@pytest.mark.parametrize(
    "raw",
    [
        b"hello",
        b"x",
        b"x" * protocol.MAX_LINE_OCTETS,
        AT_LIMIT_MULTIBYTE.encode(),
        ("a" + "€" * 666 + "b").encode(),  # 2000 octets with 3-octet characters
        "emoji 😀".encode(),
        b"tab\tinside",
        b"hash # later",
        b" leading space",
    ],
)
def test_valid_messages(raw: bytes) -> None:
    """§4: 1 to 2000 octets of UTF-8 text not starting with # are a message."""
    for phase in (Phase.WAITING, Phase.CHATTING):
        assert parse_line(phase, raw) == Parsed(Event.MESSAGE)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"#notice",
        b"x" * (protocol.MAX_LINE_OCTETS + 1),
        (AT_LIMIT_MULTIBYTE + "e").encode(),
        b"\xff\xfe",
        b"half \xc3",
        b"nul \x00 byte",
        b"bell \x07",
        b"del \x7f",
        b"lone \r cr",
    ],
)
def test_invalid_messages(raw: bytes) -> None:
    """§4: empty, #-led, 2001 octets, bad UTF-8 or control characters are refused."""
    with pytest.raises(InvalidMessage):
        parse_line(Phase.CHATTING, raw)


def test_too_long_line_in_chat_is_an_invalid_message() -> None:
    """§2.3: an over-long line while chatting is an invalid message."""
    with pytest.raises(InvalidMessage):
        parse_line(Phase.CHATTING, TOO_LONG)


# -- §5 Commands ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, parsed",
    [
        (b"/quit", Parsed(Event.QUIT)),
        (b"/nickname carol", Parsed(Event.RENAME, "carol")),
        (b"/nickname " + b"z" * 30, Parsed(Event.RENAME, "z" * 30)),
        (b"/next", Parsed(Event.NEXT)),
        (b"/who", Parsed(Event.WHO, pattern="*")),
        (b"/who B?b*[x", Parsed(Event.WHO, pattern="B?b*[x")),
        (b"/msg Bob #hi /you  ", Parsed(Event.DIRECT, "Bob", b"#hi /you  ")),
        (b"/msg bob \xc3\xa9", Parsed(Event.DIRECT, "bob", "é".encode())),
        (b"/all /help\tme", Parsed(Event.BROADCAST, text=b"/help\tme")),
        (b"/create Lab-3", Parsed(Event.CREATE, room="Lab-3")),
        (b"/create " + b"r" * 30, Parsed(Event.CREATE, room="r" * 30)),
        (b"/rooms", Parsed(Event.ROOMS, pattern="*")),
        (b"/rooms lab-?", Parsed(Event.ROOMS, pattern="lab-?")),
        (b"/join lab-3", Parsed(Event.JOIN, room="lab-3")),
        (b"/members", Parsed(Event.MEMBERS)),
        (b"/leave", Parsed(Event.LEAVE)),
    ],
)
def test_commands(raw: bytes, parsed: Parsed) -> None:
    """§5.1-§5.2, §5.4-§5.12: each command, exactly, with what it carries."""
    assert parse_line(Phase.CHATTING, raw) == parsed


def test_next_is_refused_in_a_room() -> None:
    """§5.7: /leave, not /next, goes back to pairing from a room."""
    with pytest.raises(InvalidCommand):
        parse_line(Phase.IN_ROOM, b"/next")
    assert parse_line(Phase.IN_ROOM, b"/leave") == Parsed(Event.LEAVE)


@pytest.mark.parametrize(
    "raw, error",
    [
        (b"/quitnow", InvalidCommand),  # §5.3: no prefix matching
        (b"/quit ", InvalidCommand),
        (b"/quit now", InvalidCommand),
        (b"/QUIT", InvalidCommand),  # §5.3: case-sensitive
        (b"/Nickname bob", InvalidCommand),
        (b"/nicknamebob", InvalidCommand),
        (b"/", InvalidCommand),
        (b"/skip", InvalidCommand),
        (b"/next now", InvalidCommand),  # §5.7: /next takes nothing
        (b"/NEXT", InvalidCommand),
        (b"/who ", InvalidCommand),  # §5.4, §6.1: a pattern is 1 to 30 visible characters
        (b"/who a b", InvalidCommand),
        (b"/who " + b"*" * 31, InvalidCommand),
        (b"/who \xc3\xa9", InvalidCommand),
        (b"/msg", InvalidCommand),  # §5.5: a nickname, then a text
        (b"/msg bob", InvalidCommand),
        (b"/msg bob ", InvalidCommand),
        (b"/msg /bob hi", InvalidCommand),
        (b"/msg " + b"z" * 31 + b" hi", InvalidCommand),
        (b"/msg bob hi\x01", InvalidCommand),
        (b"/msg bob \xff", InvalidCommand),
        (b"/all", InvalidCommand),  # §5.6: a text
        (b"/all ", InvalidCommand),
        (b"/all\thi", InvalidCommand),
        (b"/create", InvalidRoom),  # §3.2: a room name is 1 to 30 letters, digits and "-"
        (b"/create ", InvalidRoom),
        (b"/create lab_3", InvalidRoom),
        (b"/create lab 3", InvalidRoom),
        (b"/create " + b"r" * 31, InvalidRoom),
        (b"/join", InvalidRoom),
        (b"/join caf\xc3\xa9", InvalidRoom),
        (b"/Join lab", InvalidCommand),
        (b"/rooms ", InvalidCommand),  # §5.9: a pattern, as /who's
        (b"/rooms a b", InvalidCommand),
        (b"/members lab", InvalidCommand),  # §5.11, §5.12: nothing follows
        (b"/leave now", InvalidCommand),
        (b"/nickname", InvalidNickname),  # §5.2: the name is missing
        (b"/nickname ", InvalidNickname),
        (b"/nickname  bob", InvalidNickname),
        (b"/nickname two words", InvalidNickname),
        (b"/nickname " + b"z" * 31, InvalidNickname),
    ],
)
def test_bad_commands(raw: bytes, error: type) -> None:
    """§5.3: commands match whole and case and all; a bad /nickname is a bad nickname."""
    with pytest.raises(error):
        parse_line(Phase.CHATTING, raw)


@pytest.mark.parametrize("raw", [b"/nickname bob", b"/next", b"/QUIT", b"/create lab", b"/leave"])
def test_nickname_phase_allows_only_quit(raw: bytes) -> None:
    """§7.1: in the nickname phase every command but /quit is an invalid command."""
    with pytest.raises(InvalidCommand):
        parse_line(Phase.NICKNAME, raw)
    assert parse_line(Phase.NICKNAME, b"/quit") == Parsed(Event.QUIT)


def test_every_refusal_names_its_notice() -> None:
    """§6: each protocol error carries the notice the server must send."""
    assert InvalidNickname.notice is Notice.INVALID_NICKNAME
    assert InvalidMessage.notice is Notice.INVALID_MESSAGE
    assert InvalidCommand.notice is Notice.INVALID_COMMAND
    assert issubclass(InvalidCommand, ProtocolError)


# -- §6 Notices -----------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in Notice if n not in protocol.NOTICES_WITH_ARGUMENT])
def test_plain_notices_round_trip(name: Notice) -> None:
    """§6: a notice is its name and an LF, and parses back to its name."""
    line = notice(name)
    assert line == name.value.encode() + b"\n"
    assert parse_notice(line[:-1].decode()) == (name, "", "")


@pytest.mark.parametrize("name", protocol.NOTICES_WITH_NICKNAME)
def test_nickname_notices_round_trip(name: Notice) -> None:
    """§6: a notice that names someone ends with the nickname."""
    line = notice(name, "bob-1")
    assert line == (name.value + "bob-1\n").encode()
    assert parse_notice(line[:-1].decode()) == (name, "bob-1", "")


@pytest.mark.parametrize("name", [Notice.FROM, Notice.ALL_FROM])
def test_text_notices_round_trip(name: Notice) -> None:
    """§5.5, §5.6: the sender's nickname, one SP, then the text as sent, "#" and "/" and spaces included."""
    line = notice(name, "bob-1", "#hi  /there é".encode())
    assert line == (name.value + "bob-1 #hi  /there é\n").encode()
    assert parse_notice(line[:-1].decode()) == (name, "bob-1", "#hi  /there é")


@pytest.mark.parametrize("name", protocol.NOTICES_WITH_ROOM)
def test_room_notices_round_trip(name: Notice) -> None:
    """§3.2, §6: a notice about a room ends with the room's name."""
    line = notice(name, "Lab-3")
    assert parse_notice(line[:-1].decode()) == (name, "Lab-3", "")


@pytest.mark.parametrize("name", protocol.NOTICES_WITH_MEMBER)
def test_member_notices_split_at_the_first_underscore(name: Notice) -> None:
    """§3.2, §6: a room name has no "_", so ROOM_NICK splits one way even when NICK has one."""
    line = notice(name, "Lab-3_bob_1")
    assert parse_notice(line[:-1].decode()) == (name, "Lab-3_bob_1", "")
    assert parse_notice(line[:-1].decode()).argument.split("_", 1) == ["Lab-3", "bob_1"]


def test_a_room_line_and_a_rename_round_trip() -> None:
    """§7.6: #in_ROOM_SENDER then a message; #renamed_ROOM_OLD then the new nickname."""
    line = notice(Notice.IN, "lab_bob", "hi  /there é".encode())
    assert parse_notice(line[:-1].decode()) == (Notice.IN, "lab_bob", "hi  /there é")
    line = notice(Notice.RENAMED, "lab_bob", b"robert")
    assert parse_notice(line[:-1].decode()) == (Notice.RENAMED, "lab_bob", "robert")


def test_a_list_is_sorted_in_any_case_and_counts_every_match() -> None:
    """§6.1: names sorted case-insensitively; the count is of all matches, even those cut off."""
    assert notice(Notice.BROADCAST, "0") == b"#broadcast_0\n"
    assert protocol.list_line(Notice.ONLINE, []) == b"#online_0\n"
    assert protocol.list_line(Notice.ONLINE, ["bob", "Alice", "carol"]) == b"#online_3 Alice bob carol\n"
    names = ["n%04d" % number for number in range(1000)]
    line = protocol.list_line(Notice.ONLINE, names)
    assert line.startswith(b"#online_1000 n0000 n0001 ") and len(line) - 1 <= protocol.MAX_LINE_OCTETS
    assert len(line) - 1 + len(" n0000") > protocol.MAX_LINE_OCTETS  # as many as fit
    assert parse_notice(line[:-1].decode()).text.split() == names[: line.count(b" ")]


@pytest.mark.parametrize(
    "name, argument, text",
    [
        (Notice.MATCHED_TO, "", b""),
        (Notice.WAIT, "bob", b""),
        (Notice.FROM, "bob", b""),
        (Notice.WAIT, "", b"x"),
    ],
)
def test_notice_refuses_a_wrong_argument(name: Notice, argument: str, text: bytes) -> None:
    """§6: only the notices whose rule has a nickname or count take one, and only text notices a text."""
    with pytest.raises(ValueError):
        notice(name, argument, text)


@pytest.mark.parametrize(
    "line",
    [
        "#unknown",
        "#matched_to_",
        "#matched_to_two words",
        "hello",
        "#wait ",
        "#from_bob",
        "#online_01",
        "#online_2 a ",
        "#joined_lab_3",
        "#in_lab bob hi",
        "#in_lab_bob #hi",
        "#entered_lab_",
        "#rooms_1 a_b",
        "#renamed_lab_bob two words",
    ],
)
def test_parse_notice_refuses_non_notices(line: str) -> None:
    """§6: anything else is not a notice."""
    with pytest.raises(ValueError):
        parse_notice(line)


# -- §7 State table -------------------------------------------------------------


def test_state_table_has_a_cell_for_every_line_in_every_open_phase() -> None:
    """§7.5: every kind of line has a defined answer in every phase that reads lines."""
    line_events = {
        Phase.NICKNAME: [Event.NICKNAME, Event.INVALID_NICKNAME, Event.INVALID_COMMAND, Event.QUIT],
        Phase.WAITING: [Event.MESSAGE, Event.RENAME, Event.INVALID_MESSAGE, Event.INVALID_NICKNAME],
        Phase.CHATTING: [Event.MESSAGE, Event.RENAME, Event.INVALID_MESSAGE, Event.INVALID_NICKNAME],
        Phase.IN_ROOM: [Event.MESSAGE, Event.RENAME, Event.INVALID_MESSAGE, Event.INVALID_NICKNAME],
    }
    rooms = [Event.CREATE, Event.ROOMS, Event.JOIN, Event.JOIN_REFUSED, Event.MEMBERS, Event.LEAVE]
    for phase in (Phase.WAITING, Phase.CHATTING, Phase.IN_ROOM):
        line_events[phase] += [*rooms, Event.INVALID_ROOM, Event.WHO, Event.DIRECT, Event.BROADCAST]
    always = [Event.RATE_LIMITED, Event.HANG_UP, Event.SHUTDOWN, Event.DROPPED]
    for phase, events in line_events.items():
        for event in events + always:
            assert (phase, event) in TRANSITIONS, (phase, event)


def test_state_table_never_leaves_closed() -> None:
    """§7.4: nothing happens to a closed connection; every path ends there."""
    assert not [key for key in TRANSITIONS if key[0] is Phase.CLOSED]
    reachable = {Phase.NICKNAME}
    for _ in Phase:
        reachable |= {cell.next_phase for key, cell in TRANSITIONS.items() if key[0] in reachable}
    assert reachable == set(Phase)
