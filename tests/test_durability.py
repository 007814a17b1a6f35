"""Stored messages through ``kill -9`` of a real server process (§5.5, §5.14, §7.7).

The guarantee of §7.7 has two halves, and each test here kills the server
with SIGKILL at the moment one of them is about:

* **on disk before the promise**: once a sender has read ``#stored_for_``,
  the message survives the server's death, and the next server on the same
  file delivers every such message, oldest first, none missing;
* **at least once**: a message the server has sent as ``#stored_from_`` but
  has seen no sign of delivery for (no line from the client after it, no
  ``/quit``) is still in the store, and the next login sends it again.

The server is ``python -m mechat serve --port 0 --db FILE``, a process of
its own, so that SIGKILL takes it down with no ``finally`` run and no file
closed: only what SQLite committed survives.  Each new process opens the
same file.  SIGKILL is POSIX's; Windows has no signal that cannot be caught.

Each test prints what it counted; ``pytest -s`` shows it.
"""

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest

from tests.peers import Peer, waiting
from tests.test_shutdown import PROCESS_TIMEOUT, Served, run_mechat, stop

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGKILL"), reason="POSIX only: SIGKILL cannot be sent on Windows"
)

#: The account the messages are kept for, its password, and the guest who sends them.
OWNER = "olive"
PASSWORD = "kept-on-disk"
GUEST = "gus"

#: Messages the guest stores for the owner: half the default mailbox (§9.10).
MESSAGES = 50

#: §5.14: ``#stored_from_SENDER TIME TEXT``, TIME as RFC 3339 in UTC, to the second.
STORED_FROM = re.compile(rb"#stored_from_" + GUEST.encode() + rb" (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (.+)")

#: Starts a server process on a database file; the fixture kills what is left.
StartServer = Callable[[Path], Served]


def numbered_texts(count: int) -> List[bytes]:
    """Return ``count`` distinct texts, numbered in the order they are sent."""
    return [b"note %02d of %d" % (number, count) for number in range(1, count + 1)]


@pytest.fixture
def serve() -> Iterator[StartServer]:
    """Start ``mechat serve`` processes on a given file; kill any still running after the test."""
    started: List[subprocess.Popen[str]] = []

    def start(db: Path) -> Served:
        process = run_mechat(
            "serve", "--port", "0", "--db", str(db), "--log-level", "INFO", stderr=subprocess.PIPE
        )
        started.append(process)
        return Served(process)

    yield start
    for process in started:
        stop(process)


def kill_9(served: Served) -> None:
    """Kill the server with SIGKILL, by its PID, and wait until it is gone."""
    os.kill(served.process.pid, signal.SIGKILL)
    assert served.process.wait(timeout=PROCESS_TIMEOUT) == -signal.SIGKILL


def keep_for_owner(port: int, texts: List[bytes]) -> Peer:
    """Register the owner and let it leave, then store ``texts`` for it from a guest; return the guest.

    Every ``#stored_for_`` is read: each is the server's word that its
    message is committed (§5.5).  The owner's close is read before the
    guest sends, so that the owner is away when the server acts on each
    ``/msg`` (§5.5: being connected then decides).
    """
    owner = Peer(port)
    owner.send("/register %s %s" % (OWNER, PASSWORD))
    owner.expect("#registered_" + OWNER, "#wait")
    owner.send("/quit")
    owner.expect_closed()
    guest = waiting(port, GUEST)
    guest.send(*[b"/msg " + OWNER.encode() + b" " + text for text in texts])  # pipelined, in one write
    guest.expect(*["#stored_for_" + OWNER] * len(texts))
    return guest


def log_in(port: int, most: int) -> Tuple[Peer, List[bytes]]:
    """Log the owner in; return the peer and its ``#stored_from_`` lines, read up to its ``#wait`` (§5.14).

    No other client waits on any server of these tests after the owner
    logs in, so ``#wait`` ends the login; more than ``most`` stored lines
    before it fail the test.
    """
    owner = Peer(port)
    owner.send("/login %s %s" % (OWNER, PASSWORD))
    owner.expect("#logged_in_" + OWNER)
    stored = []
    line = owner.read_line()
    while line != b"#wait":
        assert STORED_FROM.fullmatch(line), "expected #stored_from_%s or #wait, got %r" % (GUEST, line)
        stored.append(line)
        assert len(stored) <= most, "more than %d stored lines: %r" % (most, stored)
        line = owner.read_line()
    return owner, stored


def texts_of(stored: List[bytes]) -> List[bytes]:
    """Return the TEXT of each ``#stored_from_`` line."""
    texts = []
    for line in stored:
        found = STORED_FROM.fullmatch(line)
        assert found, line
        texts.append(found.group(2))
    return texts


def test_every_message_the_sender_was_told_is_stored_survives_kill_9(
    serve: StartServer, tmp_path: Path
) -> None:
    """§7.7: after #stored_for_, a kill -9 loses nothing; the next server delivers each, in store order."""
    db = tmp_path / "mechat.db"
    sent = numbered_texts(MESSAGES)
    first = serve(db)
    keep_for_owner(first.port, sent)
    kill_9(first)

    second = serve(db)
    _, stored = log_in(second.port, MESSAGES)
    delivered = texts_of(stored)
    print("\nkill -9 after %d #stored_for_: the next login got %d of them" % (len(sent), len(delivered)))
    missing = [text for text in sent if text not in delivered]
    assert delivered == sent, "acknowledged %d, delivered %d after kill -9; missing %d, the first %r" % (
        len(sent),
        len(delivered),
        len(missing),
        missing[:3],
    )


def test_a_delivery_the_server_saw_no_sign_of_comes_again_after_kill_9(
    serve: StartServer, tmp_path: Path
) -> None:
    """§7.7: killed after #stored_from_ but before any sign, the server sends every one again; never fewer.

    The sign is a line from the client after its ``#stored_from_`` lines
    (with Linux's acknowledged-octets count) or its ``/quit``.  Killed
    before the client says anything more, the next login must bring every
    message again, identical, TIME included.  Killed after a next line,
    the server may have deleted what it knew delivered: at least once
    allows any number to come again, but only the newest ones (it deletes
    those sent before its count was 0) and in their order.
    """
    db = tmp_path / "mechat.db"
    sent = numbered_texts(MESSAGES)
    first = serve(db)
    guest = keep_for_owner(first.port, sent)
    guest.send("/quit")  # nobody waits, so each login below is answered #wait
    guest.expect_closed()
    _, delivered = log_in(first.port, MESSAGES)
    assert texts_of(delivered) == sent
    kill_9(first)  # the client has not said a word since its /login

    second = serve(db)
    owner, again = log_in(second.port, MESSAGES)
    assert again == delivered, "delivered %d, then %d after kill -9 with no sign" % (
        len(delivered),
        len(again),
    )
    owner.send("/users")  # the next line: a sign, on Linux, that every octet before it was taken
    owner.expect("#accounts_1 " + OWNER)
    kill_9(second)

    third = serve(db)
    owner, after_sign = log_in(third.port, MESSAGES)
    owner.send("/quit")
    owner.expect_closed()
    print(
        "\nstored %d; delivered %d; after kill -9 with no sign, %d again; "
        "after kill -9 past the next line, %d" % (len(sent), len(delivered), len(again), len(after_sign))
    )
    assert after_sign == delivered[len(delivered) - len(after_sign) :], (
        "not the newest, in order: %r" % after_sign
    )
