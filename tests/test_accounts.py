"""The account store: schema, durability, passwords and mailboxes (protocol 2, accounts).

Every test but one runs on a cheap scrypt cost (:data:`CHEAP`), since the
point is the store's logic, not the hash's strength; the cost itself is
checked where it is the subject.  The durability test kills a real child
process with SIGKILL while it writes, and finds every message the child
said was committed.
"""

import calendar
import contextlib
import hashlib
import os
import queue
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechat import accounts
from mechat.accounts import AccountStore, NewerSchema, ScryptParams, Stored, StoredMessage

ROOT = Path(__file__).resolve().parent.parent

#: A cost that takes microseconds, for tests of everything but the cost.
CHEAP = ScryptParams(n=2**4, r=8, p=1)

#: Seconds any wait on another thread or process may take.
TIMEOUT = 30.0

#: Messages the child of the durability test must report committed before it is killed.
KILL_AFTER = 100

#: A time and the RFC 3339 form of it that protocol 2 shows.
SENT = calendar.timegm((2026, 12, 1, 10, 2, 3))
SENT_TEXT = "2026-12-01T10:02:03Z"

#: PASSWORD: 8 to 64 visible ASCII characters (protocol 2, accounts).
passwords = st.text(alphabet=[chr(code) for code in range(0x21, 0x7F)], min_size=8, max_size=64)


@pytest.fixture
def store() -> Iterator[AccountStore]:
    """A store in memory, at the cheap cost."""
    with AccountStore(accounts.MEMORY, scrypt=CHEAP) as opened:
        yield opened


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A path for a database file that does not exist yet."""
    return str(tmp_path / "mechat.db")


def column(path: str, query: str) -> List[Any]:
    """Return the first column of ``query`` run on the file at ``path`` by a connection of its own."""
    with contextlib.closing(sqlite3.connect(path)) as db:  # sqlite3's own with only ends a transaction
        return [row[0] for row in db.execute(query).fetchall()]


# -- The schema ----------------------------------------------------------------


def test_an_empty_file_is_migrated_from_version_0(db_path: str) -> None:
    """A file at user_version 0 gets every step, and then the tables are there."""
    sqlite3.connect(db_path).close()
    assert column(db_path, "PRAGMA user_version") == [0]
    with AccountStore(db_path, scrypt=CHEAP) as store:
        assert store.schema_version() == len(accounts.MIGRATIONS)
    tables = column(db_path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    assert {"accounts", "messages"} <= set(tables)


def test_reopening_changes_nothing(db_path: str) -> None:
    """A file already at this version opens again as it is: no step runs twice."""
    with AccountStore(db_path, scrypt=CHEAP) as store:
        assert store.register("alice", "password1")
    schema = column(db_path, "SELECT sql FROM sqlite_master ORDER BY name")
    with AccountStore(db_path, scrypt=CHEAP) as store:
        assert store.schema_version() == len(accounts.MIGRATIONS)
        assert store.check_password("alice", "password1")
    assert column(db_path, "SELECT sql FROM sqlite_master ORDER BY name") == schema


def test_a_new_step_is_applied_to_an_older_file(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A later mechat adds a step: an older file gets it at open, and keeps its data."""
    with AccountStore(db_path, scrypt=CHEAP) as store:
        store.register("alice", "password1")
    step = ("ALTER TABLE accounts ADD COLUMN motto TEXT NOT NULL DEFAULT ''",)
    monkeypatch.setattr(accounts, "MIGRATIONS", [*accounts.MIGRATIONS, step])
    with AccountStore(db_path, scrypt=CHEAP) as store:
        assert store.schema_version() == len(accounts.MIGRATIONS)
        assert store.check_password("alice", "password1")
    assert column(db_path, "SELECT motto FROM accounts") == [""]


def test_a_failing_step_leaves_the_file_as_it_was(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The steps and the version number are one transaction: a step that fails undoes them all."""
    AccountStore(db_path, scrypt=CHEAP).close()
    broken = ("CREATE TABLE half_done (a)", "this is not SQL")
    monkeypatch.setattr(accounts, "MIGRATIONS", [*accounts.MIGRATIONS, broken])
    with pytest.raises(sqlite3.OperationalError):
        AccountStore(db_path, scrypt=CHEAP)
    assert column(db_path, "PRAGMA user_version") == [len(accounts.MIGRATIONS) - 1]
    assert column(db_path, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []


def test_a_file_from_a_newer_mechat_is_refused(db_path: str) -> None:
    """A version this code has no steps for is refused, never guessed at."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(NewerSchema, match="99"):
        AccountStore(db_path, scrypt=CHEAP)


def test_wal_and_full_sync_are_set(db_path: str) -> None:
    """The guarantee rests on WAL with synchronous=FULL, and deletion on foreign keys: read them back."""
    with AccountStore(db_path, scrypt=CHEAP) as store:
        db = store._db  # the settings are the connection's own: only it can say
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert db.execute("PRAGMA foreign_keys").fetchone() == (1,)


@pytest.mark.skipif(os.name == "nt", reason="Windows has no Unix file modes")
def test_database_and_its_wal_files_are_the_owners_only(db_path: str) -> None:
    """The file is made 0600 before SQLite opens it, and SQLite gives -wal and -shm its mode."""
    old_umask = os.umask(0o022)  # the usual umask, which would leave 0644
    try:
        with AccountStore(db_path, scrypt=CHEAP) as store:
            store.register("alice", "password1")  # a write, so the -wal file has content
            for suffix in ["", "-wal", "-shm"]:
                assert stat.S_IMODE(os.stat(db_path + suffix).st_mode) == 0o600, suffix
    finally:
        os.umask(old_umask)


@pytest.mark.skipif(os.name == "nt", reason="Windows has no Unix file modes")
def test_default_path_is_made_private_when_the_store_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§9.12: the default is $XDG_DATA_HOME/mechat/mechat.db; opening the store makes its directory 0700."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    path = accounts.default_path()
    assert path == str(tmp_path / "data" / "mechat" / "mechat.db")
    assert not os.path.exists(os.path.dirname(path))  # asking, for --help say, makes nothing
    AccountStore(path).close()
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    AccountStore(path).close()  # a second open finds the directory and the file there


HOME = os.path.expanduser("~")
LOCAL_APP_DATA = r"C:\Users\alice\AppData\Local"


@pytest.mark.parametrize(
    "environ, windows, expected",
    [
        ({"XDG_DATA_HOME": "/srv/data"}, False, os.path.join("/srv/data", "mechat")),
        ({}, False, os.path.join(HOME, ".local", "share", "mechat")),
        ({"XDG_DATA_HOME": ""}, False, os.path.join(HOME, ".local", "share", "mechat")),
        ({"XDG_DATA_HOME": "relative"}, False, os.path.join(HOME, ".local", "share", "mechat")),
        ({"LOCALAPPDATA": LOCAL_APP_DATA}, True, os.path.join(LOCAL_APP_DATA, "mechat")),
        ({}, True, os.path.join(HOME, "AppData", "Local", "mechat")),
    ],
)
def test_data_directory(environ: Dict[str, str], windows: bool, expected: str) -> None:
    """The XDG base directory spec on Unix (no relative XDG_DATA_HOME); %LOCALAPPDATA% on Windows."""
    assert accounts.data_directory(environ, windows) == expected


def test_memory_stores_are_apart_and_leave_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--db :memory: is a throwaway store: two of them share nothing, and no file is made."""
    monkeypatch.chdir(tmp_path)
    with AccountStore(accounts.MEMORY, scrypt=CHEAP) as first:
        assert first.register("alice", "password1")
        with AccountStore(accounts.MEMORY, scrypt=CHEAP) as second:
            assert second.names() == []
    assert list(tmp_path.iterdir()) == []


# -- Accounts --------------------------------------------------------------------


def test_a_name_is_unique_in_any_case_and_kept_as_spelled(store: AccountStore) -> None:
    """Rule 3: an account name is taken in every case, and answers as its owner spelled it."""
    assert store.register("Alice", "password1")
    assert not store.register("alice", "password2")
    assert not store.register("ALICE", "password3")
    assert store.account_name("aLiCe") == "Alice"
    assert store.account_name("bob") is None
    assert store.check_password("ALICE", "password1")
    assert not store.check_password("alice", "password2")  # the refused registration changed nothing


def test_names_are_sorted_in_any_case(store: AccountStore) -> None:
    """Rule 6: lists are sorted case-insensitively, each name spelled as chosen."""
    for name in ["bob", "Dave", "alice", "Carol"]:
        store.register(name, "password1")
    assert store.names() == ["alice", "bob", "Carol", "Dave"]


def test_right_and_wrong_passwords(store: AccountStore) -> None:
    """Only the account's own password checks; an unknown name never does."""
    store.register("alice", "correct horse")
    assert store.check_password("alice", "correct horse")
    assert not store.check_password("alice", "correct horsE")
    assert not store.check_password("alice", "")
    assert not store.check_password("nobody", "correct horse")


def test_an_unknown_name_costs_one_hash(store: AccountStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed login costs one scrypt at today's cost whether the name exists: no timing tells them apart."""
    store.register("alice", "password1")
    costs: List[Tuple[int, ...]] = []
    real_scrypt = hashlib.scrypt

    def counted(password: bytes, **kwargs: Any) -> bytes:
        costs.append((kwargs["n"], kwargs["r"], kwargs["p"], kwargs["dklen"], len(kwargs["salt"])))
        return real_scrypt(password, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counted)
    assert not store.check_password("alice", "wrong password")
    assert not store.check_password("nobody", "wrong password")
    assert costs == [(*CHEAP, accounts.SALT_OCTETS)] * 2


def test_each_account_has_its_own_salt_and_cost(db_path: str) -> None:
    """One password for two accounts gives two different hashes, each row with its cost."""
    with AccountStore(db_path, scrypt=CHEAP) as store:
        store.register("alice", "same password")
        store.register("bob", "same password")
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        rows = db.execute("SELECT salt, hash, scrypt_n, scrypt_r, scrypt_p FROM accounts").fetchall()
    (salt_a, hash_a, *cost_a), (salt_b, hash_b, *cost_b) = rows
    assert salt_a != salt_b and hash_a != hash_b
    assert len(salt_a) == accounts.SALT_OCTETS and len(hash_a) == CHEAP.dklen
    assert cost_a == cost_b == [CHEAP.n, CHEAP.r, CHEAP.p]


def test_an_old_cost_still_verifies_and_is_raised_at_login(db_path: str) -> None:
    """A row hashed at an older cost checks as before; a right password rehashes it at today's."""
    old, new = ScryptParams(n=2**3, r=4, p=1), CHEAP
    with AccountStore(db_path, scrypt=old) as store:
        store.register("alice", "password1")
    cost = "SELECT scrypt_n, scrypt_r, scrypt_p FROM accounts"
    with AccountStore(db_path, scrypt=new) as store:
        assert not store.check_password("alice", "wrong password")
        assert column(db_path, cost) == [old.n]  # a wrong password changes nothing
        assert store.check_password("alice", "password1")
        assert column(db_path, cost) == [new.n]
        assert store.check_password("alice", "password1")
        assert not store.check_password("alice", "wrong password")


def test_the_default_cost_round_trips() -> None:
    """The real cost, once: 16 MiB of memory, within what scrypt is allowed, and verifies."""
    with AccountStore() as store:
        assert store.scrypt == accounts.DEFAULT_SCRYPT
        assert store.register("alice", "password1")
        assert store.check_password("alice", "password1")


@settings(max_examples=50, deadline=None)
@given(password=passwords, other=passwords)
def test_any_valid_password_round_trips(password: str, other: str) -> None:
    """Any PASSWORD of 8 to 64 visible ASCII characters checks, and any other does not."""
    with AccountStore(scrypt=CHEAP) as store:
        store.register("alice", password)
        assert store.check_password("alice", password)
        assert store.check_password("alice", other) == (other == password)


def test_one_name_registered_at_once_by_many_threads_goes_to_one(store: AccountStore) -> None:
    """The store's lock and the UNIQUE index: of 20 threads registering one name, exactly one wins."""
    start = threading.Barrier(20)
    won: queue.Queue[bool] = queue.Queue()

    def register(number: int) -> None:
        start.wait(TIMEOUT)
        won.put(store.register("Alice" if number % 2 else "alice", "password%d" % number))

    threads = [threading.Thread(target=register, args=(number,)) for number in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    results = [won.get(timeout=TIMEOUT) for _ in threads]
    assert results.count(True) == 1
    assert len(store.names()) == 1


def test_delete_takes_the_account_and_its_messages(store: AccountStore) -> None:
    """/delete removes the account and everything kept for it; its name is free again, empty."""
    store.register("alice", "password1")
    store.register("bob", "password1")
    assert store.store("alice", "bob", b"hello", SENT)[0] is Stored.STORED
    assert store.store("bob", "alice", b"hi", SENT)[0] is Stored.STORED
    assert store.delete("ALICE")
    assert not store.delete("alice")
    assert store.names() == ["bob"]
    assert not store.check_password("alice", "password1")
    assert store.store("alice", "bob", b"again", SENT)[0] is Stored.NO_SUCH_ACCOUNT
    assert store.register("alice", "password2")
    assert store.stored_messages("alice") == []
    assert [message.text for message in store.stored_messages("bob")] == [b"hi"]


# -- Mailboxes -------------------------------------------------------------------


def test_messages_come_back_oldest_first(store: AccountStore) -> None:
    """A login gets its messages in the order they were stored, with sender, RFC 3339 UTC time and text."""
    store.register("alice", "password1")
    texts = [b"first", "second \u00e9t\u00e9".encode(), b"#third starts with #"]
    for offset, text in enumerate(texts):
        assert store.store("ALICE", "bob" if offset else "Carol", text, SENT + offset)[0] is Stored.STORED
    messages = store.stored_messages("alice")
    assert [message.text for message in messages] == texts
    assert [message.sender for message in messages] == ["Carol", "bob", "bob"]
    assert [message.sent_at for message in messages] == [
        SENT_TEXT,
        "2026-12-01T10:02:04Z",
        "2026-12-01T10:02:05Z",
    ]
    assert messages == sorted(messages, key=lambda message: message.id)
    assert store.stored_messages("alice") == messages  # reading leaves them in the store


def test_rfc3339_drops_fractions_and_is_utc() -> None:
    """TIME is RFC 3339 in UTC to the second, whatever the local time zone."""
    assert accounts.rfc3339(0) == "1970-01-01T00:00:00Z"
    assert accounts.rfc3339(SENT + 0.999) == SENT_TEXT


def test_a_full_mailbox_refuses_and_keeps_what_it_has() -> None:
    """Past the mailbox size the sender is told (#mailbox_full_), nothing is dropped, others unaffected."""
    full = AccountStore(scrypt=CHEAP, mailbox_size=3)
    with full:
        full.register("alice", "password1")
        full.register("bob", "password1")
        assert [full.store("alice", "carol", b"%d" % n, SENT)[0] for n in range(3)] == [Stored.STORED] * 3
        assert full.store("alice", "carol", b"3", SENT)[0] is Stored.MAILBOX_FULL
        assert full.store("bob", "carol", b"to bob", SENT)[0] is Stored.STORED
        assert [message.text for message in full.stored_messages("alice")] == [b"0", b"1", b"2"]
        full.forget("alice", full.stored_messages("alice")[0].id)
        assert full.store("alice", "carol", b"4", SENT)[0] is Stored.STORED
        assert [message.text for message in full.stored_messages("alice")] == [b"1", b"2", b"4"]


def test_the_default_mailbox_fits_in_one_send_queue() -> None:
    """DEFAULT_MAILBOX_SIZE of the longest #stored_from_ lines fits in a connection's send queue."""
    from mechat import protocol

    longest = len("#stored_from_") + protocol.MAX_NICKNAME_CHARS + 1 + len(SENT_TEXT) + 1
    longest += protocol.MAX_LINE_OCTETS + 1
    assert protocol.DEFAULT_MAILBOX_SIZE * longest <= protocol.DEFAULT_SEND_QUEUE


def test_a_message_for_no_account_is_not_stored(store: AccountStore) -> None:
    """Only a registered account has a mailbox."""
    assert store.store("nobody", "bob", b"hello", SENT)[0] is Stored.NO_SUCH_ACCOUNT
    assert store.stored_messages("nobody") == []


def test_forget_removes_what_was_delivered_and_nothing_else(store: AccountStore) -> None:
    """forget(up_to_id) deletes the recipient's messages up to that id, and no one else's."""
    store.register("alice", "password1")
    store.register("bob", "password1")
    for text in [b"one", b"two", b"three"]:
        store.store("alice", "carol", text, SENT)
    store.store("bob", "carol", b"for bob", SENT)
    delivered = store.stored_messages("alice")[1].id
    assert store.forget("Alice", delivered) == 2
    assert [message.text for message in store.stored_messages("alice")] == [b"three"]
    assert [message.text for message in store.stored_messages("bob")] == [b"for bob"]
    assert store.forget("alice", delivered) == 0  # a second forget of the same messages is harmless


def test_an_id_is_never_given_twice(store: AccountStore) -> None:
    """After every message is forgotten, a new one still gets a higher id: an old forget can't reach it."""
    store.register("alice", "password1")
    store.store("alice", "bob", b"one", SENT)
    (first,) = store.stored_messages("alice")
    store.forget("alice", first.id)
    store.store("alice", "bob", b"two", SENT)
    (second,) = store.stored_messages("alice")
    assert second.id > first.id
    assert store.forget("alice", first.id) == 0  # a late forget by an older session
    assert store.stored_messages("alice") == [second]


def test_messages_outlive_a_closed_store(db_path: str) -> None:
    """A file store gives back after a re-open exactly what it kept before."""
    with AccountStore(db_path, scrypt=CHEAP) as store:
        store.register("alice", "password1")
        for number in range(5):
            store.store("alice", "bob", b"message %d" % number, SENT + number)
        kept = store.stored_messages("alice")
    with AccountStore(db_path, scrypt=CHEAP) as store:
        assert store.stored_messages("alice") == kept
        assert store.check_password("alice", "password1")
    assert all(isinstance(message, StoredMessage) for message in kept)


# -- Durability: kill -9 while writing -----------------------------------------------

#: The child: stores numbered messages for "bob" for ever, and says so after each commit.
WRITER = """
import sys, time
from mechat.accounts import AccountStore
store = AccountStore(sys.argv[1], mailbox_size=10**9)
for number in range(10**6):
    store.store("bob", "alice", b"message %d" % number, time.time())
    print("committed", number, flush=True)
"""


def read_lines(stream: IO[bytes], lines: queue.Queue[bytes]) -> None:
    """Put every line of ``stream`` on ``lines``, then b"" at its end."""
    for line in stream:
        lines.put(line)
    lines.put(b"")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only: SIGKILL")
def test_every_committed_message_survives_kill_9(db_path: str) -> None:
    """Once store() has returned, a message survives kill -9 of its process (the guarantee's first half)."""
    with AccountStore(db_path, scrypt=CHEAP) as store:
        store.register("bob", "password1")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-c", WRITER, db_path]
    lines: queue.Queue[bytes] = queue.Queue()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as child:
        assert child.stdout is not None
        reader = threading.Thread(target=read_lines, args=(child.stdout, lines), daemon=True)
        reader.start()
        try:
            for number in range(KILL_AFTER):
                assert lines.get(timeout=TIMEOUT) == b"committed %d\n" % number
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(TIMEOUT)
        reader.join(TIMEOUT)
        assert child.returncode == -signal.SIGKILL
    reported = KILL_AFTER + sum(1 for line in iter(lines.get_nowait, b""))
    with AccountStore(db_path, scrypt=CHEAP) as store:
        texts = [message.text for message in store.stored_messages("bob")]
    assert texts == [b"message %d" % number for number in range(len(texts))]
    assert len(texts) in (reported, reported + 1)  # one more: committed, then killed before it said so


def test_no_more_passwords_are_hashed_at_once_than_there_are_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hash runs only with a CPU's turn taken: with one CPU, the turn is taken while it runs."""
    monkeypatch.setattr(accounts, "usable_cpus", lambda: 1)
    store = AccountStore(scrypt=CHEAP)
    turns_free: List[bool] = []
    real_hash = ScryptParams.hash

    def hash_noting_turns(params: ScryptParams, password: str, salt: bytes) -> bytes:
        taken = store._hashing.acquire(blocking=False)
        if taken:
            store._hashing.release()
        turns_free.append(taken)
        return real_hash(params, password, salt)

    monkeypatch.setattr(ScryptParams, "hash", hash_noting_turns)
    with store:
        assert store.register("alice", "password1")
        assert store.check_password("alice", "password1")
        assert not store.check_password("nobody", "password1")
    assert turns_free == [False, False, False]  # every hash ran holding the one turn
