"""Chart of a ``benchmarks.compare`` results file (runs in ``benchmarks/.peers/plot``).

benchmarks/.peers/plot/bin/python benchmarks/plot.py RESULTS.json OUT.png
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib  # type: ignore[import-not-found]

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # type: ignore[import-not-found]

PANELS: list[tuple[str, str, list[tuple[str, str, str]]]] = [
    (
        "Throughput (jobs/s, higher is better)",
        "jobs/s",
        [
            ("bulk", "jobs_s", "bulk\nenqueue"),
            ("single", "jobs_s", "single\nenqueue"),
            ("drain", "jobs_s", "drain\n1 worker"),
            ("drain2", "jobs_s", "drain\n2 workers"),
            ("sustained", "jobs_s", "sustained\n3 min"),
            ("bloat", "hist_jobs_s", "drain with\nhistory"),
        ],
    ),
    (
        "Latency, enqueue → task start (ms, lower is better)",
        "ms",
        [
            ("latency", "p50_ms", "p50"),
            ("latency", "p99_ms", "p99"),
            ("bloat", "hist_p50_ms", "p50 with\nhistory"),
            ("bloat", "hist_p99_ms", "p99 with\nhistory"),
        ],
    ),
    (
        "Worker RSS (MB, lower better)",
        "MB",
        [("bloat", "rss_first", "after few jobs"), ("bloat", "rss_last", "after many jobs")],
    ),
    (
        "Storage with history (MB, lower better)",
        "MB",
        [("bloat", "table_mb", "tables"), ("bloat", "index_mb", "indexes")],
    ),
]
COLORS = {
    "jobqueue": "#2b6cb0",
    "procrastinate": "#dd6b20",
    "pgqueuer": "#38a169",
    "celery": "#805ad5",
}


def value(medians: dict[str, Any], workload: str, system: str, metric: str) -> float:
    metrics = medians.get(workload, {}).get(system, {})
    if metric in ("rss_first", "rss_last"):
        marks = sorted(
            int(k.rsplit("_", 1)[1]) for k in metrics if k.startswith("rss_mb_") and k[7:].isdigit()
        )
        if not marks:
            return 0.0
        metric = f"rss_mb_{marks[0] if metric == 'rss_first' else marks[-1]}"
    found = metrics.get(metric)
    return float(found) if isinstance(found, (int, float)) else 0.0


def main(source: str, target: str) -> None:
    with open(source) as handle:
        data = json.load(handle)
    medians, systems = data["medians"], data["context"]["systems"]
    panels = []  # only the bars some system has a figure for (a partial run has gaps)
    for title, unit, wanted in PANELS:
        bars = [b for b in wanted if any(value(medians, b[0], s, b[1]) for s in systems)]
        if bars:
            panels.append((title, unit, bars))
    ratios = [len(bars) + 1 for _, _, bars in panels]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.2 * len(panels) + sum(ratios), 5.2), width_ratios=ratios
    )
    axes = list(axes) if len(panels) > 1 else [axes]
    width = 0.8 / len(systems)
    for ax, (title, unit, bars) in zip(axes, panels, strict=True):
        for index, system in enumerate(systems):
            xs = [i + (index - (len(systems) - 1) / 2) * width for i in range(len(bars))]
            ys = [value(medians, w, system, m) for w, m, _ in bars]
            ax.bar(xs, ys, width, label=system, color=COLORS.get(system))
        ax.set_xticks(range(len(bars)), [label for _, _, label in bars], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        if unit == "jobs/s":
            ax.set_yscale("log")
            limits = medians.get("pgbench", {}).get("pgbench", {})
            for key, style in (("single_update", ":"), ("batch_update", "--")):
                if isinstance(limits.get(key), (int, float)):
                    ax.axhline(limits[key], color="grey", linestyle=style, linewidth=1)
                    ax.annotate(
                        f"pgbench {key.replace('_', ' ')}",
                        (len(bars) - 0.6, limits[key]),
                        fontsize=7,
                        color="grey",
                        va="bottom",
                        ha="right",
                    )
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=len(systems), fontsize=9)
    context = data["context"]
    fig.suptitle(
        f"jobqueue vs peers: PostgreSQL {context['postgres']}, {context['cpu']}, "
        f"medians of {context['reps']} repetition(s)",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
