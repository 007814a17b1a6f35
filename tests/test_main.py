"""Command-line tests: help, version, argument errors, and serve's start and clean stop."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Iterator, List

import pytest

from mechat import __main__ as cli
from mechat import __version__, protocol, tuning
from mechat.server import ChatServer
from tests.peers import TIMEOUT, waiting


@pytest.mark.parametrize("command", [[], ["serve"], ["chat"]])
def test_every_command_has_help(command: List[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help works for the program and every subcommand, and names the default port."""
    with pytest.raises(SystemExit) as exit:
        cli.main([*command, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mechat")
    if command:
        assert str(protocol.DEFAULT_PORT) in out


def test_serve_help_gives_every_limit_and_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    """§9: each limit flag is listed with its default."""
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag, default in [
        ("--max-clients", protocol.DEFAULT_MAX_CLIENTS),
        ("--nick-timeout", protocol.DEFAULT_NICKNAME_TIMEOUT),
        ("--send-timeout", protocol.DEFAULT_SEND_TIMEOUT),
        ("--max-rate", protocol.DEFAULT_MAX_RATE),
    ]:
        assert flag in out
        assert "(default: %s)" % default in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version names the program and protocol versions."""
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == "mechat %s (protocol %s)" % (
        __version__,
        protocol.PROTOCOL_VERSION,
    )


@pytest.mark.parametrize(
    "argv, complaint",
    [
        ([], "required"),
        (["serve", "--port", "70000"], "a port is 0 to 65535"),
        (["serve", "--port", "http"], "not a port number"),
        (["serve", "--max-rate", "-1"], "must be at least 0"),
        (["serve", "--nick-timeout", "soon"], "not a number"),
        (["serve", "--log-level", "loud"], "invalid choice"),
        (["chat", "--bogus"], "unrecognized arguments"),
    ],
)
def test_usage_errors_are_one_message_not_a_traceback(
    argv: List[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user mistake gets argparse's usage message and status 2."""
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    assert complaint in capsys.readouterr().err


#: What ``serve`` changes for the whole process; these tests run it in pytest's.
PROCESS_TUNING = (
    "pin_to_one_cpu",
    "shrink_thread_stacks",
    "switch_threads_less_often",
    "collect_garbage_less_often",
)


@pytest.fixture(autouse=True)
def keep_process_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep serve's process-wide tuning (CPU, stacks, GIL, gc) out of the test process."""
    for name in PROCESS_TUNING:
        monkeypatch.setattr(tuning, name, lambda: None)


def test_serve_on_a_busy_port_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """A port in use is one clear line and status 1."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert "cannot listen on 127.0.0.1:%d" % port in err


@pytest.fixture
def restore_sigterm() -> Iterator[None]:
    """Put SIGTERM's handler back after a test that lets serve install its own."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_serve_runs_until_sigterm(monkeypatch: pytest.MonkeyPatch, restore_sigterm: None) -> None:
    """§10: serve answers clients, and SIGTERM stops it cleanly with status 0."""
    started: List[ChatServer] = []
    ready = threading.Event()

    class ObservedServer(ChatServer):
        def __init__(self, *args: Any, **options: Any) -> None:
            super().__init__(*args, **options)
            started.append(self)
            ready.set()

    def chat_then_terminate() -> None:
        assert ready.wait(TIMEOUT)
        peer = waiting(started[0].port, "alice")
        os.kill(os.getpid(), signal.SIGTERM)
        peer.expect("#server_shutdown")
        peer.expect_closed()

    monkeypatch.setattr(cli, "ChatServer", ObservedServer)
    helper = threading.Thread(target=chat_then_terminate)
    helper.start()
    assert cli.main(["serve", "--port", "0", "--log-level", "warning"]) == 0
    helper.join(TIMEOUT)
    assert not helper.is_alive()


def test_console_script_is_installed() -> None:
    """pip install . provides a mechat command (checked where the package is installed, as in tox)."""
    script = shutil.which("mechat")
    if script is None and "TOX_ENV_NAME" not in os.environ:
        pytest.skip("mechat is not installed in this environment; tox checks it")
    assert script is not None
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("mechat ")


def test_python_dash_m_runs_the_cli() -> None:
    """python -m mechat is the same program."""
    result = subprocess.run(
        [sys.executable, "-m", "mechat", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0
    assert result.stdout.startswith("mechat ")
