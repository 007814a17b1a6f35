"""Run the conformance kit for the grading chapter: against mechat, planted bugs, and a student's server.

The chapter shows the kit's real verdicts rather than a made-up report:
every check against a live mechat server, what the kit prints about each
deliberately broken server of ``tests/buggy_servers.py``, and the report
on a student's server before and after its framing is fixed
(``tests/student_server.py``).
"""

import csv
import io
from typing import List, Sequence

from wire import running_server

from mechat import conform
from mechat.conform import runner
from tests.buggy_servers import BUGS, running
from tests.student_server import serving

#: Seconds the kit waits for each line from a broken server; they often stay silent.
BUGGY_TIMEOUT = 1.0

#: The mistakes of the seed's original server: no LF on what it sends, and the LF kept in what it reads.
SEED_MISTAKES = ("no-lf", "keeps-lf")


def verdicts_on_mechat() -> str:
    """Run every check against a real mechat server; return CSV rows of verdict, id, section, title."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    with running_server(max_rate=0) as server:
        for result in runner.run_all(("127.0.0.1", server.port), conform.DEFAULT_TIMEOUT):
            writer.writerow([result.status.value, result.check.id, result.check.section, result.check.title])
    return out.getvalue()


def kit_report(port: int, timeout: float, left_out: Sequence[str] = ("PASS",)) -> List[str]:
    """Run the kit against ``port``; return its command and report, without the lines of ``left_out``."""
    out = io.StringIO()
    conform.run("127.0.0.1", port, timeout, out)
    command = "$ python -m mechat conform --port %d" % port
    if timeout != conform.DEFAULT_TIMEOUT:
        command += " --timeout %g" % timeout
    return [command, *(line for line in out.getvalue().splitlines() if not line.startswith(tuple(left_out)))]


def report_on_planted_bug(name: str) -> List[str]:
    """Run the kit against one broken server; return the command, its FAIL lines and its summary."""
    with running(BUGS[name]) as server:
        report = kit_report(server.port, BUGGY_TIMEOUT)
    return ["# planted bug: %s (PASS lines left out)" % name, *report]


def planted_bugs_text() -> str:
    """Return the reports on every planted bug as one console transcript."""
    return "\n\n".join("\n".join(report_on_planted_bug(name)) for name in BUGS) + "\n"


def before_and_after_text() -> str:
    """Return the report on a server with the seed's framing mistakes, then on the same server fixed."""
    with serving(*SEED_MISTAKES) as port:
        before = kit_report(port, conform.DEFAULT_TIMEOUT, left_out=("PASS", "SKIP"))
    with serving() as port:
        after = kit_report(port, conform.DEFAULT_TIMEOUT)
    return "\n".join(
        [
            "# before: no LF on the lines it sends, the LF kept in the lines it reads (SKIP lines left out)",
            *before,
            "",
            "# after: every line cut at its LF, and every line sent ends in LF (PASS lines left out)",
            *after,
            "",
        ]
    )
