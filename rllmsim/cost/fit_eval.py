"""Held-out evaluation of step-time fits: error metrics and the two train/test splits.

- random: a seeded random 20% of the steps is held out;
- extrapolation: per step kind (prefill, decode, mixed), the model is fitted on steps whose batch
  size and mean context are both in the smaller half of that kind's distinct values, and tested
  on steps whose batch size and context are both in the larger half — the test shapes lie beyond
  the training range on both axes. Steps in the two mixed quadrants are left out of this split.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

RANDOM_SPLIT = "random_20"
EXTRAPOLATION_SPLIT = "extrapolation"


def error_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAPE and P90 absolute percentage error (in %), R², and the mean signed error (in %)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if len(y_true) == 0:
        return {"n": 0, "mape_pct": float("nan"), "p90_ape_pct": float("nan"),
                "r2": float("nan"), "bias_pct": float("nan")}
    rel = (y_pred - y_true) / y_true
    ape = np.abs(rel) * 100.0
    ss_res = float(np.sum((y_true - y_pred) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return {
        "n": int(len(y_true)),
        "mape_pct": float(ape.mean()),
        "p90_ape_pct": float(np.percentile(ape, 90)),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "bias_pct": float(rel.mean() * 100.0),
    }


def random_split(n: int, test_fraction: float = 0.2, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks with round(test_fraction * n) test rows."""
    rng = np.random.default_rng(seed)
    test = np.zeros(n, dtype=bool)
    test[rng.permutation(n)[: max(1, round(test_fraction * n))]] = True
    return ~test, test


def batch_size_and_context(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Sequences in the step, and the mean tokens of KV each one attends over."""
    seqs = (frame["prefill_seqs"] + frame["decode_seqs"]).to_numpy(dtype=np.float64)
    kv = (frame["prefill_kv_tokens"] + frame["decode_kv_tokens"]).to_numpy(dtype=np.float64)
    return seqs, kv / np.maximum(seqs, 1.0)


def extrapolation_split(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks: small batch and context per kind vs large on both."""
    seqs, ctx = batch_size_and_context(frame)
    kinds = frame["kind"].to_numpy()
    train = np.zeros(len(frame), dtype=bool)
    test = np.zeros(len(frame), dtype=bool)
    for kind in np.unique(kinds):
        m = kinds == kind
        s_med = np.median(np.unique(seqs[m]))
        c_med = np.median(np.unique(np.round(ctx[m])))
        train |= m & (seqs <= s_med) & (ctx <= c_med)
        test |= m & (seqs > s_med) & (ctx > c_med)
    return train, test


def held_out_metrics(frame: pd.DataFrame, test_fraction: float, seed: int,
                     evaluate: Callable[[np.ndarray, np.ndarray], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`evaluate(train, test)` on the two held-out splits every calibration reports: a random
    share of the steps, and extrapolation from small batches and contexts to large ones."""
    train, test = random_split(len(frame), test_fraction, seed)
    random_block = dict(evaluate(train, test), definition=f"random {test_fraction:.0%} of steps held out (seed {seed})")
    train, test = extrapolation_split(frame)
    extrapolation_block = dict(evaluate(train, test), definition=(
        "per step kind: fit on steps in the smaller half of batch sizes and mean contexts, "
        "test on steps in the larger half of both"))
    return {RANDOM_SPLIT: random_block, EXTRAPOLATION_SPLIT: extrapolation_block}

