"""Run issue 6's benchmark matrix against mechat and the reference servers.

This is a thin layer over the shared benchmark kit (``../shared/bench`` from
the repository root): its ``run.py`` starts one server on a free loopback
port, drives it with the C load generator ``mechat-load``, samples the
server's RSS and CPU from /proc and stops it by PID.  This script only
chooses what to run, in what order, and how to summarise it:

* configs: the five of the issue (pingpong 100 and 1,000 pairs, flood of
  100 pairs with 64 and 1,900 octet lines, 5,000 pairs = 10,000
  connections with 5 round trips each), message counts as in the kit's
  ``matrix.py`` so that each run lasts about 0.5 to 4 seconds;
* servers: mechat, exactly as ``SERVER_COMMAND`` below, and the kit's
  ``ref-epoll`` (C), ``ref_asyncio.py`` and ``ref_threading.py``;
* placements: ``pinned`` (server on one core, busy-polling load generator on
  the other) and ``unpinned`` (the scheduler decides);
* repetitions are rep-major, so that drift on this shared machine hits every
  server alike; each run first waits (bounded) for an idle machine, records
  the CPU other processes used during it (``foreign_frac``), and is redone
  once if that was high.

Two more kinds of run share the file and the summary:

* fan-out: the configs of ``bench/fanout.py`` (``all``, ``dm``,
  ``nonreader``, ``room``: protocol 2's ``/all`` and ``/msg``, one client
  that never reads, and a room of 300 with and without one).  The C load
  generator and the reference servers speak protocol 1 only, so these run
  against mechat alone, through fanout.py, once per placement after the
  configs above, each run waiting ``--quiet-wait`` as the others do, and
  have tables of their own;
* A/B: ``--ab BEFORE,AFTER`` runs mechat from two trees of the repository
  (say two ``git worktree``s), alternating which goes first from one rep to
  the next, so that both meet the same machine; the summary sets the two
  side by side, sitting by sitting, apart from the tables above.

Raw results are appended to ``bench/results.jsonl``, one JSON object per run
(with the exact server and load generator argv); medians and ratios to
``ref-epoll`` go to ``bench/results.md``.  ``--summarize`` only rewrites the
tables from the JSONL file.

    python bench/run_matrix.py --reps 3
    python bench/run_matrix.py --reps 1 --only pp100,sc5000,dm --placements pinned
    python bench/run_matrix.py --ab /tmp/ab-before,/tmp/ab-after --only pp100,fl100x64 \\
        --placements pinned --reps 8
    python bench/run_matrix.py --summarize
"""

import argparse
import contextlib
import glob
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KIT = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))

#: The server under test: flood control off (the load generator sends far
#: above any human rate), every other limit at its default.
SERVER_COMMAND = "{python} -m mechat serve --host 127.0.0.1 --port {{port}} --max-rate 0"

#: name: (mode, pairs, size, messages per client for Python servers, for C servers)
CONFIGS: Dict[str, Tuple[str, int, int, int, int]] = {
    "pp100": ("pingpong", 100, 64, 500, 3000),
    "pp1000": ("pingpong", 1000, 64, 50, 300),
    "fl100x64": ("flood", 100, 64, 2000, 20000),
    "fl100x1900": ("flood", 100, 1900, 600, 3000),
    "sc5000": ("pingpong", 5000, 64, 5, 5),
}
REFERENCES = ["epoll", "asyncio", "threading"]

#: bench/fanout.py and its configs, which only mechat can serve (protocol 2).
FANOUT = os.path.join(HERE, "fanout.py")
FANOUT_CONFIGS = ["all", "dm", "nonreader", "room"]

#: The two sides of an A/B comparison, in the order of ``--ab``.
SIDES = ["before", "after"]
PLACEMENTS = {"pinned": ("split", True), "unpinned": ("none", False)}
FLOOD_WINDOW = 256  # lines in flight per connection, as in the kit's matrix

#: CPUs that other processes may use during a run before it is redone
#: (``--foreign-max``) and, in the A/B summary, counted as disturbed.
BUSY_FOREIGN = 0.25

Row = Dict[str, Any]


def kit_runner(build_dir: str) -> Any:
    """Import the kit's run.py, building its C tools into ``build_dir`` (the kit is read-only)."""
    os.environ["MECHAT_BENCH_BUILD"] = build_dir
    sys.path.insert(0, KIT)
    import run  # type: ignore[import-not-found]

    run.ensure_built()
    return run


def run_one(
    kit: Any, server: str, config: str, placement: str, options: argparse.Namespace, tree: str = ""
) -> Row:
    """Run one server in one config and placement; redo it once if the machine was busy.

    ``tree``, if given, is the repository whose mechat to run: the kit starts
    the server in the current directory, where ``python -m`` looks first.
    """
    mode, pairs, size, messages_python, messages_c = CONFIGS[config]
    pin, busy_poll = PLACEMENTS[placement]
    command = SERVER_COMMAND.format(python=sys.executable) if server == "mechat" else server
    args = kit.parser().parse_args(["--server", command])
    args.__dict__.update(
        mode=mode, pairs=pairs, size=size, msgs=messages_c if server == "epoll" else messages_python,
        window=FLOOD_WINDOW, timeout=options.timeout, quiet_wait=options.quiet_wait, pin=pin,
        busy_poll=busy_poll, label="%s/%s/%s" % (placement, config, server),
    )  # fmt: skip
    for attempt in (1, 2):
        load_average = [round(figure, 2) for figure in os.getloadavg()]
        with working_directory(tree):
            row: Row = kit.run_once(args)
        row.update(attempt=attempt, load_average=load_average)
        if (row.get("foreign_frac") or 0) <= options.foreign_max:
            break
    row.update(config=config, srv=server, placement=placement)
    return row


@contextlib.contextmanager
def working_directory(path: str) -> Iterator[None]:
    """Run the body in ``path`` ("": where we are), and come back."""
    before = os.getcwd()
    os.chdir(path or before)
    try:
        yield
    finally:
        os.chdir(before)


def make_plan(options: argparse.Namespace, sides: List[str]) -> List[Tuple[int, str, str, str, str]]:
    """Return every run as (rep, placement, config, server, A/B side or ""), rep-major.

    A/B runs swap which side goes first every other rep, so that whatever
    drifts on a shared machine during a sitting weighs on both alike.
    """
    order = sides or [""]
    return [
        (rep, placement, config, server, side)
        for rep in range(1, options.reps + 1)
        for placement in options.placements.split(",")
        for config in options.configs
        if config in CONFIGS
        for server in (["mechat"] if sides else options.servers.split(","))
        for side in (order if rep % 2 else order[::-1])
    ]


def run_matrix(options: argparse.Namespace) -> None:
    """Run the plan, appending each result as it comes; then fanout.py's configs, if chosen."""
    kit = kit_runner(options.build_dir)
    trees = {side: tree_source(path) for side, path in zip(SIDES, options.ab or [])}
    plan = make_plan(options, list(trees))
    started = time.monotonic()
    with open(options.jsonl, "a") as out:
        for number, (rep, placement, config, server, side) in enumerate(plan, 1):
            row = run_one(kit, server, config, placement, options, trees[side]["ab_tree"] if side else "")
            row.update(rep=rep, tag=options.tag, bench_argv=sys.argv)
            if side:
                row.update(trees[side], ab=side, label="%s/%s" % (row["label"], side))
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            out.flush()
            print(
                "[%d/%d %4.0fs] %s" % (number, len(plan), time.monotonic() - started, brief(row)), flush=True
            )
    fanout = [config for config in options.configs if config in FANOUT_CONFIGS]
    if fanout and "mechat" in options.servers.split(","):
        for placement in options.placements.split(","):
            run_fanout(fanout, placement, options)


def run_fanout(configs: List[str], placement: str, options: argparse.Namespace) -> None:
    """Run fanout.py's configs against this tree's mechat in one placement; it appends its own rows."""
    argv = [sys.executable, FANOUT, "--only", ",".join(configs), "--reps", str(options.reps)]
    argv += ["--jsonl", options.jsonl, "--quiet-wait", str(options.quiet_wait)]
    argv += ["--pin"] if placement == "pinned" else []
    print("[fan-out, %s] %s" % (placement, " ".join(argv)), flush=True)
    status = subprocess.run(argv, cwd=ROOT).returncode
    if status:
        print("fanout.py exited with status %d: its table above says which run failed" % status, flush=True)


def tree_source(tree: str) -> Row:
    """Say which mechat a tree holds: its commit, whether mechat/ differs from it, a digest of the code.

    The same fields as fanout.py's rows; the digest covers every
    ``mechat/**/*.py`` on disk.  Fail unless ``python -m mechat`` started in
    the tree would import the tree's own package.
    """
    tree = os.path.realpath(tree)
    imported = subprocess.run(
        [sys.executable, "-c", "import mechat; print(mechat.__file__)"],
        cwd=tree, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    if not os.path.realpath(imported).startswith(os.path.join(tree, "mechat", "")):
        raise SystemExit("%s: python -m mechat would run %r, not this tree's mechat" % (tree, imported))
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(tree, "mechat", "**", "*.py"), recursive=True)):
        with open(path, "rb") as source:
            digest.update(os.path.relpath(path, tree).encode() + b"\0" + source.read())
    status = git(tree, "status", "--porcelain", "--", "mechat")
    return {
        "ab_tree": tree, "commit": git(tree, "rev-parse", "--short", "HEAD"),
        "tree": "working tree" if status else "clean", "source_sha256": digest.hexdigest()[:12],
    }  # fmt: skip


def git(tree: str, *args: str) -> str:
    """Return what a read-only git command prints about ``tree``, without taking optional locks."""
    command = ["git", "--no-optional-locks", "-C", tree, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()


def brief(row: Row) -> str:
    """Return one line about a run for the console."""
    load = row.get("load") or {}
    return "%-28s ok=%s rt/s=%s lines/s=%s p99=%s match=%s foreign=%s %s" % (
        row.get("label"), row.get("ok"), load.get("rtt_per_s"), load.get("lines_per_s"),
        (load.get("lat_us") or {}).get("p99"), load.get("match_all_s"), row.get("foreign_frac"),
        load.get("error") or row.get("error") or "",
    )  # fmt: skip


# -- Summary ----------------------------------------------------------------------

Metric = Callable[[Row], Optional[float]]


def load_field(*path: str) -> Metric:
    """Return a getter for a number inside the load generator's JSON."""

    def get(row: Row) -> Optional[float]:
        value: Any = row.get("load") or {}
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return float(value) if isinstance(value, (int, float)) and value >= 0 else None

    return get


def rss_per_connection_kb(row: Row) -> Optional[float]:
    """Return the server's peak RSS above its idle RSS, per connection, in KB."""
    stats = row.get("server_stats") or {}
    peak, idle = stats.get("peak_rss_kb"), row.get("server_idle_rss_kb")
    if not peak or idle is None:
        return None
    return float(peak - idle) / (2 * CONFIGS[row["config"]][1])


METRICS: Dict[str, Metric] = {
    "throughput": lambda row: load_field("rtt_per_s")(row) or load_field("lines_per_s")(row),
    "p50_us": load_field("lat_us", "p50"),
    "p99_us": load_field("lat_us", "p99"),
    "match_s": load_field("match_all_s"),
    "rss_mb": lambda row: ((row.get("server_stats") or {}).get("peak_rss_kb") or 0) / 1024 or None,
    "kb_per_conn": rss_per_connection_kb,
    "server_cpu": lambda row: (row.get("server_stats") or {}).get("cpu_util_load"),
    "loadgen_busy": load_field("loadgen_run_busy_frac"),
    "foreign": lambda row: row.get("foreign_frac"),
}


def matrix_rows(rows: List[Row]) -> List[Row]:
    """Return the rows of this script's own configs and servers: neither fan-out nor A/B runs."""
    return [row for row in rows if row.get("config") in CONFIGS and "ab" not in row]


def medians(rows: List[Row]) -> Dict[Tuple[str, str, str], Dict[str, Any]]:
    """Group runs by (placement, config, server) and take the median of each metric."""
    groups: Dict[Tuple[str, str, str], List[Row]] = {}
    for row in matrix_rows(rows):
        groups.setdefault((row["placement"], row["config"], row["srv"]), []).append(row)
    summary = {}
    for key, runs in groups.items():
        cell: Dict[str, Any] = {"runs": len(runs), "ok": sum(1 for r in runs if r.get("ok"))}
        for name, metric in METRICS.items():
            values = [v for v in map(metric, runs) if v is not None]
            cell[name] = statistics.median(values) if values else None
        cell["intact"] = all(verdict_clean(r) for r in runs)
        summary[key] = cell
    return summary


def verdict_clean(row: Row) -> bool:
    """True if no line that arrived was out of place: none lost, repeated, reordered or corrupted.

    Lines still missing when a run timed out are not counted here; the
    ``ok`` column shows those runs.
    """
    verify = (row.get("load") or {}).get("verify") or {}
    return not any(value for key, value in verify.items() if key != "missing" and isinstance(value, int))


# Targets of issue 6, as (label, metric, ratio-or-bound, kind): "ratio>=" and
# "ratio<=" compare mechat with ref-epoll in the same run, "<=" is absolute.
TARGETS: Dict[str, List[Tuple[str, str, float, str]]] = {
    "pp100": [("throughput", "throughput", 0.5, "ratio>="), ("p99", "p99_us", 3.0, "ratio<=")],
    "pp1000": [("throughput", "throughput", 0.4, "ratio>="), ("p99", "p99_us", 3.0, "ratio<=")],
    "fl100x64": [("lines/s", "throughput", 0.5, "ratio>=")],
    "fl100x1900": [("lines/s", "throughput", 0.6, "ratio>=")],
    "sc5000": [
        ("all matched (s)", "match_s", 2.0, "<="),
        ("round trips/s", "throughput", 0.5, "ratio>="),
        ("p99 (s)", "p99_us", 1e6, "<="),
        ("RSS KB/conn", "kb_per_conn", 10.0, "<="),
    ],
}


def number(value: Optional[float], digits: int = 0) -> str:
    """Format a number for the table, '-' when missing."""
    if value is None:
        return "-"
    if abs(value) >= 1e6 and digits == 0:
        return "%.2fM" % (value / 1e6)
    if abs(value) >= 10_000 and digits == 0:
        return "%.1fk" % (value / 1000)
    return "{:,.{}f}".format(value, digits)


def judge(
    cell: Dict[str, Any], epoll: Dict[str, Any], metric: str, bound: float, kind: str
) -> Tuple[str, str]:
    """Return (mechat's figure as compared, verdict) for one target."""
    mine = cell.get(metric)
    if mine is None:
        return "-", "no data"
    if kind == "<=":
        shown = mine / 1e6 if metric == "p99_us" else mine
        return number(shown, 2), "met" if mine <= bound else "missed"
    theirs = epoll.get(metric)
    if not theirs:
        return "-", "no epoll data"
    ratio = mine / theirs
    met = ratio >= bound if kind == "ratio>=" else ratio <= bound
    return "%.2f×" % ratio, "met" if met else "missed"


def target_table(summary: Dict[Tuple[str, str, str], Dict[str, Any]], placement: str) -> List[str]:
    """Return the markdown rows comparing mechat with each target in one placement."""
    lines = [
        "| config | target | mechat | ref-epoll | mechat vs target | verdict | ref_asyncio | ref_threading |"
        " ahead of both refs here |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config, targets in TARGETS.items():
        cell = summary.get((placement, config, "mechat"), {})
        epoll = summary.get((placement, config, "epoll"), {})
        others = [summary.get((placement, config, ref), {}) for ref in ("asyncio", "threading")]
        for label, metric, bound, kind in targets:
            figure, verdict = judge(cell, epoll, metric, bound, kind)
            ahead = ahead_of(cell, others, metric)
            digits = 2 if metric in ("match_s", "kb_per_conn") else 0
            want = (
                ("%s %g× epoll" % (kind[-2:], bound))
                if kind.startswith("ratio")
                else "≤ %g" % (bound / 1e6 if metric == "p99_us" else bound)
            )
            lines.append("| %s | %s %s | %s | %s | %s | %s | %s | %s | %s |" % (
                config, label, want, *(number(c.get(metric), digits) for c in (cell, epoll)), figure, verdict,
                *(number(c.get(metric), digits) for c in others),
                ahead,
            ))  # fmt: skip
    return lines


def ahead_of(cell: Dict[str, Any], others: List[Dict[str, Any]], metric: str) -> str:
    """Say whether mechat beats every other server on ``metric``: "yes", "no" or "-" (no data).

    Throughput is better higher; latency, time to match and memory lower.
    """
    if cell.get(metric) is None or any(other.get(metric) is None for other in others):
        return "-"
    sign = 1 if metric == "throughput" else -1
    return "yes" if all(sign * cell[metric] > sign * other[metric] for other in others) else "no"


def median_table(summary: Dict[Tuple[str, str, str], Dict[str, Any]], placement: str) -> List[str]:
    """Return every server's medians in one placement as markdown rows."""
    lines = [
        "| config | server | ok | throughput/s | p50 µs | p99 µs | match all s | peak RSS MB | KB/conn |"
        " server CPU | loadgen busy | foreign CPU | lines intact |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config in CONFIGS:
        for server in ["mechat", *REFERENCES]:
            c = summary.get((placement, config, server))
            if c is None:
                continue
            lines.append("| %s | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                config, server, c["ok"], c["runs"], number(c["throughput"]), number(c["p50_us"]),
                number(c["p99_us"]), number(c["match_s"], 3), number(c["rss_mb"], 1),
                number(c["kb_per_conn"], 1), number(c["server_cpu"], 2), number(c["loadgen_busy"], 2),
                number(c["foreign"], 2), "yes" if c["intact"] else "NO",
            ))  # fmt: skip
    return lines


#: Where the sections that other scripts write into results.md begin; they
#: run to the end of the file, and --summarize keeps them.
OTHERS_BEGIN = "<!-- bench/logins.py:"


def write_markdown(rows: List[Row], path: str) -> None:
    """Write the targets and medians tables for each placement, then the fan-out and A/B sections."""
    every_sitting = matrix_rows(rows)
    tags = sittings(every_sitting)
    own = latest_sitting(rows)
    summary = medians(own)
    fanout = [row for row in rows if row.get("config") in FANOUT_CONFIGS]
    ab = [row for row in rows if "ab" in row]
    out = heading(own, len(fanout), len(ab))
    out += [
        "",
        "Sitting `%s`; %d earlier sittings are in the JSONL file and in the last section."
        % (tags[-1] if tags else "-", max(0, len(tags) - 1)),
    ]
    for placement in PLACEMENTS:
        if not any(key[0] == placement for key in summary):
            continue
        how = "server on one core, busy-polling load generator on the other (`--pin split --busy-poll`)"
        if placement == "unpinned":
            how = "no pinning, the scheduler decides (`--pin none`)"
        out += ["", "## %s: %s" % (placement, how), "", "### Targets of issue 6", ""]
        out += target_table(summary, placement)
        out += ["", "### Medians, every server", ""]
        out += median_table(summary, placement)
    out += fanout_section(fanout) + ab_sections(ab) + across_sittings(every_sitting, tags)
    text = "\n".join(out) + "\n" + sections_of_others(path)
    with open(path, "w") as f:
        f.write(text)


def sections_of_others(path: str) -> str:
    """Return what another script wrote into ``path`` between its markers (bench/logins.py's), kept as is."""
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        return ""
    start = old.find(OTHERS_BEGIN)
    return "\n" + old[start:] if start >= 0 else ""


def latest_sitting(rows: List[Row]) -> List[Row]:
    """Return the matrix runs of the latest sitting: the figures of the code as it is now."""
    own = matrix_rows(rows)
    tags = sittings(own)
    return [row for row in own if row.get("tag") == tags[-1]] if tags else []


def sittings(rows: List[Row]) -> List[str]:
    """Return the tags of the sittings that ``rows`` come from, oldest first."""
    return list(dict.fromkeys(str(row.get("tag", "")) for row in rows))


def across_sittings(rows: List[Row], tags: List[str]) -> List[str]:
    """Return mechat's medians in every sitting side by side, so a new commit is read against the last."""
    if len(tags) < 2:
        return []
    mechat = [row for row in rows if row.get("srv") == "mechat"]
    cells = {tag: medians([row for row in mechat if row.get("tag") == tag]) for tag in tags}
    out = [
        "",
        "## mechat in every sitting",
        "",
        "Throughput (round trips/s, or lines/s for floods), then p99 µs, median of each sitting.  Sittings"
        " are on different days and machine states: compare the ratios to ref-epoll in the tables above"
        " before these absolute figures.",
        "",
        "| placement | config | " + " | ".join("`%s`" % tag for tag in tags) + " |",
        "|---|---|" + "---|" * len(tags),
    ]
    for placement in PLACEMENTS:
        for config in CONFIGS:
            figures = []
            for tag in tags:
                cell = cells[tag].get((placement, config, "mechat"))
                figures.append(
                    "-" if cell is None else "%s; %s" % (number(cell["throughput"]), number(cell["p99_us"]))
                )
            out.append("| %s | %s | %s |" % (placement, config, " | ".join(figures)))
    return out


def heading(own: List[Row], fanout_runs: int, ab_runs: int) -> List[str]:
    """Return the title and what the file summarises: each kind of run, counted apart."""
    mechat = [row for row in own if row.get("srv") == "mechat" and "server_argv" in row]
    commands = {with_port(row, row["server_argv"]) for row in mechat}
    reps = max((r.get("rep", 1) for r in own), default=0)
    return [
        "# mechat benchmark results",
        "",
        "Written by `bench/run_matrix.py` from `bench/results.jsonl` (%d runs of the C load generator, up"
        " to %d repetitions; medians).  Ratios are to `ref-epoll` measured in the same sitting.  Load"
        " generator: the shared kit's C `mechat-load` (`run.py`), flood window %d lines.  The file also"
        " holds %d fan-out runs and %d A/B runs: each kind has its own section below, and neither is in"
        " the tables of the placements." % (len(own), reps, FLOOD_WINDOW, fanout_runs, ab_runs),
        "",
        "mechat server command (port substituted per run): " + (quoted(commands) or "-"),
    ]


def spread(values: List[float], digits: int = 0) -> str:
    """Format some runs' figures as "median [min–max]", or the one figure of a single run."""
    if not values:
        return "-"
    if len(values) == 1:
        return number(values[0], digits)
    shown = (number(v, digits) for v in (statistics.median(values), min(values), max(values)))
    return "%s [%s–%s]" % tuple(shown)


def median_of(values: List[float]) -> Optional[float]:
    """Return the median, or None for no values."""
    return statistics.median(values) if values else None


def group_by(rows: List[Row], key: Callable[[Row], Tuple[str, ...]]) -> Dict[Tuple[str, ...], List[Row]]:
    """Group rows by a key, the groups in the order of their first row."""
    groups: Dict[Tuple[str, ...], List[Row]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


# -- Fan-out: fanout.py's rows ------------------------------------------------------------

#: The flags fanout.py always gives the server; the table shows only the others.
FANOUT_SERVER_FLAGS = "--max-rate 0 --all-rate 0"

#: Issue 14's bound: the others' p99 with one client that never reads is at
#: most this many times their p99 without it.
NON_READER_BOUND = 2.0

#: The p99s that the non-reader's table sets side by side: the rows' key, and
#: what it times.  Only ``room`` rows have the second: a line from its sending
#: to the moment the last member had it.
NON_READER_FIGURES = [("lat_us", "each receipt"), ("to_last_us", "to the last member")]


def fanout_key(row: Row) -> Tuple[str, ...]:
    """Group fan-out runs by code, placement, server flags, config, load (clients, window) and variant."""
    code = row.get("tag", "?") + (" + working tree" if row.get("tree") == "working tree" else "")
    argv = row.get("argv") or []
    flags = " ".join(argv[argv.index("serve") + 5 :] if "serve" in argv else argv)
    flags = flags.replace(FANOUT_SERVER_FLAGS, "").strip() or "-"
    load = "%s, %s" % (row.get("clients", "?"), row.get("window", "?"))
    return code, row["placement"], flags, row["config"], load, row.get("variant") or ""


def fanout_section(rows: List[Row]) -> List[str]:
    """Return the fan-out table and the non-reader's table, or nothing if there are no such runs."""
    if not rows:
        return []
    out = [
        "",
        "## Fan-out (protocol 2): `bench/fanout.py`, mechat only",
        "",
        "`/all` to 1,000 clients, DMs between 1,000, `/all` without and with one client that never"
        " reads, and a room of 300 without and with one (bench/README.md says what each measures).  The C"
        " load generator and the reference servers know none of these, so they run against mechat alone,"
        " with fanout.py's Python load; `pinned` there is the server on CPU 0 and the load on CPU 1, with"
        " no busy-polling.  Code: the commit, `+ working tree` if mechat/ differed from it (then the"
        " number of distinct mechat/ digests among the runs, or the one digest).  Server flags: beyond"
        " `%s`.  Clients, window: the measured clients (the non-reader not counted) and the commands a"
        " sender may have in flight.  Lines/s counts lines received: in a room, 299 for each line sent."
        "  Latency from the command queued to the line received; figures are medians, lines/s and p99"
        " with [min–max]." % FANOUT_SERVER_FLAGS,
        "",
        "| code | placement | server flags | config | clients, window | variant | runs ok | lines/s |"
        " p50 ms | p99 ms | max ms | intact | load CPU | server CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = group_by(rows, fanout_key)
    out += [fanout_row(key, runs) for key, runs in groups.items()]
    return out + non_reader_table(groups)


def fanout_row(key: Tuple[str, ...], runs: List[Row]) -> str:
    """Return one group of fan-out runs as a row of the markdown table."""
    code, placement, flags, config, load, variant = key
    intact = all(not any(row["verify"].values()) for row in runs)
    return "| %s | %s | %s | %s | %s | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s |" % (
        describe_code(code, runs), placement, flags, config, load, variant or "-",
        sum(1 for row in runs if row["ok"]), len(runs), spread([r["lines_per_s"] for r in runs]),
        number(median_of(latencies_ms(runs, "p50")), 1), spread(latencies_ms(runs, "p99"), 1),
        number(median_of(latencies_ms(runs, "max")), 1), "yes" if intact else "NO",
        cpu_share(runs, "tester_cpu"), cpu_share(runs, "server_cpu"),
    )  # fmt: skip


def describe_code(code: str, runs: List[Row]) -> str:
    """Say which mechat some runs measured: the commit, and which or how many versions of a working tree.

    One version is named by its digest, which tells a working tree that
    matches a later commit (that commit's runs have the same digest).
    """
    digests = {row.get("source_sha256") for row in runs}
    if len(digests) > 1:
        return "%s (%d versions)" % (code, len(digests))
    return "%s (mechat/ sha256 %s)" % (code, digests.pop()) if code.endswith("working tree") else code


def latencies_ms(runs: List[Row], percentile: str, key: str = "lat_us") -> List[float]:
    """Return one latency percentile of each fan-out run that has one under ``key``, in ms."""
    return [row[key][percentile] / 1000 for row in runs if row.get(key)]


def cpu_share(runs: List[Row], key: str) -> str:
    """Return the runs' median share of one CPU as a percentage, '-' if none has one."""
    share = median_of([row[key] for row in runs if row.get(key) is not None])
    return "-" if share is None else "%.0f %%" % (share * 100)


def non_reader_table(groups: Dict[Tuple[str, ...], List[Row]]) -> List[str]:
    """Return the others' p99 without and with the non-reader, for each group of runs that has both."""
    out = [
        "",
        "### One client that never reads: the others' p99 without and with it",
        "",
        "`nonreader`: one more client among 1,000, each `/all` line timed to each recipient.  `room`:"
        " a 301st member of the room, each line timed to each other member (each receipt) and to the"
        " last of them to get it.  Issue 14's bound: the others' p99 with the non-reader at most %g×"
        " their p99 without it (the ratio of the medians).  The non-reader's fate is in its first row."
        % NON_READER_BOUND,
        "",
        "| code | placement | server flags | config | clients, window | runs without, with | p99 of |"
        " ms without | ms with | with / without | ≤ %g× | the non-reader |" % NON_READER_BOUND,
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for key, stalled in groups.items():
        baseline = groups.get((*key[:-1], "baseline"))
        if key[-1] == "non-reader" and baseline:
            rows += non_reader_rows(key, baseline, stalled)
    return out + rows if rows else []


def non_reader_rows(key: Tuple[str, ...], baseline: List[Row], stalled: List[Row]) -> List[str]:
    """Return a row for each p99 that one group's runs carry: both ways, their ratio, and the verdict."""
    code, placement, flags, config, load, _ = key
    out: List[str] = []
    for field, timed in NON_READER_FIGURES:
        if not any(row.get(field) for row in baseline + stalled):
            continue
        without, with_it = latencies_ms(baseline, "p99", field), latencies_ms(stalled, "p99", field)
        ratio = median_of(with_it) / median_of(without) if without and with_it else None  # type: ignore[operator]
        out.append("| %s | %s | %s | %s | %s | %d, %d | %s | %s | %s | %s | %s | %s |" % (
            describe_code(code, baseline + stalled), placement, flags, config, load, len(baseline),
            len(stalled), timed, spread(without, 1), spread(with_it, 1),
            "-" if ratio is None else "%.2f×" % ratio,
            "-" if ratio is None else "met" if ratio <= NON_READER_BOUND else "missed",
            "as above" if out else non_reader_fate(stalled),
        ))  # fmt: skip
    return out


def non_reader_fate(runs: List[Row]) -> str:
    """Say what the server did with the non-reader: kept it, or dropped it and after how many lines."""
    fates: Dict[Tuple[str, str], List[Any]] = {}
    for row in runs:
        fate = row.get("non_reader") or {}
        key = (str(fate.get("state", "unknown")), number(fate.get("owed")))
        fates.setdefault(key, []).append(fate.get("received"))
    said = []
    for (state, owed), received in fates.items():
        if state.startswith("kept"):
            what = "kept, got all %s lines" % owed
        else:
            what = "%s after %s of %s lines" % (state, count_range(received), owed)
        said.append("%s (%d of %d runs)" % (what, len(received), len(runs)))
    return "; ".join(said)


def count_range(counts: List[Any]) -> str:
    """Format counts as "min–max", or the one count if all are equal; "?" if some run has none."""
    if not all(isinstance(count, (int, float)) for count in counts):
        return "?"
    low, high = min(counts), max(counts)
    return number(low) if low == high else "%s–%s" % (number(low), number(high))


# -- A/B: mechat from two trees, in one sitting ----------------------------------------------

#: The A/B figures of each mode, as (label, metric, least after / before).  The
#: rule of the issue: throughput may not fall by more than 10 %.  p99 is shown
#: beside it, not judged (None).
AB_FIGURES: Dict[str, List[Tuple[str, str, Optional[float]]]] = {
    "pingpong": [("round trips/s", "throughput", 0.9), ("p99 µs", "p99_us", None)],
    "flood": [("lines/s", "throughput", 0.9)],
}


def ab_sections(rows: List[Row]) -> List[str]:
    """Return a section for each A/B sitting, then one for each pair of versions met in several."""
    out = []
    sittings = group_by(rows, lambda row: (row["tag"],))
    for (tag,), runs in sittings.items():
        out += ab_heading(tag, runs) + ab_table(runs)
    versions: Dict[Tuple[str, ...], List[str]] = {}
    for (tag,), runs in sittings.items():
        versions.setdefault(tuple(version(runs, side) for side in SIDES), []).append(tag)
    for (before, after), tags in versions.items():
        if len(tags) > 1:
            out += [
                "",
                "## A/B, all %d sittings of %s against %s together" % (len(tags), after, before),
                "",
                "Sittings %s, pooled.  Each ran both sides alike, but this machine's speed drifts from"
                " one sitting to the next, so the medians of the pool depend on how many runs each"
                " sitting gave; the per-rep ratios, each of two runs back to back, do not."
                % ", ".join("`%s`" % tag for tag in tags),
                "",
            ]
            out += ab_table([row for tag in tags for row in sittings[(tag,)]])
    return out


def version(runs: List[Row], side: str) -> str:
    """Say which mechat one side of a sitting ran: its commit and the digest of its mechat/."""
    row = next((row for row in runs if row["ab"] == side), {})
    return "%s (mechat/ sha256 %s)" % (row.get("commit"), row.get("source_sha256"))


def ab_heading(tag: str, runs: List[Row]) -> List[str]:
    """Say what one sitting compared and how: the trees, the placement, the load, the commands."""
    first = {row["ab"]: row for row in reversed(runs)}
    trees = "; ".join(
        "%s: `%s` at %s (%s, mechat/ sha256 %s)"
        % (side, row["ab_tree"], row["commit"], row["tree"], row["source_sha256"])
        for side, row in sorted(first.items(), key=lambda item: SIDES.index(item[0]))
    )
    commits = [first[side]["commit"] if side in first else "-" for side in SIDES]
    placements = ", ".join(sorted({row["placement"] for row in runs}))
    return [
        "",
        "## A/B, sitting `%s`: %s against %s, %s" % (tag, commits[1], commits[0], placements),
        "",
        "%s.  Each rep runs both sides back to back, the first side alternating from one rep to the"
        " next.  The sitting's tag is its start time (`%%Y%%m%%dT%%H%%M`, UTC) unless given." % trees,
        "",
        ab_load(runs),
        "",
        "Commands: %s; the server, started in each tree's root so that `python -m` runs that tree's"
        " mechat: %s; the load generator: %s."
        % (quoted({"python " + " ".join(r.get("bench_argv") or []) for r in runs}),
           quoted({with_port(r, r["server_argv"]) for r in runs}),
           quoted({with_port(r, r["loadgen_argv"]) for r in runs if "loadgen_argv" in r})),
        "",
    ]  # fmt: skip


def ab_load(runs: List[Row]) -> str:
    """Say how busy the machine was with others' work during a sitting."""
    foreign = [row["foreign_frac"] for row in runs if row.get("foreign_frac") is not None]
    load_average = [row["load_average"][0] for row in runs if row.get("load_average")]
    quiet = sum(1 for row in runs if (row.get("quiet_wait") or {}).get("reached"))
    redone = sum(1 for row in runs if row.get("attempt", 1) > 1)
    busy = sum(1 for share in foreign if share > BUSY_FOREIGN)
    return (
        "Load from others: the CPU other processes used during each run (`foreign_frac`, in CPUs) %s;"
        " the 1-minute load average as each run began %s (it counts this benchmark's own threads"
        " too); %d of %d runs found the machine idle before starting; %d were redone because others"
        " took more than %g CPU; runs in the figures with others still above that: %d."
        % (spread(foreign, 2), spread(load_average, 2), quiet, len(runs), redone, BUSY_FOREIGN, busy)
    )


def with_port(row: Row, argv: List[str]) -> str:
    """Return a command line with its run's port shown as ``{port}``."""
    return " ".join(argv).replace(str(row["port"]), "{port}")


def quoted(commands: Any) -> str:
    """Return some command lines as inline code, sorted, separated by semicolons."""
    return "; ".join("`%s`" % command for command in sorted(commands))


def ab_table(runs: List[Row]) -> List[str]:
    """Return each placement and config's figures before and after, and how they compare."""
    out = [
        "| placement | config | figure | before | after | after / before | bound | verdict | per rep:"
        " after / before | runs ok, before / after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (placement, config), rows in sorted(
        group_by(runs, lambda row: (row["placement"], row["config"])).items(),
        key=lambda item: (list(PLACEMENTS).index(item[0][0]), list(CONFIGS).index(item[0][1])),
    ):
        sides = [[row for row in rows if row["ab"] == side] for side in SIDES]
        out += [ab_row(placement, config, sides, *figure) for figure in AB_FIGURES[CONFIGS[config][0]]]
    return out


def ab_row(
    placement: str, config: str, sides: List[List[Row]], label: str, metric: str, bound: Optional[float]
) -> str:
    """Return one figure before and after: median [min–max] of each side, the ratio, the verdict.

    The ratio is of the two medians.  "Per rep" pairs the two runs of each
    rep, which ran back to back, and gives the median of their ratios and in
    how many reps after's figure was the higher.
    """
    before, after = ([v for v in map(METRICS[metric], rows) if v is not None] for rows in sides)
    ratio = median_of(after) / median_of(before) if before and after else None  # type: ignore[operator]
    verdict = "-" if bound is None or ratio is None else "met" if ratio >= bound else "missed"
    paired = paired_ratios(sides, METRICS[metric])
    return "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        placement, config, label, spread(before), spread(after), "-" if ratio is None else "%.3f×" % ratio,
        "-" if bound is None else "≥ %g×" % bound, verdict,
        "%.3f×, higher in %d of %d" % (statistics.median(paired), sum(r > 1 for r in paired), len(paired))
        if paired else "-",
        " / ".join("%d/%d" % (sum(1 for r in rows if r.get("ok")), len(rows)) for rows in sides),
    )  # fmt: skip


def paired_ratios(sides: List[List[Row]], metric: Metric) -> List[float]:
    """Return after / before of a figure for each rep that has both sides."""
    before = {(row["tag"], row["rep"]): metric(row) for row in sides[0]}
    ratios = []
    for row in sides[1]:
        mine, theirs = metric(row), before.get((row["tag"], row["rep"]))
        if mine is not None and theirs:
            ratios.append(mine / theirs)
    return ratios


def read_rows(path: str) -> List[Row]:
    """Read every run recorded in a JSONL file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def parse_options() -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--only", default="", help="comma list of configs (default: all; with --ab, all but fanout.py's)"
    )
    parser.add_argument("--servers", default="mechat," + ",".join(REFERENCES))
    parser.add_argument("--placements", default="pinned,unpinned")
    parser.add_argument(
        "--ab", metavar="BEFORE,AFTER", help="run mechat from these two trees instead of the servers"
    )
    parser.add_argument("--timeout", type=float, default=60, help="load generator timeout per run, s")
    parser.add_argument(
        "--quiet-wait", type=float, default=20, help="max wait for an idle machine per run, s"
    )
    parser.add_argument(
        "--foreign-max", type=float, default=BUSY_FOREIGN, help="redo a run once above this foreign CPU"
    )
    parser.add_argument("--tag", default=time.strftime("%Y%m%dT%H%M"))
    parser.add_argument("--jsonl", default=os.path.join(HERE, "results.jsonl"))
    parser.add_argument("--markdown", default=os.path.join(HERE, "results.md"))
    parser.add_argument("--build-dir", default=os.path.join(HERE, "build"))
    parser.add_argument("--summarize", action="store_true", help="only rewrite the markdown")
    options = parser.parse_args()
    if options.ab is not None:
        options.ab = options.ab.split(",")
        if len(options.ab) != 2 or not all(os.path.isdir(tree) for tree in options.ab):
            parser.error("--ab needs two directories, BEFORE,AFTER")
    known = list(CONFIGS) + ([] if options.ab else FANOUT_CONFIGS)
    options.configs = options.only.split(",") if options.only else known
    unknown = set(options.configs) - set(known)
    if unknown:
        parser.error("unknown config %s; the configs are %s" % (", ".join(sorted(unknown)), ", ".join(known)))
    return options


def main() -> None:
    """Parse the command line; run the matrix and/or rewrite the summary."""
    options = parse_options()
    if not options.summarize:
        run_matrix(options)
    write_markdown(read_rows(options.jsonl), options.markdown)


if __name__ == "__main__":
    main()
