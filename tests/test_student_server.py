"""The student server speaks protocol 1, and each of its mistakes really is on the wire.

Every test reads to the end of the connection and compares everything the
server sent, byte for byte: a missing LF, an extra CR or an echo cannot hide
in a line that was never read.  A client hangs up (end of file, §8) when it
is done, so the server's close marks the end; no test waits for silence.
"""

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import ClassVar, Iterator, List, Tuple

import pytest

from tests.student_server import Mistake, main, serving

#: Seconds any expected bytes, or the server's close, may take to arrive.
TIMEOUT = 5.0

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Client:
    """A raw client: sends bytes exactly as given and keeps every byte the server sends."""

    #: Every Client of the running test; the close_clients fixture closes them.
    opened: ClassVar[List["Client"]] = []

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.received = b""
        Client.opened.append(self)

    def send(self, data: bytes) -> None:
        """Send ``data`` in one write, adding nothing."""
        self.sock.sendall(data)

    def wait_for(self, expected: bytes) -> None:
        """Read until ``expected`` is among the bytes received; fail on timeout or close."""
        deadline = time.monotonic() + TIMEOUT
        while expected not in self.received:
            assert self.receive(deadline), "closed before %r arrived; got %r" % (expected, self.received)

    def transcript(self) -> bytes:
        """Hang up, read until the server closes, and return every byte it sent."""
        with contextlib.suppress(OSError):  # the server may have closed, even reset, already
            self.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + TIMEOUT
        while self.receive(deadline):
            pass
        self.sock.close()
        return self.received

    def receive(self, deadline: float) -> bool:
        """Add what one read brings; return False at the server's close."""
        remaining = deadline - time.monotonic()
        assert remaining > 0, "nothing more within %.0f s; got %r" % (TIMEOUT, self.received)
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            raise AssertionError("nothing more within %.0f s; got %r" % (TIMEOUT, self.received)) from None
        except ConnectionResetError:
            return False
        self.received += data
        return bool(data)


def pair(port: int) -> Tuple[Client, Client]:
    """Connect alice, see her wait, then bob, and see both matched (§7.1)."""
    alice = Client(port)
    alice.send(b"alice\n")
    alice.wait_for(b"#wait")
    bob = Client(port)
    bob.send(b"bob\n")
    bob.wait_for(b"#matched_to_alice")
    return alice, bob


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    """Close every Client a test leaves open."""
    yield
    for client in Client.opened:
        client.sock.close()
    Client.opened.clear()


@pytest.fixture
def port() -> Iterator[int]:
    """The port of a student server with no mistakes."""
    with serving() as port:
        yield port


def test_pairs_relays_both_ways_and_quit_tells_the_partner(port: int) -> None:
    """§7.1, §7.3, §8: pairing, a relay each way, lines cut at LF whatever the writes, /quit."""
    alice, bob = pair(port)
    alice.wait_for(b"#matched_to_bob\n")
    alice.send(b"hello ")
    alice.send(b"from alice\nand again\r\n")  # one line over two writes, then two in one
    bob.wait_for(b"and again\n")
    bob.send(b"hello from bob\n")
    alice.wait_for(b"hello from bob\n")
    bob.send(b"/quit\n")
    alice.wait_for(b"#user_quit")  # hanging up before it would be a race with the quit
    assert alice.transcript() == b"#wait\n#matched_to_bob\nhello from bob\n#user_quit\n"
    assert bob.transcript() == b"#matched_to_alice\nhello from alice\nand again\n"


def test_refusals_leave_the_connection_open(port: int) -> None:
    """§2.2, §3, §4, §5: each refusal answers one line, and the client carries on."""
    alice = Client(port)
    alice.send(b"two words\n/nickname alicia\nalice\n#hash\nhi\r\r\n/quit now\n/nickname\n")
    assert alice.transcript() == (
        b"#invalid_nickname\n#invalid_command\n#wait\n#invalid_message\n#invalid_message\n"
        b"#invalid_command\n#invalid_nickname\n"
    )


CHAT = [
    pytest.param((), b"#wait\n#matched_to_bob\n#user_quit\n", b"#matched_to_alice\nhi\n", id="none"),
    pytest.param(("no-lf",), b"#wait#matched_to_bob#user_quit", b"#matched_to_alicehi", id="no-lf"),
    pytest.param(
        ("crlf-out",),
        b"#wait\r\n#matched_to_bob\r\n#user_quit\r\n",
        b"#matched_to_alice\r\nhi\r\n",
        id="crlf-out",
    ),
    pytest.param(
        ("echo",), b"#wait\n#matched_to_bob\nhi\n#user_quit\n", b"#matched_to_alice\nhi\n", id="echo"
    ),
    pytest.param(
        ("glued-notices",), b"#wait#matched_to_bob#user_quit", b"#matched_to_alicehi\n", id="glued-notices"
    ),
]


@pytest.mark.parametrize(("mistakes", "to_alice", "to_bob"), CHAT)
def test_line_ends_and_echo_in_a_chat(mistakes: Tuple[str, ...], to_alice: bytes, to_bob: bytes) -> None:
    """§2.1, §7.3: alice says hi and bob quits; every byte each receives is as the mistake makes it."""
    with serving(*mistakes) as port:
        alice, bob = pair(port)
        alice.send(b"hi\n")
        bob.wait_for(b"hi")
        bob.send(b"/quit\n")
        alice.wait_for(b"#user_quit")
        assert (alice.transcript(), bob.transcript()) == (to_alice, to_bob)


@pytest.mark.parametrize(
    ("mistakes", "sent", "received"),
    [
        ((), b"alice\n", b"#wait\n"),
        (("keeps-lf",), b"alice\n", b"#invalid_nickname\n"),
        (("keeps-lf",), b"alice", b"#wait\n"),  # sent with no LF, the nickname is good
        (("no-lf", "keeps-lf"), b"alice\n", b"#invalid_nickname"),  # the seed's C server
        ((), b"carol\r\n", b"#wait\n"),
        (("keeps-cr",), b"carol\r\n", b"#invalid_nickname\n"),
        (("recv-is-line",), b"carol\r\n", b"#wait\n"),
    ],
)
def test_line_end_of_a_nickname(mistakes: Tuple[str, ...], sent: bytes, received: bytes) -> None:
    """§2.1, §2.2, §3: a nickname's LF, and a CR before it, are not part of it."""
    with serving(*mistakes) as port:
        client = Client(port)
        client.send(sent)
        assert client.transcript() == received


@pytest.mark.parametrize(("mistakes", "relayed"), [((), b"hi\n"), (("keeps-cr",), b"hi\r\n")])
def test_cr_of_a_message(mistakes: Tuple[str, ...], relayed: bytes) -> None:
    """§2.2: a message sent with CR LF is relayed without the CR."""
    with serving(*mistakes) as port:
        alice, bob = pair(port)
        alice.send(b"hi\r\n")
        bob.wait_for(b"hi")
        alice.send(b"/quit\n")
        bob.wait_for(b"#user_quit")
        assert bob.transcript() == b"#matched_to_alice\n" + relayed + b"#user_quit\n"


@pytest.mark.parametrize(
    ("mistakes", "to_alice", "to_bob"),
    [
        ((), b"", b"first\nsecond\n"),
        (("recv-is-line",), b"#invalid_message\n", b""),  # 'first\nsecond' holds a control character
        (("keeps-cr", "recv-is-line"), b"#invalid_message\n", b""),
    ],
)
def test_two_lines_in_one_write(mistakes: Tuple[str, ...], to_alice: bytes, to_bob: bytes) -> None:
    """§2.1: one write may hold two lines; alice then hangs up."""
    with serving(*mistakes) as port:
        alice, bob = pair(port)
        alice.send(b"first\nsecond\n")
        assert alice.transcript() == b"#wait\n#matched_to_bob\n" + to_alice
        assert bob.transcript() == b"#matched_to_alice\n" + to_bob + b"#user_quit\n"


def test_recv_is_line_takes_half_a_line_as_a_line() -> None:
    """§2.1, mistake recv-is-line: each piece of a line sent in two writes is relayed as a line."""
    with serving(Mistake.RECV_IS_LINE) as port:
        alice, bob = pair(port)
        alice.send(b"one line ")
        bob.wait_for(b"one line \n")
        alice.send(b"in two\n")
        bob.wait_for(b"in two\n")
        alice.send(b"/quit\n")
        bob.wait_for(b"#user_quit")
        assert bob.transcript() == b"#matched_to_alice\none line \nin two\n#user_quit\n"


@pytest.mark.parametrize(
    ("mistakes", "to_alice"),
    [((), b"#wait\n#wait\n#invalid_message\n"), (("no-wait",), b"#invalid_message\n")],
)
def test_wait_on_joining_and_for_a_line_while_waiting(mistakes: Tuple[str, ...], to_alice: bytes) -> None:
    """§7.1, §7.2: #wait for a nickname with nobody to meet, and for a message while waiting."""
    with serving(*mistakes) as port:
        alice = Client(port)
        alice.send(b"alice\nanyone there?\n#bad\n")
        alice.wait_for(b"#invalid_message\n")  # the server has read all three lines
        bob = Client(port)
        bob.send(b"bob\n")
        bob.wait_for(b"#matched_to_alice\n")
        assert bob.transcript() == b"#matched_to_alice\n"
        assert alice.transcript() == to_alice + b"#matched_to_bob\n#user_quit\n"


@pytest.mark.parametrize(
    ("mistakes", "received"),
    [((), b"#invalid_nickname\n#wait\n"), (("closes-on-refusal",), b"#invalid_nickname\n")],
)
def test_a_refused_nickname_may_be_retried(mistakes: Tuple[str, ...], received: bytes) -> None:
    """§3, §7.1: after #invalid_nickname the client may try again on the same connection."""
    with serving(*mistakes) as port:
        client = Client(port)
        client.send(b"two words\n")
        client.wait_for(b"#invalid_nickname\n")
        with contextlib.suppress(OSError):  # the mistaken server has closed; the write may fail
            client.send(b"alice\n")
        assert client.transcript() == received


def test_an_unknown_mistake_is_refused() -> None:
    """serving() refuses a name it does not know, and names the ones it does."""
    with pytest.raises(ValueError, match="no-such-mistake") as error, serving("no-such-mistake"):
        pass
    assert all(mistake.value in str(error.value) for mistake in Mistake), error.value


def test_command_line_refuses_an_unknown_mistake(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --mistake is a usage error that lists the valid names."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "0", "--mistake", "no-such-mistake"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert all(mistake.value in error for mistake in Mistake), error


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_command_line_serves_until_a_signal_and_exits_cleanly(signum: int) -> None:
    """python -m tests.student_server serves until SIGTERM or SIGINT, then exits 0 with no traceback."""
    command = [sys.executable, "-m", "tests.student_server", "--port", "0", "--mistake", "no-lf"]
    environment = dict(os.environ, PYTHONPATH=ROOT)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, cwd=ROOT
    ) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)  # a read with a deadline
            assert ready, "the server announced nothing"
            announced = process.stdout.readline().decode()
            assert announced.startswith("listening on 127.0.0.1:"), announced
            client = Client(int(announced.rsplit(":", 1)[1]))
            client.send(b"alice\n")
            client.wait_for(b"#wait")
            process.send_signal(signum)
            _, errors = process.communicate(timeout=TIMEOUT)
        finally:
            process.kill()  # a no-op once it has exited
        assert (process.returncode, errors) == (0, b"")
