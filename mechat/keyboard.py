"""The keyboard side of the client: line editing, and what Tab completes.

:mod:`mechat.screen` prints; this module reads.  Where Python has a
readline, :func:`enable_line_editing` turns it on, so that input() edits
lines and completes at Tab, and lets it tell the :class:`~mechat.screen.Screen`
when it draws the prompt.  :func:`keyboard_lines` yields what is typed,
from a terminal or a pipe.

The :class:`Completer` learns names from the notices the reader sees, in
the reader's thread, while readline asks it for completions in the
writer's, inside input(); so its names have a lock of their own.  Tab
completes a command after ``/``, a room after ``/join`` and a space, and otherwise
a nickname.

Passwords are never read as typed lines: :func:`read_password` asks
through ``getpass.getpass``, which does not echo them, or through a
stand-in that a test hands the client.  getpass turns the terminal's echo
off while it waits, so :func:`terminal_restored` puts the terminal back as
it was when the client ends, should it end while a password is being asked.
"""

import contextlib
import os
import sys
import threading
from typing import Callable, Iterator, List, Optional, Set, TextIO, Tuple

from mechat import protocol
from mechat.protocol import NOTICES_ABOUT_A_MEMBER, NOTICES_WITH_ROOM, Notice, NoticeLine
from mechat.screen import (
    COMMAND_COMPLETIONS,
    NEW_PASSWORD_PROMPT,
    NOT_A_PASSWORD,
    PASSWORD_PROMPT,
    PASSWORDS_DIFFER,
    SAME_PASSWORD_PROMPT,
    Screen,
    member_of,
)

#: Tries at typing a password that is one, or that the server accepts: three, as sudo gives.
PASSWORD_TRIES = 3

#: What asks for a password without echoing it: getpass.getpass, or a test's stand-in.
PasswordReader = Callable[[str], str]

#: The notices that name a room that exists, spelled as its creator spelled
#: it; ``#no_such_room_`` only echoes what was typed (spec §5.10).
EXISTING_ROOM_NOTICES = tuple(name for name in NOTICES_WITH_ROOM if name is not Notice.NO_SUCH_ROOM)

#: The notices whose argument is another client's nickname, worth offering at Tab.
NOTICES_NAMING_OTHERS = (
    Notice.FROM,
    Notice.ALL_FROM,
    Notice.MATCHED_TO,
    Notice.PARTNER_RENAMED,
    Notice.STORED_FROM,
    Notice.STORED_FOR,
    Notice.MAILBOX_FULL,
)


def typed_before_word() -> str:
    """Return what the user typed before the word that Tab completes, where readline can tell."""
    readline = sys.modules.get("readline")
    return str(readline.get_line_buffer()[: readline.get_begidx()]) if readline else ""


class Completer:
    """Tab completion: a word after ``/`` is a command, the one after ``/join`` a room, any other a nickname.

    The reader learns names as notices name them, while readline calls
    :meth:`complete` in the writer's ``input()``, so the names have a lock
    of their own.  Names match in any case, as the server compares them
    (spec §3.1, §3.2).  A room, once made, lasts until the server stops
    (spec §5.8), so every room ever named stays a completion.
    """

    def __init__(self) -> None:
        self._nicknames: Set[str] = set()
        self._rooms: Set[str] = set()
        self._lock = threading.Lock()
        self._matches: List[str] = []  # for the word readline is asking about

    def learn_from(self, notice: NoticeLine) -> None:
        """Remember the nicknames and rooms that a notice from the server names."""
        nicknames, rooms = names_in(notice)
        with self._lock:
            self._nicknames.update(nicknames)
            self._rooms.update(rooms)

    def candidates(self, word: str, before: str = "") -> List[str]:
        """Return every completion of ``word``, typed after ``before``, in any case.

        A nickname gets a space after it, for the text that follows; a room
        none, as nothing may follow it (spec §5.10).
        """
        if before.split() == ["/join"]:
            with self._lock:
                known = sorted(self._rooms, key=str.lower)
        elif word.startswith("/"):
            known = COMMAND_COMPLETIONS
        else:
            with self._lock:
                known = [nickname + " " for nickname in sorted(self._nicknames, key=str.lower)]
        return [name for name in known if name.lower().startswith(word.lower())]

    def complete(self, word: str, state: int) -> Optional[str]:
        """Return the ``state``-th completion of ``word``, or None after the last (readline's protocol)."""
        if state == 0:
            self._matches = self.candidates(word, typed_before_word())
        return self._matches[state] if state < len(self._matches) else None


def names_in(notice: NoticeLine) -> Tuple[List[str], List[str]]:
    """Return the nicknames and the rooms that a notice names, for Tab to complete."""
    name = notice.name
    if name in NOTICES_NAMING_OTHERS:
        return [notice.argument], []
    if name in (Notice.ONLINE, Notice.MEMBERS, Notice.ACCOUNTS):
        return notice.text.split(), []
    if name is Notice.ROOMS:
        return [], notice.text.split()
    if name in EXISTING_ROOM_NOTICES:
        return [], [notice.argument]
    if name in NOTICES_ABOUT_A_MEMBER:
        room, nickname = member_of(notice)
        return [nickname, notice.text] if name is Notice.RENAMED else [nickname], [room]
    return [], []


def enable_line_editing(
    complete: Optional[Callable[[str, int], Optional[str]]] = None, screen: Optional[Screen] = None
) -> None:
    """Load readline, where there is one, so input() edits lines, keeps the typed text and completes at Tab.

    Given the ``screen``, readline tells it when it draws the prompt.

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
    if screen is not None and hasattr(readline, "set_pre_input_hook"):  # not every build has it
        readline.set_startup_hook(screen.prompt_drawing)
        readline.set_pre_input_hook(screen.prompt_drawn)
        screen.hooked = True
    if complete is None:
        return
    readline.set_completer(complete)
    readline.set_completer_delims(" ")  # a nickname may hold any other visible character (spec §3)
    if "libedit" in (readline.__doc__ or ""):  # macOS's Python: the same module over libedit
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")


def keyboard_lines(
    stream: TextIO,
    interactive: bool,
    screen: Screen,
    complete: Optional[Callable[[str, int], Optional[str]]] = None,
) -> Iterator[str]:
    """Yield typed lines without their newline until end of input (Ctrl-D), at the prompt on a terminal."""
    if not interactive:
        for line in stream:
            yield line.rstrip("\r\n")
        return
    enable_line_editing(complete, screen)
    while True:
        try:
            yield screen.read_line()
        except EOFError:
            return


def read_password(ask: PasswordReader, say: Callable[..., None], nickname: str, new: bool) -> Optional[str]:
    """Ask for the password of the account ``nickname``, twice for a new one; None if it is not given.

    Up to PASSWORD_TRIES tries, each refused here if it is not a password
    (spec §3.3) or, for a new one, if the two differ.  End of input (Ctrl-D)
    or Ctrl-C gives up at once.
    """
    for _ in range(PASSWORD_TRIES):
        try:
            password = ask((NEW_PASSWORD_PROMPT if new else PASSWORD_PROMPT) % nickname)
            same = ask(SAME_PASSWORD_PROMPT) if new and protocol.PASSWORD_RE.fullmatch(password) else password
        except (EOFError, KeyboardInterrupt):
            return None
        if not protocol.PASSWORD_RE.fullmatch(password):
            say(NOT_A_PASSWORD)
        elif same != password:
            say(PASSWORDS_DIFFER)
        else:
            return password
    return None


@contextlib.contextmanager
def terminal_restored(path: str = "/dev/tty") -> Iterator[None]:
    """Put the terminal at ``path`` (getpass's) back as it was on entry, when the block ends.

    A session can end while the writer thread waits in getpass, with echo
    off: at Ctrl-C, or when the server closes.  The thread is a daemon, so
    getpass never gets to turn echo back on, and the shell would be left
    deaf.  Where there is no terminal, or no termios (Windows, whose getpass
    changes no setting), there is nothing to restore.
    """
    try:
        import termios

        descriptor = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except (ImportError, OSError):
        yield
        return
    try:
        saved = termios.tcgetattr(descriptor)
    except termios.error:
        os.close(descriptor)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(descriptor, termios.TCSADRAIN, saved)
        os.close(descriptor)
