"""The terminal side of the client: what it shows.

:mod:`mechat.client` speaks the protocol and keeps the session's state; this
module and :mod:`mechat.keyboard` meet the person at the terminal.  This
one holds the client's words (the sentence it shows for each notice, the
help, the offer of a new partner, the prompt that says where a typed line
will go) and the :class:`Screen` that shows each notice in those words,
with a time stamp, without garbling a half-typed line.

The client tells the screen where the session is as a :class:`Place` (its
phase, our nickname, the partner, the room), which is all a sentence or a
prompt ever names besides the notice itself.

Both of the client's threads print, so the :class:`Screen` has a lock of
its own.

Every line shown starts with the time it happened, in the user's own time
zone: the time it is shown, except for a message kept while the user was
away (spec §5.14), which starts with the day and time it was sent.
"""

import contextlib
import os
import shutil
import sys
import threading
import time
from datetime import datetime, timezone, tzinfo
from typing import Callable, ClassVar, Dict, List, NamedTuple, Optional, TextIO, Tuple

from mechat.protocol import NOTICES_ABOUT_A_MEMBER, NOTICES_WITH_ROOM, Notice, NoticeLine, Phase

#: Every command the client knows, as its usage and what it does, one line
#: each: /help prints this table, and Tab completes its command names.
COMMANDS = (
    ("/who [PATTERN]", "list who is online; * matches any run of characters, ? any one"),
    (
        "/msg NICK TEXT",
        "send TEXT to NICK alone, wherever they are; an account away gets it at its next login",
    ),
    ("/all TEXT", "send TEXT to everyone online (by default at most once a second)"),
    ("/next", "leave your partner and look for a new one"),
    ("/nickname NEW", "change your nickname"),
    ("/create ROOM", "make a room (1 to 30 letters, digits or -); you are not put in it"),
    ("/rooms [PATTERN]", "list the rooms; the PATTERN works as in /who"),
    ("/join ROOM", "leave your partner or room for ROOM: what you type then goes to everyone in it"),
    ("/members", "list who is in your room"),
    ("/leave", "leave your room and look for a partner"),
    ("/users [PATTERN]", "list the accounts, online or away; the PATTERN works as in /who"),
    ("/delete", "delete your account and the messages kept for it; asks for your password"),
    ("/login NICK", "instead of a nickname: log in to the account NICK; asks for its password"),
    ("/register NICK", "instead of a nickname: make an account called NICK; asks for a password"),
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

HELP = "Commands (Tab completes them, nicknames, and room names after /join):\n" + "\n".join(
    "  %-16s %s" % (usage, what) for usage, what in COMMANDS
)

#: How the client explains each notice (spec §6).  ``{nick}`` is the
#: nickname that the notice carries and ``{room}`` its room (or else ours);
#: ``{new}`` is a renamed member's new nickname; ``{partner}`` is the
#: partner's nickname and ``{me}`` our own.  The notices that carry a text
#: or a list are shown by Screen.notice_views instead.
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
    Notice.ROOM_CREATED: "Room #{room} is made. Type /join {room} to go in.",
    Notice.ROOM_EXISTS: "There is a room #{room} already. Type /join {room} to go in.",
    Notice.TOO_MANY_ROOMS: "The server has as many rooms as it allows; no room was made. /rooms lists them.",
    Notice.INVALID_ROOM: (
        "That is not a room name: use 1 to 30 letters, digits or -, with no # in front (as in /join lab-3)."
    ),
    Notice.JOINED: (
        "You are in #{room}: what you type goes to everyone in it. /members lists them, /leave leaves."
    ),
    Notice.ENTERED: "{nick} entered #{room}.",
    Notice.NO_SUCH_ROOM: "There is no room #{room}. /rooms lists the rooms; /create {room} makes it.",
    Notice.ROOM_FULL: "#{room} is full; you are where you were. Try again later.",
    Notice.NOT_IN_ROOM: "You are not in a room. /rooms lists the rooms, and /join ROOM goes into one.",
    Notice.LEFT: "You left #{room}.",
    Notice.EXITED: "{nick} left #{room}.",
    Notice.RENAMED: "{nick} is now known as {new} in #{room}.",
    Notice.REGISTERED: (
        "Your account {nick} is made, and you are logged in. Next time: mechat chat --login {nick}"
    ),
    Notice.INVALID_PASSWORD: (
        "The server refused that password: use 8 to 64 visible ASCII characters, with no spaces."
    ),
    Notice.LOGGED_IN: "You are logged in as {nick}.",
    Notice.LOGIN_FAILED: "Wrong password: your account is not deleted.",
    Notice.SESSION_REPLACED: "You logged in somewhere else; this session is closed.",
    Notice.STORED_FOR: "{nick} is away: your message is kept for them.",
    Notice.MAILBOX_FULL: (
        "{nick} is away, and has as many messages waiting as the server keeps; that message was not sent."
    ),
    Notice.ACCOUNT_DELETED: (
        "Your account is deleted, with every message kept for it. You go on as a guest called {me}."
    ),
    Notice.NOT_LOGGED_IN: "You are not logged in, so there is no account to delete.",
    Notice.NICKNAME_LOCKED: "You are logged in as {me}: an account's nickname is its name, and stays.",
    Notice.TLS_REQUIRED: "This server speaks TLS: run with --tls.",
}

#: Sentences that say something else in one phase.  Before a nickname is
#: accepted, the only commands are /login, /register and /quit (spec §7.1);
#: a taken nickname (spec §3.1) asks for another one, and #login_failed
#: answers a login rather than a /delete (spec §5.14, §5.16).  In a room,
#: /next is refused (spec §5.7).
PHASE_SENTENCES = {
    Phase.NICKNAME: {
        Notice.INVALID_COMMAND: (
            "Choose a nickname first, or /login NICK or /register NICK; until then the only other command"
            " is /quit."
        ),
        Notice.NICKNAME_TAKEN: "The nickname {me} is taken. Type another nickname.",
        Notice.LOGIN_FAILED: "Wrong password, or there is no account called {me}.",
    },
    Phase.IN_ROOM: {
        Notice.INVALID_COMMAND: (
            "Unknown or incomplete command, or one for a pair: in a room, /leave takes you back to"
            " finding a partner. /help lists the commands."
        ),
    },
}

#: How each list answer is headed (spec §6.1): when it is empty, when it
#: holds one name, and when it holds ``{count}``; ``{room}`` is ours.
LIST_HEADINGS = {
    Notice.ONLINE: ("Nobody online matches.", "1 person online matches", "{count} people online match"),
    Notice.ROOMS: ("No room matches.", "1 room matches", "{count} rooms match"),
    Notice.MEMBERS: ("Nobody is in #{room}.", "1 person is in #{room}", "{count} people are in #{room}"),
    Notice.ACCOUNTS: ("No account matches.", "1 account matches", "{count} accounts match"),
}

#: The prompt in each phase: it says where a typed line will go.
PROMPTS = {
    Phase.NICKNAME: "Nickname: ",
    Phase.WAITING: "{me} (waiting)> ",
    Phase.CHATTING: "{me} → {partner}> ",
    Phase.IN_ROOM: "{me} → #{room}> ",
    Phase.CLOSED: "",
}

#: What the client asks once the partner has left and the connection is over.
OFFER = "Press Enter to find a new partner, or Ctrl-D to quit."

#: What the client says after /join took it from a partner (spec §5.10): the server tells only the partner.
PARTNER_LEFT = "You left %s, who is told that you have left the chat."

#: What the client says when a server refuses a well-formed /join as an unknown command (spec §5.3).
NO_ROOMS = "This server does not know /join: it has no rooms."

#: What the client says when /join has no answer in time; it then reads the keyboard again.
UNANSWERED = "The server has not answered /join %s yet; until it does, what you type goes where it went."

#: What the client asks when it needs a password (spec §3.3); getpass shows it, and never echoes the answer.
PASSWORD_PROMPT = "Password for %s: "
NEW_PASSWORD_PROMPT = "Choose a password for %s (8 to 64 characters): "
SAME_PASSWORD_PROMPT = "The same password again: "

#: What the client says of a password refused before it is sent.
NOT_A_PASSWORD = "A password is 8 to 64 visible ASCII characters, with no spaces; that is not one. Try again."
PASSWORDS_DIFFER = "The two passwords differ. Try again."

#: What the client says of accounts at the Nickname prompt (spec §5.13, §5.14).
ACCOUNT_USAGE = (
    "Type /login NICK or /register NICK with no password: the client then asks for it, and does not"
    " show it. That line was not sent."
)
NO_ACCOUNTS = "This server has no accounts: type a nickname to chat as a guest."
ANOTHER_NAME = "Your account is made with the next nickname you type, and the password you chose."
PLAIN_TCP = (
    "A password is sent only over TLS or to this machine, and this connection is neither. Run"
    " mechat chat with --tls, or with --insecure to send it anyway, where anyone on the way can read it."
)
NO_PASSWORD = "No password was given, so nothing was sent."
LAST_TRY = "That was the last try, so you are not logged in."

#: What the client says and asks around /delete (spec §5.16).
DELETE_ALONE = (
    "Type /delete alone: the client then asks for your password, and does not show it."
    " That line was not sent."
)
DELETE_WARNING = "This deletes the account %s, and every message kept for it, for good. Type yes to go on."
DELETE_PROMPT = "Delete %s? (yes/no) "
NOT_DELETED = "Your account is kept."


def kept_count(count: int) -> str:
    """Say how many messages a login brought from the server's store (spec §5.14)."""
    if count == 0:
        return "No message was kept for you while you were away."
    return "%d message%s kept for you while you were away." % (count, " was" if count == 1 else "s were")


#: How the server writes the time a message was kept (spec §5.14: stored-time), always in UTC.
STORED_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

#: Days back within which a kept message's date is shown without its year, as ``1 Dec``: about six
#: months, as ls -l does, so that a day and month never stand for two dates.
RECENT_DAYS = 180

#: Month names, the same in every locale, as the rest of the client's words are English.
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: Stand-ins for the characters the client itself uses in prompts and sentences, for an output that
#: cannot encode them (a Windows pipe or file is cp1252).
PLAIN = str.maketrans({"→": "->", "…": "..."})


def member_of(notice: NoticeLine) -> Tuple[str, str]:
    """Return the room and the nickname of a notice about a member: a room has no ``_`` (spec §3.2)."""
    room, _, nickname = notice.argument.partition("_")
    return room, nickname


def when_kept(stored_time: str, now: datetime, zone: Optional[tzinfo] = None) -> str:
    """Say when a kept message was sent, in ``zone`` (None: this machine's): ``yesterday 10:02`` (spec §5.14).

    The day is ``today``, ``yesterday``, ``1 Dec`` within RECENT_DAYS, and
    otherwise (or in the future, by a clock that is off) ``2026-11-03``.
    A time the server wrote wrongly is shown as it came.
    """
    try:
        sent = datetime.strptime(stored_time, STORED_TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return stored_time
    sent, now = sent.astimezone(zone), now.astimezone(zone)  # astimezone(None) keeps summer time right
    days = (now.date() - sent.date()).days
    if days == 0:
        day = "today"
    elif days == 1:
        day = "yesterday"
    elif 1 < days < RECENT_DAYS:
        day = "%d %s" % (sent.day, MONTHS[sent.month - 1])
    else:
        day = sent.date().isoformat()
    return "%s %02d:%02d" % (day, sent.hour, sent.minute)


def utc_now() -> datetime:
    """Return the time now, with its time zone."""
    return datetime.now(timezone.utc)


class Place(NamedTuple):
    """Where the session is, as the client knows it: all a sentence or the prompt may name."""

    phase: Phase
    me: str = ""  # our nickname, or while the phase is NICKNAME the one proposed
    partner: str = ""
    room: str = ""

    def prompt(self) -> str:
        """Return the prompt that says where a line typed now will go."""
        return PROMPTS[self.phase].format(**self._asdict())

    def words_for(self, notice: NoticeLine) -> Dict[str, str]:
        """Return what the sentence of ``notice`` may name, here."""
        words = {"nick": notice.argument, "new": notice.text, "room": self.room, "me": self.me}
        words["partner"] = self.partner or "Your partner"
        if notice.name in NOTICES_WITH_ROOM:
            words["room"] = notice.argument
        elif notice.name in NOTICES_ABOUT_A_MEMBER:
            words["room"], words["nick"] = member_of(notice)
        return words


class Screen:
    """Where the reader shows lines: timestamps, colour, the prompt, and the user's half-typed line.

    ``prompt`` is what input() shows next.  While input() waits (``reading``),
    each line shown is printed above the prompt, which is drawn again with
    what was typed so far.  A new prompt shows with the next line shown:
    the client changes it just before it shows why.  After a line of the
    user's own that moves the session (a nickname, /join, /next, /leave)
    the client calls input() only once it has moved, so the new prompt is
    input()'s own.  A move from elsewhere (a partner found, renamed or
    gone) comes while input() waits, and readline keeps the prompt it was
    given for redraws of its own (Ctrl-L, a line that wraps) until Enter.

    A local server answers a command before readline has finished drawing
    the next prompt; a line printed in the middle of that drawing would cut
    the prompt in two.  So where readline says when it draws (its startup
    and pre-input hooks, which :func:`mechat.keyboard.enable_line_editing`
    installs), a line waits for the drawing to end, and ``reading`` starts
    only then.
    """

    #: Seconds a line to show waits for readline to draw its prompt: a
    #: bound, should a readline ever call one hook and not the other.
    DRAW_WAIT = 0.2

    BOLD_CYAN, DIM, RESET = "\x1b[1;36m", "\x1b[2m", "\x1b[0m"
    #: The width of the time stamp, "[10:02] ", that starts every line shown.
    STAMP_WIDTH = 8

    def __init__(
        self,
        out: TextIO,
        color: bool,
        interactive: bool,
        now: Callable[[], datetime] = utc_now,
        zone: Optional[tzinfo] = None,
    ) -> None:
        self.out = out
        self.color = color
        self.interactive = interactive
        self.now = now  # the clock and the time zone (None: this machine's) that date kept messages
        self.zone = zone
        self.prompt = ""
        self.reading = False  # input() has drawn the prompt and waits for a line
        self.hooked = False  # readline's hooks say when the prompt is drawn
        self._drawing = False  # readline is drawing the prompt
        self._lock = threading.Lock()  # the reader and the writer both print
        # Notified by prompt_drawn() when readline has drawn the prompt;
        # waited on by show(), which would otherwise print in the middle of it.
        self._drawn = threading.Condition(self._lock)

    def read_line(self) -> str:
        """Read one line typed at the prompt; EOFError at the end of input (Ctrl-D).

        Between Enter and the next input() nothing is drawn after a line
        shown: input() draws the prompt itself, and would draw it twice.
        input() writes the prompt to sys.stdout, so the prompt is made fit
        for that.
        """
        with self._lock:
            self.reading = not self.hooked  # else prompt_drawn() says when
            prompt = encodable(self.prompt, sys.stdout)
        try:
            return input(prompt)
        finally:
            with self._lock:
                self.reading = False

    def prompt_drawing(self) -> None:
        """Note that readline is about to draw the prompt (its startup hook)."""
        with self._lock:
            self._drawing = True

    def prompt_drawn(self) -> None:
        """Note that readline has drawn the prompt and waits for keys (its pre-input hook)."""
        with self._drawn:
            self._drawing = False
            self.reading = True
            self._drawn.notify_all()

    def message(self, nick: str, text: str, to: str = "", room: str = "", kept: str = "") -> None:
        """Show a message marked with its sender, and with whom it was for if not only the partner.

        A message ``kept`` while we were away is stamped with when it was sent instead of now.
        """
        name = self.BOLD_CYAN + nick + self.RESET if self.color else nick
        sender = "%s → %s" % (name, to) if to else name
        if kept:
            sender += " (while you were away)"
        self.show("%s%s: %s" % ("#%s " % room if room else "", sender, text), kept)

    def info(self, *texts: str) -> None:
        """Show sentences from the client itself, each on a line of its own."""
        for text in texts:
            self.show(self.DIM + text + self.RESET if self.color else text)

    def show(self, text: str, when: str = "") -> None:
        """Print a line stamped with the time now, or ``when``, without garbling what the user is typing.

        The lines of a ``text`` that has several are indented under the
        first, so that the time stamp stands alone at the left.
        """
        stamp = "[%s] " % (when or time.strftime("%H:%M"))
        stamped = stamp + text.replace("\n", "\n" + " " * len(stamp)) + "\n"
        # Output may be gone (a closed pipe, as in `mechat chat | head`): then there is no one to tell.
        with self._drawn, contextlib.suppress(OSError, ValueError):
            self._drawn.wait_for(lambda: not self._drawing, self.DRAW_WAIT)
            if self.interactive:  # clear the prompt line, print, redraw the prompt and typed text
                again = self.prompt + typed_so_far() if self.reading else ""
                stamped = "\r\x1b[K" + stamped + again
            self.out.write(encodable(stamped, self.out))
            self.out.flush()

    # -- Notices --------------------------------------------------------------

    def notice(self, notice: NoticeLine, place: Place) -> None:
        """Show a notice from the server, as the session was when it came: in words, never raw."""
        view = self.notice_views.get(notice.name, Screen.sentence)
        view(self, notice, place)

    def sentence(self, notice: NoticeLine, place: Place) -> None:
        """Show a notice as its sentence, which may depend on the phase."""
        words = PHASE_SENTENCES.get(place.phase, {}).get(notice.name) or SENTENCES.get(notice.name)
        if words is None:  # a notice of a newer protocol than this client's
            self.info("The server sent a notice this client does not know: %s" % notice.name.value)
            return
        self.info(words.format(**place.words_for(notice)))

    def direct(self, notice: NoticeLine, place: Place) -> None:
        """Show a direct message: ``alice → you: TEXT`` (spec §5.5)."""
        self.message(notice.argument, notice.text, to="you")

    def broadcast(self, notice: NoticeLine, place: Place) -> None:
        """Show a line sent to everyone: ``alice → all: TEXT`` (spec §5.6)."""
        self.message(notice.argument, notice.text, to="all")

    def broadcast_receipt(self, notice: NoticeLine, place: Place) -> None:
        """Say how many people an /all reached (spec §5.6)."""
        count = int(notice.argument)
        self.info("Sent to %s." % people(count) if count else "Sent to nobody: no one else is online.")

    def kept_message(self, notice: NoticeLine, place: Place) -> None:
        """Show a message kept while we were away (spec §5.14).

        It reads ``[yesterday 10:02] alice (while you were away): TEXT``.
        """
        stored_time, _, text = notice.text.partition(" ")
        self.message(notice.argument, text, kept=when_kept(stored_time, self.now(), self.zone))

    def room_line(self, notice: NoticeLine, place: Place) -> None:
        """Show a line said in a room: ``#lab-3 alice: TEXT`` (spec §7.6)."""
        room, nickname = member_of(notice)
        self.message(nickname, notice.text, room=room)

    def listing(self, notice: NoticeLine, place: Place) -> None:
        """Show a list (/who, /rooms, /members, /users): how many, then the names in columns (spec §6.1)."""
        names = notice.text.split()
        if notice.name is Notice.ROOMS:
            names = ["#" + room for room in names]
        heading = list_heading(LIST_HEADINGS[notice.name], int(notice.argument), len(names), place.room)
        rows = in_columns(names, shutil.get_terminal_size().columns - self.STAMP_WIDTH)
        self.info("\n".join([heading, *rows]))

    #: How each notice is shown where one sentence of SENTENCES will not do.
    notice_views: ClassVar[Dict[Notice, Callable[["Screen", NoticeLine, Place], None]]] = {
        Notice.FROM: direct,
        Notice.ALL_FROM: broadcast,
        Notice.BROADCAST: broadcast_receipt,
        Notice.IN: room_line,
        Notice.ONLINE: listing,
        Notice.ROOMS: listing,
        Notice.MEMBERS: listing,
        Notice.ACCOUNTS: listing,
        Notice.STORED_FROM: kept_message,
    }


def encodable(text: str, out: TextIO) -> str:
    """Return ``text`` as ``out`` can encode it: the client's arrows made plain (PLAIN), anything else ``?``.

    Writing a character the encoding lacks raises UnicodeEncodeError, which
    would lose the whole line, or in input() kill the thread reading keys.
    """
    encoding = getattr(out, "encoding", None) or "utf-8"  # a StringIO has none: it holds any text
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.translate(PLAIN).encode(encoding, "replace").decode(encoding)
    except LookupError:  # an encoding Python does not know: nothing to check against
        pass
    return text


def use_color(requested: bool, out: TextIO) -> bool:
    """Colour only a terminal, and never when NO_COLOR is set (no-color.org)."""
    return requested and out.isatty() and not os.environ.get("NO_COLOR")


def unsent(held: List[str], why: str) -> List[str]:
    """Say how many held lines will never be sent, and why: they are dropped, but never silently."""
    return ["%d line(s) were not sent: %s." % (len(held), why)] if held else []


def typed_so_far() -> str:
    """Return the text the user has typed at the prompt, where readline can tell."""
    readline = sys.modules.get("readline")
    return str(readline.get_line_buffer()) if readline else ""


def in_columns(names: List[str], width: int) -> List[str]:
    """Lay ``names`` out down columns, as ls does, in as many columns as fit in ``width`` characters."""
    if not names:
        return []
    cell = max(len(name) for name in names) + 2  # two spaces between columns
    across = max(1, (width + 2) // cell)  # the last column needs no spaces after it
    rows = -(-len(names) // across)  # rounded up
    return ["".join(name.ljust(cell) for name in names[row::rows]).rstrip() for row in range(rows)]


def list_heading(words: Tuple[str, str, str], count: int, shown: int, room: str = "") -> str:
    """Say how many names a list counts, and whether the server's list was cut (spec §6.1).

    ``words`` are a row of :data:`LIST_HEADINGS`; ``room`` is ours.
    """
    none, one, many = words
    if count == 0:
        return none.format(room=room)
    heading = (one if count == 1 else many).format(count=count, room=room)
    if shown < count:
        heading += "; the server's list stops after the first %d" % shown
    return heading + ":"


def people(count: int) -> str:
    """Return ``count`` people in words: 1 person, 3 people."""
    return "1 person" if count == 1 else "%d people" % count
