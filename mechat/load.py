"""A load tester for mechat, or for any server that speaks its protocol.

``python -m mechat load --port P --pairs N --messages M --size B --mode MODE``
opens ``2 * N`` connections, names them ``u0``, ``u1`` ..., waits until the
server has paired every one of them, and then makes them talk:

* ``pingpong``: in each pair the client with the lower number sends a line,
  its partner sends it straight back, and the first client times the round
  trip.  One line per pair is in flight at a time, ``M`` round trips a pair.
* ``flood``: both clients of every pair send ``M`` lines as fast as the
  server takes them, each keeping at most ``--window`` lines unread by its
  partner.

Every line it sends carries its own proof of delivery: it is a numbered
line (:mod:`mechat.numbered`) padded to ``--size`` octets::

    CCCCCCCC:SSSSSSSS:QQQQQQQQ:xxxxxxxx...

``C`` is a CRC-32 of everything after it, ``S`` the sender's number and
``Q`` the line's sequence number.  The receiver checks all three, so a line
that is lost, sent twice, overtaken or altered is counted, not averaged away.
At the end every first client sends ``/quit``, and its partner must see
``#user_quit`` and then the close (§8).

The design is the one a C load generator would use, in Python: one thread,
one :mod:`selectors` loop over non-blocking sockets.  One thread keeps the
tester honest about itself: it can use at most one CPU, and it measures how
much of one CPU it used.  When that is nearly all of it, the numbers describe
the tester and not the server, and the report says so.

With ``--tls`` each client shakes hands as it connects, blocking, within
the run's timeout, one client after another, so the match time includes
every handshake.  Then its socket joins the loop like any other, and a
:class:`~mechat.tls.TLSChannel` stands between the client's lines and the
socket: the lines a client queues are encrypted when the loop writes,
into one buffer of ciphertext that ``send()`` takes what it can of, and
what ``recv()`` brings is decrypted before it is cut into lines.  One
thread does all of it, so the channel's lock is never contended.
"""

import argparse
import errno
import selectors
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

from mechat import numbered, protocol, tls, tuning

#: Bytes asked of each recv(); a flood brings many lines per call.
RECV_SIZE = 65536

#: What the handshake leaves to read when, as from mechat, no line came with it.
NOTHING_YET = tls.Decrypted(b"", ended=False, reply_pending=False)

#: Clients that may be connected but not yet answered at once, so that a
#: burst of 10,000 connections does not overflow the server's accept queue.
MAX_CONNECTING = 1000

#: Share of one CPU above which the tester, not the server, sets the pace.
SATURATED_CPU = 0.9

#: Samples of what went wrong kept for the report.
MAX_SAMPLES = 5


# -- Lines that prove their own delivery ------------------------------------


def sender_name(number: int) -> bytes:
    """Return how client ``number`` names itself on its lines: its number in eight digits."""
    return b"%08d" % number


#: The fixed part of a line: "CCCCCCCC:SSSSSSSS:QQQQQQQQ:".
HEADER_OCTETS = len(numbered.make_line(sender_name(0), 0))
MIN_SIZE = HEADER_OCTETS + 1


# -- What the tester counts --------------------------------------------------


@dataclass
class Verdict:
    """Every way a line can go wrong, counted (§8: no line disappears unseen)."""

    delivered: int = 0
    lost: int = 0  # sequence numbers skipped over
    duplicated: int = 0  # a sequence number seen again, or out of order
    corrupt: int = 0  # bad checksum or length
    wrong_sender: int = 0
    missing: int = 0  # lines never seen by the end
    unexpected: int = 0  # notices or lines nobody sent during the run
    samples: List[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        """Keep a few examples of what went wrong for the report."""
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(what)

    @property
    def intact(self) -> bool:
        """True if every line arrived exactly once, in order and unaltered."""
        faults = self.lost + self.duplicated + self.corrupt + self.wrong_sender + self.missing
        return faults + self.unexpected == 0


@dataclass
class Report:
    """The outcome of one run."""

    mode: str
    pairs: int
    messages: int
    size: int
    matched: bool = False  # every client was matched, so the exchange ran
    match_seconds: float = 0.0
    run_seconds: float = 0.0
    count: int = 0  # round trips (pingpong) or lines delivered (flood)
    latencies: List[float] = field(default_factory=list)  # seconds, pingpong only
    cpu_share: float = 0.0  # tester CPU time / wall time while the lines flowed
    quit_ok: int = 0
    verdict: Verdict = field(default_factory=Verdict)
    error: str = ""

    @property
    def throughput(self) -> float:
        """Round trips or lines a second."""
        return self.count / self.run_seconds if self.run_seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        """Return the p-th percentile round trip, in seconds (0 without samples)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def tester_saturated(self) -> bool:
        """True if the tester used nearly all of its one CPU: it was the bottleneck."""
        return self.cpu_share >= SATURATED_CPU

    @property
    def ok(self) -> bool:
        """True if the run finished and every line and every quit checked out."""
        return not self.error and self.verdict.intact and self.quit_ok == self.pairs


# -- One client ----------------------------------------------------------------


class Client:
    """One connection: its socket, its buffers and where it stands."""

    def __init__(self, number: int, sock: socket.socket) -> None:
        self.number = number
        self.nickname = "u%d" % number
        self.sock = sock
        self.channel: Optional[tls.TLSChannel] = None  # TLS between lines and socket, once shaken hands
        self.incoming = protocol.LineCutter()  # lines exactly as the server sent them
        self.unencrypted = bytearray()  # TLS: lines queued, encrypted by the next write()
        self.unsent = bytearray()  # bytes the socket has not taken yet (ciphertext under TLS)
        self.partner: Optional[Client] = None
        self.leads = False  # the lower number of a pair: pings, and quits
        self.sent = 0  # data lines queued to send
        self.sender = sender_name(number)  # on the lines it sends
        self.expect_from = b""  # the sender of the lines that arrive here
        self.next_seq = 0
        self.sent_at = 0.0  # pingpong: when the line in flight was sent
        self.answered = False  # the server has replied to the nickname
        self.counted = False  # its lines decide when the run is over
        self.closed = False
        self.quit_notice = False

    def queue(self, data: bytes) -> None:
        """Append bytes to send; the loop writes them when the socket takes them."""
        if self.channel is None:
            self.unsent += data
        else:
            self.unencrypted += data

    def write(self) -> None:
        """Send as much of the unsent bytes as the socket takes now, encrypting what was queued first."""
        if self.channel is not None:  # even with nothing queued: reading may have left TLS bytes to send
            self.unsent += self.channel.encrypt(self.unencrypted)
            del self.unencrypted[:]
        if self.unsent:
            try:
                sent = self.sock.send(self.unsent)
            except BlockingIOError:
                return  # the kernel's buffer is full; the loop waits for EVENT_WRITE
            del self.unsent[:sent]

    def receive(self) -> tls.Decrypted:
        """Return what the socket holds, decrypted under TLS; raise ConnectionResetError on a reset.

        A recv() that brings only part of a TLS record gives no plaintext
        yet, which is not the end of the stream: hence ``ended``.
        """
        data = self.sock.recv(RECV_SIZE)
        if self.channel is None:
            return tls.Decrypted(data, ended=not data, reply_pending=False)
        return self.channel.decrypt(data)


# -- The run ---------------------------------------------------------------------


class LoadRun:
    """Drive ``2 * pairs`` clients through matching, traffic and quitting."""

    def __init__(
        self, host: str, port: int, options: argparse.Namespace, context: Optional[ssl.SSLContext] = None
    ) -> None:
        self.address = (host, port)
        self.options = options
        self.context = context  # every client speaks TLS with it; None for plain TCP
        self.report = Report(options.mode, options.pairs, options.messages, options.size)
        self.verdict = self.report.verdict
        self.selector = selectors.DefaultSelector()
        self.clients: List[Client] = []
        self.by_nickname: Dict[str, Client] = {}
        self.deadline = 0.0
        self.unmatched = 0
        self.unanswered = 0  # connected, nickname sent, no reply yet
        self.busy = 0  # clients still sending or expecting data lines
        self.writers: Set[Client] = set()  # clients with bytes queued since the last write_all()
        self.phase = "match"

    def run(self) -> Report:
        """Run every phase within the timeout and return the report."""
        self.deadline = time.monotonic() + self.options.timeout
        try:
            self.match_all()
            self.exchange()
            self.quit_all()
        except (OSError, TimeoutError) as error:
            if isinstance(error, (ConnectionRefusedError, tls.TLSError)) and not self.clients:
                raise  # nothing listens there, or no TLS: the command line says so in one line
            self.report.error = "%s: %s" % (type(error).__name__, error)
        finally:
            self.close_all()
        return self.report

    # -- Phase 1: connect, name, wait until every client is matched -------------

    def match_all(self) -> None:
        """Connect every client and wait until the server has paired them all (§7.1)."""
        start = time.monotonic()
        total = 2 * self.options.pairs
        self.unmatched = total
        while self.unmatched:
            while len(self.clients) < total and self.unanswered < MAX_CONNECTING:
                self.connect(len(self.clients))
            self.poll("waiting for %d of %d clients to be matched" % (self.unmatched, total))
        self.report.match_seconds = time.monotonic() - start
        self.report.matched = True

    def connect(self, number: int) -> None:
        """Open one client connection, over TLS if asked, and send its nickname."""
        sock = socket.create_connection(self.address, timeout=max(0.1, self.deadline - time.monotonic()))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = Client(number, sock)
        early = self.shake_hands(client) if self.context is not None else NOTHING_YET
        sock.setblocking(False)
        self.clients.append(client)
        self.by_nickname[client.nickname] = client
        self.selector.register(sock, selectors.EVENT_READ, client)
        client.queue(client.nickname.encode("ascii") + protocol.LF)
        self.write(client)
        self.unanswered += 1
        self.take(client, early)

    def shake_hands(self, client: Client) -> tls.Decrypted:
        """Do a client's TLS handshake by the run's deadline; return what came with its end.

        Raise mechat.tls.TLSError, whose message is one line, if it fails;
        the socket is closed then.
        """
        assert self.context is not None
        client.channel = tls.TLSChannel(self.context, server_side=False, server_hostname=self.address[0])
        try:
            return client.channel.handshake(client.sock, self.deadline)
        except OSError:
            client.sock.close()
            raise

    def on_notice(self, client: Client, line: bytes) -> None:
        """Handle a server notice: #wait and #matched_to_ while matching, #user_quit at the end."""
        text = line.decode("ascii", "replace")
        if self.phase == "match" and text == protocol.Notice.WAIT.value:
            self.answer(client)
        elif self.phase == "match" and text.startswith(protocol.Notice.MATCHED_TO.value):
            self.pair(client, text[len(protocol.Notice.MATCHED_TO.value) :])
        elif self.phase == "quit" and text == protocol.Notice.USER_QUIT.value and not client.leads:
            client.quit_notice = True
        else:
            self.unexpected(client, line)

    def pair(self, client: Client, partner_nickname: str) -> None:
        """Record a match; the lower-numbered client of a pair leads it."""
        partner = self.by_nickname.get(partner_nickname)
        if partner is None or client.partner is not None:
            self.unexpected(client, b"#matched_to_" + partner_nickname.encode())
            return
        self.answer(client)
        client.partner = partner
        client.leads = client.number < partner.number
        self.unmatched -= 1

    def answer(self, client: Client) -> None:
        """Note the server's first reply to a client, which frees a connecting slot."""
        if not client.answered:
            client.answered = True
            self.unanswered -= 1

    # -- Phase 2: the traffic -----------------------------------------------------

    def exchange(self) -> None:
        """Send every line of the run and check every line that comes back."""
        self.phase = "run"
        pingpong = self.options.mode == "pingpong"
        for client in self.clients:
            assert client.partner is not None
            lead = client if client.leads else client.partner
            client.expect_from = lead.sender if pingpong else client.partner.sender
            client.counted = client.leads or not pingpong
            self.busy += client.counted
        wall, cpu = time.monotonic(), time.process_time()
        for client in self.clients:
            self.send_more(client)
        self.write_all()
        while self.busy:
            self.poll("%d clients still busy" % self.busy)
        self.report.run_seconds = time.monotonic() - wall
        self.report.cpu_share = (time.process_time() - cpu) / max(self.report.run_seconds, 1e-9)

    def send_more(self, client: Client) -> None:
        """Queue the lines this client may send now, then write them."""
        messages = self.options.messages
        if self.options.mode == "pingpong":
            if client.leads and client.sent < messages and client.sent == client.next_seq:
                client.sent_at = time.perf_counter()
                self.send_line(client)
        else:
            assert client.partner is not None
            window = client.partner.next_seq + self.options.window
            while client.sent < min(messages, window):
                self.send_line(client)

    def send_line(self, client: Client) -> None:
        """Queue the client's next numbered line."""
        client.queue(numbered.make_line(client.sender, client.sent, size=self.options.size) + protocol.LF)
        client.sent += 1
        self.writers.add(client)

    def on_data(self, client: Client, line: bytes) -> None:
        """Check a numbered line; echo it (pingpong partner) or count it."""
        if self.phase != "run" or client.partner is None:
            self.unexpected(client, line)
            return
        if not self.check(client, line):
            return
        if self.options.mode == "flood":
            self.report.count += 1
            self.send_more(client.partner)  # the partner's window moved
        elif client.leads:
            self.report.latencies.append(time.perf_counter() - client.sent_at)
            self.report.count += 1
            self.send_more(client)
        else:
            client.queue(line + protocol.LF)
            self.writers.add(client)
        self.update_busy(client)

    def check(self, client: Client, line: bytes) -> bool:
        """Count a data line as delivered, lost, duplicated or corrupt; True if in order."""
        header = numbered.read_line(line)
        if header is None or len(line) != self.options.size:
            # A damaged line takes the place of the one expected, so that
            # it is counted once and the run goes on.
            self.verdict.corrupt += 1
            self.verdict.note("corrupt line at %s: %r" % (client.nickname, line[:60]))
            client.next_seq += 1
            self.update_busy(client)
            return False
        sender, seq = header
        if sender != client.expect_from:
            self.verdict.wrong_sender += 1
            self.verdict.note("%s got a line from sender %r" % (client.nickname, sender))
            return False
        if seq < client.next_seq:
            self.verdict.duplicated += 1
            self.verdict.note("%s got line %d again or late" % (client.nickname, seq))
            return False
        if seq > client.next_seq:
            self.verdict.lost += seq - client.next_seq
            self.verdict.note("%s missed lines %d to %d" % (client.nickname, client.next_seq, seq - 1))
        client.next_seq = seq + 1
        self.verdict.delivered += 1
        return True

    def update_busy(self, client: Client) -> None:
        """Count a client as done once it has received every line it is owed."""
        if client.counted and client.next_seq >= self.options.messages:
            client.counted = False
            self.busy -= 1

    # -- Phase 3: /quit, #user_quit, close (§8) --------------------------------------

    def quit_all(self) -> None:
        """Have each leader quit; each partner must get #user_quit, then both are closed."""
        self.phase = "quit"
        for client in self.clients:
            if client.leads:
                client.queue(protocol.quit_command + protocol.LF)
                self.writers.add(client)
        self.write_all()
        while not all(client.closed for client in self.clients):
            self.poll("waiting for the server to close every connection after /quit")
        self.report.quit_ok = sum(1 for client in self.clients if not client.leads and client.quit_notice)

    # -- The loop --------------------------------------------------------------------

    def poll(self, doing: str) -> None:
        """Wait for sockets to be ready once, and handle them; raise on timeout."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out after %g s %s" % (self.options.timeout, doing))
        for key, events in self.selector.select(min(remaining, 1.0)):
            client: Client = key.data
            if events & selectors.EVENT_WRITE:
                self.write(client)
            if events & selectors.EVENT_READ:
                self.read(client)
        self.write_all()

    def read(self, client: Client) -> None:
        """Receive what a client's socket holds and handle each line."""
        try:
            received = client.receive()
        except ConnectionResetError:
            received = tls.Decrypted(b"", ended=True, reply_pending=False)
        self.take(client, received)

    def take(self, client: Client, received: tls.Decrypted) -> None:
        """Handle each line that arrived, then the end of the stream if it came too."""
        for line in client.incoming.cut(received.plaintext):
            if line.startswith(protocol.NOTICE_PREFIX):
                self.on_notice(client, line)
            else:
                self.on_data(client, line)
        if received.ended:
            self.on_close(client)
        elif received.reply_pending:  # TLS owes the server an answer (a KeyUpdate's): the next write sends it
            self.writers.add(client)

    def write_all(self) -> None:
        """Write what every client queued while the last batch of reads was handled.

        Coalescing like this sends all the lines one recv() brought about
        with one send() per socket, as the server does.
        """
        writers, self.writers = self.writers, set()
        for client in writers:
            self.write(client)

    def write(self, client: Client) -> None:
        """Send a client's unsent bytes; watch for writability while some are left."""
        client.write()
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.unsent else 0)
        if not client.closed and self.selector.get_key(client.sock).events != want:
            self.selector.modify(client.sock, want, client)

    def on_close(self, client: Client) -> None:
        """Note a connection the server closed; only expected after /quit (§8)."""
        if self.phase != "quit":
            raise ConnectionError(
                errno.ECONNRESET, "server closed %s during the %s phase" % (client.nickname, self.phase)
            )
        client.closed = True
        self.selector.unregister(client.sock)

    def unexpected(self, client: Client, line: bytes) -> None:
        """Count a line nobody should have received at this point."""
        self.verdict.unexpected += 1
        self.verdict.note("%s got unexpected %r during %s" % (client.nickname, line[:60], self.phase))

    def close_all(self) -> None:
        """Close every socket and count lines that never arrived."""
        if self.phase != "match":
            for client in self.clients:
                self.verdict.missing += max(0, self.options.messages - client.next_seq)
        for client in self.clients:
            client.sock.close()
        self.selector.close()


# -- Setting up, and saying what happened -------------------------------------------


def describe(report: Report) -> List[str]:
    """Return the report as lines of text for a person."""
    out = [
        "mechat load: %s, %d pairs, %d messages each, %d-octet lines"
        % (report.mode, report.pairs, report.messages, report.size),
    ]
    if report.matched:
        out += measurements(report)
    else:
        out.append("  not every client was matched, so no lines were sent")
    if report.error:
        out.append("  ERROR: " + report.error)
    out.append("  result: " + ("OK" if report.ok else "FAILED"))
    return out


def measurements(report: Report) -> List[str]:
    """Return what a run that got past matching measured and checked, as lines of text."""
    unit = "round trips/s" if report.mode == "pingpong" else "lines/s"
    out = [
        "  all %d clients matched in %.3f s" % (2 * report.pairs, report.match_seconds),
        "  throughput: %.0f %s (%d in %.3f s)" % (report.throughput, unit, report.count, report.run_seconds),
    ]
    if report.latencies:
        out.append(
            "  round trip: p50 %.0f us, p99 %.0f us, max %.0f us"
            % (report.percentile(50) * 1e6, report.percentile(99) * 1e6, max(report.latencies) * 1e6)
        )
    v = report.verdict
    out.append(
        "  lines: %d delivered, %d lost, %d duplicated or reordered, %d corrupt, %d from the wrong sender,"
        " %d missing, %d unexpected"
        % (v.delivered, v.lost, v.duplicated, v.corrupt, v.wrong_sender, v.missing, v.unexpected)
    )
    out.extend("    " + sample for sample in v.samples)
    out.append("  quit: %d of %d partners got #user_quit and the close" % (report.quit_ok, report.pairs))
    out.append("  load tester CPU: %.0f%% of one core while the lines flowed" % (report.cpu_share * 100))
    if report.tester_saturated:
        out.append(
            "  WARNING: the load tester itself was the bottleneck (one CPU busy): the server may be"
            " faster than these numbers; use a compiled load generator to measure it"
        )
    return out


def run(
    host: str, port: int, options: argparse.Namespace, context: Optional[ssl.SSLContext] = None
) -> Report:
    """Run one load test against ``host:port``, over TLS if given a context, and return its report.

    Raise ConnectionRefusedError if nothing listens there, and
    mechat.tls.TLSError if the first client cannot set up TLS.
    """
    if options.size < MIN_SIZE or options.size > protocol.MAX_LINE_OCTETS:
        raise ValueError("--size must be %d to %d octets" % (MIN_SIZE, protocol.MAX_LINE_OCTETS))
    warning = tuning.raise_file_limit(2 * options.pairs)
    report = LoadRun(host, port, options, context).run()
    if warning and report.error:
        report.error += " (" + warning + ")"
    return report
