"""Error tables: how far a simulated run is from the real one, metric by metric.

Latencies and throughputs compare as percentages, signed = 100 (sim - real) / real (positive: the
simulator is slower / predicts more), absolute = its magnitude. KV usage compares in percentage
points. Every row has the same columns so the table writes to CSV and JSON unchanged:

    metric, stat, unit, real, sim, signed_error, abs_error, error_unit, basis
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

STATS = ("mean", "p50", "p90", "p99")
LATENCIES = ("ttft", "tpot", "itl", "e2el")
COLUMNS = ("metric", "stat", "unit", "real", "sim", "signed_error", "abs_error", "error_unit", "basis")


def stats(values: np.ndarray | None) -> dict[str, float] | None:
    """Mean and percentiles (numpy's linear interpolation, as vllm bench uses); None if no data."""
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def pct_error(sim: float | None, real: float | None) -> float:
    """100 (sim - real) / real; NaN when either is missing or real is 0."""
    if sim is None or real is None or not (math.isfinite(sim) and math.isfinite(real)) or real == 0:
        return float("nan")
    return 100.0 * (sim - real) / real


def _row(metric: str, stat: str, unit: str, real: float | None, sim: float | None, basis: str = "recorded",
         points: bool = False) -> dict[str, Any]:
    real_f = float("nan") if real is None else float(real)
    sim_f = float("nan") if sim is None else float(sim)
    signed = sim_f - real_f if points else pct_error(sim_f, real_f)
    return {"metric": metric, "stat": stat, "unit": unit, "real": real_f, "sim": sim_f, "signed_error": signed,
            "abs_error": abs(signed), "error_unit": "pp" if points else "%", "basis": basis}


def latency_rows(real: dict[str, dict[str, float] | None], sim: dict[str, dict[str, float] | None]) -> list[dict]:
    """TTFT, TPOT, ITL, E2EL at mean/P50/P90/P99, in milliseconds; a metric the real run did not
    record gets one row saying so (real = NaN, basis = not recorded)."""
    rows = []
    for metric in LATENCIES:
        r, s = real.get(metric), sim.get(metric)
        if r is None:
            rows.append(_row(metric, "all", "ms", None, None, basis="not recorded"))
            continue
        for stat in STATS:
            rows.append(_row(metric, stat, "ms", 1e3 * r[stat], None if s is None else 1e3 * s[stat]))
    return rows


def throughput_rows(real: dict[str, float], sim: dict[str, float]) -> list[dict]:
    units = {"request_throughput": "req/s", "output_throughput": "tok/s", "duration": "s"}
    return [_row(name, "total", unit, real.get(name), sim.get(name)) for name, unit in units.items()]


def throughputs(finish_s: np.ndarray, arrival_s: np.ndarray, output_tokens: np.ndarray) -> dict[str, float]:
    """Requests and output tokens per second over first arrival to last completion."""
    duration = float(np.nanmax(finish_s) - np.nanmin(arrival_s)) if len(finish_s) else 0.0
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: float("nan"))
    return {"duration": duration, "request_throughput": per_s(len(finish_s)),
            "output_throughput": per_s(float(np.sum(output_tokens)))}


def timeline_rows(real: pd.DataFrame, sim: pd.DataFrame, kv_basis: str | None) -> list[dict]:
    """KV usage (peak and mean over the ticks, percentage points) and running / waiting counts
    (mean and peak, %), both sampled at the same ticks."""
    rows = []
    if kv_basis is not None:
        rows += [_row("kv_usage", "peak", "%", real["kv_pct"].max(), sim["kv_pct"].max(), kv_basis, points=True),
                 _row("kv_usage", "mean", "%", real["kv_pct"].mean(), sim["kv_pct"].mean(), kv_basis, points=True)]
    for col in ("running", "waiting"):
        if col in real and real[col].notna().any():
            rows += [_row(col, "mean", "seqs", real[col].mean(), sim[col].mean(), "engine log"),
                     _row(col, "peak", "seqs", real[col].max(), sim[col].max(), "engine log")]
    return rows


def per_request_rows(real: dict[str, np.ndarray], sim: dict[str, np.ndarray]) -> list[dict]:
    """The replay is request for request, so each request's error is known: the median and P90 of
    |sim - real| / real, and the median signed error, for TTFT and E2EL."""
    rows = []
    for metric in ("ttft", "e2el"):
        r, s = np.asarray(real[metric], np.float64), np.asarray(sim[metric], np.float64)
        ok = np.isfinite(r) & np.isfinite(s) & (r > 0)
        if not ok.any():
            continue
        err = 100.0 * (s[ok] - r[ok]) / r[ok]
        for stat, signed, absolute in (("median", np.median(err), np.median(np.abs(err))),
                                       ("p90", np.percentile(err, 90), np.percentile(np.abs(err), 90))):
            rows.append({"metric": f"{metric}_per_request", "stat": stat, "unit": "%", "real": float("nan"),
                         "sim": float("nan"), "signed_error": float(signed), "abs_error": float(absolute),
                         "error_unit": "%", "basis": f"{int(ok.sum())} requests"})
    return rows


def error_frame(rows: Iterable[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


def format_errors(frame: pd.DataFrame) -> str:
    """The error table as fixed-width text for the console."""
    lines = [f"{'metric':<18} {'stat':<6} {'real':>11} {'sim':>11} {'unit':<6} {'signed':>9} {'abs':>8}  basis"]
    for r in frame.itertuples(index=False):
        def num(v: float) -> str:
            return f"{v:11.4g}" if isinstance(v, float) and math.isfinite(v) else f"{'-':>11}"

        def err(v: float) -> str:
            return f"{v:+8.1f}{r.error_unit}" if math.isfinite(v) else f"{'-':>9}"

        absolute = f"{r.abs_error:7.1f}{r.error_unit}" if math.isfinite(r.abs_error) else f"{'-':>8}"
        lines.append(f"{r.metric:<18} {r.stat:<6} {num(r.real)} {num(r.sim)} {r.unit:<6} {err(r.signed_error)} "
                     f"{absolute}  {r.basis}")
    return "\n".join(lines)
