"""Matchmaker tests: real threads, no sockets.

Each test reads a chatter's outbox with ``take_outbox``, which is exactly
what the server writes to the wire, in the same order.
"""

import threading
from typing import Dict, List, Tuple

import pytest

from mechat.chatter import SESSION_OVER, Chatter, Step
from mechat.matchmaker import Matchmaker
from mechat.protocol import Event, NoTransition, Phase
from tests.conftest import Cell


def owed_lines(matchmaker: Matchmaker, chatter: Chatter) -> List[bytes]:
    """Return the lines in a chatter's outbox, without their LFs, and empty it."""
    return matchmaker.take_outbox(chatter).splitlines()


def arrived(matchmaker: Matchmaker, address: str = "") -> Chatter:
    """Admit a fresh chatter."""
    chatter = Chatter(address)
    assert matchmaker.arrive(chatter) == Step(Phase.NICKNAME)
    return chatter


def paired(matchmaker: Matchmaker) -> Tuple[Chatter, Chatter]:
    """Return alice and bob, paired, with their #wait and #matched_to_ already taken."""
    alice, bob = arrived(matchmaker), arrived(matchmaker)
    matchmaker.join(alice, "alice")
    matchmaker.join(bob, "bob")
    matchmaker.take_outbox(alice)
    matchmaker.take_outbox(bob)
    return alice, bob


def test_first_waits_second_is_matched() -> None:
    """§7.1: the first client is owed #wait; the second pairs with it and both learn the names."""
    mm = Matchmaker()
    alice, bob = arrived(mm), arrived(mm)
    assert mm.join(alice, "alice") == Step(Phase.WAITING, (alice,))
    assert owed_lines(mm, alice) == [b"#wait"]
    assert mm.join(bob, "bob") == Step(Phase.CHATTING, (bob, alice))
    assert owed_lines(mm, alice) == [b"#matched_to_bob"]
    assert owed_lines(mm, bob) == [b"#matched_to_alice"]
    assert alice.partner is bob and bob.partner is alice
    assert alice.phase is bob.phase is Phase.CHATTING


def test_newcomer_is_matched_with_the_waiter_so_at_most_one_waits() -> None:
    """§7.2: a newcomer pairs with whoever waits, so the queue never holds two."""
    mm = Matchmaker()
    chatters = [arrived(mm) for _ in range(6)]
    for n in range(0, 6, 2):
        assert mm.join(chatters[n], "w%d" % n).phase is Phase.WAITING
        assert mm.join(chatters[n + 1], "j%d" % n).filled == (chatters[n + 1], chatters[n])


def test_leaver_is_withdrawn_and_never_handed_out() -> None:
    """§7.2: a waiter that leaves is out of the queue at once: no ghost partner."""
    mm = Matchmaker()
    ghost, newcomer = arrived(mm), arrived(mm)
    mm.join(ghost, "ghost")
    assert mm.leave(ghost, Event.HANG_UP) == SESSION_OVER
    assert mm.join(newcomer, "new").phase is Phase.WAITING
    assert owed_lines(mm, newcomer) == [b"#wait"]


class Ghost(Chatter):
    """A chatter whose client has hung up, though its handler has not yet read the close."""

    def hung_up(self) -> bool:
        return True


def test_waiter_that_has_hung_up_is_withdrawn_not_matched() -> None:
    """§7.2: a newcomer is never paired with a waiter whose client has already gone."""
    mm = Matchmaker()
    ghost, newcomer = Ghost(), arrived(mm)
    assert mm.arrive(ghost).phase is Phase.NICKNAME
    mm.join(ghost, "ghost")
    assert mm.join(newcomer, "new") == Step(Phase.WAITING, (newcomer,))
    assert ghost.phase is Phase.CLOSED and ghost.partner is None
    assert mm.leave(ghost, Event.HANG_UP) == SESSION_OVER  # its own thread, later


def test_waiting_sender_is_owed_wait_not_matched_with_itself() -> None:
    """§7.2: a line from a waiting client earns it #wait; it stays alone in the queue."""
    mm = Matchmaker()
    alone = arrived(mm)
    mm.join(alone, "alone")
    assert mm.relay(alone, [b"anyone?\n"]) == Step(Phase.WAITING, (alone,))
    assert owed_lines(mm, alone) == [b"#wait", b"#wait"]
    assert alone.partner is None and alone.phase is Phase.WAITING


def test_relay_goes_to_the_partner_in_order() -> None:
    """§7.3: lines are owed to the partner verbatim and in order."""
    mm = Matchmaker()
    alice, bob = paired(mm)
    assert mm.relay(bob, [b"line 0\n", b"line 1\n"]) == Step(Phase.CHATTING, (alice,))
    assert mm.relay(bob, [b"line 2\n"]) == Step(Phase.CHATTING, (alice,))
    assert owed_lines(mm, alice) == [b"line 0", b"line 1", b"line 2"]


def test_leaving_partner_owes_user_quit_after_its_last_line() -> None:
    """§8: the partner is owed #user_quit after every line relayed before, then nothing."""
    mm = Matchmaker()
    alice, bob = paired(mm)
    mm.relay(bob, [b"bye\n"])
    assert mm.leave(bob, Event.QUIT) == Step(Phase.CLOSED, (alice,), (alice,))
    assert owed_lines(mm, alice) == [b"bye", b"#user_quit"]
    assert alice.phase is Phase.CLOSED and alice.partner is None
    assert mm.relay(alice, [b"too late\n"]) == SESSION_OVER
    assert owed_lines(mm, bob) == []


def test_rename_tells_both_sides() -> None:
    """§5.2: the renamer is owed #nickname_changed_, the partner #partner_renamed_."""
    mm = Matchmaker()
    alice, bob = paired(mm)
    assert mm.rename(bob, "robert") == Step(Phase.CHATTING, (bob, alice))
    assert owed_lines(mm, bob) == [b"#nickname_changed_robert"]
    assert owed_lines(mm, alice) == [b"#partner_renamed_robert"]
    mm.leave(bob, Event.HANG_UP)
    assert mm.rename(alice, "al") == SESSION_OVER  # closed: nothing to rename


def test_rename_while_waiting_is_used_when_matched() -> None:
    """§7.2: a waiter may rename; its partner learns the new name."""
    mm = Matchmaker()
    alice, bob = arrived(mm), arrived(mm)
    mm.join(alice, "alice")
    assert mm.rename(alice, "alicia") == Step(Phase.WAITING, (alice,))
    mm.join(bob, "bob")
    assert owed_lines(mm, bob) == [b"#matched_to_alicia"]


def test_full_matchmaker_refuses_newcomers() -> None:
    """§9.3: past max_clients a newcomer is refused; a departure makes room."""
    mm = Matchmaker(max_clients=2)
    first = arrived(mm)
    arrived(mm)
    late = Chatter()
    assert mm.arrive(late) == Step(Phase.CLOSED, (late,))
    assert owed_lines(mm, late) == [b"#server_full"]
    mm.leave(first, Event.HANG_UP)
    assert mm.arrive(Chatter()).phase is Phase.NICKNAME


def test_refusal_after_the_session_closed_is_not_owed_and_says_so() -> None:
    """§7.4: once a session is closed, a refusal is not owed, and the caller learns to stop reading."""
    mm = Matchmaker()
    alice, bob = paired(mm)
    naming = arrived(mm)
    assert mm.refuse(alice, Event.INVALID_MESSAGE) == Step(Phase.CHATTING, (alice,))
    assert owed_lines(mm, alice) == [b"#invalid_message"]
    mm.leave(bob, Event.HANG_UP)  # alice's partner left: her session is over too
    assert mm.refuse(alice, Event.INVALID_MESSAGE) == SESSION_OVER
    assert owed_lines(mm, alice) == [b"#user_quit"]
    mm.close()  # shutdown ends a session still choosing its nickname
    assert mm.refuse(naming, Event.RATE_LIMITED) == SESSION_OVER
    assert mm.time_out(naming) == SESSION_OVER
    assert owed_lines(mm, naming) == [b"#server_shutdown"]


def test_time_out_ends_a_session_still_choosing_its_nickname() -> None:
    """§9.2: a client without a nickname in time is owed #nickname_timeout and closed."""
    mm = Matchmaker()
    naming = arrived(mm)
    assert mm.refuse(naming, Event.INVALID_NICKNAME) == Step(Phase.NICKNAME, (naming,))
    assert mm.time_out(naming) == Step(Phase.CLOSED, (naming,))
    assert owed_lines(mm, naming) == [b"#invalid_nickname", b"#nickname_timeout"]


def test_an_event_with_no_cell_in_the_state_table_raises() -> None:
    """§7.5: an event the table says cannot happen is a bug, and fails loudly; nothing changes."""
    mm = Matchmaker()
    alice, _ = paired(mm)
    waiter = arrived(mm)
    mm.join(waiter, "waiter")
    with pytest.raises(NoTransition, match="nickname timeout cannot happen in phase CHATTING"):
        mm.time_out(alice)
    with pytest.raises(NoTransition, match="valid message cannot happen in phase NICKNAME"):
        mm.relay(arrived(mm), [b"no nickname yet\n"])
    with pytest.raises(NoTransition):
        mm.refuse(waiter, Event.PARTNER_LEFT)
    assert alice.phase is Phase.CHATTING and waiter.phase is Phase.WAITING
    assert owed_lines(mm, alice) == []


def test_every_phase_change_goes_through_the_state_table(cells_taken: List[Cell]) -> None:
    """§7.5: the Matchmaker changes phases only by looking events up in TRANSITIONS."""
    mm = Matchmaker(max_clients=3)
    alice, bob = paired(mm)
    naming = arrived(mm)
    mm.arrive(Chatter())
    mm.relay(alice, [b"hi\n"])
    mm.leave(bob, Event.DROPPED)
    mm.close()
    N, W, C = Phase.NICKNAME, Phase.WAITING, Phase.CHATTING
    assert cells_taken == [
        (N, Event.NICKNAME),
        (N, Event.NICKNAME),
        (W, Event.PARTNER_FOUND),
        (W, Event.PARTNER_FOUND),
        (N, Event.SERVER_FULL),
        (C, Event.MESSAGE),
        (C, Event.PARTNER_LEFT),
        (C, Event.DROPPED),
        (N, Event.SHUTDOWN),
    ]
    assert naming.phase is Phase.CLOSED


def test_close_owes_everyone_shutdown_and_refuses_newcomers() -> None:
    """§10: closing owes every connection #server_shutdown and admits no one."""
    mm = Matchmaker()
    naming, waiting = arrived(mm), arrived(mm)
    mm.join(waiting, "waiting")
    mm.take_outbox(waiting)
    assert set(mm.close()) == {naming, waiting}
    assert owed_lines(mm, naming) == [b"#server_shutdown"]
    assert owed_lines(mm, waiting) == [b"#server_shutdown"]
    assert mm.arrive(Chatter()).phase is Phase.CLOSED
    assert mm.join(naming, "late") == SESSION_OVER
    assert owed_lines(mm, naming) == []


def test_wait_until_empty_wakes_when_the_last_leaves() -> None:
    """§10: the shutdown wait ends as soon as every connection has left."""
    mm = Matchmaker()
    chatters = [arrived(mm) for _ in range(5)]
    assert not mm.wait_until_empty(timeout=0.01)
    leavers = [threading.Thread(target=mm.leave, args=(chatter, Event.HANG_UP)) for chatter in chatters]
    for thread in leavers:
        thread.start()
    assert mm.wait_until_empty(timeout=5)
    for thread in leavers:
        thread.join()


@pytest.mark.parametrize("clients", [2, 200])
def test_concurrent_joins_form_a_perfect_matching(clients: int) -> None:
    """§7.1: clients joining at once from many threads are paired exactly once, never to themselves."""
    mm = Matchmaker()
    chatters = [arrived(mm, str(n)) for n in range(clients)]
    start = threading.Barrier(clients)

    def join(chatter: Chatter) -> None:
        start.wait(timeout=10)
        mm.join(chatter, "n" + chatter.address)

    threads = [threading.Thread(target=join, args=(chatter,)) for chatter in chatters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    partners: Dict[str, str] = {}
    for chatter in chatters:
        assert chatter.partner is not None and chatter.partner is not chatter
        assert chatter.partner.partner is chatter
        matched = [line for line in owed_lines(mm, chatter) if line.startswith(b"#matched_to_")]
        assert matched == [b"#matched_to_" + chatter.partner.nickname.encode()]
        partners[chatter.nickname] = chatter.partner.nickname
    assert len(partners) == clients


def relay_many(matchmaker: Matchmaker, sender: Chatter, count: int) -> None:
    """Relay ``count`` lines from ``sender``."""
    for _ in range(count):
        matchmaker.relay(sender, [b"hi\n"])


def test_wait_is_never_owed_after_matched() -> None:
    """§7.2: a waiter's #wait replies and its #matched_to_ are owed in the order decided.

    One thread relays lines from a waiter while another pairs it.  Whatever
    the interleaving, no #wait may follow #matched_to_ in what it is owed.
    """
    for _ in range(50):
        mm = Matchmaker()
        waiter, joiner = arrived(mm), arrived(mm)
        mm.join(waiter, "waiter")
        sender = threading.Thread(target=relay_many, args=(mm, waiter, 50))
        sender.start()
        mm.join(joiner, "joiner")
        sender.join(timeout=10)
        lines = owed_lines(mm, waiter)
        matched_at = lines.index(b"#matched_to_joiner")
        assert set(lines[:matched_at]) == {b"#wait"}
        assert b"#wait" not in lines[matched_at:]
        assert owed_lines(mm, joiner)[0] == b"#matched_to_waiter"
