"""Run the conformance kit for the grading chapter: against mechat, and against planted bugs.

The chapter shows the kit's real verdicts rather than a made-up report:
every check against a live mechat server, and what the kit prints about
each deliberately broken server of ``tests/buggy_servers.py``.
"""

import csv
import io
from typing import List

from wire import running_server

from mechat import conform
from tests.buggy_servers import BUGS, running

#: Seconds the kit waits for each line from a broken server; they often stay silent.
BUGGY_TIMEOUT = 1.0


def verdicts_on_mechat() -> str:
    """Run every check against a real mechat server; return CSV rows of verdict, section, title."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    with running_server(max_rate=0) as server:
        for result in conform.run_all(("127.0.0.1", server.port), conform.DEFAULT_TIMEOUT):
            verdict = "PASS" if result.passed else "FAIL"
            writer.writerow([verdict, result.check.section, result.check.title])
    return out.getvalue()


def report_on_planted_bug(name: str) -> List[str]:
    """Run the kit against one broken server; return the command, its FAIL lines and its summary."""
    out = io.StringIO()
    with running(BUGS[name]) as server:
        conform.run("127.0.0.1", server.port, BUGGY_TIMEOUT, out)
        command = "$ python -m mechat conform --port %d --timeout %g" % (server.port, BUGGY_TIMEOUT)
    failures = [line for line in out.getvalue().splitlines() if not line.startswith("PASS")]
    return ["# planted bug: %s (PASS lines left out)" % name, command, *failures]


def planted_bugs_text() -> str:
    """Return the reports on every planted bug as one console transcript."""
    return "\n\n".join("\n".join(report_on_planted_bug(name)) for name in BUGS) + "\n"
