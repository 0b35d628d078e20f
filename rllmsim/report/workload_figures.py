"""The workload as it arrived: output-length histogram (reasoning and answer) and the arrival rate
and inter-arrival CV over time.

Reasoning traffic is bimodal in length and bursty in time (ServeGen's production pool), and both
drive KV pressure; a run's report shows them so a reader can see which workload produced the
latencies above it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rllmsim.report.html import Section

BINS = 60
TIME_BINS = 40
MIN_GAPS = 5  # a time bin's CV needs a few gaps to mean anything


def length_histogram(requests: pd.DataFrame) -> go.Figure:
    """Output tokens per request on log-spaced bins, split into reasoning and answer counts."""
    done = requests[requests["finish_s"].notna()]
    output = done["output_tokens"].to_numpy()
    fig = go.Figure()
    if len(output):
        edges = np.unique(np.geomspace(1, max(int(output.max()), 2) + 1, BINS + 1).round())
        counts, _ = np.histogram(output, edges)
        mids = np.sqrt(edges[:-1] * edges[1:])
        fig.add_trace(go.Bar(x=mids, y=counts, width=np.diff(edges), name="output tokens", marker_color="#1f77b4"))
        if "reasoning_tokens" in done and done["reasoning_tokens"].any():
            rcounts, _ = np.histogram(done["reasoning_tokens"].clip(lower=1), edges)
            fig.add_trace(go.Scatter(x=mids, y=rcounts, mode="lines", name="reasoning tokens",
                                     line={"color": "#ff7f0e"}))
    fig.update_layout(title="Output length per request (log bins)", xaxis_type="log", xaxis_title="tokens",
                      yaxis_title="requests", height=400, bargap=0)
    return fig


def arrival_series(arrival_s: np.ndarray, bins: int = TIME_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin centres, requests/s, CV of the inter-arrival gaps within each bin; NaN where few)."""
    t = np.sort(np.asarray(arrival_s, dtype=np.float64))
    if t.size < 2 or t[-1] <= t[0]:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    edges = np.linspace(t[0], t[-1], bins + 1)
    which = np.clip(np.searchsorted(edges, t[1:], side="right") - 1, 0, bins - 1)
    gaps = np.diff(t)
    count = np.bincount(which, minlength=bins)
    mean = np.bincount(which, gaps, minlength=bins) / np.maximum(count, 1)
    sq = np.bincount(which, gaps * gaps, minlength=bins) / np.maximum(count, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.where((count >= MIN_GAPS) & (mean > 0), np.sqrt(np.maximum(sq - mean**2, 0.0)) / mean, np.nan)
    return (edges[:-1] + edges[1:]) / 2, count / np.diff(edges), cv


def arrival_figure(requests: pd.DataFrame) -> go.Figure:
    mids, rate, cv = arrival_series(requests["arrival_s"].to_numpy())
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=mids, y=rate, mode="lines", name="arrival rate (req/s)"), secondary_y=False)
    fig.add_trace(go.Scatter(x=mids, y=cv, mode="lines+markers", name="inter-arrival CV"), secondary_y=True)
    fig.update_layout(title="Arrivals over time", xaxis_title="time (s)", height=380,
                      legend={"orientation": "h", "y": -0.2})
    fig.update_yaxes(title_text="req/s", secondary_y=False)
    fig.update_yaxes(title_text="CV", secondary_y=True)
    return fig


def workload_section(requests: pd.DataFrame) -> Section:
    return Section("Workload", [length_histogram(requests), arrival_figure(requests)])
