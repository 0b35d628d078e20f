"""Figures of a sweep (metric vs rate curves, the cost/latency Pareto front) and of a plan (the
Pareto front of the deployments that meet the target, the sustainable rate of every candidate)."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rllmsim.report.html import Section, table_html
from rllmsim.report.run_figures import COLORS
from rllmsim.sweep.plan_result import pareto_front

#: (results column, title, scale to the shown unit): latencies in seconds on disk, ms on the page.
CURVES = (("ttft_s_p99", "TTFT p99 (ms)", 1e3), ("tpot_s_p99", "TPOT p99 (ms)", 1e3),
          ("e2el_s_p90", "E2EL p90 (ms)", 1e3), ("throughput_output_tokens_per_s", "output tokens/s", 1.0))
#: Columns that are inputs of a run and may vary across a sweep.
_NOT_AXES = {"key", "run_index", "status", "error", "elapsed_s", "finished_at", "worker"}


def varying_axes(frame: pd.DataFrame, config_columns: list[str]) -> list[str]:
    return [c for c in config_columns if c in frame.columns and frame[c].astype(str).nunique() > 1]


def _group_label(row: pd.Series, axes: list[str]) -> str:
    return ", ".join(f"{a}={row[a]}" for a in axes) or "all runs"


def curves_figure(ok: pd.DataFrame, x: str, groups: list[str]) -> go.Figure:
    fig = make_subplots(rows=2, cols=2, subplot_titles=[label for _, label, _ in CURVES],
                        horizontal_spacing=0.08, vertical_spacing=0.2)
    keyed = ok.assign(_group=ok.apply(lambda r: _group_label(r, groups), axis=1) if len(ok) else "")
    for i, (label, rows) in enumerate(keyed.groupby("_group", sort=True)):
        rows = rows.groupby(x, as_index=False).mean(numeric_only=True).sort_values(x)  # seeds averaged
        for j, (column, _, scale) in enumerate(CURVES):
            if column not in rows.columns:
                continue
            fig.add_trace(go.Scatter(x=rows[x], y=rows[column] * scale, mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=j == 0,
                                     line={"color": COLORS[i % len(COLORS)]}),
                          row=j // 2 + 1, col=j % 2 + 1)
    for j in range(len(CURVES)):
        fig.update_xaxes(title_text=x, row=j // 2 + 1, col=j % 2 + 1)
    fig.update_layout(title=f"Metrics vs {x}", height=760, legend={"orientation": "h", "y": -0.12})
    return fig


AXIS_TITLES = {"cost_per_hour_usd": "$ per hour", "usd_per_million_output_tokens": "$ per million output tokens"}


def latency_axis(column: str) -> str:
    """The title of a latency column in ms: e2el_s_p99 -> "E2EL p99 (ms)", at_target_ttft_p99 ->
    "TTFT p99 at target (ms)"."""
    if column.startswith("at_target_"):
        name, _, stat = column.removeprefix("at_target_").partition("_")
        return f"{name.upper()} {stat} at target (ms)"
    name, _, stat = column.partition("_s_")
    return f"{name.upper()} {stat} (ms)"


def pareto_figure(points: pd.DataFrame, cost: str, latency: str, label: str, title: str,
                  ok_column: str | None = None) -> go.Figure:
    """Every point, the front among the points that meet the SLOs (all points without an SLO);
    `latency` is a column in seconds, drawn in ms."""
    fig = go.Figure()
    eligible = points if ok_column is None or ok_column not in points.columns \
        else points[points[ok_column].fillna(False).astype(bool)]
    front = pd.DataFrame(pareto_front(eligible.to_dict("records"), cost, latency))
    for i, (gpu, rows) in enumerate(points.groupby("gpu") if "gpu" in points.columns else [("all", points)]):
        meets = rows[ok_column].fillna(False).astype(bool) if ok_column and ok_column in rows.columns \
            else pd.Series(True, index=rows.index)
        for good, rows_ in ((True, rows[meets]), (False, rows[~meets])):
            if rows_.empty:
                continue
            fig.add_trace(go.Scatter(
                x=rows_[cost], y=1e3 * rows_[latency], mode="markers", name=f"{gpu}" + ("" if good else " (misses SLO)"),
                marker={"color": COLORS[i % len(COLORS)], "size": 9, "symbol": "circle" if good else "circle-open"},
                hovertext=rows_[label].astype(str), hoverinfo="text+x+y"))
    if not front.empty:
        fig.add_trace(go.Scatter(x=front[cost], y=1e3 * front[latency], mode="lines", name="Pareto front",
                                 line={"color": "#222", "dash": "dot", "shape": "hv"}))
    fig.update_layout(title=title, xaxis_title=AXIS_TITLES.get(cost, cost), yaxis_title=latency_axis(latency),
                      height=460)
    return fig


def sweep_sections(frame: pd.DataFrame, spec: Mapping[str, Any] | None) -> list[Section]:
    from rllmsim.sweep.spec import DEPLOYMENT_FIELDS, WORKLOAD_FIELDS

    config_columns = list(DEPLOYMENT_FIELDS) + list(WORKLOAD_FIELDS) + ["seed"]
    ok = frame[frame["status"] == "ok"].copy()
    failed = frame[frame["status"] != "ok"]
    spec_axes = [k for section in ("deployment", "workload") for k, v in ((spec or {}).get(section) or {}).items()
                 if isinstance(v, list)]
    axes = [a for a in spec_axes if a in frame.columns] or varying_axes(frame, config_columns)
    if len((spec or {}).get("seeds") or []) > 1 or ("seed" in frame.columns and frame["seed"].nunique() > 1):
        axes = [a for a in axes if a != "seed"] + ["seed"]
    overview = table_html(["runs", "ok", "failed", "varying fields"],
                          [[len(frame), len(ok), len(failed), ", ".join(axes) or "none"]], ())
    sections = [Section("Overview", html=overview)]
    if not ok.empty:
        x = "rate" if "rate" in axes else next((a for a in axes if pd.api.types.is_numeric_dtype(frame[a])),
                                               "run_index")
        groups = [a for a in axes if a not in (x, "seed")]
        sections.append(Section(f"Metrics vs {x}", [curves_figure(ok, x, groups)]))
        ok["label"] = ok.apply(lambda r: _group_label(r, [a for a in axes if a != "seed"]), axis=1)
        if "cost_per_hour_usd" in ok.columns and "e2el_s_p99" in ok.columns:
            slo = "slo_ok" if "slo_ok" in ok.columns else None
            figs = [pareto_figure(ok, "cost_per_hour_usd", "e2el_s_p99", "label",
                                  "Cost per hour vs P99 E2EL", slo)]
            if ok["usd_per_million_output_tokens"].notna().any():
                figs.append(pareto_figure(ok, "usd_per_million_output_tokens", "tpot_s_p99", "label",
                                          "$ per million output tokens vs P99 TPOT", slo))
            note = ('<p class="note">Hollow markers miss the sweep\'s SLOs; the front is drawn over the runs '
                    "that meet them.</p>") if slo else ""
            sections.append(Section("Cost and latency", figs, note))
    if not failed.empty:
        rows = [[r.get("key"), _group_label(r, axes), r.get("error")] for _, r in failed.iterrows()]
        sections.append(Section("Failed runs", html=table_html(["key", "config", "error"], rows, (0, 1, 2))))
    return sections


def plan_sections(plan: Mapping[str, Any], candidates: pd.DataFrame, probes: pd.DataFrame) -> list[Section]:
    settings = plan["settings"]
    metric = settings.get("pareto_metric", "e2el_p99")
    latency = f"at_target_{metric}"
    sections = [Section("Plan", html=f"<pre>{_escape(plan.get('text', ''))}</pre>")]
    if "meets_target" in candidates.columns:
        meets = candidates[candidates["meets_target"].fillna(False).astype(bool)]
        if not meets.empty and latency in meets.columns:
            sections.append(Section("Cost and latency at the target rate", [pareto_figure(
                meets.assign(label=meets["replicas"].astype(int).astype(str) + " x " + meets["label"]),
                "cost_per_hour_usd", latency, "label",
                f"$/hour vs {metric} at {settings['target_rate']:g} req/s")]))
    if "max_rate" in candidates.columns:
        rated = candidates[candidates["max_rate"].notna()].sort_values("max_rate")
        fig = go.Figure(go.Bar(x=rated["max_rate"], y=rated["label"], orientation="h",
                               marker_color=["#2ca02c" if m else "#c7c7c7"
                                             for m in rated.get("meets_target", pd.Series(False, index=rated.index))
                                             .fillna(False)]))
        fig.update_layout(title="Highest sustainable rate found (per replica for auto-sized candidates)",
                          xaxis_title="req/s", height=max(320, 28 * len(rated) + 120))
        sections.append(Section("Sustainable rate per candidate", [fig]))
    if not probes.empty:
        fig = go.Figure()
        for i, (label, rows) in enumerate(probes.groupby("label")):
            fig.add_trace(go.Scatter(x=rows["rate"], y=[label] * len(rows), mode="markers", name=label,
                                     marker={"color": ["#2ca02c" if ok else "#d62728" for ok in rows["ok"]],
                                             "size": 9},
                                     hovertext=rows["violated"].astype(str), showlegend=False))
        fig.update_layout(title="Bisection probes (green: within SLOs, red: not)", xaxis_title="req/s",
                          xaxis_type="log", height=max(320, 28 * probes["label"].nunique() + 120))
        sections.append(Section("Search", [fig]))
    return sections


def _escape(text: str) -> str:
    import html
    return html.escape(text)
