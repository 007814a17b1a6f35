"""The room checks grade protocol 2's rooms correctly: mechat passes, each planted bug fails where it should.

As in tests/test_conform_directory.py, most of these tests run the checks
of :mod:`mechat.conform.rooms` against one of mechat's servers with a bug
planted (``ROOM_BUGS`` in tests/buggy_servers.py), and pin exactly which
checks fail and what they saw.  The rest pin the promises of the module:
it passes with strangers online and on a server that an earlier run left
its rooms on, it leaves few rooms behind, the limit checks find any limit
up to the default, a check the kit cannot finish is skipped rather than
failed, and a protocol 1 server is told what it lacks.
"""

import errno
import os
import socket
from typing import Any, Dict, FrozenSet, List, Optional

import pytest

from mechat.__main__ import main
from mechat.conform import registry, rooms, runner
from mechat.conform.clients import Session
from mechat.conform.diagnose import Evidence, line_of_another_room, room_case, room_echo
from mechat.conform.directory import Names
from mechat.conform.rooms import filler, list_problems, longest_room
from mechat.protocol import DEFAULT_MAX_MEMBERS, DEFAULT_MAX_ROOMS, MAX_ROOM_CHARS, ROOM_RE, Notice
from mechat.server import ChatServer
from tests.buggy_servers import ROOM_BUGS, running
from tests.conftest import StartServer
from tests.student_server import serving

#: Seconds the kit waits for any one line: a hang detector, not a clock.
#: Every planted bug here fails its checks by a line that came (the
#: evidence in CAUGHT_BY), never by silence, so no run waits it out.
KIT_TIMEOUT = 15.0

ROOMS = registry.select([rooms.FEATURE])
LIMITS = registry.select([rooms.LIMITS_FEATURE])


def failures(port: int, checks: List[registry.Check]) -> Dict[str, runner.Result]:
    """Run ``checks`` against the server on ``port``; return the failed ones by id."""
    results = runner.run_all(("127.0.0.1", port), KIT_TIMEOUT, checks)
    return {result.check.id: result for result in results if not result.passed}


def room_count(server: ChatServer) -> int:
    """Return how many rooms a mechat server holds."""
    return len(server.matchmaker.rooms.names)


# -- mechat passes ----------------------------------------------------------------


def test_mechat_passes_every_room_check(start_server: StartServer) -> None:
    """§3.2-§7.6: mechat, every limit at its default, passes every room check, twice on one server.

    Rooms live until the server stops, so the second run meets the first
    run's rooms; its fresh names keep them apart.  Each run leaves at most
    ROOMS_A_RUN rooms, the number the module's docstring promises.
    """
    server = start_server()
    for run in (1, 2):
        results = list(runner.run_all(("127.0.0.1", server.port), KIT_TIMEOUT, ROOMS))
        assert [str(result) for result in results if not result.passed] == []
        assert len(results) == len(ROOMS)
        assert room_count(server) <= run * rooms.ROOMS_A_RUN


def test_checks_pass_with_strangers_online(start_server: StartServer) -> None:
    """§5.9, §5.10: strangers chatting, in a room, and their rooms change no verdict."""
    server = start_server()
    address = ("127.0.0.1", server.port)
    with Session(address, KIT_TIMEOUT) as strangers:
        strangers.pair("Stranger-1", "stranger-2")  # chatting, so never swept up between checks
        member = strangers.join("stranger-3")
        for room in ("a-stranger-room", "Z-stranger-room"):
            member.ask(b"/create " + room.encode("ascii"), b"#room_created_" + room.encode("ascii"))
        member.ask(b"/join a-stranger-room", b"#joined_a-stranger-room")
        assert failures(server.port, ROOMS) == {}


# -- Planted bugs ------------------------------------------------------------------------

#: The checks that end with still_together(): a member that says its marker and then reads
#: another's gets its own line first, so each of them catches a room that echoes.
ENDING_TOGETHER = (
    "create-in-room",
    "join-again",
    "join-from-room",
    "members-argument",
    "leave-argument",
    "rooms-empty-pattern",
    "next-in-room",
    "room-hash-line",
    "room-msg",
    "room-all",
    "room-exit-quit",
    "room-exit-close",
    "room-exit-reset",
    "room-line-to-all",
    "room-rename",
)

#: For each planted bug: every check that must fail, and what it must have got.
CAUGHT_BY: Dict[str, Dict[str, str]] = {
    "room line echoed to its sender": {
        **{check_id: "'#in_" for check_id in ENDING_TOGETHER},
        "room-one-order": "'#in_",
    },
    "room line to a member who left": {"leave-hears-nothing": "'#in_"},
    "room line to a member who moved to another room": {"join-from-room": "'#in_"},
    "/join leaves the partner chatting": {"join-from-pair": "'#sent_to_"},
    "#members_ counts the others only": {
        "members-list": "'#members_2 ",
        "members-after-exit": "'#members_1 ",
        "join-from-room": "'#members_0 ",
    },
    "room names compared case-sensitively": {
        "create-exists-any-case": "'#room_created_",
        "join-any-case": "'#no_such_room_",
        "join-again": "'#no_such_room_",
    },
}


@pytest.mark.parametrize("bug", sorted(ROOM_BUGS))
def test_planted_bug_fails_exactly_its_checks(bug: str) -> None:
    """Each planted bug fails the checks of its rule, with the evidence in the line, and no other check."""
    with running(ROOM_BUGS[bug]) as server:
        failed = failures(server.port, ROOMS)
    assert sorted(failed) == sorted(CAUGHT_BY[bug]), [str(result) for result in failed.values()]
    for check_id, evidence in CAUGHT_BY[bug].items():
        exchange = failed[check_id].exchange
        assert exchange is not None and exchange.got.startswith(evidence), exchange


#: For a planted bug, a check it fails, and the words of the likely mistake the kit names.
DIAGNOSES = [
    ("room line echoed to its sender", "room-line-to-all", "got its own line 'hello room' back from"),
    ("room line to a member who left", "leave-hears-nothing", "after its #left_: take a member off the room"),
    (
        "room line to a member who moved to another room",
        "join-from-room",
        "none after its #left_ or its #joined_",
    ),
    ("/join leaves the partner chatting", "join-from-pair", "the partner is told #user_quit and closed"),
    ("#members_ counts the others only", "members-list", "the count is 2, but the room has 3 members"),
    ("room names compared case-sensitively", "join-any-case", "compare room names case-insensitively (§3.2)"),
    ("room names compared case-sensitively", "create-exists-any-case", "is the room"),
]


@pytest.mark.parametrize("bug, check_id, words", DIAGNOSES)
def test_planted_bug_is_named(bug: str, check_id: str, words: str) -> None:
    """§3.2, §5.10, §5.11, §5.12, §7.6: the report names the mistake, not only the line that differs."""
    with running(ROOM_BUGS[bug]) as server:
        result = runner.run_check(registry.by_id()[check_id], ("127.0.0.1", server.port), KIT_TIMEOUT)
    assert result.exchange is not None and words in result.exchange.diagnosis, result.exchange


# -- The room limits (feature room-limits) -------------------------------------------------------


@pytest.mark.parametrize("max_rooms, max_members", [(1, 1), (3, 2), (DEFAULT_MAX_ROOMS, DEFAULT_MAX_MEMBERS)])
def test_room_limits_are_found_wherever_they_are(
    start_server: StartServer, max_rooms: int, max_members: int
) -> None:
    """§9.8, §9.9: both limit checks pass at any limit up to the default, and leave the server full of rooms.

    room-full runs after too-many-rooms has filled the server, so it must
    find a room of its own among those that too-many-rooms left.
    """
    server = start_server(max_rooms=max_rooms, max_members=max_members)
    assert failures(server.port, LIMITS) == {}
    assert room_count(server) == max_rooms


def test_room_full_alone_makes_its_own_room(start_server: StartServer) -> None:
    """§9.9: on a server with rooms to spare, room-full makes a room of its own and passes."""
    server = start_server(max_members=4)
    assert failures(server.port, registry.select([rooms.LIMITS_FEATURE], ["room-full"])) == {}
    assert room_count(server) == 1


def test_no_room_limit_fails_one_past_the_default(start_server: StartServer) -> None:
    """§9.8: a server that takes more rooms than the default limit fails too-many-rooms, and says so."""
    server = start_server(max_rooms=DEFAULT_MAX_ROOMS + 10)
    failed = failures(server.port, registry.select([rooms.LIMITS_FEATURE], ["too-many-rooms"]))
    exchange = failed["too-many-rooms"].exchange
    assert exchange is not None, failed
    assert "no room limit, or one above the default of 1000 (§9.8)" in exchange.diagnosis, exchange
    assert "a limit of 1000 or less, such as mechat serve --max-rooms 1000" in exchange.diagnosis, exchange
    assert room_count(server) == DEFAULT_MAX_ROOMS + 1


@pytest.mark.parametrize(
    "max_rooms, strangers_rooms, only, statuses",
    [
        (0, [], [], {"too-many-rooms": runner.Status.PASS, "room-full": runner.Status.SKIP}),
        (3, ["a", "b", "c"], ["room-full"], {"room-full": runner.Status.SKIP}),
    ],
)
def test_room_full_without_a_room_to_fill_is_skipped(
    start_server: StartServer,
    max_rooms: int,
    strangers_rooms: List[str],
    only: List[str],
    statuses: Dict[str, runner.Status],
) -> None:
    """§9.8, §9.9: room-full never fails a server that may make no room, or whose rooms are used up.

    A limit of 0 rooms is the server's right (§9.8), and rooms that
    earlier runs or users made count against its limit until it restarts.
    Either way room-full has nothing to fill: it is skipped, and says to
    restart the server.
    """
    server = start_server(max_rooms=max_rooms, max_members=2)
    with Session(("127.0.0.1", server.port), KIT_TIMEOUT) as strangers:
        someone = strangers.join("someone")
        for room in strangers_rooms:
            someone.ask(b"/create " + room.encode("ascii"), b"#room_created_" + room.encode("ascii"))
    checks = registry.select([rooms.LIMITS_FEATURE], only)
    results = {
        result.check.id: result for result in runner.run_all(("127.0.0.1", server.port), KIT_TIMEOUT, checks)
    }
    assert {check_id: result.status for check_id, result in results.items()} == statuses, results
    assert "restart the server" in results["room-full"].skipped_because, results["room-full"]


@pytest.mark.parametrize("code, advice", [(errno.EMFILE, "ulimit -n"), (errno.ENFILE, "fs.file-max")])
def test_a_kit_out_of_file_descriptors_skips_room_full(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, code: int, advice: str
) -> None:
    """§9.9: room-full holds some 500 connections; a kit not allowed them skips it, and says how to get them.

    The kit's limit is played by a create_connection that refuses the
    eleventh connection as the system would, with EMFILE or ENFILE:
    lowering the real limit would starve the server too, for it shares
    this process.  The limit is the kit's, so it is never the server's FAIL.
    """
    server = start_server()
    opened: List[socket.socket] = []
    connect = socket.create_connection

    def ten_at_most(*args: Any, **kwargs: Any) -> socket.socket:
        if len(opened) == 10:
            raise OSError(code, os.strerror(code))
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(socket, "create_connection", ten_at_most)
    result = runner.run_check(registry.by_id()["room-full"], ("127.0.0.1", server.port), KIT_TIMEOUT)
    assert result.status is runner.Status.SKIP, result
    assert "the kit ran out of file descriptors" in result.skipped_because, result
    assert advice in result.skipped_because and "no fault of the server" in result.skipped_because, result


def test_room_limits_are_not_graded_by_default() -> None:
    """The feature rooms never fills a server: its limit checks are a feature of their own."""
    assert {check.id for check in LIMITS} == {"too-many-rooms", "room-full"}
    assert not {check.id for check in LIMITS} & {check.id for check in ROOMS}


# -- A protocol 1 server, and the command line ---------------------------------------------------


def test_a_server_without_rooms_is_told_which_commands_it_lacks() -> None:
    """A server without rooms is told "it may not have /create yet", never a false lead about framing."""
    with serving() as port:
        results = list(runner.run_all(("127.0.0.1", port), KIT_TIMEOUT, ROOMS))
    diagnoses = {
        result.check.id: result.exchange.diagnosis
        for result in results
        if result.exchange and not result.passed
    }
    for check_id, verb in [
        ("create-room", "/create"),
        ("rooms-pattern", "/create"),
        ("rooms-no-match", "/rooms"),
        ("members-waiting", "/members"),
        ("leave-waiting", "/leave"),
    ]:
        assert f"may not have {verb} yet" in diagnoses[check_id] and "recv()" not in diagnoses[check_id], (
            check_id
        )


@pytest.mark.parametrize("features", ["rooms", "rooms,room-limits", "core,directory,rooms"])
def test_list_shows_the_chosen_features(features: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``mechat conform --list --features ...`` lists the checks of each feature named."""
    assert main(["conform", "--list", "--features", features]) == 0
    listed_ids = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert sorted(listed_ids) == sorted(check.id for check in registry.select(features.split(",")))


# -- The pieces ------------------------------------------------------------------------------


def test_every_room_check_is_described() -> None:
    """Each room check cites a section of the rooms, and needs at least a nickname to work."""
    sections = {"§3.2", "§5.5", "§5.6", "§5.7", "§5.8", "§5.9", "§5.10", "§5.11", "§5.12", "§7.1", "§7.6"}
    assert {check.section for check in ROOMS} == sections
    assert {check.section for check in LIMITS} == {"§9.8", "§9.9"}
    assert all(check.needs >= registry.Stage.WAIT for check in ROOMS + LIMITS)
    assert all(len(check.id) <= 26 for check in ROOMS + LIMITS)  # --list keeps its columns


def test_room_names_are_valid_and_the_longest_is_at_the_limit() -> None:
    """§3.2: every room a check makes has a valid name; the longest is exactly 30 characters."""
    names = Names()
    made = [longest_room(names), names.of("Lobby"), filler(names, DEFAULT_MAX_ROOMS)]
    assert all(ROOM_RE.fullmatch(room) for room in made)
    assert len(longest_room(names)) == MAX_ROOM_CHARS
    assert len({room.lower() for room in made}) == len(made)


MINE = ["t-alice", "t-Bob", "t-carol"]


@pytest.mark.parametrize(
    "got, name, only_mine, problem",
    [
        (b"#members_3 t-alice t-Bob t-carol", Notice.MEMBERS, True, None),
        (
            b"#members_2 t-alice t-Bob t-carol",
            Notice.MEMBERS,
            True,
            "the count is 2, but the room has 3 members",
        ),
        (b"#members_3 t-Bob t-alice t-carol", Notice.MEMBERS, True, "'t-Bob' comes before 't-alice'"),
        (b"#members_3 t-alice t-carol", Notice.MEMBERS, True, "'t-Bob' is not listed (§5.11)"),
        (
            b"#members_4 t-alice t-Bob t-carol x",
            Notice.MEMBERS,
            True,
            "'x' is listed, but it is not a member",
        ),
        (b"#rooms_1 t-alice", Notice.ROOMS, True, "the count is 1, but the pattern matches 3 rooms"),
        (b"#rooms_4 t-alice t-Bob t-carol x", Notice.ROOMS, False, None),
        (b"#rooms_9 t-alice t-Bob t-carol x", Notice.ROOMS, False, "it shows 4 of the 9 names it counts"),
        (b"#rooms_3 t-alice t-carol x", Notice.ROOMS, False, "'t-Bob' is not listed (§5.9)"),
        (b"#online_3 t-alice t-Bob t-carol", Notice.ROOMS, True, "it is not a #rooms_N list (§5.9)"),
        (b"#members_x", Notice.MEMBERS, True, "it is not a #members_N list (§5.11)"),
    ],
)
def test_list_problems_name_the_mistake(
    got: bytes, name: Notice, only_mine: bool, problem: Optional[str]
) -> None:
    """§5.9, §5.11, §6.1: a wrong list is explained by what is wrong with it; a right one has no problem."""
    problems = list_problems(got, name, MINE, only_mine)
    if problem is None:
        assert problems == []
    else:
        assert any(sentence.startswith(problem) for sentence in problems), problems


def evidence(
    expected: bytes, got: bytes, own_lines: FrozenSet[bytes] = frozenset(), last_read: Optional[bytes] = None
) -> Evidence:
    """Return what the kit would hand the diagnoses when t-alice read ``got`` for ``expected``."""
    return Evidence("t-alice", expected, got, b"", last_read, b"", b"", own_lines, (), True)


#: The answer to a /create of 't-Room' as written, just before the same name in another case.
REFUSED_AS_WRITTEN = b"#room_exists_t-Room"


@pytest.mark.parametrize(
    "expected, got, last_read, words",
    [
        (b"#joined_t-Room", b"#no_such_room_T-rOOM", None, "'T-rOOM' is the room 't-Room' in another case"),
        (
            b"#room_exists_t-Room",
            b"#room_created_t-room",
            REFUSED_AS_WRITTEN,
            "compare room names case-insensitively (§3.2)",
        ),
        # Not refused as written just before: the server may never look for a room at all.
        (b"#room_exists_t-Room", b"#room_created_t-room", b"#wait", None),
        (b"#room_exists_t-Room", b"#room_exists_t-ROOM", None, "spelled the room 't-ROOM': name a room as"),
        (b"#joined_t-Room", b"#no_such_room_t-Room", None, None),  # the same name: lost, not miscased
        (b"#joined_t-Room", b"#joined_t-Other", None, None),
    ],
)
def test_room_case_is_named_only_when_case_is_the_difference(
    expected: bytes, got: bytes, last_read: Optional[bytes], words: Optional[str]
) -> None:
    """§3.2: a room missed or misspelled only by its case is named so; any other difference is not."""
    sentence = room_case(evidence(expected, got, last_read=last_read))
    assert (words in sentence) if words else sentence == "", sentence


@pytest.mark.parametrize(
    "got, words",
    [
        (b"#in_t-Old_t-bob hello", "t-alice got a line of 't-Old' while a member of 't-New'"),
        (b"#in_t-new_t-bob hello", None),  # its own room, in another case
        (b"#exited_t-Old_t-bob", None),  # not a line
    ],
)
def test_line_of_another_room_is_named_only_for_another_room(got: bytes, words: Optional[str]) -> None:
    """§7.6: a member that gets a line of a room it is not in is told so; a line of its own room is not."""
    sentence = line_of_another_room(evidence(b"#in_t-New_t-carol marker", got))
    assert (words in sentence) if words else sentence == "", sentence


@pytest.mark.parametrize(
    "got, words",
    [
        (b"#in_t-Room_t-alice hello", "t-alice got its own line 'hello' back from t-Room"),
        (b"#in_t-Room_t-bob hello", None),  # another member's line
        (b"#in_t-Room_t-alice bye", None),  # a line t-alice never sent
    ],
)
def test_room_echo_is_named_only_for_the_readers_own_line(got: bytes, words: Optional[str]) -> None:
    """§7.6: a member that gets its own line back is told its server echoes; another line is not an echo."""
    sentence = room_echo(evidence(b"#in_t-Room_t-bob marker", got, frozenset([b"hello"])))
    assert (words in sentence) if words else sentence == "", sentence


def test_a_server_full_of_rooms_is_told_to_restart(start_server: StartServer) -> None:
    """§5.8, §9.8: once no room can be made, the checks that make one say why, and what to do."""
    server = start_server(max_rooms=0)
    failed = failures(server.port, registry.select([rooms.FEATURE], ["create-room", "members-list"]))
    for result in failed.values():
        assert result.exchange is not None and "restart the server" in result.exchange.diagnosis, result
    assert sorted(failed) == ["create-room", "members-list"]
