"""Run the checks against a server: preflight first, then each check in a fresh session.

Each check gets its own connections and ends by hanging them up, so one
bug fails the checks of its clause and not everything after it.  A server
error inside a check (a refused connection, a reset) is that check's
FAIL, never a crash of the kit.  What is not the server's fault is never
its FAIL: a check that cannot reach a verdict on this server
(:class:`CannotCheck`), or that finds the kit out of file descriptors, is
skipped, and the report says why.  The verdicts stream out as they come,
so a student watching a slow run sees where it is.

Over TLS (``--tls``) every session shakes hands on every connection with
one :class:`ssl.SSLContext`.  Two mistakes would otherwise cost a whole
run of identical FAILs, so they end the run at once, each in one line:
TLS that cannot be set up (the first connection tries it, in
:func:`unreachable`), and a TLS server graded without ``--tls``, which
answers the preflight's first nickname with ``#tls_required`` (§2.5,
:func:`wants_tls`).
"""

import contextlib
import enum
import errno
import socket
import ssl
import time
from typing import Iterator, List, NamedTuple, Optional, Tuple

from mechat.conform import preflight
from mechat.conform.clients import MATCHED_TO, Address, Exchange, Failure, Session, show
from mechat.conform.diagnose import WAIT
from mechat.conform.preflight import Preflight
from mechat.conform.registry import CHECKS, Check, Stage, deepest_need, section_key
from mechat.protocol import Notice
from mechat.tls import HandshakeTimeout, NotTLS, TLSError

#: Seconds any one expected line may take to arrive (``--timeout``).
DEFAULT_TIMEOUT = 5.0

#: Leftover waiters the kit pairs off before one check, at most.
MAX_LEFTOVERS = 5


class Status(str, enum.Enum):
    """A check's verdict."""

    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"  # no verdict: the preflight failed at a step it needs, or the kit could not go on


class Result(NamedTuple):
    """The verdict on one check, with the exchange that decided it, or why it was skipped."""

    check: Check
    status: Status
    exchange: Optional[Exchange] = None
    skipped_because: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Tell whether the check passed."""
        return self.status is Status.PASS

    def __str__(self) -> str:
        detail = self.exchange if self.exchange is not None else self.skipped_because
        return f"{self.status.value} {self.check.section} {self.check.title}: {detail}"


class CannotCheck(Exception):
    """A check cannot reach a verdict on this server, through no fault of the server's; the text says why."""


#: What to do when the kit itself runs out of file descriptors, by errno: the kit's limit, not the server's.
KIT_OUT_OF_FILES = {
    errno.EMFILE: "raise the kit's limit, with 'ulimit -n 1024' in the shell that runs mechat conform",
    errno.ENFILE: "raise the system's limit (fs.file-max on Linux, kern.maxfiles on macOS)",
}


def run_check(
    check: Check,
    address: Address,
    timeout: float,
    nicknames_work: bool = False,
    tls: Optional[ssl.SSLContext] = None,
) -> Result:
    """Run one check in a fresh session, over TLS if given a context; a server error is a FAIL, not a crash.

    ``nicknames_work`` says that the preflight saw a plain nickname accepted,
    which rules out some diagnoses.
    """
    started = time.monotonic()
    status, exchange, reason = verdict(check, Session(address, timeout, nicknames_work, tls))
    return Result(check, status, exchange, reason, time.monotonic() - started)


def verdict(check: Check, session: Session) -> Tuple[Status, Optional[Exchange], str]:
    """Run ``check`` in ``session``; return its status, the exchange that decided it, and why it has none."""
    try:
        with session:
            return Status.PASS, check.run(session), ""
    except Failure as failure:
        return Status.FAIL, failure.exchange, ""
    except CannotCheck as reason:
        return Status.SKIP, None, str(reason)
    except OSError as error:
        advice = KIT_OUT_OF_FILES.get(error.errno or 0, "")
        if advice:
            return Status.SKIP, None, out_of_files(error, advice)
        return Status.FAIL, Exchange(session.last_sent, "a working connection", f"<{error}>"), ""


def out_of_files(error: OSError, advice: str) -> str:
    """Say that the kit, not the server, ran out of file descriptors, and how to give it more."""
    return (
        f"the kit ran out of file descriptors ({error.strerror}): the check needs more connections than the"
        f" computer running the kit allows, which is no fault of the server; {advice}, and run it again"
    )


def pair_off_leftovers(address: Address, timeout: float, tls: Optional[ssl.SSLContext] = None) -> None:
    """Empty the waiting queue that an earlier check may have left behind (§7.1).

    A sweeper joins.  If it is matched, it met a leftover, and closing it
    ends that chat; then try again.  Once a sweeper waits, the queue was
    empty, and a second sweeper pairs with it so that nobody is left.
    Whatever else happens is the next check's to report.
    """
    for _ in range(MAX_LEFTOVERS):
        with contextlib.suppress(OSError, Failure), Session(address, timeout, tls=tls) as session:
            sweeper = session.connect("sweeper")
            sweeper.send(b"conform-sweeper")
            reply = sweeper.read_line()
            if reply == WAIT:
                second = session.connect("sweeper2")
                second.send(b"conform-sweeper2")
                second.read_line()  # its #matched_to_, before either hangs up
            if not (isinstance(reply, bytes) and reply.startswith(MATCHED_TO)):
                return


def skipped(check: Check, flight: Preflight) -> Result:
    """Return the SKIP verdict of a check that needs a step the preflight could not do."""
    reason = f"the server could not {flight.failed_step}, which this check needs (see the preflight)"
    return Result(check, Status.SKIP, skipped_because=reason)


def run_all(
    address: Address,
    timeout: float,
    checks: Optional[List[Check]] = None,
    flight: Optional[Preflight] = None,
    tls: Optional[ssl.SSLContext] = None,
) -> Iterator[Result]:
    """Run the checks (all by default) in spec order after the preflight, over TLS if given a context."""
    chosen = sorted(CHECKS if checks is None else checks, key=lambda check: section_key(check.section))
    if flight is None:
        flight = preflight.run(address, timeout, deepest_need(chosen), tls)
    for check in chosen:
        if flight.blocks(check):
            yield skipped(check, flight)
            continue
        if flight.reached >= Stage.PAIR:  # sweeping needs a server that says #wait and pairs
            pair_off_leftovers(address, timeout, tls)
        yield run_check(check, address, timeout, flight.reached >= Stage.WAIT, tls)


def unreachable(address: Address, timeout: float, tls: Optional[ssl.SSLContext] = None) -> str:
    """Return why no connection, over TLS if given a context, can be made to ``address``, or "" if one can."""
    session = Session(address, timeout, tls=tls)
    try:
        session.secure(socket.create_connection(address, timeout=timeout)).close()
    except TLSError as error:  # its message is one line
        return f"{str(error).rstrip('.')}. {tls_advice(error)}"  # OpenSSL's reasons may end in a full stop
    except OSError as error:
        return error.strerror or str(error)
    return ""


def tls_advice(error: TLSError) -> str:
    """Say what to do about TLS that cannot be set up, in one sentence that names the kit's options."""
    if isinstance(error, NotTLS):
        return "That server does not serve TLS: grade it without --tls."
    if isinstance(error, HandshakeTimeout):
        return "Does that server serve TLS, on that port?"
    return (
        "If the certificate was refused, give --cafile the certificate that signed it (a self-signed one"
        " signs itself) and --host a name or address that it was issued for."
    )


#: The preflight's record of a plaintext nickname answered by a TLS server (§2.5).
TLS_REQUIRED_SHOWN = show(Notice.TLS_REQUIRED.value.encode("ascii"))


def wants_tls(flight: Preflight) -> bool:
    """Tell whether the preflight was answered #tls_required: a TLS server, spoken to in plain TCP (§2.5)."""
    return flight.failure is not None and flight.failure.got == TLS_REQUIRED_SHOWN
