"""The run summary, with metrics named and computed as `vllm bench serve` reports them.

TTFT = first token - arrival; TTFVT = first answer (visible, after the reasoning) token - arrival; E2EL = last token - arrival; TPOT = (E2EL - TTFT) / (output - 1)
per request with more than one output token; ITL = every gap between consecutive tokens of a
request. Throughputs divide by the benchmark duration: first arrival to last completion.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from rllmsim.engine.cluster import SimulationResult
from rllmsim.metrics.stragglers import DEFAULT_FACTOR, summarize_stragglers

SLO_METRICS = ("ttft", "tpot", "e2el")


def latency_stats(values: np.ndarray) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return {k: float("nan") for k in ("mean", "p50", "p90", "p99")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def kv_stats(timeline: pd.DataFrame, capacity: int, replicas: int, duration_s: float) -> dict[str, float]:
    """KV usage over [0, duration] pooled over replicas, time-weighted (idle time counts as 0)."""
    peak = int(timeline["kv_blocks_peak"].max()) if len(timeline) else 0
    span = capacity * replicas * duration_s
    if span <= 0:
        return {"capacity_blocks": capacity, "peak_blocks": peak, "peak_pct": 0.0, "mean_pct": 0.0, "cv": 0.0}
    mean_blocks = timeline["kv_block_seconds"].sum() / (replicas * duration_s)
    mean_sq = timeline["kv_block_sq_seconds"].sum() / (replicas * duration_s)
    std = float(np.sqrt(max(mean_sq - mean_blocks**2, 0.0)))
    return {
        "capacity_blocks": capacity,
        "peak_blocks": peak,
        "peak_pct": 100.0 * peak / capacity,
        "mean_pct": 100.0 * mean_blocks / capacity,
        "cv": std / mean_blocks if mean_blocks > 0 else 0.0,
    }


def summarize(
    result: SimulationResult,
    requests: pd.DataFrame,
    replicas: int,
    slos_s: Mapping[str, float] | None = None,
    straggler_factor: float = DEFAULT_FACTOR,
) -> dict[str, Any]:
    """Summary metrics of one run; `requests` is `result.ledger.to_frame()`."""
    done = requests[requests["finish_s"].notna()]
    outputs = done["output_tokens"].to_numpy()
    ttft = done["ttft_s"].to_numpy()
    e2el = done["e2el_s"].to_numpy()
    multi = outputs > 1
    tpot = (e2el[multi] - ttft[multi]) / (outputs[multi] - 1)
    start = float(requests["arrival_s"].min()) if len(requests) else 0.0
    duration = float(done["finish_s"].max()) - start if len(done) else 0.0
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    summary: dict[str, Any] = {
        "requests": {
            "arrived": int(len(requests)),
            "completed": int(len(done)),
            "rejected": int(requests["rejected"].sum()),
            "truncated_to_max_model_len": result.truncated_outputs,
        },
        "duration_s": duration,
        "tokens": {"input": int(done["prompt_tokens"].sum()), "output": int(outputs.sum()),
                   "reasoning": int(done["reasoning_tokens"].sum()), "answer": int(done["answer_tokens"].sum())},
        "ttft_s": latency_stats(ttft),
        "ttfvt_s": latency_stats(done["ttfvt_s"].to_numpy()),  # to the first answer token; cut answers excluded
        "tpot_s": latency_stats(tpot),
        "itl_s": {"mean": result.itl.mean(), "p50": result.itl.quantile(0.5),
                  "p90": result.itl.quantile(0.9), "p99": result.itl.quantile(0.99)},
        "e2el_s": latency_stats(e2el),
        "throughput": {"requests_per_s": per_s(len(done)), "output_tokens_per_s": per_s(float(outputs.sum())),
                       "total_tokens_per_s": per_s(float(outputs.sum() + done["prompt_tokens"].sum()))},
        "kv": kv_stats(result.timeline, result.capacity_blocks, replicas, result.simulated_s),
        "preemptions": int(requests["preemptions"].sum()),
        "prefix_cache": {
            "query_tokens": result.prefix_query_tokens,
            "hit_tokens": result.prefix_hit_tokens,
            "hit_rate": result.prefix_hit_tokens / result.prefix_query_tokens if result.prefix_query_tokens else 0.0,
        },
        "stragglers": summarize_stragglers(done, duration, straggler_factor),
        "sim": {"simulated_s": result.simulated_s, "wall_s": result.wall_s, "steps": result.steps,
                "events": result.events, "timeline_rows": int(len(result.timeline))},
    }
    if result.data_parallel is not None:
        summary["data_parallel"] = result.data_parallel
    if result.kv_offloading is not None:
        summary["kv_offloading"] = result.kv_offloading
    if result.pipeline is not None:
        summary["pipeline"] = result.pipeline
    if result.migration is not None:
        summary["migration"] = result.migration
    if slos_s:
        summary["goodput"] = _goodput(ttft, e2el, outputs, slos_s, per_s)
    return summary


def _goodput(ttft, e2el, outputs, slos_s: Mapping[str, float], per_s) -> dict[str, Any]:
    """Requests per second that met every SLO, as `vllm bench serve --goodput` counts them."""
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(outputs > 1, (e2el - ttft) / (outputs - 1), 0.0)
    values = {"ttft": ttft, "tpot": tpot, "e2el": e2el}
    ok = np.ones(len(ttft), dtype=bool)
    for name, limit in slos_s.items():
        ok &= values[name] <= limit
    return {"slos_s": dict(slos_s), "requests_per_s": per_s(int(ok.sum())), "share": float(ok.mean()) if len(ok) else 0.0}
