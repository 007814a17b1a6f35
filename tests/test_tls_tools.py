"""Tests for ``mechat conform --tls`` and ``mechat load --tls`` against a real server that serves TLS.

The kit and the load generator are run as a user runs them, through
:func:`mechat.__main__.main`, in-process, against a :class:`ChatServer`
given a TLS context (spec §2.5).  Certificates come from ``trustme``, as
in tests/test_tls_server.py.  Every read the tools make has a deadline of
their own; nothing here waits on a clock.

A flood both ways under TLS is already pinned, client to client through
the server, by tests/test_tls_server.py.  The kit's ``full-duplex`` check
and ``load --mode flood`` below run one too, and pin that the tools
themselves encrypt and decrypt in order: the kit from two threads per
connection, the load generator on non-blocking sockets that take only
part of its ciphertext at a time.
"""

import socket
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

from mechat import conform, load, tls
from mechat.__main__ import main
from mechat.server import ChatHandler, ChatServer, Limits
from tests.certificates import Files
from tests.conftest import SHUTDOWN_WAIT, CheckedServer

#: The name the test certificate is for, and where the test servers listen.
HOST = "127.0.0.1"

#: Seconds the kit waits for any one line: a hang detector, never reached by a passing run.
KIT_TIMEOUT = "15"

#: Seconds a load run may take in all; far above what it needs.
LOAD_TIMEOUT = "60"

#: Octets of send buffer the flood's sockets ask for: far less than a
#: flood's window of ciphertext, so sends are cut short (Linux doubles it).
SMALL_SEND_BUFFER = 4096


def start_server(files: Optional[Files]) -> CheckedServer:
    """Start a server with no flood control, over TLS with ``files``' certificate unless None."""
    context = tls.server_context(files.cert, files.key) if files is not None else None
    server = CheckedServer((HOST, 0), Limits(max_rate=0), ChatHandler, context)
    server.shutdown_grace = server.shutdown_cutoff = SHUTDOWN_WAIT
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop(server: CheckedServer) -> None:
    """Stop ``server``, failing the test if any of its handlers raised."""
    server.shutdown()
    server.server_close()
    failures = server.failures_once_done(SHUTDOWN_WAIT)
    assert not failures, "a handler raised:\n" + failures[0]


@pytest.fixture
def tls_server(files: Files) -> Iterator[ChatServer]:
    """A server that serves TLS with the test certificate."""
    server = start_server(files)
    yield server
    stop(server)


@pytest.fixture
def plain_server() -> Iterator[ChatServer]:
    """A server that serves plain TCP."""
    server = start_server(None)
    yield server
    stop(server)


def one_line(text: str) -> str:
    """Return ``text``, failing unless it is one line, with no traceback."""
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text


# -- The conformance kit --------------------------------------------------------------------


def test_the_kit_passes_every_core_check_over_tls(
    tls_server: ChatServer, files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inside TLS everything is as on plain TCP (§2.5): every core check passes, the full duplex one too."""
    args = ["conform", "--port", str(tls_server.port), "--timeout", KIT_TIMEOUT, "--features", "core"]
    status = main([*args, "--tls", "--cafile", files.cafile])
    lines = capsys.readouterr().out.splitlines()
    checks = len(conform.select([conform.core.FEATURE]))
    assert [line for line in lines[:-1] if not line.startswith("PASS §")] == []
    assert lines[-1] == f"{checks} checks: {checks} passed, 0 failed"
    assert status == 0


def test_cafile_alone_means_tls(
    tls_server: ChatServer, files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    """--cafile implies --tls, as for mechat chat: one check is enough to show the kit spoke TLS."""
    status = main(["conform", "--port", str(tls_server.port), "--cafile", files.cafile, "--only", "§2.1"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 0, lines
    assert lines[-1].endswith(" passed, 0 failed"), lines


def test_a_plaintext_kit_on_a_tls_server_is_told_to_use_tls_in_one_line(
    tls_server: ChatServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server's #tls_required (§2.5) ends the run at once: one line naming --tls, no report, exit 2."""
    status = main(["conform", "--port", str(tls_server.port), "--timeout", KIT_TIMEOUT])
    captured = capsys.readouterr()
    error = one_line(captured.err)
    assert "#tls_required" in error and "--tls" in error, error
    assert captured.out == ""
    assert status == 2


def test_a_tls_kit_on_a_plaintext_server_is_told_to_grade_without_tls(
    plain_server: ChatServer, files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plaintext server answers a ClientHello with #invalid_nickname (§2.5): the kit quotes it in a line."""
    status = main(["conform", "--port", str(plain_server.port), "--tls", "--cafile", files.cafile])
    captured = capsys.readouterr()
    error = one_line(captured.err)
    assert "'#invalid_nickname'" in error and "without --tls" in error, error
    assert captured.out == ""
    assert status == 2


def test_a_kit_that_does_not_trust_the_certificate_says_so_in_one_line(
    tls_server: ChatServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --cafile the system's authorities are trusted, and the test authority is none of them."""
    status = main(["conform", "--port", str(tls_server.port), "--tls"])
    error = one_line(capsys.readouterr().err)
    assert "certificate was refused" in error and "--cafile" in error, error
    assert status == 2


def test_a_kit_given_a_missing_cafile_says_so_before_it_connects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --cafile that cannot be read is an option that is wrong: exit 2, the file named in one line."""
    missing = str(tmp_path / "nowhere.pem")
    assert main(["conform", "--port", "1", "--cafile", missing]) == 2
    error = one_line(capsys.readouterr().err)
    assert missing in error, error


# -- The load generator -----------------------------------------------------------------------


def load_args(port: int, mode: str, messages: int, size: int, *tls_options: str) -> List[str]:
    """Return the arguments of a small load run against ``port``, then ``tls_options``."""
    return [
        "load",
        "--port",
        str(port),
        "--mode",
        mode,
        "--pairs",
        "3",
        "--messages",
        str(messages),
        "--size",
        str(size),
        "--timeout",
        LOAD_TIMEOUT,
        *tls_options,
    ]


def load_report(
    capsys: pytest.CaptureFixture[str], port: int, mode: str, messages: int, size: int, cafile: str
) -> str:
    """Run three pairs over TLS; expect every line delivered and every quit seen; return the report."""
    status = main(load_args(port, mode, messages, size, "--tls", "--cafile", cafile))
    out = capsys.readouterr().out
    delivered = 3 * messages * 2  # pingpong: each ping, then its echo; flood: the lines of both sides
    assert f"  lines: {delivered} delivered, 0 lost, 0 duplicated or reordered, 0 corrupt," in out, out
    assert "  quit: 3 of 3 partners got #user_quit and the close" in out, out
    assert out.rstrip().endswith("result: OK"), out
    assert status == 0
    return out


def test_load_over_tls_checks_every_round_trip(
    tls_server: ChatServer, files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every ping and its echo arrive once, in order and intact, over TLS as over TCP (§7.3, §8)."""
    out = load_report(capsys, tls_server.port, "pingpong", 50, 64, files.cafile)
    assert "  throughput: " in out and "(150 in " in out, out


def test_a_tls_flood_that_sockets_take_in_part_loses_nothing(
    tls_server: ChatServer, files: Files, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ciphertext that a send() did not take waits, whole and in order, for the next (§7.3, §8).

    Both sides of every pair flood at once, through send buffers of a few
    kB, so that most sends are cut short.
    """
    connect = socket.create_connection

    def connect_with_a_small_send_buffer(*args: Any, **kwargs: Any) -> socket.socket:
        sock = connect(*args, **kwargs)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_SEND_BUFFER)
        return sock

    write = load.Client.write
    cut_short: List[int] = []  # what a write left for the next, each time it left something

    def write_and_note(client: load.Client) -> None:
        write(client)
        if client.unsent:
            cut_short.append(len(client.unsent))

    monkeypatch.setattr(socket, "create_connection", connect_with_a_small_send_buffer)
    monkeypatch.setattr(load.Client, "write", write_and_note)
    load_report(capsys, tls_server.port, "flood", 2000, 2000, files.cafile)
    assert cut_short, "every send() took all it was given: the flood did not test what it says"


def test_a_tls_load_on_a_plaintext_server_is_told_to_connect_without_tls(
    plain_server: ChatServer, files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first client's handshake meets #invalid_nickname (§2.5): one line, exit 2, nothing measured."""
    status = main(load_args(plain_server.port, "pingpong", 1, 64, "--tls", "--cafile", files.cafile))
    captured = capsys.readouterr()
    error = one_line(captured.err)
    assert "'#invalid_nickname'" in error and "without --tls" in error, error
    assert captured.out == ""
    assert status == 2


def test_a_load_that_does_not_trust_the_certificate_says_so_in_one_line(
    tls_server: ChatServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --cafile the test authority is not trusted: one line that says the certificate was refused."""
    status = main(load_args(tls_server.port, "pingpong", 1, 64, "--tls"))
    error = one_line(capsys.readouterr().err)
    assert "certificate was refused" in error and "--cafile" in error, error
    assert status == 2
