"""Numbered lines: chat traffic that proves its own delivery.

The load tester, the conformance kit and the tests all send many lines and
then check what arrived, and all of them make those lines here, in this
one format::

    CCCCCCCC:SENDER:QQQQQQQQ:payload

``SENDER`` names who sent the line (anything but a colon), ``QQQQQQQQ`` is
its sequence number and ``CCCCCCCC`` a CRC-32, in hex, of everything after
the first colon.  A reader can then tell a line lost, sent twice or
overtaken (by its number), delivered to the wrong partner (by its sender),
or altered on the way (by its checksum) with :func:`read_line`, without
keeping a copy of what was sent; the load tester does.  (The kit and the
tests keep their few lines and compare them whole.)  The line is printable
text, so it is a valid message (spec §4) as long as its sender and payload
are.
"""

import zlib
from typing import Optional, Tuple

SEPARATOR = b":"

#: The octets of the checksum and its colon, before the sender.
CHECKSUM_OCTETS = 9

#: What pads a line out to the size its maker asks for.
FILL = b"x"


def make_line(sender: bytes, seq: int, payload: bytes = b"", size: int = 0) -> bytes:
    """Return a numbered line without its LF: ``payload``, then FILL up to ``size`` octets."""
    body = b"%s:%08d:%s" % (sender, seq, payload)
    body += FILL * (size - CHECKSUM_OCTETS - len(body))
    return b"%08x:%s" % (zlib.crc32(body), body)


def read_line(line: bytes) -> Optional[Tuple[bytes, int]]:
    """Return (sender, seq) of an intact numbered line, or None if it is damaged."""
    # A plain tuple and one split: the load tester reads every line through
    # here, and building a NamedTuple took half as long again (0.56 -> 0.83 us).
    fields = line.split(SEPARATOR, 3)
    if len(fields) != 4:
        return None
    checksum, sender, seq, _ = fields
    try:
        if int(checksum, 16) != zlib.crc32(line[len(checksum) + len(SEPARATOR) :]):
            return None
        return sender, int(seq)
    except ValueError:
        return None
