"""The conformance kit grades servers correctly: mechat passes, planted bugs fail.

A kit that passes everything is worthless, so most of these tests run it
against a deliberately broken server (tests/buggy_servers.py) and pin the
exact check, by section and title, that must catch each bug.  The kit runs
in-process for coverage, and once through ``python -m mechat conform`` for
the command line.
"""

import contextlib
import io
import os
import socket
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

from mechat import conform
from mechat.__main__ import build_parser, main
from mechat.conform import core, registry, runner
from mechat.conform.clients import Session, show
from tests.buggy_servers import BUGS, running
from tests.conftest import StartServer
from tests.ports import refusing_port
from tests.student_server import serving

ROOT = Path(__file__).resolve().parent.parent

#: Seconds the kit waits for any one line.  A hang detector, not a clock:
#: every server here but the silent one fails by what it says or by closing,
#: never by silence, so no passing run waits it out, and a stall on a busy
#: machine cannot turn the evidence into "<nothing within ... s>".
KIT_TIMEOUT = 15.0


def run_kit(
    port: int, timeout: float = conform.DEFAULT_TIMEOUT, checks: Optional[List[registry.Check]] = None
) -> Tuple[int, List[str]]:
    """Run the kit in-process; return its exit status and its output lines."""
    out = io.StringIO()
    status = conform.run("127.0.0.1", port, timeout, out=out, checks=checks)
    return status, out.getvalue().splitlines()


def test_kit_passes_against_mechat(start_server: StartServer) -> None:
    """Every clause passes against mechat's own server, one PASS line each, exit 0."""
    server = start_server(max_rate=0)
    status, lines = run_kit(server.port)
    checks = len(registry.select([core.FEATURE]))  # the kit grades core alone by default
    assert lines[-1] == f"{checks} checks: {checks} passed, 0 failed"
    assert [line for line in lines[:-1] if not line.startswith("PASS §")] == []
    assert len(lines) == checks + 1
    assert status == 0


def test_kit_passes_with_flood_control_on(start_server: StartServer) -> None:
    """§9.5: the kit stays under the default rate, so a server with flood control still passes."""
    server = start_server()
    status, lines = run_kit(server.port)
    assert status == 0, "\n".join(line for line in lines if not line.startswith("PASS"))


#: For each planted bug: a check that must FAIL, and what it must have seen.
CAUGHT_BY = {
    "prefix-matched /quit": ("§5.3", "'/quitnow' (not /quit)", "'#user_quit'"),
    "ghost waiter handed out": ("§8", "a waiter that closes is never handed out", "'#matched_to_ghost'"),
    "long line forwarded in pieces": ("§2.3", "a 2001-octet message", "'xxxxxxxx"),
    "waiter matched with itself": ("§7.2", "a line while waiting gets #wait", "'#matched_to_wanda'"),
    "no #user_quit": ("§5.1", "/quit: the partner gets #user_quit", "<connection closed>"),
}


#: The core checks, which the planted bugs of BUGS are graded by.
CORE = registry.select([core.FEATURE])


def core_verdicts(port: int) -> List[runner.Result]:
    """Run the core checks against the server on ``port``."""
    return list(runner.run_all(("127.0.0.1", port), KIT_TIMEOUT, CORE))


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_kit_catches_planted_bug(bug: str) -> None:
    """Each planted bug fails the check for its clause, with the evidence in the line."""
    section, title, evidence = CAUGHT_BY[bug]
    with running(BUGS[bug]) as server:
        results = core_verdicts(server.port)
    failures = [result for result in results if not result.passed]
    caught = [
        result for result in failures if result.check.section == section and title in result.check.title
    ]
    assert caught, f"not caught; failures: {[str(result) for result in failures]}"
    exchange = caught[0].exchange
    assert exchange is not None and evidence in exchange.got
    # The kit cleans up after each check, so one bug does not fail everything.
    assert len(failures) <= 8, [str(result) for result in failures]


def test_partner_closed_without_user_quit_is_named() -> None:
    """§8: the kit says what the server forgot, not only that the connection closed."""
    with running(BUGS["no #user_quit"]) as server:
        result = runner.run_check(registry.by_id()["quit-in-chat"], ("127.0.0.1", server.port), KIT_TIMEOUT)
    assert result.exchange is not None
    assert (
        result.exchange.diagnosis
        == "bob was closed without #user_quit: tell the partner before closing it (§8)"
    )


def test_preflight_goes_only_as_far_as_the_chosen_checks_need() -> None:
    """A server without #wait still passes a check that needs only a connection: the preflight stops there."""
    checks = registry.select(["core"], ["quit-before-nickname"])
    with serving("no-wait") as port:
        status, lines = run_kit(port, KIT_TIMEOUT, checks)
    assert [line.split(" ", 1)[0] for line in lines] == ["PASS", "1"]
    assert status == 0


def test_other_ghost_and_pieces_checks_also_fail() -> None:
    """§8, §9.1: a ghost after a reset, and a 100 KB line in pieces, are caught too."""
    with running(BUGS["ghost waiter handed out"]) as server:
        ghost = {r.check.title: r.passed for r in core_verdicts(server.port)}
    with running(BUGS["long line forwarded in pieces"]) as server:
        pieces = {r.check.title: r.passed for r in core_verdicts(server.port)}
    assert ghost["a waiter that resets is never handed out"] is False
    assert ghost["a waiter that sends /quit is closed and never handed out"] is False
    assert pieces["a 100 000-octet line is refused once and never forwarded"] is False


def test_command_line_against_mechat(start_server: StartServer) -> None:
    """``python -m mechat conform --port P`` prints all PASS and exits 0."""
    server = start_server(max_rate=0)
    command = [sys.executable, "-m", "mechat", "conform", "--port", str(server.port), "--timeout", "5"]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = finished.stdout.splitlines()
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert lines[-1].endswith(" passed, 0 failed")
    assert all(line.startswith("PASS §") for line in lines[:-1])


def test_a_reader_that_stops_early_gets_no_traceback(start_server: StartServer) -> None:
    """``mechat conform | head -1``: the kit stops quietly when its reader has gone away."""
    server = start_server(max_rate=0)
    command = [sys.executable, "-m", "mechat", "conform", "--port", str(server.port)]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write fails
    try:
        with subprocess.Popen(command, cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE) as kit:
            _, errors = kit.communicate(timeout=60)
    finally:
        os.close(write_end)
    assert (kit.returncode, errors) == (1, b"")


def test_refused_connection_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No server: one clear line on stderr, no traceback, exit status 2."""
    with refusing_port() as port:
        status, lines = run_kit(port, KIT_TIMEOUT)
    err = capsys.readouterr().err
    assert status == 2
    assert lines == []
    assert err == f"mechat conform: cannot connect to 127.0.0.1:{port}: Connection refused\n"


def test_server_that_vanishes_mid_run_is_a_fail_not_a_crash() -> None:
    """A connection refused inside a check is reported as that check's FAIL."""
    with refusing_port() as port:
        result = runner.run_check(registry.CHECKS[0], ("127.0.0.1", port), KIT_TIMEOUT)
    assert not result.passed
    assert result.exchange is not None and "Connection refused" in result.exchange.got


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel accepts connections that no program ever reads."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


@contextlib.contextmanager
def replying(reply: bytes) -> Iterator[int]:
    """Run a server that sends each connection ``reply`` and closes it; yield its port."""

    class Reply(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(reply)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Reply)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def hanging_up_port() -> Iterator[int]:
    """A server that accepts each connection and closes it at once."""
    with replying(b"") as port:
        yield port


@pytest.mark.parametrize(
    "reply, got",
    [
        (b"#wait\r\n", ["'#wait\\r'", "<connection closed>"]),  # a server sends no CR (§2.2): it shows
        (b"#wait\n#wa", ["'#wait'", "<closed after the unterminated '#wa'>"]),
    ],
)
def test_kit_reports_exactly_what_arrived(reply: bytes, got: List[str]) -> None:
    """The kit reads a server's lines octet for octet, and names bytes left without an LF."""
    with replying(reply) as port, Session(("127.0.0.1", port), KIT_TIMEOUT) as session:
        client = session.connect("alice")
        lines = [show(client.read_line()), show(client.read_line())]
    assert lines == got


def test_hanging_server_fails_the_preflight_and_the_rest_is_skipped(silent_port: int) -> None:
    """A server that never answers fails the preflight once; checks needing more than a connection skip."""
    checks = registry.select(["core"], ["two-lines-in-one-write", "quit-before-nickname"])
    status, lines = run_kit(silent_port, timeout=0.2, checks=checks)
    assert status == 1
    assert lines[0].startswith(
        "PREFLIGHT FAILED: the server could not close a connection whose client hung up."
        " sent early: <hangs up at once: end of file>; expected early gets <connection closed>;"
        " got <nothing within 0.2 s>. Likely mistake: early hung up (end of file) and your server kept"
        " the connection open, or never read from it"
    )
    assert (
        "The kit tried the next steps anyway; the server could not answer a nickname with #wait:" in lines[0]
    )
    assert lines[0].endswith("Until it can, the kit skips 1 check of 2, those that need it. Fix this first.")
    assert lines[1] == (
        "SKIP §2.1 two lines in one segment are two lines: the server could not close a connection whose"
        " client hung up, which this check needs (see the preflight)"
    )
    assert lines[2] == (
        "FAIL §7.1 /quit before a nickname closes the connection: sent newcomer: '/quit'; expected newcomer"
        " gets <connection closed>; got <nothing within 0.2 s>. Likely mistake: your server kept newcomer's"
        " connection open after '/quit\\n': close it (§5.1, §8)"
    )
    assert lines[-1] == "2 checks: 0 passed, 1 failed, 1 skipped"


def test_server_that_closes_early_is_reported(hanging_up_port: int) -> None:
    """A server that closes at once fails the preflight with the close as evidence, and says why."""
    status, lines = run_kit(hanging_up_port, KIT_TIMEOUT, registry.CHECKS[:2])
    assert status == 1
    assert "got <connection closed>" in lines[0]
    assert "your server closed alice's connection" in lines[0]
    assert [line.split()[0] for line in lines[1:-1]] == ["SKIP", "SKIP"]


def test_matching_problems_name_every_flaw() -> None:
    """§7.1: a self-match and a one-sided match are both reported; a perfect matching is not."""
    assert core.matching_problems({"a": "b", "b": "a"}) == []
    assert core.matching_problems({"a": "a"}) == ["a was matched to itself"]
    assert core.matching_problems({"a": "b", "b": "c", "c": "b"}) == [
        "a was matched to b, who was matched to c"
    ]


def test_every_check_cites_a_section_and_has_a_unique_title() -> None:
    """Each line of the report names its clause, and no two checks share a title."""
    titles = [check.title for check in registry.CHECKS]
    ids = [check.id for check in registry.CHECKS]
    assert len(set(titles)) == len(titles)
    assert len(set(ids)) == len(ids)
    assert all(registry.section_key(check.section) for check in registry.CHECKS)


def test_conform_port_is_required_and_help_explains(capsys: pytest.CaptureFixture[str]) -> None:
    """``mechat conform`` needs --port, and its --help says what it does and how it exits."""
    with pytest.raises(SystemExit) as missing:
        main(["conform"])
    assert missing.value.code == 2
    assert "--port is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["conform", "--help"])
    help_text = capsys.readouterr().out
    assert "PASS, FAIL or SKIP" in help_text and "Exit status" in help_text


def test_kit_imports_no_server_code() -> None:
    """The kit is a black box: it imports neither the server, the matchmaker nor the client."""
    for path in (ROOT / "mechat" / "conform").glob("*.py"):
        source = path.read_text()
        for module in ("mechat.server", "mechat.matchmaker", "mechat.client"):
            assert module not in source, path
