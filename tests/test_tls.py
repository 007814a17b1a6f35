"""Tests for mechat.tls: the handshake and its deadline, a flood both ways, the wrong port, close_notify.

Certificates come from ``trustme``: a throw-away authority made for the
test run, and a certificate for 127.0.0.1 that it signs.  Every connection
is real TCP on 127.0.0.1, and every socket has a timeout, so no read or
write can hang a test.

The channel is the groundwork of TLS in mechat, tested alone before it is
wired into the server: the server side here stands in for a Connection
(writers encrypt and send under one send lock; the reader decrypts and
hands on what reading made), and the client side is the real
:class:`~mechat.tls.TLSClientSocket`.
"""

import ctypes
import functools
import hashlib
import importlib
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import pytest
import trustme

from mechat import tls
from mechat.server import ChatServer
from mechat.tls import Decrypted, TLSChannel, TLSClientSocket
from tests.peers import NICKNAME_ROOM, TIMEOUT

#: The name the test certificate is for, and where the test servers listen.
HOST = "127.0.0.1"

#: Seconds a handshake that is meant to time out is given.
SHORT_DEADLINE = 0.2

#: The flood: writers per side, lines per writer, and octets per line (a
#: long chat line, as the line limit of §2.3 allows): 4 MB each way.
WRITERS = 2
LINES_PER_WRITER = 1000
LINE_OCTETS = 2000

#: Seconds the whole flood may take; far above what it needs.
FLOOD_SECONDS = 120.0

#: Lines a flood writer sends between two requests for new keys, when it asks for them.
LINES_PER_KEY_UPDATE = 50

#: OpenSSL's SSL_KEY_UPDATE_REQUESTED and TLS1_3_VERSION (ssl.h, tls1.h).
KEY_UPDATE_REQUESTED = 1
TLS1_3_VERSION = 0x0304


# -- Certificates, contexts and connections ---------------------------------------


class Contexts(NamedTuple):
    """A server context and a client context that trusts it, made by mechat.tls from files."""

    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    """A certificate authority for this module's tests only."""
    return trustme.CA()


@pytest.fixture
def contexts(authority: trustme.CA, tmp_path: Path) -> Contexts:
    """Write a certificate, its key and the authority to files, and load them as mechat would."""
    issued = authority.issue_cert(HOST, "localhost")
    cert, key, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(cafile))
    return Contexts(tls.server_context(str(cert), str(key)), tls.client_context(str(cafile)))


@pytest.fixture
def tcp_pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    """Yield a connected pair of TCP sockets on loopback, each with a timeout: (server's, client's)."""
    with socket.create_server((HOST, 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        server, _ = listener.accept()
    server.settimeout(TIMEOUT)
    with server, client:
        yield server, client


class Link(NamedTuple):
    """Both ends of one TLS connection, handshake done."""

    server_sock: socket.socket
    server: TLSChannel
    server_first: Decrypted
    client_sock: socket.socket
    client: TLSChannel
    client_first: Decrypted


@pytest.fixture
def link(contexts: Contexts, tcp_pair: Tuple[socket.socket, socket.socket]) -> Link:
    """Do both handshakes at once, the server's on a thread, each within TIMEOUT."""
    server_sock, client_sock = tcp_pair
    server = TLSChannel(contexts.server, server_side=True)
    client = TLSChannel(contexts.client, server_side=False, server_hostname=HOST)
    server_side = run_in_thread(lambda: server.handshake(server_sock, time.monotonic() + TIMEOUT))
    client_first = client.handshake(client_sock, time.monotonic() + TIMEOUT)
    link = Link(server_sock, server, server_side.result(), client_sock, client, client_first)
    # A TLS 1.3 server sends session tickets after its handshake, which the
    # client's handshake does not wait for; a line after them, read from the
    # socket, makes sure the client has taken them.  Tests may then pass
    # ciphertext between the channels by hand.
    server_sock.sendall(server.encrypt(b"#ready\n"))
    assert read_plaintext(client_sock, client, b"#ready\n") == b"#ready\n"
    return link


class Outcome:
    """What a function run on a thread returned or raised, once it has."""

    thread: threading.Thread

    def __init__(self) -> None:
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.failed_at = 0.0  # monotonic, once error is set

    def result(self, seconds: float = TIMEOUT) -> Any:
        """Wait, at most ``seconds``, for the function to end; return its value or raise its exception."""
        return results([self], seconds)[0]


def results(outcomes: List[Outcome], seconds: float) -> List[Any]:
    """Wait, at most ``seconds`` in all, for every outcome; return their values, or raise the first failure.

    The failure that came first is the cause: the others (a peer that
    stopped reading, a socket timing out) follow from it.
    """
    deadline = time.monotonic() + seconds
    for outcome in outcomes:
        outcome.thread.join(max(0.0, deadline - time.monotonic()))
    running = [outcome.thread.name for outcome in outcomes if outcome.thread.is_alive()]
    assert not running, "still running after %.0f s: %s" % (seconds, running)
    failures = [(outcome.failed_at, outcome.error) for outcome in outcomes if outcome.error is not None]
    if failures:
        raise min(failures, key=lambda failure: failure[0])[1]
    return [outcome.value for outcome in outcomes]


def run_in_thread(function: Callable[[], Any], name: str = "test-tls") -> Outcome:
    """Start ``function`` on a thread; the Outcome gives what it returned or raised."""
    outcome = Outcome()

    def run() -> None:
        try:
            outcome.value = function()
        except BaseException as error:  # handed to the test thread, which raises it
            outcome.error, outcome.failed_at = error, time.monotonic()

    outcome.thread = threading.Thread(target=run, name=name, daemon=True)
    outcome.thread.start()
    return outcome


class BareClient(NamedTuple):
    """A TLS client driven by hand, one handshake step at a time: no TLSChannel, no socket."""

    tls: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO

    def step(self) -> bool:
        """Take the handshake as far as it goes; return True once it is done."""
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True


def bare_client(contexts: Contexts) -> BareClient:
    """Return a TLS client on memory buffers, its handshake not yet begun."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return BareClient(contexts.client.wrap_bio(incoming, outgoing, False, HOST), incoming, outgoing)


def client_hello(contexts: Contexts) -> bytes:
    """Return the first flight a TLS client sends: its ClientHello."""
    client = bare_client(contexts)
    assert not client.step()
    return client.outgoing.read()


def one_line(error: BaseException) -> str:
    """Return the message of ``error``, failing unless it is a single line."""
    message = str(error)
    assert message and "\n" not in message, message
    return message


# -- The handshake -------------------------------------------------------------------


def test_the_handshake_finishes_in_time_and_both_sides_then_talk(link: Link) -> None:
    """After the handshake each side reads what the other encrypted, and the sockets keep their timeouts."""
    assert link.server_first == Decrypted(b"", False, False)
    assert link.client_first == Decrypted(b"", False, False)
    assert link.server_sock.gettimeout() == link.client_sock.gettimeout() == TIMEOUT
    link.client_sock.sendall(link.client.encrypt(b"alice\n"))
    assert read_plaintext(link.server_sock, link.server, b"alice\n") == b"alice\n"
    link.server_sock.sendall(link.server.encrypt(b"#wait\n"))
    assert read_plaintext(link.client_sock, link.client, b"#wait\n") == b"#wait\n"


def read_plaintext(sock: socket.socket, channel: TLSChannel, expected: bytes) -> bytes:
    """Receive and decrypt until as many octets as ``expected`` has have come; return them."""
    received = b""
    while len(received) < len(expected):
        decrypted = channel.decrypt(sock.recv(65536))
        assert not decrypted.ended, received
        received += decrypted.plaintext
    return received


def test_lines_that_come_with_the_end_of_the_handshake_are_not_lost(
    contexts: Contexts, tcp_pair: Tuple[socket.socket, socket.socket]
) -> None:
    """A client may send its nickname in the same segment as its last handshake message (§3)."""
    server_sock, client_sock = tcp_pair
    server = TLSChannel(contexts.server, server_side=True)
    server_side = run_in_thread(lambda: server.handshake(server_sock, time.monotonic() + TIMEOUT))
    client = bare_client(contexts)
    client.step()
    client_sock.sendall(client.outgoing.read())  # ClientHello
    while not client.step():
        client.incoming.write(client_sock.recv(65536))
    client.tls.write(b"alice\n")
    client_sock.sendall(client.outgoing.read())  # Finished and the nickname, in one segment
    assert server_side.result() == Decrypted(b"alice\n", False, False)


@pytest.mark.parametrize("sends", ["nothing", "half a ClientHello"])
def test_a_client_that_never_finishes_the_handshake_is_dropped_at_the_deadline(
    contexts: Contexts, tcp_pair: Tuple[socket.socket, socket.socket], sends: str
) -> None:
    """The handshake has the nickname's deadline (§9.2): a silent or stalled client gets a clear error."""
    server_sock, client_sock = tcp_pair
    if sends != "nothing":
        hello = client_hello(contexts)
        client_sock.sendall(hello[: len(hello) // 2])
    channel = TLSChannel(contexts.server, server_side=True)
    with pytest.raises(tls.HandshakeTimeout) as raised:
        channel.handshake(server_sock, time.monotonic() + SHORT_DEADLINE)
    assert one_line(raised.value).startswith("no TLS handshake from the client in ")
    assert server_sock.gettimeout() == TIMEOUT


def test_a_client_that_hangs_up_during_the_handshake_is_told_apart_from_a_slow_one(
    contexts: Contexts, tcp_pair: Tuple[socket.socket, socket.socket]
) -> None:
    """An end of file in the middle of the handshake fails it at once, with no wait for the deadline."""
    server_sock, client_sock = tcp_pair
    hello = client_hello(contexts)
    client_sock.sendall(hello[: len(hello) // 2])
    client_sock.shutdown(socket.SHUT_WR)
    channel = TLSChannel(contexts.server, server_side=True)
    with pytest.raises(tls.HandshakeFailed) as raised:
        channel.handshake(server_sock, time.monotonic() + TIMEOUT)
    assert one_line(raised.value) == "the client closed the connection during the TLS handshake"


def test_a_server_that_never_answers_the_handshake_times_the_client_out(
    contexts: Contexts, tcp_pair: Tuple[socket.socket, socket.socket]
) -> None:
    """The client's handshake has a deadline too, and says whom it waited for."""
    _, client_sock = tcp_pair
    with pytest.raises(tls.HandshakeTimeout, match="no TLS handshake from the server"):
        tls.wrap_client_socket(client_sock, contexts.client, HOST, time.monotonic() + SHORT_DEADLINE)


def test_a_client_that_does_not_trust_the_certificate_refuses_it_and_the_server_learns_why(
    contexts: Contexts, tcp_pair: Tuple[socket.socket, socket.socket]
) -> None:
    """With the system's authorities only, the client refuses a certificate from the test's own."""
    server_sock, client_sock = tcp_pair
    server = TLSChannel(contexts.server, server_side=True)
    server_side = run_in_thread(lambda: server.handshake(server_sock, time.monotonic() + TIMEOUT))
    with pytest.raises(tls.HandshakeFailed) as refused:
        tls.wrap_client_socket(client_sock, tls.client_context(), HOST, time.monotonic() + TIMEOUT)
    assert "the certificate was refused" in one_line(refused.value)
    with pytest.raises(tls.HandshakeFailed) as told:
        server_side.result()
    assert "unknown ca" in one_line(told.value)  # the client's alert, passed on


# -- The wrong port ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "quoted"),
    [
        (b"alice\n", "'alice'"),  # a plaintext mechat client's nickname (§3)
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "'GET / HTTP/1.1'"),
        (b"\x00\x01\x02", "'\\x00\\x01\\x02'"),
        (b"x" * 100 + b"\n", "'%s'..." % ("x" * tls.QUOTED_OCTETS)),
    ],
)
def test_a_plaintext_client_on_a_tls_port_gets_a_one_line_error_that_quotes_it(
    contexts: Contexts, tcp_pair: Tuple[socket.socket, socket.socket], sent: bytes, quoted: str
) -> None:
    """A first line that is not a TLS record is refused at once, with no traceback to log."""
    server_sock, client_sock = tcp_pair
    client_sock.sendall(sent)
    channel = TLSChannel(contexts.server, server_side=True)
    with pytest.raises(tls.NotTLS) as raised:
        channel.handshake(server_sock, time.monotonic() + TIMEOUT)
    assert one_line(raised.value) == "the client spoke plain text, not TLS: " + quoted
    assert isinstance(raised.value, OSError)  # the handler's existing "connection failed" path


def test_a_tls_client_on_the_plaintext_mechat_port_recognises_its_notice(
    start_server: Callable[..., ChatServer], contexts: Contexts
) -> None:
    """mechat answers a ClientHello as a line that is no nickname; the client names that answer.

    The ClientHello is random octets: with an LF among them the answer is
    ``#invalid_nickname`` at once, without one ``#nickname_timeout`` after
    the nickname timeout (§9.2).
    """
    server = start_server(nickname_timeout=NICKNAME_ROOM)
    with (
        socket.create_connection((HOST, server.port), timeout=TIMEOUT) as sock,
        pytest.raises(tls.NotTLS) as raised,
    ):
        tls.wrap_client_socket(sock, contexts.client, HOST, time.monotonic() + TIMEOUT)
    message = one_line(raised.value)
    assert message.startswith("the server spoke plain text, not TLS: '#"), message
    assert ("#invalid_nickname" in message) or ("#nickname_timeout" in message), message


def test_looks_like_tls_tells_a_client_hello_from_a_line(contexts: Contexts) -> None:
    """The first octets of a TLS record are its type and major version (RFC 8446 §5.1)."""
    hello = client_hello(contexts)
    assert tls.looks_like_tls(hello)
    assert tls.looks_like_tls(hello[:1])  # one octet is all a first recv() may bring
    assert tls.looks_like_tls(b"\x15\x03\x03\x00\x02\x02\x28")  # a handshake_failure alert
    for line in (b"", b"alice\n", b"#invalid_nickname\n", b"GET / HTTP/1.1\r\n", b"\x16\x00", b"\x17\x03"):
        assert not tls.looks_like_tls(line), line


# -- The flood -------------------------------------------------------------------------


def flood_line(writer: int, number: int) -> bytes:
    """Return line ``number`` of ``writer``: LINE_OCTETS octets that change with both, ending in LF."""
    head = b"%d %06d " % (writer, number)
    body = hashlib.sha256(head).hexdigest().encode() * (LINE_OCTETS // 64 + 1)
    return (head + body)[: LINE_OCTETS - 1] + b"\n"


def check_flood(received: bytes) -> None:
    """Fail unless ``received`` holds every writer's lines, each whole, in the order it sent them."""
    by_writer: Dict[int, List[bytes]] = {writer: [] for writer in range(WRITERS)}
    for line in received.splitlines(keepends=True):
        by_writer[int(line.split(b" ", 1)[0])].append(line)
    for writer, lines in by_writer.items():
        assert lines == [flood_line(writer, n) for n in range(LINES_PER_WRITER)], "writer %d" % writer


class ServerEnd:
    """The server's side as a Connection will drive it: one reader, writers under one send lock."""

    def __init__(self, sock: socket.socket, channel: TLSChannel, first: Decrypted) -> None:
        self.sock = sock
        self.channel = channel
        self.first = first
        self.send_lock = threading.Lock()
        self.replies = 0  # decrypts that left ciphertext for the writing side

    def write(self, plaintext: bytes) -> None:
        """Encrypt and send under the send lock, as Connection.flush will (send lock, then TLS lock)."""
        with self.send_lock:
            self.sock.sendall(self.channel.encrypt(plaintext))

    def read(self, total: int) -> bytes:
        """Decrypt until ``total`` octets have come; hand what reading made to the writing side."""
        received = bytearray(self.first.plaintext)
        while len(received) < total:
            decrypted = self.channel.decrypt(self.sock.recv(65536))
            assert not decrypted.ended, len(received)
            received += decrypted.plaintext
            if decrypted.reply_pending:  # TLS lock released: now the send lock, as at a flush point
                self.replies += 1
                self.write(b"")  # Connection.flush will not wait; here the client's reader never writes
        return bytes(received)


def flood(write: Callable[[bytes], None], channel: TLSChannel, key_updates: bool) -> Callable[[], int]:
    """Return a job: WRITERS threads send their lines with ``write``; it returns the key updates asked."""

    def one_writer(writer: int) -> int:
        asked = 0
        for number in range(LINES_PER_WRITER):
            if key_updates and number % LINES_PER_KEY_UPDATE == 0:
                asked += ask_for_new_keys(channel)
            write(flood_line(writer, number))
        return asked

    def all_writers() -> int:
        writers = [run_in_thread(functools.partial(one_writer, w), "writer-%d" % w) for w in range(WRITERS)]
        return sum(results(writers, FLOOD_SECONDS))

    return all_writers


@pytest.mark.parametrize("key_updates", [False, True], ids=["steady keys", "new keys asked for"])
def test_a_flood_both_ways_arrives_whole_and_in_order(link: Link, key_updates: bool) -> None:
    """Each side reads 4 MB while two threads write 4 MB to it, both ways at once: every octet, in order.

    The server side decrypts on its reader thread while two writer threads
    encrypt under a shared send lock; the client side is a
    TLSClientSocket, read by one thread and written by two.  With new keys
    asked for every LINES_PER_KEY_UPDATE lines (TLS 1.3 KeyUpdate, which
    OpenSSL may send or answer from inside a read), a record sent out of
    the order it was made could not be decrypted.
    """
    if key_updates and not can_ask_for_new_keys(link.client):
        pytest.skip("OpenSSL's SSL_key_update cannot be reached through ctypes here")
    server = ServerEnd(link.server_sock, link.server, link.server_first)
    client = TLSClientSocket(link.client_sock, link.client, link.client_first)
    client_send_lock = threading.Lock()  # as mechat.client's, around each sendall()

    def client_write(line: bytes) -> None:
        with client_send_lock:
            client.sendall(line)

    total = WRITERS * LINES_PER_WRITER * LINE_OCTETS
    jobs = [
        run_in_thread(lambda: server.read(total), "server-reader"),
        run_in_thread(lambda: read_all(client, total), "client-reader"),
        run_in_thread(flood(server.write, link.server, key_updates), "server-writers"),
        run_in_thread(flood(client_write, link.client, key_updates), "client-writers"),
    ]
    to_server, to_client, server_updates, client_updates = results(jobs, FLOOD_SECONDS)
    assert len(to_server) == len(to_client) == total
    check_flood(to_server)
    check_flood(to_client)
    if key_updates:
        assert server_updates > 0 and client_updates > 0


def read_all(client: TLSClientSocket, total: int) -> bytes:
    """Receive from ``client`` until ``total`` octets of plaintext have come."""
    received = bytearray()
    while len(received) < total:
        chunk = client.recv(65536)
        assert chunk, "the stream ended after %d octets" % len(received)
        received += chunk
    return bytes(received)


# -- Bytes made while reading ----------------------------------------------------------


def key_update_functions() -> Optional[ctypes.CDLL]:
    """Return OpenSSL's library as ctypes sees it through Python's _ssl, or None where it cannot."""
    try:
        library = ctypes.CDLL(importlib.import_module("_ssl").__file__)
        library.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
        library.SSL_is_init_finished.argtypes = [ctypes.c_void_p]
        library.SSL_version.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError, TypeError):  # no such library or function, as on Windows
        return None
    return library


def ssl_pointer(channel: TLSChannel) -> Optional[int]:
    """Return the OpenSSL SSL* under ``channel``, or None if CPython's layout is not the one known.

    CPython's _ssl._SSLSocket starts with PyObject_HEAD, then the socket
    (NULL for memory buffers), then the SSL*.  The pointer is checked
    before use: its version must be TLS 1.3.
    """
    library = key_update_functions()
    sslobj = channel._tls._sslobj  # type: ignore[attr-defined]
    if library is None:
        return None
    fields = (ctypes.c_void_p * 2).from_address(id(sslobj) + object.__basicsize__)
    if fields[0] is not None or fields[1] is None:
        return None
    pointer = int(fields[1])
    return pointer if library.SSL_version(pointer) == TLS1_3_VERSION else None


def can_ask_for_new_keys(channel: TLSChannel) -> bool:
    """Tell whether ask_for_new_keys() works on this interpreter and OpenSSL."""
    return ssl_pointer(channel) is not None


def ask_for_new_keys(channel: TLSChannel) -> int:
    """Make ``channel`` ask for new keys (a TLS 1.3 KeyUpdate); return 1 if asked, 0 if one is pending.

    Python's ssl has no call for it, so this reaches OpenSSL's
    SSL_key_update() through ctypes, under the channel's TLS lock like
    every other call into it.
    """
    library = key_update_functions()
    pointer = ssl_pointer(channel)
    assert library is not None and pointer is not None
    with channel._lock:
        if not library.SSL_is_init_finished(pointer):
            return 0  # the last one is not sent yet
        assert library.SSL_key_update(pointer, KEY_UPDATE_REQUESTED) == 1
        return 1


def records(ciphertext: bytes) -> List[bytes]:
    """Cut ``ciphertext`` into TLS records: 5 octets of header, the last two the length (RFC 8446 §5.1)."""
    cut = []
    while ciphertext:
        length = 5 + int.from_bytes(ciphertext[3:5], "big")
        cut.append(ciphertext[:length])
        ciphertext = ciphertext[length:]
    return cut


@pytest.mark.parametrize("order", ["as made", "swapped"])
def test_a_key_update_made_while_reading_goes_out_before_any_newer_record(link: Link, order: str) -> None:
    """decrypt() leaves what it made for the next encrypt(), which sends it first; swapped, the peer fails.

    The client asks for new keys; OpenSSL sends its KeyUpdate from inside
    the next read, and from then on encrypts with the new keys.  So the
    KeyUpdate must precede every record made after it.
    """
    if not can_ask_for_new_keys(link.client):
        pytest.skip("OpenSSL's SSL_key_update cannot be reached through ctypes here")
    ask_for_new_keys(link.client)
    decrypted = link.client.decrypt(link.server.encrypt(b"#wait\n"))
    assert decrypted == Decrypted(b"#wait\n", False, True)
    key_update, message = records(link.client.encrypt(b"hi\n"))
    if order == "as made":
        assert link.server.decrypt(key_update + message) == Decrypted(b"hi\n", False, False)
        assert link.client.decrypt(link.server.encrypt(b"ok\n")).plaintext == b"ok\n"  # with its answer
    else:
        with pytest.raises(ssl.SSLError):
            link.server.decrypt(message + key_update)


# -- The end of the stream -----------------------------------------------------------


def test_a_last_line_and_close_notify_arrive_together_and_end_the_stream(link: Link) -> None:
    """The last notice (§8) is read, then the close_notify after it ends the stream cleanly."""
    with_end = link.server.encrypt(b"#user_quit\n") + link.server.close_notify()
    assert link.client.decrypt(with_end) == Decrypted(b"#user_quit\n", True, False)


def test_an_end_of_file_without_close_notify_ends_the_stream_too(link: Link) -> None:
    """A peer that just closes its socket has ended: a line is whole or not there (§2)."""
    partial = link.server.encrypt(b"#user_quit\n")
    assert link.client.decrypt(partial[:-1]) == Decrypted(b"", False, False)
    ending = link.client.decrypt(b"")
    assert (ending.plaintext, ending.ended) == (b"", True)  # with an alert for the peer, by some Pythons


def test_close_notify_ends_our_writing_and_the_peers_reading(link: Link) -> None:
    """After close_notify the peer reads the end, may still end its own side, and we encrypt no more."""
    ending = link.client.close_notify()
    assert link.server.decrypt(ending) == Decrypted(b"", True, False)
    assert link.server.close_notify()  # the server may still end its own side
    with pytest.raises(ssl.SSLError):
        link.client.encrypt(b"too late\n")


def test_close_notify_before_any_handshake_is_nothing_to_send(contexts: Contexts) -> None:
    """A connection dropped before its handshake (a timeout, a plaintext client) has no TLS to end."""
    assert TLSChannel(contexts.server, server_side=True).close_notify() == b""


def test_a_tls_client_socket_reads_to_the_servers_close_notify_and_then_ends(link: Link) -> None:
    """recv() gives the last lines, cut to the size asked, then b"" as a socket does at its end."""
    client = TLSClientSocket(link.client_sock, link.client, link.client_first)
    link.server_sock.sendall(link.server.encrypt(b"#server_shutdown\n") + link.server.close_notify())
    assert client.recv(7) == b"#server"
    assert client.recv(65536) == b"_shutdown\n"
    assert client.recv(65536) == b""
    assert client.recv(65536) == b""
    client.shutdown(socket.SHUT_RDWR)
    client.close()
