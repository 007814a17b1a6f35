"""Benchmark protocol 2's fan-out: /all, /msg, a room, and one client that never reads.

    python bench/fanout.py                                  # every config, default sizes
    python bench/fanout.py --only all --clients 100 --messages 20
    python bench/fanout.py --only nonreader --pin           # server on CPU 0, load on CPU 1
    python bench/fanout.py --only room --reps 5 --pin --quiet-wait 120   # a room of 300, +/- a non-reader

Each run starts its own ``python -m mechat serve`` (flood control and the
/all rate off, since the load sends far above any human rate), connects
``--clients`` clients named ``u0``, ``u1`` ..., waits until the server has
answered every nickname (``#wait`` or ``#matched_to_``: they pair up, which
changes nothing here), sends the traffic of one config, stops the server by
its PID and appends one JSON line to ``bench/results.jsonl``:

* ``all``: the first ``--senders`` clients each send ``--messages`` lines
  with ``/all``; every other client must receive each of them.
* ``dm``: every client sends ``--messages`` lines with ``/msg``, each to
  another client drawn at random (``--seed``).
* ``nonreader``: ``all`` twice, once as it is and once with one more client
  that names itself, reads the answer, and then never reads again.  /all
  shows the harm best: every line reaches the non-reader, so its buffers
  fill within a few hundred lines and from then on every line of every
  sender must wait for it or be queued for it, while a direct message
  reaches it only when the draw names it.
  The non-reader connects as a client across a network would: it offers a
  small receive window (``--stall-buffer``) and an Ethernet segment size
  (``--stall-mss``).  The kernel sizes the server's send buffer from the
  segment size, and at loopback's 64 KiB segments it would take some 3 MB
  for the non-reader before a write blocked, against 70 to 90 KB for a
  client on Ethernet.  The default 100 lines of 200 octets from each of
  10 senders make some 215 KB.
* ``room``: ``--clients`` (300 here) join one room, one at a time (two
  clients waiting at once would be paired, and a client that joins from a
  pair closes its partner, §5.10); the first creates it.  Then the first
  ``--senders`` send ``--messages`` plain lines each, and every other
  member must receive each as ``#in_ROOM_SENDER``.  Like ``nonreader`` it
  runs twice, the second time with a non-reader that joins the room last
  and then stops reading.  It is owed 200 lines of some 217 octets from
  each sender, 434 KB: more than its send queue (256 KiB) and the 80 KB or
  so that the kernel took for it here, so the server drops it (§9.6) and
  the others get ``#exited_``, which they must, once each.

A sender keeps at most ``--window`` commands without their receipt
(``#broadcast_N`` or ``#sent_to_NICK``), so the figures describe a server
kept busy, not a backlog that the load piled up in front of it.  A line in
a room has no receipt (§7.6): there a line counts as received once every
other member has it, and that moment also times it "to the last member".

Every line proves its own delivery.  Its text is a numbered line
(:mod:`mechat.numbered`): a CRC-32, the sender's nickname, its number among
the lines from that sender to that recipient, and the time it was sent.  A
recipient checks the checksum, that the sender in the line is the sender in
the notice, and that the numbers from each sender run 0, 1, 2 ... with none
skipped or repeated; at the end every client must have all it was owed.
Latency runs from the moment the command is queued to the recv() that
brought the line, both read from one clock in this one process.

The shape is ``mechat load``'s (:mod:`mechat.load`): one thread, one
:mod:`selectors` loop over non-blocking sockets.  The load can then use at
most one CPU and measures how much of it it used ("load CPU"); near 100 %
the figures describe this script, not the server.  The server's own CPU use
comes from /proc.  A client the server closes during the traffic (§9.4) is
counted and left out, and the lines it was still owed are reported apart
from the lost ones.  The non-reader's fate (kept, or dropped once it fell
too far behind) is learnt after the run by reading what it was sent.

The JSON rows carry ``placement``, ``config`` and ``srv`` like those of
``run_matrix.py``, which shares the file: its summary groups by those and
shows only its own configs, so these rows never break or change its tables.
"""

import argparse
import glob
import hashlib
import json
import os
import platform
import selectors
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from random import Random
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # measure the mechat of this working tree, installed or not

from server_process import TICKS, ServerProcess  # noqa: E402

from mechat import load, numbered, protocol, tuning  # noqa: E402
from mechat.protocol import LF, SP, Notice  # noqa: E402

#: The server's flags: flood control and the /all rate off (§9.5, §9.7).
SERVER_FLAGS = ["--max-rate", "0", "--all-rate", "0"]

#: Where --pin puts the server and the load.
SERVER_CPU, LOAD_CPU = 0, 1

#: The nickname of the client that never reads.
NON_READER = b"nonreader"

#: Octets of receive buffer the non-reader asks for (SO_RCVBUF, before it
#: connects, so that the window it offers stays that small).  Linux doubles it.
STALL_BUFFER = 4096

#: The segment size the non-reader announces (TCP_MAXSEG, before it
#: connects): Ethernet's.  With it and STALL_BUFFER, the server's kernel took
#: 70 to 90 KB for it before a write blocked, against 2.8 to 3.0 MB at
#: loopback's own 65,483 (measured on this 2-core VM, Linux 6, default
#: tcp_wmem, writes of 80 to 2,000 octets).
STALL_MSS = 1460

#: Seconds spent reading what the non-reader was sent, after the run.
DRAIN_SECONDS = 5.0

#: With --quiet-wait, a run starts once other processes used less than this
#: share of one CPU over a second (the kit's run.py waits the same way).
QUIET_CPU = 0.15

#: A run during which other processes used more than this share of one CPU
#: is redone, up to --redo times (run_matrix.py's BUSY_FOREIGN).
BUSY_OTHERS = 0.25

RESULTS = os.path.join(HERE, "results.jsonl")

WAIT = Notice.WAIT.value.encode()
MATCHED_TO = Notice.MATCHED_TO.value.encode()
USER_QUIT = Notice.USER_QUIT.value.encode()

#: The room of the ``room`` config, and what its members send and hear (§5.8, §5.10, §7.6).
ROOM = b"bench"
CREATE = protocol.create_verb + SP + ROOM + LF
JOIN = protocol.join_verb + SP + ROOM + LF
ROOM_CREATED = Notice.ROOM_CREATED.value.encode() + ROOM
JOINED = Notice.JOINED.value.encode() + ROOM
ENTERED = Notice.ENTERED.value.encode() + ROOM + b"_"
NON_READER_EXITED = Notice.EXITED.value.encode() + ROOM + b"_" + NON_READER

Row = Dict[str, Any]


# -- What is sent ------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """One kind of traffic: its command, and the two notices that answer it (§5.5, §5.6, §7.6)."""

    verb: bytes  # b"": a plain message, as in a room
    delivery: bytes  # what each recipient gets, followed by the sender's nickname, SP and the text
    receipt: bytes  # what the sender gets for each command; b"": nothing, as in a room


BROADCAST = Pattern(protocol.all_verb, Notice.ALL_FROM.value.encode(), Notice.BROADCAST.value.encode())
DIRECT = Pattern(protocol.msg_verb, Notice.FROM.value.encode(), Notice.SENT_TO.value.encode())
IN_ROOM = Pattern(b"", Notice.IN.value.encode() + ROOM + b"_", b"")


@dataclass(frozen=True)
class Config:
    """One configuration, with defaults that keep a run under ~30 s on a 2-core machine."""

    pattern: Pattern
    messages: int  # commands per sender
    window: int  # commands a sender may have sent without their receipt
    size: int  # octets of each line's text
    non_reader: bool  # run twice: without, then with, a client that never reads
    clients: int = 1000
    server_flags: Tuple[str, ...] = ()  # beyond SERVER_FLAGS


CONFIGS: Dict[str, Config] = {
    "all": Config(BROADCAST, messages=100, window=8, size=64, non_reader=False),
    "dm": Config(DIRECT, messages=20, window=4, size=64, non_reader=False),
    "nonreader": Config(BROADCAST, messages=100, window=8, size=200, non_reader=True),
    # --max-members: room for the 300 and the non-reader whatever the default.
    "room": Config(
        IN_ROOM,
        messages=200,
        window=8,
        size=200,
        non_reader=True,
        clients=300,
        server_flags=("--max-members", "1000"),
    ),
}


#: TCP_MAXSEG is missing on Windows; there the non-reader keeps the system's segment size.
HAVE_MAXSEG = hasattr(socket, "TCP_MAXSEG")


def stalling_socket(receive_buffer: int, mss: int) -> socket.socket:
    """Return a socket that will offer this receive buffer and segment size (0: the system's)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    if mss and HAVE_MAXSEG:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    return sock


def machine_cpu_seconds() -> Optional[float]:
    """Return the CPU time all processes have used since boot, from /proc/stat; None where there is none.

    Less this script's and the server's, it says how much others took from
    a run on a shared machine.  Idle, I/O wait and the time the hypervisor
    stole are left out: none of them is a process here working.
    """
    try:
        with open("/proc/stat") as stat:
            ticks = [int(count) for count in stat.readline().split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = ticks
    return (user + nice + system + irq + softirq) / TICKS


def wait_for_quiet(seconds: float) -> Optional[float]:
    """Wait at most ``seconds`` until others use under QUIET_CPU; return their share in the last second.

    None where /proc/stat is missing.  The server of the run before has
    stopped by then, so all the CPU used but this script's is others'.
    """
    deadline, share = time.monotonic() + seconds, None
    while time.monotonic() < deadline and (share is None or share >= QUIET_CPU):
        machine, own = machine_cpu_seconds(), time.process_time()
        time.sleep(1.0)  # a share of CPU needs an interval to be measured over
        now = machine_cpu_seconds()
        if machine is None or now is None:
            return None
        share = now - machine - (time.process_time() - own)
    return share


def sent_time(text: bytes) -> int:
    """Return the send time, in ns, that a numbered line carries after its number."""
    return int(text.split(numbered.SEPARATOR, 4)[3])


# -- One client ----------------------------------------------------------------------


class Client:
    """One measured connection: its socket, what it sends, and what it is owed."""

    def __init__(self, number: int, sock: socket.socket) -> None:
        self.nickname = b"u%d" % number
        self.name = self.nickname.decode()  # for the report
        self.sock = sock
        self.incoming = protocol.LineCutter()
        self.unsent = bytearray()  # bytes the socket has not taken yet
        self.answered = False  # the server has answered its nickname (§7.1)
        self.closed = False  # the server closed it
        self.plan: List[Optional[Client]] = []  # the recipient of each command; None: everyone
        self.sent = 0  # commands queued
        self.receipts = 0
        self.numbered: Dict[bytes, int] = {}  # lines numbered so far, per recipient (b"": everyone)
        self.owed = 0  # lines it must receive
        self.accounted = 0  # lines it received in order, or learnt were lost
        self.next_from: Dict[bytes, int] = {}  # per sender: the number of the next line

    @property
    def sending(self) -> bool:
        """True while some of its commands have no receipt yet."""
        return self.receipts < len(self.plan)

    @property
    def receiving(self) -> bool:
        """True while it is owed lines it has not received."""
        return self.accounted < self.owed


# -- What a run found ------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run measured and checked."""

    connect_s: float = 0.0  # start to every nickname answered
    run_s: float = 0.0  # first command sent to last line received
    latencies: "array[int]" = field(default_factory=lambda: array("q"))  # ns, one per line delivered
    tester_cpu: Optional[float] = None  # this process's CPU time / wall time during the traffic
    server_cpu: Optional[float] = None  # the server's, likewise
    others_cpu: Optional[float] = None  # every other process's on the machine, likewise
    commands: int = 0
    receipts: int = 0
    owed: int = 0
    closed: int = 0  # measured clients the server closed
    owed_to_closed: int = 0  # lines those clients were still owed
    non_reader: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)  # a config's own figures, for its row
    verdict: load.Verdict = field(default_factory=load.Verdict)
    error: str = ""

    @property
    def lines_per_s(self) -> float:
        """Lines delivered a second, first send to last receipt."""
        return self.verdict.delivered / self.run_s if self.run_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True if the run finished, every line arrived intact and in order, and no client was closed."""
        return not self.error and self.verdict.intact and self.closed == 0


def percentiles(latencies: "array[int]") -> Dict[str, float]:
    """Return p50, p90, p99, p99.9, max and mean of latencies in ns, as microseconds."""
    ordered = sorted(latencies)
    if not ordered:
        return {}

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1000, 1)

    summary = {"p50": at(50), "p90": at(90), "p99": at(99), "p999": at(99.9)}
    return dict(summary, max=round(ordered[-1] / 1000, 1), mean=round(sum(ordered) / len(ordered) / 1000, 1))


# -- One run ------------------------------------------------------------------------------


class FanoutRun:
    """Connect the clients, send every planned command, and check every line delivered."""

    def __init__(
        self,
        address: Tuple[str, int],
        config: Config,
        options: argparse.Namespace,
        server_cpu: Callable[[], Optional[float]],
        with_non_reader: bool,
    ) -> None:
        self.address = address
        self.pattern = config.pattern
        self.total = options.clients or config.clients  # measured clients
        self.messages = options.messages or config.messages
        self.window = options.window or config.window
        self.size = options.size or config.size
        self.options = options
        self.server_cpu = server_cpu
        self.with_non_reader = with_non_reader
        self.outcome = Outcome()
        self.verdict = self.outcome.verdict
        self.selector = selectors.DefaultSelector()
        self.clients: List[Client] = []
        self.writers: Set[Client] = set()  # clients with bytes queued since the last write_all()
        self.unanswered = 0  # clients whose nickname the server has not answered yet
        self.busy = 0  # unfinished tasks: a client still sending, or still owed lines
        self.non_reader: Optional[socket.socket] = None
        self.phase = "connect"
        self.deadline = 0.0
        #: At the start of the traffic: wall clock, own CPU, the server's, the whole machine's.
        self.started: Tuple[float, float, Optional[float], Optional[float]] = (0.0, 0.0, None, None)
        self.first_send = self.last_delivery = 0  # perf_counter_ns()

    def run(self) -> Outcome:
        """Run every phase within --timeout and return what it found; close_all() closes the clients."""
        self.deadline = time.monotonic() + self.options.timeout
        try:
            self.connect_all()
            if self.with_non_reader:
                self.add_non_reader()
            self.plan()
            self.traffic()
        except (OSError, TimeoutError) as error:
            self.outcome.error = "%s: %s" % (type(error).__name__, error)
        finally:
            self.sum_up()
            self.drain_non_reader()
        return self.outcome

    # -- Connecting ------------------------------------------------------------------------

    def connect_all(self) -> None:
        """Connect every client and send its nickname; return once the server has answered each (§7.1)."""
        start = time.monotonic()
        total = self.total
        while len(self.clients) < total or self.unanswered:
            while len(self.clients) < total and self.unanswered < load.MAX_CONNECTING:
                self.connect(len(self.clients))
            self.write_all()
            self.poll("waiting for the server to answer %d nicknames" % self.unanswered)
        self.outcome.connect_s = time.monotonic() - start

    def connect(self, number: int) -> Client:
        """Open one client connection and queue its nickname."""
        sock = socket.create_connection(self.address, timeout=self.remaining())
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        client = Client(number, sock)
        self.clients.append(client)
        self.selector.register(sock, selectors.EVENT_READ, client)
        self.queue(client, client.nickname + LF)
        self.unanswered += 1
        return client

    #: What the non-reader sends, one answer due for each line, before it stops reading.
    non_reader_lines: Tuple[bytes, ...] = (NON_READER + LF,)

    def add_non_reader(self) -> None:
        """Connect the client that names itself, reads the answers, and then never reads again."""
        sock = self.non_reader = stalling_socket(self.options.stall_buffer, self.options.stall_mss)
        sock.settimeout(self.remaining())
        sock.connect(self.address)
        sock.sendall(b"".join(self.non_reader_lines))
        answers, due = b"", len(self.non_reader_lines)
        while answers.count(LF) < due and len(answers) <= due * protocol.MAX_LINE_OCTETS:
            piece = sock.recv(protocol.MAX_LINE_OCTETS)
            if not piece:
                raise ConnectionError("the server closed the non-reader before answering it")
            answers += piece
        self.outcome.non_reader.update(
            nickname=NON_READER.decode(), answer=answers.split(LF)[due - 1].decode("ascii", "replace"),
            receive_buffer=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            mss=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) if HAVE_MAXSEG else None,
        )  # fmt: skip

    # -- The traffic -------------------------------------------------------------------------

    def plan(self) -> None:
        """Decide whom every command goes to, and so how many lines each client is owed."""
        if self.pattern is DIRECT:
            draw = Random(self.options.seed)
            for number, sender in enumerate(self.clients):
                for _ in range(self.messages):
                    other = draw.randrange(len(self.clients) - 1)
                    recipient = self.clients[other + (other >= number)]  # anyone but the sender
                    sender.plan.append(recipient)
                    recipient.owed += 1
        else:  # everyone (/all), or every member (a room), but the sender
            senders = self.clients[: self.options.senders]
            for sender in senders:
                sender.plan = [None] * self.messages
            for client in self.clients:
                client.owed = self.messages * (len(senders) - (client in senders))
        self.busy = sum(bool(client.plan) + bool(client.owed) for client in self.clients)
        self.outcome.commands = sum(len(client.plan) for client in self.clients)
        self.outcome.owed = sum(client.owed for client in self.clients)

    def traffic(self) -> None:
        """Send every planned command, each sender within its window, until every line is accounted for."""
        self.phase = "traffic"
        self.started = (time.monotonic(), time.process_time(), self.server_cpu(), machine_cpu_seconds())
        for client in self.clients:
            self.send_more(client)
        self.write_all()
        while self.busy:
            self.poll("with %d clients still sending or owed lines" % self.busy)

    def send_more(self, client: Client) -> None:
        """Queue the commands a client may send now: those its window allows."""
        while client.sent < len(client.plan) and client.sent - client.receipts < self.window:
            self.send_command(client, client.plan[client.sent])

    def send_command(self, client: Client, recipient: Optional[Client]) -> None:
        """Queue one /all, /msg or room line whose text is the next numbered line, stamped with the time."""
        key = recipient.nickname if recipient else b""
        number = client.numbered.get(key, 0)
        client.numbered[key] = number + 1
        now = time.perf_counter_ns()
        text = numbered.make_line(client.nickname, number, b"%d:" % now, self.size)
        command = (self.pattern.verb + SP if self.pattern.verb else b"") + (key + SP if recipient else b"")
        self.queue(client, command + text + LF)
        client.sent += 1
        self.first_send = self.first_send or now

    def on_receipt(self, client: Client, argument: bytes) -> None:
        """Count a receipt, which frees a place in the sender's window."""
        if not client.sending:
            self.unexpected(client, self.pattern.receipt + argument)
            return
        recipient = client.plan[client.receipts]
        if recipient is not None and argument != recipient.nickname:
            self.unexpected(client, self.pattern.receipt + argument)  # receipts come in command order
        client.receipts += 1
        self.outcome.receipts += 1
        if client.receipts == len(client.plan):  # its last receipt
            self.busy -= 1
        self.send_more(client)

    def on_delivery(self, client: Client, rest: bytes, now: int) -> None:
        """Check one delivered line, by its checksum, its sender and its number, and time it."""
        nickname, _, text = rest.partition(SP)
        header = numbered.read_line(text)
        if header is None or header[0] != nickname:
            self.verdict.corrupt += header is None
            self.verdict.wrong_sender += header is not None
            self.verdict.note("%s got a damaged or misattributed line %r" % (client.name, rest[:60]))
            return
        expected, number = client.next_from.get(nickname, 0), header[1]
        if self.out_of_order(client, nickname, number, expected):
            return
        client.next_from[nickname] = number + 1
        self.outcome.latencies.append(now - sent_time(text))
        self.verdict.delivered += 1
        self.last_delivery = now
        self.account(client, number + 1 - expected)

    def out_of_order(self, client: Client, sender: bytes, number: int, expected: int) -> bool:
        """Count a line that came again or late (True), or one that skipped some (lost, False)."""
        if number < expected:
            self.verdict.duplicated += 1
            self.verdict.note("%s got line %d from %r again or late" % (client.name, number, sender))
        elif number > expected:
            self.verdict.lost += number - expected
            self.verdict.note("%s missed lines %d-%d from %r" % (client.name, expected, number - 1, sender))
        return number < expected

    def account(self, client: Client, lines: int) -> None:
        """Count lines received or known lost; a client owed nothing more is done."""
        was_receiving = client.receiving
        client.accounted += lines
        if was_receiving and not client.receiving:
            self.busy -= 1

    def on_notice(self, client: Client, line: bytes) -> None:
        """Handle any other line: the answer to a nickname, a partner gone, or a surprise."""
        if line == WAIT or line.startswith(MATCHED_TO):
            if not client.answered:
                client.answered = True
                self.unanswered -= 1
            # else a waiter hears of its partner; pairs play no part here
        elif line == USER_QUIT:
            # The partner was closed (the non-reader, when --clients is odd,
            # is paired; dropped, §9.4); the server closes this one next (§8).
            self.verdict.note("%s got #user_quit during the %s" % (client.name, self.phase))
        else:
            self.unexpected(client, line)

    def unexpected(self, client: Client, line: bytes) -> None:
        """Count a line nobody should have received."""
        self.verdict.unexpected += 1
        self.verdict.note("%s got unexpected %r during the %s" % (client.name, line[:60], self.phase))

    # -- The loop ----------------------------------------------------------------------------

    def remaining(self) -> float:
        """Return the seconds left before --timeout; raise TimeoutError if none are."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out after %g s" % self.options.timeout)
        return remaining

    def poll(self, doing: str) -> None:
        """Wait once for sockets to be ready, and handle them; raise on timeout."""
        try:
            remaining = self.remaining()
        except TimeoutError:
            raise TimeoutError("timed out after %g s %s" % (self.options.timeout, doing)) from None
        for key, events in self.selector.select(min(remaining, 1.0)):
            client: Client = key.data
            if events & selectors.EVENT_WRITE:
                self.write(client)
            if events & selectors.EVENT_READ and not client.closed:
                self.read(client)
        self.write_all()

    def read(self, client: Client) -> None:
        """Receive what a client's socket holds and handle each line."""
        try:
            data = client.sock.recv(load.RECV_SIZE)
        except ConnectionResetError:
            data = b""
        if not data:
            self.on_close(client)
            return
        now = time.perf_counter_ns()
        delivery, receipt = self.pattern.delivery, self.pattern.receipt
        for line in client.incoming.cut(data):
            if line.startswith(delivery):
                self.on_delivery(client, line[len(delivery) :], now)
            elif receipt and line.startswith(receipt):
                self.on_receipt(client, line[len(receipt) :])
            else:
                self.on_notice(client, line)

    def queue(self, client: Client, data: bytes) -> None:
        """Append bytes to send; write_all() sends them with the others queued meanwhile."""
        client.unsent += data
        self.writers.add(client)

    def write_all(self) -> None:
        """Write what every client queued since the last call, one send() per socket."""
        writers, self.writers = self.writers, set()
        for client in writers:
            self.write(client)

    def write(self, client: Client) -> None:
        """Send a client's unsent bytes; watch for writability while some are left."""
        if client.closed:
            return
        try:
            if client.unsent:
                del client.unsent[: client.sock.send(client.unsent)]
        except BlockingIOError:
            pass  # the kernel's buffer is full: wait for EVENT_WRITE
        except (BrokenPipeError, ConnectionResetError):
            self.on_close(client)
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.unsent else 0)
        if self.selector.get_key(client.sock).events != want:
            self.selector.modify(client.sock, want, client)

    def on_close(self, client: Client) -> None:
        """Note a client the server closed: fatal before the traffic, counted and left out during it."""
        client.closed = True
        self.selector.unregister(client.sock)
        if self.phase != "traffic":
            raise ConnectionError("the server closed %s during the %s" % (client.name, self.phase))
        self.outcome.closed += 1
        self.verdict.note("the server closed %s during the traffic" % client.name)
        self.busy -= client.sending + client.receiving

    # -- The end --------------------------------------------------------------------------------

    def sum_up(self) -> None:
        """Count the lines still owed, and the run's time and CPU use, even after a timeout."""
        for client in self.clients:
            owed = max(0, client.owed - client.accounted)
            if client.closed:
                self.outcome.owed_to_closed += owed
            else:
                self.verdict.missing += owed
        wall, cpu, server, machine = self.started
        if self.phase != "traffic" or not self.last_delivery:
            return
        elapsed = max(time.monotonic() - wall, 1e-9)
        own = time.process_time() - cpu
        self.outcome.run_s = (self.last_delivery - self.first_send) / 1e9
        self.outcome.tester_cpu = own / elapsed
        server_now, machine_now = self.server_cpu(), machine_cpu_seconds()
        if server is not None and server_now is not None:
            self.outcome.server_cpu = (server_now - server) / elapsed
            if machine is not None and machine_now is not None:
                others = (machine_now - machine) - own - (server_now - server)
                self.outcome.others_cpu = others / elapsed

    def drain_non_reader(self) -> None:
        """Read what the non-reader was sent, to learn whether the server kept it or dropped it (§9.4)."""
        if self.non_reader is None or self.phase != "traffic":
            return
        owed = self.messages * min(self.options.senders, len(self.clients))
        received, state = 0, "still connected, owed lines still missing after %g s" % DRAIN_SECONDS
        cutter = protocol.LineCutter()
        end = time.monotonic() + DRAIN_SECONDS
        try:
            while received < owed and time.monotonic() < end:
                self.non_reader.settimeout(max(0.01, end - time.monotonic()))
                data = self.non_reader.recv(load.RECV_SIZE)
                if not data:
                    state = "dropped by the server"
                    break
                received += sum(line.startswith(self.pattern.delivery) for line in cutter.cut(data))
            else:
                state = "kept: every line delivered" if received >= owed else state
        except socket.timeout:
            pass
        except OSError as error:
            state = "dropped by the server (%s)" % type(error).__name__
        self.outcome.non_reader.update(owed=owed, received=received, state=state)

    def close_all(self) -> None:
        """Close every socket, once the server has stopped.

        Closed before it, in a room each close would owe every member still
        there an ``#exited_``, and the server would log a drop for every one
        of those it could no longer write to a socket closed meanwhile.
        """
        for client in self.clients:
            client.sock.close()
        if self.non_reader is not None:
            self.non_reader.close()
        self.selector.close()


class RoomRun(FanoutRun):
    """The ``room`` config: every client joins one room, and the first ``--senders`` talk in it (§7.6).

    A line in a room has no receipt, so a sender's window counts the lines
    that some member still lacks: a line is done once every other member
    has it, and the time from its sending to then is its latency "to the
    last member".  ``pending`` holds, per sender, how many members still
    lack each of its lines.  A member's lines from one sender arrive in
    order, so each sender's lines are done in order too.
    """

    non_reader_lines = (NON_READER + LF, JOIN)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.senders: Dict[bytes, Client] = {}
        self.pending: Dict[bytes, array[int]] = {}  # per sender: members still without each line
        self.to_last = array("q")  # ns from sending each line to its last member's recv()
        self.entered = 0  # #entered_ lines the members got
        self.exited = 0  # #exited_ lines about the non-reader

    def connect_all(self) -> None:
        """Connect, name and seat each client in the room, one at a time; the first creates it (§5.8, §5.10).

        One at a time, because two clients waiting at once would be paired,
        and a client that joins from a pair closes its partner.  A client
        counts as answered once it has ``#joined_``.
        """
        start = time.monotonic()
        for number in range(self.total):
            client = self.connect(number)
            self.queue(client, (CREATE if number == 0 else b"") + JOIN)
            while not client.answered:
                self.write_all()
                self.poll("waiting for %s to join the room" % client.name)
        self.outcome.connect_s = time.monotonic() - start

    def add_non_reader(self) -> None:
        """Seat the non-reader in the room last, then leave it unread."""
        super().add_non_reader()
        answer = self.outcome.non_reader["answer"]
        if answer != JOINED.decode():
            raise ConnectionError("the non-reader asked to join the room and was answered %r" % answer)

    def plan(self) -> None:
        """Plan as /all does, and note that every other member lacks every line so far."""
        super().plan()
        members = len(self.clients)
        for sender in self.clients[: self.options.senders]:
            self.senders[sender.nickname] = sender
            self.pending[sender.nickname] = array("i", [members - 1]) * self.messages

    def on_delivery(self, client: Client, rest: bytes, now: int) -> None:
        """Check and time a line as /all's are, then count it, and any it skipped, off its sender's."""
        sender = rest.partition(SP)[0]
        before = client.next_from.get(sender, 0)
        super().on_delivery(client, rest, now)
        after = client.next_from.get(sender, 0)
        if after > before and sender in self.pending:
            self.count_off(sender, before, after)
            if not self.pending[sender][after - 1]:
                self.to_last.append(self.outcome.latencies[-1])  # this member was the last to get it
            self.settle(self.senders[sender])

    def count_off(self, sender: bytes, first: int, end: int) -> None:
        """Count one member off the lines ``first`` to ``end - 1`` of ``sender``."""
        pending = self.pending[sender]
        for number in range(first, end):
            pending[number] -= 1

    def settle(self, sender: Client) -> None:
        """Count as received each line of ``sender`` that every member has; that frees its window."""
        pending = self.pending[sender.nickname]
        while sender.receipts < sender.sent and not pending[sender.receipts]:
            self.on_receipt(sender, b"")

    def on_notice(self, client: Client, line: bytes) -> None:
        """Take the room's notices: the answers while joining, others joining, the non-reader dropped."""
        if client.answered:
            if line.startswith(ENTERED):
                self.entered += 1
            elif line == NON_READER_EXITED:
                self.exited += 1
            else:
                self.unexpected(client, line)
        elif line == JOINED:
            client.answered = True
            self.unanswered -= 1
        elif line != WAIT and not (line == ROOM_CREATED and client is self.clients[0]):
            self.unexpected(client, line)

    def on_close(self, client: Client) -> None:
        """Count a member closed during the traffic off every line it still lacked."""
        super().on_close(client)
        for nickname, sender in self.senders.items():
            if sender is not client:
                self.count_off(nickname, client.next_from.get(nickname, 0), self.messages)
                self.settle(sender)

    def sum_up(self) -> None:
        """Sum up as /all does; add the lines to the last member, and check the joins everyone saw."""
        super().sum_up()
        members, non_reader = len(self.clients), self.non_reader is not None
        owed = members * (members - 1) // 2 + members * non_reader  # each hears of those after it
        if self.entered != owed:
            self.verdict.note("the members got %d #entered_ lines, not %d" % (self.entered, owed))
            self.verdict.missing += max(0, owed - self.entered)
            self.verdict.unexpected += max(0, self.entered - owed)
        run_s, done = self.outcome.run_s, self.outcome.receipts
        self.outcome.extra = {
            "members": members + non_reader, "room_lines": done,
            "room_lines_per_s": round(done / run_s, 1) if run_s > 0 else 0.0,
            "to_last_us": percentiles(self.to_last), "entered": self.entered,
            "exited_non_reader": self.exited,
        }  # fmt: skip


# -- Running configs, and saying what happened --------------------------------------------------


def run_while_busy(name: str, variant: str, rep: int, options: argparse.Namespace, logdir: str) -> Row:
    """Run one config, first waiting --quiet-wait for a quiet machine; redo it while others were busy."""
    for attempt in range(1, options.redo + 2):
        quiet = wait_for_quiet(options.quiet_wait) if options.quiet_wait else None
        row = run_one(name, variant, rep, options, logdir)
        row.update(attempt=attempt, others_cpu_before=rounded(quiet))
        if (row["others_cpu"] or 0) <= BUSY_OTHERS:
            break
    return row


def run_one(name: str, variant: str, rep: int, options: argparse.Namespace, logdir: str) -> Row:
    """Start a server, run one config (with the non-reader or not) against it, stop it; return the row."""
    config = CONFIGS[name]
    log_path = os.path.join(logdir, "%s%s-%d.log" % (name, "-" + variant if variant else "", rep))
    flags = SERVER_FLAGS + list(config.server_flags) + shlex.split(options.server_args)
    server = ServerProcess(flags, log_path, SERVER_CPU if options.pin else None)
    kind = RoomRun if config.pattern is IN_ROOM else FanoutRun
    run: Optional[FanoutRun] = None
    outcome = Outcome()
    source = source_state()
    try:
        port = server.start(ROOT)
        run = kind(("127.0.0.1", port), config, options, server.cpu_seconds, variant == "non-reader")
        outcome = run.run()
    except RuntimeError as error:
        outcome.error = str(error)
    finally:
        exit_status = server.stop()
        if run is not None:
            run.close_all()
    row = make_row(name, variant, options, outcome)
    row.update(outcome.extra)
    row.update(source, rep=rep)
    row.update(argv=server.argv, port=server.port, server_exit=exit_status)
    row["server_drops"] = server.count_in_log(b") dropped: ")
    if not outcome.ok:
        row["server_log_tail"] = server.tail()
    return row


def make_row(name: str, variant: str, options: argparse.Namespace, outcome: Outcome) -> Row:
    """Return one run as a JSON object in the spirit of run_matrix.py's rows."""
    config, verdict = CONFIGS[name], outcome.verdict
    placement = "pinned" if options.pin else "unpinned"
    clients = options.clients or config.clients
    return {
        "label": "%s/fanout-%s%s" % (placement, name, "/" + variant if variant else ""),
        "config": name, "variant": variant, "server": "mechat", "srv": "mechat", "placement": placement,
        "pin": "server CPU %d, load CPU %d" % (SERVER_CPU, LOAD_CPU) if options.pin else "none",
        "bench_argv": sys.argv, "clients": clients,
        "senders": clients if config.pattern is DIRECT else options.senders,
        "messages": options.messages or config.messages, "window": options.window or config.window,
        "size": options.size or config.size, "seed": options.seed,
        "ok": outcome.ok, "error": outcome.error or None, "connect_s": round(outcome.connect_s, 3),
        "run_s": round(outcome.run_s, 3), "commands": outcome.commands, "receipts": outcome.receipts,
        "owed": outcome.owed, "delivered": verdict.delivered, "lines_per_s": round(outcome.lines_per_s, 1),
        "lat_us": percentiles(outcome.latencies),
        "verify": {
            "lost": verdict.lost, "missing": verdict.missing, "dup_or_reordered": verdict.duplicated,
            "corrupt": verdict.corrupt, "bad_sender": verdict.wrong_sender, "unexpected": verdict.unexpected,
        },
        "samples": verdict.samples, "closed_clients": outcome.closed,
        "owed_to_closed": outcome.owed_to_closed, "non_reader": outcome.non_reader or None,
        "tester_cpu": rounded(outcome.tester_cpu), "server_cpu": rounded(outcome.server_cpu),
        "others_cpu": rounded(outcome.others_cpu),
        "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }  # fmt: skip


def rounded(value: Optional[float]) -> Optional[float]:
    """Round a share of a CPU to two places, keeping None."""
    return None if value is None else round(value, 2)


def source_state() -> Dict[str, str]:
    """Say which mechat a run measures: the commit, whether the tree differs, and a digest of the code.

    The digest covers every ``mechat/**/*.py`` as it is on disk, new files
    too, so two runs of a working tree that others are editing can be told
    apart, or matched, after the fact.
    """
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(ROOT, "mechat", "**", "*.py"), recursive=True)):
        with open(path, "rb") as source:
            digest.update(os.path.relpath(path, ROOT).encode() + b"\0" + source.read())
    head, status = git("rev-parse", "--short", "HEAD").strip(), git("status", "--porcelain", "--", "mechat")
    tree = "working tree" if status else "clean"
    return {"tag": head or "unknown", "tree": tree, "source_sha256": digest.hexdigest()[:12]}


def git(*args: str) -> str:
    """Return what a read-only git command prints about this repository ("?" if it cannot run).

    No optional locks: other people work in this tree, and a plain status
    may take the index lock to refresh it.
    """
    try:
        return subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def describe_source(source: Dict[str, str]) -> str:
    """Say in a few words which mechat was measured."""
    return "mechat %s (%s, mechat/ sha256 %s)" % (source["tag"], source["tree"], source["source_sha256"])


TABLE_HEAD = [
    "| run | clients | lines | lines/s | p50 ms | p99 ms | max ms | intact | closed | load CPU"
    " | server CPU | others' CPU |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def table_row(row: Row) -> str:
    """Return one run as a row of the markdown table."""
    lat = row["lat_us"] or {}
    faults = ", ".join("%s %d" % (name, count) for name, count in row["verify"].items() if count)
    intact = "NO: " + faults if faults else "yes"
    return "| %s | %d | %d | %s | %s | %s | %s | %s | %d | %s | %s | %s |" % (
        row["label"].split("/", 1)[1], row["clients"], row["delivered"], "{:,.0f}".format(row["lines_per_s"]),
        *(milliseconds(lat.get(p)) for p in ("p50", "p99", "max")), intact, row["closed_clients"],
        percent(row["tester_cpu"]), percent(row["server_cpu"]), percent(row["others_cpu"]),
    )  # fmt: skip


def milliseconds(microseconds: Optional[float]) -> str:
    """Format a latency in ms, '-' when missing."""
    return "-" if microseconds is None else "%.1f" % (microseconds / 1000)


def percent(share: Optional[float]) -> str:
    """Format a share of one CPU, '-' when missing."""
    return "-" if share is None else "%.0f%%" % (share * 100)


def notes(rows: List[Row]) -> List[str]:
    """Return what the table cannot show: errors, samples of faults, what the non-reader did."""
    out = []
    for row in rows:
        if row["error"]:
            out.append("%s: ERROR %s" % (row["label"], row["error"]))
        for sample in row["samples"]:
            out.append("%s: %s" % (row["label"], sample))
    out += [room_note(row) for row in rows if row.get("to_last_us")]
    for name in dict.fromkeys(row["config"] for row in rows):
        baselines = [r for r in rows if r["config"] == name and r["variant"] == "baseline"]
        stalled = [r for r in rows if r["config"] == name and r["variant"] == "non-reader"]
        if baselines and stalled:
            out += compare(name, baselines, stalled)
    if any((r["tester_cpu"] or 0) >= load.SATURATED_CPU for r in rows):
        out.append("note: load CPU near 100% means this script, not the server, set the pace of that run")
    return out


def room_note(row: Row) -> str:
    """Say what the table cannot about a room run: lines sent a second, and latency to the last member."""
    to_last = row["to_last_us"]
    return "%s rep %d: %s lines in the room a second (%s in all); to the last member p50 %s ms, p99 %s ms" % (
        row["label"], row["rep"], "{:,.0f}".format(row["room_lines_per_s"]), "{:,}".format(row["room_lines"]),
        milliseconds(to_last.get("p50")), milliseconds(to_last.get("p99")),
    )  # fmt: skip


#: The latencies that compare() sets side by side: the row's key, and what it times.
COMPARED = [("lat_us", "each receipt"), ("to_last_us", "to the last member")]


def compare(name: str, baselines: List[Row], stalled: List[Row]) -> List[str]:
    """Say how one client that never reads changed the others' p99 (median over --reps), and its fate."""
    out = []
    for key, timed in COMPARED:
        before, after = (p99s(rows, key) for rows in (baselines, stalled))
        if before and after:
            ratio = statistics.median(after) / statistics.median(before)
            out.append(
                "%s non-reader: the others' p99, %s, was %s ms without it, %s ms with it (%.2f×; median"
                " [min-max] of %d and %d runs)" % (name, timed, spread_ms(before), spread_ms(after), ratio,
                                                   len(before), len(after))
            )  # fmt: skip
    for row in stalled:
        fate = row["non_reader"] or {}
        out.append(
            "%s non-reader: answered %r, receive buffer %s, MSS %s; after the run: %s, %s of %s lines it was"
            " owed read; the server logged %d drop(s)"
            % (name, fate.get("answer"), fate.get("receive_buffer"), fate.get("mss"),
               fate.get("state", "unknown"), fate.get("received"), fate.get("owed"), row["server_drops"]),
        )  # fmt: skip
    return out


def p99s(rows: List[Row], key: str) -> List[float]:
    """Return the p99s, in µs, that some runs have under ``key``."""
    return [row[key]["p99"] for row in rows if row.get(key)]


def spread_ms(values: List[float]) -> str:
    """Format latencies in µs as their median [min-max] in ms."""
    return "%s [%s-%s]" % (milliseconds(statistics.median(values)), milliseconds(min(values)),
                           milliseconds(max(values)))  # fmt: skip


# -- The command line --------------------------------------------------------------------------


#: The numeric flags: flag, type, default, meaning ("%(default)s" shows the default).
FLAGS: List[Tuple[str, Callable[[str], Any], Any, str]] = [
    ("--clients", int, None, "measured clients (default: 1000, room 300)"),
    ("--senders", int, 10, "clients that send /all (default: %(default)s)"),
    ("--messages", int, None, "commands per sender (default: all 100, dm 20, nonreader 100)"),
    ("--window", int, None, "commands a sender may have without a receipt (default: all 8, dm 4)"),
    ("--size", int, None, "octets of each line's text, at least its header (default: 64, nonreader 200)"),
    ("--seed", int, 1, "seed of the DM recipients' draw (default: %(default)s)"),
    ("--reps", int, 1, "runs of each config; nonreader alternates which variant goes first (%(default)s)"),
    ("--timeout", float, 60.0, "seconds before a run gives up (default: %(default)s)"),
    ("--quiet-wait", float, 0.0, "seconds to wait for others to go quiet before each run (%(default)s)"),
    ("--redo", int, 2, "times a run is redone, at most, while others take over 0.25 CPU (%(default)s)"),
    ("--stall-buffer", int, STALL_BUFFER, "the non-reader's SO_RCVBUF, 0: the system's (%(default)s)"),
    ("--stall-mss", int, STALL_MSS, "the non-reader's TCP_MAXSEG, 0: the system's (%(default)s)"),
]


def parse_options(argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(CONFIGS), help="configs to run (default: %(default)s)")
    for flag, kind, default, meaning in FLAGS:
        parser.add_argument(flag, type=kind, default=default, help=meaning)
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, load on CPU 1 (Linux)")
    parser.add_argument("--server-args", default="", help="more server flags, e.g. '--send-queue 65536'")
    parser.add_argument("--jsonl", default=RESULTS, help="append one JSON line per run here; '' for none")
    parser.add_argument("--logdir", help="keep the server logs here (default: a temporary directory)")
    options = parser.parse_args(argv)
    unknown = set(options.only.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(
            "unknown config %s; the configs are %s" % (", ".join(sorted(unknown)), ", ".join(CONFIGS))
        )
    fewest = options.clients or min(CONFIGS[name].clients for name in options.only.split(","))
    if fewest < 2 or not 1 <= options.senders <= fewest or options.timeout <= 0:
        parser.error("need --clients >= 2, 1 <= --senders <= --clients and --timeout > 0")
    if options.reps < 1 or any(n is not None and n < 1 for n in (options.messages, options.window)):
        parser.error("--reps, --messages and --window must be at least 1")
    if options.redo < 0:
        parser.error("--redo must be at least 0")
    if options.size is not None and not 0 < options.size <= protocol.MAX_LINE_OCTETS - 100:
        parser.error("--size must be 1 to %d" % (protocol.MAX_LINE_OCTETS - 100))
    return options


def pin_load(options: argparse.Namespace) -> None:
    """With --pin, move this process to LOAD_CPU, or say why it can't and run unpinned."""
    if not options.pin:
        return
    if not hasattr(os, "sched_setaffinity"):
        print("--pin: this system cannot pin processes (Linux only); running unpinned")
    elif not {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0):
        print("--pin: CPUs %d and %d are not both available; running unpinned" % (SERVER_CPU, LOAD_CPU))
    else:
        os.sched_setaffinity(0, {LOAD_CPU})
        return
    options.pin = False


def plan(options: argparse.Namespace) -> List[Tuple[str, str, int]]:
    """Return every run as (config, variant, rep), rep-major.

    The nonreader pair swaps its order every other rep, so that whatever
    drifts on a shared machine during a sitting weighs on both alike.
    """
    runs = []
    for rep in range(1, options.reps + 1):
        for name in options.only.split(","):
            variants = ["baseline", "non-reader"] if CONFIGS[name].non_reader else [""]
            runs += [(name, variant, rep) for variant in (variants if rep % 2 else variants[::-1])]
    return runs


def main(argv: Optional[List[str]] = None) -> int:
    """Run the chosen configs; print the table; return 0 if every run checked out."""
    options = parse_options(argv)
    most = options.clients or max(CONFIGS[name].clients for name in options.only.split(","))
    warning = tuning.raise_file_limit(most + 1)  # and the non-reader
    if warning:
        print("warning: " + warning)
    pin_load(options)
    print("%s; %s" % (describe_source(source_state()), "pinned" if options.pin else "unpinned"))
    print("\n".join(TABLE_HEAD), flush=True)
    rows: List[Row] = []
    with tempfile.TemporaryDirectory(prefix="fanout-") as scratch:
        for name, variant, rep in plan(options):
            row = run_while_busy(name, variant, rep, options, options.logdir or scratch)
            rows.append(row)
            print(table_row(row), flush=True)
            if options.jsonl:
                with open(options.jsonl, "a") as out:
                    out.write(json.dumps(row, separators=(",", ":")) + "\n")
    print("\n".join(notes(rows)))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
