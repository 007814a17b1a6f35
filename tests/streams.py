"""Numbered lines for flood tests: send many, then check what arrived.

A flood line is a numbered line (mechat.numbered: its sender, its sequence
number and a checksum) whose payload is text with multi-byte UTF-8 and a
tab, so that a check of what arrived catches a line lost, doubled,
reordered, cut or altered on the way (spec §4, §8).
"""

import contextlib
import time
from typing import List

from mechat.numbered import make_line
from tests.peers import Peer

#: Text every flood line carries: multi-byte UTF-8 and an HTAB, as §4 allows.
PAYLOAD = "flood\tété ☃ 🐍".encode()


def numbered(sender: str, count: int) -> List[bytes]:
    """Return ``count`` distinct lines from ``sender``, numbered from 0, without LF."""
    return [numbered_line(sender, number) for number in range(count)]


def numbered_line(sender: str, number: int) -> bytes:
    """Return the line numbered ``number`` from ``sender``, without LF."""
    return make_line(sender.encode(), number, PAYLOAD)


def send_all(peer: Peer, lines: List[bytes], batch: int = 100) -> None:
    """Send ``lines`` as fast as the socket takes them, ``batch`` lines a write."""
    for start in range(0, len(lines), batch):
        peer.send_raw(b"".join(line + b"\n" for line in lines[start : start + batch]))


def send_until_closed(peer: Peer, lines: List[bytes]) -> None:
    """Send ``lines`` like send_all, stopping quietly once the server closes the connection."""
    with contextlib.suppress(OSError):  # reset or closed: the test checks what the peer was told
        send_all(peer, lines)


def read_until(peer: Peer, last: bytes) -> List[bytes]:
    """Return every line the peer receives before ``last`` (which is read too)."""
    received = []
    line = peer.read_line()
    while line != last:
        received.append(line)
        line = peer.read_line()
    return received


def read_to_close(peer: Peer, seconds: float) -> List[bytes]:
    """Return every line the peer receives until the server closes it, all within ``seconds``."""
    deadline = time.monotonic() + seconds
    received = []
    line = peer.next_line(deadline - time.monotonic())
    while line is not None:
        received.append(line)
        line = peer.next_line(deadline - time.monotonic())
    return received


def assert_prefix(received: List[bytes], sent: List[bytes]) -> None:
    """Fail unless ``received`` is the first lines of ``sent``, each intact and in order."""
    assert received == sent[: len(received)], "lost, doubled, reordered or altered lines"
