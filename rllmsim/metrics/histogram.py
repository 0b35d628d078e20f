"""A log-binned histogram for inter-token latencies.

A day of reasoning traffic emits billions of tokens; keeping every inter-token gap is impossible.
Gaps are binned on a logarithmic grid (0.1% wide from 1 microsecond to 1e5 seconds), which keeps
percentiles accurate to 0.1% relative, while count, sum and maximum are kept exactly so the mean is
exact.
"""

from __future__ import annotations

import numpy as np

_LO = 1e-6
_REL_WIDTH = 1e-3
_BINS = int(np.ceil(np.log(1e5 / _LO) / np.log1p(_REL_WIDTH))) + 2


class LogHistogram:
    """Weighted samples of positive durations, binned on a log grid."""

    def __init__(self) -> None:
        self.counts = np.zeros(_BINS, dtype=np.float64)
        self.count = 0.0
        self.total = 0.0
        self.maximum = 0.0

    def add(self, values: np.ndarray, weights: np.ndarray | float = 1.0) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64), values.shape)
        idx = np.clip(np.log(np.maximum(values, _LO) / _LO) / np.log1p(_REL_WIDTH), 0, _BINS - 1).astype(np.int64)
        self.counts += np.bincount(idx, weights=w, minlength=_BINS)
        self.count += float(w.sum())
        self.total += float((values * w).sum())
        self.maximum = max(self.maximum, float(values.max()))

    def merge(self, other: "LogHistogram") -> None:
        self.counts += other.counts
        self.count += other.count
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)

    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1), as the geometric centre of the bin that holds it."""
        if not self.count:
            return float("nan")
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, q * self.count, side="left"))
        centre = _LO * np.exp((i + 0.5) * np.log1p(_REL_WIDTH))
        return float(min(centre, self.maximum))
