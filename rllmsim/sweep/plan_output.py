"""A plan as text (the ranked table, what misses, the Pareto front) and as files.

`write_plan(result, DIR)` writes `plan.json` (settings, cheapest, Pareto front, every candidate),
`candidates.parquet` (one row per candidate) and `probes.parquet` (one row per probe), atomically;
`rllmsim report DIR` draws them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rllmsim.rundir import write_json_atomic
from rllmsim.specs import load_gpu
from rllmsim.sweep.plan_result import PlanResult

PLAN_FILE = "plan.json"


def _money(value: Any) -> str:
    return "-" if value is None or not np.isfinite(value) else f"${value:,.2f}"


def _rate(row: dict[str, Any]) -> str:
    rate = row.get("max_rate", 0.0) or 0.0
    return (">=" if row.get("max_rate_capped") else "") + f"{rate:.3g}"


def candidates_frame(result: PlanResult) -> pd.DataFrame:
    pareto = {r["label"] for r in result.pareto}
    rank = {r["label"]: i + 1 for i, r in enumerate(result.ranked)}
    rows = []
    for row in result.rows:
        flat = {k: v for k, v in row.items() if k != "probes"}
        flat["rank"] = rank.get(row["label"])
        flat["pareto"] = row["label"] in pareto
        flat["probes"] = len(row.get("probes", []))
        rows.append(flat)
    frame = pd.DataFrame(rows)
    return frame.sort_values(["rank", "label"], na_position="last", kind="stable").reset_index(drop=True)


def probes_frame(result: PlanResult) -> pd.DataFrame:
    rows = [{"label": row["label"], "probe": i, **probe}
            for row in result.rows for i, probe in enumerate(row.get("probes", []))]
    return pd.DataFrame(rows)


def format_plan(result: PlanResult) -> str:
    s = result.settings
    metric = s.pareto_metric
    header = ["#", "candidate", "max req/s", "replicas", "headroom", "GPUs", "$/hour", "$/M out tok", "tok/s/GPU",
              "TTFT p99 ms", "TTFVT p99 ms", "TPOT p99 ms", "E2EL p90 ms", f"{_metric_label(metric)} ms", "KV peak",
              "preempt", "stragglers", "pareto"]
    pareto = {r["label"] for r in result.pareto}
    table = []
    for i, row in enumerate(result.ranked, 1):
        max_rate = _rate(row) + ("/replica" if row.get("replicas_mode") == "auto" else "")
        table.append([str(i), row["label"], max_rate, str(row["replicas"]), _headroom(row), str(row["gpus"]),
                      _money(row["cost_per_hour_usd"]), _money(row.get("usd_per_million_output_tokens")),
                      f"{row.get('output_tokens_per_s_per_gpu', float('nan')):.0f}",
                      *(format_ms(row.get(f"at_target_{name}"))
                        for name in ("ttft_p99", "ttfvt_p99", "tpot_p99", "e2el_p90", metric)),
                      _percent(row.get("at_target_kv_peak_pct")), _count(row.get("at_target_preemptions")),
                      _count(row.get("at_target_stragglers")), "*" if row["label"] in pareto else ""])
    lines = [f"Deployments that serve {s.target_rate:g} req/s of {s.model} ({_workload_label(s.workload)}) "
             f"within {', '.join(str(x) for x in s.slos)}, cheapest first:"]
    lines += _columns(header, table) if table else ["  (none)"]
    lines += _listed("Do not make it:", [f"{r.get('status', '')}: {r.get('reason', '')}" for r in result.missing],
                     result.missing)
    dominated = result.dominated
    lines += _listed("Cannot be cheaper, so not searched further (--search all searches every candidate):",
                     [r.get("reason", "") for r in dominated], dominated)
    lines.append("")
    cheapest = result.cheapest
    if cheapest:
        lines.append(f"Cheapest for {s.target_rate:g} req/s: {cheapest['replicas']} x {cheapest['label']} "
                     f"({cheapest['gpus']} GPU{'' if cheapest['gpus'] == 1 else 's'}) at {_money(cheapest['cost_per_hour_usd'])}/hour, "
                     f"{_money(cheapest.get('usd_per_million_output_tokens'))} per million output tokens")
        if cheapest.get("fidelity"):
            lines.append(f"How far to trust it: {cheapest['fidelity']}")
    else:
        lines.append(f"No candidate serves {s.target_rate:g} req/s within the SLOs.")
    if result.pareto:
        lines.append(f"Pareto front ($/hour vs {metric}): " + "  |  ".join(
            f"{r['replicas']} x {r['label']}: {_money(r['cost_per_hour_usd'])}/h, "
            f"{format_ms(r.get(f'at_target_{metric}'))} ms" for r in result.pareto)
            + (" (of the candidates searched; --search all for every one)" if dominated else ""))
    gpus = sorted({row["gpu"] for row in result.rows})
    lines.append("Prices (on-demand, per GPU-hour; check before deciding): " + "; ".join(_price(g) for g in gpus))
    short = [row["label"] for row in result.ranked
             if any(p.get("ok") and not p.get("steady", True) for p in row.get("probes", []))]
    if short:
        lines.append(f"Note: probes of {', '.join(short)} passed over fewer than 2 x their E2EL p90 seconds of "
                     "arrivals, too short to reach steady state; their rates are optimistic. Raise --duration "
                     "or --max-requests, or check with --verify.")
    if len(s.seeds) > 1:
        lines.append(f"Sustainable rate per seed (req/s{' per replica' if any(r.get('replicas_mode') == 'auto' for r in result.rows) else ''}; "
                     "each candidate sized by its worst): " + "; ".join(
                         f"{row['label']} {row.get('max_rate_by_seed', '')} (spread {row.get('max_rate_seed_spread_pct', 0.0):.0f} %)"
                         for row in result.rows if row.get("status") in ("ok", "unsustainable")))
    probes = sum(len(row.get("probes", [])) for row in result.rows)
    seeds = f"seeds {','.join(str(x) for x in s.seeds)}" if len(s.seeds) > 1 else f"seed {s.seed}"
    lines.append(f"{probes} probes, {s.duration_s:g}s of arrivals each ({s.min_requests}-{s.max_requests} "
                 f"requests per replica), first {s.warmup:.0%} of requests as warm-up, {seeds}")
    lines.append("headroom: how far the sized deployment's sustainable rate exceeds the target "
                 "(>= where one replica's search stopped at the target); latencies, KV peak (% of one replica's "
                 "blocks), preemptions and stragglers at the target rate, after warm-up (TTFVT, KV peak, preemptions and stragglers over "
                 "the whole probe)")
    return "\n".join(lines)


def _listed(title: str, reasons: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """A titled list of candidates with why, after a blank line; nothing when there are none."""
    if not rows:
        return []
    return ["", title] + [f"  {row['label']:<28} {reason}" for row, reason in zip(rows, reasons)]


def format_ms(seconds: float | None) -> str:
    """A latency in seconds as ms for the table: 23.5, 1,234; '-' where unknown."""
    if seconds is None or not np.isfinite(seconds):
        return "-"
    ms = 1e3 * seconds
    return f"{ms:,.1f}" if ms < 100 else f"{ms:,.0f}"


def _percent(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.0f}%"


def _count(value: float | None) -> str:
    """A count a probe recorded; '-' where unknown (an early-stopped probe records -1)."""
    return "-" if value is None or not np.isfinite(value) or value < 0 else f"{int(value):,}"


def _headroom(row: dict) -> str:
    """Sustainable rate of the sized deployment over the target, in %; a lower bound where the
    search stopped at the target itself."""
    value = row.get("headroom_pct")
    if value is None:
        return "-"
    return f"{'>=' if row.get('headroom_is_lower_bound') else ''}{value:.0f}%"


def _metric_label(metric: str) -> str:
    name, _, stat = metric.partition("_")
    return f"{name.upper()} {stat}"


def _price(gpu: str) -> str:
    spec = load_gpu(gpu)
    return f"{spec.name} ${spec.price_per_gpu_hour_usd:g} ({spec.price_source}, {spec.price_date})"


def _workload_label(workload: dict[str, Any]) -> str:
    parts = [str(workload.get("dataset", "")), str(workload.get("arrival", ""))]
    if workload.get("arrival") == "gamma":
        parts.append(f"cv {workload['cv']:g}" if workload.get("cv") is not None
                     else f"burstiness {workload.get('burstiness')}")
    if workload.get("max_tokens"):
        parts.append(f"max_tokens {workload['max_tokens']}")
    return ", ".join(p for p in parts if p)


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    left = {1}
    fmt = lambda cells: "  ".join(c.ljust(w) if i in left else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def write_plan(result: PlanResult, out: Path) -> Path:
    """plan.json + candidates.parquet + probes.parquet, staged in a temp dir and moved in."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".plan.", suffix=".tmp"))
    try:
        candidates_frame(result).to_parquet(staging / "candidates.parquet", index=False)
        probes_frame(result).to_parquet(staging / "probes.parquet", index=False)
        summary = {
            "kind": "plan",
            "settings": result.settings.to_dict(),
            "cheapest": _strip(result.cheapest),
            "pareto": [_strip(r) for r in result.pareto],
            "candidates": [_strip(r) for r in result.rows],
            "text": format_plan(result),
        }
        write_json_atomic(staging / PLAN_FILE, summary)
        for name in ("candidates.parquet", "probes.parquet", PLAN_FILE):  # plan.json last: it marks a plan
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _strip(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: v for k, v in row.items() if k != "probes"}
