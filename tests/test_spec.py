"""The spec checks itself: grammar lint, the code's quotes, the examples, the state table.

spec/mechat.abnf, spec/protocol.md and mechat/protocol.py say the same
things three times, and RFC 2812 shows what happens to such copies when
nothing compares them.  Each test here compares two of them.
"""

import itertools
import re
import socket
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest
from abnf.parser import Concatenation, Literal

from mechat import protocol
from mechat.protocol import TOO_LONG, Event, Notice, Phase, ProtocolError, parse_line
from mechat.server import ChatServer
from tests import examples, grammar
from tests.conftest import StartServer
from tests.grammar import CORE_RULES, START_RULES, matches, valid
from tests.peers import TIMEOUT, Peer
from tests.wire import phase_rule

PROTOCOL_SOURCE = Path(protocol.__file__).read_text(encoding="utf-8")

#: Grammar rules that the code implements by its shape rather than as a
#: constant, and where.
IMPLEMENTED_BY_SHAPE = {
    "framed-line": "LineBuffer cuts at LF and drops one CR (§2.1, §2.2)",
    "line-octets": "LineBuffer and check_message count to MAX_LINE_OCTETS (§2.3)",
    "server-line-octets": "MAX_SERVER_LINE_OCTETS, which no server line can exceed by construction (§2.3)",
    "who-command": "parse_command splits at the first SP (§5.4)",
    "msg-command": "parse_command splits at the first two SPs (§5.5)",
    "all-command": "parse_command splits at the first SP (§5.6)",
    "nickname-phase-line": "parse_line in Phase.NICKNAME (§7.1)",
    "chat-phase-line": "parse_line while waiting or chatting (§7.2, §7.3)",
    "room-phase-line": "parse_line in Phase.IN_ROOM, which refuses /next (§7.6)",
    "create-command": "parse_command splits at the first SP (§5.8)",
    "rooms-command": "parse_command splits at the first SP, as for /who (§5.9)",
    "join-command": "parse_command splits at the first SP (§5.10)",
    "nickname-command": "parse_command splits at the first SP (§5.2)",
    "register-command": "parse_account_command splits at the first SP after the verb's (§5.13)",
    "login-command": "parse_account_command splits at the first SP after the verb's (§5.14)",
    "users-command": "parse_command splits at the first SP, as for /who (§5.15)",
    "delete-command": "parse_command splits at the first SP; the server checks the password (§5.16)",
    "UTF8-2": "the strict UTF-8 decoder (§2.4)",
    "UTF8-3": "the strict UTF-8 decoder (§2.4)",
    "UTF8-4": "the strict UTF-8 decoder (§2.4)",
    "UTF8-tail": "the strict UTF-8 decoder (§2.4)",
    "server-line": "notice() and the relay (§6)",
    "relayed-message": "Matchmaker.relay passes the line on as read (§7.3)",
    "notice": "the Notice enum as a whole, formatted by notice() (§6)",
}

#: RFC 5234 Appendix B.1, for the core rules protocol.py quotes.
CORE_DEFINITIONS = {"CR": "%x0D", "LF": "%x0A", "SP": "%x20", "VCHAR": "%x21-7E", "HTAB": "%x09"}

# -- §1: the grammar is well formed -----------------------------------------


def test_every_referenced_rule_is_defined() -> None:
    """The grammar uses no rule it does not define, other than RFC 5234's core rules (§1)."""
    defined, referenced = grammar.defined_and_referenced()
    assert referenced - set(defined) - CORE_RULES == set()


def test_every_rule_is_used_or_a_start_rule() -> None:
    """Every rule is used by another, or is a start rule named in the header (§1)."""
    defined, referenced = grammar.defined_and_referenced()
    assert set(defined) - referenced <= START_RULES <= set(defined)
    header = grammar.GRAMMAR_PATH.read_text(encoding="ascii").split("\n\n; --", 1)[0]
    assert all(f";   {rule} " in header for rule in START_RULES)


def test_no_rule_is_defined_twice_or_redefines_a_core_rule() -> None:
    """Each rule is defined once, and RFC 5234's core rules are used, never redefined (§1)."""
    defined, _ = grammar.defined_and_referenced()
    assert len(defined) == len(set(defined))
    assert {rule.upper() for rule in defined} & CORE_RULES == set()


def test_every_literal_is_case_sensitive_or_numeric() -> None:
    """No rule uses RFC 5234's case-insensitive "..." strings: all matching is exact (§5.3)."""
    for rule, body in grammar.definitions().items():
        assert all(re.findall(r'(%s|)"[^"]*"', body)), rule


def test_every_rule_cites_a_section() -> None:
    """Each rule's line, or the comment block above it, cites a section of protocol.md (§1)."""
    for paragraph in grammar.GRAMMAR_PATH.read_text(encoding="ascii").split("\n\n"):
        preamble, *rules = re.split(r"^(?=[A-Za-z])", paragraph, flags=re.M)
        for rule in rules:
            assert re.search(r"sec \d", preamble + rule), rule


def test_the_octet_limit_is_a_rule_of_its_own() -> None:
    """line-octets allows 2000 octets of anything but LF, and not 2001 (§2.3)."""
    assert matches("line-octets", bytes(range(10)) + bytes(range(11, 256)) + b"\xff" * 1745)
    assert not matches("line-octets", b"a" * 2001)
    assert not matches("line-octets", b"a\nb")
    assert matches("framed-line", b"hi\r\n") and matches("framed-line", b"hi\n")
    assert not matches("framed-line", b"hi")


def test_the_prose_quotes_the_grammar_word_for_word() -> None:
    """Every rule shown in a plain code block of protocol.md is the grammar's rule, exactly."""
    text = grammar.PROSE_PATH.read_text(encoding="utf-8")
    blocks = re.findall(r"^```\n(.*?)^```$", text, flags=re.M | re.S)
    shown = re.findall(r"^([A-Za-z][A-Za-z0-9-]*) += (.+)$", "".join(blocks), flags=re.M)
    assert len(shown) >= 8
    rules = grammar.definitions()
    for name, body in shown:
        assert " ".join(body.split()) == rules[name], name


# -- protocol.py names each rule after the grammar ---------------------------


def quoted_rules() -> Dict[str, str]:
    """Return each ``# rule = definition`` quoted in protocol.py, definition normalised."""
    quotes: Dict[str, str] = {}
    for name, body in re.findall(r"^ *# ([A-Za-z][A-Za-z0-9-]*) = (.+)$", PROTOCOL_SOURCE, re.M):
        body = re.sub(r"\s+(\(an RFC 5234 core rule\).*|§[\d.]+(, §[\d.]+)*)$", "", body)
        quotes[name] = " ".join(body.split())
    return quotes


def test_protocol_py_quotes_the_grammar_word_for_word() -> None:
    """Every rule quoted in protocol.py is the grammar's rule, exactly (style: h11 _abnf.py)."""
    rules = {**grammar.definitions(), **CORE_DEFINITIONS}
    quotes = quoted_rules()
    assert quotes, "no rule quoted in protocol.py"
    for name, body in quotes.items():
        assert body == rules[name], f"protocol.py quotes {name} as {body!r}, the grammar says {rules[name]!r}"


def code_name(rule: str) -> Optional[str]:
    """Return where protocol.py defines ``rule``: a constant, a Notice member, or None."""
    constant = rule.replace("-", "_")
    if hasattr(protocol, constant) and not callable(getattr(protocol, constant)):
        return constant
    member = constant.upper()
    return "Notice." + member if member in Notice.__members__ else None


@pytest.mark.parametrize("rule", list(grammar.definitions()))
def test_each_rule_is_one_quoted_constant_or_implemented_by_shape(rule: str) -> None:
    """Each rule is a constant or Notice member named after it and quoted above it, or is listed here."""
    if rule in IMPLEMENTED_BY_SHAPE:
        assert code_name(rule) is None, f"{rule} is now a constant: drop it from IMPLEMENTED_BY_SHAPE"
        return
    assert code_name(rule) is not None, f"protocol.py has no constant for {rule}"
    assert rule in quoted_rules(), f"protocol.py does not quote {rule} above its constant"


def test_every_notice_is_a_grammar_rule_and_an_alternative_of_notice() -> None:
    """Notice has one member per notice rule, and notice() output matches that rule (§6)."""
    alternatives = set(grammar.definitions()["notice"].split(" / "))
    assert alternatives == {name.lower().replace("_", "-") for name in Notice.__members__}
    for name in Notice:
        rule = name.name.lower().replace("_", "-")
        argument, text = example_argument(name, "bob"), example_text(name, b"#hi /x")
        line = protocol.notice(name, argument, text)[:-1]
        assert valid(rule, line) and valid("server-line", line), line
        listed = name in protocol.NOTICE_TAILS and protocol.NOTICE_TAILS[name].listed
        wrong = line + b"\x01" if text else line + b" x" if argument and not listed else line.upper()
        assert not matches(rule, wrong), line


def example_argument(name: Notice, nickname: str) -> str:
    """Return an argument that ``name``'s rule allows: a count, a room, ROOM_NICK or a nickname."""
    if name in protocol.NOTICES_WITH_COUNT:
        return "7"
    if name in protocol.NOTICES_WITH_ROOM:
        return "Lab-3"
    if name in protocol.NOTICES_ABOUT_A_MEMBER:
        return "Lab-3_" + nickname
    return nickname if name in protocol.NOTICES_WITH_ARGUMENT else ""


#: A stored-time (§5.14), for the notices that carry one.
STORED_TIME = b"2026-12-01T10:02:03Z"


def example_text(name: Notice, text: bytes) -> bytes:
    """Return what may follow ``name``'s argument: ``text``, a new nickname, a time and a text, or nothing."""
    if name is Notice.RENAMED:
        return b"robert"
    if name is Notice.IN:
        return b"hi " + text  # a message may not start with "#" (§4)
    if name is Notice.STORED_FROM:
        return STORED_TIME + b" " + text
    return text if name in protocol.NOTICES_WITH_TEXT else b""


def leading_literal(rule: str) -> Tuple[str, bool]:
    """Return the literal every line of a notice rule starts with, and whether it is the whole rule."""
    definition = grammar.MechatRule(rule).definition
    if isinstance(definition, Literal):
        head, whole = definition, True
    else:
        assert isinstance(definition, Concatenation), f"{rule} is not a literal and its arguments"
        head, whole = definition.parsers[0], False
    assert isinstance(head, Literal) and head.case_sensitive and isinstance(head.value, str), rule
    return head.value, whole


def test_no_line_matches_two_notice_rules() -> None:
    """§6: no notice can be taken for another, proved from the grammar's own rules (rule 2 of protocol 2).

    Every line of a notice rule starts with that rule's leading literal
    (the notice's name and ``_``), compared case-sensitively.  Two rules
    whose literals differ before either ends can share no line.  Where one
    literal is the start of the other, the shorter rule must be that
    literal alone, which is then too short to start with the longer one.
    """
    heads = {rule: leading_literal(rule) for rule in grammar.definitions()["notice"].split(" / ")}
    for (first, (a, a_whole)), (second, (b, b_whole)) in itertools.combinations(heads.items(), 2):
        assert a != b, (first, second)
        if b.startswith(a):
            assert a_whole, f"{first}'s name starts {second}'s, and {first} goes on after it"
        if a.startswith(b):
            assert b_whole, f"{second}'s name starts {first}'s, and {second} goes on after it"


@pytest.mark.parametrize("name", list(Notice), ids=[name.name for name in Notice])
def test_each_notice_matches_its_own_rule_and_no_other(name: Notice) -> None:
    """§6: what notice() makes matches its own rule, and, as the proof above says, no other."""
    argument, text = example_argument(name, "Bob"), example_text(name, b"#x /y")
    line = protocol.notice(name, argument, text)[:-1]
    rules = grammar.definitions()["notice"].split(" / ")
    assert [rule for rule in rules if matches(rule, line)] == [name.name.lower().replace("_", "-")]


# -- §11: the examples ---------------------------------------------------------

SESSIONS = examples.sessions()
#: The replies that make a client's line a refused one in §11: every ``#invalid_`` notice.
REFUSALS = tuple(name.value.encode() for name in Notice if name.value.startswith("#invalid_"))


def reply_to(rows: List[examples.Row], index: int) -> Optional[bytes]:
    """Return the answer to ``rows[index]``: its client's next server line, if before its next line."""
    client = rows[index].client
    for row in rows[index + 1 :]:
        if row.client == client:
            return row.line if row.side == "S" else None
    return None


def check_client_row(rows: List[examples.Row], index: int, phase: Phase) -> None:
    """A client row matches its phase's rule unless the server refuses it; the code agrees (§11)."""
    line = rows[index].line
    assert line is not None
    reply = reply_to(rows, index)
    try:
        parse_line(phase, line if matches("line-octets", line) else TOO_LONG)
    except ProtocolError as error:  # an #invalid_ reply, or #login_failed for a malformed line
        assert error.notice.encode() == reply
        refused = True
    else:
        assert not (reply or b"").startswith(REFUSALS)
        refused = False
    rule = phase_rule(phase)
    assert valid(rule, line) is not refused, f"{line[:40]!r} under {rule}"


def check_session(rows: List[examples.Row]) -> int:
    """Check every row of one example; return how many lines were checked."""
    phases: Dict[int, Phase] = {}
    partnered: Set[int] = set()
    checked = 0
    for index, row in enumerate(rows):
        if row.line is None:
            continue
        checked += 1
        phase = phases.setdefault(row.client, Phase.NICKNAME)
        if row.side == "C":
            check_client_row(rows, index, phase)
            continue
        assert valid("server-line", row.line), row.line
        assert row.client in partnered or matches("notice", row.line), "relayed before #matched_to_"
        if row.line == b"#wait" or row.line.startswith(b"#matched_to_"):
            phases[row.client] = Phase.WAITING
        if row.line.startswith(b"#joined_"):
            phases[row.client] = Phase.IN_ROOM
        if row.line.startswith(b"#matched_to_"):
            partnered.add(row.client)
    return checked


def test_the_spec_has_an_example_for_each_phase() -> None:
    """§11 holds example sessions for the nickname, waiting and chatting phases, rooms and accounts."""
    titles = " ".join(session.title for session in SESSIONS)
    for phase in ("Nickname phase", "Waiting phase", "Chatting phase", "Rooms:", "Accounts:"):
        assert phase in titles


def test_a_time_in_an_example_stands_for_any_stored_time() -> None:
    """A server row's ``<time>`` matches any stored-time, and nothing else; the grammar sees one (§11)."""
    row = examples.parse_row("S3: #stored_from_bob <time> at <time>?")
    assert row is not None and row.pattern is not None
    assert valid("server-line", row.line or b"")
    assert row.pattern.fullmatch(b"#stored_from_bob 1999-01-02T03:04:05Z at <time>?") is None
    assert row.pattern.fullmatch(b"#stored_from_bob 1999-01-02T03:04:05Z at 2026-12-01T10:02:03Z?")
    for time in (
        b"1999-01-02t03:04:05Z",
        b"1999-01-02T03:04:05",
        b"1999-1-02T03:04:05Z",
        b"1999-01-02 03:04:05Z",
    ):
        assert row.pattern.fullmatch(b"#stored_from_bob " + time + b" at " + STORED_TIME + b"?") is None
        assert not matches("stored-time", time)
    with pytest.raises(AssertionError):
        examples.parse_row("C1: /msg bob <time>")  # a client's line is always known


@pytest.mark.parametrize("session", SESSIONS, ids=[session.title for session in SESSIONS])
def test_every_example_line_parses_under_its_rule(session: examples.Session) -> None:
    """Every line of every example matches the rule its phase gives it, or is refused (§11)."""
    assert check_session(session.rows) >= 2


class Replay:
    """Play one example against a live server: one Peer per client, connected at its first row."""

    def __init__(self, server: ChatServer, timeout: float = TIMEOUT) -> None:
        self.server = server
        self.timeout = timeout  # for each server row: a timer of the example's may come first
        self.peers: Dict[int, Peer] = {}
        self.stopped = False

    def peer(self, client: int) -> Peer:
        """Return client ``client``'s Peer, connecting it now if this is its first row."""
        if client not in self.peers:
            self.peers[client] = Peer(self.server.port)
        return self.peers[client]

    def client_row(self, row: examples.Row) -> None:
        """Send a line, or end the connection as the row says (§8)."""
        peer = self.peer(row.client)
        if row.event == "<eof>":
            peer.sock.shutdown(socket.SHUT_WR)
        elif row.event == "<reset>":
            peer.reset()
        else:
            assert row.line is not None
            peer.send(row.line)

    def server_row(self, row: examples.Row) -> None:
        """Expect the row's line, or the close, next on that client's connection."""
        peer = self.peer(row.client)
        if row.line == Notice.SERVER_SHUTDOWN.value.encode() and not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()  # §10: what Ctrl-C does
        if row.event == "<close>":
            peer.expect_closed(self.timeout)
        elif row.pattern is not None:  # a row with a <time>
            line = peer.read_line(self.timeout)
            assert row.pattern.fullmatch(line), "expected %r, got %r" % (row.pattern.pattern, line)
        else:
            assert row.line is not None
            peer.expect(row.line, timeout=self.timeout)

    def close(self) -> None:
        """Close every Peer that is still open."""
        for peer in self.peers.values():
            peer.close()


@pytest.mark.parametrize("session", SESSIONS, ids=[session.title for session in SESSIONS])
def test_every_example_is_a_true_transcript(session: examples.Session, start_server: StartServer) -> None:
    """Replayed against a live server, each example gets exactly the server lines it shows (§11)."""
    limits = {key: int(value) if value.is_integer() else value for key, value in session.limits.items()}
    # A row may wait for the nickname timer itself, so it gets that much more.
    replay = Replay(start_server(**limits), TIMEOUT + limits.get("nickname_timeout", 0))
    try:
        for row in session.rows:
            (replay.client_row if row.side == "C" else replay.server_row)(row)
    finally:
        replay.close()


def command_table() -> List[List[str]]:
    """Return the rows of the §5.3 table: line(s), reply, why."""
    text = grammar.PROSE_PATH.read_text(encoding="utf-8").split("### §5.3", 1)[1].split("## §6", 1)[0]
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) >= 8
    return rows


@pytest.mark.parametrize("row", command_table(), ids=lambda row: row[0])
def test_the_command_table_is_what_the_code_and_grammar_do(row: List[str]) -> None:
    """Each line of the §5.3 table gets the reply it shows, from parse_line and the grammar."""
    lines, reply, _ = row
    phase = Phase.NICKNAME if "in the nickname phase" in lines else Phase.CHATTING
    for line in (example.encode() for example in re.findall(r"`([^`]*)`", lines)):
        if reply == "(close)":
            assert parse_line(phase, line).event is Event.QUIT
            assert valid(phase_rule(phase), line)
            continue
        with pytest.raises(ProtocolError) as refusal:
            parse_line(phase, line)
        assert f"`{refusal.value.notice.value}`" == reply.strip()
        assert not valid(phase_rule(phase), line)


# -- Sections: what the code and the grammar cite is there --------------------------


def headings() -> List[str]:
    """Return the number of every section of protocol.md, as "§9.10", in order."""
    text = grammar.PROSE_PATH.read_text(encoding="utf-8")
    return re.findall(r"^#{2,3} (§\d+(?:\.\d+)?) ", text, flags=re.M)


def test_every_section_cited_by_the_code_and_the_grammar_exists() -> None:
    """Each §N.M that protocol.py cites, and each "sec N.M" of the grammar, is a heading of protocol.md."""
    cited = set(re.findall(r"§(\d+(?:\.\d+)?)", PROTOCOL_SOURCE))
    for note in re.findall(r"sec ([\d., ]+)", grammar.GRAMMAR_PATH.read_text(encoding="ascii")):
        cited |= set(re.findall(r"\d+(?:\.\d+)?", note))
    assert {"2.5", "3.3", "5.13", "5.16", "7.7", "9.10"} <= cited
    assert {"§" + number for number in cited} - set(headings()) == set()


def test_the_limits_table_has_a_row_for_each_section_of_limits() -> None:
    """§9's table names each of §9.1 to §9.12 once, in order, and each has a section of its own."""
    text = grammar.PROSE_PATH.read_text(encoding="utf-8").split("## §9 ", 1)[1].split("## §10 ", 1)[0]
    rows = re.findall(r"^\| (§9\.\d+) \|", text, flags=re.M)
    assert rows == [section for section in headings() if section.startswith("§9.")]
    assert rows == ["§9.%d" % number for number in range(1, 13)]


# -- §7.5: the state table -------------------------------------------------------


def state_table() -> Dict[str, Dict[str, str]]:
    """Read the table under the state-table marker in protocol.md: event -> phase -> cell."""
    text = grammar.PROSE_PATH.read_text(encoding="utf-8")
    lines = text.split("<!-- state-table", 1)[1].splitlines()[1:]
    table = itertools.takewhile(lambda line: line.startswith("|"), lines)
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table]
    header, body = rows[0], rows[2:]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in body}


def test_the_state_table_covers_every_event_and_phase() -> None:
    """§7.5 has one row per Event and one column per phase but CLOSED, which has no events."""
    table = state_table()
    assert set(table) == {event.value for event in Event}
    live_phases = {phase.name for phase in Phase} - {"CLOSED"}
    assert all(set(cells) == live_phases for cells in table.values())
    assert all(phase is not Phase.CLOSED for phase, _ in protocol.TRANSITIONS)


@pytest.mark.parametrize("event", list(Event), ids=[event.name for event in Event])
def test_the_state_table_agrees_with_transitions_cell_for_cell(event: Event) -> None:
    """Each cell of §7.5 is TRANSITIONS' reply and next phase, or "—" where it has none."""
    cells = state_table()[event.value]
    for phase in (Phase.NICKNAME, Phase.WAITING, Phase.CHATTING, Phase.IN_ROOM):
        cell = cells[phase.name].replace("`", "")
        transition = protocol.TRANSITIONS.get((phase, event))
        if transition is None:
            assert cell.startswith("—"), f"{phase}/{event}: TRANSITIONS has no cell, the spec has {cell!r}"
        else:
            assert cell == f"{transition.reply} → {transition.next_phase.name}"
