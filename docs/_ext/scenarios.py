"""The scenarios that the protocol chapter draws, one function each.

Each scenario is a short script that a student could type with two
terminals and ``nc``.  It runs against a fresh real server; the lines it
expects are checked as they arrive (see ``wire.py``), and what it recorded
becomes a sequence diagram.  The spec sections each one shows are in its
docstring.
"""

from typing import Callable, Dict, Tuple

from wire import Party, Transcript, running_server, wait_until_all_left

from mechat.server import ChatServer
from tests.peers import Peer

Script = Callable[[Transcript, ChatServer], None]


def matched_after_a_wait(t: Transcript, server: ChatServer) -> None:
    """§7.1, §7.2: the first client waits, even if it talks; the second is matched at once."""
    alice = Party(t, "alice", server.port)
    alice.send("alice")
    alice.expect("#wait")
    alice.send("anyone there?")
    alice.expect("#wait")
    bob = Party(t, "bob", server.port)
    bob.send("bob")
    bob.expect("#matched_to_alice")
    alice.expect("#matched_to_bob")
    alice.send("hi bob")
    bob.expect("hi bob")


def retry_after_invalid_nickname(t: Transcript, server: ChatServer) -> None:
    """§3, §5.3, §7.1: a refused nickname or command leaves the client free to try again."""
    alice = Party(t, "alice", server.port)
    alice.send("alice smith")
    alice.expect("#invalid_nickname")
    alice.send("/alice")
    alice.expect("#invalid_command")
    alice.send("/nickname alice")
    alice.expect("#invalid_command")
    alice.send("alice")
    alice.expect("#wait")


def chatting_with_nickname(t: Transcript, server: ChatServer) -> None:
    """§5.2, §7.3: lines are relayed both ways; a rename is told to both sides."""
    alice, bob = pair(t, server)
    alice.send("hi bob")
    bob.expect("hi bob")
    bob.send("/nickname robert")
    bob.expect("#nickname_changed_robert")
    alice.expect("#partner_renamed_robert")
    alice.send("hello robert")
    bob.expect("hello robert")
    bob.send("/Nickname rob")
    bob.expect("#invalid_command")


def ending_with_quit(t: Transcript, server: ChatServer) -> None:
    """§5.1, §8: the quitter gets no reply, only the close; the partner gets #user_quit."""
    alice, bob = pair(t, server)
    alice.send("/quit now")
    alice.expect("#invalid_command")
    alice.send("/quit")
    bob.expect("#user_quit")
    bob.expect_closed()
    alice.expect_closed()


def ending_by_disconnect(t: Transcript, server: ChatServer) -> None:
    """§8: a reset (or end of file) ends the session just as /quit does."""
    alice, bob = pair(t, server)
    bob.send("see you")
    alice.expect("see you")
    bob.reset()
    alice.expect("#user_quit")
    alice.expect_closed()


def ghost_waiter(t: Transcript, server: ChatServer) -> None:
    """§7.2, §8: a waiter that leaves is withdrawn at once and never handed out."""
    alice = Party(t, "alice", server.port)
    alice.send("alice")
    alice.expect("#wait")
    alice.close()
    wait_until_all_left(server)
    t.note("end of file: alice leaves the queue")
    bob = Party(t, "bob", server.port)
    bob.send("bob")
    bob.expect("#wait")
    carol = Party(t, "carol", server.port)
    carol.send("carol")
    carol.expect("#matched_to_bob")
    bob.expect("#matched_to_carol")


def pair(t: Transcript, server: ChatServer) -> Tuple[Party, Party]:
    """Connect alice and bob and see them matched, alice after a #wait."""
    alice = Party(t, "alice", server.port)
    alice.send("alice")
    alice.expect("#wait")
    bob = Party(t, "bob", server.port)
    bob.send("bob")
    bob.expect("#matched_to_alice")
    alice.expect("#matched_to_bob")
    return alice, bob


#: Every scenario the docs draw, by the name of its diagram file.
SCENARIOS: Dict[str, Script] = {
    "matched-after-a-wait": matched_after_a_wait,
    "retry-after-invalid-nickname": retry_after_invalid_nickname,
    "chatting-with-nickname": chatting_with_nickname,
    "ending-with-quit": ending_with_quit,
    "ending-by-disconnect": ending_by_disconnect,
    "ghost-waiter": ghost_waiter,
}


def record(script: Script) -> Transcript:
    """Run one scenario against a fresh server and return what went over the wire."""
    transcript = Transcript()
    with running_server() as server:
        try:
            script(transcript, server)
        finally:
            for party in transcript.parties:
                party.sock.close()  # not Party.close(): this is cleanup, not part of the story
                Peer.opened.remove(party)
    return transcript
