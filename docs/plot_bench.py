"""Draw the benchmark results for docs/performance.rst (run by Sphinx's plot directive).

Reads ``bench/results.jsonl`` (committed raw data) through the same
median code as ``bench/run_matrix.py``, and draws, from its latest sitting,
for each placement, every server's throughput as a fraction of
``ref-epoll``'s, with issue 6's target for mechat marked on each config.

Standalone: ``python docs/plot_bench.py [out.png]``.
"""

import os
import sys

import matplotlib.pyplot as plt

# Sphinx's plot directive runs this file without __file__, with sys.argv[0] set to it.
HERE = os.path.dirname(os.path.abspath(globals().get("__file__") or sys.argv[0]))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import run_matrix  # noqa: E402  (bench/ is not a package)

SERVERS = [
    ("mechat", "mechat", "tab:red"),
    ("asyncio", "ref_asyncio", "tab:blue"),
    ("threading", "ref_threading", "tab:gray"),
    ("epoll", "ref-epoll (C)", "black"),
]
THROUGHPUT_TARGET = {
    config: bound
    for config, targets in run_matrix.TARGETS.items()
    for _, metric, bound, kind in targets
    if metric == "throughput"
}


RESULTS = os.path.join(HERE, "..", "bench", "results.jsonl")


def draw(path=RESULTS):
    """Return a figure with one panel per placement."""
    summary = run_matrix.medians(run_matrix.latest_sitting(run_matrix.read_rows(path)))
    configs = list(run_matrix.CONFIGS)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / len(SERVERS)
    for ax, placement in zip(axes, run_matrix.PLACEMENTS):
        for i, (server, label, colour) in enumerate(SERVERS):
            ratios = []
            for config in configs:
                cell = summary.get((placement, config, server), {})
                epoll = summary.get((placement, config, "epoll"), {})
                ok = cell.get("throughput") and epoll.get("throughput")
                ratios.append(cell["throughput"] / epoll["throughput"] if ok else 0)
            xs = [x + (i - 1.5) * width for x in range(len(configs))]
            ax.bar(xs, ratios, width, label=label, color=colour)
        for x, config in enumerate(configs):
            target = THROUGHPUT_TARGET.get(config)
            if target:
                ax.hlines(target, x - 0.45, x + 0.45, colors="tab:red", linestyles="dashed", linewidth=1)
        ax.set_yscale("log")
        ax.set_xticks(range(len(configs)))
        ax.set_xticklabels(configs)
        ax.set_title(placement)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("throughput / ref-epoll (log scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(SERVERS), fontsize="small")
    fig.suptitle("Throughput relative to the C epoll server (dashed: issue 6 target for mechat)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


if __name__ == "__main__":
    figure = draw()
    if len(sys.argv) > 1:
        figure.savefig(sys.argv[1], dpi=100)
    else:
        plt.show()
