"""A realistic chat of thousands of lines, every one of them held to the grammar.

The wire check (tests/wire.py) runs after every test, but how many lines it
sees depends on which tests ran.  This test does not: it drives pairs of
clients through a live server, with the valid and invalid lines of a real
conversation, and asserts that thousands of lines were checked, in whatever
order or subset the suite runs.
"""

import random
from typing import Callable, List, Tuple

import pytest

from mechat.protocol import Event, Notice, Phase
from mechat.server import ChatServer
from tests.conftest import StartServer
from tests.peers import Peer, pair
from tests.wire import Counts, WireLog, queued_line_failures, received_line_failures

#: What the chatters say, mixed ASCII and not, with "#" and "/" inside lines.
VOCABULARY = (
    "hi hello yes no maybe ok sure why how where when what who the a an of to in on at for with "
    "about today tomorrow tonight lunch coffee tea code python socket thread lock line byte "
    "café naïve über straße ¿qué tal? 你好 こんにちは привет שלום 👋 🎉 🙂 #hashtag C# 100% /slash 3+4=7"
)
WORDS = VOCABULARY.split()

#: Lines the server must refuse in the chatting phase, with its reply (§4, §5).
REFUSED: List[Tuple[bytes, Notice]] = [
    (b"#not-a-message", Notice.INVALID_MESSAGE),
    (b"", Notice.INVALID_MESSAGE),
    (b"bell\x07", Notice.INVALID_MESSAGE),
    (b"caf\xe9 in Latin-1", Notice.INVALID_MESSAGE),
    (b"\xed\xa0\x80 a surrogate", Notice.INVALID_MESSAGE),
    (b"/QUIT", Notice.INVALID_COMMAND),
    (b"/quit now", Notice.INVALID_COMMAND),
    (b"/nick bob", Notice.INVALID_COMMAND),
    (b"/nickname", Notice.INVALID_NICKNAME),
    (b"/nickname two words", Notice.INVALID_NICKNAME),
]

PAIRS = 3
ROUNDS = 10
LINES_PER_TURN = 40  # 3 pairs x 10 rounds x 2 sides x 40 = 2400 messages


def sentence(rng: random.Random) -> bytes:
    """Return one chat line: a few words, sometimes a tab, now and then a long one (§4)."""
    count = rng.choice((1, 2, 3, 5, 8, 13)) if rng.random() > 0.02 else 60
    words = [rng.choice(WORDS) for _ in range(count)]
    text = ("\t" if rng.random() < 0.05 else " ").join(words)
    return text.lstrip("#/").encode("utf-8") or b"ok"


def turn(rng: random.Random, speaker: Peer, listener: Peer) -> None:
    """Send a burst of lines, some refused, and see each arrive or be refused, in order."""
    lines = [sentence(rng) for _ in range(LINES_PER_TURN)]
    refused = rng.sample(REFUSED, 2)
    speaker.send(*lines, *(line for line, _ in refused))
    listener.expect(*lines)
    speaker.expect(*(reply.value for _, reply in refused))


def converse(rng: random.Random, alice: Peer, bob: Peer, number: int, checkpoint: Callable[[], None]) -> None:
    """Chat for ROUNDS rounds, renaming once, and end with a /quit (§7.3, §8)."""
    for _ in range(ROUNDS):
        turn(rng, alice, bob)
        turn(rng, bob, alice)
        checkpoint()
    alice.send(f"/nickname alice-{number}")
    alice.expect(f"#nickname_changed_alice-{number}")
    bob.expect(f"#partner_renamed_alice-{number}")
    bob.send("/quit")
    alice.expect("#user_quit")
    alice.expect_closed()
    bob.expect_closed()
    alice.close()
    bob.close()


def test_thousands_of_wire_lines_match_the_grammar(start_server: StartServer, wire_log: WireLog) -> None:
    """Every line of a long chat matches its rule, and thousands of them were checked (§2-§7)."""
    server = start_server(max_rate=0)
    rng = random.Random(20261122)
    wire_log.check()  # start from a clean slate: count this test's lines only
    checked: List[Counts] = []
    for number in range(PAIRS):
        alice, bob = pair(server.port, "alice", f"b{number}#{number}")
        # Check after each round: one round's lines fit in one check's budget.
        converse(rng, alice, bob, number, lambda: checked.append(wire_log.check()))
    checked.append(wire_log.check())
    assert sum(counts.skipped for counts in checked) == 0
    assert sum(counts.client_lines for counts in checked) >= PAIRS * ROUNDS * 2 * LINES_PER_TURN
    assert sum(counts.server_lines for counts in checked) >= PAIRS * ROUNDS * 2 * LINES_PER_TURN
    assert sum(counts.queued_lines for counts in checked) >= PAIRS * ROUNDS * 2 * LINES_PER_TURN


def test_nickname_phase_lines_are_judged_in_their_phase(server: ChatServer, wire_log: WireLog) -> None:
    """Refused and accepted nickname-phase lines are checked against nickname-phase-line (§7.1)."""
    wire_log.check()
    peer = Peer(server.port)
    peer.send("two words", "/nickname alice", "/quit now", "n" * 31, "alice")
    peer.expect("#invalid_nickname", "#invalid_command", "#invalid_command", "#invalid_nickname", "#wait")
    peer.send("/quit")
    peer.expect_closed()
    peer.close()
    counts = wire_log.check()
    assert counts.client_lines == 6
    assert counts.server_lines == counts.queued_lines == 5


# -- The check itself can fail ------------------------------------------------------


def test_a_verdict_the_grammar_disagrees_with_fails_the_check() -> None:
    """A line accepted that the grammar refuses, or refused that it accepts, is reported (§7)."""
    for phase, line, event in [
        (Phase.CHATTING, b"#hashtag", Event.MESSAGE),
        (Phase.NICKNAME, b"alice", None),
        (Phase.NICKNAME, b"hello", Event.MESSAGE),  # no message in the nickname phase
    ]:
        log = WireLog()
        log.judge_recorded(phase, line, event)
        with pytest.raises(AssertionError, match="disagree with"):
            log.check()


def test_server_lines_the_grammar_refuses_fail_the_check() -> None:
    """A queued line without LF, a relayed line before a partner, a bad notice are reported (§6)."""
    assert queued_line_failures("server-line", b"hello\n") == []
    assert queued_line_failures("server-line", b"hello")  # no LF
    assert queued_line_failures("notice", b"hello\n")  # relayed with no partner
    assert received_line_failures("server-line", b"#Wait")
    assert received_line_failures("server-line", b"#wait") == []
