"""The account checks grade protocol 2's accounts correctly: mechat passes, each planted bug fails its own.

As in tests/test_conform_rooms.py, most of these tests run the checks of
:mod:`mechat.conform.accounts` against one of mechat's servers with a bug
planted (``ACCOUNT_BUGS`` in tests/buggy_servers.py), and pin exactly which
checks fail and what they saw.  The check of a restart needs a server
process the kit can kill, so its bugs run as ``python -m tests.buggy_servers``
through the kit's ``--server-command``.  The rest pin the promises of the
module: it passes twice on one server and with strangers online, it
finds the mailbox size it is told, and a check it cannot finish is
skipped, saying how to make it possible, never failed.
"""

import shlex
import sys
import time
from typing import Dict, List, Optional

import pytest

from mechat.__main__ import main
from mechat.conform import accounts, registry, runner
from mechat.conform.accounts import Settings, StoredLine, configured, cut_stored, time_problem
from mechat.conform.clients import Session
from mechat.conform.diagnose import CLOSED
from mechat.protocol import DEFAULT_MAILBOX_SIZE
from tests.buggy_servers import ACCOUNT_BUGS, running
from tests.conftest import StartServer

#: Seconds the kit waits for any one line: a hang detector, not a clock.
#: Every planted bug here fails its checks by a line that came (the
#: evidence in CAUGHT_BY), never by silence, so no run waits it out.
KIT_TIMEOUT = 15.0

ACCOUNTS = registry.select([accounts.FEATURE])

#: The one check that needs --server-command, skipped without it.
RESTART = "stored-survives-restart"

PYTHON = shlex.quote(sys.executable)

#: mechat's own server, as a student would give it to --server-command.
MECHAT_SERVE = f"{PYTHON} -m mechat serve --port {{port}} --db {{db}}"

#: mechat's server and store with a bug of restarts planted by a flag (none by default).
BUGGY_SERVE = f"{PYTHON} -m tests.buggy_servers --port {{port}} --db {{db}}"


def results_of(port: int, checks: List[registry.Check]) -> Dict[str, runner.Result]:
    """Run ``checks`` against the server on ``port``; return every verdict by id."""
    return {result.check.id: result for result in runner.run_all(("127.0.0.1", port), KIT_TIMEOUT, checks)}


def failures(port: int, checks: List[registry.Check]) -> Dict[str, runner.Result]:
    """Run ``checks`` against the server on ``port``; return the failed ones by id, the skipped apart."""
    results = results_of(port, checks)
    skipped = {check_id for check_id, result in results.items() if result.status is runner.Status.SKIP}
    assert skipped <= {RESTART}, skipped
    return {check_id: result for check_id, result in results.items() if result.status is runner.Status.FAIL}


def restart_check(command: Optional[str]) -> registry.Check:
    """Return the check of a restart, given ``command`` as --server-command."""
    return configured(registry.select([accounts.FEATURE], [RESTART]), Settings(server_command=command))[0]


# -- mechat passes ----------------------------------------------------------------


def test_mechat_passes_every_account_check(start_server: StartServer) -> None:
    """§3.1-§9.11: mechat passes every account check, twice on one server, the restart's skipped.

    Accounts outlive a run, so the second run meets the first run's; its
    fresh names keep them apart.  Without --server-command the check of a
    restart cannot kill the server, so it is skipped, and says how to give
    it one.
    """
    server = start_server()
    for _ in range(2):
        results = results_of(server.port, ACCOUNTS)
        assert len(results) == len(ACCOUNTS)
        assert [str(result) for result in results.values() if result.status is runner.Status.FAIL] == []
        skipped = {check_id: result for check_id, result in results.items() if not result.passed}
        assert list(skipped) == [RESTART]
        assert "--server-command 'python3 -m mechat serve --port {port}" in skipped[RESTART].skipped_because


def test_checks_pass_with_strangers_online(start_server: StartServer) -> None:
    """§5.15: strangers chatting, their accounts away and logged in, change no verdict."""
    server = start_server()
    with Session(("127.0.0.1", server.port), KIT_TIMEOUT) as strangers:
        away = strangers.connect("a-stranger")
        away.ask(b"/register a-stranger password1", b"#registered_a-stranger")
        away.expect(b"#wait")
        away.ask(b"/quit", CLOSED)
        member = strangers.connect("Z-stranger")
        member.ask(b"/register Z-stranger password2", b"#registered_Z-stranger")
        member.expect(b"#wait")
        strangers.meet(member, "stranger-2")  # chatting, so never swept up between checks
        assert failures(server.port, ACCOUNTS) == {}


def test_mechat_survives_a_restart() -> None:
    """§7.7: a message stored by mechat's server in a file is there after kill -9 and a restart."""
    result = runner.run_check(restart_check(MECHAT_SERVE), ("127.0.0.1", 9), KIT_TIMEOUT)
    assert result.status is runner.Status.PASS, result
    assert result.exchange is not None and "kept on disk through kill -9" in result.exchange.got, result


# -- Planted bugs ------------------------------------------------------------------------

#: For each planted bug: every check that must fail, and what it must have got.
CAUGHT_BY: Dict[str, Dict[str, str]] = {
    "password accepted in another case": {
        "login-wrong-password": "'#logged_in_",
        "delete-wrong-password": "'#account_deleted'",
    },
    "/delete deletes every account its name matches with LIKE": {"delete-only-own": "'#login_failed'"},
    "stored messages delivered newest first": {"stored-oldest-first": "'#stored_from_"},
    "an account's name taken by a guest": {
        "account-name-first-line": "'#wait'",
        "account-name-rename": "'#nickname_changed_",
    },
}


@pytest.mark.parametrize("bug", sorted(ACCOUNT_BUGS))
def test_planted_bug_fails_exactly_its_checks(bug: str) -> None:
    """Each planted bug fails the checks of its rule, with the evidence in the line, and no other check."""
    with running(ACCOUNT_BUGS[bug]) as server:
        failed = failures(server.port, ACCOUNTS)
    assert sorted(failed) == sorted(CAUGHT_BY[bug]), [str(result) for result in failed.values()]
    for check_id, evidence in CAUGHT_BY[bug].items():
        exchange = failed[check_id].exchange
        assert exchange is not None and exchange.got.startswith(evidence), exchange


#: For a planted bug, a check it fails, and the words of the likely mistake the kit names.
DIAGNOSES = [
    (
        "password accepted in another case",
        "login-wrong-password",
        "its password in the other case was accepted: accept only the account's own password, compared case",
    ),
    (
        "/delete deletes every account its name matches with LIKE",
        "delete-only-own",
        "deleted '{tag}-victim' too: delete the deleter's own account",
    ),
    (
        "stored messages delivered newest first",
        "stored-oldest-first",
        "'message 6 of 6' came before 'message 1 of 6', which was stored first: deliver a mailbox oldest",
    ),
    (
        "an account's name taken by a guest",
        "account-name-first-line",
        "the name of an account that is away: a nickname is compared with every account's name too",
    ),
]


@pytest.mark.parametrize("bug, check_id, words", DIAGNOSES)
def test_planted_bug_is_named(bug: str, check_id: str, words: str) -> None:
    """§3.1, §3.3, §5.16, §7.7: the report names the mistake, not only the line that differs."""
    with running(ACCOUNT_BUGS[bug]) as server:
        result = runner.run_check(registry.by_id()[check_id], ("127.0.0.1", server.port), KIT_TIMEOUT)
    assert result.exchange is not None, result
    tag = result.exchange.sent.split("-", 1)[0]  # 'qzkfw-victim: ...' begins with the check's tag
    assert words.format(tag=tag) in result.exchange.diagnosis, result.exchange


@pytest.mark.parametrize(
    "flag, evidence, words",
    [
        ("", None, None),  # the launcher alone: the flag is the only difference
        ("--forget", "'#login_failed'", "the account registered before the server was killed was gone"),
        ("--forget-mail", "'#wait'", "the message was answered #stored_for_, then lost when the server was"),
    ],
)
def test_a_store_in_memory_fails_the_restart(
    flag: str, evidence: Optional[str], words: Optional[str]
) -> None:
    """§7.7: a server whose store, or only its mailboxes, live in memory loses a message to kill -9.

    The server runs as a process of its own through --server-command, with
    a file it ignores; the kit kills it and starts it again on its port.
    """
    result = runner.run_check(restart_check(f"{BUGGY_SERVE} {flag}"), ("127.0.0.1", 9), KIT_TIMEOUT)
    if evidence is None or words is None:
        assert result.status is runner.Status.PASS, result
        return
    assert result.status is runner.Status.FAIL, result
    assert result.exchange is not None and result.exchange.got.startswith(evidence), result
    assert words in result.exchange.diagnosis, result.exchange


# -- What the kit cannot check, and what it must be told ----------------------------------------


def test_a_server_command_that_does_not_start_is_skipped() -> None:
    """§7.7: a command that exits before it listens is the kit's setting, not the server's fault: SKIP."""
    result = runner.run_check(
        restart_check("echo no server on {port}; exit 3"), ("127.0.0.1", 9), KIT_TIMEOUT
    )
    assert result.status is runner.Status.SKIP, result
    assert "it exited with status 3 before it listened" in result.skipped_because, result
    assert "it printed: no server on " in result.skipped_because, result


@pytest.mark.parametrize(
    "server_size, kit_size, words",
    [
        (3, 3, None),
        (0, 0, None),
        (3, DEFAULT_MAILBOX_SIZE, "the mailbox was full after 3 messages, but the kit was told it holds 100"),
        (5, 3, "a message past 3 messages was stored: the server has no mailbox limit, or one above the 3"),
    ],
)
def test_mailbox_full_holds_the_server_to_the_size_it_is_told(
    start_server: StartServer, server_size: int, kit_size: int, words: Optional[str]
) -> None:
    """§9.10: mailbox-full passes at the size the kit is told, and fails, saying which way, at another."""
    server = start_server(mailbox_size=server_size)
    check = configured(registry.select([accounts.FEATURE], ["mailbox-full"]), Settings(mailbox_size=kit_size))
    result = runner.run_check(check[0], ("127.0.0.1", server.port), KIT_TIMEOUT)
    if words is None:
        assert result.status is runner.Status.PASS, result
    else:
        assert result.exchange is not None and words in result.exchange.diagnosis, result


def test_mailbox_full_under_flood_control_is_skipped(start_server: StartServer) -> None:
    """§9.5, §9.10: a server that rations lines too tightly to fill a mailbox is skipped, and told why."""
    server = start_server(max_rate=2)
    result = runner.run_check(registry.by_id()["mailbox-full"], ("127.0.0.1", server.port), KIT_TIMEOUT)
    assert result.status is runner.Status.SKIP, result
    assert "#rate_limited" in result.skipped_because and "--max-rate 0" in result.skipped_because, result


def test_the_command_line_gives_the_checks_their_settings(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--mailbox-size`` and ``--server-command`` reach the checks that need them, through mechat conform."""
    server = start_server(mailbox_size=2)
    port = str(server.port)
    only = ["--features", "accounts", "--only", "mailbox-full", RESTART]
    settings = ["--mailbox-size", "2", "--server-command", MECHAT_SERVE]
    assert main(["conform", "--port", port, *only, *settings]) == 0
    assert "2 passed" in capsys.readouterr().out


def test_a_server_command_without_a_port_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """The kit chooses the port: a --server-command without {port} is an error of the command line."""
    with pytest.raises(SystemExit) as exit:
        main(["conform", "--port", "9", "--features", "accounts", "--server-command", "mechat serve"])
    assert exit.value.code == 2
    assert "--server-command 'mechat serve' has no {port}" in capsys.readouterr().err


# -- The pieces ------------------------------------------------------------------------------


def test_every_account_check_is_described() -> None:
    """Each account check cites a section of accounts, needs at least a nickname, and fits --list."""
    sections = {"§3.1", "§3.3", "§5.2", "§5.5", "§5.13", "§5.14", "§5.15", "§5.16", "§6.1", "§7.1", "§7.7"}
    assert {check.section for check in ACCOUNTS} == sections | {"§9.10", "§9.11"}
    assert all(check.needs >= registry.Stage.WAIT for check in ACCOUNTS)
    assert all(len(check.id) <= 26 for check in ACCOUNTS)
    assert set(accounts.NEEDS_SETTINGS) == {"mailbox-full", RESTART}


def stamp(seconds: float) -> str:
    """Return ``seconds`` since the epoch as the spec writes a stored message's time (§5.14)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@pytest.mark.parametrize(
    "offset, written, words",
    [
        (0, None, None),
        (-60, None, None),  # stored a minute ago: a login that comes later
        (2 * 3600, None, "hours from the kit's clock in UTC: the server may write its local time with a Z"),
        (0, "2026-13-01T10:02:03Z", "is no date"),
        (0, "2026-12-01 10:02:03Z", "is not of the form 2026-12-01T10:02:03Z"),
        (0, "2026-12-01T10:02:03", "is not of the form"),
        (0, "2026-12-01T10:02:03.5Z", "is not of the form"),
    ],
)
def test_a_stored_time_is_rfc_3339_utc(offset: int, written: Optional[str], words: Optional[str]) -> None:
    """§5.14: the time of a stored message is RFC 3339, UTC, to the second, and near the kit's clock."""
    problem = time_problem(written or stamp(time.time() + offset))
    assert (words in problem) if words else problem == "", problem


@pytest.mark.parametrize(
    "line, cut",
    [
        (
            b"#stored_from_t-alice 2026-12-01T10:02:03Z hello",
            StoredLine("t-alice", "2026-12-01T10:02:03Z", b"hello"),
        ),
        (
            b"#stored_from_t-alice 2026-12-01T10:02:03Z #a b",
            StoredLine("t-alice", "2026-12-01T10:02:03Z", b"#a b"),
        ),
        (b"#stored_from_t-alice hello there", StoredLine("t-alice", "", b"hello there")),
        (b"#stored_from_t-alice", None),
        (b"#from_t-alice hello", None),
    ],
)
def test_a_stored_line_is_cut_into_sender_time_and_text(line: bytes, cut: Optional[StoredLine]) -> None:
    """§5.14: #stored_from_SENDER TIME TEXT, the text taken whole, whatever it holds."""
    assert cut_stored(line) == cut
