"""Tests for the load tester: it measures a real server, and it catches a bad one.

The load tester is only worth its numbers if it notices every line that a
server loses, repeats, reorders or alters (spec §8: no line disappears
unseen).  So besides running it against the real mechat server, these tests
point it at a tiny relay with a planted bug and check that the bug is found.
No test asserts anything about speed.
"""

import argparse
import itertools
import socket
import threading
from typing import BinaryIO, Callable, Iterator, List

import pytest

from mechat import load, numbered
from mechat.__main__ import main
from mechat.flood import TokenBucket
from mechat.server import ChatHandler
from tests.conftest import StartServer
from tests.ports import refusing_port

#: Seconds any one test run of the load tester may take.
TIMEOUT = 20.0


def options(
    mode: str = "pingpong", pairs: int = 3, messages: int = 20, size: int = 64, timeout: float = TIMEOUT
) -> argparse.Namespace:
    """Return load-test options as the command line would give them."""
    return argparse.Namespace(mode=mode, pairs=pairs, messages=messages, size=size, window=8, timeout=timeout)


# -- Against the real server -----------------------------------------------------


@pytest.mark.parametrize("size", [load.MIN_SIZE, 64, 2000])
def test_pingpong_checks_every_round_trip(start_server: StartServer, size: int) -> None:
    """Each round trip is a line relayed to the partner and back, every one verified (§7.3)."""
    server = start_server(max_rate=0)
    report = load.run("127.0.0.1", server.port, options("pingpong", pairs=3, messages=20, size=size))
    assert report.ok, load.describe(report)
    assert report.count == 3 * 20
    assert len(report.latencies) == 3 * 20
    assert report.verdict.delivered == 2 * 3 * 20  # the ping at the partner, the echo back home
    assert report.quit_ok == 3


def test_flood_delivers_every_line_once_in_order(start_server: StartServer) -> None:
    """Both sides of each pair send at once; each line arrives once, in order, intact (§7.3, §8)."""
    server = start_server(max_rate=0)
    report = load.run("127.0.0.1", server.port, options("flood", pairs=4, messages=300))
    assert report.ok, load.describe(report)
    assert report.count == report.verdict.delivered == 2 * 4 * 300
    assert not report.latencies


class TenthLineOverTheRate(ChatHandler):
    """mechat's handler, whose flood control (§9.5) finds each client's tenth line over the rate.

    Its token bucket, of one line a second, reads a clock that moves one
    second per line, so every line finds a token except the tenth, for which
    the clock stands still.  Real time plays no part: which line is refused
    does not depend on how fast the machine is.
    """

    def setup(self) -> None:
        """Give the connection a bucket on a clock that counts lines instead of seconds."""
        super().setup()
        # The bucket reads the clock once when made (0), then once per line:
        # 1, 2, ..., 9, then 9 again for the tenth line (no token), then 10, 11, ...
        seconds = itertools.chain(range(10), itertools.count(9))
        self.flood = TokenBucket(1, seconds.__next__)


def test_flood_control_shows_up_as_unexpected_notices(start_server: StartServer) -> None:
    """A server that refuses lines over the rate (§9.5) fails the run instead of passing it.

    One line of each client is refused (its data line 8: the nickname was its
    first line), neither the last nor /quit, so the run ends on its own rather
    than at the timeout, with the notices and the gaps counted.
    """
    server = start_server(TenthLineOverTheRate)
    report = load.run("127.0.0.1", server.port, options("flood", pairs=1, messages=50))
    assert report.error == "", load.describe(report)  # finished, not timed out
    assert not report.ok
    assert report.verdict.unexpected == 2  # one #rate_limited to each client
    assert report.verdict.lost == 2  # the refused line never reaches the partner
    assert any("#rate_limited" in sample for sample in report.verdict.samples)


def test_command_line_prints_the_report(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """'mechat load' prints what it measured and exits 0 when every check passed."""
    server = start_server(max_rate=0)
    status = main(["load", "--port", str(server.port), "--pairs", "2", "--messages", "5", "--timeout", "20"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "all 4 clients matched" in printed
    assert "round trip: p50" in printed
    assert "result: OK" in printed


def test_command_line_refuses_a_line_over_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    """A line longer than the server may relay (§2.3) is refused before connecting."""
    assert main(["load", "--port", "1", "--size", "2001"]) == 2
    assert "--size" in capsys.readouterr().err


def test_nothing_listening_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    """No server on the port: exit 2 and one line on stderr, not a report of zeros."""
    with refusing_port() as port:
        assert main(["load", "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0]


def test_a_server_that_never_matches_is_reported_as_such() -> None:
    """A server that accepts but never answers: the report says matching did not finish."""
    with socket.socket() as silent:  # the kernel completes connections; nobody ever reads
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        report = load.run("127.0.0.1", silent.getsockname()[1], options(pairs=2, timeout=0.5))
    assert not report.ok and not report.matched
    printed = load.describe(report)
    assert "  not every client was matched, so no lines were sent" in printed
    assert not any("matched in" in line or "throughput" in line for line in printed)
    assert printed[-1] == "  result: FAILED"


# -- The line format -------------------------------------------------------------


def test_lines_are_numbered_lines_named_by_eight_digits() -> None:
    """The tester's lines are mechat.numbered lines whose sender is the client's number."""
    line = numbered.make_line(load.sender_name(42), 7, size=40)
    assert line == b"42525faf:00000042:00000007:xxxxxxxxxxxxx"
    assert load.HEADER_OCTETS == 27


def test_report_warns_when_the_tester_is_the_bottleneck() -> None:
    """When the tester used nearly a whole CPU, the report says its numbers are its own limit."""
    report = load.Report("flood", 1, 1, 64, matched=True, cpu_share=0.97)
    assert report.tester_saturated
    assert any("load tester itself was the bottleneck" in line for line in load.describe(report))
    relaxed = load.Report("flood", 1, 1, 64, matched=True, cpu_share=0.3)
    assert not any("bottleneck" in line for line in load.describe(relaxed))


# -- Against a relay with a planted bug -------------------------------------------

Mangle = Callable[[int, bytes], List[bytes]]


def faulty_relay(listener: socket.socket, mangle: Mangle) -> None:
    """Pair two clients like mechat, then relay lines from the first through ``mangle``."""
    first, _ = listener.accept()
    first_file = first.makefile("rb")
    first_file.readline()
    first.sendall(b"#wait\n")
    second, _ = listener.accept()
    second_file = second.makefile("rb")
    second_file.readline()
    second.sendall(b"#matched_to_u0\n")
    first.sendall(b"#matched_to_u1\n")
    back = threading.Thread(target=pipe, args=(second_file, first, lambda n, line: [line]), daemon=True)
    back.start()
    pipe(first_file, second, mangle)  # until u0's /quit
    second.sendall(b"#user_quit\n")
    for sock in (first, second):
        sock.shutdown(socket.SHUT_RDWR)  # the files made from them keep them open
        sock.close()
    back.join(TIMEOUT)


def pipe(source: BinaryIO, target: socket.socket, mangle: Mangle) -> None:
    """Copy lines until /quit or end of file, passing data lines through ``mangle``."""
    for number, line in enumerate(iter(source.readline, b"")):
        if line == b"/quit\n":
            return
        target.sendall(b"".join(mangle(number, line)))


@pytest.fixture
def relay_with() -> Iterator[Callable[[Mangle], int]]:
    """Start faulty relays on 127.0.0.1 port 0; close their sockets after the test."""
    listeners: List[socket.socket] = []

    def start(mangle: Mangle) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(TIMEOUT)
        listeners.append(listener)
        threading.Thread(target=faulty_relay, args=(listener, mangle), daemon=True).start()
        return int(listener.getsockname()[1])

    yield start
    for listener in listeners:
        listener.close()


def drop_tenth(number: int, line: bytes) -> List[bytes]:
    """Lose line 10."""
    return [] if number == 10 else [line]


def repeat_tenth(number: int, line: bytes) -> List[bytes]:
    """Send line 10 twice."""
    return [line, line] if number == 10 else [line]


def alter_tenth(number: int, line: bytes) -> List[bytes]:
    """Change one octet of line 10's payload."""
    return [line[:40] + b"y" + line[41:]] if number == 10 else [line]


def swap_tenth(number: int, line: bytes, held: List[bytes] = []) -> List[bytes]:  # noqa: B006
    """Send line 10 after line 11."""
    if number == 10:
        held.append(line)
        return []
    return [line, held.pop()] if number == 11 else [line]


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (drop_tenth, "lost"),
        (repeat_tenth, "duplicated"),
        (alter_tenth, "corrupt"),
        (swap_tenth, "duplicated"),
    ],
)
def test_a_server_that_mishandles_one_line_fails_the_run(
    relay_with: Callable[[Mangle], int], mangle: Mangle, field: str
) -> None:
    """One lost, repeated, altered or reordered line is found and named (§8)."""
    port = relay_with(mangle)
    report = load.run("127.0.0.1", port, options("flood", pairs=1, messages=30))
    assert not report.ok
    assert getattr(report.verdict, field) == 1, load.describe(report)
    assert report.verdict.samples


def test_an_honest_relay_passes(relay_with: Callable[[Mangle], int]) -> None:
    """The planted-bug relay without a bug passes, so the failures above are the bugs'."""
    port = relay_with(lambda number, line: [line])
    report = load.run("127.0.0.1", port, options("flood", pairs=1, messages=30))
    assert report.ok, load.describe(report)
