"""The comparison table: summary metrics per variant and their deltas against the baseline.

Latencies are in ms, as `vllm bench serve` prints them. Delta = value - baseline value, in the
metric's unit. Relative delta = delta / |baseline| x 100, undefined (None) when the baseline is
0 or missing. Metrics that are themselves percentages (KV usage, prefix-cache hit rate) are shown
with their difference in percentage points, the rest with the relative delta. Cost rows are $/hour
of the variant's GPUs (replicas x TP x DP x the catalog's price per GPU-hour) and $ per million
output tokens at its measured output rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from rllmsim.sweep.pricing import usd_per_million_tokens


@dataclass(frozen=True)
class Metric:
    """One row of the table: where it lives in `summary.json` and how it reads."""

    key: str                 # dotted path into the summary
    label: str
    unit: str = ""
    scale: float = 1.0       # summary value x scale = shown value (seconds -> ms, share -> %)
    better: str = ""         # "higher", "lower" or "" (neither)
    points: bool = False     # a percentage: show the delta in percentage points
    digits: int = 2
    optional: bool = False   # shown only when some variant's summary has it


METRICS: tuple[Metric, ...] = (
    Metric("requests.completed", "Successful requests", digits=0, better="higher"),
    Metric("duration_s", "Benchmark duration", "s", better="lower"),
    Metric("throughput.requests_per_s", "Request throughput", "req/s", better="higher", digits=3),
    Metric("throughput.output_tokens_per_s", "Output token throughput", "tok/s", better="higher", digits=1),
    Metric("goodput.requests_per_s", "Request goodput", "req/s", better="higher", digits=3, optional=True),
    Metric("ttft_s.mean", "Mean TTFT", "ms", 1e3, "lower", digits=1),
    Metric("ttft_s.p50", "Median TTFT", "ms", 1e3, "lower", digits=1),
    Metric("ttft_s.p99", "P99 TTFT", "ms", 1e3, "lower", digits=1),
    Metric("tpot_s.mean", "Mean TPOT", "ms", 1e3, "lower"),
    Metric("tpot_s.p50", "Median TPOT", "ms", 1e3, "lower"),
    Metric("tpot_s.p99", "P99 TPOT", "ms", 1e3, "lower"),
    Metric("itl_s.mean", "Mean ITL", "ms", 1e3, "lower"),
    Metric("itl_s.p99", "P99 ITL", "ms", 1e3, "lower"),
    Metric("e2el_s.mean", "Mean E2EL", "ms", 1e3, "lower", digits=0),
    Metric("e2el_s.p50", "Median E2EL", "ms", 1e3, "lower", digits=0),
    Metric("e2el_s.p99", "P99 E2EL", "ms", 1e3, "lower", digits=0),
    Metric("kv.capacity_blocks", "KV capacity", "blocks", better="higher", digits=0),
    Metric("kv.peak_pct", "KV peak usage", "%", better="", points=True, digits=1),
    Metric("kv.mean_pct", "KV mean usage", "%", better="", points=True, digits=1),
    Metric("kv.cv", "KV usage CV", "", better="", digits=3),
    Metric("preemptions", "Preemptions", "", better="lower", digits=0),
    Metric("stragglers.count", "Stragglers", "", better="lower", digits=0),
    Metric("prefix_cache.hit_rate", "Prefix cache hit rate", "%", 100.0, "higher", points=True, digits=1,
           optional=True),
    Metric("migration.migrations", "Requests migrated", "", digits=0, optional=True),
    Metric("kv_offloading.reloaded_bytes", "Reloaded from CPU tier", "GiB", 2.0**-30, "", optional=True),
    Metric("kv_offloading.recompute_tokens_saved", "Recompute tokens saved", "", better="higher", digits=0,
           optional=True),
    # disaggregated serving (`rllmsim.metrics.disaggregated`): shown when some variant has pools
    Metric("disaggregated.prefill.utilization", "Prefill pool utilisation", "%", 100.0, points=True, digits=1,
           optional=True),
    Metric("disaggregated.decode.utilization", "Decode pool utilisation", "%", 100.0, points=True, digits=1,
           optional=True),
    Metric("disaggregated.prefill.queue_s.mean", "Mean prefill queue", "ms", 1e3, "lower", digits=1, optional=True),
    Metric("disaggregated.decode.kv_wait_s.mean", "Mean wait for decode KV room", "ms", 1e3, "lower", digits=1,
           optional=True),
    Metric("disaggregated.kv_transfer.seconds.mean", "Mean KV transfer", "ms", 1e3, "lower", digits=2,
           optional=True),
    Metric("cost.usd_per_hour", "Cost", "$/hour", better="lower", optional=True),
    Metric("cost.usd_per_million_output_tokens", "Cost per million output tokens", "$", better="lower",
           optional=True),
)


def priced(summary: Mapping[str, Any], usd_per_hour: float | None) -> dict[str, Any]:
    """The summary with a `cost` object for the table: $/hour of the variant's GPUs and $ per
    million output tokens at its measured output rate. Only the table sees it: summary.json keeps
    its schema, so its many readers do not change."""
    if usd_per_hour is None:
        return dict(summary)
    tokens_per_s = lookup(summary, "throughput.output_tokens_per_s") or 0.0
    return {**summary, "cost": {"usd_per_hour": usd_per_hour,
                                "usd_per_million_output_tokens": usd_per_million_tokens(usd_per_hour, tokens_per_s)}}


def lookup(summary: Mapping[str, Any], key: str) -> float | None:
    """The number at a dotted path of a summary, or None when absent or not a finite number."""
    node: Any = summary
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    value = float(node)
    return value if math.isfinite(value) else None


def delta_frame(summaries: Mapping[str, Mapping[str, Any]], metrics: Sequence[Metric] = METRICS) -> pd.DataFrame:
    """Long table, one row per (metric, variant): value, delta and relative delta vs the first variant.

    `summaries` maps variant name -> run summary, in order; the first is the baseline. Values are
    in the metric's shown unit (scale applied).
    """
    names = list(summaries)
    if not names:
        raise ValueError("no variants to compare")
    base = names[0]
    rows = []
    for metric in metrics:
        values = {n: lookup(summaries[n], metric.key) for n in names}
        if metric.optional and all(v is None for v in values.values()):
            continue
        shown = {n: None if v is None else v * metric.scale for n, v in values.items()}
        ref = shown[base]
        for n in names:
            v = shown[n]
            delta = None if v is None or ref is None else v - ref
            rel = None if delta is None or ref == 0 else 100.0 * delta / abs(ref)
            rows.append({"metric": metric.key, "label": metric.label, "unit": metric.unit,
                         "better": metric.better, "variant": n, "baseline": base, "value": v,
                         "delta": delta, "delta_pct": rel})
    return pd.DataFrame(rows, columns=["metric", "label", "unit", "better", "variant", "baseline", "value",
                                       "delta", "delta_pct"])


def _metric(key: str, metrics: Sequence[Metric]) -> Metric:
    return next(m for m in metrics if m.key == key)


def format_value(value: float | None, metric: Metric) -> str:
    if value is None:
        return "-"
    return f"{value:,.{metric.digits}f}"


def format_delta(delta: float | None, rel: float | None, metric: Metric) -> str:
    """`+9.1%`, `+5.1pp`, or the plain difference when the baseline is zero."""
    if delta is None:
        return ""
    if metric.points:
        return f"{delta:+.1f}pp"
    if rel is not None:
        return f"{rel:+.1f}%"
    return f"{delta:+,.{metric.digits}f}"


def format_table(frame: pd.DataFrame, metrics: Sequence[Metric] = METRICS, title: str = "") -> str:
    """The console table: a row per metric, a column per variant, deltas beside non-baseline values."""
    names = list(dict.fromkeys(frame["variant"]))
    base = names[0]
    header = ["Metric"] + [f"{n} (baseline)" if n == base and n != "baseline" else n for n in names]
    body: list[list[str]] = []
    for key, group in frame.groupby("metric", sort=False):
        metric = _metric(str(key), metrics)
        label = f"{metric.label} ({metric.unit})" if metric.unit else metric.label
        cells = [label]
        for _, row in group.set_index("variant").loc[names].iterrows():
            text = format_value(_opt(row["value"]), metric)
            if row.name != base:
                delta = format_delta(_opt(row["delta"]), _opt(row["delta_pct"]), metric)
                text = f"{text} ({delta})" if delta else text
            cells.append(text)
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                    for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "=" * max(sum(widths) + 2 * (len(widths) - 1), len(title))
    out = [rule]
    if title:
        out += [title, rule]
    out += [line(header), "-" * len(rule)]
    out += [line(cells) for cells in body]
    out.append(rule)
    return "\n".join(out)


def _opt(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
