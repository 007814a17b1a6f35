"""Client tests for accounts and offline delivery (§5.13-§5.16, §7.7): logins, passwords, kept messages.

The client runs against a fake server: a real socket listening on
127.0.0.1 port 0, whose every line the test plays, and which fails on any
line from the client that the test did not expect.  Passwords come from a
stand-in for getpass, so no test needs a terminal; the stand-in and the
screen write to one log, so a test can see that a question comes after
the sentence that explains it.  A few tests run ``python -m mechat chat``
itself, for the checks made before it connects.
"""

import collections
import io
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Deque, Iterator, List, Optional, Tuple

import pytest

from mechat import client, keyboard, screen
from mechat.client import Account, ChatClient
from mechat.protocol import LF, LineCutter, Notice, NoticeLine, Phase
from mechat.screen import Place
from mechat.server import ChatServer
from tests.peers import TIMEOUT, waiting
from tests.test_client import ROOT, Keyboard, RecordingScreen

#: The time "now" for every test that shows a kept message, and the user's time zone: one hour east of UTC.
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
ZONE = timezone(timedelta(hours=1), "CET")

PASSWORD = "correct-horse"


class FakeServer:
    """A listening socket that plays the server: the test reads each client line and sends each reply.

    Every read has a deadline (the socket's timeout), and a line that is
    not the one expected fails the test, as a Peer does.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port: int = self.listener.getsockname()[1]
        self.conn: Optional[socket.socket] = None
        self.unread: Deque[bytes] = collections.deque()
        self.cutter = LineCutter()

    def accept(self) -> None:
        """Take the next connection, forgetting the last one."""
        if self.conn is not None:
            self.conn.close()
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(TIMEOUT)
        self.unread.clear()
        self.cutter = LineCutter()

    def read_line(self) -> bytes:
        """Return the client's next line; fail if none comes in time, or the client closes first."""
        assert self.conn is not None
        while not self.unread:
            data = self.conn.recv(4096)  # socket.timeout after TIMEOUT fails the test
            assert data, "the client closed the connection; still unread: %r" % self.cutter.unterminated
            self.unread.extend(self.cutter.cut(data))
        return self.unread.popleft()

    def expect(self, *lines: str) -> None:
        """Read one client line per argument, and fail unless each is exactly as given."""
        for line in lines:
            got = self.read_line()
            assert got == line.encode("utf-8"), "expected %r, got %r" % (line, got)

    def send(self, *lines: str) -> None:
        """Send each line as the server would, with its LF."""
        assert self.conn is not None
        self.conn.sendall(b"".join(line.encode("utf-8") + LF for line in lines))

    def hang_up(self) -> None:
        """Close the connection, as the server does after a final notice."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        """Stop listening."""
        self.hang_up()
        self.listener.close()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    """A fake server on 127.0.0.1, closed after the test."""
    server = FakeServer()
    try:
        yield server
    finally:
        server.close()


class Passwords:
    """A stand-in for getpass.getpass: it answers each prompt with the next password given, then Ctrl-D."""

    def __init__(self, log: List[str], *answers: str) -> None:
        self.log = log
        self.answers = list(answers)

    def __call__(self, prompt: str) -> str:
        self.log.append("asked " + prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


class LoggedScreen(RecordingScreen):
    """A RecordingScreen on the test's clock and time zone, that also writes each line to a shared log."""

    def __init__(self, log: List[str]) -> None:
        super().__init__()
        self.log = log
        self.now, self.zone = (lambda: NOW), ZONE

    def show(self, text: str, when: str = "") -> None:
        self.log.append("shown " + text)
        super().show(text, when)


class User:
    """A ChatClient on the server at ``port``, run in a thread, with its keyboard, screen and passwords."""

    def __init__(
        self,
        port: int,
        account: Optional[Account] = None,
        passwords: Tuple[str, ...] = (),
        passwords_allowed: bool = True,
    ) -> None:
        self.log: List[str] = []
        self.keyboard = Keyboard()
        self.screen = LoggedScreen(self.log)
        self.passwords = Passwords(self.log, *passwords)
        self.client = ChatClient(
            client.connect("127.0.0.1", port),
            self.keyboard,
            self.screen,
            reconnect=lambda: client.connect("127.0.0.1", port),
            account=account,
            ask_password=self.passwords,
            passwords_allowed=passwords_allowed,
        )
        self.status: List[int] = []
        self.thread = threading.Thread(target=lambda: self.status.append(self.client.run()))
        self.thread.start()

    def asked(self) -> List[str]:
        """Return the password questions asked so far."""
        return [line for line in self.log if line.startswith("asked ")]

    def exit_status(self) -> int:
        """Wait for the client to finish and return its exit status; no password was ever shown."""
        self.thread.join(timeout=TIMEOUT)
        assert not self.thread.is_alive(), "the client did not finish"
        self.keyboard.type(None)
        self.client.sock.close()
        assert not [line for line in self.log if line.startswith("shown ") and "horse" in line], self.log
        return self.status[0]


def user_on(
    fake: FakeServer, account: Optional[Account] = None, passwords: Tuple[str, ...] = (), **options: bool
) -> User:
    """Start a User on the fake server, which takes its connection."""
    user = User(fake.port, account, passwords, **options)
    fake.accept()
    return user


def leave(user: User, fake: FakeServer) -> int:
    """Type Ctrl-D: the client sends /quit, the server closes; return the exit status (§5.1)."""
    user.keyboard.type(None)
    user.screen.expect("Leaving.")
    fake.expect("/quit")
    fake.hang_up()
    return user.exit_status()


# -- Logging in, and the messages kept meanwhile -------------------------------


def test_login_is_the_first_line_and_kept_messages_show_when_they_were_sent(fake: FakeServer) -> None:
    """§5.14: /login NICK PASSWORD goes first; each #stored_from_ shows in local time, then how many came."""
    alice = user_on(fake, Account("alice", password=PASSWORD))
    fake.expect("/login alice " + PASSWORD)
    fake.send(
        "#logged_in_Alice",  # the account's own spelling (§5.14)
        "#stored_from_bob 2026-12-01T10:02:03Z are you there?",
        "#stored_from_carol 2026-12-02T08:00:00Z ping",
        "#wait",
        "#stored_from_dave 2026-11-20T23:30:00Z late, but not lost",  # the race rule of §7.7
    )
    alice.screen.expect(
        "You are logged in as Alice.",
        "[yesterday 11:02] bob (while you were away): are you there?",
        "[today 09:00] carol (while you were away): ping",
        "2 messages were kept for you while you were away.",
        "Waiting for a partner",
        "[21 Nov 00:30] dave (while you were away): late, but not lost",
    )
    assert alice.screen.prompt == "Alice (waiting)> "
    assert leave(alice, fake) == 0


def test_a_login_with_nothing_kept_says_so(fake: FakeServer) -> None:
    """§5.14: a login followed at once by #matched_to_ says that no message was kept."""
    alice = user_on(fake, Account("alice", password=PASSWORD))
    fake.expect("/login alice " + PASSWORD)
    fake.send("#logged_in_alice", "#matched_to_bob")
    alice.screen.expect(
        "You are logged in as alice.",
        "No message was kept for you while you were away.",
        "You are now chatting with bob",
    )
    assert leave(alice, fake) == 0


def test_a_wrong_password_is_explained_before_it_is_asked_again(fake: FakeServer) -> None:
    """§5.14: after #login_failed the client says why, then asks for the password again, and logs in."""
    alice = user_on(fake, Account("alice", password="wrong-pass"), passwords=(PASSWORD,))
    fake.expect("/login alice wrong-pass")
    fake.send("#login_failed")
    alice.screen.expect("Wrong password, or there is no account called alice.")
    fake.expect("/login alice " + PASSWORD)
    fake.send("#logged_in_alice", "#wait")
    alice.screen.expect("You are logged in as alice.", "No message was kept", "Waiting for a partner")
    why = alice.log.index("shown Wrong password, or there is no account called alice.")
    assert alice.log.index("asked Password for alice: ") > why
    assert leave(alice, fake) == 0


def test_three_wrong_passwords_end_the_session_with_status_1(fake: FakeServer) -> None:
    """The client tries a password three times at most (the server allows five, §9.11), then leaves."""
    alice = user_on(
        fake, Account("alice", password="wrong-one"), passwords=("wrong-two", "too short", "wrong-three")
    )
    for password in ("wrong-one", "wrong-two", "wrong-three"):
        fake.expect("/login alice " + password)
        fake.send("#login_failed")
        alice.screen.expect("Wrong password, or there is no account called alice.")
        if password == "wrong-two":  # "too short" is 9 characters with a space: refused before it is sent
            alice.screen.expect("A password is 8 to 64 visible ASCII characters")
    alice.screen.expect("That was the last try, so you are not logged in.", "Leaving.")
    fake.expect("/quit")
    fake.hang_up()
    assert alice.exit_status() == 1


def test_ctrl_d_at_the_password_question_leaves(fake: FakeServer) -> None:
    """End of input where a password is asked again gives up, says so, and exits 1."""
    alice = user_on(fake, Account("alice", password="wrong-one"))  # no password to give: Ctrl-D
    fake.expect("/login alice wrong-one")
    fake.send("#login_failed")
    alice.screen.expect("Wrong password", "No password was given, so nothing was sent.", "Leaving.")
    fake.expect("/quit")
    fake.hang_up()
    assert alice.exit_status() == 1


def test_a_new_partner_means_a_new_login_with_the_same_password(fake: FakeServer) -> None:
    """After #user_quit, Enter connects again and logs in again, which brings what was kept meanwhile."""
    alice = user_on(fake, Account("alice", new=True, password=PASSWORD))
    fake.expect("/register alice " + PASSWORD)
    fake.send("#registered_alice", "#matched_to_bob", "#user_quit")
    fake.hang_up()
    alice.screen.expect(
        "Your account alice is made, and you are logged in. Next time: mechat chat --login alice",
        "You are now chatting with bob",
        "bob has left the chat.",
        screen.OFFER,
    )
    alice.keyboard.type("")
    fake.accept()
    fake.expect("/login alice " + PASSWORD)  # registered once: from now on, a login
    fake.send("#logged_in_alice", "#stored_from_bob 2026-12-02T11:59:00Z come back", "#wait")
    alice.screen.expect(
        "You are logged in as alice.",
        "[today 12:59] bob (while you were away): come back",
        "1 message was kept for you while you were away.",
        "Waiting for a partner",
    )
    assert leave(alice, fake) == 0


def test_a_login_elsewhere_closes_this_session_without_an_offer(fake: FakeServer) -> None:
    """§5.14: #session_replaced ends the session in a sentence; no new partner is offered; status 0."""
    alice = user_on(fake, Account("alice", password=PASSWORD))
    fake.expect("/login alice " + PASSWORD)
    fake.send("#logged_in_alice", "#wait", "#session_replaced")
    fake.hang_up()
    alice.screen.expect(
        "You are logged in as alice.",
        "No message was kept",
        "Waiting for a partner",
        "You logged in somewhere else; this session is closed.",
    )
    assert alice.exit_status() == 0


def test_a_tls_server_says_so_and_the_client_exits_1(fake: FakeServer) -> None:
    """§2.5: #tls_required, in answer to a plaintext first line, says to run with --tls; status 1."""
    alice = user_on(fake, Account("alice", password=PASSWORD))
    fake.expect("/login alice " + PASSWORD)
    fake.send("#tls_required")
    fake.hang_up()
    alice.screen.expect("This server speaks TLS: run with --tls.")
    assert alice.exit_status() == 1


def test_a_server_without_accounts_lets_the_user_go_on_as_a_guest(fake: FakeServer) -> None:
    """§5.3: a server that answers /login with #invalid_command has no accounts; a nickname follows."""
    alice = user_on(fake, Account("alice", password=PASSWORD))
    fake.expect("/login alice " + PASSWORD)
    fake.send("#invalid_command")
    alice.screen.expect("Choose a nickname first", "This server has no accounts")
    alice.keyboard.type("alice")
    fake.expect("alice")
    fake.send("#wait")
    alice.screen.expect("Waiting for a partner")
    assert leave(alice, fake) == 0


# -- Registering -------------------------------------------------------------------


def test_a_taken_name_asks_for_another_and_keeps_the_password(fake: FakeServer) -> None:
    """§5.13: after #nickname_taken or #invalid_nickname, the next name typed is registered, same password."""
    alice = user_on(fake, Account("alice", new=True, password=PASSWORD))
    fake.expect("/register alice " + PASSWORD)
    fake.send("#nickname_taken")
    alice.screen.expect("The nickname alice is taken. Type another nickname.", screen.ANOTHER_NAME)
    alice.keyboard.type("alice~")
    fake.expect("/register alice~ " + PASSWORD)
    fake.send("#invalid_nickname")  # a server stricter than §3 would say so
    alice.screen.expect("That nickname is not allowed", screen.ANOTHER_NAME)
    alice.keyboard.type("alice2")
    fake.expect("/register alice2 " + PASSWORD)
    fake.send("#registered_alice2", "#wait")
    alice.screen.expect("Your account alice2 is made", "Waiting for a partner")
    assert alice.screen.prompt == "alice2 (waiting)> "
    assert leave(alice, fake) == 0


def test_a_refused_new_password_is_asked_again_twice(fake: FakeServer) -> None:
    """§5.13: #invalid_password asks for a new password, typed twice, and registers with it."""
    alice = user_on(fake, Account("alice", new=True, password="x" * 8), passwords=(PASSWORD, PASSWORD))
    fake.expect("/register alice xxxxxxxx")
    fake.send("#invalid_password")
    alice.screen.expect("The server refused that password")
    fake.expect("/register alice " + PASSWORD)
    fake.send("#registered_alice", "#wait")
    alice.screen.expect("Your account alice is made", "Waiting for a partner")
    assert alice.asked()[-2:] == [
        "asked Choose a password for alice (8 to 64 characters): ",
        "asked The same password again: ",
    ]
    assert leave(alice, fake) == 0


# -- /login and /register typed at the Nickname prompt -------------------------


def test_login_typed_at_the_prompt_asks_for_the_password(fake: FakeServer) -> None:
    """/login NICK at the Nickname prompt asks for the password; one typed after the name is never sent."""
    alice = user_on(fake, passwords=(PASSWORD,))
    alice.keyboard.type("/login alice " + PASSWORD.replace("horse", "pony"))  # shown as typed: refused
    alice.screen.expect(screen.ACCOUNT_USAGE)
    alice.keyboard.type("/login alice")
    fake.expect("/login alice " + PASSWORD)
    fake.send("#logged_in_alice", "#wait")
    alice.screen.expect("You are logged in as alice.", "No message was kept", "Waiting for a partner")
    assert leave(alice, fake) == 0


def test_no_password_is_typed_over_plain_tcp_to_another_machine(fake: FakeServer) -> None:
    """A typed /register on a connection that may not carry a password is refused before it is asked."""
    alice = user_on(fake, passwords=(PASSWORD, PASSWORD), passwords_allowed=False)
    alice.keyboard.type("/register alice")
    alice.screen.expect(screen.PLAIN_TCP)
    alice.keyboard.type("alice")
    fake.expect("alice")  # the first line the server gets
    fake.send("#wait")
    alice.screen.expect("Waiting for a partner")
    assert not alice.asked()
    assert leave(alice, fake) == 0


# -- In a session: /users, /msg to someone away, /nickname, /delete ------------------


def logged_in(fake: FakeServer, *passwords: str) -> User:
    """Start a client logged in as alice, waiting for a partner."""
    alice = user_on(fake, Account("alice", password=PASSWORD), passwords=passwords)
    fake.expect("/login alice " + PASSWORD)
    fake.send("#logged_in_alice", "#wait")
    alice.screen.expect("You are logged in as alice.", "No message was kept", "Waiting for a partner")
    return alice


def test_account_notices_in_a_session_are_sentences_and_lists(fake: FakeServer) -> None:
    """§5.5, §5.15, §5.2: /users lists accounts; /msg to someone away is kept or refused; a name stays."""
    alice = logged_in(fake)
    alice.keyboard.type("/users", "/users z*", "/msg bob see you", "/msg carol hi", "/nickname al")
    fake.expect("/users", "/users z*", "/msg bob see you", "/msg carol hi", "/nickname al")
    fake.send(
        "#accounts_3 alice bob carol",
        "#accounts_0",
        "#stored_for_Bob",
        "#mailbox_full_carol",
        "#nickname_locked",
    )
    alice.screen.expect(
        "3 accounts match:\nalice",
        "No account matches.",
        "Bob is away: your message is kept for them.",
        "carol is away, and has as many messages waiting as the server keeps; that message was not sent.",
        "You are logged in as alice: an account's nickname is its name, and stays.",
    )
    assert alice.client.completer.candidates("c") == ["carol "]
    assert leave(alice, fake) == 0


def test_delete_is_confirmed_then_asks_the_password(fake: FakeServer) -> None:
    """§5.16: /delete asks yes or no, then the password; a wrong one keeps the account."""
    alice = logged_in(fake, "wrong-pass", PASSWORD)
    alice.keyboard.type("/delete " + PASSWORD)  # typed where everyone sees it: not sent
    alice.screen.expect(screen.DELETE_ALONE)
    alice.keyboard.type("/delete", "no")
    alice.screen.expect(screen.DELETE_WARNING % "alice", screen.NOT_DELETED)
    alice.keyboard.type("/delete", "yes")
    alice.screen.expect(screen.DELETE_WARNING % "alice")
    fake.expect("/delete wrong-pass")
    fake.send("#login_failed")
    alice.screen.expect("Wrong password: your account is not deleted.")
    alice.keyboard.type("/delete", "YES")
    alice.screen.expect(screen.DELETE_WARNING % "alice")
    fake.expect("/delete " + PASSWORD)
    fake.send("#account_deleted")
    alice.screen.expect(
        "Your account is deleted, with every message kept for it. You go on as a guest called alice."
    )
    alice.keyboard.type("/delete")  # a guest now: nothing to delete, nothing sent
    alice.screen.expect("You are not logged in, so there is no account to delete.")
    fake.send("#matched_to_bob", "#user_quit")
    fake.hang_up()
    alice.screen.expect("You are now chatting with bob", "bob has left the chat.", screen.OFFER)
    alice.keyboard.type("")
    fake.accept()
    fake.expect("alice")  # a guest's nickname, no /login
    fake.send("#wait")
    alice.screen.expect("Waiting for a partner")
    assert leave(alice, fake) == 0


def test_a_guest_is_told_there_is_nothing_to_delete_without_a_word_to_the_server(fake: FakeServer) -> None:
    """§5.16: the client knows a guest has no account, so /delete asks for nothing and sends nothing."""
    alice = user_on(fake)
    alice.keyboard.type("alice")
    fake.expect("alice")
    fake.send("#wait")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("/delete", "/users")
    alice.screen.expect("You are not logged in, so there is no account to delete.")
    fake.expect("/users")  # the next line the server gets
    fake.send("#accounts_1 bob")
    alice.screen.expect("1 account matches:\nbob")
    assert not alice.asked()
    assert leave(alice, fake) == 0


def test_every_account_notice_is_a_sentence() -> None:
    """§6: each new notice shows as a sentence, never raw; #login_failed says what it answers."""
    waiting, naming = Place(Phase.WAITING, "alice"), Place(Phase.NICKNAME, "alice")
    cases = [
        (NoticeLine(Notice.REGISTERED, "alice"), waiting, "Your account alice is made"),
        (NoticeLine(Notice.LOGGED_IN, "alice"), naming, "You are logged in as alice."),
        (NoticeLine(Notice.LOGIN_FAILED), naming, "Wrong password, or there is no account called alice."),
        (NoticeLine(Notice.LOGIN_FAILED), waiting, "Wrong password: your account is not deleted."),
        (NoticeLine(Notice.INVALID_PASSWORD), naming, "use 8 to 64 visible ASCII characters"),
        (
            NoticeLine(Notice.SESSION_REPLACED),
            waiting,
            "You logged in somewhere else; this session is closed.",
        ),
        (NoticeLine(Notice.STORED_FOR, "bob"), waiting, "bob is away: your message is kept for them."),
        (NoticeLine(Notice.MAILBOX_FULL, "bob"), waiting, "bob is away, and has as many messages waiting"),
        (NoticeLine(Notice.ACCOUNTS, "2", "bob eve"), waiting, "2 accounts match:\nbob  eve"),
        (NoticeLine(Notice.ACCOUNT_DELETED), waiting, "You go on as a guest called alice."),
        (NoticeLine(Notice.NOT_LOGGED_IN), waiting, "You are not logged in"),
        (NoticeLine(Notice.NICKNAME_LOCKED), waiting, "an account's nickname is its name"),
        (NoticeLine(Notice.TLS_REQUIRED), naming, "This server speaks TLS: run with --tls."),
    ]
    shown = RecordingScreen()
    for notice, place, sentence in cases:
        shown.notice(notice, place)
        shown.expect(sentence)


# -- End to end, with the real server -------------------------------------------------


def test_register_keep_login_and_delete_against_the_real_server(server: ChatServer) -> None:
    """§5.13-§5.16, §7.7: register; a message to alice away is kept; a login shows it; /delete ends it."""
    alice = User(server.port, Account("alice", new=True, password=PASSWORD))
    alice.screen.expect("Your account alice is made", "Waiting for a partner")
    alice.keyboard.type(None)
    alice.screen.expect("Leaving.")
    assert alice.exit_status() == 0
    bob = waiting(server.port, "bob")
    bob.send("/msg ALICE see you later", "/users a*")
    bob.expect("#stored_for_alice", "#accounts_1 alice")
    alice = User(server.port, Account("ALICE", password=PASSWORD), passwords=(PASSWORD,))
    alice.screen.expect(
        "You are logged in as alice.",
        "bob (while you were away): see you later",
        "1 message was kept for you while you were away.",
        "You are now chatting with bob",
    )
    bob.expect("#matched_to_alice")
    alice.keyboard.type("/nickname al")
    alice.screen.expect("You are logged in as alice: an account's nickname is its name, and stays.")
    alice.keyboard.type("/delete", "yes")
    alice.screen.expect(
        screen.DELETE_WARNING % "alice",
        "Your account is deleted, with every message kept for it. You go on as a guest called alice.",
    )
    bob.send("/users")
    bob.expect("#accounts_0")
    alice.keyboard.type("/quit")
    alice.screen.expect("Leaving.")
    bob.expect("#user_quit")
    assert alice.exit_status() == 0


# -- When a kept message was sent ----------------------------------------------------

EAST, WEST = timezone(timedelta(hours=1)), timezone(timedelta(hours=-5))


@pytest.mark.parametrize(
    "stored, zone, shown",
    [
        ("2026-12-02T11:59:59Z", EAST, "today 12:59"),
        ("2026-12-01T23:30:00Z", EAST, "today 00:30"),  # the 1st in UTC is the 2nd here
        ("2026-12-01T22:59:00Z", EAST, "yesterday 23:59"),
        ("2026-12-02T04:00:00Z", WEST, "yesterday 23:00"),  # the 2nd in UTC is the 1st there
        ("2026-11-30T10:02:03Z", EAST, "30 Nov 11:02"),
        ("2026-06-06T12:00:00Z", EAST, "6 Jun 13:00"),  # 179 days back: a day and a month are enough
        ("2026-06-05T12:00:00Z", EAST, "2026-06-05 13:00"),  # 180: the year too
        ("2025-12-01T10:02:00Z", EAST, "2025-12-01 11:02"),
        ("2026-12-03T12:00:00Z", EAST, "2026-12-03 13:00"),  # tomorrow: a clock is wrong somewhere
        ("2026-13-01T10:00:00Z", EAST, "2026-13-01T10:00:00Z"),  # no such month: shown as sent
    ],
)
def test_when_kept_says_the_day_and_the_local_time(stored: str, zone: tzinfo, shown: str) -> None:
    """§5.14: a stored-time, in UTC, is shown in the user's zone, its day as today, yesterday or a date."""
    assert screen.when_kept(stored, NOW, zone) == shown


def test_when_kept_follows_summer_time_in_the_machines_own_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no zone given, each time is shown at the offset the machine's zone had then (summer or winter)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset() is Unix only")
    with monkeypatch.context() as patched:
        patched.setenv("TZ", "EST+5EDT,M3.2.0,M11.1.0")  # POSIX rules: no time zone database needed
        time.tzset()
        try:
            assert screen.when_kept("2026-07-01T12:00:00Z", NOW) == "1 Jul 08:00"  # EDT, UTC-4
            assert screen.when_kept("2026-12-01T12:00:00Z", NOW) == "yesterday 07:00"  # EST, UTC-5
        finally:
            patched.undo()
            time.tzset()


def test_a_kept_message_is_stamped_with_its_day_on_a_real_screen() -> None:
    """The line printed starts with the day and time the message was sent, not the time it is shown."""
    out = io.StringIO()
    shown = screen.Screen(out, color=False, interactive=False, now=lambda: NOW, zone=ZONE)
    shown.notice(
        NoticeLine(Notice.STORED_FROM, "bob", "2026-12-01T10:02:03Z hi\tthere"), Place(Phase.NICKNAME)
    )
    assert out.getvalue() == "[yesterday 11:02] bob (while you were away): hi\tthere\n"


# -- Passwords: asked, never echoed, checked before they are sent ----------------------


@pytest.mark.parametrize(
    "new, answers, password, said",
    [
        (False, [PASSWORD], PASSWORD, []),
        (False, ["x" * 7, "x" * 8], "x" * 8, [screen.NOT_A_PASSWORD]),  # 8 characters at least (§3.3)
        (False, ["x" * 65, "x" * 64], "x" * 64, [screen.NOT_A_PASSWORD]),  # and 64 at most
        (False, ["two words", "héllo-wörld", PASSWORD], PASSWORD, [screen.NOT_A_PASSWORD] * 2),
        (False, ["short", "shorter", "tiny"], None, [screen.NOT_A_PASSWORD] * 3),  # three tries
        (False, [], None, []),  # Ctrl-D
        (True, [PASSWORD, PASSWORD], PASSWORD, []),
        (True, [PASSWORD, "other-pass", PASSWORD, PASSWORD], PASSWORD, [screen.PASSWORDS_DIFFER]),
        (True, ["short", PASSWORD, PASSWORD], PASSWORD, [screen.NOT_A_PASSWORD]),  # not asked twice
        (True, [PASSWORD], None, []),  # Ctrl-D at the second question
    ],
)
def test_read_password_asks_until_it_has_one(
    new: bool, answers: List[str], password: Optional[str], said: List[str]
) -> None:
    """A password is asked (twice for a new account) until it is one, three times at most."""
    sentences: List[str] = []
    assert keyboard.read_password(Passwords([], *answers), sentences.append, "alice", new) == password
    assert sentences == said


def test_ctrl_c_at_the_password_question_gives_up() -> None:
    """Ctrl-C while getpass waits (before the client connects) is no password, not a traceback."""

    def interrupted(prompt: str) -> str:
        raise KeyboardInterrupt

    assert keyboard.read_password(interrupted, print, "alice", new=True) is None


@pytest.mark.parametrize(
    "host, here",
    [
        ("localhost", True),
        ("LocalHost", True),
        ("127.0.0.1", True),
        ("127.255.3.4", True),
        ("::1", True),
        ("0:0:0:0:0:0:0:1", True),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("localhost.example.org", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_only_this_machine_is_trusted_with_a_password_over_plain_tcp(host: str, here: bool) -> None:
    """Plain TCP takes a password only to localhost, 127.0.0.0/8 or ::1, as written: no name is looked up."""
    assert client.is_this_machine(host) is here


def never_asked(prompt: str) -> str:
    """A getpass that fails the test: no password should be asked."""
    raise AssertionError("a password was asked: %r" % prompt)


def test_main_refuses_a_password_for_plain_tcp_before_asking_or_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One line on stderr says what to do; status 2; no password asked, nothing connected (TEST-NET-1)."""
    account = Account("alice")
    assert client.main("192.0.2.1", 7878, None, False, None, account, ask_password=never_asked) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "--tls" in err and "--insecure" in err, err


def test_main_refuses_an_account_name_that_is_no_nickname(capsys: pytest.CaptureFixture[str]) -> None:
    """§3: a name with a space cannot be an account's: said in one line before any password, status 2."""
    assert client.main("127.0.0.1", 7878, None, False, None, Account("al ice"), ask_password=never_asked) == 2
    assert "is not a nickname" in capsys.readouterr().err


@pytest.mark.parametrize("insecure, tls", [(True, False), (False, True)])
def test_insecure_or_tls_lets_a_password_go_to_another_machine(
    insecure: bool, tls: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """--insecure, or TLS, lets the client ask for the password; given none, it never connects: status 1."""
    asked: List[str] = []
    context = ssl.create_default_context() if tls else None
    status = client.main(
        "192.0.2.1", 7878, None, False, context, Account("alice"), insecure, Passwords(asked)
    )
    assert status == 1
    assert asked == ["asked Password for alice: "]
    assert "no password was given" in capsys.readouterr().err


def test_main_registers_with_a_password_typed_twice(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """mechat chat --register alice: two questions before connecting, then /register as the first line."""
    asked: List[str] = []
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # end of input at once: leave after the answer
    status: List[int] = []
    account = Account("alice", new=True)
    arguments = (
        "127.0.0.1",
        fake.port,
        None,
        False,
        None,
        account,
        False,
        Passwords(asked, PASSWORD, PASSWORD),
    )
    chat = threading.Thread(target=lambda: status.append(client.main(*arguments)))
    chat.start()
    fake.accept()
    fake.expect("/register alice " + PASSWORD)
    fake.send("#registered_alice", "#wait")
    fake.expect("/quit")
    fake.hang_up()
    chat.join(TIMEOUT)
    assert status == [0]
    assert asked == [
        "asked Choose a password for alice (8 to 64 characters): ",
        "asked The same password again: ",
    ]
    out, err = capsys.readouterr()
    assert "Your account alice is made" in out and "Waiting for a partner" in out
    assert PASSWORD not in out + err


def run_chat(*args: str) -> "subprocess.CompletedProcess[str]":
    """Run python -m mechat chat with these arguments and no input."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    command = [sys.executable, "-m", "mechat", "chat", *args]
    return subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, env=env
    )


def test_the_command_line_refuses_a_plain_password_to_another_machine() -> None:
    """mechat chat --host 192.0.2.1 --login alice: one line, status 2, before any question or connection."""
    result = run_chat("--host", "192.0.2.1", "--login", "alice")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "--tls" in lines[0] and "--insecure" in lines[0], result.stderr


def test_the_command_line_takes_one_way_to_name_yourself() -> None:
    """--nick, --login and --register exclude one another (an argparse error: status 2)."""
    result = run_chat("--nick", "bob", "--login", "alice")
    assert result.returncode == 2
    assert "not allowed with" in result.stderr


def test_the_terminal_is_put_back_as_it_was() -> None:
    """A password question cut short leaves echo off; the client's end puts it back on."""
    termios = pytest.importorskip("termios")
    main_end, terminal = os.openpty()
    try:
        with keyboard.terminal_restored(os.ttyname(terminal)):
            silent = termios.tcgetattr(terminal)
            silent[3] &= ~termios.ECHO  # as getpass does
            termios.tcsetattr(terminal, termios.TCSANOW, silent)
        assert termios.tcgetattr(terminal)[3] & termios.ECHO
    finally:
        os.close(main_end)
        os.close(terminal)


def test_no_terminal_is_nothing_to_restore(tmp_path: "os.PathLike[str]") -> None:
    """Where there is no terminal (a pipe, a service, Windows), the block just runs."""
    ran = []
    with keyboard.terminal_restored(os.path.join(str(tmp_path), "no-such-tty")):
        ran.append(True)
    assert ran == [True]
