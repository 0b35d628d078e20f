"""How API results show themselves in Jupyter: small HTML tables, latencies in ms as vLLM prints them.

One renderer for every result object, so a run, a comparison, a plan and a validation look alike
and escape their text the same way.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Mapping

import pandas as pd

LATENCIES = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2el_s", "E2EL"))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return html.escape(str(value))


def table_html(title: str, rows: Iterable[tuple[str, Any]], note: str = "") -> str:
    """A two-column table (label, value) under a bold title."""
    body = "".join(f"<tr><td style='text-align:left'>{html.escape(label)}</td>"
                   f"<td style='text-align:right'>{_cell(value)}</td></tr>" for label, value in rows)
    tail = f"<p><small>{html.escape(note)}</small></p>" if note else ""
    return f"<div><b>{html.escape(title)}</b><table>{body}</table>{tail}</div>"


def frame_html(title: str, frame: pd.DataFrame, note: str = "") -> str:
    """A DataFrame under a bold title (pandas renders and escapes the table)."""
    tail = f"<p><small>{html.escape(note)}</small></p>" if note else ""
    return f"<div><b>{html.escape(title)}</b>{frame.to_html(float_format=lambda v: f'{v:,.2f}')}{tail}</div>"


def headline(summary: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The metrics `vllm bench serve` leads with: counts, throughput, latency in ms, KV, preemptions."""
    req, tput = summary["requests"], summary["throughput"]
    rows: list[tuple[str, Any]] = [
        ("Successful requests", req["completed"]),
        ("Benchmark duration (s)", float(summary["duration_s"])),
        ("Request throughput (req/s)", float(tput["requests_per_s"])),
        ("Output token throughput (tok/s)", float(tput["output_tokens_per_s"])),
    ]
    if "goodput" in summary:
        rows.append(("Request goodput (req/s)", float(summary["goodput"]["requests_per_s"])))
    for key, name in LATENCIES:
        stats = summary.get(key) or {}
        for stat, label in (("mean", "Mean"), ("p50", "Median"), ("p99", "P99")):
            if stats.get(stat) is not None:
                rows.append((f"{label} {name} (ms)", 1e3 * float(stats[stat])))
    rows += [("KV peak usage (%)", float(summary["kv"]["peak_pct"])), ("Preemptions", summary["preemptions"])]
    return rows
