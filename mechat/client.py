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
it after sending a nickname, until the server has accepted or refused it,
and after sending ``/join``, until the server has let it in or not
(:meth:`ChatClient.settle` tells which notice answers it), so that the next
prompt, and the line typed at it, go where the user then is.  While there
is no partner yet, messages typed early are held and sent once a partner
is found rather than refused with ``#wait``.  Commands are never held:
``/who``, ``/msg``, ``/all``, ``/next`` and the room commands work while
waiting as well as while chatting or in a room (protocol 2).  The main
thread only starts both and waits for the session to end.

The reader keeps the prompt saying where a typed line will go (waiting,
to the partner, to the room): it moves the session along after each
notice, and only then shows the notice, with the new prompt under it.

A session outlives one connection.  The server closes the connection when
the partner leaves (``#user_quit``), but the person at the keyboard may want
to go on talking to someone else.  So the reader, instead of ending the
session, marks it as *offering* a new partner, and the writer, which is the
thread that hears the answer, opens a new connection with the same nickname
and starts a new reader for it.  The writer is the only thread that ever
replaces the connection, and it waits for the old reader to finish first,
so no two readers ever run at once.

Accounts.  With ``--login NICK`` or ``--register NICK`` (or ``/login NICK``
typed at the Nickname prompt) the first line is ``/login NICK PASSWORD`` or
``/register NICK PASSWORD`` instead of a nickname (spec §5.13, §5.14).  The
password is read with getpass, never echoed and never on the command line,
and it is sent only over TLS or to this machine unless the user says
``--insecure``.  The client keeps it for the session, as each new partner
means a new connection, and so a new login.  When the server refuses a
password, the writer asks again, but only once the reader has shown why:
the reader wakes the writer after it has shown a refusal of the first line,
not before, so the question never comes before its reason.

TLS.  With ``--tls`` the connection is a :class:`~mechat.tls.TLSClientSocket`
rather than a socket: the same ``recv()``, ``sendall()``, ``shutdown()``
and ``close()``, which is all this module asks of a :class:`Stream`.  An
``ssl.SSLSocket`` would not do, since the reader and the writer use the
connection at once (:mod:`mechat.tls`).
"""

import contextlib
import getpass
import ipaddress
import socket
import ssl
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, List, NamedTuple, Optional, Protocol

from mechat import protocol, tls
from mechat.keyboard import (
    PASSWORD_TRIES,
    Completer,
    PasswordReader,
    keyboard_lines,
    read_password,
    terminal_restored,
)
from mechat.protocol import NOTICES_WITH_MEMBER, NOTICES_WITH_TEXT, Notice, NoticeLine, Phase
from mechat.screen import (
    ACCOUNT_USAGE,
    ANOTHER_NAME,
    DELETE_ALONE,
    DELETE_PROMPT,
    DELETE_WARNING,
    HELP,
    LAST_TRY,
    NO_ACCOUNTS,
    NO_PASSWORD,
    NO_ROOMS,
    NOT_DELETED,
    OFFER,
    PARTNER_LEFT,
    PLAIN_TCP,
    SENTENCES,
    UNANSWERED,
    Place,
    Screen,
    kept_count,
    unsent,
    use_color,
)

#: Seconds to wait for the server to close after we send /quit.
QUIT_GRACE = 5.0

#: Seconds to wait for the server to accept a connection.
CONNECT_TIMEOUT = 10.0

#: Notices after which the server closes the connection (spec §6, §2.5, §5.14).
FINAL_NOTICES = (
    Notice.USER_QUIT,
    Notice.NICKNAME_TIMEOUT,
    Notice.SERVER_FULL,
    Notice.SERVER_SHUTDOWN,
    Notice.SESSION_REPLACED,
    Notice.TLS_REQUIRED,
)

#: Final notices that mean the session failed, so the client exits 1.
FAILURES = (Notice.NICKNAME_TIMEOUT, Notice.SERVER_FULL, Notice.TLS_REQUIRED)

#: Notices that accept a nickname (spec §7.1), or pair a client again (§5.7, §5.12).
PAIRING_NOTICES = (Notice.WAIT, Notice.MATCHED_TO)

#: Seconds the writer waits for the answer to /join: a server that never
#: answers must not leave the user without a prompt, or Ctrl-D.
JOIN_TIMEOUT = 5.0

#: Seconds between run()'s looks at the session: on Windows Ctrl-C
#: interrupts a timed wait once it times out, and an untimed one never.
INTERRUPT_POLL = 0.5

#: The notices that answer no line of ours (spec §6): news of others, the end of the connection,
#: and #wait and #matched_to_, which answer a nickname, /next or /leave but also come unasked.
UNASKED = (*NOTICES_WITH_TEXT, *NOTICES_WITH_MEMBER, *FINAL_NOTICES, *PAIRING_NOTICES, Notice.PARTNER_RENAMED)

#: The answers to a /join that name its room (spec §5.10), and those that name no line: a server
#: without rooms refuses a /join as an unknown command (§5.3), a busy one any line (§9.5).
JOIN_ANSWERS = (Notice.JOINED, Notice.NO_SUCH_ROOM, Notice.ROOM_FULL)
UNNAMED_REFUSALS = (Notice.INVALID_COMMAND, Notice.RATE_LIMITED)

#: The notices that accept a /register or a /login; #wait or #matched_to_ follows (spec §5.13, §5.14).
LOGIN_ANSWERS = (Notice.REGISTERED, Notice.LOGGED_IN)

#: The refusals of a first line that mean its password was wrong, or no password (spec §5.13, §5.14).
PASSWORD_REFUSALS = (Notice.LOGIN_FAILED, Notice.INVALID_PASSWORD)

#: What may be typed at the Nickname prompt instead of a nickname, and whether it makes the account.
ACCOUNT_VERBS = {"/login": False, "/register": True}

#: The commands that go back to finding a partner, and the phase each leaves
#: (spec §5.7, §5.12): lines typed after one are held for the next partner.
BACK_TO_PAIRING = {"/next": Phase.CHATTING, "/leave": Phase.IN_ROOM}


class Stream(Protocol):
    """What the client needs of a connection: a socket, or a TLSClientSocket."""

    def recv(self, size: int, /) -> bytes:
        """Return what arrived, at most ``size`` octets; b"" at the end."""

    def sendall(self, data: bytes, /) -> None:
        """Send all of ``data``."""

    def shutdown(self, how: int, /) -> None:
        """Shut the connection, which wakes a reader in recv()."""

    def close(self) -> None:
        """Close the connection."""


class Account(NamedTuple):
    """An account to log in to, or to make (spec §5.13, §5.14)."""

    nickname: str
    new: bool = False  # /register rather than /login
    password: str = ""

    def first_line(self, nickname: str) -> str:
        """Return the line that logs in as ``nickname`` (or makes it), in place of a nickname."""
        return "%s %s %s" % ("/register" if self.new else "/login", nickname, self.password)


def is_this_machine(host: str) -> bool:
    """Say whether ``host`` is this machine: ``localhost``, 127.0.0.0/8 or ::1, as written (no lookup)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_command(typed: str) -> bool:
    """Say whether a typed line is a command rather than a message (spec §5)."""
    return typed.startswith("/")


def room_to_join(typed: str) -> str:
    """Return the room a well-formed /join names, else "" (spec §5.10, §3.2).

    A malformed /join moves nobody, so its ``#invalid_room`` is not waited
    for.  A room name keeps the line far within the line limit (§2.3).
    """
    verb, space, room = typed.partition(" ")
    return room if verb == "/join" and space and protocol.ROOM_RE.fullmatch(room) else ""


def owes_an_answer(line: str, phase: Phase) -> bool:
    """Say whether the server answers ``line``, sent in ``phase``, with one notice not UNASKED (spec §6).

    Every command but /quit (the close answers it) and /next out of a room
    (§5.7); a message only if it is refused (§4).  A nickname has its own wait.
    """
    if phase is Phase.NICKNAME or line == "/quit":
        return False
    if line == "/next":
        return phase is Phase.IN_ROOM
    if is_command(line):
        return True
    try:
        protocol.check_message(encoded(line))
    except protocol.InvalidMessage:
        return True
    return False


class ChatClient:
    """One chat session: one connection at a time, and another each time the user asks for a new partner.

    The client closes each connection once it is done with it, the first
    one included.  Given no ``reconnect``, it cannot offer a new partner,
    and the session ends with the first partner's ``#user_quit``.
    """

    def __init__(
        self,
        sock: Stream,
        keyboard: Iterable[str],
        screen: Screen,
        nickname: Optional[str] = None,
        reconnect: Optional[Callable[[], Stream]] = None,
        completer: Optional[Completer] = None,
        account: Optional[Account] = None,
        ask_password: PasswordReader = getpass.getpass,
        passwords_allowed: bool = False,
    ) -> None:
        self.sock = sock
        self.typed = iter(keyboard)
        self.screen = screen
        self.first_nickname = account.nickname if account else nickname
        self.reconnect = reconnect
        self.completer = completer or Completer()
        self.account = account  # with its password; None for a guest
        self.ask_password = ask_password
        self.passwords_allowed = passwords_allowed  # may a typed /login send one? (over TLS, or here)
        self.nickname = ""  # as the server last accepted it
        self.proposed = ""  # the nickname sent last, accepted or not
        self.partner = ""
        self.room = ""  # the room we are in, while the phase is IN_ROOM
        self.held: List[str] = []  # messages typed before there was a partner
        self.phase = Phase.NICKNAME
        self.nickname_pending = False  # sent a nickname, no verdict yet
        self.joining = ""  # the room of a /join sent, no verdict yet
        self.owed = 0  # answers owed for lines sent: see settle()
        self.offering = False  # the partner left; the user may ask for a new one
        self.leaving = False  # we sent /quit, so the close is expected
        self.refusal: Optional[Notice] = None  # the answer that refused the first line sent last
        self.kept: Optional[int] = None  # messages a login has brought so far, until #wait or #matched_to_
        self.asking = ""  # the prompt of a question the writer asks, in place of the session's
        # Notified by the reader whenever phase, nickname_pending, joining or
        # offering changes (after a refusal of the first line, only once the
        # refusal is shown), and by the writer when it leaves or replaces the
        # connection; waited on by the writer (and by run() for the end).
        self.changed = threading.Condition()
        self._send_lock = threading.Lock()  # the reader sends held lines too
        self.reader: Optional[threading.Thread] = None
        self.exit_status = 0
        self.update_prompt()

    def run(self) -> int:
        """Start the reader and the writer, and return the exit status at the end."""
        self.start_reader()
        threading.Thread(target=self.send_typed, name="send_typed", daemon=True).start()
        try:
            with self.changed:
                while self.phase is not Phase.CLOSED or self.offering:
                    self.changed.wait(INTERRUPT_POLL)  # timed, for Ctrl-C on Windows
        except KeyboardInterrupt:
            self.quit()
        self.hang_up()
        # The reader may still be showing the notice that ended the session.
        # A daemon thread that is writing to stdout as the interpreter exits
        # holds its lock, and the exit then aborts (Fatal Python error), so
        # let it finish: the hang-up has ended its recv().
        if self.reader is not None:
            self.reader.join(QUIT_GRACE)
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

    def receive(self, sock: Stream) -> None:
        """Show each line the server sends on ``sock`` until it closes the connection."""
        try:
            for line in server_lines(sock):
                self.show_line(line)
        except OSError:
            pass
        closed_early = self.phase is not Phase.CLOSED and not self.leaving
        self.set_phase(Phase.CLOSED)
        self.update_prompt()
        if closed_early:
            self.screen.info("The server closed the connection.")

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
        self.completer.learn_from(notice)
        place = self.place()  # as the notice found the session: "bob has left" names bob
        refused = self.refuses_first_line(notice.name)
        before = self.count_kept(notice)
        then = self.follow(notice)
        self.update_prompt()
        self.screen.info(*before)
        self.screen.notice(notice, place)
        self.screen.info(*then)
        if refused:  # the writer may ask for a password now: its reason is on the screen
            self.set_phase(Phase.NICKNAME)

    def place(self) -> Place:
        """Say where the session is, for the screen's sentences and prompt."""
        me = self.proposed if self.phase is Phase.NICKNAME else self.nickname
        return Place(self.phase, me, self.partner, self.room)

    def update_prompt(self) -> None:
        """Make the prompt say where a line typed now will go, or ask the writer's question."""
        self.screen.prompt = self.asking or self.place().prompt()

    def refuses_first_line(self, name: Notice) -> bool:
        """Say whether ``name`` refuses the nickname, /login or /register sent last (spec §7.1)."""
        return self.phase is Phase.NICKNAME and name not in UNASKED and name not in LOGIN_ANSWERS

    def count_kept(self, notice: NoticeLine) -> List[str]:
        """Count the messages a login brings; return what to say before the notice that ends them (§5.14)."""
        if notice.name is Notice.LOGGED_IN:
            self.kept = 0
        elif notice.name is Notice.STORED_FROM and self.kept is not None:
            self.kept += 1
        elif notice.name in PAIRING_NOTICES and self.kept is not None:
            count, self.kept = self.kept, None
            return [kept_count(count)]
        return []

    def follow(self, notice: NoticeLine) -> List[str]:
        """Move the session along after a notice (spec §7); return what to say after the notice itself."""
        name = notice.name
        answers_join = self.settle(notice)
        if name in LOGIN_ANSWERS:
            self.logged_in(notice.argument)
        elif name is Notice.ACCOUNT_DELETED:
            with self.changed:
                self.account = None  # the session goes on as a guest (spec §5.16)
        if self.phase is Phase.NICKNAME and name in PAIRING_NOTICES:
            self.nickname = self.proposed
        if name is Notice.MATCHED_TO or name is Notice.PARTNER_RENAMED:
            self.partner = notice.argument
        elif name is Notice.NICKNAME_CHANGED:
            self.nickname = notice.argument
        if name in FINAL_NOTICES:
            return self.end_connection(name)
        if name is Notice.MATCHED_TO:
            self.start_chatting()
        elif name is Notice.JOINED:
            return self.enter_room(notice.argument, answers_join)
        elif name is Notice.WAIT and self.phase is Phase.NICKNAME:
            self.set_phase(Phase.WAITING)
        elif self.refuses_first_line(name):  # show_line wakes the writer once this is shown
            return self.note_refusal(name)
        elif answers_join:
            return self.join_refused(name)
        return []

    def logged_in(self, nickname: str) -> None:
        """Take the account's name as the server spells it; from now on, log in rather than register."""
        with self.changed:
            self.proposed = nickname
            if self.account is not None:
                self.account = self.account._replace(nickname=nickname, new=False)

    def note_refusal(self, name: Notice) -> List[str]:
        """Record why the first line was refused, for the writer; return what to say after the notice."""
        with self.changed:
            self.refusal = name
            account = self.account
            if name is Notice.INVALID_COMMAND:  # a server that knows no /login (spec §5.3)
                self.account = None
        if account is None:
            return []
        if name is Notice.INVALID_COMMAND:
            return [NO_ACCOUNTS]
        if account.new and name in (Notice.NICKNAME_TAKEN, Notice.INVALID_NICKNAME):
            return [ANOTHER_NAME]
        return []

    def settle(self, notice: NoticeLine) -> bool:
        """Count ``notice`` against the answers owed; return True if it answers the /join the writer waits on.

        The server answers a client's lines in the order they came (spec
        §6), but lines typed quickly all go out before the first answer, and
        a refusal like ``#invalid_command`` does not say which line it
        refuses.  So each line sent that will be answered (owes_an_answer)
        adds one to ``owed``, the /join too, and each answer takes one off.
        The /join's answer names the room typed, in any case (JOIN_ANSWERS),
        or is an UNNAMED_REFUSAL that comes once every line sent before the
        /join has had its answer.  A refusal of an earlier line, such as
        ``#invalid_room`` for ``/create lab_3``, never ends the wait.  The
        count errs only if a message, answered by nothing else, is refused
        for speed (§9.5); the wait's time limit covers that too.
        """
        if notice.name in UNASKED:
            return False
        with self.changed:
            names_room = notice.name in JOIN_ANSWERS and notice.argument.lower() == self.joining.lower()
            last_owed = notice.name in UNNAMED_REFUSALS and self.owed <= 1  # 1: the /join's own
            answers_join = bool(self.joining) and (names_room or last_owed)
            # In order (§6): with the /join's answer, every line sent before it has had its own.
            self.owed = 0 if answers_join else max(0, self.owed - 1)
        return answers_join

    def end_connection(self, name: Notice) -> List[str]:
        """Close the session after a final notice, or offer a new partner if the partner left."""
        if name is Notice.USER_QUIT and self.reconnect is not None:
            offer = self.offer_new_partner()
            if offer:
                return offer
        if name in FAILURES:
            self.exit_status = 1
        self.set_phase(Phase.CLOSED)
        return []

    def offer_new_partner(self) -> List[str]:
        """Keep the session open for a new partner, unless we are leaving anyway; return what to say.

        The connection is over either way (the server closes it after
        ``#user_quit``), so the phase is CLOSED; ``offering`` is what keeps
        run() waiting for the writer to hear the user's answer.
        """
        with self.changed:
            if self.leaving:
                return []
            held, self.held = self.held, []
            self.phase = Phase.CLOSED
            self.nickname_pending, self.joining = False, ""
            self.offering = True
            self.changed.notify_all()
        return [*unsent(held, "nobody joined"), OFFER]

    def enter_room(self, room: str, answers_join: bool) -> List[str]:
        """Record that we are in ``room`` (spec §5.10); return what to say of a partner left and held lines.

        Those lines are not sent to the room: they were written for one
        stranger, not for everyone in it.
        """
        with self.changed:
            held, self.held = self.held, []
            left = self.partner if self.phase is Phase.CHATTING else ""
            self.phase, self.room, self.partner = Phase.IN_ROOM, room, ""
            if answers_join:  # else a late answer to a /join given up on: the wait goes on
                self.joining = ""
            self.changed.notify_all()
        why = "they were for a partner, and you went into #%s" % room
        return [*([PARTNER_LEFT % left] if left else []), *unsent(held, why)]

    def join_refused(self, refusal: Notice) -> List[str]:
        """Record that the /join let us in nowhere, and send the lines held for a partner found meanwhile.

        Return what to say: a server that refuses a well-formed /join as an
        unknown command has no rooms (spec §5.3).
        """
        with self._send_lock:
            with self.changed:
                self.joining = ""
                held = self.take_held_for_partner()
                self.changed.notify_all()
            for line in held:
                self._send(line)
        return [NO_ROOMS] if refusal is Notice.INVALID_COMMAND else []

    def take_held_for_partner(self) -> List[str]:
        """Take the held lines to send, if there is a partner to send them to; call with ``changed`` held."""
        if self.phase is not Phase.CHATTING:
            return []
        held, self.held = self.held, []
        return held

    def set_phase(self, phase: Phase) -> None:
        """Record a new phase, and that any nickname or /join has had its answer."""
        with self.changed:
            self.phase = phase
            self.nickname_pending, self.joining = False, ""
            self.changed.notify_all()

    # -- The writer -----------------------------------------------------------

    def send_typed(self) -> None:
        """Act on each typed line; at the end of input (Ctrl-D), leave (spec §5.1)."""
        if self.first_nickname is not None and not self.introduce(self.first_nickname):
            return
        for typed in self.typed:
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
            phase, offering = self.phase, self.offering
            if phase is Phase.WAITING and not is_command(typed):
                self.held.append(typed)
        if offering:
            return self.answer_offer(typed)
        if phase is Phase.NICKNAME:
            return self.name_typed(typed)
        if typed.partition(" ")[0] == "/delete" and phase is not Phase.CLOSED:
            return self.delete_account(typed)
        if BACK_TO_PAIRING.get(typed) is phase:
            self.back_to_pairing(phase, typed)
        elif room_to_join(typed) and phase is not Phase.CLOSED:
            self.send_join(typed, room_to_join(typed))
        elif phase is not Phase.CLOSED and (phase is not Phase.WAITING or is_command(typed)):
            self.send_line(typed)
        return phase is not Phase.CLOSED

    def name_typed(self, typed: str) -> bool:
        """Act on a line typed at the Nickname prompt: a nickname, or /login NICK or /register NICK.

        Return False once the session is over.
        """
        verb, _, nickname = typed.partition(" ")
        if verb not in ACCOUNT_VERBS:
            return self.introduce(typed)
        if not self.passwords_allowed:
            self.screen.info(PLAIN_TCP)
        elif not protocol.NICKNAME_RE.fullmatch(nickname):  # "/login alice s3cret" shows the password
            self.screen.info(ACCOUNT_USAGE)
        else:
            password = read_password(self.ask_password, self.screen.info, nickname, ACCOUNT_VERBS[verb])
            if password is None:
                self.screen.info(NO_PASSWORD)
                return True
            with self.changed:
                self.account = Account(nickname, ACCOUNT_VERBS[verb], password)
            return self.introduce(nickname)
        return True

    def introduce(self, nickname: str) -> bool:
        """Send a nickname, or log in (or register) as ``nickname``; while the password is refused, ask again.

        Return False if the user gives up, which ends the session.
        """
        tries = 1
        self.send_nickname(nickname)
        while self.password_refused():
            password = self.ask_again() if tries < PASSWORD_TRIES else None
            if password is None:
                self.screen.info(LAST_TRY if tries == PASSWORD_TRIES else NO_PASSWORD)
                with self.changed:
                    self.exit_status = 1
                return self.leave()
            tries += 1
            self.send_nickname(nickname)
        return True

    def password_refused(self) -> bool:
        """Say whether the server refused the password of the first line sent, and is still listening."""
        with self.changed:
            return self.phase is Phase.NICKNAME and self.refusal in PASSWORD_REFUSALS

    def ask_again(self) -> Optional[str]:
        """Ask for the account's password again, and keep it; return None if none is given."""
        with self.changed:
            account = self.account
        assert account is not None  # only a line with a password has it refused
        password = read_password(self.ask_password, self.screen.info, account.nickname, account.new)
        if password is not None:
            with self.changed:
                self.account = account._replace(password=password)
        return password

    def delete_account(self, typed: str) -> bool:
        """Delete our account once the user confirms and gives its password (spec §5.16); False at Ctrl-D."""
        with self.changed:
            account = self.account
        if typed != "/delete":
            self.screen.info(DELETE_ALONE)
            return True
        if account is None:
            self.screen.info(SENTENCES[Notice.NOT_LOGGED_IN])
            return True
        self.screen.info(DELETE_WARNING % account.nickname)
        answer = self.ask_typed(DELETE_PROMPT % account.nickname)
        if answer is None:
            return self.leave()
        password = None
        if answer.strip().lower() == "yes":
            password = read_password(self.ask_password, self.screen.info, account.nickname, new=False)
        if password is None:
            self.screen.info(NOT_DELETED)
        else:
            self.send_line("/delete " + password)
        return True

    def ask_typed(self, question: str) -> Optional[str]:
        """Ask ``question`` at the prompt and return the line typed; None at the end of input."""
        with self.changed:
            self.asking = question
        self.update_prompt()
        try:
            return next(self.typed, None)
        finally:
            with self.changed:
                self.asking = ""
            self.update_prompt()

    def wait_for_answer(self) -> None:
        """Wait until the nickname just sent has its answer, so the next prompt says where lines go.

        A server that ends the session (#server_full) does not answer: CLOSED
        ends the wait too.  The reader sets the new prompt as well, but only
        after it has woken this thread, which might draw the old one first.
        """
        with self.changed:
            self.changed.wait_for(self.answered)
        self.update_prompt()

    def answered(self) -> bool:
        """Say whether the nickname or /join sent has its answer or never will; call with ``changed`` held."""
        return not (self.nickname_pending or self.joining) or self.phase is Phase.CLOSED

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
            self.sock, self.partner, self.owed = sock, "", 0
            self.phase = Phase.NICKNAME
            self.offering = False
            self.changed.notify_all()
        self.start_reader()
        return self.introduce(self.nickname)

    def back_to_pairing(self, leaving: Phase, command: str) -> None:
        """Send /next or /leave, and hold the lines typed from now until the next partner (spec §5.7, §5.12).

        The phase becomes WAITING before the command goes out, under the
        send lock as in start_chatting, so no message meant for the next
        partner can reach the old partner or room, or the server while it
        has none.  The server says ``#left_`` after /leave; after /next it
        says nothing of the partner left, so the client does.
        """
        with self._send_lock:
            with self.changed:
                if self.phase is not leaving:
                    return  # the partner left first: the reader has said so
                self.phase = Phase.WAITING
                self.changed.notify_all()
            self.update_prompt()
            if leaving is Phase.CHATTING:
                self.screen.info("You left %s; looking for a new partner…" % self.partner)
            self._send(command)

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
        self.screen.info(*unsent(held, "nobody joined"), "Leaving.")
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
        """Send a nickname, or the account's /login or /register, and wait for the server's verdict."""
        with self.changed:
            self.nickname_pending = True
            self.proposed = nickname
            self.refusal = None
            line = self.account.first_line(nickname) if self.account else nickname
        self.send_line(line)
        self.wait_for_answer()

    def send_join(self, typed: str, room: str) -> None:
        """Send a /join and wait for the server to let us in or not (spec §5.10), at most JOIN_TIMEOUT.

        A later answer is followed as any notice is.  Lines held for a partner
        found meanwhile are then dropped: the /join may yet put them in the room.
        """
        self.send_line(typed, joining=room)
        with self.changed:
            answered = self.changed.wait_for(self.answered, JOIN_TIMEOUT)
            held = [] if answered else self.take_held_for_partner()
            self.joining = ""
        self.update_prompt()
        if not answered:
            why = "the /join may yet take you into #%s" % room
            self.screen.info(UNANSWERED % room, *unsent(held, why))

    def start_chatting(self) -> None:
        """Enter the chatting phase and send the held lines before any typed later.

        The send lock is taken before the phase changes, so a writer that
        sees CHATTING and sends at once queues behind the held lines.  While
        a /join waits for its answer they stay held, as the server may have
        paired us before it read the /join: its answer decides where they go.
        """
        with self._send_lock:
            with self.changed:
                self.phase = Phase.CHATTING
                self.nickname_pending = False
                held = [] if self.joining else self.take_held_for_partner()
                self.changed.notify_all()
            for line in held:
                self._send(line)

    def send_line(self, text: str, joining: str = "") -> None:
        """Send one line, whole, between other threads' lines; ``joining`` names the room of a /join."""
        with self._send_lock:
            self._send(text, joining)

    def _send(self, text: str, joining: str = "") -> None:
        """Write one line and count the answer it is owed; call with the send lock held.

        The count (and for a /join, ``joining``) changes in one step before the
        line goes out, for its answer to find.  A dead connection is the
        reader's to report.
        """
        with self.changed:
            if owes_an_answer(text, self.phase):
                self.owed += 1
            if joining:
                self.joining = joining
        with contextlib.suppress(OSError):
            self.sock.sendall(encoded(text) + protocol.LF)


def encoded(line: str) -> bytes:
    """Return a typed line as it goes on the wire (spec §2.4)."""
    return line.encode("utf-8", "replace")


def server_lines(sock: Stream) -> Iterator[str]:
    """Yield each line the server sends, decoded, until it closes."""
    buffer = protocol.LineBuffer(protocol.MAX_SERVER_LINE_OCTETS)
    while True:
        data = sock.recv(protocol.MAX_SERVER_LINE_OCTETS + 2)
        if not data:
            return
        for line in buffer.feed(data):
            if isinstance(line, bytes):
                yield line.decode("utf-8", "replace")


def connect(host: str, port: int) -> socket.socket:
    """Connect to the server, waiting at most CONNECT_TIMEOUT; reads then block as long as they need."""
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    sock.settimeout(None)
    return sock


def open_stream(host: str, port: int, context: Optional[ssl.SSLContext]) -> Stream:
    """Connect to the server, over TLS if given a context, waiting at most CONNECT_TIMEOUT for each.

    Raise tls.TLSError, whose message is one line, if TLS cannot be set up.
    """
    sock = connect(host, port)
    if context is None:
        return sock
    try:
        return tls.wrap_client_socket(sock, context, host, time.monotonic() + CONNECT_TIMEOUT)
    except OSError:
        sock.close()
        raise


def tls_advice(error: tls.TLSError) -> str:
    """Say what to do about a TLS failure, in one sentence."""
    if isinstance(error, tls.NotTLS):
        return "That server does not speak TLS: connect without --tls."
    if isinstance(error, tls.HandshakeTimeout):
        return "Is that a mechat server, serving TLS?"
    return "Is --cafile the authority that signed the server's certificate?"


def opened(host: str, port: int, context: Optional[ssl.SSLContext]) -> Optional[Stream]:
    """Connect to the server, over TLS if given a context; or say in one line why not, and return None."""
    try:
        return open_stream(host, port, context)
    except tls.TLSError as error:
        print("mechat: no TLS with %s:%d: %s. %s" % (host, port, error, tls_advice(error)), file=sys.stderr)
    except OSError as error:
        reason = error.strerror or str(error)
        print(
            "mechat: cannot connect to %s:%d (%s). Is a server running there? Start one with 'mechat serve'."
            % (host, port, reason),
            file=sys.stderr,
        )
    return None


def account_problem(account: Account, host: str, passwords_allowed: bool) -> str:
    """Say in one line why ``account`` cannot be used with ``host``, before asking for a password; or ""."""
    if not protocol.NICKNAME_RE.fullmatch(account.nickname):
        return "%r is not a nickname: use 1 to 30 letters, digits or punctuation, with no spaces" % (
            account.nickname
        )
    if not passwords_allowed:
        return (
            "not sending your password unencrypted to %s: add --tls if the server serves TLS, or --insecure"
            " to send it anyway, where anyone on the way can read it" % host
        )
    return ""


def with_password(account: Account, ask: PasswordReader, shown: Screen) -> Optional[Account]:
    """Ask for the account's password (twice for a new one) before connecting, or None if none is given.

    Before, because the server gives a connection a time to name itself (spec §9.2).
    """
    password = read_password(ask, shown.info, account.nickname, account.new)
    return None if password is None else account._replace(password=password)


def main(
    host: str,
    port: int,
    nickname: Optional[str],
    color: bool,
    context: Optional[ssl.SSLContext] = None,
    account: Optional[Account] = None,
    insecure: bool = False,
    ask_password: PasswordReader = getpass.getpass,
) -> int:
    """Connect, over TLS if given a context, log in if given an account, chat, and return the exit status."""
    interactive = sys.stdin.isatty()
    shown = Screen(sys.stdout, use_color(color, sys.stdout), interactive)
    passwords_allowed = context is not None or insecure or is_this_machine(host)
    if account is not None:
        problem = account_problem(account, host, passwords_allowed)
        if problem:
            print("mechat: %s." % problem, file=sys.stderr)
            return 2
        account = with_password(account, ask_password, shown)
        if account is None:
            print("mechat: no password was given, so nothing was sent.", file=sys.stderr)
            return 1
    sock = opened(host, port, context)
    if sock is None:
        return 1
    completer = Completer()
    keyboard = keyboard_lines(sys.stdin, interactive, shown, completer.complete)
    client = ChatClient(
        sock,
        keyboard,
        shown,
        nickname,
        lambda: open_stream(host, port, context),
        completer,
        account,
        ask_password,
        passwords_allowed,
    )
    with terminal_restored():
        return client.run()
