"""The kit's side of the wire: clients whose every read has a deadline.

A :class:`Client` is one TCP connection to the server under test.  It cuts
what arrives into lines with the project's one line cutter, octet for
octet, so the report shows exactly what the server sent: a CR it should
not have sent, bytes that never got their LF.  It also remembers what it
sent, which is the evidence :mod:`mechat.conform.diagnose` needs to say
*why* a reply was wrong, not only that it was.

A :class:`Session` holds the clients of one check, names them in the
report, and hangs them all up at the end.

TLS.  Given an :class:`ssl.SSLContext` (``mechat conform --tls``), the
session shakes hands on each connection before it hands it to a check,
and the check's lines go through a :class:`~mechat.tls.TLSClientSocket`:
the checks do not know.  What is asked of TCP itself (a timeout on each
read, TCP_NODELAY, a hang-up, a reset) goes to the socket underneath,
which is why a client keeps both.  The kit sends no close_notify: it ends
a connection as a client that vanishes does, and the server must cope.
"""

import collections
import contextlib
import socket
import ssl
import time
from typing import Deque, List, NamedTuple, Optional, Set, Tuple, Union

from mechat.conform import diagnose
from mechat.conform.diagnose import CLOSED, RESET, WAIT, Outcome
from mechat.connection import abort
from mechat.protocol import LF, LineCutter, Notice
from mechat.tls import TLSClientSocket, wrap_client_socket

RECV_SIZE = 65536

#: Reads, at most, of what another client has already received, when a read goes wrong.
MAX_PENDING_READS = 16
Address = Tuple[str, int]
Reply = Union[bytes, Outcome]

#: What a client's lines go through: the TCP socket, or TLS over it.
Stream = Union[socket.socket, TLSClientSocket]

MATCHED_TO = Notice.MATCHED_TO.value.encode("ascii")
show = diagnose.show


class Exchange(NamedTuple):
    """One step of a check: what was sent, what must come back, what did, and why it may differ."""

    sent: str
    expected: str
    got: str
    diagnosis: str = ""

    def __str__(self) -> str:
        text = f"sent {self.sent}; expected {self.expected}; got {self.got}"
        return f"{text}. Likely mistake: {self.diagnosis}" if self.diagnosis else text


class Failure(Exception):
    """A check failed; ``exchange`` is the step that showed it."""

    def __init__(self, exchange: Exchange) -> None:
        super().__init__(str(exchange))
        self.exchange = exchange


class Client:
    """One connection to the server under test; every read has a deadline."""

    def __init__(self, session: "Session", name: str) -> None:
        self.session = session
        self.name = name
        #: The TCP connection: reads time out, options are set and resets are made here.
        self.tcp = socket.create_connection(session.address, timeout=session.timeout)
        self.tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        #: What lines are sent and received through: ``tcp`` itself, or TLS over it.
        self.sock: Stream = session.secure(self.tcp)
        self.incoming = LineCutter()  # what the server sent, cut exactly as sent
        self.unread: Deque[bytes] = collections.deque()  # whole lines received, not yet read
        self.ended: Optional[Outcome] = None  # how the connection ended, once it has
        self.last_write = b""  # the last bytes this client sent, exactly
        self.own_lines: Set[bytes] = set()  # every line this client sent, to recognise an echo
        self.last_read: Optional[bytes] = None  # the last line this client read
        self.read_before: Optional[bytes] = None  # the line it read before that

    # -- Sending -----------------------------------------------------------

    def send(self, *lines: bytes) -> None:
        """Send each line with an LF after it, all in one write."""
        self.own_lines.update(lines)
        self.send_raw(b"".join(line + LF for line in lines), ", ".join(show(line) for line in lines))

    def send_raw(self, data: bytes, description: str) -> None:
        """Send bytes exactly as given, and note them as the last thing sent."""
        self.note(description)
        self.last_write = self.session.last_write = data
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise Failure(Exchange(self.session.last_sent, "the server to take it", f"<{error}>")) from None

    def note(self, action: str) -> None:
        """Record what this client just did, for the report."""
        self.session.last_sent = f"{self.name}: {action}"

    # -- Receiving ---------------------------------------------------------

    def read_line(self) -> Reply:
        """Return the next line without its LF, or how the connection ended."""
        deadline = time.monotonic() + self.session.timeout
        while not self.unread:
            if self.ended is not None:
                if self.incoming.unterminated:
                    text = f"<closed after the unterminated {show(self.incoming.unterminated)}>"
                    return Outcome(text, Outcome.ENDED)
                return self.ended
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.silence()
            self.receive(remaining)
        self.read_before, self.last_read = self.last_read, self.unread.popleft()
        return self.last_read

    def silence(self) -> Outcome:
        """Describe a read that timed out, with any bytes that came without their LF."""
        within = f"within {self.session.timeout:g} s"
        if self.incoming.unterminated:
            text = f"<{show(self.incoming.unterminated)} with no LF, then nothing more {within}>"
        else:
            text = f"<nothing {within}>"
        return Outcome(text, Outcome.SILENCE)

    def receive(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for bytes, note a close or a reset; tell whether anything came."""
        self.tcp.settimeout(timeout)
        try:
            data = self.sock.recv(RECV_SIZE)
        except (socket.timeout, BlockingIOError):  # nothing within the timeout, or nothing yet
            return False
        except ConnectionResetError:
            self.ended = RESET
            return True
        except OSError as error:
            self.ended = Outcome(f"<{error}>", Outcome.ENDED)
            return True
        if not data:
            self.ended = CLOSED
        self.unread.extend(self.incoming.cut(data))
        return True

    def expect(self, expected: Reply) -> Exchange:
        """Read one line; raise Failure, with a diagnosis, unless it is ``expected``."""
        got = self.read_line()
        # A close may arrive as a reset when the server had unread bytes (§8).
        closed_as_expected = expected is CLOSED and got is RESET
        if got != expected and not closed_as_expected:
            raise Failure(self.judged(expected, got))
        return Exchange(self.session.last_sent, f"{self.name} gets {show(expected)}", show(got))

    def judged(self, expected: Reply, got: Reply) -> Exchange:
        """Return the exchange of a wrong reply, with the likely mistake behind it."""
        exchange = Exchange(self.session.last_sent, f"{self.name} gets {show(expected)}", show(got))
        return exchange._replace(diagnosis=diagnose.explain(self.evidence(expected, got)))

    def evidence(self, expected: Reply, got: Reply) -> diagnose.Evidence:
        """Gather what the diagnoses need about a read that went wrong."""
        return diagnose.Evidence(
            reader=self.name,
            expected=expected,
            got=got,
            unterminated=self.incoming.unterminated,
            last_read=self.read_before if isinstance(got, bytes) else self.last_read,
            own_write=self.last_write,
            last_write=self.session.last_write,
            own_lines=frozenset(self.own_lines),
            others=self.session.others(self),
            nicknames_work=self.session.nicknames_work,
        )

    def pending(self) -> bytes:
        """Return what arrived and was not read, without waiting: whole lines, then unterminated bytes."""
        for _ in range(MAX_PENDING_READS):  # a close may follow the last bytes
            if self.ended is not None or not self.receive(0.0):
                break
        return b"".join(line + LF for line in self.unread) + self.incoming.unterminated

    def ask(self, line: bytes, expected: Reply) -> Exchange:
        """Send one line and expect one reply."""
        self.send(line)
        return self.expect(expected)

    # -- Ending ------------------------------------------------------------

    def close(self) -> None:
        """Close the connection normally: the server sees end of file (§8)."""
        self.note("<closes the connection>")
        self.ended = CLOSED
        self.tcp.close()

    def reset(self) -> None:
        """Abort the connection with a TCP reset (SO_LINGER 0), not a FIN (§8)."""
        self.note("<resets the connection>")
        self.ended = RESET
        abort(self.tcp)

    def hang_up(self) -> None:
        """Send end of file but keep reading, so we can see the server close."""
        with contextlib.suppress(OSError):  # already closed or reset
            self.tcp.shutdown(socket.SHUT_WR)

    def wait_closed(self, deadline: float) -> None:
        """Discard what arrives until the server closes or ``deadline`` passes, then close."""
        while self.ended is None and time.monotonic() < deadline:
            self.unread.clear()
            self.incoming = LineCutter()
            self.acknowledge_at_once()
            self.receive(deadline - time.monotonic())
        self.tcp.close()

    def acknowledge_at_once(self) -> None:
        """Ask Linux to acknowledge what arrives next without its usual delay of up to 40 ms.

        A client that only reads sends no data for an ACK to ride on, so the
        kernel waits, and a server that waits for its last lines to be
        acknowledged before it closes (as mechat does, §8) waits with it:
        40 ms for every check.  TCP_QUICKACK does not stay set, hence once
        per read.  Elsewhere the option does not exist and nothing changes.
        """
        if hasattr(socket, "TCP_QUICKACK"):
            with contextlib.suppress(OSError):
                self.tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


class Session:
    """The clients of one check: it makes them, names them, and cleans them up."""

    def __init__(
        self,
        address: Address,
        timeout: float,
        nicknames_work: bool = False,
        tls: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.tls = tls  # every connection speaks TLS with this context; None for plain TCP
        self.clients: List[Client] = []
        self.last_sent = "nothing yet"
        self.last_write = b""  # the last bytes any client of the session sent
        self.nicknames_work = nicknames_work  # the preflight saw 'alice' and its LF accepted

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def secure(self, tcp: socket.socket) -> Stream:
        """Return ``tcp`` itself for plain TCP, or TLS over it after a handshake within the timeout.

        Raise mechat.tls.TLSError, an OSError with a one-line message, if
        the handshake fails; ``tcp`` is closed then.
        """
        if self.tls is None:
            return tcp
        try:
            return wrap_client_socket(tcp, self.tls, self.address[0], time.monotonic() + self.timeout)
        except OSError:
            tcp.close()
            raise

    def connect(self, name: str) -> Client:
        """Open a connection; ``name`` is its nickname in the report."""
        client = Client(self, name)
        self.clients.append(client)
        return client

    def join(self, nickname: str) -> Client:
        """Connect and choose ``nickname``, expecting #wait (§7.1)."""
        client = self.connect(nickname)
        client.ask(nickname.encode("ascii"), WAIT)
        return client

    def meet(self, waiter: Client, nickname: str) -> Client:
        """Connect as ``nickname`` and see it matched with ``waiter``, each told the other's name (§7.1)."""
        newcomer = self.connect(nickname)
        newcomer.ask(nickname.encode("ascii"), MATCHED_TO + waiter.name.encode("ascii"))
        waiter.expect(MATCHED_TO + nickname.encode("ascii"))
        return newcomer

    def pair(self, first: str = "alice", second: str = "bob") -> Tuple[Client, Client]:
        """Connect two clients and see them matched to each other (§7.1)."""
        waiter = self.join(first)
        return waiter, self.meet(waiter, second)

    def others(self, reader: Client) -> Tuple[diagnose.Other, ...]:
        """Return what every client but ``reader`` has received and not read."""
        return tuple(
            diagnose.Other(client.name, client.pending(), client.ended is None)
            for client in self.clients
            if client is not reader
        )

    def close(self, wait: bool = True) -> None:
        """Hang up every client and wait, within one timeout, for the server to close them.

        Waiting matters: a waiter is withdrawn from the queue when the
        server reads its end of file (§7.2), and the next check must not
        race with that.  Without ``wait``, for a server known to ignore an
        end of file, the clients are closed at once.
        """
        deadline = time.monotonic() + (self.timeout if wait else 0.0)
        open_clients = [client for client in self.clients if client.ended is None]
        for client in open_clients:
            client.hang_up()
        for client in self.clients:
            client.wait_closed(deadline)
