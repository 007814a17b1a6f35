"""Accounts and the messages kept for them while they are away, in SQLite.

Why SQLite.  A message sent to an offline account must outlive the server
process, and ``sqlite3`` is in the standard library: one file, no server to
install, and transactions that are durable when asked to be.  The store is
one :class:`AccountStore` over one connection.  The server's handler threads
all call it, so the connection is opened with ``check_same_thread=False``
and every use of it is guarded by the store's own lock.  That lock is never
held with another: the Matchmaker's lock must not be held while the store
is called (rule 7 of protocol 2), and no store method calls out.  Password
hashing, which takes tens of milliseconds, runs outside the store's lock
too, so two logins hash at once on two cores (``hashlib.scrypt`` releases
the GIL).

But no more hash at once than the process has CPUs to run them on (one,
for ``mechat serve``, which pins itself to one): a semaphore, the store's
second lock, lets the others wait without using the CPU.  Measured with
``bench/logins.py``, pinned, pp100 beside logins at full cost: 64 hashing
threads at once took relaying's p99 from 22 ms to 250 ms, since a relaying
thread had to win the CPU from all of them; one at a time, 35 ms, and the
logins went no slower (18.8 -> 20.7 a second alone).

The schema.  Two tables::

    accounts                         messages
    --------                         --------
    id        INTEGER PRIMARY KEY <---- recipient  (deleted with its account)
    name      unique in any case        id         AUTOINCREMENT: never reused
    salt, hash                          sender, sent_at, text
    scrypt_n, scrypt_r, scrypt_p

Its version is SQLite's ``PRAGMA user_version``: the number of the steps of
:data:`MIGRATIONS` that the file has had.  Opening a file applies the steps
it lacks, in order, in one transaction with the new version number, so a
file is always at one version or the next, never between.  A file of a
newer mechat is refused (:class:`NewerSchema`), not guessed at.

What a stored message survives.  The file is in WAL mode with
``synchronous=FULL``: each commit appends to the ``-wal`` file and flushes
it to the disk before it returns (on Linux, strace shows one ``fdatasync``
of the ``-wal`` file a commit), and :meth:`AccountStore.store` returns only
after its commit.  Once it has returned, the message survives

* the server crashing or being killed with ``kill -9``: what the commit
  wrote is in the operating system's hands, and the next open replays it;
* the operating system crashing or the power failing, as far as the disk
  honours ``fsync()``.  That is SQLite's own promise for WAL with FULL; it
  does not hold on a disk that acknowledges writes still in its cache, nor
  on a network file system (where WAL does not work at all).  On macOS,
  ``fsync()`` does not flush the disk's cache, so the store sets
  ``fullfsync``, which makes SQLite use ``F_FULLFSYNC`` there (elsewhere
  it has no effect).

It does not survive the loss of the disk.  ``synchronous=NORMAL`` would
keep the first list and lose the last commits to a power cut, which is not
"on disk" as ``#stored_for_`` promises.

The delivery guarantee: at least once.  :meth:`AccountStore.stored_messages`
reads a mailbox without emptying it; a message leaves the store only when
the server calls :meth:`AccountStore.forget` once it knows the message was
delivered.  A crash between the delivery and the forget() delivers it again
at the next login.  Ids only grow (AUTOINCREMENT), so ``forget(up_to_id)``
never removes a message stored after the ones the server read, even when
two sessions of one account read the mailbox at once.  Exactly once would
need the client's help (ids on the wire, and a client that drops a
duplicate), which the wire contract does not have.

What "knows it was delivered" can mean, for the server to choose (a
recommendation, not built here).  After writing the ``#stored_from_``
lines, the server can wait, with a deadline, until the client's TCP has
acknowledged every byte: on Linux, :func:`mechat.connection.unacknowledged`
(``SIOCOUTQ``) reaching 0.  That is delivery to the client's machine,
not to its user: a client that crashes right after loses them.  Where
the OS cannot say (that function answers 0 there, which must not be taken
for "acknowledged"), the portable sign is the client ending the session
with ``/quit`` after the messages were written; a session that ends any
other way keeps them for the next login.

Passwords are hashed with ``hashlib.scrypt``, with a random salt for each
account and the cost (n, r, p) kept in its row, so that a later mechat can
raise :data:`DEFAULT_SCRYPT` and old rows still verify (and are hashed
again with the new cost at their next login).  The key length is the
length of the stored hash.  Digests are compared with
``hmac.compare_digest``, and nothing here logs a password.  The password's
rule (8 to 64 visible ASCII characters) is the protocol's: it belongs in
:mod:`mechat.protocol` with the grammar, checked before the store is
called, as nicknames are.  The store hashes any string.

Every query is parameterised; the one exception is ``PRAGMA user_version``,
which takes no parameters and is given an integer of this module's own.
"""

import contextlib
import enum
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from typing import Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union

from mechat.protocol import DEFAULT_MAILBOX_SIZE

#: The path that makes a store in memory, gone when it is closed: for tests
#: and demos (``mechat serve --db :memory:``).
MEMORY = ":memory:"

#: Octets of random salt for each account.
SALT_OCTETS = 16


class ScryptParams(NamedTuple):
    """The cost of one scrypt hash: CPU and memory (n, r), parallelism (p), key length."""

    n: int
    r: int
    p: int
    dklen: int = 32

    def hash(self, password: str, salt: bytes) -> bytes:
        """Hash ``password`` with ``salt`` at this cost."""
        # OpenSSL refuses any cost that needs more than maxmem, 32 MiB by
        # default; this is what it needs, so that a raised cost still runs.
        maxmem = 128 * self.r * (self.n + self.p + 2)
        return hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=self.n, r=self.r, p=self.p, maxmem=maxmem, dklen=self.dklen
        )


#: The cost of a new hash: scrypt's "interactive login" setting from its
#: paper, 16 MiB of memory.  Measured on the 2-core machine the tests run
#: on (Python 3.9 and 3.11, OpenSSL's scrypt): 47-54 ms median a hash,
#: 24-27 ms at n=2**13 and 115-138 ms at n=2**15.
DEFAULT_SCRYPT = ScryptParams(n=2**14, r=8, p=1)


class StoredMessage(NamedTuple):
    """One message kept for an account."""

    id: int
    sender: str
    #: When the server stored it: RFC 3339, UTC, to the second.
    sent_at: str
    text: bytes


class Stored(enum.Enum):
    """What :meth:`AccountStore.store` did with a message."""

    STORED = "stored"
    MAILBOX_FULL = "mailbox full"
    NO_SUCH_ACCOUNT = "no such account"


class NewerSchema(Exception):
    """The database file was made by a newer mechat than this one."""


#: The schema, one step per version: step k takes a file from version k to
#: k + 1.  A step is never changed once released; a change is a new step.
MIGRATIONS: List[Tuple[str, ...]] = [
    (
        # A name is unique in any case, and kept as its owner spelled it
        # (protocol 2, rule 3).  SQLite's NOCASE folds ASCII only, as the
        # rule does, and ORDER BY name then sorts as the lists of rule 6.
        """CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            salt BLOB NOT NULL,
            hash BLOB NOT NULL,
            scrypt_n INTEGER NOT NULL,
            scrypt_r INTEGER NOT NULL,
            scrypt_p INTEGER NOT NULL
        )""",
        # AUTOINCREMENT: an id is never given twice, even after the newest
        # message is forgotten, so forget(up_to_id) can't hit a newer one.
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            recipient INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
            sender TEXT NOT NULL,
            sent_at TEXT NOT NULL,
            text BLOB NOT NULL
        )""",
        "CREATE INDEX messages_by_recipient ON messages (recipient, id)",
    ),
]

#: Settings made on each connection as it opens (none is kept in the file
#: but journal_mode).  See the module docstring for why each.
PRAGMAS = [
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA fullfsync = ON",
    "PRAGMA foreign_keys = ON",
]


def data_directory(environ: Mapping[str, str], windows: bool) -> str:
    """Return where mechat keeps its data for this user, by the platform's convention."""
    if windows:
        base = environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    else:  # the XDG base directory spec ignores a relative XDG_DATA_HOME
        base = environ.get("XDG_DATA_HOME", "")
        if not os.path.isabs(base):
            base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "mechat")


def default_path() -> str:
    """Return the default database file (§9.12); the store makes its directory when it opens it."""
    return os.path.join(data_directory(os.environ, windows=os.name == "nt"), "mechat.db")


def usable_cpus() -> int:
    """Return how many CPUs this process may run on: its affinity where the OS has one (Linux)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def rfc3339(seconds: float) -> str:
    """Format a time.time() value as RFC 3339 UTC to the second: 2026-12-01T10:02:03Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def create_private(path: str) -> None:
    """Create ``path`` readable by its owner only (0600), unless it exists already, and its directory.

    SQLite gives the ``-wal`` and ``-shm`` files it makes beside the
    database the database file's own mode, so they are 0600 too.  On
    Windows the mode only decides the read-only flag, and 0600 leaves the
    file writable; who may read it is the directory's ACL's business.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


class AccountStore:
    """Accounts and their mailboxes in one SQLite database, safe to call from any thread."""

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"] = MEMORY,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        scrypt: ScryptParams = DEFAULT_SCRYPT,
    ) -> None:
        self.path = os.fspath(path)
        self.mailbox_size = mailbox_size
        self.scrypt = scrypt
        if self.path != MEMORY:
            create_private(self.path)
        # isolation_level=None: no transaction but the ones _transaction() begins.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()  # guards _db; never held with another lock
        #: How many passwords may be hashed at once: one for each CPU we may run on.
        self._hashing = threading.BoundedSemaphore(usable_cpus())
        #: What an unknown name is checked against, at the cost of a real
        #: one, so that a failed login takes as long whether the name exists.
        self._nobody = (secrets.token_bytes(SALT_OCTETS), secrets.token_bytes(scrypt.dklen))
        try:
            for pragma in PRAGMAS:
                self._db.execute(pragma).fetchall()
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the database; the last close folds the -wal file back into the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> "AccountStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock, and run the block as one transaction: committed (to disk) or none of it."""
        with self._lock:
            # IMMEDIATE takes the write lock at once, so a transaction that
            # reads and then writes cannot find the file changed under it.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                    self._db.execute("ROLLBACK")
                raise

    def _migrate(self) -> None:
        """Bring the schema up to len(MIGRATIONS), every missing step in one transaction."""
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                known = len(MIGRATIONS)
                raise NewerSchema(
                    "%s has schema version %d; this mechat knows up to %d" % (self.path, version, known)
                )
            for step in MIGRATIONS[version:]:
                for statement in step:
                    db.execute(statement)
            db.execute("PRAGMA user_version = %d" % len(MIGRATIONS))

    def schema_version(self) -> int:
        """Return the file's schema version (PRAGMA user_version)."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- Accounts -----------------------------------------------------------

    def register(self, name: str, password: str) -> bool:
        """Make an account called ``name``; False if that name is taken in any case."""
        if self.account_name(name) is not None:
            return False  # spare the hash
        salt = secrets.token_bytes(SALT_OCTETS)
        digest = self._hash(self.scrypt, password, salt)
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO accounts (name, salt, hash, scrypt_n, scrypt_r, scrypt_p)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, salt, digest, self.scrypt.n, self.scrypt.r, self.scrypt.p),
                )
        except sqlite3.IntegrityError:  # taken since the check, by another thread
            return False
        return True

    def account_name(self, name: str) -> Optional[str]:
        """Return the account ``name`` in any case, spelled as registered; None if there is none."""
        with self._lock:
            row = self._db.execute("SELECT name FROM accounts WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def check_password(self, name: str, password: str) -> bool:
        """Tell whether ``password`` is the account's; as slow for an unknown name as a known one."""
        with self._lock:
            row = self._db.execute(
                "SELECT salt, hash, scrypt_n, scrypt_r, scrypt_p FROM accounts WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            salt, digest = self._nobody
            params = self.scrypt
        else:
            salt, digest, n, r, p = row
            params = ScryptParams(n, r, p, len(digest))
        matches = hmac.compare_digest(self._hash(params, password, salt), digest)
        if row is None:
            return False
        if matches and params != self.scrypt:
            self._rehash(name, password, digest)
        return matches

    def _hash(self, params: ScryptParams, password: str, salt: bytes) -> bytes:
        """Hash ``password`` once a CPU is free for it; never with the store's lock held."""
        with self._hashing:
            return params.hash(password, salt)

    def _rehash(self, name: str, password: str, old_digest: bytes) -> None:
        """Hash a verified password again at today's cost, unless the row changed meanwhile."""
        salt = secrets.token_bytes(SALT_OCTETS)
        digest = self._hash(self.scrypt, password, salt)
        with self._transaction() as db:
            db.execute(
                "UPDATE accounts SET salt = ?, hash = ?, scrypt_n = ?, scrypt_r = ?, scrypt_p = ?"
                " WHERE name = ? AND hash = ?",
                (salt, digest, self.scrypt.n, self.scrypt.r, self.scrypt.p, name, old_digest),
            )

    def delete(self, name: str) -> bool:
        """Delete the account ``name`` and every message kept for it; False if there was none."""
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount
        return bool(deleted)

    def names(self) -> List[str]:
        """Return every account's name as registered, sorted in any case (rule 6's order)."""
        with self._lock:
            rows = self._db.execute("SELECT name FROM accounts ORDER BY name").fetchall()
        return [name for (name,) in rows]

    # -- Mailboxes ----------------------------------------------------------

    def store(
        self, recipient: str, sender: str, text: bytes, now: float
    ) -> Tuple[Stored, Optional[StoredMessage]]:
        """Keep ``text`` for ``recipient``; return once it is committed, with the message kept or None."""
        sent_at = rfc3339(now)
        with self._transaction() as db:
            account = db.execute(
                "SELECT id, (SELECT count(*) FROM messages WHERE recipient = accounts.id)"
                " FROM accounts WHERE name = ?",
                (recipient,),
            ).fetchone()
            if account is None:
                return Stored.NO_SUCH_ACCOUNT, None
            recipient_id, kept = account
            if kept >= self.mailbox_size:
                return Stored.MAILBOX_FULL, None
            cursor = db.execute(
                "INSERT INTO messages (recipient, sender, sent_at, text) VALUES (?, ?, ?, ?)",
                (recipient_id, sender, sent_at, text),
            )
        assert cursor.lastrowid is not None
        return Stored.STORED, StoredMessage(cursor.lastrowid, sender, sent_at, text)

    def stored_messages(self, recipient: str) -> List[StoredMessage]:
        """Return the messages kept for ``recipient``, oldest first, leaving them in the store."""
        with self._lock:
            rows = self._db.execute(
                "SELECT messages.id, sender, sent_at, text FROM messages"
                " JOIN accounts ON accounts.id = messages.recipient"
                " WHERE accounts.name = ? ORDER BY messages.id",
                (recipient,),
            ).fetchall()
        return [StoredMessage(*row) for row in rows]

    def forget(self, recipient: str, up_to_id: int) -> int:
        """Delete ``recipient``'s messages up to and including ``up_to_id``: they were delivered."""
        with self._transaction() as db:
            return int(
                db.execute(
                    "DELETE FROM messages WHERE id <= ?"
                    " AND recipient = (SELECT id FROM accounts WHERE name = ?)",
                    (up_to_id, recipient),
                ).rowcount
            )
