"""Client tests: the reader and writer threads against a real server and a test Peer.

In-process tests feed the client's keyboard from a queue and record what it
shows; a few end-to-end tests run ``python -m mechat chat`` as a subprocess
with piped standard input, as a script would.
"""

import io
import os
import queue
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from mechat import client
from mechat.client import ChatClient, Screen
from mechat.server import ChatServer
from tests.conftest import StartServer
from tests.peers import TIMEOUT, Peer, waiting
from tests.ports import refusing_port

ROOT = Path(__file__).resolve().parent.parent


class RecordingScreen(Screen):
    """A Screen that keeps every line shown, for tests to expect in order."""

    def __init__(self) -> None:
        super().__init__(io.StringIO(), color=False, interactive=False)
        self.shown: queue.Queue[str] = queue.Queue()

    def show(self, text: str) -> None:
        """Record instead of printing."""
        self.shown.put(text)

    def expect(self, *fragments: str) -> None:
        """Fail unless the next lines shown contain these fragments, in order."""
        for fragment in fragments:
            try:
                line = self.shown.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError("nothing shown; expected %r" % fragment) from None
            assert fragment in line, "expected %r, shown %r" % (fragment, line)


class Keyboard:
    """Typed lines from a queue; None ends the input like Ctrl-D."""

    def __init__(self) -> None:
        self.typed: queue.Queue[Optional[str]] = queue.Queue()

    def type(self, *lines: Optional[str]) -> None:
        """Type each line (None for Ctrl-D)."""
        for line in lines:
            self.typed.put(line)

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                line = self.typed.get(timeout=30)
            except queue.Empty:
                return  # a test that never typed Ctrl-D: end the input, don't kill the thread
            if line is None:
                return
            yield line


class Session:
    """A ChatClient running in a thread, with its keyboard and screen."""

    def __init__(self, port: int, nickname: Optional[str] = None) -> None:
        self.keyboard = Keyboard()
        self.screen = RecordingScreen()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.settimeout(None)
        self.client = ChatClient(self.sock, self.keyboard, self.screen, nickname)
        self.status: List[int] = []
        self.thread = threading.Thread(target=lambda: self.status.append(self.client.run()))
        self.thread.start()

    def exit_status(self) -> int:
        """Wait for the client to finish and return its exit status."""
        self.thread.join(timeout=TIMEOUT)
        assert not self.thread.is_alive(), "the client did not finish"
        self.keyboard.type(None)  # and let its writer thread go now, not in 30 s
        self.sock.close()
        return self.status[0]


def test_client_chats_and_ends_when_the_partner_quits(server: ChatServer) -> None:
    """The client shows sentences, marks the partner's lines, and exits 0 on #user_quit."""
    bob = waiting(server.port, "bob")
    alice = Session(server.port, "alice")
    alice.screen.expect("You are now chatting with bob. Type /quit to leave.")
    bob.expect("#matched_to_alice")
    alice.keyboard.type("hello bob")
    bob.expect("hello bob")
    bob.send("hi alice", "/nickname robert", "/quit")
    alice.screen.expect("bob: hi alice", "bob is now known as robert", "robert has left the chat.")
    assert alice.exit_status() == 0


def test_client_asks_again_after_an_invalid_nickname(server: ChatServer) -> None:
    """§3: after #invalid_nickname the next typed line is sent as the nickname."""
    alice = Session(server.port)
    alice.keyboard.type("bad nick", "/nickname x", "alice")
    alice.screen.expect("That nickname is not allowed", "only command is /quit", "Waiting for a partner")
    bob = Peer(server.port)
    bob.send("bob")
    bob.expect("#matched_to_alice")
    alice.screen.expect("You are now chatting with bob")
    alice.keyboard.type("/quit")
    bob.expect("#user_quit")
    assert alice.exit_status() == 0


def test_lines_typed_while_waiting_are_sent_once_matched(server: ChatServer) -> None:
    """§7.2: the client holds lines typed before a partner exists, then sends them in order."""
    alice = Session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("early one", "early two")
    bob = Peer(server.port)
    bob.send("bob")
    bob.expect("#matched_to_alice", "early one", "early two")
    alice.screen.expect("You are now chatting with bob")
    alice.keyboard.type("/nickname alicia")
    alice.screen.expect("You are now known as alicia")
    alice.keyboard.type("#hash")
    alice.screen.expect("That line was not sent")
    alice.keyboard.type(None)
    alice.screen.expect("Leaving.")
    bob.expect("#partner_renamed_alicia", "#user_quit")
    assert alice.exit_status() == 0


def test_end_of_input_while_waiting_says_what_was_not_sent(server: ChatServer) -> None:
    """Ctrl-D sends /quit and exits 0; held lines are reported, never dropped silently."""
    alice = Session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    alice.keyboard.type("nobody will read this", None)
    alice.screen.expect("1 line(s) were not sent", "Leaving.")
    assert alice.exit_status() == 0


def test_full_server_is_reported_with_a_nonzero_status(start_server: StartServer) -> None:
    """§9.3: #server_full is shown as a sentence and the client exits 1."""
    server = start_server(max_clients=1)
    occupant = waiting(server.port, "occupant")
    late = Session(server.port, "late")
    late.screen.expect("The server is full")
    assert late.exit_status() == 1
    occupant.close()


def test_server_shutdown_is_a_goodbye(start_server: StartServer) -> None:
    """§10: #server_shutdown is shown as a sentence and the client exits 0."""
    server = start_server()
    alice = Session(server.port, "alice")
    alice.screen.expect("Waiting for a partner")
    server.shutdown()
    server.server_close()
    alice.screen.expect("The server is shutting down")
    assert alice.exit_status() == 0


def test_server_closing_without_notice_is_reported() -> None:
    """A server that just closes is reported in plain words; the client exits 0."""
    listener = socket.create_server(("127.0.0.1", 0))
    session = Session(listener.getsockname()[1], "alice")
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(TIMEOUT)
        assert conn.recv(100) == b"alice\n"
        conn.sendall(b"#nonsense_notice\n")
    session.screen.expect("The server sent something unexpected", "The server closed the connection.")
    assert session.exit_status() == 0
    listener.close()


# -- The screen --------------------------------------------------------------------


def test_screen_stamps_colours_and_redraws_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """An incoming line clears the prompt line, prints, and redraws the prompt and typed text."""
    out = io.StringIO()
    screen = Screen(out, color=True, interactive=True)
    screen.prompt = "> "
    monkeypatch.setattr(client, "typed_so_far", lambda: "half-typ")
    screen.message("bob", "hello")
    text = out.getvalue()
    assert text.startswith("\r\x1b[K[")
    assert Screen.BOLD_CYAN + "bob" + Screen.RESET + ": hello\n> half-typ" in text


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_colour_respects_no_color_and_pipes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour only on a terminal, only when asked, and never with NO_COLOR set."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert client.use_color(True, FakeTerminal())
    assert not client.use_color(False, FakeTerminal())
    assert not client.use_color(True, io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not client.use_color(True, FakeTerminal())


def test_keyboard_lines_from_a_pipe_and_from_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped lines lose their newline; interactive input ends at Ctrl-D (EOFError)."""
    assert list(client.keyboard_lines(io.StringIO("a\r\nb\n"), False, lambda: "")) == ["a", "b"]
    typed = iter(["x", "y"])

    def fake_input(prompt: str) -> str:
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    assert list(client.keyboard_lines(io.StringIO(), True, lambda: "> ")) == ["x", "y"]


def test_typed_so_far_is_text() -> None:
    """Outside an interactive readline session the typed text is a string (usually empty)."""
    assert isinstance(client.typed_so_far(), str)


# -- End to end: python -m mechat chat ----------------------------------------------


def run_chat(port: int, stdin: bytes, *args: str) -> "subprocess.CompletedProcess[bytes]":
    """Run the client as a script would, with piped standard input."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    command = [sys.executable, "-m", "mechat", "chat", "--port", str(port), *args]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=30, env=env, check=False)


def test_piped_client_end_to_end(server: ChatServer) -> None:
    """printf 'alice\\nhello\\n' | mechat chat: matched, says hello, quits at end of input, exits 0."""
    bob = waiting(server.port, "bob")
    result = run_chat(server.port, b"alice\nhello\n")
    bob.expect("#matched_to_alice", "hello", "#user_quit")
    bob.expect_closed()
    assert result.returncode == 0, result.stderr
    assert b"You are now chatting with bob" in result.stdout
    assert b"Traceback" not in result.stderr


def test_nick_option_end_to_end(server: ChatServer) -> None:
    """--nick sends the nickname first; the partner's lines are shown with its name."""
    bob = waiting(server.port, "bob")
    chat = subprocess.Popen(
        [sys.executable, "-m", "mechat", "chat", "--port", str(server.port), "--nick", "alice"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    bob.expect("#matched_to_alice")
    bob.send("hi there", "/quit")
    assert chat.wait(timeout=30) == 0  # standard input stays open: the client ends on #user_quit
    out, err = chat.communicate(timeout=30)
    assert b"Traceback" not in err
    assert b"bob: hi there" in out
    assert b"bob has left the chat." in out


def test_refused_connection_is_one_clear_line() -> None:
    """No server: one line on stderr, a non-zero status, no traceback."""
    with refusing_port() as port:
        result = run_chat(port, b"alice\n")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0] and "mechat serve" in lines[0]
    assert result.stdout == b""


def test_main_in_process_with_piped_input(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """client.main reads the nickname and lines from a pipe and returns 0 at the end."""
    bob = waiting(server.port, "bob")
    monkeypatch.setattr(sys, "stdin", io.StringIO("alice\nhello\n"))
    assert client.main("127.0.0.1", server.port, None, color=True) == 0
    bob.expect("#matched_to_alice", "hello", "#user_quit")
    out = capsys.readouterr().out
    assert "You are now chatting with bob" in out
    assert "\x1b[" not in out  # a pipe is never coloured


def test_screen_with_closed_output_stays_quiet() -> None:
    """Output that has gone away (a closed pipe) is not an error in the reader thread."""
    out = io.StringIO()
    out.close()
    Screen(out, color=False, interactive=False).info("nobody sees this")
