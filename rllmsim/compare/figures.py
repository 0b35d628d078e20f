"""The comparison page: one HTML file (plotly.js inlined unless asked otherwise) with the delta table,
KV-cache usage, running and waiting sequences over time, and latency CDFs per variant.

Timelines are binned: each replica's timeline rows are integrated over time (a row carries its
block-seconds exactly; running and waiting counts hold over the row), averaged per bin and pooled
over replicas. That keeps a page for a million-step run small without inventing samples.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from rllmsim.compare.table import METRICS, Metric, format_delta, format_value
from rllmsim.report.html import plotlyjs_tag
from rllmsim.report.latency import latencies

if TYPE_CHECKING:
    from rllmsim.compare.run import Comparison

TIME_BINS = 600
CDF_POINTS = 400
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22")


def binned_mean(timeline: pd.DataFrame, column: str, edges: np.ndarray) -> np.ndarray:
    """Time-average of a quantity over each bin [edges[i], edges[i+1]), summed over replicas.

    `column` "kv_blocks" uses each row's exact block-seconds; other columns hold their row-start
    value for the row's duration. Time outside every row counts as zero (an idle replica).
    """
    total = np.zeros(len(edges) - 1)
    if timeline.empty:
        return total
    for _, rows in timeline.groupby("replica", sort=True):
        start = rows["start_s"].to_numpy(float)
        end = rows["end_s"].to_numpy(float)
        width = np.maximum(end - start, 0.0)
        area = rows["kv_block_seconds"].to_numpy(float) if column == "kv_blocks" \
            else rows[column].to_numpy(float) * width
        cum = np.concatenate([[0.0], np.cumsum(area)])
        # integral I(t) is piecewise linear: flat across gaps, rising across each row
        knots_t = np.empty(2 * len(start))
        knots_v = np.empty(2 * len(start))
        knots_t[0::2], knots_t[1::2] = start, end
        knots_v[0::2], knots_v[1::2] = cum[:-1], cum[1:]
        integral = np.interp(edges, knots_t, knots_v, left=0.0, right=cum[-1])
        total += np.diff(integral)
    return total / np.diff(edges)


def _cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.sort(values[np.isfinite(values)])
    if len(values) == 0:
        return values, values
    probs = np.linspace(0.0, 1.0, min(CDF_POINTS, len(values)))
    return np.quantile(values, probs), probs


@dataclass(frozen=True)
class VariantRun:
    """What the page draws of one variant: its summary and its requests and timeline tables, from
    a comparison in memory or from a compare directory's runs/NAME/ (written with --save-runs)."""

    name: str
    summary: Mapping[str, Any]
    requests: pd.DataFrame
    timeline: pd.DataFrame

    @property
    def capacity_blocks(self) -> int:
        """KV blocks of every replica together (the summary's capacity is per replica)."""
        replicas = self.summary.get("config", {}).get("deployment", {}).get("replicas", 1)
        return int(self.summary.get("kv", {}).get("capacity_blocks", 0)) * int(replicas)


def build_figure(runs: Sequence[VariantRun]) -> go.Figure:
    fig = make_subplots(
        rows=4, cols=2, specs=[[{"colspan": 2}, None], [{}, {}], [{}, {}], [{}, {}]],
        subplot_titles=("KV-cache usage (% of capacity, binned time average)", "Running sequences",
                        "Waiting requests", "TTFT CDF", "TPOT CDF", "E2E latency CDF",
                        "Output token throughput"),
        vertical_spacing=0.07, horizontal_spacing=0.08,
    )
    horizon = max((float(run.timeline["end_s"].max()) for run in runs if len(run.timeline)), default=0.0)
    edges = np.linspace(0.0, horizon, TIME_BINS + 1) if horizon > 0 else np.array([0.0, 1.0])
    mids = 0.5 * (edges[:-1] + edges[1:])
    for i, run in enumerate(runs):
        color = PALETTE[i % len(PALETTE)]
        name, timeline = run.name, run.timeline
        kv_pct = 100.0 * binned_mean(timeline, "kv_blocks", edges) / max(run.capacity_blocks, 1)
        common = dict(name=name, legendgroup=name, line=dict(color=color, width=1.5))
        fig.add_trace(go.Scatter(x=mids, y=kv_pct, mode="lines", showlegend=True, **common), row=1, col=1)
        for col, column in ((1, "running"), (2, "waiting")):
            fig.add_trace(go.Scatter(x=mids, y=binned_mean(timeline, column, edges), mode="lines",
                                     showlegend=False, **common), row=2, col=col)
        lat = latencies(run.requests)
        for (row, col), values in (((3, 1), lat["TTFT"]), ((3, 2), lat["TPOT"]), ((4, 1), lat["E2EL"])):
            x, y = _cdf(values.to_numpy(float) * 1e3)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", showlegend=False, **common), row=row, col=col)
        fig.add_trace(go.Bar(x=[name], y=[run.summary["throughput"]["output_tokens_per_s"]], name=name,
                             legendgroup=name, marker_color=color, showlegend=False), row=4, col=2)
    for row, col, title in ((1, 1, "time (s)"), (2, 1, "time (s)"), (2, 2, "time (s)"), (3, 1, "TTFT (ms)"),
                            (3, 2, "TPOT (ms)"), (4, 1, "E2EL (ms)")):
        fig.update_xaxes(title_text=title, row=row, col=col)
    for row, col in ((3, 1), (3, 2), (4, 1)):
        fig.update_yaxes(title_text="share of requests", range=[0, 1], row=row, col=col)
    fig.update_xaxes(type="log", row=3, col=1)
    fig.update_yaxes(title_text="%", row=1, col=1)
    fig.update_yaxes(title_text="tok/s", row=4, col=2)
    fig.update_layout(height=1400, template="plotly_white", legend=dict(orientation="h", y=1.04),
                      margin=dict(t=80, l=60, r=30, b=50))
    return fig


def _table_html(frame: pd.DataFrame, metrics: Sequence[Metric]) -> str:
    names = list(dict.fromkeys(frame["variant"]))
    by_key = {m.key: m for m in metrics}
    head = "".join(f"<th>{html.escape(n)}{' (baseline)' if i == 0 and n != 'baseline' else ''}</th>"
                   for i, n in enumerate(names))
    rows = []
    for key, group in frame.groupby("metric", sort=False):
        metric = by_key[str(key)]
        group = group.set_index("variant").loc[names]
        cells = []
        for i, (name, row) in enumerate(group.iterrows()):
            value = format_value(None if pd.isna(row["value"]) else float(row["value"]), metric)
            delta = "" if i == 0 else format_delta(None if pd.isna(row["delta"]) else float(row["delta"]),
                                                   None if pd.isna(row["delta_pct"]) else float(row["delta_pct"]),
                                                   metric)
            tone = _tone(metric, row["delta"]) if delta else ""
            extra = f' <span class="d {tone}">{html.escape(delta)}</span>' if delta else ""
            cells.append(f"<td>{html.escape(value)}{extra}</td>")
        label = f"{metric.label} ({metric.unit})" if metric.unit else metric.label
        rows.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>")
    return f"<table><thead><tr><th>Metric</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _tone(metric: Metric, delta) -> str:
    if pd.isna(delta) or delta == 0 or not metric.better:
        return ""
    return "good" if (delta > 0) == (metric.better == "higher") else "bad"


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:12px 0 24px}
th,td{padding:4px 10px;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
thead th{border-bottom:2px solid #999} tbody th{text-align:left;font-weight:500}
.d{color:#666;font-size:12px} .d.good{color:#18794e} .d.bad{color:#b42318}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
"""


def comparison_html(comparison: "Comparison", metrics: Sequence[Metric] = METRICS, plotlyjs: str = "inline") -> str:
    """The page of a comparison in memory (what `rllmsim compare` writes as compare.html)."""
    legend = [(v.name, v.flags, v.deployment.num_gpu_blocks) for v in comparison.variants]
    runs = [VariantRun(name, run.summary, run.requests, run.result.timeline) for name, run in comparison.runs.items()]
    return comparison_page(comparison.title(), legend, comparison.table, runs, metrics, plotlyjs)


def comparison_page(title: str, legend: Sequence[tuple[str, Sequence[str], int]], table: pd.DataFrame,
                    runs: Sequence[VariantRun], metrics: Sequence[Metric] = METRICS, plotlyjs: str = "inline") -> str:
    """The whole page as one string: the delta table, then the figures when `runs` are given.
    `legend` is (name, flags, KV blocks per replica) per variant."""
    plot = pio.to_html(build_figure(runs), include_plotlyjs=False, full_html=False,
                       config={"displaylogo": False}) if runs else ""
    items = "".join(
        f"<li><b>{html.escape(name)}</b>: <code>{html.escape(' '.join(flags) or '(shared deployment)')}</code>"
        f" &mdash; {blocks} KV blocks per replica</li>" for name, flags, blocks in legend)
    note = "" if runs else ("<p>No figures: the variants' runs were not saved (rerun "
                            "<code>rllmsim compare</code> with <code>--save-runs</code>).</p>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>rllmsim compare</title>"
            f"<style>{_STYLE}</style>{plotlyjs_tag(plotlyjs) if runs else ''}</head><body><h2>rllmsim compare</h2>"
            f"<p>{html.escape(title)}</p><ul>{items}</ul>{_table_html(table, metrics)}{note}{plot}</body></html>")
