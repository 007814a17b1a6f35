"""The example sessions of spec/protocol.md §11, read as data.

Each ```` ```mechat-session ```` block is a list of rows in the notation
that §11 defines: ``Cn: LINE`` (client n sends), ``Sn: LINE`` (the server
sends to client n), the events ``<eof>``, ``<reset>`` and ``<close>``, the
abbreviation ``<N octets: X>``, a server row's ``<time>``, and ``--``
comments.
"""

import re
from typing import Dict, List, NamedTuple, Optional

from mechat.protocol import stored_time
from tests.grammar import PROSE_PATH

EVENTS = ("<eof>", "<reset>", "<close>")
ROW = re.compile(r"(?P<side>[CS])(?P<client>\d*): (?P<text>.*)")
REPEAT = re.compile(r"<(?P<count>\d+) octets: (?P<char>.)>")
#: Stands for a time the server chose (§5.14), which no example can know.
TIME = "<time>"
#: What the grammar checks see in place of TIME: one stored-time.
SAMPLE_TIME = "2026-12-01T10:02:03Z"


class Row(NamedTuple):
    """One row of an example: who, which client, and a line or an event."""

    side: str  # "C": the client sends; "S": the server sends
    client: int
    line: Optional[bytes]  # None for an event; SAMPLE_TIME in place of each TIME
    event: str = ""
    pattern: "Optional[re.Pattern[bytes]]" = None  # for a row with a TIME: any stored-time there


class Session(NamedTuple):
    """One example block: its heading, its rows, and the server limits it runs with."""

    title: str
    rows: List[Row]
    limits: Dict[str, float]


def expand(text: str) -> bytes:
    """Return the octets a row's text stands for (§11 notation)."""
    repeat = REPEAT.fullmatch(text)
    if repeat:
        octets = repeat.group("char").encode("utf-8")
        return octets * (int(repeat.group("count")) // len(octets))
    return text.encode("utf-8")


def parse_row(text: str) -> Optional[Row]:
    """Read one row; return None for a comment."""
    if text.startswith("--"):
        return None
    match = ROW.fullmatch(text)
    assert match, f"not a row in §11 notation: {text!r}"
    client = int(match.group("client") or 1)
    body = match.group("text")
    if body in EVENTS:
        return Row(match.group("side"), client, None, body)
    if TIME in body:
        assert match.group("side") == "S", f"only the server's rows hold a {TIME}: {text!r}"
        parts = [re.escape(part.encode("utf-8")) for part in body.split(TIME)]
        pattern = re.compile(stored_time.encode("ascii").join(parts))
        return Row("S", client, expand(body.replace(TIME, SAMPLE_TIME)), pattern=pattern)
    return Row(match.group("side"), client, expand(body))


def sessions() -> List[Session]:
    """Return every ``mechat-session`` block of protocol.md, in order."""
    found: List[Session] = []
    title = ""
    rows: Optional[List[Row]] = None
    limits: Dict[str, float] = {}
    for text in PROSE_PATH.read_text(encoding="utf-8").splitlines():
        if text.startswith("### "):
            title = text[4:]
        elif text.startswith("```mechat-session"):
            rows = []
            limits = {key: float(value) for key, value in re.findall(r"(\w+)=([\d.]+)", text)}
        elif text == "```" and rows is not None:
            found.append(Session(title, rows, limits))
            rows = None
        elif rows is not None:
            row = parse_row(text)
            if row is not None:
                rows.append(row)
    return found
