"""How fast one address can guess a password, and what the guessing costs everyone else (§9.11).

Starts ``mechat serve`` as a child process, registers one account, then
for ``--seconds`` seconds runs two things at once:

* a guesser: one address (127.0.0.1) that sends wrong ``/login`` lines as
  fast as the server answers them, opening a new connection each time the
  server closes one (after its fifth failure);
* a pair of chatters that ping-pong a line and time each round trip.

It prints the guesses answered, their rate after the first five (the
per-address burst), how many connections the guesser needed, and the pair's
round-trip p50 and p99, against the same pair measured first with nobody
guessing.  Every loop is bounded in count and in time; the server listens on
127.0.0.1 only and is stopped by its PID.

    python bench/guessing.py [--seconds 20]
"""

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from typing import List

from server_process import ServerProcess

#: Seconds any one read may wait before the run is called failed.
READ_TIMEOUT = 30.0
#: Round trips the pair makes at most in one measurement.
MAX_ROUND_TRIPS = 100_000
#: Guesses the guesser makes at most.
MAX_GUESSES = 100_000


def connect(port: int) -> socket.socket:
    """Connect to the server with a read deadline."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_line(sock: socket.socket, buffer: bytearray) -> bytes:
    """Return the next line, LF cut off; b"" once the server has closed."""
    while b"\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            return b""
        buffer += data
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


def expect(sock: socket.socket, buffer: bytearray, want: bytes) -> None:
    """Read one line and fail unless it is ``want``."""
    got = read_line(sock, buffer)
    if got != want:
        raise SystemExit("expected %r, got %r" % (want, got))


def round_trips(port: int, seconds: float) -> List[float]:
    """Pair two chatters and time their round trips for ``seconds``; return them in ms."""
    alice, bob = connect(port), connect(port)
    a_buf, b_buf = bytearray(), bytearray()
    alice.sendall(b"pinger\n")
    expect(alice, a_buf, b"#wait")
    bob.sendall(b"ponger\n")
    expect(bob, b_buf, b"#matched_to_pinger")
    expect(alice, a_buf, b"#matched_to_ponger")
    times: List[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(times) < MAX_ROUND_TRIPS:
        start = time.perf_counter()
        alice.sendall(b"ping\n")
        expect(bob, b_buf, b"ping")
        bob.sendall(b"pong\n")
        expect(alice, a_buf, b"pong")
        times.append((time.perf_counter() - start) * 1000)
    alice.close()
    bob.close()
    return times


class Guesser(threading.Thread):
    """One address guessing a password as fast as the server answers."""

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.answered: List[float] = []  # when each #login_failed came, monotonic
        self.connections = 0

    def run(self) -> None:
        end = time.monotonic() + self.seconds
        while time.monotonic() < end and len(self.answered) < MAX_GUESSES:
            sock, buffer = connect(self.port), bytearray()
            self.connections += 1
            try:
                while time.monotonic() < end:
                    sock.sendall(b"/login victim wrong-guess-%d\n" % len(self.answered))
                    line = read_line(sock, buffer)
                    if line != b"#login_failed":
                        break  # closed after its fifth failure, or timed out (#nickname_timeout)
                    self.answered.append(time.monotonic())
            except OSError:
                pass
            finally:
                sock.close()


def percentile(values: List[float], fraction: float) -> float:
    """Return the value below which ``fraction`` of ``values`` lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as work:
        server = ServerProcess(["--db", ":memory:", "--max-rate", "0"], os.path.join(work, "server.log"))
        port = server.start(root)
        try:
            owner, buffer = connect(port), bytearray()
            owner.sendall(b"/register victim right-password\n")
            expect(owner, buffer, b"#registered_victim")
            owner.sendall(b"/quit\n")
            owner.close()
            alone = round_trips(port, args.seconds)
            guesser = Guesser(port, args.seconds)
            started = time.monotonic()
            guesser.start()
            beside = round_trips(port, args.seconds)
            guesser.join(args.seconds + READ_TIMEOUT)
        finally:
            server.stop()
    guesses = guesser.answered
    after_burst = guesses[5:]
    rate = (len(after_burst) - 1) / (after_burst[-1] - after_burst[0]) if len(after_burst) > 1 else 0.0
    made = (args.seconds, len(guesses), guesser.connections)
    print("guesses answered in %.0f s: %d, on %d connections" % made)
    print("first 5 answered within %.2f s; after them %.2f guesses/s" % (guesses[4] - started, rate))
    for name, times in (("nobody guessing", alone), ("one address guessing", beside)):
        print(
            "pair round trip, %s: %d trips, p50 %.3f ms, p99 %.3f ms"
            % (name, len(times), statistics.median(times), percentile(times, 0.99))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
