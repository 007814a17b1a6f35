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

Raw results are appended to ``bench/results.jsonl``, one JSON object per run
(with the exact server and load generator argv); medians and ratios to
``ref-epoll`` go to ``bench/results.md``.  ``--summarize`` only rewrites the
table from the JSONL file.

    python bench/run_matrix.py --reps 3
    python bench/run_matrix.py --reps 1 --only pp100,sc5000 --placements pinned
    python bench/run_matrix.py --summarize
"""

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

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
PLACEMENTS = {"pinned": ("split", True), "unpinned": ("none", False)}
FLOOD_WINDOW = 256  # lines in flight per connection, as in the kit's matrix

Row = Dict[str, Any]


def kit_runner(build_dir: str) -> Any:
    """Import the kit's run.py, building its C tools into ``build_dir`` (the kit is read-only)."""
    os.environ["MECHAT_BENCH_BUILD"] = build_dir
    sys.path.insert(0, KIT)
    import run  # type: ignore[import-not-found]

    run.ensure_built()
    return run


def run_one(kit: Any, server: str, config: str, placement: str, options: argparse.Namespace) -> Row:
    """Run one server in one config and placement; redo it once if the machine was busy."""
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
        row: Row = kit.run_once(args)
        row["attempt"] = attempt
        if (row.get("foreign_frac") or 0) <= options.foreign_max:
            break
    row.update(config=config, srv=server, placement=placement)
    return row


def run_matrix(options: argparse.Namespace) -> None:
    """Run every (rep, placement, config, server), appending each result as it comes."""
    kit = kit_runner(options.build_dir)
    configs = options.only.split(",") if options.only else list(CONFIGS)
    plan = [
        (rep, placement, config, server)
        for rep in range(1, options.reps + 1)
        for placement in options.placements.split(",")
        for config in configs
        for server in options.servers.split(",")
    ]
    started = time.monotonic()
    with open(options.jsonl, "a") as out:
        for number, (rep, placement, config, server) in enumerate(plan, 1):
            row = run_one(kit, server, config, placement, options)
            row.update(rep=rep, tag=options.tag)
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            out.flush()
            print(
                "[%d/%d %4.0fs] %s" % (number, len(plan), time.monotonic() - started, brief(row)), flush=True
            )


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


def medians(rows: List[Row]) -> Dict[Tuple[str, str, str], Dict[str, Any]]:
    """Group runs by (placement, config, server) and take the median of each metric."""
    groups: Dict[Tuple[str, str, str], List[Row]] = {}
    for row in rows:
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


def write_markdown(rows: List[Row], path: str) -> None:
    """Write the targets table and the medians table for each placement."""
    summary = medians(rows)
    commands = sorted(
        {
            " ".join(r["server_argv"]).replace(str(r["port"]), "{port}")
            for r in rows
            if r.get("srv") == "mechat" and "server_argv" in r
        }
    )
    reps = max((r.get("rep", 1) for r in rows), default=0)
    out = [
        "# mechat benchmark results",
        "",
        "Written by `bench/run_matrix.py` from `bench/results.jsonl` (%d runs, up to %d repetitions;"
        " medians).  Ratios are to `ref-epoll` measured in the same sitting.  Load generator: the"
        " shared kit's C `mechat-load` (`run.py`), flood window %d lines." % (len(rows), reps, FLOOD_WINDOW),
        "",
        "mechat server command (port substituted per run): " + "; ".join("`%s`" % c for c in commands),
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
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def read_rows(path: str) -> List[Row]:
    """Read every run recorded in a JSONL file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> None:
    """Parse the command line; run the matrix and/or rewrite the summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="", help="comma list of configs (default: all)")
    parser.add_argument("--servers", default="mechat," + ",".join(REFERENCES))
    parser.add_argument("--placements", default="pinned,unpinned")
    parser.add_argument("--timeout", type=float, default=60, help="load generator timeout per run, s")
    parser.add_argument(
        "--quiet-wait", type=float, default=20, help="max wait for an idle machine per run, s"
    )
    parser.add_argument(
        "--foreign-max", type=float, default=0.25, help="redo a run once above this foreign CPU"
    )
    parser.add_argument("--tag", default=time.strftime("%Y%m%dT%H%M"))
    parser.add_argument("--jsonl", default=os.path.join(HERE, "results.jsonl"))
    parser.add_argument("--markdown", default=os.path.join(HERE, "results.md"))
    parser.add_argument("--build-dir", default=os.path.join(HERE, "build"))
    parser.add_argument("--summarize", action="store_true", help="only rewrite the markdown")
    options = parser.parse_args()
    if not options.summarize:
        run_matrix(options)
    write_markdown(read_rows(options.jsonl), options.markdown)


if __name__ == "__main__":
    main()
