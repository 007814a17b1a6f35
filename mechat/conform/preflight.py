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

import ssl
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

from mechat.conform.clients import MATCHED_TO, Address, Exchange, Failure, Session, show
from mechat.conform.diagnose import CLOSED, WAIT, Outcome, plural
from mechat.conform.registry import Check, Stage


class Preflight(NamedTuple):
    """How far the basics got, what stopped them, and what else went wrong."""

    reached: Stage  # the last step that worked, with every step before it
    failure: Optional[Exchange] = None  # the step after it
    also: Optional[Exchange] = None  # a later step, tried anyway after a failed hang-up
    also_step: str = ""  # what that later step tried, in words

    @property
    def failed_step(self) -> str:
        """Say, in words, what the step that failed tried to get the server to do."""
        return next(words for stage, words, _ in STEPS if stage > self.reached) if self.failure else ""

    def blocks(self, check: Check) -> bool:
        """Tell whether ``check`` needs a step that did not work."""
        return check.needs > self.reached

    def paragraph(self, checks: Sequence[Check]) -> str:
        """Explain the failure, and what it means for ``checks``, in one paragraph."""
        if self.failure is None:
            return ""
        skipped = sum(self.blocks(check) for check in checks)
        text = f"PREFLIGHT FAILED: the server could not {self.failed_step}. {self.failure}."
        if self.also is not None:
            text += (
                f" The kit tried the next steps anyway; the server could not {self.also_step}: {self.also}."
            )
        return (
            f"{text} Until it can, the kit skips {plural(skipped, 'check')} of {len(checks)}, those that"
            " need it. Fix this first."
        )


def run(
    address: Address, timeout: float, up_to: Stage = Stage.RELAY, tls: Optional[ssl.SSLContext] = None
) -> Preflight:
    """Walk through the steps in order, as far as ``up_to``, and stop at the first that fails.

    A failed hang-up is the exception: the steps after it do not need it,
    and they may show a mistake the student should hear about first (a
    missing LF), so they are tried too, with no waiting for closes.
    Every connection speaks TLS with ``tls``, if given.
    """
    session = Session(address, timeout, tls=tls)
    flight = Preflight(Stage.NOTHING)
    try:
        for stage, words, step in STEPS:
            if stage > up_to:
                break
            failure = attempt(step, session)
            if failure is None and flight.failure is None:
                flight = flight._replace(reached=stage)
            elif failure is not None and flight.failure is None:
                flight = flight._replace(failure=failure)
                if stage is not Stage.HANG_UP:
                    break
            elif failure is not None:
                flight = flight._replace(also=failure, also_step=words)
                break
        return flight
    finally:
        session.close(wait=flight.failure is None)  # nothing to wait for from a server in trouble


def attempt(step: Callable[[Session], None], session: Session) -> Optional[Exchange]:
    """Run one step; return the exchange that shows its failure, or None if it worked."""
    try:
        step(session)
    except Failure as failure:
        return failure.exchange
    except OSError as error:
        return Exchange(session.last_sent, "a working connection", f"<{error}>")
    return None


def connect(session: Session) -> None:
    """Open a first connection, the one the next step hangs up."""
    session.connect("early")


def hang_up(session: Session) -> None:
    """Hang up the first connection at once, and expect the server to close it (§8).

    Every check ends by hanging up its clients and waiting for the server
    to close them; a server that never does would cost a timeout per check.
    No other connection of the kit is open meanwhile, so a server that
    serves one client at a time is not mistaken for one that ignores the
    end of file.
    """
    (early,) = session.clients
    early.note("<hangs up at once: end of file>")
    early.hang_up()
    early.expect(CLOSED)


def wait(session: Session) -> None:
    """Connect, choose a nickname and expect #wait; if no line comes, take a second look."""
    alice = session.connect("alice")
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
    alice = session.clients[-1]
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
    session.meet(session.clients[-1], "bob")


def relay(session: Session) -> None:
    """Send one line each way, then two lines in one write, and see each arrive as sent (§2.1, §7.3)."""
    alice, bob = session.clients[-2:]
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
