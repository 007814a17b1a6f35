"""A chat server as a student writes one, with the classic mistakes switchable by name.

The conformance kit names the likely mistake behind each failed check; to
test those diagnoses we need servers that make the mistakes students make.
:mod:`tests.buggy_servers` plants bugs in mechat's own server, whose framing
is right by construction; this is a student's server instead:
``socketserver.ThreadingTCPServer``, one handler thread per connection, all
state on the server object.  With no :class:`Mistake` switched on it speaks
protocol 1 (§2-§8, not the limits of §9 nor the shutdown of §10).  Mistakes
combine: ``no-lf`` with ``keeps-lf`` is the seed's original C server.

``server.lock`` guards the waiting slot and each handler's ``phase`` and
``partner``.  #wait and #matched_to_ are written under it, so nothing relayed
can overtake them (§7.1); relayed lines are written outside it, so the two
directions of a chat flow independently (§7.3).  Each handler's
``write_lock`` keeps two threads from writing to one socket at once.
"""

import argparse
import contextlib
import enum
import re
import signal
import socket
import socketserver
import sys
import threading
from types import FrameType
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from mechat.connection import POLLERR, POLLHUP, POLLRDHUP, poll_for
from mechat.protocol import CR, DEFAULT_PORT, LF, MAX_LINE_OCTETS, LineCutter, Notice, Phase


class Mistake(str, enum.Enum):
    """A classic student mistake; its value is its name on the command line."""

    NO_LF = "no-lf"
    RECV_IS_LINE = "recv-is-line"
    KEEPS_LF = "keeps-lf"
    KEEPS_CR = "keeps-cr"
    CRLF_OUT = "crlf-out"
    ECHO = "echo"
    NO_WAIT = "no-wait"
    CLOSES_ON_REFUSAL = "closes-on-refusal"
    GLUED_NOTICES = "glued-notices"
    IGNORES_EOF = "ignores-eof"
    ONE_AT_A_TIME = "one-at-a-time"


#: The mistakes' names, as serving() and the command line take them.
NAMES = [mistake.value for mistake in Mistake]

#: What each mistake does on the wire.
EFFECTS: Dict[Mistake, str] = {
    Mistake.NO_LF: "no line the server sends ends in LF, notices and relayed messages alike",
    Mistake.RECV_IS_LINE: "each recv() is one line, its trailing LF (and a CR before it) removed",
    Mistake.KEEPS_LF: "each recv() is one line, LF and all: 'alice\\n' is refused as a nickname",
    Mistake.KEEPS_CR: "a CR before the LF stays: 'carol\\r' is refused, a message is relayed with it",
    Mistake.CRLF_OUT: "the server ends its own lines with CR LF",
    Mistake.ECHO: "each relayed message is also sent back to its sender",
    Mistake.NO_WAIT: "#wait is never sent, neither on joining nor for a line while waiting",
    Mistake.CLOSES_ON_REFUSAL: "after any #invalid_* refusal the server closes that connection",
    Mistake.GLUED_NOTICES: "notices have no LF after them; relayed messages keep theirs",
    Mistake.IGNORES_EOF: "when recv() returns no bytes, the connection stays open until the server stops",
    Mistake.ONE_AT_A_TIME: "one client is served at a time: the next is accepted when the first has gone",
}

# nickname = nick-first *29VCHAR, nick-first = %x21-2E / %x30-7E           §3
NICKNAME_RE = re.compile(rb"[\x21-\x2e\x30-\x7e][\x21-\x7e]{0,29}")


def is_message(line: bytes) -> bool:
    """Say whether ``line`` is a message: 1-2000 octets of UTF-8, no '#' first, no control (§4)."""
    try:
        text = line.decode("utf-8")  # strict: refuses overlong forms and surrogates (§2.4)
    except UnicodeDecodeError:
        return False
    has_control = any((char < " " and char != "\t") or char == "\x7f" for char in text)
    return 0 < len(line) <= MAX_LINE_OCTETS and not text.startswith("#") and not has_control


def has_left(client: socket.socket) -> bool:
    """Tell, without reading, whether a client has closed or reset (on Linux; elsewhere, "no")."""
    return poll_for(client, POLLRDHUP | POLLHUP | POLLERR, 0)


class StudentHandler(socketserver.BaseRequestHandler):
    """Serve one client: read its lines and act on each in the phase it is in (§7)."""

    server: "StudentServer"

    def setup(self) -> None:
        """Start in the nickname phase, with nobody to talk to."""
        self.nickname = ""
        self.phase = Phase.NICKNAME  # changed under server.lock
        self.partner: Optional[StudentHandler] = None  # changed under server.lock
        self.write_lock = threading.Lock()  # one write at a time on this socket
        self.finished = False  # set under write_lock: the socket is about to close

    def handle(self) -> None:
        """Act on each line until the client leaves, then tell whoever must know (§8)."""
        for line in self.read_lines():
            # §7.4: once the partner has left, lines are ignored until end of file.
            if self.phase is not Phase.CLOSED and not self.act_on(line):
                break
        self.leave()

    def finish(self) -> None:
        """Let no other thread write to this socket once socketserver closes it."""
        with self.write_lock:
            self.finished = True

    # -- Reading ---------------------------------------------------------------

    def read_lines(self) -> Iterator[bytes]:
        """Yield the client's lines until end of file or a reset (§2.1, §2.2)."""
        cutter = LineCutter()
        while True:
            try:
                data = self.request.recv(4096)
            except OSError:  # a reset
                return
            if not data:
                if Mistake.IGNORES_EOF in self.server.mistakes:
                    self.server.closing.wait()  # the connection stays open until the server stops
                return
            yield from self.lines_in(data, cutter)

    def lines_in(self, data: bytes, cutter: LineCutter) -> List[bytes]:
        """Return the lines that ``data`` completes, as this student's server sees them."""
        mistakes = self.server.mistakes
        if Mistake.KEEPS_LF in mistakes:
            lines = [data]
        elif Mistake.RECV_IS_LINE in mistakes:
            lines = [data.removesuffix(LF)]
        else:
            lines = cutter.cut(data)
        if Mistake.KEEPS_CR in mistakes:
            return lines
        return [line.removesuffix(CR) for line in lines]

    # -- Acting on a line ------------------------------------------------------

    def act_on(self, line: bytes) -> bool:
        """Answer one line; return False when the connection must end."""
        if line.startswith(b"/"):
            return self.command(line)
        if self.phase is Phase.NICKNAME:  # only this thread moves a handler out of it
            if not NICKNAME_RE.fullmatch(line):
                return self.refuse(Notice.INVALID_NICKNAME)
            self.join(line.decode("ascii"))
            return True
        # keeps-cr: the student checks the text without the CR it kept, and relays the line as read.
        checked = line.removesuffix(CR) if Mistake.KEEPS_CR in self.server.mistakes else line
        if not is_message(checked):
            return self.refuse(Notice.INVALID_MESSAGE)
        self.relay(line)
        return True

    def command(self, line: bytes) -> bool:
        """Carry out /quit or /nickname NEW, matched exactly (§5)."""
        if line == b"/quit":
            return False
        verb, space, new_nickname = line.partition(b" ")
        if verb != b"/nickname" or self.phase is Phase.NICKNAME:
            return self.refuse(Notice.INVALID_COMMAND)
        if not (space and NICKNAME_RE.fullmatch(new_nickname)):
            return self.refuse(Notice.INVALID_NICKNAME)
        self.rename(new_nickname.decode("ascii"))
        return True

    def refuse(self, refusal: Notice) -> bool:
        """Send a refusal; return whether the connection stays open (§6)."""
        self.send_notice(refusal)
        return Mistake.CLOSES_ON_REFUSAL not in self.server.mistakes

    def join(self, nickname: str) -> None:
        """Take the waiting slot, or pair with whoever holds it (§7.1)."""
        with self.server.lock:
            self.nickname = nickname
            waiter = self.server.waiting
            if waiter is not None and has_left(waiter.request):
                waiter.phase = Phase.CLOSED  # §7.2: its close came in before its thread woke
                waiter = None
            if waiter is None:
                self.server.waiting, self.phase = self, Phase.WAITING
                self.send_notice(Notice.WAIT)
                return
            self.server.waiting = None
            self.partner, waiter.partner = waiter, self
            self.phase = waiter.phase = Phase.CHATTING
            waiter.send_notice(Notice.MATCHED_TO, nickname)
            self.send_notice(Notice.MATCHED_TO, waiter.nickname)

    def relay(self, message: bytes) -> None:
        """Send a message to the partner, or #wait if there is none yet (§7.2, §7.3)."""
        with self.server.lock:
            if self.phase is Phase.WAITING:
                self.send_notice(Notice.WAIT)
            partner = self.partner if self.phase is Phase.CHATTING else None
        if partner is not None:
            if Mistake.ECHO in self.server.mistakes:
                self.write(message, is_notice=False)
            partner.write(message, is_notice=False)

    def rename(self, new_nickname: str) -> None:
        """Change nickname; tell the partner, if there is one (§5.2)."""
        with self.server.lock:
            self.nickname = new_nickname
            partner = self.partner if self.phase is Phase.CHATTING else None
        self.send_notice(Notice.NICKNAME_CHANGED, new_nickname)
        if partner is not None:
            partner.send_notice(Notice.PARTNER_RENAMED, new_nickname)

    def leave(self) -> None:
        """Give up the waiting slot, or end the chat: the partner gets #user_quit and is closed (§8)."""
        with self.server.lock:
            if self.server.waiting is self:
                self.server.waiting = None  # never handed out once gone (§7.2)
            partner = self.partner if self.phase is Phase.CHATTING else None
            self.phase = Phase.CLOSED
            if partner is not None:
                partner.phase = Phase.CLOSED
        if partner is not None:
            partner.send_notice(Notice.USER_QUIT)
            partner.hang_up()

    # -- Writing ---------------------------------------------------------------

    def send_notice(self, name: Notice, nickname: str = "") -> None:
        """Send one notice of §6 to this client."""
        if name is Notice.WAIT and Mistake.NO_WAIT in self.server.mistakes:
            return
        self.write((name.value + nickname).encode("ascii"), is_notice=True)

    def write(self, line: bytes, is_notice: bool) -> None:
        """Send one line with the server's line end; a client that has gone is ignored."""
        with self.write_lock:
            if self.finished:
                return
            with contextlib.suppress(OSError):  # its own thread will see the end of file
                self.request.sendall(line + self.server.line_end(is_notice))

    def hang_up(self) -> None:
        """Close this client's side for writing; its thread ends at the client's end of file."""
        with self.write_lock:
            if not self.finished:
                with contextlib.suppress(OSError):
                    self.request.shutdown(socket.SHUT_WR)


class StudentServer(socketserver.ThreadingTCPServer):
    """One thread per connection; the waiting slot and the pairings behind one lock."""

    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops connections when a crowd arrives at once

    def __init__(self, address: Tuple[str, int], mistakes: Iterable[str] = ()) -> None:
        unknown = [name for name in mistakes if name not in NAMES]
        if unknown:
            raise ValueError("unknown mistakes %s; the mistakes are %s" % (unknown, ", ".join(NAMES)))
        self.mistakes = frozenset(Mistake(name) for name in mistakes)
        self.lock = threading.Lock()
        self.waiting: Optional[StudentHandler] = None  # the client in the waiting slot
        self.closing = threading.Event()  # set when the server stops: ignores-eof handlers end then
        super().__init__(address, StudentHandler)

    def process_request(self, request: socket.socket, client_address: Tuple[str, int]) -> None:  # type: ignore[override]
        """Serve in a thread of its own, or, one-at-a-time, in the accepting thread itself."""
        if Mistake.ONE_AT_A_TIME not in self.mistakes:
            super().process_request(request, client_address)
            return
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        """Stop listening, and let handlers that ignored an end of file end too."""
        self.closing.set()
        super().server_close()

    def line_end(self, is_notice: bool) -> bytes:
        """Return what follows each line the server sends (§2.1: LF)."""
        if Mistake.NO_LF in self.mistakes or (is_notice and Mistake.GLUED_NOTICES in self.mistakes):
            return b""
        return CR + LF if Mistake.CRLF_OUT in self.mistakes else LF


@contextlib.contextmanager
def serving(*mistakes: str) -> Iterator[int]:
    """Serve on 127.0.0.1 with ``mistakes`` switched on, in a thread; yield the port."""
    server = StudentServer(("127.0.0.1", 0), mistakes)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.socket.getsockname()[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def main(argv: Optional[List[str]] = None) -> int:
    """Serve in the foreground until SIGINT or SIGTERM; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.student_server",
        description="A student-style mechat server, for testing the conformance kit's diagnoses.",
        epilog="mistakes:\n" + "\n".join("  %-18s %s" % (m.value, EFFECTS[m]) for m in Mistake),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument("--mistake", action="append", default=[], choices=NAMES, help="switch a mistake on")
    args = parser.parse_args(argv)
    server = StudentServer(("127.0.0.1", args.port), args.mistake)

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        # shutdown() waits for serve_forever() to return, so it cannot run in this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    print("listening on 127.0.0.1:%d" % server.socket.getsockname()[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
