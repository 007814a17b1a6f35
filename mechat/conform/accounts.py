"""The checks of protocol 2's accounts (feature ``accounts``): /register, /login, stored mail, /users.

An account is a nickname kept with a password (§3.3, §5.13): nobody else
may take it (§3.1), its owner gets it back with /login (§5.14), and what
is sent to it while it is away is kept and delivered at its next login
(§5.5, §7.7).  These checks act out each rule with the habits of
:mod:`~mechat.conform.directory`: a random tag in every nickname, so that
each run makes fresh accounts and a /users pattern finds only its own, and
markers, never waiting, to show that nothing else came.

Three things set them apart.

* **Accounts outlive the checks.**  A run leaves its accounts behind
  (about forty, their mailboxes emptied by the logins that read them), as the rooms
  feature leaves rooms; they cost the server a row each, and no later
  run can meet them, for their names carry a tag of their own.
* **Failed logins are rationed** (§9.11): a connection has five, and an
  address earns one a second after a burst of five.  The checks spend
  sixteen in all, ten of them in the two checks of the ration itself,
  which come last (§9.11 sorts last), so the server may make the later
  logins of a run wait a second each.  That is why the kit's timeout is
  a few seconds, not a few milliseconds; no check measures the wait.
* **Two checks need more than the wire.**  ``mailbox-full`` must know how
  many messages the server keeps for one account (§9.10): the spec's
  default unless told otherwise (``--mailbox-size``).  And
  ``stored-survives-restart`` must kill the server and start it again
  (§7.7), which the kit can do only to a server it started itself: given
  ``--server-command``, a shell command with ``{port}`` in it, the kit
  starts a second server of its own on a free port (``{db}``, if the
  command has it, becomes a fresh database file), stores a message there,
  kills it with SIGKILL, starts it again on the same port, and logs in.
  Without the command it is skipped, and says how to give one.  These
  settings reach the checks through :func:`configured`, which binds them
  to the checks that need them; nothing here is global.

Not checked: the per-address rate of failed logins (§9.11), which only a
clock could show, and whether a deleted account's mailbox is gone
(§5.16), which no client can see: a mailbox is emptied at every login,
and only its owner can delete the account.
"""

import contextlib
import datetime
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from functools import partial
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from mechat.conform.clients import MATCHED_TO, Client, Exchange, Failure, Session, show
from mechat.conform.core import marker, refused_once, still_chatting
from mechat.conform.diagnose import CLOSED, USER_QUIT, WAIT, Outcome, Reply, lacks_command, plural, wire
from mechat.conform.directory import (
    LIST_SHOWN,
    NICKNAME_TAKEN,
    RATE_LIMITED,
    Listing,
    Names,
    add_before_nickname,
    direct,
    nick,
    stops_early,
    too_long,
    unsorted,
)
from mechat.conform.registry import Check, CheckFunction, Stage, add, checker
from mechat.conform.rooms import refused_in_chat, split_list
from mechat.conform.runner import CannotCheck
from mechat.protocol import (
    DEFAULT_MAILBOX_SIZE,
    LF,
    MAX_NICKNAME_CHARS,
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    SP,
    Notice,
    list_line,
    stored_time,
)

FEATURE = "accounts"
check = checker(FEATURE)

#: Messages in the check of the order of a mailbox (§7.7), from two senders in turn.
ORDER_MESSAGES = 6

#: Failed logins or deletes that one connection may make; the last of them closes it (§9.11).
MAX_FAILED_LOGINS = 5

#: Seconds a ``#stored_from_`` time may be from the kit's clock: a server
#: that writes its local time with a Z is hours off, a fair clock seconds.
CLOCK_TOLERANCE = 15 * 60

#: The message that ``stored-survives-restart`` stores before it kills the server.
SURVIVOR = b"kept on disk through kill -9"

#: Seconds a server started from --server-command has to accept a connection.
SERVER_START_SECONDS = 30.0

#: Seconds between two tries to connect to a server that is starting.
START_POLL_SECONDS = 0.05

#: Characters of a server's output quoted when it does not start.
OUTPUT_SHOWN = 600

#: A text that a server could take for something else: a notice, a command, a tab, and UTF-8.
VERBATIM_TEXT = "#not a notice, /quit is no command,\ta tab, caf\u00e9 \u20ac".encode("utf-8")

REGISTERED = Notice.REGISTERED
LOGGED_IN = Notice.LOGGED_IN
LOGIN_FAILED = wire(Notice.LOGIN_FAILED)
INVALID_PASSWORD = wire(Notice.INVALID_PASSWORD)
INVALID_NICKNAME = wire(Notice.INVALID_NICKNAME)
SESSION_REPLACED = wire(Notice.SESSION_REPLACED)
ACCOUNT_DELETED = wire(Notice.ACCOUNT_DELETED)
NOT_LOGGED_IN = wire(Notice.NOT_LOGGED_IN)
NICKNAME_LOCKED = wire(Notice.NICKNAME_LOCKED)
NO_SUCH_USER = wire(Notice.NO_SUCH_USER)


# -- The kit's settings, and the checks that need them -------------------------------------


class Settings(NamedTuple):
    """What the kit is told about the server, beyond the wire (``--mailbox-size``, ``--server-command``)."""

    mailbox_size: int = DEFAULT_MAILBOX_SIZE
    server_command: Optional[str] = None


def kit_settings(mailbox_size: int = DEFAULT_MAILBOX_SIZE, server_command: Optional[str] = None) -> Settings:
    """Return the kit's settings; raise ValueError, naming the mistake, for a command without {port}."""
    if server_command is not None and "{port}" not in server_command:
        raise ValueError(
            f"--server-command {server_command!r} has no {{port}}: the kit chooses the port, and puts it"
            " where {port} is, as in --server-command 'python3 -m mechat serve --port {port} --db {db}'"
        )
    return Settings(mailbox_size, server_command)


SettingsCheck = Callable[[Settings, Session], Exchange]

#: The checks that need the settings, by id; registered with the defaults until :func:`configured`.
NEEDS_SETTINGS: Dict[str, SettingsCheck] = {}


def settings_check(
    id: str, section: str, title: str, needs: Stage
) -> Callable[[SettingsCheck], SettingsCheck]:
    """Register a check that takes the kit's settings; it runs with the defaults unless configured."""

    def register(function: SettingsCheck) -> SettingsCheck:
        NEEDS_SETTINGS[id] = function
        add(Check(id, FEATURE, section, title, partial(function, Settings()), needs))
        return function

    return register


def configured(checks: Iterable[Check], settings: Settings) -> List[Check]:
    """Return ``checks`` with ``settings`` given to every one that needs them."""
    return [
        check._replace(run=partial(NEEDS_SETTINGS[check.id], settings))
        if check.id in NEEDS_SETTINGS
        else check
        for check in checks
    ]


def add_all(rows: Iterable[Tuple[str, str, str, CheckFunction, Stage]]) -> None:
    """Register a check of accounts for each row of a table: its id, section, title, function and needs."""
    for name, section, title, run, needs in rows:
        add(Check(name, FEATURE, section, title, run, needs))


# -- Accounts and their lines ----------------------------------------------------------------


class Account(NamedTuple):
    """An account a check made: its name as registered, and its password."""

    name: str
    password: str

    @property
    def wrong_password(self) -> str:
        """Return the password in the other case: wrong, and a test of case-folding too (§3.3)."""
        return self.password.swapcase()


def new_password() -> str:
    """Return a fresh password of 15 visible characters, with letters, so its other case differs."""
    return "Pw-" + secrets.token_urlsafe(9)


def notice(name: Notice, argument: str) -> bytes:
    """Return a notice whose argument is a nickname or a count, as in ``#registered_NICK`` (§6)."""
    return wire(name, argument.encode("ascii"))


def account_line(verb: str, name: str, password: str) -> bytes:
    """Return ``/register NICK PASSWORD`` or ``/login NICK PASSWORD`` (§5.13, §5.14)."""
    return f"{verb} {name} {password}".encode("ascii")


def register(client: Client, account: Account, then: bytes = WAIT) -> Exchange:
    """Register ``account``: #registered_NICK, then ``then``, as for a nickname (§5.13)."""
    exchange = client.ask(account_line("/register", *account), notice(REGISTERED, account.name))
    client.expect(then)
    return exchange


def login(client: Client, account: Account, spelled: str = "") -> Exchange:
    """Log in to ``account``, its name written as ``spelled``; expect #logged_in_ spelled as registered."""
    line = account_line("/login", spelled or account.name, account.password)
    return client.ask(line, notice(LOGGED_IN, account.name))


def logged_in(session: Session, names: Names, role: str) -> Tuple[Client, Account]:
    """Connect and register a fresh account for ``role``; it waits, logged in (§5.13)."""
    account = Account(names.of(role), new_password())
    client = session.connect(account.name)
    register(client, account)
    return client, account


def away(session: Session, names: Names, role: str) -> Account:
    """Register a fresh account and /quit: it is away, so what is sent to it is stored (§5.5)."""
    client, account = logged_in(session, names, role)
    client.ask(b"/quit", CLOSED)
    return account


def senders(session: Session, names: Names) -> Tuple[Client, Client]:
    """Pair alice with Bob: senders that are in a chat, so a login after them gets #wait (§7.1)."""
    return session.pair(names.of("alice"), names.of("Bob"))


def msg(name: str, text: bytes) -> bytes:
    """Return ``/msg NICK TEXT`` (§5.5)."""
    return b"/msg " + name.encode("ascii") + SP + text


def stores(sender: Client, account: Account, text: bytes, spelled: str = "") -> Exchange:
    """Send ``text`` to ``account``, away; expect ``#stored_for_NICK`` spelled as registered (§5.5)."""
    sender.send(msg(spelled or account.name, text))
    got = sender.read_line()
    expected = notice(Notice.STORED_FOR, account.name)
    if got == expected:
        return Exchange(sender.session.last_sent, f"{sender.name} gets {show(expected)}", show(got))
    exchange = sender.judged(expected, got)
    if got == notice(Notice.NO_SUCH_USER, spelled or account.name):
        exchange = exchange._replace(
            diagnosis=f"{account.name} is an account, away: keep the message for its next login (§5.5)"
        )
    elif isinstance(got, bytes) and got.lower() == expected.lower():
        exchange = exchange._replace(diagnosis="spell the account as it was registered (§5.5)")
    raise Failure(exchange)


# -- Reading stored messages (§5.14, §7.7) -----------------------------------------------------


class StoredLine(NamedTuple):
    """A ``#stored_from_SENDER TIME TEXT`` line cut into its parts; ``time`` is "" if none fits."""

    sender: str
    time: str
    text: bytes


STORED_PREFIX = wire(Notice.STORED_FROM)
TIME_OCTETS = len("2026-12-01T10:02:03Z")


def cut_stored(got: Reply) -> Optional[StoredLine]:
    """Cut a ``#stored_from_`` line into sender, time and text; None if it is no such line."""
    if not (isinstance(got, bytes) and got.startswith(STORED_PREFIX)):
        return None
    sender, space, rest = got[len(STORED_PREFIX) :].partition(SP)
    if not space:
        return None
    stamp, text = rest[:TIME_OCTETS].decode("latin-1"), rest[TIME_OCTETS + 1 :]
    if rest[TIME_OCTETS : TIME_OCTETS + 1] != SP:
        return StoredLine(sender.decode("latin-1"), "", rest)
    return StoredLine(sender.decode("latin-1"), stamp, text)


def stored_problem(line: StoredLine, sender: str, text: bytes) -> str:
    """Say what is wrong with a stored line that should carry ``text`` from ``sender``; "" if nothing."""
    if line.sender != sender:
        return f"the sender is {line.sender!r}, not {sender!r}: name who sent it, as it was spelled (§5.14)"
    if not line.time:
        return "no time follows the sender: the line is SENDER SP TIME SP TEXT (§5.14)"
    wrong_time = time_problem(line.time)
    if wrong_time:
        return wrong_time
    if line.text != text:
        return f"the text is {show(line.text)}, not {show(text)}: deliver it exactly as it was sent (§5.14)"
    return ""


STORED_TIME_RE = re.compile(stored_time)


def time_problem(stamp: str) -> str:
    """Say what is wrong with a stored message's time; "" if it is RFC 3339 UTC, near the kit's clock."""
    if not STORED_TIME_RE.fullmatch(stamp):
        return f"the time {stamp!r} is not of the form 2026-12-01T10:02:03Z: RFC 3339, UTC (§5.14)"
    try:
        when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return f"the time {stamp!r} is no date: RFC 3339, UTC, to the second (§5.14)"
    off = abs(when.timestamp() - time.time())
    if off > CLOCK_TOLERANCE:
        return (
            f"the time {stamp!r} is {off / 3600:.1f} hours from the kit's clock in UTC: the server may write"
            " its local time with a Z; write the time it stored the message, in UTC (§5.14)"
        )
    return ""


def stored_shown(sender: str, text: bytes) -> bytes:
    """Return the stored line the kit expects, with 'TIME' for the time it cannot know (§5.14)."""
    return STORED_PREFIX + f"{sender} TIME ".encode("ascii") + text


def expect_stored(client: Client, sender: str, text: bytes) -> Exchange:
    """Read one stored message: ``#stored_from_SENDER TIME TEXT``, with ``text`` verbatim (§5.14)."""
    return judge_stored(client, client.read_line(), sender, text)


def judge_stored(client: Client, got: Reply, sender: str, text: bytes) -> Exchange:
    """Pass ``got`` if it is the stored ``text`` from ``sender``; else raise, saying why (§5.14)."""
    line = cut_stored(got)
    problem = stored_problem(line, sender, text) if line else ""
    expected = f"{client.name} gets {show(stored_shown(sender, text), LIST_SHOWN)}"
    if line and not problem:
        return Exchange(client.session.last_sent, expected, show(got, LIST_SHOWN))
    exchange = client.judged(stored_shown(sender, text), got)._replace(expected=expected)
    if got == WAIT or (isinstance(got, bytes) and got.startswith(MATCHED_TO)):
        problem = "a stored message was not delivered: deliver each after #logged_in_, before #wait (§5.14)"
    elif isinstance(got, bytes) and got.startswith(wire(Notice.FROM)):
        problem = (
            "it came as #from_: a stored message comes at login as #stored_from_SENDER TIME TEXT (§5.14)"
        )
    raise Failure(exchange._replace(diagnosis=problem or exchange.diagnosis))


# -- Lists of accounts (§5.15, §6.1) --------------------------------------------------------------


def account_problems(got: Reply, mine: Sequence[str], only_mine: bool) -> List[str]:
    """Say every way ``got`` breaks the rules of an #accounts_ list; a line that is none gets one sentence."""
    try:
        listing = split_list(got, Notice.ACCOUNTS, mine, only_mine)
    except ValueError:
        return ["it is not an #accounts_N list (§5.15)"]
    problems = [miscounted(listing), too_long(listing), unsorted(listing), stops_early(listing)]
    strangers = [name for name in listing.names if name not in mine]
    if only_mine and strangers:
        problems.append(f"'{strangers[0]}' is listed, but no account of that name matches (§5.15)")
    missing = [name for name in sorted(mine, key=str.lower) if name not in listing.names]
    cut_after = listing.names[-1].lower() if listing.names else ""
    if missing and (len(listing.names) >= listing.counted or missing[0].lower() < cut_after):
        problems.append(f"'{missing[0]}' is an account that matches, but it is not listed (§5.15)")
    return [problem for problem in problems if problem]


def miscounted(listing: Listing) -> str:
    """The count is not the number of every account that matches (§6.1)."""
    counted, matches = listing.counted, len(listing.mine)
    if listing.only_mine and counted != matches:
        return (
            f"the count is {counted}, but {plural(matches, 'account')} match: count every one (§5.15, §6.1)"
        )
    if counted < matches or counted < len(listing.names):
        return f"the count is {counted}, fewer than the names it must count (§6.1)"
    return ""


def expect_accounts(client: Client, mine: Sequence[str], only_mine: bool = True) -> Exchange:
    """Read a /users answer: exactly the list of ``mine``, or, with others' too, one that holds them."""
    got = client.read_line()
    wanted = list_line(Notice.ACCOUNTS, list(mine)).rstrip(LF)
    if only_mine:
        expected = f"{client.name} gets {show(wanted, LIST_SHOWN)}"
    else:
        expected = f"{client.name} gets #accounts_N, N >= {len(mine)}, with {', '.join(mine)} unless cut"
    problems = account_problems(got, mine, only_mine)
    if isinstance(got, bytes) and lacks_command(client.last_write, got):
        problems = [lacks_command(client.last_write, got)]
    exchange = Exchange(client.session.last_sent, expected, show(got, LIST_SHOWN))
    if (only_mine and got != wanted) or problems:
        diagnosis = "; ".join(problems) or "it differs from the list the spec asks for (§5.15, §6.1)"
        raise Failure(exchange._replace(diagnosis=diagnosis))
    return exchange


def users(client: Client, names: Names, mine: Sequence[str], rest: str = "*") -> Exchange:
    """Ask for the accounts of the check (a pattern of its tag) and expect exactly ``mine`` (§5.15)."""
    client.send(b"/users " + names.pattern(rest))
    return expect_accounts(client, mine)


# -- Failed logins (§5.14) ---------------------------------------------------------------------------


def expect_login_failed(client: Client, why: str) -> Exchange:
    """Read #login_failed; ``why`` says what made the login fail, for the diagnosis of another answer."""
    got = client.read_line()
    if got == LOGIN_FAILED:
        return Exchange(client.session.last_sent, f"{client.name} gets {show(LOGIN_FAILED)}", show(got))
    exchange = client.judged(LOGIN_FAILED, got)
    if isinstance(got, bytes) and got.startswith((wire(LOGGED_IN), ACCOUNT_DELETED)):
        diagnosis = (
            f"{why} was accepted: accept only the account's own password, compared case and all (§3.3)"
        )
    elif isinstance(got, bytes) and got.startswith((INVALID_PASSWORD, INVALID_NICKNAME, NO_SUCH_USER)):
        diagnosis = (
            f"{why} got {show(got)}: every failed login gets #login_failed and nothing more, so that a"
            " guesser cannot tell a wrong password from an unknown name (§5.14)"
        )
    else:
        diagnosis = exchange.diagnosis
    raise Failure(exchange._replace(diagnosis=diagnosis))


def failed_once(sender: Client, partner: Client, why: str) -> Exchange:
    """Expect #login_failed to what ``sender`` just sent, once, nothing of it relayed (as refused_once)."""
    refused = sender.session.last_sent
    sender.send(marker(sender))
    partner.expect(marker(sender))
    sender.session.last_sent = refused
    exchange = expect_login_failed(sender, why)
    partner.send(marker(partner))
    sender.expect(marker(partner))
    return exchange


# -- §3.1 An account's name is taken -------------------------------------------------------------


def spellings(name: str) -> List[str]:
    """Return ``name`` as registered, then in the other case: a name is taken in any case (§3.1)."""
    return [name, name.swapcase()]


def expect_taken(client: Client, account: Account) -> Exchange:
    """Read #nickname_taken for a name of ``account``, which is away; say so if the guest got it (§3.1)."""
    got = client.read_line()
    if got == NICKNAME_TAKEN:
        return Exchange(client.session.last_sent, f"{client.name} gets {show(NICKNAME_TAKEN)}", show(got))
    exchange = client.judged(NICKNAME_TAKEN, got)
    given = (WAIT, MATCHED_TO, wire(Notice.NICKNAME_CHANGED))
    if isinstance(got, bytes) and got.startswith(given):
        diagnosis = (
            f"a guest was given {account.name!r}, the name of an account that is away: a nickname is"
            " compared with every account's name too, in any case (§3.1)"
        )
        exchange = exchange._replace(diagnosis=diagnosis)
    raise Failure(exchange)


@check(
    "account-name-first-line",
    "§3.1",
    "a first line that is an away account's name, in any case, gets #nickname_taken",
    Stage.WAIT,
)
def account_name_first_line(session: Session) -> Exchange:
    """Refuse an account's name to a guest while the account is away; a retry with a free name works."""
    names = Names()
    account = away(session, names, "Away")
    guest = session.connect(names.of("guest"))
    for spelled in spellings(account.name):
        guest.send(spelled.encode("ascii"))
        exchange = expect_taken(guest, account)
    guest.ask(nick(guest), WAIT)
    return exchange


@check(
    "account-name-rename",
    "§3.1",
    "/nickname to an away account's name, in any case, gets #nickname_taken; nothing changes",
)
def account_name_rename(session: Session) -> Exchange:
    """Refuse a rename to an account's name; the partner hears nothing of it, and the chat goes on."""
    names = Names()
    account = away(session, names, "Away")
    alice, bob = senders(session, names)
    for spelled in spellings(account.name):
        alice.send(b"/nickname " + spelled.encode("ascii"))
        exchange = expect_taken(alice, account)
        still_chatting(alice, bob)
    return exchange


# -- §3.3 Passwords, and §5.13 /register ---------------------------------------------------------


#: Passwords at the limits, of punctuation, digits and letters: 8 characters from '!', 64 from ')'.
SHORTEST_PASSWORD = "".join(chr(code) for code in range(0x21, 0x21 + MIN_PASSWORD_CHARS))
LONGEST_PASSWORD = "".join(chr(code) for code in range(0x29, 0x29 + MAX_PASSWORD_CHARS))


@check(
    "password-at-limits",
    "§3.3",
    "passwords of 8 and of 64 visible ASCII characters, punctuation and all, register and log in",
    Stage.WAIT,
)
def password_at_limits(session: Session) -> Exchange:
    """Register with the shortest and the longest password, quit, and log in with each."""
    names = Names()
    accounts = [Account(names.of(f"pw{len(word)}"), word) for word in (SHORTEST_PASSWORD, LONGEST_PASSWORD)]
    for account in accounts:
        client = session.connect(account.name)
        register(client, account)
        client.ask(b"/quit", CLOSED)
    for account in accounts:
        client = session.connect(account.name)
        exchange = login(client, account)
        client.expect(WAIT)
        client.ask(b"/quit", CLOSED)
    return exchange


def refused_registration(argument: str, reply: bytes, session: Session) -> Exchange:
    """Refuse a /register with ``reply``; it makes no account, so the same name then registers (§5.13)."""
    names = Names()
    account = Account(names.of("newcomer"), new_password())
    client = session.connect(account.name)
    line = b"/register" + argument.format(nick=account.name).encode("utf-8")
    exchange = client.ask(line, reply)
    register(client, account)
    return exchange


#: A nickname one character too long: a /register of it is refused for the nickname first.
LONG_NICKNAME = "n" * (MAX_NICKNAME_CHARS + 1)

BAD_REGISTRATIONS = [
    ("password-too-short", "§3.3", "a password of 7 characters", " {nick} " + "p" * (MIN_PASSWORD_CHARS - 1)),
    ("password-too-long", "§3.3", "a password of 65 characters", " {nick} " + "p" * (MAX_PASSWORD_CHARS + 1)),
    ("password-space", "§3.3", "a password with a space", " {nick} pass word"),
    ("password-non-ascii", "§3.3", "a password with a non-ASCII letter", " {nick} p\u00e4sswort"),
    ("password-missing", "§3.3", "no password", " {nick}"),
]
add_all(
    (
        name,
        section,
        f"/register with {what} gets #invalid_password and makes no account",
        partial(refused_registration, argument, INVALID_PASSWORD),
        Stage.WAIT,
    )
    for name, section, what, argument in BAD_REGISTRATIONS
)

BAD_REGISTERED_NAMES = [
    ("register-alone", "no nickname, no password", ""),
    ("register-long-nickname", "a 31-character nickname", f" {LONG_NICKNAME} password1"),
    ("register-slash-nickname", "a nickname that starts with '/'", " /slash password1"),
    ("register-both-bad", "a bad nickname and a bad password", f" {LONG_NICKNAME} short"),
]
add_all(
    (
        name,
        "§5.13",
        f"/register with {what} gets #invalid_nickname, and a retry works",
        partial(refused_registration, argument, INVALID_NICKNAME),
        Stage.WAIT,
    )
    for name, what, argument in BAD_REGISTERED_NAMES
)


@check(
    "register-then-login",
    "§5.13",
    "/register: #registered_NICK, then #wait and a match as for a nickname; /login after /quit",
    Stage.PAIR,
)
def register_then_login(session: Session) -> Exchange:
    """Register, be met by a newcomer and chat; after /quit, /login gets the account back and waits."""
    names = Names()
    client, account = logged_in(session, names, "Owner")
    bob = session.meet(client, names.of("Bob"))
    still_chatting(client, bob)
    client.ask(b"/quit", CLOSED)
    bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    again = session.connect(account.name)
    exchange = login(again, account)
    again.expect(WAIT)
    return exchange


@check(
    "register-taken",
    "§5.13",
    "/register of a name a connected client holds, in another case, gets #nickname_taken",
    Stage.PAIR,
)
def register_taken(session: Session) -> Exchange:
    """Refuse the name of a waiter; a retry with a free name registers and meets that waiter."""
    names = Names()
    holder = session.join(names.of("Holder"))
    account = Account(names.of("newcomer"), new_password())
    client = session.connect(account.name)
    exchange = client.ask(account_line("/register", holder.name.swapcase(), account.password), NICKNAME_TAKEN)
    register(client, account, then=MATCHED_TO + nick(holder))
    holder.expect(MATCHED_TO + nick(client))
    return exchange


@check(
    "register-taken-account",
    "§5.13",
    "/register of an account's name in another case gets #nickname_taken; the account keeps its password",
    Stage.WAIT,
)
def register_taken_account(session: Session) -> Exchange:
    """Refuse to register an account twice; its owner still logs in with the first password."""
    names = Names()
    account = away(session, names, "Away")
    thief = session.connect(names.of("thief"))
    line = account_line("/register", account.name.swapcase(), new_password())
    exchange = thief.ask(line, NICKNAME_TAKEN)
    owner = session.connect(account.name)
    login(owner, account)
    owner.expect(WAIT)
    return exchange


AFTER_NICKNAME = [
    ("register-after-nickname", "§5.13", b"/register {tag}-someone password1"),
    ("login-after-nickname", "§5.14", b"/login {tag}-someone password1"),
]
add_all(
    (
        name,
        section,
        f"{show(line.split(SP)[0])} in a chat gets #invalid_command and reaches nobody",
        partial(refused_in_chat, line, wire(Notice.INVALID_COMMAND)),
        Stage.RELAY,
    )
    for name, section, line in AFTER_NICKNAME
)


# -- §5.14 /login ------------------------------------------------------------------------------------


@check(
    "login-wrong-password",
    "§5.14",
    "/login with a wrong password (the right one in the other case) gets #login_failed; then the right works",
    Stage.WAIT,
)
def login_wrong_password(session: Session) -> Exchange:
    """Refuse the account's password in the other case; the same connection then logs in."""
    names = Names()
    account = away(session, names, "Away")
    client = session.connect(account.name)
    client.send(account_line("/login", account.name, account.wrong_password))
    exchange = expect_login_failed(client, "its password in the other case")
    login(client, account)
    client.expect(WAIT)
    return exchange


@check(
    "login-unknown-name",
    "§5.14",
    "/login of a name no account has gets #login_failed, and the client may then choose a nickname",
    Stage.WAIT,
)
def login_unknown_name(session: Session) -> Exchange:
    """Answer a login of nobody as a wrong password; the connection stays in the nickname phase."""
    names = Names()
    client = session.connect(names.of("newcomer"))
    client.send(account_line("/login", names.of("nobody"), new_password()))
    exchange = expect_login_failed(client, "a login of a name no account has")
    client.ask(nick(client), WAIT)
    return exchange


@check(
    "login-malformed",
    "§5.14",
    "/login with a malformed password, or none, gets #login_failed; then the right one works",
    Stage.WAIT,
)
def login_malformed(session: Session) -> Exchange:
    """Refuse a 7-character password, a missing one and a bare /login alike, then log in."""
    names = Names()
    account = away(session, names, "Away")
    client = session.connect(account.name)
    for argument, why in (
        (f" {account.name} {account.password[: MIN_PASSWORD_CHARS - 1]}", "a 7-character password"),
        (f" {account.name}", "a /login with no password"),
        ("", "'/login' alone"),
    ):
        client.send(b"/login" + argument.encode("ascii"))
        exchange = expect_login_failed(client, why)
    login(client, account)
    client.expect(WAIT)
    return exchange


@check(
    "login-any-case",
    "§5.14",
    "/login with the name in another case gets #logged_in_NICK spelled as registered",
    Stage.WAIT,
)
def login_any_case(session: Session) -> Exchange:
    """Find the account in any case, and name the session as the account is spelled."""
    names = Names()
    account = away(session, names, "Away")
    client = session.connect(account.name)
    exchange = login(client, account, spelled=account.name.swapcase())
    client.expect(WAIT)
    return exchange


@check(
    "login-replaces-session",
    "§5.14",
    "a second /login: the older session gets #session_replaced and is closed, its partner #user_quit",
    Stage.PAIR,
)
def login_replaces_session(session: Session) -> Exchange:
    """Log in again while the first session chats: it ends as a hang-up would, and the newer one waits."""
    names = Names()
    older, account = logged_in(session, names, "Owner")
    bob = session.meet(older, names.of("Bob"))
    newer = session.connect(account.name)
    login(newer, account)
    newer.expect(WAIT)
    exchange = older.expect(SESSION_REPLACED)
    older.expect(CLOSED)
    bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    session.meet(newer, names.of("carol"))
    return exchange


# -- §5.2 /nickname when logged in -----------------------------------------------------------------


@check("nickname-locked", "§5.2", "/nickname when logged in gets #nickname_locked and reaches nobody")
def nickname_locked(session: Session) -> Exchange:
    """Refuse a logged-in session a new name: an account's nickname is its name."""
    names = Names()
    owner, _ = logged_in(session, names, "Owner")
    bob = session.meet(owner, names.of("Bob"))
    owner.send(b"/nickname " + names.pattern("other"))
    return refused_once(owner, bob, NICKNAME_LOCKED)


# -- §5.5 /msg to an account, and §5.14, §7.7 its delivery -----------------------------------------------


@check(
    "msg-stored",
    "§5.5",
    "/msg to an away account, in another case, gets #stored_for_NICK spelled as registered; nothing else",
)
def msg_stored(session: Session) -> Exchange:
    """Store a message for an account that is away; the sender's partner hears nothing of it."""
    names = Names()
    account = away(session, names, "Away")
    alice, bob = senders(session, names)
    exchange = stores(alice, account, b"for later", spelled=account.name.swapcase())
    still_chatting(alice, bob)
    return exchange


@check("msg-to-logged-in", "§5.5", "/msg to an account that is connected is delivered at once, as #from_")
def msg_to_logged_in(session: Session) -> Exchange:
    """Deliver live to a logged-in account that chats; its partner hears nothing."""
    names = Names()
    owner, _ = logged_in(session, names, "Owner")
    bob = session.meet(owner, names.of("Bob"))
    carol = session.join(names.of("carol"))
    carol.ask(msg(owner.name, b"right now"), wire(Notice.SENT_TO, nick(owner)))
    exchange = owner.expect(direct(carol, b"right now"))
    still_chatting(owner, bob)
    return exchange


@check(
    "stored-delivered",
    "§5.14",
    "at /login a stored message comes as #stored_from_SENDER TIME TEXT, verbatim, before #wait",
)
def stored_delivered(session: Session) -> Exchange:
    """Keep a text with '#', '/', a tab and UTF-8 in it, and deliver it at login exactly as sent."""
    names = Names()
    account = away(session, names, "Away")
    alice, _ = senders(session, names)
    stores(alice, account, VERBATIM_TEXT)
    client = session.connect(account.name)
    login(client, account)
    exchange = expect_stored(client, alice.name, VERBATIM_TEXT)
    client.expect(WAIT)
    return exchange


@check(
    "stored-oldest-first",
    "§7.7",
    f"{ORDER_MESSAGES} messages stored from two senders come at /login oldest first",
)
def stored_oldest_first(session: Session) -> Exchange:
    """Store messages from alice and Bob in turn, each after the last was stored; read them in that order."""
    names = Names()
    account = away(session, names, "Away")
    alice, bob = senders(session, names)
    sent: List[Tuple[str, bytes]] = []
    for number in range(ORDER_MESSAGES):
        sender = (alice, bob)[number % 2]
        text = b"message %d of %d" % (number + 1, ORDER_MESSAGES)
        stores(sender, account, text)
        sent.append((sender.name, text))
    client = session.connect(account.name)
    login(client, account)
    for number, (sender_name, text) in enumerate(sent):
        exchange = expect_in_order(client, sender_name, text, sent[number + 1 :])
    client.expect(WAIT)
    return exchange


def expect_in_order(client: Client, sender: str, text: bytes, later: Sequence[Tuple[str, bytes]]) -> Exchange:
    """Read the stored message that comes next; one that was stored later is named as out of order (§7.7)."""
    got = client.read_line()
    line = cut_stored(got)
    if line is None or (line.sender, line.text) not in later:
        return judge_stored(client, got, sender, text)
    early = f"{show(line.text)} came before {show(text)}, which was stored first"
    exchange = client.judged(stored_shown(sender, text), got)
    diagnosis = f"{early}: deliver a mailbox oldest first, in the order the messages were stored (§7.7)"
    raise Failure(exchange._replace(diagnosis=diagnosis))


@check(
    "stored-gone-after-quit",
    "§7.7",
    "a stored message delivered at /login, then /quit, is not delivered again at the next login",
)
def stored_gone_after_quit(session: Session) -> Exchange:
    """Quit after reading the mailbox, the portable sign that it arrived; the next login finds it empty."""
    names = Names()
    account = away(session, names, "Away")
    alice, _ = senders(session, names)
    stores(alice, account, b"only once")
    first = session.connect(account.name)
    login(first, account)
    expect_stored(first, alice.name, b"only once")
    first.expect(WAIT)
    first.ask(b"/quit", CLOSED)
    second = session.connect(account.name)
    login(second, account)
    got = second.read_line()
    if got == WAIT:
        return Exchange(session.last_sent, f"{second.name} gets {show(WAIT)}", show(got))
    exchange = second.judged(WAIT, got)
    if cut_stored(got):
        delivered = "a message delivered, then /quit, came again at the next login"
        diagnosis = f"{delivered}: once the client has it (its /quit after it shows so), forget it (§7.7)"
        exchange = exchange._replace(diagnosis=diagnosis)
    raise Failure(exchange)


# -- §9.10 A full mailbox ------------------------------------------------------------------------------


@settings_check(
    "mailbox-full",
    "§9.10",
    "past the mailbox size (--mailbox-size, default 100), /msg gets #mailbox_full_NICK and stores nothing",
    Stage.PAIR,
)
def mailbox_full(settings: Settings, session: Session) -> Exchange:
    """Fill an away account's mailbox, have one more refused, and find the mailbox's worth at login."""
    names = Names()
    account = away(session, names, "Away")
    alice, bob = senders(session, names)
    fill_mailbox(alice, account, settings.mailbox_size)
    alice.send(msg(account.name, b"one too many"))
    exchange = expect_mailbox_full(alice, account, settings.mailbox_size)
    still_chatting(alice, bob)
    client = session.connect(account.name)
    login(client, account)
    expect_mailbox(client, alice.name, [b"message %d" % number for number in range(settings.mailbox_size)])
    client.expect(WAIT)
    return exchange


def fill_mailbox(sender: Client, account: Account, size: int) -> None:
    """Store ``size`` messages for ``account``, one at a time; fail if the mailbox fills early (§9.10)."""
    for number in range(size):
        sender.send(msg(account.name, b"message %d" % number))
        got = sender.read_line()
        if got == notice(Notice.STORED_FOR, account.name):
            continue
        if got == RATE_LIMITED:
            raise CannotCheck(
                f"the server answered /msg number {number + 1} with #rate_limited (§9.5), so the mailbox"
                " cannot be filled; that is no fault of its mailbox: run the check against a server with"
                " flood control off or higher, such as mechat serve --max-rate 0"
            )
        exchange = sender.judged(notice(Notice.STORED_FOR, account.name), got)
        if got == notice(Notice.MAILBOX_FULL, account.name):
            diagnosis = (
                f"the mailbox was full after {plural(number, 'message')}, but the kit was told it holds"
                f" {size} (§9.10): start the server with the mailbox size the kit is given"
                f" (mechat conform --mailbox-size, default {DEFAULT_MAILBOX_SIZE})"
            )
            exchange = exchange._replace(diagnosis=diagnosis)
        raise Failure(exchange)


def expect_mailbox(client: Client, sender: str, texts: Sequence[bytes]) -> None:
    """Read a stored message for each of ``texts``, in any order: their order is another check's (§9.10)."""
    unread = list(texts)
    while unread:
        got = client.read_line()
        line = cut_stored(got)
        if line is None or line.text not in unread:
            exchange = client.judged(stored_shown(sender, unread[0]), got)
            if line is not None and line.text == b"one too many":
                refused = (
                    "the message answered #mailbox_full_ was stored all the same: store nothing then (§9.10)"
                )
                raise Failure(exchange._replace(diagnosis=refused))
            judge_stored(client, got, sender, unread[0])  # raises, saying what is wrong
            raise Failure(exchange)
        judge_stored(client, got, sender, line.text)
        unread.remove(line.text)


def expect_mailbox_full(sender: Client, account: Account, size: int) -> Exchange:
    """Read the refusal of the message one past a full mailbox; say so if it was stored (§9.10)."""
    got = sender.read_line()
    expected = notice(Notice.MAILBOX_FULL, account.name)
    if got == expected:
        return Exchange(sender.session.last_sent, f"{sender.name} gets {show(expected)}", show(got))
    exchange = sender.judged(expected, got)
    if got == notice(Notice.STORED_FOR, account.name):
        diagnosis = (
            f"a message past {plural(size, 'message')} was stored: the server has no mailbox limit, or one"
            f" above the {size} the kit was told (§9.10); tell the kit the server's size with"
            " mechat conform --mailbox-size N"
        )
        exchange = exchange._replace(diagnosis=diagnosis)
    raise Failure(exchange)


# -- §5.15 /users ---------------------------------------------------------------------------------------


@check(
    "users-lists-accounts",
    "§5.15",
    "/users PATTERN lists the matching accounts, away or connected, sorted, and no guest",
    Stage.WAIT,
)
def users_lists_accounts(session: Session) -> Exchange:
    """List c and a, away, and B, logged in, as a, B, c; the guest who asks is no account."""
    names = Names()
    mine = [away(session, names, role).name for role in ("c", "a")]
    owner, _ = logged_in(session, names, "B")
    guest = session.meet(owner, names.of("guest"))
    return users(guest, names, [*mine, owner.name])


@check(
    "users-pattern", "§6.1", "'?' in a /users pattern is one character, and case does not count", Stage.WAIT
)
def users_pattern(session: Session) -> Exchange:
    """Match 'QZKFW-?' with the account 'qzkfw-a' alone, not 'qzkfw-ab'."""
    names = Names()
    one = away(session, names, "a")
    away(session, names, "ab")
    guest = session.join(names.of("guest"))
    guest.send(b"/users " + names.tag.upper().encode("ascii") + b"-?")
    return expect_accounts(guest, [one.name])


@check(
    "users-everyone",
    "§5.15",
    "/users alone lists every account, sorted, the check's own among them",
    Stage.WAIT,
)
def users_everyone(session: Session) -> Exchange:
    """List every account of the server; others may be there too, so hold the list to its rules."""
    names = Names()
    mine = [away(session, names, "a").name]
    guest = session.join(names.of("guest"))
    guest.send(b"/users")
    return expect_accounts(guest, mine, only_mine=False)


@check("users-no-match", "§5.15", "/users with a pattern no account matches gets #accounts_0", Stage.WAIT)
def users_no_match(session: Session) -> Exchange:
    """Answer a pattern that matches no account with a count of 0, though a guest of that name is online."""
    names = Names()
    guest = session.join(names.of("guest"))
    return users(guest, names, [])


add_before_nickname(
    FEATURE,
    [
        ("users-before-nickname", b"/users"),
        ("delete-before-nickname", b"/delete password1"),
    ],
)


# -- §5.16 /delete --------------------------------------------------------------------------------------


@check("delete-as-guest", "§5.16", "/delete from a guest gets #not_logged_in and reaches nobody")
def delete_as_guest(session: Session) -> Exchange:
    """Refuse /delete to a session that has no account."""
    return refused_in_chat(b"/delete password1", NOT_LOGGED_IN, session)


@check(
    "delete-wrong-password",
    "§5.16",
    "/delete with a wrong password (the right one in the other case) gets #login_failed; nothing is deleted",
)
def delete_wrong_password(session: Session) -> Exchange:
    """Refuse the wrong password once; the account is still listed and the chat goes on."""
    names = Names()
    owner, account = logged_in(session, names, "Owner")
    bob = session.meet(owner, names.of("Bob"))
    owner.send(b"/delete " + account.wrong_password.encode("ascii"))
    exchange = failed_once(owner, bob, "its password in the other case")
    users(bob, names, [owner.name])
    return exchange


@check(
    "delete-account",
    "§5.16",
    "/delete PASSWORD: #account_deleted, the session goes on as a guest, and the name is free",
)
def delete_account(session: Session) -> Exchange:
    """Delete a chatting account: it is no longer listed, may rename, and its name can be registered anew."""
    names = Names()
    owner, account = logged_in(session, names, "Owner")
    bob = session.meet(owner, names.of("Bob"))
    owner.send(b"/delete " + account.password.encode("ascii"))
    exchange = refused_once(owner, bob, ACCOUNT_DELETED)
    users(bob, names, [])
    renamed = names.of("guest-now")
    owner.ask(b"/nickname " + renamed.encode("ascii"), notice(Notice.NICKNAME_CHANGED, renamed))
    bob.expect(notice(Notice.PARTNER_RENAMED, renamed))
    owner.name = renamed
    still_chatting(owner, bob)
    newcomer = session.connect(names.of("newcomer"))
    register(newcomer, Account(account.name, new_password()))
    return exchange


@check(
    "delete-only-own",
    "§5.16",
    "/delete deletes the deleter's account alone, though its name has '%' and '_'; the others log in",
    Stage.PAIR,
)
def delete_only_own(session: Session) -> Exchange:
    """Delete 'qzkfw-%_'; 'qzkfw-victim' is still listed, and still logs in: a name is no pattern.

    A server that finds the account with SQL's LIKE, for its blindness to
    case, also deletes every name that its '%' and '_' match.
    """
    names = Names()
    victim = away(session, names, "victim")
    owner, account = logged_in(session, names, "%_")
    bob = session.meet(owner, names.of("Bob"))
    owner.send(b"/delete " + account.password.encode("ascii"))
    exchange = refused_once(owner, bob, ACCOUNT_DELETED)
    users(bob, names, [victim.name])
    client = session.connect(victim.name)
    client.send(account_line("/login", *victim))
    got = client.read_line()
    if got != notice(LOGGED_IN, victim.name):
        gone = f"deleting {account.name!r} deleted {victim.name!r} too"
        diagnosis = f"{gone}: delete the deleter's own account, found by its name and nothing like it (§5.16)"
        raise Failure(client.judged(notice(LOGGED_IN, victim.name), got)._replace(diagnosis=diagnosis))
    client.expect(WAIT)
    return exchange


# -- §9.11 Failed logins are rationed ---------------------------------------------------------------------


@check(
    "login-throttled",
    "§9.11",
    f"the {MAX_FAILED_LOGINS}th failed /login on one connection gets #login_failed and is closed",
    Stage.WAIT,
)
def login_throttled(session: Session) -> Exchange:
    """Fail four logins and stay; fail the fifth and be closed, so a line after it finds nobody."""
    names = Names()
    client = session.connect(names.of("guesser"))
    guess = account_line("/login", names.of("nobody"), new_password())
    for number in range(MAX_FAILED_LOGINS):
        client.send(guess)
        exchange = expect_login_failed(client, f"failed login number {number + 1}")
    expect_closed(client, f"{MAX_FAILED_LOGINS} failed logins")
    return exchange


@check(
    "delete-throttled",
    "§9.11",
    "a failed /delete counts as a failed login: the 5th closes the session, and the partner gets #user_quit",
    Stage.PAIR,
)
def delete_throttled(session: Session) -> Exchange:
    """Fail four logins, register on the same connection, chat, and fail one /delete: the fifth failure."""
    names = Names()
    account = Account(names.of("Owner"), new_password())
    client = session.connect(account.name)
    guess = account_line("/login", names.of("nobody"), new_password())
    for number in range(MAX_FAILED_LOGINS - 1):
        client.send(guess)
        expect_login_failed(client, f"failed login number {number + 1}")
    register(client, account)
    bob = session.meet(client, names.of("Bob"))
    client.send(b"/delete " + new_password().encode("ascii"))
    exchange = expect_login_failed(client, "a /delete with another account's password")
    expect_closed(client, f"{MAX_FAILED_LOGINS - 1} failed logins and a failed /delete")
    bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    return exchange


def expect_closed(client: Client, after: str) -> None:
    """Expect the server to close the connection now (§9.11)."""
    got = client.read_line()
    if isinstance(got, Outcome) and got.kind == Outcome.ENDED:
        return
    exchange = client.judged(CLOSED, got)
    diagnosis = (
        f"the connection was still open after {after}: a connection gets {MAX_FAILED_LOGINS} failed logins"
        " or deletes in all, and the server closes it after the last one's #login_failed (§9.11)"
    )
    raise Failure(exchange._replace(diagnosis=diagnosis))


# -- §7.7 A stored message survives kill -9 -------------------------------------------------------------

#: Why ``stored-survives-restart`` is skipped when the kit was given no way to start the server.
NO_SERVER_COMMAND = (
    "this check kills the server with SIGKILL and starts it again, which the kit can do only to a server it"
    " starts itself; give the command that starts yours, with {port} where the port goes and {db} where a"
    " fresh database file may go, as in mechat conform --server-command 'python3 -m mechat serve --port"
    " {port} --db {db}'. The kit runs a server of its own from it, on a free port, and leaves yours alone"
)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing holds now.

    The port is free when the kit looks, not promised: another program may
    take it before the server binds it, and then the server does not start,
    which the check reports rather than judges.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LaunchedServer:
    """A server the kit starts from ``--server-command`` in a directory of its own, kills and restarts."""

    def __init__(self, command: str, directory: str) -> None:
        self.port = free_port()
        database = shlex.quote(os.path.join(directory, "conform.db"))
        self.command = command.replace("{port}", str(self.port)).replace("{db}", database)
        self.output_path = os.path.join(directory, "server-output.txt")
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def address(self) -> Tuple[str, int]:
        """Return where the launched server listens."""
        return ("127.0.0.1", self.port)

    def start(self) -> str:
        """Start the command, in a process group of its own; return "" once it listens, or why it does not."""
        with open(self.output_path, "ab") as output:
            self.process = subprocess.Popen(
                self.command, shell=True, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self.wait_listening(time.monotonic() + SERVER_START_SECONDS)

    def wait_listening(self, deadline: float) -> str:
        """Try to connect until one works, the process ends, or ``deadline`` passes; return why not, or ""."""
        assert self.process is not None
        while True:
            status = self.process.poll()
            if status is not None:
                return f"it exited with status {status} before it listened on port {self.port}"
            with contextlib.suppress(OSError), socket.create_connection(self.address, timeout=1.0):
                return ""
            if time.monotonic() > deadline:
                return f"nothing listened on port {self.port} within {SERVER_START_SECONDS:g} s"
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(START_POLL_SECONDS)  # a pause that ends early if the server exits

    def kill(self) -> None:
        """Kill the server's process group with SIGKILL, as a crash would, and wait for it to die."""
        if self.process is None or self.process.poll() is not None:
            return
        killpg = getattr(os, "killpg", None)
        if killpg is not None:
            with contextlib.suppress(ProcessLookupError):
                killpg(self.process.pid, signal.SIGKILL)  # the shell and the server it started
        else:  # Windows has no process groups to signal
            self.process.kill()
        self.process.wait()
        self.wait_unbound(time.monotonic() + SERVER_START_SECONDS)

    def wait_unbound(self, deadline: float) -> None:
        """Wait until nothing accepts a connection on the port, or ``deadline`` passes.

        The shell is reaped at once, but a server it forked may hold its
        listening socket a moment longer while it dies; a restart probed
        then would find the dying one, and the new one could not bind.
        """
        while time.monotonic() < deadline:
            try:
                socket.create_connection(self.address, timeout=1.0).close()
            except OSError:
                return
            time.sleep(START_POLL_SECONDS)  # nothing to wait on: the dying process is not the kit's child

    def output(self) -> str:
        """Return the end of what the server printed, for a report."""
        with open(self.output_path, "rb") as output:
            text = output.read().decode("utf-8", "replace").strip()
        return text[-OUTPUT_SHOWN:] or "nothing"


@contextlib.contextmanager
def launched(command: str) -> Iterator[LaunchedServer]:
    """Start ``command`` as a server in a fresh directory; kill it and remove the directory afterwards."""
    with tempfile.TemporaryDirectory(prefix="mechat-conform-") as directory:
        server = LaunchedServer(command, directory)
        try:
            problem = server.start()
            if problem:
                raise CannotCheck(
                    f"the kit could not start the server with {server.command!r}: {problem}; it printed:"
                    f" {server.output()}. Check the --server-command, then run the check again"
                )
            yield server
        finally:
            server.kill()


@settings_check(
    "stored-survives-restart",
    "§7.7",
    "a stored message survives kill -9 of the server and a restart (needs --server-command)",
    Stage.WAIT,
)
def stored_survives_restart(settings: Settings, session: Session) -> Exchange:
    """Store a message, kill the server with SIGKILL, start it again on its port, and find it at login."""
    if not settings.server_command:
        raise CannotCheck(NO_SERVER_COMMAND)
    names = Names()
    with launched(settings.server_command) as server:
        with Session(server.address, session.timeout, tls=session.tls) as before:
            account = away(before, names, "Away")
            alice, _ = senders(before, names)
            stores(alice, account, SURVIVOR)
        server.kill()  # the kit hung up first, so the port is free for the restart at once
        restart_problem = server.start()
        if restart_problem:
            raise Failure(not_restarted(server, restart_problem))
        with Session(server.address, session.timeout, tls=session.tls) as after:
            client = after.connect(account.name)
            client.send(account_line("/login", *account))
            expect_account_kept(client, account)
            exchange = expect_survivor(client, alice.name)
            client.expect(WAIT)
            client.ask(b"/quit", CLOSED)
            return exchange


def expect_account_kept(client: Client, account: Account) -> Exchange:
    """Read #logged_in_ after the restart; a failed login means the account itself was lost (§7.7, §9.12)."""
    got = client.read_line()
    expected = notice(LOGGED_IN, account.name)
    if got == expected:
        return Exchange(client.session.last_sent, f"{client.name} gets {show(expected)}", show(got))
    exchange = client.judged(expected, got)
    if got == LOGIN_FAILED:
        lost = "the account registered before the server was killed was gone after its restart"
        diagnosis = f"{lost}: keep accounts and their mailboxes in a file, committed before answering (§7.7)"
        exchange = exchange._replace(diagnosis=diagnosis)
    raise Failure(exchange)


def not_restarted(server: LaunchedServer, problem: str) -> Exchange:
    """Return the exchange of a server that started once but not again after SIGKILL."""
    return Exchange(
        f"the kit: kill -9, then {server.command!r} again",
        f"the server to listen on port {server.port} again",
        f"<{problem}; it printed: {server.output()}>",
        "a server must start again after a crash, on its port, with its store: open the database it left,"
        " and set SO_REUSEADDR before bind() so the port is not held by the old connections (§7.7)",
    )


def expect_survivor(client: Client, sender: str) -> Exchange:
    """Read the message stored before the crash; a login that finds none lost it (§7.7)."""
    got = client.read_line()
    if not (got == WAIT or (isinstance(got, bytes) and got.startswith(MATCHED_TO))):
        return judge_stored(client, got, sender, SURVIVOR)
    lost = "the message was answered #stored_for_, then lost when the server was killed and restarted"
    diagnosis = (
        f"{lost}: #stored_for_ promises it is on disk, so keep the mailbox in a file, and commit (and"
        " fsync) each message before answering (§7.7)"
    )
    raise Failure(client.judged(stored_shown(sender, SURVIVOR), got)._replace(diagnosis=diagnosis))
