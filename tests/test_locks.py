"""Nothing slow runs while the Matchmaker's lock is held (protocol 2, rule 7).

Every handler thread takes the Matchmaker's one lock, many times a second,
so whatever runs under it runs while all of them wait.  The rule is that no
socket call, no database call and no password hash does: the lock guards
memory only.  The tests here make the lock know which thread holds it, wrap
every socket operation the server can make, every method of the accounts'
store and ``hashlib.scrypt``, and run every scenario of the state table
(tests/test_transitions.py) through a live server.  Any such call from a
thread that holds the lock fails the test.
"""

import hashlib
import select
import socket
import threading
from typing import Any, Callable, Iterator, List

import pytest

import mechat.connection
from mechat.accounts import AccountStore
from mechat.chatter import Chatter
from mechat.matchmaker import Matchmaker
from mechat.protocol import Event, Phase
from tests.conftest import Cell, StartServer
from tests.test_transitions import SCENARIOS

#: The socket operations the server makes, wrapped by the tests below.
SOCKET_METHODS = ["send", "sendall", "recv", "recv_into", "shutdown", "close", "setsockopt", "getsockopt"]

#: The methods of the store, each a database call (and two of them a hash).
STORE_METHODS = [
    "register",
    "account_name",
    "check_password",
    "delete",
    "names",
    "store",
    "stored_messages",
    "forget",
]


class OwnedLock:
    """A reentrant lock that can tell whether the calling thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._owner = threading.local()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._owner.depth = self.depth() + 1
        return got

    def release(self) -> None:
        self._owner.depth = self.depth() - 1
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def depth(self) -> int:
        """How many times the calling thread holds the lock."""
        return int(getattr(self._owner, "depth", 0))

    def _is_owned(self) -> bool:  # what threading.Condition asks of its lock
        return self.depth() > 0


class LockWatch:
    """Every Matchmaker's lock made while installed, and the socket calls made under one."""

    def __init__(self) -> None:
        self.locks: List[OwnedLock] = []
        self.calls_under_lock: List[str] = []

    def held_here(self) -> bool:
        """Tell whether the calling thread holds some Matchmaker's lock."""
        return any(lock.depth() for lock in self.locks)

    def wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        """Return ``real``, noting each call made under a Matchmaker's lock."""

        def watched(*args: Any, **kwargs: Any) -> Any:
            if self.held_here():
                self.calls_under_lock.append(name)
            return real(*args, **kwargs)

        return watched


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[LockWatch]:
    """Give every new Matchmaker an OwnedLock, and watch every socket call."""
    watch = LockWatch()
    real_init = Matchmaker.__init__

    def init(matchmaker: Matchmaker, *args: Any, **kwargs: Any) -> None:
        real_init(matchmaker, *args, **kwargs)
        lock = OwnedLock()
        watch.locks.append(lock)
        matchmaker._changed = threading.Condition(lock)  # type: ignore[arg-type]

    monkeypatch.setattr(Matchmaker, "__init__", init)
    for name in SOCKET_METHODS:
        monkeypatch.setattr(socket.socket, name, watch.wrap(name, getattr(socket.socket, name)))
    for name in ("poll", "select"):
        if hasattr(select, name):
            monkeypatch.setattr(select, name, watch.wrap("select." + name, getattr(select, name)))
    for name in STORE_METHODS:
        monkeypatch.setattr(AccountStore, name, watch.wrap("store." + name, getattr(AccountStore, name)))
    monkeypatch.setattr(hashlib, "scrypt", watch.wrap("hashlib.scrypt", hashlib.scrypt))
    if hasattr(mechat.connection, "fcntl") and mechat.connection.fcntl is not None:
        monkeypatch.setattr(
            mechat.connection.fcntl, "ioctl", watch.wrap("ioctl", mechat.connection.fcntl.ioctl)
        )
    yield watch


@pytest.mark.parametrize("cell", list(SCENARIOS), ids=lambda cell: "%s-%s" % (cell[0].name, cell[1].name))
def test_no_socket_call_runs_under_the_matchmakers_lock(
    cell: Cell, start_server: StartServer, watch: LockWatch
) -> None:
    """Rule 7: in every cell of §7.5, no socket, store or hash call runs under the Matchmaker's lock."""
    SCENARIOS[cell](start_server)
    assert watch.locks, "the scenario made no Matchmaker"
    assert watch.calls_under_lock == []


class Ghost(Chatter):
    """A waiter whose client has gone; notes whether it was asked under the lock."""

    def __init__(self, watch: LockWatch) -> None:
        super().__init__()
        self.watch = watch
        self.asked_under_lock: List[bool] = []

    def hung_up(self) -> bool:
        self.asked_under_lock.append(self.watch.held_here())
        return True


def test_the_ghost_waiter_is_asked_about_outside_the_lock(watch: LockWatch) -> None:
    """§7.2, rule 7: whether a waiter has hung up is asked of its socket, so not under the lock."""
    mm = Matchmaker()
    ghost, newcomer = Ghost(watch), Chatter()
    mm.arrive(ghost)
    mm.arrive(newcomer)
    mm.join(ghost, "ghost")
    assert mm.join(newcomer, "new").phase is Phase.WAITING
    assert ghost.asked_under_lock == [False]
    assert mm.leave(ghost, Event.HANG_UP).phase is Phase.CLOSED


def test_the_watch_sees_a_socket_call_under_the_lock(watch: LockWatch) -> None:
    """The check can fail: a socket call made while holding the lock is caught."""
    mm = Matchmaker()
    first, second = socket.socketpair()
    with first, second:
        with mm._changed:
            first.send(b"x")
        second.recv(1)
    assert watch.calls_under_lock == ["send"]


def test_the_watch_sees_a_store_call_and_a_hash_under_the_lock(watch: LockWatch) -> None:
    """The check can fail for the store and for hashing too."""
    mm = Matchmaker()
    with AccountStore() as store, mm._changed:
        store.register("alice", "password1")
    assert watch.calls_under_lock == ["store.register", "store.account_name", "hashlib.scrypt"]
