"""Protocol 2's rooms on a live server: the order guarantee, limits, and a member that stops reading.

The state table's cells for rooms are driven in tests/test_transitions.py;
here are the rules a cell cannot show.
"""

import socket
import threading
from typing import ClassVar, List

import pytest

import mechat.matchmaker
from mechat.chatter import Chatter
from mechat.connection import SendQueueFull
from mechat.drain import SendTimeout
from mechat.matchmaker import MEMBERS_TRIES, Matchmaker
from mechat.protocol import MAX_ROOM_LINE_PREFIX_OCTETS, Notice, Phase, list_line, parse_notice
from mechat.server import REPLIES_PER_WRITE, ChatHandler, connection_of
from tests.conftest import StartServer
from tests.peers import TIMEOUT, Peer, in_room, waiting
from tests.test_hardening import DROP_DEADLINE, SmallSendBuffer


def room_events(peer: Peer, until: bytes) -> List[bytes]:
    """Read a member's lines up to and including ``until``."""
    lines = [peer.read_line()]
    while lines[-1] != until:
        lines.append(peer.read_line())
    return lines


def until_both(peer: Peer, marks: List[bytes]) -> List[bytes]:
    """Read a member's lines until it has read every line of ``marks``, in any order."""
    lines = room_events(peer, marks[0])
    for mark in marks[1:]:
        if mark not in lines:
            lines += room_events(peer, mark)
    return lines


def test_every_member_sees_the_rooms_events_in_one_order(start_server: StartServer) -> None:
    """§7.6: lines, a rename, an exit and an entry reach every member in the one order the server decided.

    Two members send 200 lines each at once, one renaming itself half way,
    while a third moves to another room and a newcomer joins.  Each watcher
    must see each sender's lines in order, the rename just between the
    lines it divides, and the same events as the other watcher in the same
    order; the mover must get exactly the room's lines before its exit,
    and the newcomer exactly the events after its entry (rules 1 to 4).
    """
    server = start_server(max_rate=0)
    ann, ben, watcher_1, watcher_2, mover = in_room(server.port, "lab", "ann", "ben", "w1", "w2", "mover")
    mover.send("/create den")
    mover.expect("#room_created_den")
    newcomer = Peer(server.port)
    count, renamed_after = 200, 99
    start = threading.Barrier(4)

    def send_lines(peer: Peer, name: str) -> None:
        start.wait(TIMEOUT)
        for number in range(count):
            peer.send("%s %d" % (name, number))
            if name == "ann" and number == renamed_after:
                peer.send("/nickname ann2")

    def send_when_started(peer: Peer, *lines: str) -> None:
        start.wait(TIMEOUT)
        peer.send(*lines)

    threads = [
        threading.Thread(target=send_lines, args=(ann, "ann")),
        threading.Thread(target=send_lines, args=(ben, "ben")),
        threading.Thread(target=send_when_started, args=(mover, "/join den")),
        threading.Thread(target=send_when_started, args=(newcomer, "newcomer", "/join lab")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    # The exit and the entry must come before the end marks: the threads only
    # sent them, and the server may not have read them yet.
    moved = room_events(mover, b"#joined_den")
    newcomer.expect("#wait", "#joined_lab")
    ann.send("/nickname ann-done")  # after all of ann's lines: an end mark every member gets
    ben.send("/nickname ben-done")
    marks = [b"#renamed_lab_ann2 ann-done", b"#renamed_lab_ben ben-done"]
    seen = {name: until_both(watcher, marks) for name, watcher in (("w1", watcher_1), ("w2", watcher_2))}
    assert seen["w1"] == seen["w2"]  # rule 2: the same events, in the same order
    lines = seen["w1"]
    for sender in ("ann", "ben"):  # rule 1
        numbers = [
            int(line.rsplit(b" ", 1)[1]) for line in lines if line.startswith(b"#in_lab_" + sender.encode())
        ]
        assert numbers == list(range(count)), "%s's lines out of order or lost" % sender
    rename = lines.index(b"#renamed_lab_ann ann2")  # between ann's line 99 and 100, under its names
    assert [line for line in lines[:rename] if line.startswith(b"#in_lab_ann")][-1] == b"#in_lab_ann ann 99"
    assert next(line for line in lines[rename:] if line.startswith(b"#in_lab_ann")) == b"#in_lab_ann2 ann 100"
    assert not [line for line in lines[rename:] if line.startswith(b"#in_lab_ann ")]
    exit_at, entry_at = lines.index(b"#exited_lab_mover"), lines.index(b"#entered_lab_newcomer")
    assert moved[:-1] == lines[:exit_at]  # rules 3 and 4: all it witnessed, and nothing after
    assert until_both(newcomer, marks) == lines[entry_at + 1 :]  # rule 3: from its own #joined_
    mover.send("/who mover")
    mover.expect("#online_1 mover")  # and not one line of lab more


def test_a_member_that_stops_reading_is_dropped_and_holds_up_nobody(start_server: StartServer) -> None:
    """§7.6, §9.6: room lines pile up only in the non-reader's own queue; then it is dropped.

    The sender and the member who reads get every line, however far the
    non-reader falls behind, and they are told of its exit as of any other.
    """
    server = start_server(SmallSendBuffer, send_queue=65536, max_rate=0, send_timeout=60)
    sender, reader = in_room(server.port, "lab", "sender", "reader")
    sleeper = Peer(server.port)
    sleeper.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sleeper.send("sleeper", "/join lab")  # and never reads again
    reader.expect("#entered_lab_sleeper")
    sender.expect("#entered_lab_sleeper")
    text = "z" * 1000
    for number in range(400):  # 400 kB: far past the cap and both kernels' buffers
        sender.send("%d %s" % (number, text))
        line = reader.read_line(DROP_DEADLINE)
        if line == b"#exited_lab_sleeper":
            break
        assert line == ("#in_lab_sender %d %s" % (number, text)).encode()
    else:
        raise AssertionError("the non-reader was never dropped")
    # The drop came while an earlier line was written: the line just sent comes after the exit.
    reader.expect("#in_lab_sender %d %s" % (number, text))
    sender.expect("#exited_lab_sleeper", timeout=DROP_DEADLINE)
    assert 65 < number < 400  # past the cap, and long before the end
    reader.send("/members")
    reader.expect("#members_2 reader sender")


def test_a_full_room_and_too_many_rooms_change_nothing(start_server: StartServer) -> None:
    """§9.8, §9.9: past a limit the client is told so and stays where it was."""
    server = start_server(max_rooms=1, max_members=2)
    in_room(server.port, "lab", "alice", "bob")
    carol = waiting(server.port, "carol")
    carol.send("/create den", "/join LAB", "/rooms", "hello?")
    carol.expect("#too_many_rooms", "#room_full_lab", "#rooms_1 lab", "#wait")  # still in the queue


def test_rooms_are_listed_sorted_in_any_case_with_a_pattern(start_server: StartServer) -> None:
    """§5.9, §6.1: every room, sorted case-insensitively, spelled as created; a pattern narrows it."""
    alice = waiting(start_server().port, "alice")
    for room in ("beta", "Alpha", "gamma-2"):
        alice.send("/create " + room)
        alice.expect("#room_created_" + room)
    alice.send("/create ALPHA", "/rooms", "/rooms *A", "/rooms g????-?")
    alice.expect(
        "#room_exists_Alpha", "#rooms_3 Alpha beta gamma-2", "#rooms_2 Alpha beta", "#rooms_1 gamma-2"
    )


def test_a_member_that_leaves_for_another_room_gets_no_more_of_the_first(start_server: StartServer) -> None:
    """§7.6, 4: after its #joined_ of another room, a member gets none of the old room's lines."""
    server = start_server()
    alice, bob = in_room(server.port, "lab", "alice", "bob")
    [carol] = in_room(server.port, "den", "carol")
    bob.send("/join den")
    bob.expect("#joined_den")
    alice.expect("#exited_lab_bob")
    alice.send("still here?")
    carol.send("welcome")
    bob.expect("#in_den_carol welcome")  # and not alice's line, which came to lab after bob left


@pytest.mark.parametrize("changes", [1, MEMBERS_TRIES])
def test_members_is_made_again_when_the_room_changes_while_it_is_made(
    changes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§5.11: a list made outside the lock is posted only if the room is as it was when copied.

    bob comes or goes while the list is made, ``changes`` times.  The asker
    must get a list true after the last change, never a stale one; a room
    that changed at every try gets its list made under the lock.
    """
    matchmaker = Matchmaker()
    alice, bob = Chatter(), Chatter()
    matchmaker.join(alice, "alice")
    matchmaker.create_room(alice, "lab")
    matchmaker.join_room(alice, "lab")
    matchmaker.join(bob, "bob")  # waits: alice is in a room, not the queue
    made: List[List[str]] = []

    def change_while_made(name: Notice, names: List[str]) -> bytes:
        if len(made) < changes:  # the room changes between the copy and the post
            matchmaker.leave_room(bob) if bob.room else matchmaker.join_room(bob, "lab")
        made.append(names)
        return list_line(name, names)

    monkeypatch.setattr(mechat.matchmaker, "list_line", change_while_made)
    matchmaker.members(alice)
    lines = [parse_notice(line[:-1].decode()) for line in alice.outbox]
    assert len(made) == changes + 1  # one list a try, and one more
    assert made[-1] == ["alice", "bob"]  # an odd number of changes leaves bob in
    assert [line.name for line in lines][-2:] == [Notice.ENTERED, Notice.MEMBERS]
    assert lines[-1].argument == "2"


def test_members_dropped_one_after_another_are_all_told_of(start_server: StartServer) -> None:
    """§9.4, §7.6: a drop that finds another member past its cap tells the room of both exits.

    The drain thread drops y; writing y's #exited_ to x finds x past its
    cap, so x is dropped too, and the members still there must be told of
    x's exit as well, without sending anything that would make the server
    write to them.
    """
    server = start_server()
    sender, reader, _, _ = in_room(server.port, "lab", "s", "r", "x", "y")
    by_name = {chatter.nickname: connection_of(chatter) for chatter in server.matchmaker._connected}

    def past_its_cap(matchmaker: Matchmaker) -> None:
        raise SendQueueFull("x is past its cap")

    by_name["x"].flush = past_its_cap  # type: ignore[method-assign]
    server.drop_and_tell(by_name["y"], SendTimeout("y has not read for the send timeout"))
    for member in (sender, reader):
        member.expect("#exited_lab_y", "#exited_lab_x")
    sender.send("/members")
    sender.expect("#members_2 r s")


class RecordingBatches(ChatHandler):
    """A handler that notes what each batch it passes on in a room owes every other member."""

    owed_per_member: ClassVar[List[int]] = []

    def pass_on(self) -> None:
        if self.batch and self.phase is Phase.IN_ROOM:
            owed = sum(len(line) - 1 + MAX_ROOM_LINE_PREFIX_OCTETS + 1 for line in self.batch)
            RecordingBatches.owed_per_member.append(owed)
        super().pass_on()


def test_a_burst_of_short_lines_owes_each_member_a_bounded_amount_at_a_time(
    start_server: StartServer,
) -> None:
    """§9.6: in a room, a batch is passed on once it owes each member REPLIES_PER_WRITE octets.

    30,000 one-octet messages in one write would otherwise owe every member
    about 600 kB in one step under the lock, far past its send queue's cap.
    """
    RecordingBatches.owed_per_member = []
    server = start_server(RecordingBatches, max_rate=0)
    sender, reader = in_room(server.port, "lab", "s", "r")
    sender.send_raw(b"a\n" * 30_000)
    for _ in range(30_000):
        assert reader.read_line() == b"#in_lab_s a"
    assert sum(RecordingBatches.owed_per_member) > 2 * REPLIES_PER_WRITE  # so it had to be cut
    assert max(RecordingBatches.owed_per_member) <= REPLIES_PER_WRITE + MAX_ROOM_LINE_PREFIX_OCTETS + 2
