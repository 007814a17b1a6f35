"""The conformance kit: grade any server that claims to speak mechat.

``python -m mechat conform --port P`` connects to a running server as an
ordinary client, over TCP or, with ``--tls``, over TLS, and walks through
the clauses of ``spec/protocol.md``, one check per clause.  The kit is a
black box on purpose: the server may be mechat, a student's Python or a C
program, so the kit knows nothing but the wire.  It borrows the notice
names, the limits and the line cutter from :mod:`mechat.protocol`, and
nothing of mechat's server.

A run goes like this, one module per step:

1. :mod:`~mechat.conform.preflight` tries the basics once (connect, hang
   up, a nickname and ``#wait``, a pair, lines each way) and says in one paragraph
   what fails first;
2. :mod:`~mechat.conform.runner` runs every check of the chosen features
   (:mod:`~mechat.conform.registry`; protocol 1's are in
   :mod:`~mechat.conform.core`, protocol 2's named users in
   :mod:`~mechat.conform.directory`, its rooms in
   :mod:`~mechat.conform.rooms` and its accounts in
   :mod:`~mechat.conform.accounts`), each in a fresh session of
   :mod:`~mechat.conform.clients`, and skips those that need a basic step
   that failed;
3. a wrong reply is explained by :mod:`~mechat.conform.diagnose`, which
   names the likely mistake (a missing LF, one ``recv()`` taken as one
   message, an echo...);
4. :mod:`~mechat.conform.report` writes the verdicts as text, JSON, JUnit
   XML or Gradescope's ``results.json``.
"""

import ssl
import sys
import time
from typing import Optional, Sequence, TextIO

from mechat.conform import accounts, core, directory, preflight, rooms
from mechat.conform.registry import Check, deepest_need, select
from mechat.conform.report import FORMATS, Grading, Weights, listing, load_weights, render, summary
from mechat.conform.runner import DEFAULT_TIMEOUT, run_all, unreachable, wants_tls

__all__ = [
    "DEFAULT_TIMEOUT",
    "FORMATS",
    "accounts",
    "core",
    "directory",
    "listing",
    "load_weights",
    "rooms",
    "run",
    "select",
]


def run(
    host: str,
    port: int,
    timeout: float = DEFAULT_TIMEOUT,
    out: Optional[TextIO] = None,
    checks: Optional[Sequence[Check]] = None,
    format: str = "text",
    output: Optional[TextIO] = None,
    weights: Optional[Weights] = None,
    tls: Optional[ssl.SSLContext] = None,
) -> int:
    """Grade the server at host:port and report; return 0 if all passed, 1 if not, 2 if unreachable.

    The text report streams to ``out`` as the checks finish.  With
    ``output``, an open file, the report in ``format`` goes there instead
    and ``out`` gets the one-line summary; without it, a report in another
    format goes to ``out`` whole, at the end.  A failed preflight fails the
    run, even when every check it let run passed.  With ``tls``, a
    context, every connection speaks TLS.  A server that cannot be graded
    as asked (unreachable, TLS that cannot be set up, a TLS server graded
    without ``tls``) gets one line on stderr and no report.
    """
    out = out or sys.stdout
    address = (host, port)
    problem = unreachable(address, timeout, tls)
    if problem:
        over = " over TLS" if tls is not None else ""
        print(f"mechat conform: cannot connect to {host}:{port}{over}: {problem}", file=sys.stderr)
        return 2
    chosen = list(select([core.FEATURE]) if checks is None else checks)
    if not chosen:
        raise ValueError("no checks to run")
    started = time.monotonic()
    flight = preflight.run(address, timeout, deepest_need(chosen), tls)
    if tls is None and wants_tls(flight):
        print(
            f"mechat conform: {host}:{port} serves TLS only: it answered a nickname with #tls_required"
            " (§2.5). Grade it with --tls, and with --cafile FILE if its certificate is self-signed.",
            file=sys.stderr,
        )
        return 2
    stream = format == "text" and output is None
    if stream and flight.failure:
        print(flight.paragraph(chosen), file=out, flush=True)
    results = []
    for result in run_all(address, timeout, chosen, flight, tls):
        results.append(result)
        if stream:
            print(result, file=out, flush=True)
    grading = Grading(address, flight, results, time.monotonic() - started, weights or {})
    if output is not None:
        output.write(render(format, grading))
    if stream or output is not None:
        print(summary(grading), file=out)
    else:
        out.write(render(format, grading))
    return 0 if flight.failure is None and all(result.passed for result in results) else 1
