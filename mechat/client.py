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
from typing import Callable, ClassVar, Dict, Iterable, Iterator, List, Optional, TextIO

from mechat import protocol
from mechat.protocol import Notice, NoticeLine, Phase
from mechat.screen import (
    HELP,
    NICKNAME_PHASE_SENTENCES,
    OFFER,
    SENTENCES,
    Completer,
    Screen,
    enable_line_editing,
    in_columns,
    online_heading,
    people,
)

#: Seconds to wait for the server to close after we send /quit.
QUIT_GRACE = 5.0

#: Seconds to wait for the server to accept a connection.
CONNECT_TIMEOUT = 10.0

#: Notices after which the server closes the connection (spec §6).
FINAL_NOTICES = (Notice.USER_QUIT, Notice.NICKNAME_TIMEOUT, Notice.SERVER_FULL, Notice.SERVER_SHUTDOWN)

#: Notices whose argument is another client's nickname, worth offering at Tab.
NOTICES_NAMING_OTHERS = (Notice.FROM, Notice.ALL_FROM, Notice.MATCHED_TO, Notice.PARTNER_RENAMED)


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
