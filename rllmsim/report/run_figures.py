"""Figures of one run: KV usage per replica, running/waiting counts, latency CDFs, a request Gantt
that shows stragglers, and a per-dataset breakdown.

Inputs are the run directory's tables (`requests.parquet`, `timeline.parquet`) and its summary.
Large runs are thinned for the browser: timelines to a fixed number of time bins per replica
(keeping each bin's peak, so no KV spike disappears), CDFs to quantiles, the Gantt to a sample
that keeps every straggler.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rllmsim.metrics.stragglers import straggler_mask
from rllmsim.report.html import Section, table_html
from rllmsim.report.latency import latencies
from rllmsim.report.stragglers import straggler_section
from rllmsim.report.workload_figures import workload_section

MAX_POINTS = 1500  # per replica line
MAX_GANTT = 800
MAX_REPLICA_LINES = 8  # more replicas are drawn but hidden until clicked in the legend
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def kv_envelope(rows: pd.DataFrame, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(times, blocks) of one replica's KV usage: each timeline row contributes its start level and
    its peak at its end; above `max_points` rows, the peak per time bin."""
    start = rows["start_s"].to_numpy(float)
    end = rows["end_s"].to_numpy(float)
    lo = rows["kv_blocks_start"].to_numpy(float)
    hi = rows["kv_blocks_peak"].to_numpy(float)
    if len(rows) * 2 <= max_points:
        times = np.column_stack([start, end]).ravel()
        blocks = np.column_stack([lo, hi]).ravel()
        return times, blocks
    edges = np.linspace(start.min(), end.max(), max_points + 1)
    which = np.clip(np.searchsorted(edges, start, side="right") - 1, 0, max_points - 1)
    peak = np.full(max_points, np.nan)
    np.fmax.at(peak, which, hi)
    keep = ~np.isnan(peak)
    return ((edges[:-1] + edges[1:]) / 2)[keep], peak[keep]


def step_series(rows: pd.DataFrame, column: str, grid: np.ndarray) -> np.ndarray:
    """A timeline column as a step function sampled on `grid` (0 between rows and after the end)."""
    start = rows["start_s"].to_numpy(float)
    end = rows["end_s"].to_numpy(float)
    values = rows[column].to_numpy(float)
    index = np.searchsorted(start, grid, side="right") - 1
    valid = index >= 0
    out = np.zeros(len(grid))
    out[valid] = np.where(grid[valid] <= end[index[valid]], values[index[valid]], 0.0)
    return out


def kv_figure(timeline: pd.DataFrame, capacity: int) -> go.Figure:
    fig = go.Figure()
    replicas = sorted(timeline["replica"].unique())
    for i, replica in enumerate(replicas):
        rows = timeline[timeline["replica"] == replica].sort_values("start_s", kind="stable")
        times, blocks = kv_envelope(rows)
        fig.add_trace(go.Scatter(x=times, y=blocks, mode="lines", name=f"replica {replica}",
                                 line={"width": 1.2, "color": COLORS[i % len(COLORS)]},
                                 visible=True if i < MAX_REPLICA_LINES else "legendonly"))
    if capacity:
        fig.add_hline(y=capacity, line={"color": "#d62728", "dash": "dash"},
                      annotation_text=f"capacity {capacity:,} blocks", annotation_position="top left")
    fig.update_layout(title="KV cache blocks in use per replica", xaxis_title="time (s)",
                      yaxis_title="blocks", height=420, legend={"orientation": "h", "y": -0.2})
    return fig


def counts_figure(timeline: pd.DataFrame) -> go.Figure:
    t0, t1 = float(timeline["start_s"].min()), float(timeline["end_s"].max())
    grid = np.linspace(t0, t1, MAX_POINTS)
    running = np.zeros(len(grid))
    waiting = np.zeros(len(grid))
    for _, rows in timeline.groupby("replica"):
        rows = rows.sort_values("start_s", kind="stable")
        running += step_series(rows, "running", grid)
        waiting += step_series(rows, "waiting", grid)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=grid, y=running, mode="lines", name="running", line={"shape": "hv"}))
    fig.add_trace(go.Scatter(x=grid, y=waiting, mode="lines", name="waiting", line={"shape": "hv"}))
    fig.update_layout(title="Running and waiting requests (all replicas)", xaxis_title="time (s)",
                      yaxis_title="requests", height=380)
    return fig


def _cdf(values: np.ndarray, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    values = np.sort(values[np.isfinite(values)])
    if len(values) <= points:
        return values, np.arange(1, len(values) + 1) / max(len(values), 1)
    q = np.linspace(0, 1, points)
    return np.quantile(values, q), q


def cdf_figure(requests: pd.DataFrame) -> go.Figure:
    lat = latencies(requests)
    done = requests[requests["finish_s"].notna()]
    datasets = sorted(done["dataset"].unique())
    fig = make_subplots(rows=1, cols=3, subplot_titles=("TTFT", "TPOT", "E2EL"))
    for col, name in enumerate(("TTFT", "TPOT", "E2EL"), start=1):
        groups = [("all", lat[name])] + ([(d, lat[name][done["dataset"] == d]) for d in datasets]
                                        if len(datasets) > 1 else [])
        for j, (label, series) in enumerate(groups):
            x, y = _cdf(series.to_numpy(float))
            fig.add_trace(go.Scatter(x=x * 1e3, y=y, mode="lines", name=label, legendgroup=label,
                                     showlegend=col == 1, line={"color": COLORS[j % len(COLORS)]}),
                          row=1, col=col)
        fig.update_xaxes(title_text=f"{name} (ms)", row=1, col=col)
    fig.update_yaxes(title_text="fraction of requests", row=1, col=1)
    fig.update_layout(title="Latency CDFs", height=400)
    return fig


def gantt_figure(requests: pd.DataFrame, factor: float) -> tuple[go.Figure, str]:
    """Queueing (arrival to first schedule), prefill (to first token) and decode (to finish) of each
    request, one bar per request in arrival order; stragglers in red."""
    done = requests[requests["finish_s"].notna()].copy()
    done["straggler"] = straggler_mask(done, factor) if len(done) else []
    note = f"{len(done):,} completed requests"
    if len(done) > MAX_GANTT:
        strag = done[done["straggler"]]
        if len(strag) > MAX_GANTT // 2:
            strag = strag.sample(MAX_GANTT // 2, random_state=0)
        rest = done[~done["straggler"]].sample(MAX_GANTT - len(strag), random_state=0)
        done = pd.concat([strag, rest])
        note = (f"a sample of {len(done):,} of {note} (every straggler up to {MAX_GANTT // 2}), "
                "in arrival order")
    done = done.sort_values("arrival_s", kind="stable")
    y = np.arange(len(done))
    queue = (done["first_scheduled_s"] - done["arrival_s"]).fillna(0).to_numpy()
    prefill = (done["first_token_s"] - done["first_scheduled_s"]).fillna(0).to_numpy()
    decode = (done["finish_s"] - done["first_token_s"]).to_numpy()
    strag = done["straggler"].to_numpy(bool)
    hover = [f"request {r}<br>{d}<br>prompt {p}, output {o}<br>E2EL {1e3 * e:,.0f} ms"
             for r, d, p, o, e in zip(done["request_id"], done["dataset"], done["prompt_tokens"],
                                      done["output_tokens"], done["e2el_s"])]
    fig = go.Figure()
    fig.add_trace(go.Bar(y=y, x=queue, base=done["arrival_s"].to_numpy(), orientation="h", name="waiting",
                         marker_color="#c7c7c7", hovertext=hover, hoverinfo="text"))
    fig.add_trace(go.Bar(y=y, x=prefill, base=done["first_scheduled_s"].fillna(done["arrival_s"]).to_numpy(),
                         orientation="h", name="prefill", marker_color="#ff7f0e", hovertext=hover,
                         hoverinfo="text"))
    fig.add_trace(go.Bar(y=y[~strag], x=decode[~strag], base=done["first_token_s"].to_numpy()[~strag],
                         orientation="h", name="decode", marker_color="#1f77b4",
                         hovertext=[h for h, s in zip(hover, strag) if not s], hoverinfo="text"))
    fig.add_trace(go.Bar(y=y[strag], x=decode[strag], base=done["first_token_s"].to_numpy()[strag],
                         orientation="h", name=f"decode (straggler, > {factor:g}x median E2EL)",
                         marker_color="#d62728", hovertext=[h for h, s in zip(hover, strag) if s],
                         hoverinfo="text"))
    fig.update_layout(title="Requests over time (Gantt)", barmode="overlay", bargap=0.0,
                      xaxis_title="time (s)", yaxis_title="request (arrival order)", height=560,
                      yaxis={"showticklabels": False}, legend={"orientation": "h", "y": -0.15})
    return fig, f"{note}; {int(strag.sum())} stragglers shown."


def dataset_section(requests: pd.DataFrame, factor: float) -> Section:
    done = requests[requests["finish_s"].notna()].copy()
    done["straggler"] = straggler_mask(done, factor) if len(done) else []
    lat = latencies(requests)
    rows = []
    for name, group in requests.groupby("dataset"):
        d = done[done["dataset"] == name]
        tpot = lat["TPOT"][done["dataset"] == name]
        ms = [1e3 * series.quantile(q) for series, q in ((d["ttft_s"], 0.5), (d["ttft_s"], 0.99), (tpot, 0.5),
                                                         (tpot, 0.99), (d["e2el_s"], 0.5), (d["e2el_s"], 0.9),
                                                         (d["e2el_s"], 0.99))]
        rows.append([name, len(group), len(d), group["prompt_tokens"].mean(), d["output_tokens"].mean(), *ms,
                     int(d["straggler"].sum()), int(group["preemptions"].sum())])
    header = ["dataset", "requests", "completed", "mean prompt", "mean output", "TTFT p50 (ms)", "TTFT p99 (ms)",
              "TPOT p50 (ms)", "TPOT p99 (ms)", "E2EL p50 (ms)", "E2EL p90 (ms)", "E2EL p99 (ms)", "stragglers",
              "preemptions"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("E2EL (ms)", "output tokens"))
    for i, (name, d) in enumerate(done.groupby("dataset")):
        color = COLORS[i % len(COLORS)]
        fig.add_trace(go.Box(y=1e3 * d["e2el_s"], name=str(name), marker_color=color, boxpoints=False), row=1, col=1)
        fig.add_trace(go.Box(y=d["output_tokens"], name=str(name), marker_color=color, boxpoints=False,
                             showlegend=False), row=1, col=2)
    fig.update_layout(title="Per dataset", height=400, showlegend=False)
    return Section("Per-dataset breakdown", [fig], table_html(header, rows))


def run_sections(summary: Mapping[str, Any], requests: pd.DataFrame, timeline: pd.DataFrame | None) -> list[Section]:
    from rllmsim.metrics.console import format_summary

    factor = float(summary.get("stragglers", {}).get("factor", 3.0))
    config = summary.get("config", {})
    dep = config.get("deployment", {})
    sections = [Section("Summary", html=f"<pre>{_escape(format_summary(summary))}</pre>" + _config_table(config))]
    if timeline is not None and len(timeline):
        capacity = int(summary.get("kv", {}).get("capacity_blocks") or dep.get("num_gpu_blocks") or 0)
        source = dep.get("kv_capacity_source", "unknown")
        sections.append(Section("KV cache", [kv_figure(timeline, capacity), counts_figure(timeline)],
                                f'<p class="note">Capacity {capacity:,} blocks of '
                                f'{_escape(str(dep.get("block_size", "?")))} tokens per replica '
                                f"({_escape(str(source))}).</p>"))
    else:
        sections.append(Section("KV cache", html='<p class="note">No timeline.parquet in this run '
                                                 "(simulated with --no-timeline).</p>"))
    sections.append(Section("Latency", [cdf_figure(requests)]))
    gantt, note = gantt_figure(requests, factor)
    sections.append(Section("Requests and stragglers", [gantt], f'<p class="note">{_escape(note)}</p>'))
    sections.append(straggler_section(requests, factor))
    sections.append(dataset_section(requests, factor))
    sections.append(workload_section(requests))
    return sections


def _config_table(config: Mapping[str, Any]) -> str:
    rows = [[f"deployment.{k}", v] for k, v in config.get("deployment", {}).items()]
    rows += [[f"workload.{k}", v] for k, v in config.get("workload", {}).items() if v is not None]
    rows += [[k, config[k]] for k in ("client", "router", "fast_forward") if k in config]
    cost = config.get("cost_model", {})
    if cost:
        rows.append(["cost_model", ", ".join(f"{k}={v}" for k, v in cost.items() if not isinstance(v, dict))])
    return "<details><summary>Configuration</summary>" + table_html(["field", "value"], rows, (0, 1)) + "</details>"


def _escape(text: str) -> str:
    import html
    return html.escape(text)
