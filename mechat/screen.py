"""The terminal side of the client: what it shows, and how you type.

:mod:`mechat.client` speaks the protocol; this module only meets the
person at the keyboard.  It holds the client's words (the sentence it shows
for each notice, the help, the offer of a new partner), the
:class:`Screen` that prints them with a time stamp without garbling a
half-typed line, and line editing: readline's Tab completion of commands
and nicknames (:class:`Completer`), where there is a readline.

Both of the client's threads print, and readline calls the completer from
the writer's ``input()`` while the reader learns nicknames, so the
:class:`Screen` and the :class:`Completer` each have a lock of their own.
"""

import contextlib
import sys
import threading
import time
from typing import Callable, Iterable, List, Optional, Set, TextIO

from mechat.protocol import Notice

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
