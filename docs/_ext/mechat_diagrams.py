"""Sphinx extension: show the protocol as the real server speaks it.

When the build starts, this runs every scenario in ``scenarios.py`` against
a live server and writes one PlantUML sequence diagram per scenario; draws
the state diagram from :data:`mechat.protocol.TRANSITIONS`; turns the state
table of ``spec/protocol.md`` into CSV; records what two real clients show
in a session (``session.py``); and runs the conformance kit against mechat
and against servers with planted bugs (``grading.py``).  The pages include the results from ``_generated/``.
Nothing is drawn by hand, so a change in the server's behaviour either
changes the pictures or, when a scenario's expectations no longer hold,
fails the build.
"""

import csv
import io
import logging as stdlib_logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

from grading import before_and_after_text, planted_bugs_text, verdicts_on_mechat
from scenarios import SCENARIOS, record
from session import record_session
from sphinx.application import Sphinx
from sphinx.util import logging
from wire import SERVER, Step, Transcript

from mechat.protocol import TRANSITIONS, Phase

log = logging.getLogger(__name__)

#: Characters that PlantUML's creole markup would read as formatting.
MARKUP_RE = re.compile(r'\*\*|//|__|--|~~|""|\[\[|[<>\\]')


def wire_label(text: str) -> str:
    """Show a protocol line in monospace; ``""`` also keeps a leading # from being a list marker."""
    if MARKUP_RE.search(text):
        raise ValueError("pick an example line without PlantUML markup: %r" % text)
    return '""%s""' % text


def arrow(step: Step) -> str:
    """Return the PlantUML line for one step: a solid arrow for a line, dotted for an event."""
    if step.sender == step.receiver:
        return "note over %s : %s" % (step.sender, step.text)
    if step.is_line:
        return "%s -> %s : %s" % (step.sender, step.receiver, wire_label(step.text))
    return "%s -[#888888]->> %s : //%s//" % (step.sender, step.receiver, step.text)


def sequence_diagram(transcript: Transcript) -> str:
    """Return a PlantUML sequence diagram: the first client, the server, then the others."""
    first, *others = [party.name for party in transcript.parties]
    lines = ["@startuml", "hide footbox", "skinparam sequenceMessageAlign left"]
    lines += ['participant "%s" as %s' % (name, name) for name in [first, SERVER, *others]]
    lines += [arrow(step) for step in transcript.steps]
    return "\n".join([*lines, "@enduml", ""])


def state_diagram() -> str:
    """Return a PlantUML state diagram: staying transitions inside each state, the others as arrows.

    A transition that keeps the phase is written in the state's box as
    ``event → reply`` (an arrow for each would bury the diagram in loops).
    The arrows that change the phase name their events only, to keep the
    picture narrow enough to read; the state table beside it gives their replies.
    """
    lines = ["@startuml", "!pragma layout smetana", "hide empty description", "[*] --> NICKNAME : connect"]
    arrows: Dict[Tuple[Phase, Phase], List[str]] = defaultdict(list)
    for (phase, event), transition in TRANSITIONS.items():
        if transition.next_phase is phase:
            reply = transition.reply.replace("; ", ";\\n    ")  # one notice a line
            lines.append("%s : %s → %s" % (phase.name, event.value, reply))
        else:
            arrows[phase, transition.next_phase].append(event.value)
    for (source, target), labels in arrows.items():
        lines.append("%s --> %s : %s" % (source.name, target.name, "\\n".join(labels)))
    return "\n".join([*lines, "CLOSED --> [*]", "@enduml", ""])


def spec_state_table(markdown: str) -> str:
    """Return the §7.5 table of ``spec/protocol.md`` as CSV, header first, cells verbatim.

    The table is the first one after the ``<!-- state-table`` marker that
    the spec's own tests read, so the docs show the same table they check.
    """
    _, marker, after = markdown.partition("<!-- state-table")
    if not marker:
        raise ValueError("spec/protocol.md has no <!-- state-table --> marker")
    rows = []
    for line in after.splitlines()[1:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not set("".join(cells)) <= set("-: "):  # skip the |---| rule under the header
            rows.append(cells)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it, so Sphinx rebuilds only what changed."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(app: Sphinx) -> None:
    """Run the scenarios and write every generated diagram and table."""
    out = Path(app.srcdir) / "_generated"
    out.mkdir(exist_ok=True)
    stdlib_logging.getLogger("mechat").setLevel(stdlib_logging.WARNING)  # the server's INFO log is noise here
    for name, script in SCENARIOS.items():
        log.info("mechat: recording scenario %s", name)
        write_if_changed(out / ("%s.puml" % name), sequence_diagram(record(script)))
    write_if_changed(out / "states.puml", state_diagram())
    spec = Path(app.srcdir).parent / "spec" / "protocol.md"
    write_if_changed(out / "spec-state-table.csv", spec_state_table(spec.read_text(encoding="utf-8")))
    for name, lines in record_session().items():
        write_if_changed(out / ("session-%s.txt" % name), "\n".join([*lines, ""]))
    log.info("mechat: running the conformance kit")
    write_if_changed(out / "conform-mechat.csv", verdicts_on_mechat())
    write_if_changed(out / "conform-planted-bugs.txt", planted_bugs_text())
    write_if_changed(out / "conform-before-after.txt", before_and_after_text())


def setup(app: Sphinx) -> Dict[str, Any]:
    """Register the generator to run when the build starts."""
    app.connect("builder-inited", generate)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
