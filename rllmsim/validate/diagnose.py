"""Where does a replay's error come from? Step-time evidence read off the real engine's own log.

The engine log gives, each second, the running count and the prompt and generated tokens; the
request timestamps give each decoding request's context. Together they state what the engine did
in that second, independently of how the simulator scheduled it, so the cost model can be checked
on the real batches:

- `decode_steps`: in seconds without prompt tokens every running request decodes once per step,
  so the real step time is running / generated tokens per second; it is set beside the cost
  model's time for that batch (same sequences, same contexts), by batch size.
- `residual_fit`: over all seconds with work, the real second minus the cost model's predicted
  busy time, fitted (non-negative least squares) as extra seconds per prompt token and per
  decode token (= per running sequence per step). A TP-only term shows up as a gap between runs
  that differ only in TP; a per-sequence overhead as a decode-token term.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from rllmsim.cost.base import CostModel
from rllmsim.cost.features import StepFeatures
from rllmsim.validate.recorded import RecordedRun

BUCKETS = (0, 1, 8, 32, 64, 127, 128, 256, 1024, 1 << 20)


def log_work(run: RecordedRun) -> pd.DataFrame | None:
    """Per log tick: decoding requests and their mean context at mid-interval (from the request
    timestamps), and the logged prompt / generated tokens per second."""
    log = run.timeseries
    if log is None or log["gen_tps"].isna().all():
        return None
    req = run.requests
    first = req["first_token_s"].to_numpy()
    finish = req["finish_s"].to_numpy()
    prompt = req["prompt_tokens"].to_numpy(np.float64)
    out = req["output_tokens"].to_numpy(np.float64)
    rows = []
    for t, gen, ptok in zip(log["t_s"].to_numpy(), log["gen_tps"].to_numpy(), log["prompt_tps"].to_numpy()):
        tau = t - 0.5
        dec = (first <= tau) & (finish > tau)
        n = int(dec.sum())
        if n == 0 or not np.isfinite(gen) or gen <= 0:
            continue
        done = (tau - first[dec]) / np.maximum(finish[dec] - first[dec], 1e-12) * (out[dec] - 1)
        ctx = float((prompt[dec] + 1 + done).mean())
        rows.append({"t_s": t, "decoding": n, "mean_context": ctx, "gen_tps": float(gen),
                     "prompt_tps": float(ptok) if np.isfinite(ptok) else 0.0})
    return pd.DataFrame(rows) if rows else None


def _features(work: pd.DataFrame) -> tuple[StepFeatures, np.ndarray]:
    """One representative step per tick (n decodes at the mean context, plus the tick's prompt
    tokens spread over its steps as one chunk), and the number of steps in the tick."""
    n = work["decoding"].to_numpy(np.int64)
    steps = work["gen_tps"].to_numpy() / n
    chunk = np.round(work["prompt_tps"].to_numpy() / steps).astype(np.int64)
    kv = np.round(n * work["mean_context"].to_numpy()).astype(np.int64)
    features = StepFeatures(
        prefill_tokens=chunk, prefill_seqs=(chunk > 0).astype(np.int64),
        prefill_attn_pairs=chunk * (chunk + 1) // 2, prefill_kv_tokens=chunk,
        decode_seqs=n, decode_tokens=n, decode_kv_tokens=kv,
    )
    return features, steps


def decode_steps(run: RecordedRun, cost_model: CostModel) -> pd.DataFrame | None:
    """Real vs predicted decode step time (ms) in decode-only seconds, by running batch size."""
    work = log_work(run)
    if work is None:
        return None
    work = work[work["prompt_tps"] == 0]
    if work.empty:
        return None
    features, steps = _features(work)
    work = work.assign(real_ms=1e3 / steps, pred_ms=1e3 * cost_model.step_time(features))
    groups = work.groupby(pd.cut(work["decoding"], BUCKETS), observed=True)
    table = groups.agg(ticks=("decoding", "size"), mean_context=("mean_context", "median"),
                       real_ms=("real_ms", "median"), pred_ms=("pred_ms", "median"))
    table["ratio"] = table["real_ms"] / table["pred_ms"]
    table.index = [f"{iv.left + 1}-{iv.right}" if iv.right - iv.left > 1 else f"{iv.right}" for iv in table.index]
    return table.reset_index(names="running")


def residual_fit(run: RecordedRun, cost_model: CostModel, min_running: int = 8) -> dict[str, Any] | None:
    """Extra seconds per prompt token and per decode token the real engine spent beyond the cost
    model, from seconds with at least `min_running` decoding requests."""
    work = log_work(run)
    if work is None:
        return None
    work = work[work["decoding"] >= min_running]
    if len(work) < 4:
        return None
    features, steps = _features(work)
    predicted = steps * cost_model.step_time(features)
    design = np.column_stack([work["prompt_tps"].to_numpy(), work["gen_tps"].to_numpy()])
    coef, _ = nnls(design, 1.0 - predicted)
    return {
        "ticks": int(len(work)),
        "predicted_busy_fraction_median": float(np.median(predicted)),
        "extra_s_per_prompt_token": float(coef[0]),
        "extra_s_per_decode_token": float(coef[1]),
        "note": "real second = predicted busy time + a*prompt tokens + b*decode tokens (NNLS); "
                "b is the missing cost per running sequence per step",
    }


def format_decode_steps(table: pd.DataFrame) -> str:
    lines = [f"{'running':>9} {'ticks':>6} {'context':>8} {'real ms':>9} {'model ms':>9} {'real/model':>10}"]
    for r in table.itertuples(index=False):
        lines.append(f"{r.running:>9} {r.ticks:>6} {r.mean_context:>8.0f} {r.real_ms:>9.2f} {r.pred_ms:>9.2f} "
                     f"{r.ratio:>10.2f}")
    return "\n".join(lines)
