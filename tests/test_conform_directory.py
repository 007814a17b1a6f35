"""The directory checks grade protocol 2 correctly: mechat passes, each planted bug fails where it should.

As in tests/test_conform.py, a kit that passes everything is worthless, so
most of these tests run the checks of :mod:`mechat.conform.directory`
against one of mechat's servers with a bug planted
(``DIRECTORY_BUGS`` in tests/buggy_servers.py), and pin exactly which
checks fail and what they saw.  The rest pin the promises of the module:
it passes with the default /all rate, with strangers online, and a
protocol 1 server still passes the kit's default.
"""

import io
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

from mechat import conform
from mechat.__main__ import build_parser, main
from mechat.conform import core, directory, registry, runner
from mechat.conform.clients import Session
from mechat.conform.directory import Names, cut_name, list_problems, listed
from mechat.protocol import MAX_LINE_OCTETS, MAX_NICKNAME_CHARS, NICKNAME_RE
from tests.buggy_servers import DIRECTORY_BUGS, running
from tests.conftest import StartServer
from tests.student_server import serving

ROOT = Path(__file__).resolve().parent.parent

#: Seconds the kit waits for any one line: a hang detector, not a clock.
#: Every planted bug here fails its checks by a line that came (the
#: evidence in CAUGHT_BY), never by silence, so no run waits it out.
KIT_TIMEOUT = 15.0

DIRECTORY = registry.select([directory.FEATURE])


def failures(port: int, checks: List[registry.Check]) -> Dict[str, runner.Result]:
    """Run ``checks`` against the server on ``port``; return the failed ones by id."""
    results = runner.run_all(("127.0.0.1", port), KIT_TIMEOUT, checks)
    return {result.check.id: result for result in results if not result.passed}


# -- mechat passes ----------------------------------------------------------------


def test_mechat_passes_every_directory_check(start_server: StartServer) -> None:
    """§3.1-§9.7: mechat, every limit at its default (the /all rate too), passes every directory check."""
    server = start_server()
    results = list(runner.run_all(("127.0.0.1", server.port), KIT_TIMEOUT, DIRECTORY))
    assert [str(result) for result in results if not result.passed] == []
    assert len(results) == len(DIRECTORY)


def test_checks_pass_with_strangers_online(start_server: StartServer) -> None:
    """§5.4, §5.6: named clients outside the checks change no verdict; counts and lists allow for them."""
    server = start_server()
    address = ("127.0.0.1", server.port)
    with Session(address, KIT_TIMEOUT) as strangers:
        strangers.pair("Stranger-1", "stranger-2")  # chatting, so never swept up between checks
        assert failures(server.port, DIRECTORY) == {}


def test_only_the_rate_check_needs_the_default_all_rate(start_server: StartServer) -> None:
    """§9.7: with the /all limit off, the one check of the limit fails, and no other."""
    server = start_server(all_rate=0)
    failed = failures(server.port, DIRECTORY)
    assert list(failed) == ["all-rate-limited"]
    exchange = failed["all-rate-limited"].exchange
    assert exchange is not None and exchange.got.startswith("'#broadcast_")


# -- Planted bugs ------------------------------------------------------------------------

#: For each planted bug: every check that must fail, and what it must have got.
CAUGHT_BY: Dict[str, Dict[str, str]] = {
    "duplicate nickname accepted": {
        "nickname-taken": "'#matched_to_",
        "nickname-taken-any-case": "'#matched_to_",
    },
    "direct message to the partner": {
        "msg-delivered": "'#from_",
        "msg-any-case": "'#from_",
        "msg-text-hash-slash": "'#from_",
    },
    "broadcast echoed to its sender": {
        "all-delivered": "'#all_from_",
        "all-while-waiting": "'#all_from_",
        "all-skips-unnamed": "'#all_from_",
        "all-text-hash-slash": "'#all_from_",
        "all-rate-limited": "'#all_from_",
    },
    "/next back to the old partner": {
        "next-in-chat": "'#matched_to_",
        "next-meets-waiter": "'#matched_to_",
    },
    "list not sorted": {"who-sorted": "'#online_4 ", "who-cut": "'#online_70 "},
    "list counts only the names shown": {"who-cut": "'#online_64 "},
}


@pytest.mark.parametrize("bug", sorted(DIRECTORY_BUGS))
def test_planted_bug_fails_exactly_its_checks(bug: str) -> None:
    """Each planted bug fails the checks of its rule, with the evidence in the line, and no other check."""
    with running(DIRECTORY_BUGS[bug]) as server:
        failed = failures(server.port, DIRECTORY)
    assert sorted(failed) == sorted(CAUGHT_BY[bug]), [str(result) for result in failed.values()]
    for check_id, evidence in CAUGHT_BY[bug].items():
        exchange = failed[check_id].exchange
        assert exchange is not None and exchange.got.startswith(evidence), exchange


#: For a planted bug, a check it fails, and the words of the likely mistake the kit names.
DIAGNOSES = [
    ("broadcast echoed to its sender", "all-delivered", "got its own /all back: send #all_from_ to every"),
    ("/next back to the old partner", "next-in-chat", "was matched again with"),
    ("list not sorted", "who-sorted", "sort the names case-insensitively, each once (§6.1)"),
    ("list counts only the names shown", "who-cut", "the count is 64, but 70 clients match"),
]


@pytest.mark.parametrize("bug, check_id, words", DIAGNOSES)
def test_planted_bug_is_named(bug: str, check_id: str, words: str) -> None:
    """§5.6, §5.7, §6.1: the report names the mistake, not only the line that differs."""
    with running(DIRECTORY_BUGS[bug]) as server:
        result = runner.run_check(registry.by_id()[check_id], ("127.0.0.1", server.port), KIT_TIMEOUT)
    assert result.exchange is not None and words in result.exchange.diagnosis, result.exchange


# -- A protocol 1 server, and the command line ---------------------------------------------------


def test_protocol_1_server_passes_the_default() -> None:
    """The default features stay core: a protocol 1 server (tests/student_server.py) passes them all."""
    assert build_parser().parse_args(["conform", "--port", "7878"]).features == [core.FEATURE]
    out = io.StringIO()
    with serving() as port:
        status = conform.run("127.0.0.1", port, KIT_TIMEOUT, out=out)
    core_checks = len(registry.select([core.FEATURE]))
    assert out.getvalue().splitlines()[-1] == f"{core_checks} checks: {core_checks} passed, 0 failed"
    assert status == 0


@pytest.mark.parametrize(
    "features, wanted",
    [
        ("directory", [directory.FEATURE]),
        ("core,directory", [core.FEATURE, directory.FEATURE]),
        (None, [core.FEATURE]),
    ],
)
def test_list_shows_the_chosen_features(
    features: Optional[str], wanted: List[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``mechat conform --list`` lists the checks of ``--features``, core alone by default."""
    assert main(["conform", "--list"] + (["--features", features] if features else [])) == 0
    listed_ids = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert sorted(listed_ids) == sorted(check.id for check in registry.select(wanted))


def test_command_line_grades_both_features(start_server: StartServer) -> None:
    """``mechat conform --features core,directory`` runs every check of both, and mechat passes them."""
    server = start_server(max_rate=0)  # core's full-duplex check sends faster than the default flood limit
    command = [sys.executable, "-m", "mechat", "conform", "--port", str(server.port)]
    command += ["--features", "core,directory", "--timeout", str(KIT_TIMEOUT)]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    total = len(registry.select([core.FEATURE, directory.FEATURE]))
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert finished.stdout.splitlines()[-1] == f"{total} checks: {total} passed, 0 failed"


def test_grading_page_names_every_directory_check() -> None:
    """docs/grading.rst lists the id of every directory check, so the page cannot fall behind."""
    page = (ROOT / "docs" / "grading.rst").read_text(encoding="utf-8")
    assert [check.id for check in DIRECTORY if f"``{check.id}``" not in page] == []


# -- The pieces ------------------------------------------------------------------------------


def test_every_directory_check_is_described() -> None:
    """Each directory check cites a section of protocol 2 and needs at least a nickname to work."""
    sections = {"§3.1", "§5.4", "§5.5", "§5.6", "§5.7", "§6.1", "§7.1", "§9.7"}
    assert {check.section for check in DIRECTORY} == sections
    assert all(check.needs >= registry.Stage.WAIT for check in DIRECTORY)
    assert all(len(check.id) <= 26 for check in DIRECTORY)  # --list keeps its columns


def test_names_are_valid_fresh_and_unique_to_a_check() -> None:
    """§3: every nickname a check makes is valid, the longest exactly 30 characters, and tags differ."""
    names = Names()
    nicknames = [names.of("alice"), names.of("[ab]"), *(cut_name(names, number) for number in range(70))]
    assert all(NICKNAME_RE.fullmatch(nickname) for nickname in nicknames)
    assert max(len(nickname) for nickname in nicknames) == MAX_NICKNAME_CHARS
    assert len({nickname.lower() for nickname in nicknames}) == len(nicknames)
    tags: Set[str] = {Names().tag for _ in range(20)}
    assert len(tags) > 1


#: 64 names of 30 characters, sorted: with "#online_65" and a SP before each, 1994 octets.
LONG_NAMES = [f"name{number:02d}".ljust(MAX_NICKNAME_CHARS, "x") for number in range(64)]


@pytest.mark.parametrize("octets", [MAX_LINE_OCTETS, MAX_LINE_OCTETS + 1])
def test_listed_cuts_at_the_line_limit(octets: int) -> None:
    """§6.1: a list line of exactly 2000 octets is whole; at 2001 its last name is cut, and still counted."""
    last = "z" * (octets - 1994 - 1)  # sorts last; with its SP, it makes the whole line ``octets`` long
    line = listed([*LONG_NAMES, last])
    fits = octets <= MAX_LINE_OCTETS
    assert line.startswith(b"#online_65 ")
    assert line.split(b" ")[-1] == (last if fits else LONG_NAMES[-1]).encode("ascii")
    assert len(line) == (octets if fits else 1994)


MINE = ["t-alice", "t-Bob", "t-carol"]

#: Others' names that sort before MINE and nearly fill a line: after them, 29 octets are left.
CROWD = b" ".join(f"s{number:02d}".ljust(MAX_NICKNAME_CHARS, "x").encode("ascii") for number in range(63))


@pytest.mark.parametrize(
    "got, only_mine, problem",
    [
        (b"#online_3 t-alice t-Bob t-carol", True, None),
        (b"#online_3 t-Bob t-alice t-carol", True, "'t-Bob' comes before 't-alice'"),
        (b"#online_2 t-alice t-Bob t-carol", True, "the count is 2, but 3 clients match"),
        (b"#online_3 t-alice t-carol", True, "'t-Bob' matches, but it is not listed"),
        (b"#online_4 t-alice t-Bob t-carol t-dave", True, "'t-dave' is listed, but it does not match"),
        (b"#online_4 t-alice t-Bob t-carol x", False, None),
        (b"#online_99 " + CROWD + b" t-alice", False, None),  # cut: the next name may not fit
        (b"#online_99 " + CROWD + b" t-alice t-carol", False, "'t-Bob' is left out, though names after"),
        (b"#online_9 t-alice t-Bob t-carol x", False, "it shows 4 of the 9 names it counts, with room"),
        (b"#online_2 t-alice t-Bob t-carol", False, "the count is 2, fewer than"),
        (b"#online_3 t-alice t-Bob", False, "it shows 2 of the 3 names it counts, with room for more"),
        (b"#online_x t-alice", True, "it is not an #online_N list"),
        (b"#wait", True, "it is not an #online_N list"),
    ],
)
def test_list_problems_name_the_mistake(got: bytes, only_mine: bool, problem: Optional[str]) -> None:
    """§5.4, §6.1: a wrong list is explained by what is wrong with it; a right one has no problem."""
    problems = list_problems(got, MINE, only_mine)
    if problem is None:
        assert problems == []
    else:
        assert any(sentence.startswith(problem) for sentence in problems), problems


def test_a_cut_list_that_stops_early_is_named() -> None:
    """§6.1: a list cut although another name would fit says so, with the room it had left."""
    mine = [f"n{number:02d}".ljust(30, "x") for number in range(70)]
    stopped_early = listed(mine[:10]).replace(b"#online_10", b"#online_70")
    assert list_problems(stopped_early, mine, only_mine=True) == [
        f"'{mine[10]}' matches, but it is not listed, though the line has room for it (§5.4, §6.1)"
    ]


def test_a_protocol_1_server_is_told_which_commands_it_lacks() -> None:
    """A server without protocol 2 is told "it may not have /who yet", never a false lead.

    It answers each new command #invalid_command, one line at a time, so
    the diagnosis must not blame its framing, even for two /all lines sent
    in one write.
    """
    with serving() as port:
        results = list(
            runner.run_all(("127.0.0.1", port), conform.DEFAULT_TIMEOUT, registry.select(["directory"]))
        )
    diagnoses = {
        result.check.id: result.exchange.diagnosis
        for result in results
        if result.exchange and not result.passed
    }
    for check_id in ("who-lists-asker", "msg-delivered", "all-delivered", "all-rate-limited", "next-in-chat"):
        assert "may not have /" in diagnoses[check_id] and "recv()" not in diagnoses[check_id], check_id
