"""Self-contained HTML reports (plotly.js inlined): real vs simulated KV usage, running and
waiting over time, latency CDFs; and, for closed-loop cases, simulated vs measured TTFT/TPOT/E2EL."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rllmsim.validate.aiconfigurator import METRICS as CLOSED_LOOP_METRICS

REAL, SIM = "#1f77b4", "#d62728"


def _cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.sort(np.asarray(values, dtype=np.float64)[np.isfinite(values)])
    return values, np.arange(1, len(values) + 1) / max(len(values), 1)


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0)


def _page(title: str, notes: list[str], tables: list[tuple[str, pd.DataFrame]], fig: go.Figure) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    for caption, frame in tables:
        parts.append(f"<h2>{html.escape(caption)}</h2>" + _table_html(frame))
    body = fig.to_html(include_plotlyjs=True, full_html=False)
    style = ("body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;font-size:13px}"
             "td,th{padding:2px 8px;text-align:right} tr:nth-child(even){background:#f4f4f4}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}{body}</body></html>")


def replay_report(validation, diagnosis: pd.DataFrame | None = None) -> str:
    """The HTML report of one replayed run."""
    v = validation
    fig = make_subplots(rows=3, cols=3, specs=[[{"colspan": 3}, None, None], [{"colspan": 3}, None, None],
                                               [{}, {}, {}]],
                        subplot_titles=(f"KV cache usage (% of capacity, {v.kv_basis or 'not available'})",
                                        "running and waiting requests", "TTFT CDF", "TPOT CDF", "E2EL CDF"),
                        vertical_spacing=0.09)
    ticks = v.ticks
    if ticks is not None:
        fig.add_trace(go.Scatter(x=ticks["t_s"], y=ticks["real_kv_pct"], name="real KV %", line={"color": REAL}), 1, 1)
        fig.add_trace(go.Scatter(x=ticks["t_s"], y=ticks["sim_kv_pct"], name="sim KV %", line={"color": SIM}), 1, 1)
        for col, dash in (("running", None), ("waiting", "dot")):
            if f"real_{col}" in ticks:
                fig.add_trace(go.Scatter(x=ticks["t_s"], y=ticks[f"real_{col}"], name=f"real {col}",
                                         line={"color": REAL, "dash": dash}), 2, 1)
            fig.add_trace(go.Scatter(x=ticks["t_s"], y=ticks[f"sim_{col}"], name=f"sim {col}",
                                     line={"color": SIM, "dash": dash}), 2, 1)
    req = v.requests
    for col, metric in enumerate(("ttft", "tpot", "e2el"), start=1):
        for side, color in (("real", REAL), ("sim", SIM)):
            x, y = _cdf(1e3 * req[f"{side}_{metric}_s"].to_numpy())
            fig.add_trace(go.Scatter(x=x, y=y, name=f"{side} {metric.upper()}", line={"color": color},
                                     showlegend=False), 3, col)
        fig.update_xaxes(title_text="ms", row=3, col=col)
    fig.update_xaxes(title_text="seconds from first arrival", row=1, col=1)
    fig.update_xaxes(title_text="seconds from first arrival", row=2, col=1)
    fig.update_layout(height=1100, template="plotly_white")
    tables = [("errors (signed = sim - real)", v.errors)]
    if diagnosis is not None:
        tables.append(("decode step time on the real batches (engine log)", diagnosis))
    title = f"rllmsim validate: {v.run.name} ({v.run.source}) with {v.cost_model.provenance().get('kind')}"
    return _page(title, v.run.notes + v.notes, tables, fig)


def closed_loop_report(results: pd.DataFrame, mape: pd.DataFrame, title: str) -> str:
    """Simulated vs measured mean TTFT, TPOT and E2EL of closed-loop cases, one colour per model."""
    done = results[results["skipped"] == ""]
    metrics = CLOSED_LOOP_METRICS
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[f"{m.upper()} (ms)" for m in metrics])
    for model, g in done.groupby("model", sort=True):
        label = model.split("/")[-1]
        text = [f"isl {r.isl} osl {r.osl} users {r.users} tp {r.tp}" for r in g.itertuples()]
        for col, metric in enumerate(metrics, start=1):
            fig.add_trace(go.Scatter(x=g[f"real_{metric}_ms"], y=g[f"sim_{metric}_ms"], mode="markers", name=label,
                                     text=text, legendgroup=label, showlegend=col == 1), 1, col)
    for col, metric in enumerate(metrics, start=1):
        values = done[[f"real_{metric}_ms", f"sim_{metric}_ms"]].to_numpy(np.float64)
        values = values[np.isfinite(values) & (values > 0)]
        if len(values):
            lo, hi = float(values.min()) * 0.8, float(values.max()) * 1.25
            fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"color": "gray", "dash": "dash"},
                                     name="sim = real", showlegend=col == 1), 1, col)
        fig.update_xaxes(type="log", title_text="measured", row=1, col=col)
        fig.update_yaxes(type="log", title_text="simulated", row=1, col=col)
    fig.update_layout(height=600, template="plotly_white")
    return _page(title, [], [("MAPE by model", mape)], fig)
