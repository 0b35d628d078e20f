"""Stragglers: requests that run far longer than their peers and keep the GPU busy alone.

A request is a straggler when its E2E latency exceeds `factor` times the median E2E latency of its
cohort (its dataset). Their cost is the time during which only stragglers are in flight: the
GPU decodes a handful of long sequences while the rest of the batch has long finished.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_FACTOR = 3.0


def straggler_mask(requests: pd.DataFrame, factor: float = DEFAULT_FACTOR) -> np.ndarray:
    """True for completed requests whose E2EL exceeds factor x their dataset's median E2EL."""
    e2el = requests["e2el_s"]
    medians = e2el.groupby(requests["dataset"]).transform("median")
    return (e2el > factor * medians).to_numpy()


def stragglers_only_time(arrival: np.ndarray, finish: np.ndarray, is_straggler: np.ndarray) -> float:
    """Seconds during which at least one straggler and no other request is in flight."""
    if not is_straggler.any():
        return 0.0
    times = np.concatenate([arrival, finish])
    kind = np.concatenate([is_straggler, is_straggler])
    step = np.concatenate([np.ones(len(arrival)), -np.ones(len(finish))])
    order = np.lexsort((step, times))  # at equal times, finishes (-1) before arrivals
    times, kind, step = times[order], kind[order], step[order]
    in_flight_s = np.cumsum(np.where(kind, step, 0))
    in_flight_other = np.cumsum(np.where(kind, 0, step))
    alone = (in_flight_s[:-1] > 0) & (in_flight_other[:-1] == 0)
    return float((np.diff(times) * alone).sum())


def summarize_stragglers(requests: pd.DataFrame, makespan_s: float, factor: float = DEFAULT_FACTOR) -> dict:
    done = requests[requests["finish_s"].notna()]
    if done.empty:
        return {"count": 0, "factor": factor, "threshold_s": float("nan"), "share_of_makespan": 0.0,
                "stragglers_only_s": 0.0}
    mask = straggler_mask(done, factor)
    alone = stragglers_only_time(done["arrival_s"].to_numpy(), done["finish_s"].to_numpy(), mask)
    by_dataset = (factor * done.groupby("dataset")["e2el_s"].median()).to_dict()
    return {
        "count": int(mask.sum()),
        "factor": factor,
        "threshold_s": float(factor * done["e2el_s"].median()),
        "threshold_s_by_dataset": {str(k): float(v) for k, v in by_dataset.items()},
        "stragglers_only_s": alone,
        "share_of_makespan": alone / makespan_s if makespan_s > 0 else 0.0,
    }
