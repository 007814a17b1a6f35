"""Tests for TLS in the server and the client: mechat.tls wired into a real ChatServer.

tests/test_tls.py tests the channel alone; here the real server serves it
(``ChatServer(ssl_context=...)``) and the clients are the real
:class:`~mechat.tls.TLSClientSocket`, as ``mechat chat --tls`` makes them.
Certificates come from ``trustme``.  Every socket has a timeout, so no
read can hang a test, and nothing waits on a clock: each test waits for
the line, or the end of the stream, that it expects.
"""

import functools
import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import pytest

from mechat import client, protocol, tls
from mechat.__main__ import main
from mechat.server import ChatHandler, ChatServer, Limits
from tests.certificates import Files
from tests.conftest import SHUTDOWN_WAIT, CheckedServer
from tests.peers import NICKNAME_ROOM, TIMEOUT

#: The name the test certificate is for, and where the test servers listen.
HOST = "127.0.0.1"

#: The flood: lines each client sends its partner, and octets per line:
#: 500 kB each way, twice the send queue's cap (§9.6).  Short lines, since
#: the wire check (tests/wire.py) parses each distinct one after the test.
FLOOD_LINES = 5000
FLOOD_OCTETS = 100

#: Seconds the whole flood may take; far above what it needs.
FLOOD_SECONDS = 120.0


@pytest.fixture
def client_context(files: Files) -> ssl.SSLContext:
    """A client context that trusts the test authority, as ``mechat chat --cafile`` makes it."""
    return tls.client_context(files.cafile)


#: Starts a server, over TLS or not, with the given limits.
StartServer = Callable[..., ChatServer]


@pytest.fixture
def start(files: Files) -> Iterator[StartServer]:
    """Start servers, over TLS unless ``plain``; stop them after the test, which fails if a handler raised."""
    running: List[CheckedServer] = []

    def start_one(plain: bool = False, **limits: Any) -> ChatServer:
        context = None if plain else tls.server_context(files.cert, files.key)
        server = CheckedServer((HOST, 0), Limits(**limits), ChatHandler, context)
        server.shutdown_grace = server.shutdown_cutoff = SHUTDOWN_WAIT
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        running.append(server)
        return server

    yield start_one
    for server in running:
        server.shutdown()
        server.server_close()
    failures = [failure for server in running for failure in server.failures_once_done(SHUTDOWN_WAIT)]
    assert not failures, "a handler raised:\n" + failures[0]


class TLSPeer:
    """A test client over TLS: the real TLSClientSocket, read line by line with a timeout."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        sock = socket.create_connection(
            (HOST, port), timeout=TIMEOUT
        )  # the timeout stays after the handshake
        self.stream = tls.wrap_client_socket(sock, context, HOST, time.monotonic() + TIMEOUT)
        self.buffer = protocol.LineBuffer(protocol.MAX_SERVER_LINE_OCTETS)
        self.lines: List[bytes] = []

    def send(self, *lines: str) -> None:
        """Send each line, LF-terminated, in one write."""
        self.stream.sendall("".join(line + "\n" for line in lines).encode())

    def next_line(self) -> Optional[bytes]:
        """Return the next line from the server, or None at the end of the stream."""
        while not self.lines:
            data = self.stream.recv(65536)  # socket.timeout after TIMEOUT fails the test
            if not data:
                return None
            self.lines += [line for line in self.buffer.feed(data) if isinstance(line, bytes)]
        return self.lines.pop(0)

    def expect(self, *lines: str) -> None:
        """Read the given lines, in order, failing on any other."""
        for line in lines:
            assert self.next_line() == line.encode()

    def expect_end(self) -> None:
        """Read the end of the stream, failing on any line before it."""
        assert self.next_line() is None

    def close(self) -> None:
        """Close the connection."""
        self.stream.close()


def tls_pair(port: int, context: ssl.SSLContext) -> List[TLSPeer]:
    """Connect alice, then bob, over TLS, and see them matched."""
    alice = TLSPeer(port, context)
    alice.send("alice")
    alice.expect("#wait")
    bob = TLSPeer(port, context)
    bob.send("bob")
    bob.expect("#matched_to_alice")
    alice.expect("#matched_to_bob")
    return [alice, bob]


def one_line_without_traceback(caplog: pytest.LogCaptureFixture, contains: str) -> str:
    """Return the one log message containing ``contains``, failing unless it is one line with no traceback."""
    found = [record for record in caplog.records if contains in record.getMessage()]
    assert len(found) == 1, [record.getMessage() for record in caplog.records]
    message = found[0].getMessage()
    assert "\n" not in message and found[0].exc_info is None, message
    return message


# -- Chatting over TLS ------------------------------------------------------------------


def test_a_tls_pair_chats_through_the_server(start: StartServer, client_context: ssl.SSLContext) -> None:
    """Over TLS the protocol is as it was: matched, messages both ways, /quit, the partner told (§7, §8)."""
    server = start()
    alice, bob = tls_pair(server.port, client_context)
    alice.send("hello bob")
    bob.expect("hello bob")
    bob.send("hello alice", "/quit")
    alice.expect("hello alice", "#user_quit")
    alice.expect_end()  # the server ends its side with close_notify, after the last notice
    bob.expect_end()
    alice.close()
    bob.close()


def flood_line(sender: str, number: int) -> str:
    """Return line ``number`` of ``sender``'s flood: it names both, and is FLOOD_OCTETS long."""
    head = "%s %06d " % (sender, number)
    return head + "x" * (FLOOD_OCTETS - len(head))


def test_a_flood_both_ways_between_two_tls_clients_arrives_whole_and_in_order(
    start: StartServer, client_context: ssl.SSLContext
) -> None:
    """Both clients write and read at once; each handler reads one socket while others encrypt to it (§9.6).

    Every line is checked, in order, so a record garbled or sent out of
    order by two threads fails the test.
    """
    server = start(max_rate=0)
    peers = tls_pair(server.port, client_context)
    names = ["alice", "bob"]
    errors: List[BaseException] = []

    def write(peer: TLSPeer, name: str) -> None:
        for first in range(0, FLOOD_LINES, 100):
            peer.send(*(flood_line(name, number) for number in range(first, first + 100)))

    def read(peer: TLSPeer, partner: str) -> None:
        for number in range(FLOOD_LINES):
            assert peer.next_line() == flood_line(partner, number).encode()

    def guarded(step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                step()
            except BaseException as error:  # handed to the test thread
                errors.append(error)

        return run

    steps = [functools.partial(write, peer, name) for peer, name in zip(peers, names)]
    steps += [functools.partial(read, peer, partner) for peer, partner in zip(peers, reversed(names))]
    threads = [threading.Thread(target=guarded(step), daemon=True) for step in steps]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + FLOOD_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not [thread for thread in threads if thread.is_alive()], "the flood did not finish"
    assert not errors, errors[0]
    peers[0].send("/quit")
    peers[1].expect("#user_quit")
    for peer in peers:
        peer.close()


# -- The handshake and its deadline ---------------------------------------------------------


def test_a_client_that_never_finishes_the_handshake_is_dropped_at_the_nickname_deadline(
    start: StartServer, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The handshake runs within the nickname timeout (§9.2); meanwhile the server serves everyone else."""
    caplog.set_level(logging.WARNING, logger="mechat")
    server = start(nickname_timeout=NICKNAME_ROOM)
    with socket.create_connection((HOST, server.port), timeout=TIMEOUT) as silent:
        other = TLSPeer(server.port, client_context)  # connects after the silent one, and is served
        other.send("carol")
        other.expect("#wait")
        assert silent.recv(1) == b""  # the server closed it: nothing sent, no handshake
        other.close()
    one_line_without_traceback(caplog, "no TLS handshake from the client")


def test_a_full_tls_server_says_so_over_tls(start: StartServer, client_context: ssl.SSLContext) -> None:
    """A client past max_clients is told #server_full (§9.3), over TLS as over TCP, and closed."""
    server = start(max_clients=1)
    first = TLSPeer(server.port, client_context)
    first.send("alice")
    first.expect("#wait")
    second = TLSPeer(server.port, client_context)
    second.expect("#server_full")
    second.expect_end()
    second.close()
    first.close()


# -- The wrong port ------------------------------------------------------------------------


def everything_until_closed(sock: socket.socket) -> bytes:
    """Read what the server sends until it closes the connection (each recv() has the socket's timeout)."""
    received = b""
    while True:
        data = sock.recv(1024)
        if not data:
            return received
        received += data


def test_a_plaintext_client_on_the_tls_port_is_told_tls_required_and_closed_at_once(
    start: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """§2.5: a nickname where a ClientHello should be gets the plaintext line #tls_required, then the close.

    It comes at once, not at the nickname timeout, and the refusal is
    logged in one line.
    """
    caplog.set_level(logging.WARNING, logger="mechat")
    server = start(nickname_timeout=60.0)  # far past TIMEOUT: the close must come from the refusal
    with socket.create_connection((HOST, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"alice\n")
        assert everything_until_closed(sock) == b"#tls_required\n"
    message = one_line_without_traceback(caplog, "not TLS")
    assert message.endswith("the client spoke plain text, not TLS: 'alice'"), message


@pytest.mark.parametrize("line", ["/login alice Secret-Pass-1", "/register alice Secret-Pass-1"])
def test_a_plaintext_login_on_the_tls_port_is_refused_without_logging_its_password(
    start: StartServer, caplog: pytest.LogCaptureFixture, line: str
) -> None:
    """§2.5, §3.3: a plaintext /login or /register gets #tls_required; no log holds its password."""
    caplog.set_level(logging.DEBUG, logger="mechat")
    server = start(nickname_timeout=60.0)
    with socket.create_connection((HOST, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(line.encode("ascii") + b"\n")
        assert everything_until_closed(sock) == b"#tls_required\n"
    logged = [record.getMessage() for record in caplog.records]
    assert any("not TLS" in message for message in logged), logged
    assert not [message for message in logged if "Secret-Pass-1" in message], logged


def test_a_tls_client_on_a_plaintext_port_is_told_to_connect_without_tls(
    start: StartServer, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A plaintext server refuses a ClientHello at once, as no nickname (§3); the client says so in a line."""
    caplog.set_level(logging.WARNING, logger="mechat")
    server = start(plain=True, nickname_timeout=60.0)
    with pytest.raises(tls.NotTLS) as raised:
        client.open_stream(HOST, server.port, client_context)
    message = str(raised.value)
    assert message == "the server spoke plain text, not TLS: '#invalid_nickname'", message
    assert "without --tls" in client.tls_advice(raised.value)
    one_line_without_traceback(caplog, "spoke TLS to this plaintext server")


def test_a_client_that_does_not_trust_the_certificate_gets_one_line(start: StartServer) -> None:
    """Without the authority, the client refuses the server's certificate, and says why."""
    server = start()
    with pytest.raises(tls.HandshakeFailed) as raised:
        client.open_stream(HOST, server.port, tls.client_context(None))
    assert "\n" not in str(raised.value) and "certificate" in str(raised.value), raised.value


# -- The command line ------------------------------------------------------------------------


def test_serve_with_a_missing_key_says_so_in_one_line(
    files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mechat serve --tls-cert --tls-key`` names the file it cannot use, before it listens."""
    missing = str(tmp_path / "nowhere.pem")
    assert main(["serve", "--port", "0", "--tls-cert", files.cert, "--tls-key", missing]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and missing in error, error


def test_serve_with_a_certificate_but_no_key_is_a_usage_error(files: Files) -> None:
    """--tls-cert and --tls-key go together."""
    with pytest.raises(SystemExit):
        main(["serve", "--port", "0", "--tls-cert", files.cert])


def test_chat_with_a_missing_cafile_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mechat chat --cafile`` names the file it cannot use, before it connects."""
    missing = str(tmp_path / "nowhere.pem")
    assert main(["chat", "--port", "1", "--cafile", missing]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and missing in error, error
