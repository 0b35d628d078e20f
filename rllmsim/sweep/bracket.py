"""A closed-form guess of a candidate's sustainable rate, to start its search near the answer.

The rate bisection used to double from `--start-rate` until the SLOs flipped: five or six probes
before the bracket is even found, each a full simulation. The steady state of a replica has a
simple bound instead: with B sequences decoding, each engine step takes t(B) (the cost model's
step time, with the prefill tokens the arrivals bring in mixed into it) and moves every sequence
one token, so the replica finishes B / (mean output x t(B)) requests per second. B is bounded by
`max_num_seqs`, by the KV cache and by the TPOT (and E2EL) limits, which t(B) must stay under. The
KV bound keeps the summed context of B sequences under the cache in all but ~1 % of steps (its
mean plus 2.33 standard deviations, contexts taken as independent): a cache that is full more
often queues new requests long enough to miss a TTFT p99. The best such rate is the guess.

The guess only chooses where the first probes go (`rllmsim.sweep.plan.bisect_rate`): every rate
a plan reports is still a simulated probe's verdict, so a poor guess costs probes, never truth.
"""

from __future__ import annotations

import math

import numpy as np

from rllmsim.cost.base import CostModel
from rllmsim.cost.features import StepFeatures
from rllmsim.deployment import Deployment
from rllmsim.rng import RngStreams
from rllmsim.simulation import WorkloadSpec, build_workload
from rllmsim.sweep.slo import SLO

#: Requests drawn to estimate the workload's length statistics (lengths only; nothing is simulated).
LENGTH_SAMPLE = 2000
#: Batch sizes tried, spaced geometrically from 1 to the largest that fits: the rate is smooth in B.
BATCH_POINTS = 128
#: Standard deviations of the summed KV demand kept free: the normal quantile of 0.99.
KV_Z = 2.33


def workload_lengths(workload: dict, seed: int, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths of the probes' workload, drawn as the probes draw them."""
    spec = WorkloadSpec(**{**workload, "rate": 1.0, "num_requests": LENGTH_SAMPLE})
    table, _ = build_workload(spec, RngStreams(seed), model)
    return table["prompt_tokens"].to_numpy(np.int64), table["output_tokens"].to_numpy(np.int64)


def estimate_rate(unit: Deployment, cost: CostModel, prompt: np.ndarray, output: np.ndarray,
                  slos: tuple[SLO, ...]) -> float | None:
    """Requests per second one replica of `unit` can finish in steady state within the step-time
    limits the SLOs imply; None when no batch size meets them (the search then starts as before)."""
    prompt, output = prompt.astype(float), np.maximum(output, 1).astype(float)
    mean_prompt, mean_output = float(prompt.mean()), float(output.mean())
    # the context of a decoding slot: p + j, j uniform over its output, weighted by its steps
    context = float((output * (prompt + output / 2)).sum() / output.sum())
    square = float((output * (prompt ** 2 + prompt * output + output ** 2 / 3)).sum() / output.sum())
    spread = math.sqrt(max(square - context ** 2, 0.0))
    kv_tokens = unit.num_gpu_blocks * unit.block_size
    # the largest B with B x context + KV_Z x sqrt(B) x spread <= kv_tokens (a quadratic in sqrt(B))
    context = max(context, 1.0)
    root = (math.sqrt((KV_Z * spread) ** 2 + 4 * context * kv_tokens) - KV_Z * spread) / (2 * context)
    most = int(min(unit.max_num_seqs, math.floor(root ** 2)))
    if most < 1:
        return None
    batch = np.unique(np.geomspace(1, most, BATCH_POINTS).astype(np.int64))
    # per step, the arrivals bring B / mean_output new prompts (of mean_prompt tokens each)
    new_seqs = batch / mean_output
    prefill = np.minimum(np.rint(new_seqs * mean_prompt).astype(np.int64), unit.max_num_batched_tokens)
    pairs = np.rint(new_seqs * mean_prompt * (mean_prompt + 1) / 2).astype(np.int64)
    features = StepFeatures(prefill_tokens=prefill, prefill_seqs=np.ceil(new_seqs).astype(np.int64),
                            prefill_attn_pairs=pairs, prefill_kv_tokens=prefill, decode_seqs=batch,
                            decode_tokens=batch, decode_kv_tokens=np.rint(batch * context).astype(np.int64))
    step = np.asarray(cost.step_time(features), dtype=float)
    fits = step <= _step_limit(slos, output)
    if not fits.any():
        return None
    rates = batch / (mean_output * step)
    best = float(rates[fits].max())
    return best if math.isfinite(best) and best > 0 else None


def _step_limit(slos: tuple[SLO, ...], output: np.ndarray) -> float:
    """The longest mean step time the per-token SLOs allow: TPOT and ITL limits directly, an
    E2EL limit spread over the output length at the SLO's percentile."""
    limit = math.inf
    for slo in slos:
        if slo.metric in ("tpot", "itl"):
            limit = min(limit, slo.limit_s)
        elif slo.metric == "e2el":
            q = 50.0 if slo.stat == "mean" else float(slo.stat[1:])
            limit = min(limit, slo.limit_s / float(np.percentile(output, q)))
    return limit
