"""Integration tests: the real ChatServer on 127.0.0.1 port 0, driven by test Peers.

Every Peer read has a deadline, and a Peer fails on any line it did not
expect, so "nothing else was sent" is checked by reading the next line.
"""

import logging
import threading
from typing import Dict, List

import pytest

from mechat.server import ChatServer
from tests.peers import Peer, expect_refused, meet, pair, until_heard_leaving, waiting

LIMIT = 2000


# -- §7.1 Nickname phase ----------------------------------------------------------


def test_first_client_waits_and_second_is_matched(server: ChatServer) -> None:
    """§7.1: the first client gets #wait; then both get #matched_to_ the other."""
    alice, bob = pair(server.port)
    alice.send("/quit")
    bob.expect("#user_quit")


def test_invalid_nickname_may_be_retried(server: ChatServer) -> None:
    """§3, §7.1: an invalid nickname gets #invalid_nickname and the client tries again."""
    peer = Peer(server.port)
    peer.send("two words", "", "x" * 31, "caf\u00e9", "x" * 30)
    peer.expect("#invalid_nickname", "#invalid_nickname", "#invalid_nickname", "#invalid_nickname", "#wait")


def test_commands_in_the_nickname_phase(server: ChatServer) -> None:
    """§7.1: /nickname before a nickname is an invalid command; /quit closes at once."""
    peer = Peer(server.port)
    peer.send("/nickname bob", "/next", "/quit")
    peer.expect("#invalid_command", "#invalid_command")
    peer.expect_closed()


def test_crlf_lines_are_accepted(server: ChatServer) -> None:
    """§2.2: a CR before the LF is dropped, so telnet and nc -C work."""
    alice = Peer(server.port)
    alice.send_raw(b"alice\r\n")
    alice.expect("#wait")
    bob = Peer(server.port)
    bob.send_raw(b"bob\r\nhello\r\n")
    bob.expect("#matched_to_alice")
    alice.expect("#matched_to_bob", "hello")


def test_over_long_nickname_line_is_one_invalid_nickname(server: ChatServer) -> None:
    """§2.3: a 100 KB first line is refused once and the connection survives."""
    peer = Peer(server.port)
    peer.send("n" * 100_000)
    peer.send("short")
    peer.expect("#invalid_nickname", "#wait")


# -- §7.2 Waiting -------------------------------------------------------------------


def test_line_while_waiting_gets_wait(server: ChatServer) -> None:
    """§7.2: a message sent while waiting goes nowhere and the sender is told #wait."""
    alice = Peer(server.port)
    alice.send("alice", "anyone there?", "#bad")
    alice.expect("#wait", "#wait", "#invalid_message")
    meet(server.port, alice, "alice", "bob")


def test_waiting_client_that_talks_is_never_matched_with_itself(server: ChatServer) -> None:
    """§7.2: however much a waiter sends, it stays alone until someone else joins."""
    alice = Peer(server.port)
    alice.send("alice", *["line %d" % n for n in range(20)])
    alice.expect("#wait", *["#wait"] * 20)
    alice.send("/nickname alicia")
    alice.expect("#nickname_changed_alicia")
    meet(server.port, alice, "alicia", "bob")


@pytest.mark.parametrize("how", ["quit", "close", "reset"])
def test_ghost_waiter_is_never_handed_out(server: ChatServer, how: str) -> None:
    """§7.2, §8: a waiter that quits, closes or resets is withdrawn at once."""
    ghost = waiting(server.port, "ghost")
    if how == "quit":
        ghost.send("/quit")
        ghost.expect_closed()
    elif how == "close":
        ghost.close()
    else:
        ghost.reset()
    until_heard_leaving(server, "ghost")
    pair(server.port, "newcomer", "partner")  # the newcomer waits: the ghost is not handed out


# -- §7.3 Chatting ------------------------------------------------------------------


def test_relay_is_verbatim_and_full_duplex(server: ChatServer) -> None:
    """§7.3: both sides may send at once; every line arrives verbatim and in order."""
    alice, bob = pair(server.port)
    alice_lines = ["a%d  spaced\ttab é 😀" % n for n in range(50)]
    bob_lines = ["b%d" % n for n in range(50)]
    alice.send(*alice_lines)
    bob.send(*bob_lines)
    bob.expect(*alice_lines)
    alice.expect(*bob_lines)


def test_two_messages_in_one_segment_are_two_messages(server: ChatServer) -> None:
    """§2.1: lines are cut at LF, not at recv() boundaries."""
    alice, bob = pair(server.port)
    alice.send_raw(b"one\ntwo\nthr")
    alice.send_raw(b"ee\n")
    bob.expect("one", "two", "three")


@pytest.mark.parametrize(
    "bad",
    [b"", b"#fake_notice", b"\xff\xfe bad utf-8", b"nul\x00", b"bell\x07", b"lone\rcr"],
)
def test_invalid_messages_are_refused_and_not_relayed(server: ChatServer, bad: bytes) -> None:
    """§4: an empty, #-led, non-UTF-8 or control-laden line gets #invalid_message only."""
    alice, bob = pair(server.port)
    expect_refused(alice, bob, bad, "#invalid_message")


@pytest.mark.parametrize(
    "text",
    ["x" * LIMIT, "\u00e9" * (LIMIT // 2), "a" + "\u20ac" * 666 + "b", "😀" * (LIMIT // 4)],
)
def test_message_at_the_limit_is_relayed(server: ChatServer, text: str) -> None:
    """§4: a message of exactly 2000 octets, multi-byte or not, is relayed."""
    assert len(text.encode()) == LIMIT
    alice, bob = pair(server.port)
    alice.send(text)
    bob.expect(text)


@pytest.mark.parametrize("text", ["x" * (LIMIT + 1), "\u00e9" * (LIMIT // 2) + "e", "y" * 1_000_000])
def test_message_over_the_limit_is_refused_whole(server: ChatServer, text: str) -> None:
    """§2.3: a line over 2000 octets gets one #invalid_message and no part of it is forwarded."""
    alice, bob = pair(server.port)
    expect_refused(alice, bob, text, "#invalid_message")


@pytest.mark.parametrize("command", ["/quitnow", "/QUIT", "/quit now", "/nick bob", "/", "/help"])
def test_commands_match_exactly(server: ChatServer, command: str) -> None:
    """§5.3: a command matches whole and case-sensitively; anything else is #invalid_command."""
    alice, bob = pair(server.port)
    expect_refused(alice, bob, command, "#invalid_command")


def test_nickname_change_tells_both(server: ChatServer) -> None:
    """§5.2: /nickname NEW gives the renamer and the partner one notice each."""
    alice, bob = pair(server.port)
    alice.send("/nickname alicia")
    alice.expect("#nickname_changed_alicia")
    bob.expect("#partner_renamed_alicia")
    alice.send("/nickname two words", "/nickname")
    alice.expect("#invalid_nickname", "#invalid_nickname")
    alice.send("hi")
    bob.expect("hi")


# -- §8 Ending ----------------------------------------------------------------------


def test_quit_tells_the_partner_and_closes_both(server: ChatServer) -> None:
    """§5.1, §8: /quit ends the chat: the partner gets #user_quit and both are closed."""
    alice, bob = pair(server.port)
    alice.send("last words", "/quit", "never relayed")
    bob.expect("last words", "#user_quit")
    bob.expect_closed()
    alice.expect_closed()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_partner_hang_up_mid_chat(server: ChatServer, how: str) -> None:
    """§8: a partner's close or reset is a quit: the other gets #user_quit and is closed."""
    alice, bob = pair(server.port)
    alice.send("hello")
    bob.expect("hello")
    alice.close() if how == "close" else alice.reset()
    bob.expect("#user_quit")
    bob.expect_closed()


def test_server_survives_and_serves_new_pairs_after_endings(server: ChatServer) -> None:
    """§8: ended sessions leave nothing behind that affects the next pair."""
    for _ in range(5):
        alice, bob = pair(server.port)
        bob.reset()
        alice.expect("#user_quit")
    carol, dave = pair(server.port, "carol", "dave")
    carol.send("ok")
    dave.expect("ok")


# -- Many clients --------------------------------------------------------------------


def test_200_clients_at_once_form_100_pairs(server: ChatServer) -> None:
    """§7.1: 200 simultaneous clients are each matched once, never to themselves, to each other."""
    partner_of: Dict[str, str] = {}
    peers: List[Peer] = []
    lock = threading.Lock()
    start = threading.Barrier(200)

    def client(nick: str) -> None:
        start.wait(timeout=10)
        peer = Peer(server.port)
        peer.send(nick)
        line = peer.read_line(timeout=20)
        if line == b"#wait":
            line = peer.read_line(timeout=20)
        assert line.startswith(b"#matched_to_")
        with lock:
            partner_of[nick] = line[len(b"#matched_to_") :].decode()
            peers.append(peer)

    threads = [threading.Thread(target=client, args=("c%03d" % n,)) for n in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(partner_of) == 200
    for nick, partner in partner_of.items():
        assert partner != nick
        assert partner_of[partner] == nick
    for peer in peers:
        peer.close()


# -- Logging ------------------------------------------------------------------------


def test_logs_name_people_but_never_what_they_say(
    server: ChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Logs record connections, matches, renames and quits, never message text."""
    caplog.set_level(logging.DEBUG, logger="mechat")
    alice, bob = pair(server.port)
    alice.send("top secret words", "/nickname alicia", "/quit")
    bob.expect("top secret words", "#partner_renamed_alicia", "#user_quit")
    bob.expect_closed()
    text = caplog.text
    assert "top secret" not in text
    for fact in ("connected", "alice", "bob", "matched", "alicia", "/quit"):
        assert fact in text
