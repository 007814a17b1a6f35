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
refused it, and while there is no partner yet, so that messages typed early
are held and sent once a partner is found rather than refused with
``#wait``.  Commands are never held: ``/who``, ``/msg``, ``/all`` and
``/next`` work while waiting as well as while chatting (protocol 2).  The
main thread only starts both and waits for the session to end.

A session outlives one connection.  The server closes the connection when
the partner leaves (``#user_quit``), but the person at the keyboard may want
to go on talking to someone else.  So the reader, instead of ending the
session, marks it as *offering* a new partner, and the writer, which is the
thread that hears the answer, opens a new connection with the same nickname
and starts a new reader for it.  The writer is the only thread that ever
replaces the connection, and it waits for the old reader to finish first,
so no two readers ever run at once.
"""

import contextlib
import os
import shutil
import socket
import sys
import threading
import time
from typing import Callable, ClassVar, Dict, Iterable, Iterator, List, Optional, Set, TextIO

from mechat import protocol
from mechat.protocol import Notice, NoticeLine, Phase

#: Seconds to wait for the server to close after we send /quit.
QUIT_GRACE = 5.0

#: Seconds to wait for the server to accept a connection.
CONNECT_TIMEOUT = 10.0

#: Every command the client knows, as its usage and what it does, one line
#: each: /help prints this table, and Tab completes its command names.
COMMANDS = (
    ("/who [PATTERN]", "list who is online; * matches any run of characters, ? any one"),
    ("/msg NICK TEXT", "send TEXT to NICK alone, wherever they are"),
    ("/all TEXT", "send TEXT to everyone online (by default at most once a second)"),
    ("/next", "leave your partner and look for a new one"),
    ("/nickname NEW", "change your nickname"),
    ("/help", "show this list (it stays on your screen, nothing is sent)"),
    ("/quit", "leave (Ctrl-D does the same)"),
)


def completion_of(usage: str) -> str:
    """Return what Tab completes a command to: its name, and a space if an argument must follow.

    Python's readline adds no space after a completion, and a space after a
    command that takes no argument would make it another command (``/who ``
    is not ``/who``, spec §5.3).
    """
    name, _, arguments = usage.partition(" ")
    return name + " " if arguments and not arguments.startswith("[") else name


#: What Tab completes after a ``/``.
COMMAND_COMPLETIONS = sorted(completion_of(usage) for usage, _ in COMMANDS)

HELP = "Commands (Tab completes them, and nicknames):\n" + "\n".join(
    "  %-15s %s" % (usage, what) for usage, what in COMMANDS
)

#: How the client explains each notice (spec §6).  ``{nick}`` is the
#: nickname that the notice carries; ``{partner}`` is the partner's and
#: ``{me}`` our own.  The notices that carry a text or a count are shown by
#: ChatClient.notice_views instead.
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
    Notice.INVALID_COMMAND: "Unknown or incomplete command. The commands are %s; /help says what each does."
    % ", ".join(usage for usage, _ in COMMANDS),
    Notice.RATE_LIMITED: "You are sending too fast (/all at most once a second); that line was not sent.",
    Notice.NICKNAME_TIMEOUT: "The server closed the connection: no nickname was chosen in time.",
    Notice.SERVER_FULL: "The server is full. Try again later.",
    Notice.SERVER_SHUTDOWN: "The server is shutting down. Goodbye.",
    Notice.NICKNAME_TAKEN: "Someone else has that nickname; you are still {me}.",
    Notice.SENT_TO: "Sent to {nick}.",
    Notice.NO_SUCH_USER: "Nobody called {nick} is online; that message was not sent.",
}

#: Sentences that say something else while a nickname is being chosen.
#: Before a nickname is accepted, the only command is /quit (spec §7.1); a
#: taken nickname (spec §3.1) asks for another one.
NICKNAME_PHASE_SENTENCES = {
    Notice.INVALID_COMMAND: "Choose a nickname first; until then the only command is /quit.",
    Notice.NICKNAME_TAKEN: "The nickname {me} is taken. Type another nickname.",
}

#: What the client asks once the partner has left and the connection is over.
OFFER = "Press Enter to find a new partner, or Ctrl-D to quit."

#: Notices after which the server closes the connection (spec §6).
FINAL_NOTICES = (Notice.USER_QUIT, Notice.NICKNAME_TIMEOUT, Notice.SERVER_FULL, Notice.SERVER_SHUTDOWN)

#: Notices whose argument is another client's nickname, worth offering at Tab.
NOTICES_NAMING_OTHERS = (Notice.FROM, Notice.ALL_FROM, Notice.MATCHED_TO, Notice.PARTNER_RENAMED)


class Screen:
    """Where the reader shows lines: timestamps, colour, and the user's half-typed line."""

    BOLD_CYAN, DIM, RESET = "\x1b[1;36m", "\x1b[2m", "\x1b[0m"
    #: The width of the time stamp, "[10:02] ", that starts every line shown.
    STAMP_WIDTH = 8

    def __init__(self, out: TextIO, color: bool, interactive: bool) -> None:
        self.out = out
        self.color = color
        self.interactive = interactive
        self.prompt = ""
        self._lock = threading.Lock()  # the reader and the writer both print

    def message(self, nick: str, text: str, to: str = "") -> None:
        """Show a message marked with its sender, and with whom it was for if not only the partner."""
        name = self.BOLD_CYAN + nick + self.RESET if self.color else nick
        sender = "%s → %s" % (name, to) if to else name
        self.show("%s: %s" % (sender, text))

    def info(self, text: str) -> None:
        """Show a sentence from the client itself."""
        self.show(self.DIM + text + self.RESET if self.color else text)

    def show(self, text: str) -> None:
        """Print a timestamped line without garbling what the user is typing.

        The lines of a ``text`` that has several are indented under the
        first, so that the time stamp stands alone at the left.
        """
        stamp = "[%s] " % time.strftime("%H:%M")
        stamped = stamp + text.replace("\n", "\n" + " " * len(stamp))
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


class Completer:
    """Tab completion: a word after ``/`` is a command, any other word a nickname seen so far.

    The reader learns nicknames as notices name them, while readline calls
    :meth:`complete` in the writer's ``input()``, so the nicknames have a
    lock of their own.  Nicknames match in any case, as the server compares
    them (spec §3.1).
    """

    def __init__(self) -> None:
        self._nicknames: Set[str] = set()
        self._lock = threading.Lock()
        self._matches: List[str] = []  # for the word readline is asking about

    def learn(self, nicknames: Iterable[str]) -> None:
        """Remember nicknames that the server has named."""
        with self._lock:
            self._nicknames.update(nicknames)

    def candidates(self, word: str) -> List[str]:
        """Return every completion of ``word``: commands, or known nicknames and a space, in any case."""
        if word.startswith("/"):
            known = COMMAND_COMPLETIONS
        else:
            with self._lock:
                known = [nickname + " " for nickname in sorted(self._nicknames, key=str.lower)]
        return [name for name in known if name.lower().startswith(word.lower())]

    def complete(self, word: str, state: int) -> Optional[str]:
        """Return the ``state``-th completion of ``word``, or None after the last (readline's protocol)."""
        if state == 0:
            self._matches = self.candidates(word)
        return self._matches[state] if state < len(self._matches) else None


def enable_line_editing(complete: Optional[Callable[[str, int], Optional[str]]] = None) -> None:
    """Load readline, where there is one, so input() edits lines, keeps the typed text and completes at Tab.

    The Python of Windows has no readline module (it needs GNU readline or
    libedit, which Windows lacks).  There input() still works, with the
    console's own line editing, only without Tab completion, so the client
    goes on without it rather than asking for a package that mechat, being
    standard library only, does not depend on.
    """
    try:
        import readline
    except ImportError:
        return
    if complete is None:
        return
    readline.set_completer(complete)
    readline.set_completer_delims(" ")  # a nickname may hold any other visible character (spec §3)
    if "libedit" in (readline.__doc__ or ""):  # macOS's Python: the same module over libedit
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")


def in_columns(names: List[str], width: int) -> List[str]:
    """Lay ``names`` out down columns, as ls does, in as many columns as fit in ``width`` characters."""
    if not names:
        return []
    cell = max(len(name) for name in names) + 2  # two spaces between columns
    across = max(1, (width + 2) // cell)  # the last column needs no spaces after it
    rows = -(-len(names) // across)  # rounded up
    return ["".join(name.ljust(cell) for name in names[row::rows]).rstrip() for row in range(rows)]


def online_heading(count: int, shown: int) -> str:
    """Say how many clients matched a /who, and whether the server's list was cut (spec §6.1)."""
    if count == 0:
        return "Nobody online matches."
    heading = "1 person online matches" if count == 1 else "%d people online match" % count
    if shown < count:
        heading += "; the server's list stops after the first %d" % shown
    return heading + ":"


def people(count: int) -> str:
    """Return ``count`` people in words: 1 person, 3 people."""
    return "1 person" if count == 1 else "%d people" % count


def is_command(typed: str) -> bool:
    """Say whether a typed line is a command rather than a message (spec §5)."""
    return typed.startswith("/")


class ChatClient:
    """One chat session: one connection at a time, and another each time the user asks for a new partner.

    The client closes each connection once it is done with it, the first
    one included.  Given no ``reconnect``, it cannot offer a new partner,
    and the session ends with the first partner's ``#user_quit``.
    """

    def __init__(
        self,
        sock: socket.socket,
        keyboard: Iterable[str],
        screen: Screen,
        nickname: Optional[str] = None,
        reconnect: Optional[Callable[[], socket.socket]] = None,
        completer: Optional[Completer] = None,
    ) -> None:
        self.sock = sock
        self.keyboard = keyboard
        self.screen = screen
        self.first_nickname = nickname
        self.reconnect = reconnect
        self.completer = completer or Completer()
        self.nickname = ""  # as the server last accepted it
        self.proposed = ""  # the nickname sent last, accepted or not
        self.partner = ""
        self.held: List[str] = []  # messages typed before there was a partner
        self.phase = Phase.NICKNAME
        self.nickname_pending = False  # sent a nickname, no verdict yet
        self.offering = False  # the partner left; the user may ask for a new one
        self.leaving = False  # we sent /quit, so the close is expected
        # Notified by the reader whenever phase, nickname_pending or offering
        # changes, and by the writer when it leaves or replaces the
        # connection; waited on by the writer (and by run() for the end).
        self.changed = threading.Condition()
        self._send_lock = threading.Lock()  # the reader sends held lines too
        self.reader: Optional[threading.Thread] = None
        self.exit_status = 0

    def run(self) -> int:
        """Start the reader and the writer, and return the exit status at the end."""
        self.start_reader()
        threading.Thread(target=self.send_typed, name="send_typed", daemon=True).start()
        try:
            with self.changed:
                self.changed.wait_for(lambda: self.phase is Phase.CLOSED and not self.offering)
        except KeyboardInterrupt:
            self.quit()
        self.hang_up()
        self.sock.close()
        return self.exit_status

    def start_reader(self) -> None:
        """Start a reader thread for the current connection."""
        self.reader = threading.Thread(target=self.receive, args=(self.sock,), name="receive", daemon=True)
        self.reader.start()

    def hang_up(self) -> None:
        """Shut the current connection down, which wakes its reader if it still waits in recv()."""
        with contextlib.suppress(OSError):  # the server may have closed it first
            self.sock.shutdown(socket.SHUT_RDWR)

    # -- The reader -----------------------------------------------------------

    def receive(self, sock: socket.socket) -> None:
        """Show each line the server sends on ``sock`` until it closes the connection."""
        try:
            for line in server_lines(sock):
                self.show_line(line)
        except OSError:
            pass
        if self.phase is not Phase.CLOSED and not self.leaving:
            self.screen.info("The server closed the connection.")
        self.set_phase(Phase.CLOSED)

    def show_line(self, line: str) -> None:
        """Show one server line: a partner's message, or a notice in words."""
        if not line.startswith("#"):
            self.screen.message(self.partner or "?", line)
            return
        try:
            notice = protocol.parse_notice(line)
        except ValueError:
            self.screen.info("The server sent something unexpected: %r" % line)
            return
        self.learn_nicknames(notice)
        view = self.notice_views.get(notice.name, ChatClient.show_sentence)
        view(self, notice)
        self.follow(notice)

    def show_sentence(self, notice: NoticeLine) -> None:
        """Show a notice as its sentence, which may depend on the phase."""
        sentence = SENTENCES.get(notice.name)
        if sentence is None:  # a notice of a newer protocol than this client's
            self.screen.info("The server sent a notice this client does not know: %s" % notice.name.value)
            return
        if self.phase is Phase.NICKNAME:
            sentence = NICKNAME_PHASE_SENTENCES.get(notice.name, sentence)
        me = self.proposed if self.phase is Phase.NICKNAME else self.nickname
        self.screen.info(sentence.format(nick=notice.argument, partner=self.partner or "Your partner", me=me))

    def show_direct(self, notice: NoticeLine) -> None:
        """Show a direct message: ``alice → you: TEXT`` (spec §5.5)."""
        self.screen.message(notice.argument, notice.text, to="you")

    def show_broadcast(self, notice: NoticeLine) -> None:
        """Show a line sent to everyone: ``alice → all: TEXT`` (spec §5.6)."""
        self.screen.message(notice.argument, notice.text, to="all")

    def show_broadcast_receipt(self, notice: NoticeLine) -> None:
        """Say how many people an /all reached (spec §5.6)."""
        count = int(notice.argument)
        self.screen.info("Sent to %s." % people(count) if count else "Sent to nobody: no one else is online.")

    def show_online(self, notice: NoticeLine) -> None:
        """Show a /who answer: how many match, then the names in columns that fit the terminal (spec §6.1)."""
        names = notice.text.split()
        width = shutil.get_terminal_size().columns - Screen.STAMP_WIDTH
        rows = in_columns(names, width)
        self.screen.info("\n".join([online_heading(int(notice.argument), len(names)), *rows]))

    #: How each notice is shown where one sentence of SENTENCES will not do.
    notice_views: ClassVar[Dict[Notice, Callable[["ChatClient", NoticeLine], None]]] = {
        Notice.FROM: show_direct,
        Notice.ALL_FROM: show_broadcast,
        Notice.BROADCAST: show_broadcast_receipt,
        Notice.ONLINE: show_online,
    }

    def learn_nicknames(self, notice: NoticeLine) -> None:
        """Remember the nicknames a notice names, for Tab to complete."""
        if notice.name in NOTICES_NAMING_OTHERS:
            self.completer.learn([notice.argument])
        elif notice.name is Notice.ONLINE:
            self.completer.learn(notice.text.split())

    def follow(self, notice: NoticeLine) -> None:
        """Move the session along after a notice (spec §7)."""
        name = notice.name
        if self.phase is Phase.NICKNAME and name in (Notice.WAIT, Notice.MATCHED_TO):
            self.nickname = self.proposed
        if name is Notice.MATCHED_TO or name is Notice.PARTNER_RENAMED:
            self.partner = notice.argument
        elif name is Notice.NICKNAME_CHANGED:
            self.nickname = notice.argument
        if name in FINAL_NOTICES:
            self.end_connection(name)
        elif name is Notice.MATCHED_TO:
            self.start_chatting()
        elif name is Notice.WAIT and self.phase is Phase.NICKNAME:
            self.set_phase(Phase.WAITING)
        elif self.phase is Phase.NICKNAME:  # any other answer refuses the nickname
            self.set_phase(Phase.NICKNAME)
            self.screen.prompt = "Nickname: "

    def end_connection(self, name: Notice) -> None:
        """Close the session after a final notice, or offer a new partner if the partner left."""
        if name is Notice.USER_QUIT and self.offer_new_partner():
            return
        if name in (Notice.SERVER_FULL, Notice.NICKNAME_TIMEOUT):
            self.exit_status = 1
        self.set_phase(Phase.CLOSED)

    def offer_new_partner(self) -> bool:
        """Keep the session open for a new partner, if we can reconnect and are not leaving anyway.

        The connection is over either way (the server closes it after
        ``#user_quit``), so the phase is CLOSED; ``offering`` is what keeps
        run() waiting for the writer to hear the user's answer.
        """
        with self.changed:
            if self.reconnect is None or self.leaving:
                return False
            held, self.held = self.held, []
            self.phase = Phase.CLOSED
            self.nickname_pending = False
            self.offering = True
            self.changed.notify_all()
        report_unsent(self.screen, held)
        self.screen.info(OFFER)
        return True

    def set_phase(self, phase: Phase) -> None:
        """Record a new phase, and that any nickname has had its answer."""
        with self.changed:
            self.phase = phase
            self.nickname_pending = False
            self.changed.notify_all()

    # -- The writer -----------------------------------------------------------

    def send_typed(self) -> None:
        """Act on each typed line; at the end of input (Ctrl-D), leave (spec §5.1)."""
        if self.first_nickname is not None:
            self.send_nickname(self.first_nickname)
        for typed in self.keyboard:
            if not self.act_on_typed(typed):
                return
        self.leave()

    def act_on_typed(self, typed: str) -> bool:
        """Act on one typed line as the phase allows; return False once the session is over."""
        if typed == "/help":  # answered here: the server has no /help
            self.screen.info(HELP)
            return True
        if typed == "/quit":
            return self.leave()
        with self.changed:
            # A server that ends the session (#server_full) answers no nickname.
            self.changed.wait_for(lambda: not self.nickname_pending or self.phase is Phase.CLOSED)
            phase, offering = self.phase, self.offering
            if phase is Phase.WAITING and not is_command(typed):
                self.held.append(typed)
        if offering:
            return self.answer_offer(typed)
        if phase is Phase.NICKNAME:
            self.send_nickname(typed)
        elif typed == "/next" and phase is Phase.CHATTING:
            self.leave_partner()
        elif phase is Phase.CHATTING or (phase is Phase.WAITING and is_command(typed)):
            self.send_line(typed)
        return phase is not Phase.CLOSED

    def answer_offer(self, typed: str) -> bool:
        """After the partner left, find a new one at Enter (or /next); ask again at anything else."""
        if typed in ("", "/next"):
            return self.find_new_partner()
        self.screen.info("That line was not sent: your partner has left. " + OFFER)
        return True

    def find_new_partner(self) -> bool:
        """Connect again and send the same nickname; return False if the server cannot be reached.

        The old reader has seen ``#user_quit`` and its connection is closing;
        it is waited for, so that it cannot mark the new connection CLOSED
        when the old one ends.
        """
        assert self.reconnect is not None and self.reader is not None  # we offered, so we can
        self.hang_up()
        self.reader.join()
        self.sock.close()
        try:
            sock = self.reconnect()
        except OSError as error:
            self.screen.info("Cannot reach the server again (%s)." % (error.strerror or error))
            with self.changed:
                self.exit_status = 1
                self.offering = False
                self.changed.notify_all()
            return False
        with self.changed:
            self.sock, self.partner = sock, ""
            self.phase = Phase.NICKNAME
            self.offering = False
            self.changed.notify_all()
        self.start_reader()
        self.send_nickname(self.nickname)
        return True

    def leave_partner(self) -> None:
        """Send /next, and hold the messages typed from now until the next partner (spec §5.7).

        The phase becomes WAITING before /next goes out, under the send lock
        as in start_chatting, so no message meant for the next partner can
        reach the old one, or the server while it has none.
        """
        with self._send_lock:
            with self.changed:
                if self.phase is not Phase.CHATTING:
                    return  # the partner left first: the reader has said so
                self.phase = Phase.WAITING
                self.changed.notify_all()
            self.screen.info("You left %s; looking for a new partner…" % self.partner)
            self._send("/next")

    def leave(self) -> bool:
        """Leave at /quit or Ctrl-D: say what was not sent, send /quit, and wait for the close (spec §5.1).

        Return False: the session is over, so the writer stops.  Once
        ``leaving`` is set, the reader no longer offers a new partner, so a
        partner who leaves at the same moment cannot keep the session open.
        """
        with self.changed:
            offered, over = self.offering, self.phase is Phase.CLOSED
            held, self.held = self.held, []
            self.leaving, self.offering = True, False
            self.changed.notify_all()
        if over and not offered:
            return False  # the session ended already, and said so
        report_unsent(self.screen, held)
        self.screen.info("Leaving.")
        if not offered:  # with an offer open there is no connection to tell
            self.send_line("/quit")
            self.wait_for_close()
        return False

    def wait_for_close(self) -> None:
        """Wait for the server to close after /quit, but not for ever on a bad server."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.phase is Phase.CLOSED, QUIT_GRACE):
                self.phase = Phase.CLOSED
                self.changed.notify_all()

    def quit(self) -> None:
        """Say goodbye and send /quit, without waiting (spec §5.1): for Ctrl-C."""
        with self.changed:
            self.leaving, self.offering = True, False
        self.screen.info("Leaving.")
        self.send_line("/quit")

    def send_nickname(self, nickname: str) -> None:
        """Send a nickname and mark it as awaiting the server's verdict."""
        with self.changed:
            self.nickname_pending = True
            self.proposed = nickname
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


def report_unsent(screen: Screen, held: List[str]) -> None:
    """Say how many held lines will never be sent: they are dropped, but never silently."""
    if held:
        screen.info("%d line(s) were not sent: nobody joined." % len(held))


def server_lines(sock: socket.socket) -> Iterator[str]:
    """Yield each line the server sends, decoded, until it closes."""
    buffer = protocol.LineBuffer(protocol.MAX_SERVER_LINE_OCTETS)
    while True:
        data = sock.recv(protocol.MAX_SERVER_LINE_OCTETS + 2)
        if not data:
            return
        for line in buffer.feed(data):
            if isinstance(line, bytes):
                yield line.decode("utf-8", "replace")


def keyboard_lines(
    stream: TextIO,
    interactive: bool,
    prompt: Callable[[], str],
    complete: Optional[Callable[[str, int], Optional[str]]] = None,
) -> Iterator[str]:
    """Yield typed lines without their newline, until end of input (Ctrl-D)."""
    if not interactive:
        for line in stream:
            yield line.rstrip("\r\n")
        return
    enable_line_editing(complete)
    while True:
        try:
            yield input(prompt())
        except EOFError:
            return


def use_color(requested: bool, out: TextIO) -> bool:
    """Colour only a terminal, and never when NO_COLOR is set (no-color.org)."""
    return requested and out.isatty() and not os.environ.get("NO_COLOR")


def connect(host: str, port: int) -> socket.socket:
    """Connect to the server, waiting at most CONNECT_TIMEOUT; reads then block as long as they need."""
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    sock.settimeout(None)
    return sock


def main(host: str, port: int, nickname: Optional[str], color: bool) -> int:
    """Connect, chat, and return the process exit status."""
    interactive = sys.stdin.isatty()
    screen = Screen(sys.stdout, use_color(color, sys.stdout), interactive)
    try:
        sock = connect(host, port)
    except OSError as error:
        reason = error.strerror or str(error)
        print(
            "mechat: cannot connect to %s:%d (%s). Is a server running there? Start one with 'mechat serve'."
            % (host, port, reason),
            file=sys.stderr,
        )
        return 1
    if nickname is None and interactive:
        screen.prompt = "Nickname: "
    completer = Completer()
    keyboard = keyboard_lines(sys.stdin, interactive, lambda: screen.prompt, completer.complete)
    client = ChatClient(sock, keyboard, screen, nickname, lambda: connect(host, port), completer)
    return client.run()
