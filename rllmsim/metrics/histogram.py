"""A log-binned histogram for inter-token latencies.

A day of reasoning traffic emits billions of tokens; keeping every inter-token gap is impossible.
Gaps are binned on a logarithmic grid (0.1% wide from 1 microsecond to 1e5 seconds), which keeps
percentiles accurate to 0.1% relative, while count, sum and maximum are kept exactly so the mean is
exact. Samples are buffered and binned in batches: the simulator adds a few values at a time,
millions of times, and binning each handful separately would cost more than the simulation.
"""

from __future__ import annotations

import numpy as np

_LO = 1e-6
_LOG_WIDTH = float(np.log1p(1e-3))
_BINS = int(np.ceil(np.log(1e5 / _LO) / _LOG_WIDTH)) + 2
_FLUSH_AT = 1 << 16


class LogHistogram:
    """Weighted samples of positive durations, binned on a log grid."""

    def __init__(self) -> None:
        self.counts = np.zeros(_BINS, dtype=np.float64)
        self.count = 0.0
        self.total = 0.0
        self.maximum = 0.0
        self._values: list[np.ndarray] = []
        self._weights: list[float] = []
        self._sizes: list[int] = []
        self._pending = 0

    def add(self, values: np.ndarray, weight: float = 1.0) -> None:
        """Add a 1-D array of samples, each counted `weight` times."""
        size = len(values)
        self._values.append(values)
        self._weights.append(weight)
        self._sizes.append(size)
        self._pending += size
        if self._pending >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        values = np.concatenate(self._values).astype(np.float64, copy=False)
        weights = np.repeat(np.asarray(self._weights, dtype=np.float64), self._sizes)
        self._values, self._weights, self._sizes, self._pending = [], [], [], 0
        idx = np.clip(np.log(np.maximum(values, _LO) / _LO) / _LOG_WIDTH, 0, _BINS - 1).astype(np.int64)
        self.counts += np.bincount(idx, weights=weights, minlength=_BINS)
        self.count += float(weights.sum())
        self.total += float((values * weights).sum())
        self.maximum = max(self.maximum, float(values.max()))

    def mean(self) -> float:
        self._flush()
        return self.total / self.count if self.count else float("nan")

    def std(self) -> float:
        """Population standard deviation around the exact mean, each sample at its bin's centre
        (vllm bench serve reports one for ITL)."""
        self._flush()
        if not self.count:
            return float("nan")
        centres = np.minimum(_LO * np.exp((np.arange(_BINS) + 0.5) * _LOG_WIDTH), self.maximum)
        return float(np.sqrt((self.counts * (centres - self.mean()) ** 2).sum() / self.count))

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1), as the geometric centre of the bin that holds it."""
        self._flush()
        if not self.count:
            return float("nan")
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, q * self.count, side="left"))
        centre = _LO * np.exp((i + 0.5) * _LOG_WIDTH)
        return float(min(centre, self.maximum))
