"""The preflight: try the basics once before the checks, and stop early if they fail.

Nearly every check starts the same way: connect, choose a nickname, get
``#wait``, meet a partner, relay a line; and every check ends by hanging
up and waiting for the server to close.  Against a server that gets one
of these wrong, every check fails at the same step, each after waiting out
its timeout, and the report says the same thing sixty times (the original
MEchat server, which ends no line with LF, took over five minutes that
way).  So the kit walks through the basics once first.  If a step fails,
the report says why in one paragraph, and the checks that need that step
(:attr:`mechat.conform.registry.Check.needs`) are skipped with the reason;
the checks that need less still run.  Against a correct server the
preflight costs a handful of round trips.

Two steps go a little past the bare basics, because without them every
check would wait out a timeout or give a verdict that depends on luck: a
client that hangs up must be closed (§8), and two lines sent in one write
must arrive as two (§2.1), since the kit, like any client, often sends a
line and the next one at once.
"""

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

from mechat.conform.clients import MATCHED_TO, Address, Exchange, Failure, Session, show
from mechat.conform.diagnose import CLOSED, WAIT, Outcome
from mechat.conform.registry import Check, Stage


class Preflight(NamedTuple):
    """How far the basics got, and the exchange that stopped them, if any."""

    reached: Stage
    failure: Optional[Exchange] = None

    def blocks(self, check: Check) -> bool:
        """Tell whether ``check`` needs a step that did not work."""
        return check.needs > self.reached

    def paragraph(self, checks: Sequence[Check]) -> str:
        """Explain the failure, and what it means for ``checks``, in one paragraph."""
        if self.failure is None:
            return ""
        failed_step = next(words for stage, words, _ in STEPS if stage > self.reached)
        skipped = sum(self.blocks(check) for check in checks)
        return (
            f"PREFLIGHT FAILED: the server could not {failed_step}. {self.failure}. Until it can, the kit"
            f" skips {skipped} of the {len(checks)} checks, those that need it. Fix this first."
        )


def run(address: Address, timeout: float, up_to: Stage = Stage.RELAY) -> Preflight:
    """Walk through the steps in order, as far as ``up_to``; stop at the first that fails."""
    reached = Stage.NOTHING
    session = Session(address, timeout)
    try:
        for stage, _words, step in STEPS:
            if stage > up_to:
                break
            try:
                step(session)
            except Failure as failure:
                return Preflight(reached, failure.exchange)
            except OSError as error:
                return Preflight(reached, Exchange(session.last_sent, "a working connection", f"<{error}>"))
            reached = stage
        return Preflight(reached)
    finally:
        session.close(wait=reached >= Stage.HANG_UP)  # no wait for a server that ignores end of file


def connect(session: Session) -> None:
    """Open the first connection."""
    session.connect("alice")


def hang_up(session: Session) -> None:
    """Connect, hang up at once, and expect the server to close the connection (§8).

    Every check ends by hanging up its clients and waiting for the server
    to close them; a server that never does would cost a timeout per check.
    """
    own = Session(session.address, session.timeout)
    try:
        early = own.connect("early")
        early.note("<hangs up at once: end of file>")
        early.hang_up()
        early.expect(CLOSED)
    finally:
        own.close(wait=False)  # closed already, or never will be


def wait(session: Session) -> None:
    """Choose a nickname and expect #wait; if no line comes, take a second look."""
    (alice,) = session.clients
    alice.send(b"alice")
    got = alice.read_line()
    if got == WAIT:
        return
    if isinstance(got, Outcome) and got.kind == Outcome.SILENCE:
        raise second_look(session, got)
    raise Failure(alice.judged(WAIT, got))


def second_look(session: Session, silence: Outcome) -> Failure:
    """Let a second client join, and judge the first by all it got then (§7.1).

    A server that sends no #wait still matches the two; one that sends no
    LF shows more unterminated notices, glued to the first.
    """
    (alice,) = session.clients
    session.connect("bob").send(b"bob")
    later = alice.read_line()
    if later == MATCHED_TO + b"bob":
        diagnosis = (
            "alice was never told #wait, but was matched when bob came: a client with nobody to meet must be"
            " told #wait at once (§7.1)"
        )
        exchange = alice.judged(WAIT, silence)._replace(diagnosis=diagnosis)
    else:
        exchange = alice.judged(WAIT, later)
    got = f"{silence.text}, and once bob joined, {show(later)}"
    return Failure(exchange._replace(sent="alice: 'alice'", got=got))


def pair(session: Session) -> None:
    """Connect a second client and see the two matched, each told the other's name."""
    (alice,) = session.clients
    session.meet(alice, "bob")


def relay(session: Session) -> None:
    """Send one line each way, then two lines in one write, and see each arrive as sent (§2.1, §7.3)."""
    alice, bob = session.clients
    for sender, receiver in ((alice, bob), (bob, alice)):
        line = b"preflight line from " + sender.name.encode("ascii")
        sender.send(line)
        receiver.expect(line)
    alice.send(b"first of two", b"second of two")
    bob.expect(b"first of two")
    bob.expect(b"second of two")


#: Each step: the stage it reaches when it works, what it tries in words, and how.
STEPS: List[Tuple[Stage, str, Callable[[Session], None]]] = [
    (Stage.CONNECT, "accept a connection", connect),
    (Stage.HANG_UP, "close a connection whose client hung up", hang_up),
    (Stage.WAIT, "answer a nickname with #wait", wait),
    (Stage.PAIR, "pair a second client with the first", pair),
    (Stage.RELAY, "relay a line each way between the two, and two lines sent in one write", relay),
]
