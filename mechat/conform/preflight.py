"""The preflight: try the basics once before the checks, and stop early if they fail.

Nearly every check starts the same way: connect, choose a nickname, get
``#wait``, meet a partner, relay a line.  Against a server that gets one
of these wrong, every check fails at the same step, each after waiting out
its timeout, and the report says the same thing sixty times (the original
MEchat server, which ends no line with LF, took over five minutes that
way).  So the kit walks through the basics once first.  If a step fails,
the report says why in one paragraph, and the checks that need that step
(:attr:`mechat.conform.registry.Check.needs`) are skipped with the reason;
the checks that need less still run.  Against a correct server the
preflight costs a handful of round trips.
"""

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

from mechat.conform.clients import MATCHED_TO, Address, Exchange, Failure, Session, show
from mechat.conform.diagnose import WAIT, Outcome
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
            f"PREFLIGHT FAILED: the server could not {failed_step}. {self.failure}. Until it can, the"
            f" {skipped} checks that need it are skipped and the other {len(checks) - skipped} run. Fix"
            " this first."
        )


def run(address: Address, timeout: float) -> Preflight:
    """Walk through the steps in order; stop at the first that fails."""
    reached = Stage.NOTHING
    session = Session(address, timeout)
    with session:
        for stage, _words, step in STEPS:
            try:
                step(session)
            except Failure as failure:
                return Preflight(reached, failure.exchange)
            except OSError as error:
                return Preflight(reached, Exchange(session.last_sent, "a working connection", f"<{error}>"))
            reached = stage
    return Preflight(reached)


def connect(session: Session) -> None:
    """Open the first connection."""
    session.connect("alice")


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
    """Send one line each way and see each arrive as sent."""
    alice, bob = session.clients
    for sender, receiver in ((alice, bob), (bob, alice)):
        line = b"preflight line from " + sender.name.encode("ascii")
        sender.send(line)
        receiver.expect(line)


#: Each step: the stage it reaches when it works, what it tries in words, and how.
STEPS: List[Tuple[Stage, str, Callable[[Session], None]]] = [
    (Stage.CONNECT, "accept a connection", connect),
    (Stage.WAIT, "answer a nickname with #wait", wait),
    (Stage.PAIR, "pair a second client with the first", pair),
    (Stage.RELAY, "relay a line each way between the two", relay),
]
