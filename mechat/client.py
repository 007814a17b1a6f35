"""The mechat terminal client: a reader thread and a writer thread.

Why two threads?  A chat is full duplex: the partner may write at any moment,
and so may you.  A program with one thread has to block somewhere, either in
``input()`` waiting for you or in ``recv()`` waiting for the server.  While it
waits for you, the partner's lines pile up unseen; while it waits for the
server, you cannot type.  Worse, if both ends of a chat block in ``recv()``
waiting for the other to speak first, neither ever will: that is a deadlock.
So each direction gets its own thread, as in the Trio tutorial's echo client:

* the **reader** (:meth:`ChatClient.receive`) turns server lines into
  sentences on the screen;
* the **writer** (:meth:`ChatClient.send_typed`) turns typed lines into
  protocol lines.

They share one small piece of state, the phase the session is in, guarded by
one Condition.  The reader changes it as notices arrive; the writer waits on
it in two places: after sending a nickname, until the server has accepted or
refused it, and while there is no partner yet, so that lines typed early are
held and sent once a partner is found rather than refused with ``#wait``.
The main thread only starts both and waits for the session to end.
"""

import contextlib
import os
import socket
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, List, Optional, TextIO

from mechat import protocol
from mechat.protocol import Notice, Phase

#: Seconds to wait for the server to close after we send /quit.
QUIT_GRACE = 5.0

#: How the client explains each notice (spec §6).  ``{nick}`` is the
#: nickname that the notice carries; ``{partner}`` is the partner's.
SENTENCES = {
    Notice.WAIT: "Waiting for a partner…",
    Notice.MATCHED_TO: "You are now chatting with {nick}. Type /quit to leave.",
    Notice.USER_QUIT: "{partner} has left the chat.",
    Notice.NICKNAME_CHANGED: "You are now known as {nick}.",
    Notice.PARTNER_RENAMED: "{partner} is now known as {nick}.",
    Notice.INVALID_NICKNAME: (
        "That nickname is not allowed: use 1 to 30 letters, digits or punctuation,"
        " with no spaces and no leading /."
    ),
    Notice.INVALID_MESSAGE: (
        "That line was not sent: a message is 1 to 2000 bytes of text and does not start with #."
    ),
    Notice.INVALID_COMMAND: "Unknown command. The commands are /quit and /nickname NEW.",
    Notice.RATE_LIMITED: "You are sending too fast; that line was not sent.",
    Notice.NICKNAME_TIMEOUT: "The server closed the connection: no nickname was chosen in time.",
    Notice.SERVER_FULL: "The server is full. Try again later.",
    Notice.SERVER_SHUTDOWN: "The server is shutting down. Goodbye.",
}

#: Before a nickname is accepted, the only command is /quit (spec §7.1).
NO_COMMANDS_YET = "Choose a nickname first; until then the only command is /quit."

#: Notices after which the server closes the connection (spec §6).
FINAL_NOTICES = (Notice.USER_QUIT, Notice.NICKNAME_TIMEOUT, Notice.SERVER_FULL, Notice.SERVER_SHUTDOWN)


class Screen:
    """Where the reader shows lines: timestamps, colour, and the user's half-typed line."""

    BOLD_CYAN, DIM, RESET = "\x1b[1;36m", "\x1b[2m", "\x1b[0m"

    def __init__(self, out: TextIO, color: bool, interactive: bool) -> None:
        self.out = out
        self.color = color
        self.interactive = interactive
        self.prompt = ""
        self._lock = threading.Lock()  # the reader and the writer both print

    def message(self, nick: str, text: str) -> None:
        """Show a partner's message, marked with their nickname."""
        name = self.BOLD_CYAN + nick + self.RESET if self.color else nick
        self.show("%s: %s" % (name, text))

    def info(self, text: str) -> None:
        """Show a sentence from the client itself."""
        self.show(self.DIM + text + self.RESET if self.color else text)

    def show(self, text: str) -> None:
        """Print a timestamped line without garbling what the user is typing."""
        stamped = "[%s] %s" % (time.strftime("%H:%M"), text)
        if self.interactive:  # clear the prompt line, print, redraw the prompt and typed text
            stamped = "\r\x1b[K%s\n%s%s" % (stamped, self.prompt, typed_so_far())
        else:
            stamped += "\n"
        # Output may be gone (a closed pipe, as in `mechat chat | head`): then there is no one to tell.
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.out.write(stamped)
            self.out.flush()


def typed_so_far() -> str:
    """Return the text the user has typed at the prompt, where readline can tell."""
    readline = sys.modules.get("readline")
    return str(readline.get_line_buffer()) if readline else ""


def enable_line_editing() -> None:
    """Load readline, where there is one, so input() edits lines and keeps the typed text."""
    with contextlib.suppress(ImportError):  # Windows has none
        import readline  # noqa: F401  (input() uses it once it is imported)


class ChatClient:
    """One chat session over a connected socket."""

    def __init__(
        self,
        sock: socket.socket,
        keyboard: Iterable[str],
        screen: Screen,
        nickname: Optional[str] = None,
    ) -> None:
        self.sock = sock
        self.keyboard = keyboard
        self.screen = screen
        self.first_nickname = nickname
        self.partner = ""
        self.held: List[str] = []  # typed before there was a partner
        self.phase = Phase.NICKNAME
        self.nickname_pending = False  # sent a nickname, no verdict yet
        # Notified by the reader whenever phase or nickname_pending changes;
        # waited on by the writer (and by run() for the end).
        self.changed = threading.Condition()
        self._send_lock = threading.Lock()  # the reader sends held lines too
        self.exit_status = 0
        self.leaving = False  # we sent /quit, so the close is expected

    def run(self) -> int:
        """Start the reader and the writer, and return the exit status at the end."""
        for worker in (self.receive, self.send_typed):
            threading.Thread(target=worker, name=worker.__name__, daemon=True).start()
        try:
            with self.changed:
                self.changed.wait_for(lambda: self.phase is Phase.CLOSED)
        except KeyboardInterrupt:
            self.quit()
        return self.exit_status

    # -- The reader -----------------------------------------------------------

    def receive(self) -> None:
        """Show each server line until the server closes the connection."""
        try:
            for line in server_lines(self.sock):
                self.show_line(line)
        except OSError:
            pass
        if self.phase is not Phase.CLOSED and not self.leaving:
            self.screen.info("The server closed the connection.")
        self.set_phase(Phase.CLOSED)

    def show_line(self, line: str) -> None:
        """Show one server line: a partner's message, or a notice as a sentence."""
        if not line.startswith("#"):
            self.screen.message(self.partner or "?", line)
            return
        try:
            name, nick = protocol.parse_notice(line)
        except ValueError:
            self.screen.info("The server sent something unexpected: %r" % line)
            return
        sentence = SENTENCES[name]
        if name is Notice.INVALID_COMMAND and self.phase is Phase.NICKNAME:
            sentence = NO_COMMANDS_YET
        self.screen.info(sentence.format(nick=nick, partner=self.partner or "Your partner"))
        self.follow(name, nick)

    def follow(self, name: Notice, nick: str) -> None:
        """Move the session along after a notice (spec §7)."""
        if name is Notice.MATCHED_TO or name is Notice.PARTNER_RENAMED:
            self.partner = nick
        if name in FINAL_NOTICES:
            if name in (Notice.SERVER_FULL, Notice.NICKNAME_TIMEOUT):
                self.exit_status = 1
            self.set_phase(Phase.CLOSED)
        elif name is Notice.MATCHED_TO:
            self.start_chatting()
        elif name is Notice.WAIT and self.phase is Phase.NICKNAME:
            self.set_phase(Phase.WAITING)
        elif self.phase is Phase.NICKNAME:  # any other answer refuses the nickname
            self.set_phase(Phase.NICKNAME)
            self.screen.prompt = "Nickname: "

    def set_phase(self, phase: Phase) -> None:
        """Record a new phase, and that any nickname has had its answer."""
        with self.changed:
            self.phase = phase
            self.nickname_pending = False
            self.changed.notify_all()

    # -- The writer -----------------------------------------------------------

    def send_typed(self) -> None:
        """Send each typed line; at the end of input, send /quit (spec §5.1)."""
        if self.first_nickname is not None:
            self.send_nickname(self.first_nickname)
        for typed in self.keyboard:
            if not self.send_or_hold(typed):
                return
        if self.held:
            self.screen.info("%d line(s) were not sent: nobody joined." % len(self.held))
        self.quit()
        with self.changed:  # the server closes; don't wait on a bad one for ever
            if not self.changed.wait_for(lambda: self.phase is Phase.CLOSED, QUIT_GRACE):
                self.phase = Phase.CLOSED
                self.changed.notify_all()

    def send_or_hold(self, typed: str) -> bool:
        """Send one typed line as the phase allows; return False once the session is over."""
        if typed == "/quit":
            self.quit()
            return False
        with self.changed:
            self.changed.wait_for(lambda: not self.nickname_pending)
            phase = self.phase
            if phase is Phase.WAITING:
                self.held.append(typed)
        if phase is Phase.NICKNAME:
            self.send_nickname(typed)
        elif phase is Phase.CHATTING:
            self.send_line(typed)
        return phase is not Phase.CLOSED

    def quit(self) -> None:
        """Say goodbye and send /quit (spec §5.1)."""
        self.leaving = True
        self.screen.info("Leaving.")
        self.send_line("/quit")

    def send_nickname(self, nickname: str) -> None:
        """Send a nickname and mark it as awaiting the server's verdict."""
        with self.changed:
            self.nickname_pending = True
        self.screen.prompt = ""
        self.send_line(nickname)

    def start_chatting(self) -> None:
        """Enter the chatting phase and send the held lines before any typed later.

        The send lock is taken before the phase changes, so a writer that
        sees CHATTING and sends at once queues behind the held lines.
        """
        with self._send_lock:
            with self.changed:
                held, self.held = self.held, []
                self.phase = Phase.CHATTING
                self.nickname_pending = False
                self.changed.notify_all()
            for line in held:
                self._send(line)

    def send_line(self, text: str) -> None:
        """Send one line, whole, between other threads' lines."""
        with self._send_lock:
            self._send(text)

    def _send(self, text: str) -> None:
        """Write one line; call with the send lock held.  A dead connection is the reader's to report."""
        with contextlib.suppress(OSError):
            self.sock.sendall(text.encode("utf-8", "replace") + protocol.LF)


def server_lines(sock: socket.socket) -> Iterator[str]:
    """Yield each line the server sends, decoded, until it closes."""
    buffer = protocol.LineBuffer(protocol.MAX_LINE_OCTETS)
    while True:
        data = sock.recv(protocol.MAX_LINE_OCTETS + 2)
        if not data:
            return
        for line in buffer.feed(data):
            if isinstance(line, bytes):
                yield line.decode("utf-8", "replace")


def keyboard_lines(stream: TextIO, interactive: bool, prompt: Callable[[], str]) -> Iterator[str]:
    """Yield typed lines without their newline, until end of input (Ctrl-D)."""
    if not interactive:
        for line in stream:
            yield line.rstrip("\r\n")
        return
    enable_line_editing()
    while True:
        try:
            yield input(prompt())
        except EOFError:
            return


def use_color(requested: bool, out: TextIO) -> bool:
    """Colour only a terminal, and never when NO_COLOR is set (no-color.org)."""
    return requested and out.isatty() and not os.environ.get("NO_COLOR")


def main(host: str, port: int, nickname: Optional[str], color: bool) -> int:
    """Connect, chat, and return the process exit status."""
    interactive = sys.stdin.isatty()
    screen = Screen(sys.stdout, use_color(color, sys.stdout), interactive)
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as error:
        reason = error.strerror or str(error)
        print(
            "mechat: cannot connect to %s:%d (%s). Is a server running there? Start one with 'mechat serve'."
            % (host, port, reason),
            file=sys.stderr,
        )
        return 1
    sock.settimeout(None)
    if nickname is None:
        screen.prompt = "Nickname: "
        if not interactive:
            screen.prompt = ""
    keyboard = keyboard_lines(sys.stdin, interactive, lambda: screen.prompt)
    with sock:
        return ChatClient(sock, keyboard, screen, nickname).run()
