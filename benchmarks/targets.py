"""The performance issue's targets, judged from a run's medians (``report``
puts the table on the page). Each bound is computed from the same run: a
peer's figure, pgbench's, or jobqueue's own on an empty table."""

from __future__ import annotations

from typing import Any

from benchmarks import report

Summary = dict[str, dict[str, dict[str, Any]]]
# (target, measured, bound, comparison): measured must be >= or <= bound
Check = tuple[str, float | None, float | None, str]


def figure(summary: Summary, workload: str, system: str, metric: str) -> float | None:
    value = summary.get(workload, {}).get(system, {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def _best(summary: Summary, workload: str, metric: str, low: bool = False) -> float | None:
    """The best peer's figure (highest, or lowest with ``low``)."""
    values = [figure(summary, workload, p, metric) for p in report.PEERS]
    present = [v for v in values if v is not None]
    if not present:
        return None
    return min(present) if low else max(present)


def targets_section(summary: Summary, ctx: dict[str, Any]) -> list[str]:
    """Each target of the performance issue, judged from this run's medians; the ones
    judged against a peer are marked unless the peers had autovacuum."""

    def mine(workload: str, metric: str) -> float | None:
        return figure(summary, workload, "jobqueue", metric)

    raw = summary.get("pgbench", {}).get("pgbench", {})
    batched = max(
        (v for k, v in raw.items() if k.startswith("batch_") and isinstance(v, (int, float))),
        default=None,
    )

    def peers_times(target: str, workload: str, metric: str, factor: float) -> Check:
        """jobqueue's figure against ``factor`` times the best peer's."""
        best = _scaled(_best(summary, workload, metric), factor)
        return (target, mine(workload, metric), best, ">=")

    checks: list[Check] = [
        # (target, measured, bound, comparison) -- measured must be >= or <= bound
        peers_times("drain, 1 worker ≥ 2x the best peer", "drain", "jobs_s", 2),
        peers_times("drain, 2 workers ≥ 2x the best peer (2 workers)", "drain2", "jobs_s", 2),
        (
            "drain, 1 worker ≥ ½ raw batched limit",
            mine("drain", "jobs_s"),
            _scaled(batched, 0.5),
            ">=",
        ),
        (
            "drain, 2 workers ≥ ½ raw batched limit",
            mine("drain2", "jobs_s"),
            _scaled(batched, 0.5),
            ">=",
        ),
        (
            "sustained: last 30 s ≥ 90 % of first 30 s",
            mine("sustained", "last_jobs_s"),
            _scaled(mine("sustained", "first_jobs_s"), 0.9),
            ">=",
        ),
        (
            "latency p50 ≤ best peer",
            mine("latency", "p50_ms"),
            _best(summary, "latency", "p50_ms", low=True),
            "<=",
        ),
        (
            "latency p99 ≤ best peer",
            mine("latency", "p99_ms"),
            _best(summary, "latency", "p99_ms", low=True),
            "<=",
        ),
        ("latency p50 ≤ 2 ms", mine("latency", "p50_ms"), 2.0, "<="),
        ("latency p99 ≤ 3 ms", mine("latency", "p99_ms"), 3.0, "<="),
        peers_times("bulk enqueue, one call ≥ 1.5x the best peer", "bulk", "jobs_s", 1.5),
        peers_times(
            "bulk enqueue, calls of 1,000 ≥ 1.5x the best peer", "bulk", "chunk_jobs_s", 1.5
        ),
        peers_times("single enqueue, 1 producer ≥ 1.5x the best peer", "single", "jobs_s", 1.5),
        (
            "single enqueue ≥ 75 % of pgbench's one-row insert (same clients)",
            mine("single", "jobs_s"),
            _scaled(raw.get("single_insert"), 0.75),
            ">=",
        ),
        (
            "bloat: drain with history ≥ 90 % of empty",
            mine("bloat", "hist_jobs_s"),
            _scaled(mine("bloat", "empty_jobs_s"), 0.9),
            ">=",
        ),
        (
            "bloat: claim latency p50 with history ≤ 110 % of empty",
            mine("bloat", "hist_db_p50_ms"),
            _scaled(mine("bloat", "empty_db_p50_ms"), 1.1),
            "<=",
        ),
        (
            "bloat: claim latency p99 with history ≤ 110 % of empty",
            mine("bloat", "hist_db_p99_ms"),
            _scaled(mine("bloat", "empty_db_p99_ms"), 1.1),
            "<=",
        ),
    ]
    marks = sorted(
        int(k.rsplit("_", 1)[1])
        for k in summary.get("bloat", {}).get("jobqueue", {})
        if k.startswith("rss_mb_") and k.rsplit("_", 1)[1].isdigit()
    )
    if marks:
        checks.append(
            (
                f"memory: RSS after {marks[-1]:,} jobs ≤ 110 % of after {marks[0]:,}",
                mine("bloat", f"rss_mb_{marks[-1]}"),
                _scaled(mine("bloat", f"rss_mb_{marks[0]}"), 1.1),
                "<=",
            )
        )
    out = ["", f"## Targets, judged from this run ({report.server_label(ctx)})", ""]
    mark = "" if report.autovacuum(ctx) else " (*)"
    if mark and any("peer" in target for target, *_ in checks):
        out += [
            "(*) Judged against the best peer, on a server "
            + (
                "with autovacuum off: "
                if report.autovacuum(ctx) is False
                else "whose autovacuum setting the run did not record; if it was off, "
            )
            + f"{report.AUTOVACUUM_WARNING}.",
            "",
        ]
    out += ["| target | jobqueue | bound | met |", "|---|---:|---:|---|"]
    for target, measured, bound, comparison in checks:
        if measured is None or bound is None:
            out.append(f"| {target} | {_num(measured)} | {_num(bound)} | not measured |")
            continue
        met = measured >= bound if comparison == ">=" else measured <= bound
        verdict = ("yes" if met else "**no**") + (mark if "peer" in target else "")
        out.append(f"| {target} | {_num(measured)} | {_num(bound)} | {verdict} |")
    return out


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _num(value: float | None) -> str:
    if value is None:
        return report.NA
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
