"""The grammar and protocol.py agree on every line, valid or not (Hypothesis).

Each property generates lines near the edges of a rule (the first
character, the length, the case of a command, broken UTF-8) and asks both
spec/mechat.abnf (through the ``abnf`` package) and mechat/protocol.py
whether the line is accepted.  They must give the same answer, and when
both accept, the code must say the line is what the grammar says it is.

The ``abnf`` parser needs tenths of a second for a 2000-octet line, so
generated lines stay short, and the octet limit of §2.3 is pinned by a
handful of deliberate full-length cases instead.
"""

import re
from typing import List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mechat import protocol
from mechat.protocol import Event, Notice, Phase, ProtocolError, parse_line, parse_nickname
from tests.grammar import matches, valid
from tests.wire import RULE_OF_EVENT, phase_rule

AGREEMENT = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Characters that sit on the edges of the rules: the controls, space, "#",
#: "/", DEL, C1 controls and non-ASCII (§3, §4).
EDGES = '\t\r\x00\x01\x1f "#$./0~\x7f\x80\x9f\xa0é€\U0001f44b'
ASCII = st.characters(min_codepoint=0x00, max_codepoint=0x7F)

octets = st.binary(max_size=40)
ascii_text = st.text(ASCII, max_size=35).map(lambda text: text.encode("ascii"))
edge_text = st.text(st.sampled_from(EDGES) | ASCII, max_size=35).map(lambda text: text.encode("utf-8"))
broken_utf8 = st.tuples(
    edge_text, st.sampled_from([b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"])
)
lines = st.one_of(octets, ascii_text, edge_text, broken_utf8.map(lambda parts: parts[0] + parts[1]))

#: The grammar rule of each kind of line the server accepts (§3-§5), the
#: account commands (§5.13-§5.16) included.
RULES = {
    **RULE_OF_EVENT,
    Event.REGISTER: "register-command",
    Event.LOGIN: "login-command",
    Event.USERS: "users-command",
    Event.DELETE: "delete-command",
}

#: Passwords near the edges of §3.3: 7, 8, 64 and 65 characters, a space, a
#: control, DEL and non-ASCII; and any run of ASCII or edge characters.
EDGE_PASSWORDS = [
    b"x" * 7,
    b"x" * 8,
    b"~" * 64,
    b"!" * 65,
    b"pass word",
    b"password\t",
    b"passwor\x7f",
    "pässword".encode(),
]
passwords = st.one_of(
    st.sampled_from(EDGE_PASSWORDS),
    st.text(ASCII, min_size=6, max_size=66).map(lambda text: text.encode("ascii")),
    edge_text,
)
#: What may follow /register or /login: a nickname or not, a space or not, a password or not.
account_arguments = st.tuples(
    st.sampled_from([b"bob", b"/bob", b"#b", b"", b"a" * 30, b"a" * 31, "bö".encode()]),
    st.sampled_from([b" ", b"", b"  "]),
    passwords,
).map(lambda parts: b"".join(parts))

COMMAND_STARTS = [
    "/quit",
    "/QUIT",
    "/Quit",
    "/quitnow",
    "/nickname",
    "/nickname ",
    "/NICKNAME ",
    "/nick ",
    "/",
    "//",
    "/register",
    "/register ",
    "/REGISTER ",
    "/login",
    "/login ",
    "/Login ",
    "/users",
    "/users ",
    "/usersx",
    "/delete",
    "/delete ",
    "/DELETE ",
]
commands = st.tuples(
    st.sampled_from(COMMAND_STARTS),
    st.one_of(st.just(b""), ascii_text, edge_text, account_arguments, passwords),
)


def accepted(phase: Phase, line: bytes) -> Optional[Event]:
    """Return what protocol.py takes ``line`` for in ``phase``, or None if it refuses it."""
    try:
        return parse_line(phase, line).event
    except ProtocolError:
        return None


def check_agreement(phase: Phase, line: bytes) -> None:
    """The grammar accepts ``line`` in ``phase`` exactly when the code does, as the same thing."""
    event = accepted(phase, line)
    assert valid(phase_rule(phase), line) is (event is not None), (phase, line)
    if event is not None:
        assert matches(RULES[event], line), (event, line)


@AGREEMENT
@given(st.one_of(lines, ascii_text.map(lambda text: text.lstrip(b"/"))))
@example(b"a" * 30)
@example(b"a" * 31)
@example(b"#wait")
@example(b"~")
def test_nickname_rule_agrees_with_parse_nickname(line: bytes) -> None:
    """nickname (§3): 1-30 VCHAR, not starting with "/", on both sides."""
    try:
        parse_nickname(line)
    except ProtocolError:
        assert not matches("nickname", line)
    else:
        assert matches("nickname", line)


@AGREEMENT
@given(lines)
@example(b"\thello")
@example(b" ")
@example(b"a#b")
@example(b"caf\xc3\xa9")
@example(b"\xc2\x85")
@example(b"hi\r")
@example(b"\x7f")
def test_message_rule_agrees_with_check_message(line: bytes) -> None:
    """message (§4): UTF-8 without controls but HTAB, not starting "#" or "/", on both sides."""
    try:
        protocol.check_message(line)
    except ProtocolError:
        assert not valid("message", line)
    else:
        assert valid("message", line)


@AGREEMENT
@given(st.one_of(lines, commands.map(lambda parts: parts[0].encode() + parts[1])))
@example(b"/quit")
@example(b"/nickname bob")
@example(b"/register bob s3cret-pw")
@example(b"/register bob 1234567")
@example(b"/login bob " + b"~" * 64)
@example(b"/login bob " + b"~" * 65)
@example(b"/login /bob s3cret-pw")
@example(b"/login bob")
@example(b"/users")
@example(b"/users b*")
@example(b"/delete s3cret-pw")
@example(b"/delete s3cret pw")
@example(b"/delete")
def test_phase_rules_agree_with_parse_line(line: bytes) -> None:
    """The start rule of each phase (§7.1, §7.2, §7.3, §7.6) accepts what parse_line accepts there."""
    for phase in (Phase.NICKNAME, Phase.WAITING, Phase.CHATTING, Phase.IN_ROOM):
        check_agreement(phase, line)


@AGREEMENT
@given(passwords)
@example(b"x" * 8)
@example(b"x" * 7)
@example(b"x" * 64)
@example(b"x" * 65)
def test_password_rule_agrees_with_password_re(line: bytes) -> None:
    """password (§3.3): 8-64 VCHAR, on both sides."""
    assert bool(protocol.PASSWORD_RE.fullmatch(line.decode("latin-1"))) is matches("password", line)


#: A stored-time (§5.14), and what its characters may be swapped for: the
#: right kinds of character in the wrong places, a lower-case t or z, a space.
STORED_TIME = "2026-12-01T10:02:03Z"
TIME_EDGES = "0123456789-:TZtz /"


def changed_time(changes: List[Tuple[int, str]], tail: str) -> str:
    """Return STORED_TIME with the character at each index changed as given, and ``tail`` after it."""
    swaps = dict(changes)
    return "".join(swaps.get(index, char) for index, char in enumerate(STORED_TIME)) + tail


times = st.builds(
    changed_time,
    st.lists(st.tuples(st.integers(0, len(STORED_TIME) - 1), st.sampled_from(TIME_EDGES)), max_size=2),
    st.sampled_from(["", "0", "Z"]),
)


@AGREEMENT
@given(times)
@example(STORED_TIME)
@example("2026-12-01t10:02:03Z")
@example("2026-12-01T10:02:03z")
@example("2026-12-01T10:02:03")
@example("2026-12-01 10:02:03Z")
@example("226-12-01T10:02:03Z")
def test_stored_time_rule_agrees_with_the_code(time: str) -> None:
    """stored-time (§5.14): RFC 3339 in UTC to the second, T and Z upper case, on both sides."""
    assert bool(re.fullmatch(protocol.stored_time, time)) is matches("stored-time", time.encode("ascii"))


#: What may follow #stored_from_: a nickname or not, then a time or not, then a text or not.
stored_from_tails = st.tuples(
    st.sampled_from([b"bob", b"", b"/b"]),
    st.sampled_from([b" ", b""]),
    times.map(lambda time: time.encode("ascii")),
    st.one_of(st.just(b""), edge_text.map(lambda text: b" " + text)),
).map(lambda parts: b"".join(parts))


@AGREEMENT
@given(st.sampled_from(list(Notice)), st.one_of(st.just(b""), ascii_text, edge_text, stored_from_tails))
@example(Notice.MATCHED_TO, b"bob")
@example(Notice.WAIT, b"")
@example(Notice.WAIT, b"x")
@example(Notice.STORED_FROM, b"bob 2026-12-01T10:02:03Z hi")
@example(Notice.STORED_FROM, b"bob 2026-12-01T10:02:03Z #hi /x")
@example(Notice.STORED_FROM, b"bob 2026-12-01t10:02:03Z hi")
@example(Notice.STORED_FROM, b"bob 2026-12-01T10:02:03Z")
@example(Notice.STORED_FROM, b"bob hi")
@example(Notice.ACCOUNTS, b"0")
@example(Notice.ACCOUNTS, b"2 alice bob")
@example(Notice.ACCOUNTS, b"2 alice  bob")
@example(Notice.TLS_REQUIRED, b"")
def test_notice_rule_agrees_with_parse_notice(name: Notice, tail: bytes) -> None:
    """notice (§6): the client's parse_notice accepts exactly the grammar's notices."""
    line = name.value.encode("ascii") + tail
    try:
        protocol.parse_notice(line.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        assert not valid("notice", line)
    else:
        assert valid("notice", line)


# -- §2.3: the octet limit, at N and N+1, a few deliberate full-length cases -------

FULL_LENGTH = [
    pytest.param(b"a" * 2000, True, id="2000 ASCII octets"),
    pytest.param(b"a" * 2001, False, id="2001 ASCII octets"),
    pytest.param("é".encode() * 1000, True, id="1000 two-octet characters, 2000 octets"),
    pytest.param("👋".encode() * 500, True, id="500 four-octet characters, 2000 octets"),
    pytest.param(b"a" * 1999 + "é".encode(), False, id="2000 characters but 2001 octets"),
]


@pytest.mark.parametrize("line, ok", FULL_LENGTH)
def test_the_octet_limit_is_octets_not_characters(line: bytes, ok: bool) -> None:
    """A message is at most 2000 octets, however few characters (§2.3, §4): line-octets decides."""
    assert valid("chat-phase-line", line) is ok
    assert (accepted(Phase.CHATTING, line) is Event.MESSAGE) is ok


def test_element_counts_alone_would_let_too_many_octets_through() -> None:
    """The message rule's element count allows 2000 characters; only line-octets stops 2001 octets (§2.3)."""
    line = b"a" * 1999 + "é".encode()
    assert matches("message", line) and not matches("line-octets", line)
