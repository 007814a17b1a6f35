"""``mechat serve`` with another password-hash cost: for ``bench/logins.py``, never for a real server.

    python bench/serve_with_cost.py N R P [--hash-sleep SECONDS] [--hash-slots K] serve --port 0 ...

runs exactly ``python -m mechat serve ...``, the same pinning, tuning and
logging, except that the store hashes with ``scrypt(n=N, r=R, p=P)`` in
place of :data:`mechat.accounts.DEFAULT_SCRYPT`.  The command line has no
flag for the cost, rightly: a weaker hash is never what a server should
run.  A benchmark needs one to tell what a login costs the others apart
from what its hash costs the CPU.

``--hash-sleep`` makes each password check wait that long, with no CPU
used, where the hash runs: outside the store's lock and the Matchmaker's.
It stands for a hash on a machine with cores to spare, or a slow disk.  A
login that held the Matchmaker's lock across it would stop every other
client's relaying for that long; one that does not costs them nothing.

``--hash-slots`` lets at most K password checks run at once; the others
wait their turn, using no CPU.  mechat has no such limit: it is the
change this benchmark tries before recommending it.

``mechat serve`` opens its store through ``accounts.AccountStore``, looked
up in the module when it runs, so replacing that name before the command
starts is all it takes.  The accounts in the file must have been made at
the same cost, or each login would hash twice: a store hashes a password
again at its own cost when the row's differs.
"""

import contextlib
import functools
import os
import sys
import threading
import time
from typing import ContextManager, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this working tree's mechat, installed or not

from mechat import accounts  # noqa: E402
from mechat.__main__ import main  # noqa: E402

USAGE = (
    "usage: python bench/serve_with_cost.py N R P [--hash-sleep SECONDS] [--hash-slots K] serve"
    " [mechat serve's flags]"
)


class SlowStore(accounts.AccountStore):
    """A store whose password checks take turns (``hash_slots``), and each sleeps ``hash_sleep`` first."""

    hash_sleep = 0.0
    hash_slots: ContextManager[object] = contextlib.nullcontext()

    def check_password(self, name: str, password: str) -> bool:
        """Wait for a turn and sleep, holding no lock of the store's, then check as the store does."""
        with self.hash_slots:
            time.sleep(self.hash_sleep)
            return super().check_password(name, password)


def serve_at_cost(argv: List[str]) -> int:
    """Run ``mechat`` with what follows the cost ``argv[:3]`` (n, r, p) and its options."""
    cost, argv = argv[:3], argv[3:]
    while argv[:1] in (["--hash-sleep"], ["--hash-slots"]) and len(argv) >= 2:
        if argv[0] == "--hash-sleep":
            SlowStore.hash_sleep = float(argv[1])
        else:
            SlowStore.hash_slots = threading.BoundedSemaphore(int(argv[1]))
        argv = argv[2:]
    if len(cost) < 3 or not argv:
        print(USAGE, file=sys.stderr)
        return 2
    params = accounts.ScryptParams(int(cost[0]), int(cost[1]), int(cost[2]))
    # mechat serve opens its store as accounts.AccountStore(path, mailbox_size): looked up when it runs.
    accounts.AccountStore = functools.partial(SlowStore, scrypt=params)  # type: ignore[assignment,misc]
    return main(argv)


if __name__ == "__main__":
    sys.exit(serve_at_cost(sys.argv[1:]))
