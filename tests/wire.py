"""The wire check: every line the integration tests put on the wire, held to the grammar.

Tests send invalid lines on purpose, so "every client line must parse"
would be false, and "skip the ones that look invalid" would be circular.
The check therefore asks the one party that knows what happened to each
line, the server, and compares its verdict with the grammar's:

* **client to server**: the server's ``parse_line`` is wrapped, so for
  every line the server judged we know the phase it was judged in and
  whether it was accepted, and as what.  An accepted line must match the
  grammar rule of what it was accepted as (``nickname``, ``message``,
  ``quit-command``, ``nickname-command``) and ``line-octets``; a refused
  line must not match its phase's rule.  So the grammar and the server
  must agree on every line either way.  (Lines refused by flood control
  never reach ``parse_line`` and are not judged here: their reply says
  nothing about their form.)
* **server to client**, seen from both ends: every line a test
  :class:`~tests.peers.Peer` receives must match ``server-line``, and
  ``notice`` until that Peer has received ``#matched_to_``, since nothing
  can be relayed to a client without a partner; and every line the
  server's Matchmaker queues for a connection (so also the lines for
  mechat's own client and the conformance kit) must end in LF and match
  ``server-line``, or ``notice`` when the connection has no partner.
  Lines that Peers send are counted too; they reach the check through the
  server's verdicts.

Recording is cheap (a counter keyed by distinct line) because it runs
inside server threads, under load tests; the grammar is consulted at the
end of each test, once per distinct line.  The ``abnf`` parser takes about
a millisecond for a short line and tenths of a second for one of
:data:`LONG_LINE` octets or more, and flood tests send hundreds of
thousands of distinct lines, so each check has a budget: the first
:data:`DISTINCT_PER_CHECK` distinct lines of each direction, of which at
most :data:`LONG_LINES_PER_CHECK` long ones.  Repeats of a checked line
count as checked; what the budget leaves out is counted and reported, not
hidden.
"""

import collections
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Counter, Iterator, List, NamedTuple, Optional, Tuple

import pytest

import mechat.connection
import mechat.server
from mechat.chatter import Chatter
from mechat.protocol import LF, TOO_LONG, Event, Line, Parsed, Phase, ProtocolError, parse_line
from tests.grammar import definitions, forget_parses, valid
from tests.peers import Peer

#: The grammar rule of each kind of line the server accepts (§3-§5).
RULE_OF_EVENT = {
    Event.NICKNAME: "nickname",
    Event.MESSAGE: "message",
    Event.QUIT: "quit-command",
    Event.RENAME: "nickname-command",
    Event.WHO: "who-command",
    Event.DIRECT: "msg-command",
    Event.BROADCAST: "all-command",
    Event.NEXT: "next-command",
    Event.CREATE: "create-command",
    Event.ROOMS: "rooms-command",
    Event.JOIN: "join-command",
    Event.MEMBERS: "members-command",
    Event.LEAVE: "leave-command",
    Event.REGISTER: "register-command",
    Event.LOGIN: "login-command",
    Event.USERS: "users-command",
    Event.DELETE: "delete-command",
}

#: Octets above which a line is expensive to parse; see the module docstring.
#: abnf 2.4, the last release for Python 3.9, takes about 1 s for a 2,000-octet
#: line (2.9 takes 0.15 s), so a few long lines per test are all it can afford.
LONG_LINE = 512
LONG_LINES_PER_CHECK = 8
#: Distinct lines of each direction kept between two checks; more are counted, not kept.
DISTINCT_PER_CHECK = 300


def phase_rule(phase: Phase) -> str:
    """Return the start rule for what a client may send in ``phase`` (§7)."""
    if phase is Phase.NICKNAME:
        return "nickname-phase-line"
    return "room-phase-line" if phase is Phase.IN_ROOM else "chat-phase-line"


class Counts(NamedTuple):
    """How many line occurrences one check covered, by kind."""

    client_lines: int  # client lines the server judged, checked against its verdict
    server_lines: int  # lines Peers received, checked against server-line
    queued_lines: int  # lines the server queued for a connection, checked the same way
    skipped: int  # lines over the budget of a check (see the module docstring)


class WireLog:
    """Collects lines as they pass and checks them against the grammar on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (phase, line, event or None if refused) -> occurrences
        self._verdicts: Counter[Tuple[Phase, bytes, Optional[Event]]] = collections.Counter()
        self._received: Counter[Tuple[str, bytes]] = collections.Counter()  # (rule, line)
        self._queued: Counter[Tuple[str, bytes]] = collections.Counter()  # (rule, line with LF)
        self._partnered: weakref.WeakSet[Peer] = weakref.WeakSet()
        self._overflow = 0
        self.sent = 0  # lines Peers sent
        self.too_long = 0  # over-long lines the server judged (§2.3), not lines
        self.total = Counts(0, 0, 0, 0)

    # -- Recording (any thread) ---------------------------------------------------

    def record(self, peer: Peer, direction: str, line: bytes) -> None:
        """Note a line a Peer sent or received (the Peer.recorder hook)."""
        with self._lock:
            if direction == "c2s":
                self.sent += 1
                return
            rule = "server-line" if peer in self._partnered else "notice"
            if line.startswith(b"#matched_to_"):
                self._partnered.add(peer)
            self._count(self._received, (rule, line))

    def judge(self, phase: Phase, line: Line) -> Parsed:
        """Call the real parse_line for the server, and note its verdict."""
        try:
            parsed = parse_line(phase, line)
        except ProtocolError:
            self.judge_recorded(phase, line, None)
            raise
        self.judge_recorded(phase, line, parsed.event)
        return parsed

    def judge_recorded(self, phase: Phase, line: Line, event: Optional[Event]) -> None:
        """Keep one verdict of the server's: ``event``, or None for a refusal."""
        with self._lock:
            if line is TOO_LONG:
                self.too_long += 1
            else:
                assert isinstance(line, bytes)
                self._count(self._verdicts, (phase, line, event))

    def queue(self, chatter: Chatter, line: bytes) -> None:
        """Note a line the server queued for a connection (wraps Chatter.owe and owe_all)."""
        if isinstance(chatter, mechat.connection.Connection):  # not the Matchmaker's unit tests
            rule = "notice" if chatter.partner is None else "server-line"
            with self._lock:
                self._count(self._queued, (rule, line))

    def _count(self, counter: "Counter[Any]", key: Any) -> None:
        """Add one occurrence, unless that would keep too many distinct lines; hold the lock."""
        if key in counter or len(counter) < DISTINCT_PER_CHECK:
            counter[key] += 1
        else:
            self._overflow += 1

    @contextmanager
    def installed(self) -> Iterator["WireLog"]:
        """Hook into Peer and the server's parse_line for the duration."""
        real_owe, real_owe_all = Chatter.owe, Chatter.owe_all

        def owe(chatter: Chatter, line: bytes) -> None:
            self.queue(chatter, line)
            real_owe(chatter, line)

        def owe_all(chatter: Chatter, lines: List[bytes], octets: int) -> None:
            for line in lines:
                self.queue(chatter, line)
            real_owe_all(chatter, lines, octets)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Peer, "recorder", self.record)
            patch.setattr(mechat.server, "parse_line", self.judge)
            patch.setattr(Chatter, "owe", owe)
            patch.setattr(Chatter, "owe_all", owe_all)
            yield self

    # -- Checking (the test thread) ---------------------------------------------

    def discard(self) -> None:
        """Forget what was recorded since the last check, unchecked."""
        with self._lock:
            self._verdicts.clear()
            self._received.clear()
            self._queued.clear()
            self._overflow = 0

    def check(self) -> Counts:
        """Check everything recorded since the last check; raise AssertionError on a mismatch."""
        with self._lock:
            verdicts, self._verdicts = self._verdicts, collections.Counter()
            received, self._received = self._received, collections.Counter()
            queued, self._queued = self._queued, collections.Counter()
            skipped, self._overflow = self._overflow, 0
        budget = [LONG_LINES_PER_CHECK, 0]
        failures: List[str] = []
        client_lines = self._check_each(verdicts, budget, failures, self._client_line_failures)
        server_lines = self._check_each(received, budget, failures, received_line_failures)
        queued_lines = self._check_each(queued, budget, failures, queued_line_failures)
        forget_parses()  # old abnf's memo of these lines only helps within this check
        skipped += budget[1]
        counts = Counts(client_lines, server_lines, queued_lines, skipped)
        self.total = Counts(*(a + b for a, b in zip(self.total, counts)))
        assert not failures, "wire lines disagree with spec/mechat.abnf:\n" + "\n".join(failures[:10])
        return counts

    def _check_each(
        self, recorded: "Counter[Any]", budget: List[int], failures: List[str], judge: Callable[..., Any]
    ) -> int:
        """Judge each distinct recorded key within the budget; return the occurrences checked."""
        checked = 0
        for key, times in recorded.items():
            if self._affordable(key[1], budget, times):
                failures += judge(*key)
                checked += times
        return checked

    @staticmethod
    def _affordable(line: bytes, budget: List[int], times: int) -> bool:
        """Spend a long-line token if ``line`` is long; count it as skipped if none is left.

        ``budget`` is [long-line tokens left, occurrences skipped].
        """
        if len(line) <= LONG_LINE:
            return True
        if budget[0] > 0:
            budget[0] -= 1
            return True
        budget[1] += times
        return False

    @staticmethod
    def _client_line_failures(phase: Phase, line: bytes, event: Optional[Event]) -> List[str]:
        """Compare one server verdict with the grammar; return what disagrees."""
        if event is None:
            if valid(phase_rule(phase), line):
                return [f"the server refused {line[:60]!r} in {phase.name}, the grammar accepts it"]
            return []
        rule = RULE_OF_EVENT[event]
        if rule not in definitions()[phase_rule(phase)].split(" / "):
            return [f"the server accepted {line[:60]!r} as {rule} in {phase.name}, which allows no {rule}"]
        if not valid(rule, line):
            return [f"the server accepted {line[:60]!r} as {rule} in {phase.name}, the grammar does not"]
        return []


def received_line_failures(rule: str, line: bytes) -> List[str]:
    """Compare a line a Peer received with the grammar; return what disagrees."""
    return [] if valid(rule, line) else [f"a Peer received {line[:60]!r}, which is not {rule}"]


def queued_line_failures(rule: str, line: bytes) -> List[str]:
    """Compare a line the server queued (LF included) with the grammar; return what disagrees."""
    if line.endswith(LF) and valid(rule, line[: -len(LF)]):
        return []
    return [f"the server queued {line[:60]!r}, which is not {rule} and LF"]


#: The one log of a test session: conftest installs it and reports its totals.
SESSION = WireLog()
