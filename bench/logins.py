"""Logins beside relaying: issue 15's "a login must not stall other clients' relaying".

What runs.  One server, ``mechat serve --max-rate 0`` as run_matrix.py runs
it for pp100, with ``--db`` a fresh copy of a file that already holds
``--accounts`` accounts.  Against it, at once:

* pp100: the shared kit's C load generator, 100 pairs, one 64-octet line in
  flight per pair, timing each round trip (p50, p99, round trips a second);
* logins: ``--rate`` a second, each on a connection of its own: ``/login``,
  then the lines up to ``#wait`` or ``#matched_to_``, timed from the send
  of the ``/login``; then ``/quit``, and the close.  ``--workers`` threads
  make them, so that at most that many are in flight: when the server
  cannot keep up, a login starts late instead of piling up without bound,
  and the rate achieved says so.  They begin once every pp100 pair is
  matched (a login waiting for a partner would otherwise take one of
  pp100's), and end when pp100 does, or at ``--seconds``.  Each thread
  connects from a loopback address of its own (``--addresses``), as users
  do: from one address, the server's throttle of failed logins (§9.11)
  lets 5 logins hash at once, and the sixth waits.

The variants:

  pp100                   pp100 alone: the baseline
  pp100+guests            beside guests that come and go as the logins do: the control
  pp100+logins/full       beside logins at scrypt's own cost (n=2**14, r=8, p=1)
  pp100+logins/cheap      beside logins at a cost of microseconds (--cheap-n)
  pp100+logins/sleep      beside cheap logins whose check also waits --sleep-ms, using no CPU
  pp100+logins/one-hash   beside full-cost logins that hash one at a time (a change to try)
  guests                  the guests alone
  logins/full             the logins alone, for their own latency
  logins/cheap
  logins/sleep
  logins/one-hash

Why three costs.  A hash at the full cost takes some 50 ms of a core, so
100 logins a second need some 5 cores; this machine has 2, and a pinned
server 1.  What pp100 loses beside them is CPU taken by hashing, which no
lock can give back.  At the cheap cost (``bench/serve_with_cost.py``) a
login costs what is left: its connection and thread, three reads of the
database, its log lines and its turns at the Matchmaker's lock.  The sleep
adds to that a wait as long as a hash, where the hash runs, with no CPU:
were the Matchmaker's lock held across the hash, each login would stop
every pair's relaying for that long, 5 s of every second at 100 logins a
second.  It is not held (mechat/logins.py), so what pp100 loses to sleep
should be what it loses to cheap, and that close to what it loses to
guests: a guest's connection, thread and session are a login's, without
the account.

one-hash.  At full cost on one CPU, every login in flight is a thread
hashing, all runnable at once, and the relaying threads wait behind them
for the CPU, each holding up the others while it holds the GIL.
``serve_with_cost.py --hash-slots 1`` lets one password check run at a
time, the others waiting without using the CPU: what a limit in the
server would do.

Placements.  ``pinned``: the server on the last CPU, as the kit's ``--pin
split`` and ``mechat serve`` itself put it (tuning.pin_to_one_cpu), the load
generator and this script on the others.  The hashing threads then share
the one CPU with the relaying threads: a hash releases the GIL, but not the
CPU.  ``all-cpus``: ``mechat serve --all-cpus``, nothing pinned, so that
hashes may run on the other CPU too, which the loads also need.  The load
generator does not busy-poll here (run_matrix.py's pinned runs do): it
shares its CPU with the login threads, and spinning would starve them, so
pp100's figures are lower than in results.md's pinned tables; compare them
with pp100 alone from this script, in the same sitting.

Each run appends one JSON line to ``bench/logins.jsonl``; ``--summarize``
(run at the end of every sitting too) rewrites this benchmark's own section
at the end of ``bench/results.md`` from it, a part per sitting, and leaves
the rest of the file alone.  Every loop is bounded in count and in
time; every process started is stopped by its PID.

    python bench/logins.py --reps 3 --quiet-wait 60
    python bench/logins.py --only pp100,pp100+logins/cheap --placements pinned --reps 1 --jsonl ''
    python bench/logins.py --summarize
"""

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Set, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # measure the mechat of this working tree, installed or not

from fanout import (  # noqa: E402
    BUSY_OTHERS,
    git,
    machine_cpu_seconds,
    rounded,
    source_state,
    wait_for_quiet,
)
from run_matrix import kit_runner  # noqa: E402
from server_process import ServerProcess  # noqa: E402

from mechat import protocol  # noqa: E402
from mechat.accounts import DEFAULT_SCRYPT, AccountStore, ScryptParams  # noqa: E402
from mechat.protocol import LF, LineCutter, Notice  # noqa: E402

Row = Dict[str, Any]

#: pp100 as run_matrix.py's CONFIGS has it: pairs, octets a line.
PAIRS, SIZE = 100, 64

#: The server's flags beside --db: flood control off, as run_matrix.py has it.
SERVER_FLAGS = ["--max-rate", "0"]

#: The variants, in the order of a rep: (pp100 or not, the logins' cost or None).
VARIANTS: Dict[str, Tuple[bool, Optional[str]]] = {
    "pp100": (True, None),
    "pp100+guests": (True, "guest"),
    "pp100+logins/full": (True, "full"),
    "pp100+logins/cheap": (True, "cheap"),
    "pp100+logins/sleep": (True, "sleep"),
    "pp100+logins/one-hash": (True, "one-hash"),
    "guests": (False, "guest"),
    "logins/full": (False, "full"),
    "logins/cheap": (False, "cheap"),
    "logins/sleep": (False, "sleep"),
    "logins/one-hash": (False, "one-hash"),
}
PLACEMENTS = ["pinned", "all-cpus"]

#: Seconds a login may take, from its connect to its close, before it counts as timed out.
LOGIN_TIMEOUT = 30.0

#: Seconds the 100 pairs of pp100 may take to be matched.
MATCH_TIMEOUT = 30.0

#: Seconds between two looks at the server's log for the pairs matched.
LOG_POLL = 0.02

#: Seconds the login threads get to finish their last login once told to stop.
STOP_TIMEOUT = LOGIN_TIMEOUT + 5.0

RESULTS = os.path.join(HERE, "logins.jsonl")
MARKDOWN = os.path.join(HERE, "results.md")

#: This benchmark's section of results.md: everything from BEGIN to END is
#: rewritten by --summarize, and nothing else.
BEGIN = "<!-- bench/logins.py: from here to its end marker, written by --summarize -->"
END = "<!-- bench/logins.py: end -->"

LOGGED_IN = Notice.LOGGED_IN.value.encode()
STORED_FROM = Notice.STORED_FROM.value.encode()
WAIT = Notice.WAIT.value.encode()
MATCHED_TO = Notice.MATCHED_TO.value.encode()

#: What the server logs when a nickname pairs (ChatHandler.choose_nickname).
MATCHED_LOG = b") matched with "


def account(number: int) -> Tuple[str, str]:
    """Return the name and password of the benchmark's account ``number``."""
    return "bench%03d" % number, "bench-password-%03d" % number


def guest(number: int) -> Tuple[str, None]:
    """Return the nickname of the benchmark's guest ``number``, which has no password."""
    return "guest%03d" % number, None


def make_accounts(path: str, cost: ScryptParams, count: int) -> None:
    """Make a database file at ``path`` holding ``count`` accounts hashed at ``cost``."""
    with AccountStore(path, scrypt=cost) as store, ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        made = list(pool.map(lambda number: store.register(*account(number)), range(count)))
    assert all(made), "an account of the benchmark existed already in %s" % path


# -- The logins ------------------------------------------------------------------


class LoginFailed(Exception):
    """A login was answered with something else than a login's lines."""


def read_line(sock: socket.socket, cutter: LineCutter, lines: List[bytes], deadline: float) -> bytes:
    """Return the next line from ``sock``; raise LoginFailed at the close or after the monotonic ``deadline``.

    The socket's own timeout bounds each recv(), the deadline all of them.
    """
    while not lines:
        if time.monotonic() > deadline:
            raise LoginFailed("no line in %g s" % LOGIN_TIMEOUT)
        data = sock.recv(4096)
        if not data:
            raise LoginFailed("closed")
        lines.extend(cutter.cut(data))
    return lines.pop(0)


def log_in_once(port: int, name: str, password: Optional[str], source: str) -> float:
    """Log in as ``name`` from ``source``; return the seconds from /login to #wait or #matched_to_.

    With no password, a guest: ``name`` is sent as a nickname, timed to
    its #wait or #matched_to_.  Then leave, so that the session has ended
    before the name is used again.
    """
    with socket.create_connection(("127.0.0.1", port), LOGIN_TIMEOUT, (source, 0)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cutter, lines = LineCutter(), []  # type: Tuple[LineCutter, List[bytes]]
        deadline = time.monotonic() + LOGIN_TIMEOUT
        sent = time.perf_counter()
        if password is None:
            sock.sendall(name.encode() + LF)
        else:
            sock.sendall(b"%s %s %s\n" % (protocol.login_verb, name.encode(), password.encode()))
            line = read_line(sock, cutter, lines, deadline)
            if line != LOGGED_IN + name.encode():
                raise LoginFailed(line[:60].decode("ascii", "replace"))
        line = read_line(sock, cutter, lines, deadline)
        while line.startswith(STORED_FROM):  # none is kept for these accounts; a login may still bring some
            line = read_line(sock, cutter, lines, deadline)
        if line != WAIT and not line.startswith(MATCHED_TO):
            raise LoginFailed(line[:60].decode("ascii", "replace"))
        took = time.perf_counter() - sent
        leave(sock)
    return took


def leave(sock: socket.socket) -> None:
    """Send /quit and read to the close; a reset here is no failed login.

    Two logins may be paired (§5.14: then as for a nickname), and the one
    that quits first closes the other, whose own /quit then meets a reset.
    """
    deadline = time.monotonic() + LOGIN_TIMEOUT
    try:
        sock.sendall(protocol.quit_command + LF)
        while sock.recv(4096) and time.monotonic() < deadline:
            pass  # a partner's #user_quit
    except OSError:
        pass


def source_address(number: int, addresses: int) -> str:
    """Return the loopback address a login thread connects from: 127.0.0.1 if there is one, else its own.

    The server counts failed logins by address (§9.11, mechat/throttle.py),
    and a login holds one of its address's 5 tries while it hashes: from
    one address, a sixth login at once waits for a try to come back.  Many
    users do not share one address, so each thread has one of its own:
    Linux routes all of 127.0.0.0/8 to the loopback.
    """
    return "127.0.0.1" if addresses == 1 else "127.0.1.%d" % (number + 1)


class LoginLoad:
    """Log in ``rate`` times a second from ``workers`` threads, at most ``most`` times, until stopped.

    Login k is due at ``k / rate`` seconds after the start.  A thread takes
    the next login when it is free, waits for its time, and takes a free
    account for it; when every thread is busy the next login starts late,
    so the load never has more than ``workers`` in flight.  With ``guests``
    each "login" is a guest's nickname instead: the same connection and
    session without the account.
    """

    def __init__(
        self, port: int, rate: float, workers: int, accounts: int, most: int, addresses: int, guests: bool
    ) -> None:
        self.port, self.rate, self.most = port, rate, most
        self.free: queue.Queue[Tuple[str, Optional[str]]] = queue.Queue()
        for number in range(accounts):
            self.free.put(guest(number) if guests else account(number))
        self.stopping = threading.Event()
        self._lock = threading.Lock()  # guards everything below
        self._next = 0
        #: (seconds from /login to #wait, seconds it started late) of each login that succeeded.
        self.done: List[Tuple[float, float]] = []
        self.failed: Dict[str, int] = {}
        self.addresses = addresses
        self.threads = [
            threading.Thread(
                target=self._work, args=(source_address(number % addresses, addresses),), daemon=True
            )
            for number in range(workers)
        ]
        self.started = 0.0
        self.ended = 0.0  # when the last thread finished: the load's own end

    def start(self) -> None:
        """Start the threads; the first login is due now."""
        self.started = time.perf_counter()
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Start no more logins, and wait for those in flight."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(STOP_TIMEOUT)

    def _work(self, source: str) -> None:
        """Make logins from the address ``source`` until the load stops or reaches its count."""
        while True:
            with self._lock:
                number, self._next = self._next, self._next + 1
            due = self.started + number / self.rate
            if number >= self.most or self.stopping.wait(max(0.0, due - time.perf_counter())):
                with self._lock:
                    self.ended = max(self.ended, time.perf_counter())
                return
            name, password = self.free.get(timeout=LOGIN_TIMEOUT)  # more accounts than threads: never waits
            late = time.perf_counter() - due
            try:
                took = log_in_once(self.port, name, password, source)
            except (OSError, LoginFailed) as error:
                with self._lock:
                    why = type(error).__name__ + (": %s" % error if isinstance(error, LoginFailed) else "")
                    self.failed[why] = self.failed.get(why, 0) + 1
            else:
                with self._lock:
                    self.done.append((took, late))
            finally:
                self.free.put((name, password))

    def report(self) -> Dict[str, Any]:
        """Return what the load did, as a row's ``logins``."""
        took = sorted(seconds for seconds, _ in self.done)
        late = sorted(seconds for _, seconds in self.done)
        seconds = self.ended - self.started
        return {
            "offered_per_s": self.rate, "workers": len(self.threads), "accounts": self.free.qsize(),
            "addresses": self.addresses,
            "ok": len(self.done), "failed": dict(self.failed), "seconds": round(seconds, 3),
            "achieved_per_s": round(len(self.done) / seconds, 1) if seconds > 0 else None,
            "lat_ms": percentiles_ms(took), "late_ms": percentiles_ms(late),
        }  # fmt: skip


def percentiles_ms(sorted_seconds: List[float]) -> Optional[Dict[str, float]]:
    """Return p50, p90, p99 and max of sorted durations, in ms (nearest rank); None for none."""
    if not sorted_seconds:
        return None
    count = len(sorted_seconds)

    def rank(share: float) -> float:
        return round(sorted_seconds[min(count - 1, int(share * count))] * 1e3, 2)

    return {
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": round(sorted_seconds[-1] * 1e3, 2),
    }


# -- One run -----------------------------------------------------------------------


#: The CPUs this script may use when it starts; each run narrows its own to the loads' or widens it back.
ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def cpu_split(placement: str) -> Tuple[Optional[int], Optional[Set[int]]]:
    """Return the server's CPU and the loads' CPUs for ``placement`` (None: not pinned)."""
    if placement != "pinned" or len(ALLOWED) < 2:
        return None, None
    return ALLOWED[-1], set(ALLOWED[:-1])


def place_this_script(placement: str) -> None:
    """Run this script, and so the login threads it starts next, where ``placement`` puts the loads."""
    _, load_cpus = cpu_split(placement)
    if ALLOWED:
        os.sched_setaffinity(0, load_cpus or set(ALLOWED))  # the server inherits it when not pinned


def server_for(
    variant: str, placement: str, db: str, log_path: str, options: argparse.Namespace
) -> ServerProcess:
    """Return the server of a run, not started: ``mechat serve``, or serve_with_cost.py but at full cost."""
    server_cpu, _ = cpu_split(placement)
    flags = SERVER_FLAGS + ["--db", db] + (["--all-cpus"] if placement == "all-cpus" else [])
    server = ServerProcess(flags, log_path, server_cpu)
    cost = VARIANTS[variant][1]
    if cost in ("cheap", "sleep", "one-hash"):
        params = DEFAULT_SCRYPT if cost == "one-hash" else options.cheap
        entry = [sys.executable, os.path.join(HERE, "serve_with_cost.py"), *map(str, params[:3])]
        if cost == "sleep":
            entry += ["--hash-sleep", str(options.sleep_ms / 1e3)]
        if cost == "one-hash":
            entry += ["--hash-slots", "1"]
        server.argv = entry + server.argv[server.argv.index("serve") :]
    return server


def wait_until_matched(server: ServerProcess, loadgen: "subprocess.Popen[str]") -> None:
    """Wait until the server has logged every pp100 pair as matched; raise RuntimeError if it does not."""
    deadline = time.monotonic() + MATCH_TIMEOUT
    while server.count_in_log(MATCHED_LOG) < PAIRS:
        if loadgen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("pp100 was not matched within %g s: %s" % (MATCH_TIMEOUT, server.tail()))
        time.sleep(LOG_POLL)


def run_loads(kit: Any, server: ServerProcess, variant: str, options: argparse.Namespace) -> Row:
    """Run pp100, the logins or both against a started server; return their figures and CPU times."""
    with_pp, cost = VARIANTS[variant]
    row: Row = {"pp": None, "logins": None}
    logins, loadgen = None, None
    started = time.monotonic()
    machine, own, server_cpu = machine_cpu_seconds(), time.process_time(), server.cpu_seconds()
    if with_pp:
        row["loadgen_argv"] = command = [
            kit.LOADGEN, "127.0.0.1", str(server.port), str(PAIRS), str(options.messages), str(SIZE),
            "pingpong", "--timeout", str(options.timeout),
        ]  # fmt: skip
        # On this script's CPUs, which place_this_script() chose.
        loadgen = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if loadgen is not None:
            wait_until_matched(server, loadgen)
        if cost:
            # Beside pp100 the logins last as long as it does, which its own --timeout bounds.
            most = int(options.rate * (options.timeout if with_pp else options.seconds))
            logins = LoginLoad(
                server.port, options.rate, options.workers, options.accounts, most, options.addresses,
                guests=cost == "guest",
            )  # fmt: skip
            logins.start()
        if loadgen is not None:
            out, err = loadgen.communicate(timeout=options.timeout + 60)
            row["pp"] = pp_figures(out, err)
        elif logins is not None:
            logins.stopping.wait(options.seconds)
    finally:
        if logins is not None:
            logins.stop()
            row["logins"] = logins.report()
        if loadgen is not None and loadgen.poll() is None:
            loadgen.kill()
            loadgen.wait()
    wall = time.monotonic() - started
    loadgen_cpu = (row["pp"] or {}).get("loadgen_cpu_s", 0.0)
    used_by_us = time.process_time() - own + loadgen_cpu
    used_by_server = (server.cpu_seconds() or 0.0) - (server_cpu or 0.0)
    row.update(
        wall_s=round(wall, 3), server_cpu=rounded(used_by_server / wall), load_cpu=rounded(used_by_us / wall)
    )
    now = machine_cpu_seconds()
    if machine is not None and now is not None:
        row["others_cpu"] = rounded((now - machine - used_by_server - used_by_us) / wall)
    return row


def pp_figures(out: str, err: str) -> Dict[str, Any]:
    """Return the figures of the load generator's JSON line, or why there are none."""
    try:
        load = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": "no JSON from the load generator: %s" % err[-300:]}
    cpu = load.get("loadgen_cpu_s") or {}
    return {
        "ok": bool(load.get("ok")), "error": load.get("error"), "rtt_per_s": load.get("rtt_per_s"),
        "lat_us": load.get("lat_us"), "run_s": load.get("run_s"), "verify": load.get("verify"),
        "loadgen_cpu_s": round(cpu.get("user", 0.0) + cpu.get("sys", 0.0), 3),
    }  # fmt: skip


def run_one(
    kit: Any, variant: str, placement: str, rep: int, options: argparse.Namespace, files: Dict[str, str]
) -> Row:
    """Start a server on a fresh copy of the accounts, run one variant against it, stop it; return the row."""
    cost = "cheap" if VARIANTS[variant][1] in ("cheap", "sleep") else "full"  # sleep hashes cheaply too
    db = os.path.join(options.scratch, "run.db")
    for leftover in (db, db + "-wal", db + "-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    shutil.copyfile(files[cost], db)
    log_path = os.path.join(
        options.logdir or options.scratch, "%s-%s-%d.log" % (variant.replace("/", "-"), placement, rep)
    )
    place_this_script(placement)
    server = server_for(variant, placement, db, log_path, options)
    row: Row = {"variant": variant, "placement": placement, "rep": rep, "sitting": options.sitting}
    row.update(pp=None, logins=None)
    row.update(source_state())
    try:
        server.start(ROOT)
        row.update(run_loads(kit, server, variant, options))
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        row["error"] = str(error)
    finally:
        row["server_exit"] = server.stop()
    row.update(server_argv=server.argv, cost=cost_of(variant, options), bench_argv=sys.argv)
    row["server_log"] = {
        "logged_in": server.count_in_log(b" logged in to "), "replaced": server.count_in_log(b"is replaced"),
        "dropped": server.count_in_log(b") dropped: "), "tracebacks": server.count_in_log(b"Traceback"),
    }  # fmt: skip
    row["ok"] = "error" not in row and all(
        part is None or (part.get("ok", True) and not part.get("failed"))
        for part in (row["pp"], row["logins"])
    )
    row["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return row


def cost_of(variant: str, options: argparse.Namespace) -> Optional[Dict[str, float]]:
    """Return the scrypt cost a variant's logins hash at, and the seconds each sleeps; None without logins."""
    cost = VARIANTS[variant][1]
    if cost in (None, "guest"):
        return None
    params = DEFAULT_SCRYPT if cost in ("full", "one-hash") else options.cheap
    return {
        "n": params.n,
        "r": params.r,
        "p": params.p,
        "sleep": options.sleep_ms / 1e3 if cost == "sleep" else 0,
        "slots": 1 if cost == "one-hash" else 0,
    }


def run_while_busy(
    kit: Any, variant: str, placement: str, rep: int, options: argparse.Namespace, files: Dict[str, str]
) -> Row:
    """Run one variant, first waiting --quiet-wait for a quiet machine; redo it while others were busy."""
    for attempt in range(1, options.redo + 2):
        quiet = wait_for_quiet(options.quiet_wait) if options.quiet_wait else None
        row = run_one(kit, variant, placement, rep, options, files)
        row.update(attempt=attempt, others_cpu_before=rounded(quiet))
        if (row.get("others_cpu") or 0) <= BUSY_OTHERS:
            break
    return row


# -- The summary in results.md ----------------------------------------------------------

TABLE_HEAD = [
    "| variant | runs ok | pp100 round trips/s | pp100 p50 ms | pp100 p99 ms | p99 / alone "
    "| logins/s (offered) | login p50 ms | login p99 ms | server CPU | others' CPU |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]

PLACEMENT_TITLES = {
    "pinned": "pinned: the server on the last CPU, as `mechat serve` pins itself; both loads on the other",
    "all-cpus": "all CPUs: `mechat serve --all-cpus`, nothing pinned",
}


def figure(row: Row, *path: str) -> Optional[float]:
    """Return the number at ``path`` in a row (``"pp", "lat_us", "p99"``), or None if it has none."""
    value: Any = row
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) else None


def spread(values: List[float], scale: float = 1.0) -> str:
    """Return "median [min-max]" of ``values`` times ``scale``, in a few significant digits; "-" for none."""
    if not values:
        return "-"
    shown = [number(value * scale) for value in (statistics.median(values), min(values), max(values))]
    return shown[0] if len(values) == 1 else "%s [%s–%s]" % tuple(shown)


def number(value: float) -> str:
    """Return ``value`` with three significant digits or so, thousands separated."""
    value += 0.0  # no "-0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return "%.2g" % value if abs(value) < 1 else "%.3g" % value


def table(rows: List[Row], placement: str) -> List[str]:
    """Return the table of one placement: a line per variant, medians over its runs."""
    lines = ["#### " + PLACEMENT_TITLES[placement], "", *TABLE_HEAD]
    alone = values(
        [row for row in rows if row["variant"] == "pp100" and row["placement"] == placement],
        "pp",
        "lat_us",
        "p99",
    )
    alone_p99 = statistics.median(alone) if alone else None
    for variant in VARIANTS:
        runs = [row for row in rows if row["variant"] == variant and row["placement"] == placement]
        if runs:
            lines.append(table_row(variant, runs, alone_p99))
    return [*lines, ""]


def values(runs: List[Row], *path: str) -> List[float]:
    """Return the number at ``path`` of every run that has one."""
    return [value for value in (figure(row, *path) for row in runs) if value is not None]


def table_row(variant: str, runs: List[Row], alone_p99: Optional[float]) -> str:
    """Return one variant's line of a table: its runs' medians, and its p99 against pp100 alone's."""
    p99 = values(runs, "pp", "lat_us", "p99")
    ratio = (
        "%.2f×" % (statistics.median(p99) / alone_p99) if p99 and alone_p99 and variant != "pp100" else "-"
    )
    offered = values(runs, "logins", "offered_per_s")
    logins = (
        "%s (%s)" % (spread(values(runs, "logins", "achieved_per_s")), number(offered[0])) if offered else "-"
    )
    cells = [
        variant, "%d/%d" % (sum(1 for row in runs if row["ok"]), len(runs)),
        spread(values(runs, "pp", "rtt_per_s")), spread(values(runs, "pp", "lat_us", "p50"), 1e-3),
        spread(p99, 1e-3), ratio, logins,
        spread(values(runs, "logins", "lat_ms", "p50")), spread(values(runs, "logins", "lat_ms", "p99")),
        spread(values(runs, "server_cpu")), spread(values(runs, "others_cpu")),
    ]  # fmt: skip
    return "| %s |" % " | ".join(cells)


def section(rows: List[Row]) -> List[str]:
    """Return this benchmark's section of results.md: one part per sitting, the latest first."""
    sittings = sorted({row["sitting"] for row in rows}, reverse=True)
    lines = [
        BEGIN,
        "## Logins beside pp100: `bench/logins.py` (issue 15)",
        "",
        "Written by `python bench/logins.py --summarize` from `bench/logins.jsonl` (%d runs in %d sittings). "
        "Medians [min–max] over the reps. pp100: the kit's C load generator, 100 pairs, 64-octet lines, "
        "no busy-poll; p50 and p99 of the round trip, in ms. Logins: latency from the `/login` to its "
        "`#wait` or `#matched_to_`, in ms; logins/s achieved, of those offered. full: scrypt n=2^14, r=8, "
        "p=1 (`mechat serve`); cheap and sleep: `bench/serve_with_cost.py`. Server CPU and others' CPU: "
        "shares of one CPU over the run. `bench/README.md` says how to read them."
        % (len(rows), len(sittings)),
        "",
    ]
    for sitting in sittings:
        lines += sitting_part([row for row in rows if row["sitting"] == sitting])
    return [*lines, END]


def sitting_part(rows: List[Row]) -> List[str]:
    """Return the part of the section for one sitting's rows: what ran, then a table per placement."""
    first = next((row for row in rows if row.get("logins")), rows[0])
    logins = first.get("logins") or {}
    pp = next((row for row in rows if row.get("loadgen_argv")), {})
    digests = ", ".join(sorted({row["source_sha256"] for row in rows}))
    addresses = logins.get("addresses", 1)  # the first sitting's rows predate --addresses: one address
    source = "one address, 127.0.0.1" if addresses == 1 else "%d addresses" % addresses
    lines = [
        "### Sitting `%s`: mechat %s (%s, mechat/ sha256 %s)"
        % (rows[0]["sitting"], rows[0]["tag"], rows[0]["tree"], digests),
        "",
        "%d reps; pp100 %s round trips a pair; logins %s a second offered, at most %s in flight, "
        "on %s accounts, from %s; cheap: %s; sleep: %s; one-hash: %s."
        % (max(row["rep"] for row in rows), pp["loadgen_argv"][4] if pp else "-",
           number(logins.get("offered_per_s", 0)), logins.get("workers", "-"), logins.get("accounts", "-"),
           source, cost_said(rows, "cheap"), cost_said(rows, "sleep"), cost_said(rows, "one-hash")),
        "",
        "Run as `python %s`." % " ".join(rows[0]["bench_argv"]),
        "",
    ]  # fmt: skip
    if "addresses" not in logins:
        lines += [
            "The logins.py of that sitting had neither guests, sleep, one-hash nor --addresses, and 32 "
            "workers on 64 accounts by default; today: `--addresses 1 --workers 32 --accounts 64 "
            "--only pp100,pp100+logins/full,pp100+logins/cheap,logins/full,logins/cheap`.",
            "",
        ]
    for placement in PLACEMENTS:
        if any(row["placement"] == placement for row in rows):
            lines += table(rows, placement)
    return lines


def cost_said(rows: List[Row], cost: str) -> str:
    """Say the cost of a sitting's cheap or sleep logins, or that none ran."""
    for row in rows:
        if row["variant"].endswith("/" + cost) and row.get("cost"):
            said = "scrypt n=%(n)d, r=%(r)d, p=%(p)d" % row["cost"]
            sleep, slots = row["cost"].get("sleep"), row["cost"].get("slots")
            said += ", then %g ms asleep" % (sleep * 1e3) if sleep else ""
            return said + (", %d check at a time" % slots if slots else "")
    return "not run"


def summarize(jsonl: str, markdown: str) -> None:
    """Rewrite this benchmark's section of ``markdown`` from every row of ``jsonl``; leave the rest."""
    with open(jsonl) as results:
        rows = [json.loads(line) for line in results if line.strip()]
    if not rows:
        return
    lines = section(rows)
    with open(markdown) as existing:
        text = existing.read()
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + "\n".join(lines) + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    with open(markdown, "w") as out:
        out.write(text)


# -- The command line ---------------------------------------------------------------------


def parse_options(argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants to run (default: %(default)s)")
    parser.add_argument("--placements", default=",".join(PLACEMENTS), help="default: %(default)s")
    parser.add_argument("--reps", type=int, default=3, help="runs of each variant (default: %(default)s)")
    parser.add_argument(
        "--messages", type=int, default=1000, help="pp100 round trips a pair (default: %(default)s)"
    )
    parser.add_argument(
        "--rate", type=float, default=100.0, help="logins offered a second (default: %(default)s)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="how long the logins alone last; beside pp100, as long as it (default: %(default)s)",
    )
    parser.add_argument(
        "--workers", type=int, default=64, help="logins in flight at most (default: %(default)s)"
    )
    parser.add_argument(
        "--accounts", type=int, default=96, help="accounts made beforehand (default: %(default)s)"
    )
    parser.add_argument(
        "--sleep-ms", type=float, default=50.0, help="the sleep variants' wait a login (default: %(default)s)"
    )
    parser.add_argument(
        "--addresses",
        type=int,
        help="loopback addresses the logins come from, 1 for 127.0.0.1 alone (default: one a worker)",
    )
    parser.add_argument(
        "--cheap-n", type=int, default=2**4, help="scrypt's n for the cheap cost (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="pp100's own time limit (default: %(default)s)"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=0.0, help="wait up to S s for a quiet machine per run"
    )
    parser.add_argument(
        "--redo", type=int, default=1, help="redo a run while others were busy, up to N times"
    )
    parser.add_argument("--jsonl", default=RESULTS, help="append one JSON line per run here; '' for none")
    parser.add_argument(
        "--markdown", default=MARKDOWN, help="the results.md whose section --summarize writes"
    )
    parser.add_argument("--summarize", action="store_true", help="only rewrite the section from --jsonl")
    parser.add_argument("--logdir", help="keep the server logs here (default: a temporary directory)")
    parser.add_argument(
        "--build-dir", default=os.path.join(HERE, "build"), help="where the kit's C tools are built"
    )
    options = parser.parse_args(argv)  # fmt: skip
    unknown = set(options.only.split(",")) - set(VARIANTS) | set(options.placements.split(",")) - set(
        PLACEMENTS
    )
    if unknown:
        parser.error(
            "unknown %s; variants: %s; placements: %s"
            % (", ".join(sorted(unknown)), ", ".join(VARIANTS), ", ".join(PLACEMENTS))
        )
    if min(options.reps, options.messages, options.workers, options.cheap_n) < 1 or options.redo < 0:
        parser.error("--reps, --messages, --workers and --cheap-n must be at least 1, --redo at least 0")
    if (
        options.rate <= 0
        or options.seconds <= 0
        or options.sleep_ms < 0
        or options.accounts <= options.workers
    ):
        parser.error(
            "--rate and --seconds must be positive, --sleep-ms not negative, --accounts above --workers"
        )
    if not 1 <= (options.addresses or options.workers) <= 254:
        parser.error("--addresses (by default --workers) must be 1 to 254: one 127.0.1.N each")
    options.cheap = ScryptParams(options.cheap_n, 8, 1)
    options.addresses = options.addresses or options.workers
    return options


def plan(options: argparse.Namespace) -> List[Tuple[str, str, int]]:
    """Return every run as (variant, placement, rep), rep-major; each rep turns the variants' order a step."""
    variants = options.only.split(",")
    runs = []
    for rep in range(1, options.reps + 1):
        turn = (rep - 1) % len(variants)
        for placement in options.placements.split(","):
            runs += [(variant, placement, rep) for variant in variants[turn:] + variants[:turn]]
    return runs


def describe(row: Row) -> str:
    """Say in one line what a run measured."""
    parts = ["%-8s %-19s rep %d" % (row["placement"], row["variant"], row["rep"])]
    if row.get("pp"):
        pp = row["pp"]
        parts.append(
            "pp100 %s rt/s p50 %s ms p99 %s ms"
            % (
                number(pp.get("rtt_per_s") or 0),
                number((figure(row, "pp", "lat_us", "p50") or 0) / 1e3),
                number((figure(row, "pp", "lat_us", "p99") or 0) / 1e3),
            )
        )
    if row.get("logins"):
        parts.append(
            "logins %s/s p50 %s ms p99 %s ms failed %s"
            % (
                number(figure(row, "logins", "achieved_per_s") or 0),
                number(figure(row, "logins", "lat_ms", "p50") or 0),
                number(figure(row, "logins", "lat_ms", "p99") or 0),
                row["logins"]["failed"] or 0,
            )
        )
    parts.append("server CPU %s others %s" % (row.get("server_cpu"), row.get("others_cpu")))
    if row.get("error"):
        parts.append("ERROR " + row["error"])
    return " | ".join(parts)  # fmt: skip


def main(argv: Optional[List[str]] = None) -> int:
    """Run the plan; append the rows; rewrite the section of results.md; return 0 if every run was ok."""
    options = parse_options(argv)
    if options.summarize:
        summarize(options.jsonl, options.markdown)
        return 0
    kit = kit_runner(options.build_dir)
    # SIGTERM ends the sitting as Ctrl-C does, through every finally: the running server is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit("stopped by SIGTERM"))
    options.sitting = time.strftime("%Y%m%dT%H%M")
    print(
        "sitting %s; mechat %s" % (options.sitting, git("rev-parse", "--short", "HEAD").strip()), flush=True
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="logins-") as scratch:
        options.scratch = scratch
        files = {"full": os.path.join(scratch, "full.db"), "cheap": os.path.join(scratch, "cheap.db")}
        make_accounts(files["full"], DEFAULT_SCRYPT, options.accounts)
        make_accounts(files["cheap"], options.cheap, options.accounts)
        for variant, placement, rep in plan(options):
            row = run_while_busy(kit, variant, placement, rep, options, files)
            rows.append(row)
            print(describe(row), flush=True)
            if options.jsonl:
                with open(options.jsonl, "a") as out:
                    out.write(json.dumps(row, separators=(",", ":")) + "\n")
    if options.jsonl:
        summarize(options.jsonl, options.markdown)
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
