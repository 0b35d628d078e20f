"""Open-loop arrival processes: when each request is sent, in seconds from the start.

The Gamma process is the one `vllm bench serve` uses (`--request-rate R --burstiness B`):
inter-arrival intervals ~ Gamma(shape=B, scale=1/(R*B)), so the mean interval is 1/R and the
coefficient of variation (CV) of the intervals is 1/sqrt(B). B=1 is Poisson; B<1 is burstier;
B=inf is a constant interval. We draw with `rng.gamma(shape, scale)` exactly that way, so a
simulated workload has the statistics of the benchmark it is compared with.

Timing convention: the first request arrives at t=0 and request i at the sum of the first i
intervals (n-1 intervals for n requests), as the classic `benchmark_serving.py` loop did (send,
then sleep). Newer `vllm bench serve` precomputes n delays, also delays the first request, and
rescales all delays so the last lands at n/R; that rescaling changes neither the CV nor, for
large n, the rate, and we do not reproduce it.

All functions take the generator explicitly; callers pass `RngStreams(seed).stream("arrivals")`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np

from rllmsim.errors import ConfigError

ArrivalProcess = Callable[..., np.ndarray]


def _check_rate(rate: float, allow_inf: bool = True) -> float:
    if isinstance(rate, bool) or not isinstance(rate, Real) or math.isnan(rate) or rate <= 0:
        raise ConfigError(f"rate must be > 0 req/s, got {rate!r}")
    if math.isinf(rate) and not allow_inf:
        raise ConfigError(f"rate must be a finite number of req/s, got {rate!r}")
    return float(rate)


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ConfigError(f"n (number of requests) must be an integer >= 1, got {n!r}")
    return int(n)


def _from_intervals(intervals: np.ndarray) -> np.ndarray:
    """Arrival times: 0 for the first request, then cumulative sums of the n-1 intervals."""
    times = np.empty(intervals.shape[0] + 1, dtype=np.float64)
    times[0] = 0.0
    np.cumsum(intervals, out=times[1:])
    return times


def gamma(
    rate: float,
    n: int,
    rng: np.random.Generator,
    cv: float | None = None,
    burstiness: float | None = None,
) -> np.ndarray:
    """Gamma-renewal arrivals at `rate` req/s, shaped by exactly one of `cv` or `burstiness`.

    cv is the coefficient of variation of the intervals; it maps to burstiness = 1/cv**2.
    burstiness=inf (or cv=0) gives constant intervals, as in vLLM. rate=inf sends everything at
    t=0, as `--request-rate inf` does.
    """
    rate = _check_rate(rate)
    n = _check_n(n)
    if (cv is None) == (burstiness is None):
        raise ConfigError("gamma arrivals need exactly one of cv or burstiness, e.g. cv=2.0")
    if cv is not None:
        if isinstance(cv, bool) or not isinstance(cv, Real) or not math.isfinite(cv) or cv < 0:
            raise ConfigError(f"cv must be a finite number >= 0 (1 = Poisson), got {cv!r}")
        shape = math.inf if cv == 0 else 1.0 / float(cv) ** 2
    else:
        b = burstiness
        if isinstance(b, bool) or not isinstance(b, Real) or math.isnan(b) or b <= 0:
            raise ConfigError(f"burstiness must be > 0 (1 = Poisson), got {burstiness!r}")
        shape = float(b)
    if math.isinf(rate):
        return np.zeros(n, dtype=np.float64)
    if math.isinf(shape):
        return constant(rate, n, rng)
    return _from_intervals(rng.gamma(shape=shape, scale=1.0 / (rate * shape), size=n - 1))


def poisson(rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson arrivals: exponential intervals, drawn as Gamma(shape=1) so that
    `poisson(...)` and `gamma(..., burstiness=1)` give identical times from the same stream."""
    return gamma(rate, n, rng, burstiness=1.0)


def constant(rate: float, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Deterministic arrivals every 1/rate seconds; draws nothing from `rng`."""
    rate = _check_rate(rate)
    n = _check_n(n)
    if math.isinf(rate):
        return np.zeros(n, dtype=np.float64)
    return np.arange(n, dtype=np.float64) / rate


ARRIVAL_PROCESSES: dict[str, ArrivalProcess] = {
    "poisson": poisson,
    "gamma": gamma,
    "constant": constant,
}


def arrival_times(
    process: str,
    rate: float,
    n: int,
    rng: np.random.Generator,
    cv: float | None = None,
    burstiness: float | None = None,
) -> np.ndarray:
    """Arrival times (float64 seconds, first at 0, non-decreasing) from a registered process."""
    fn = ARRIVAL_PROCESSES.get(process)
    if fn is None:
        choices = ", ".join(sorted(ARRIVAL_PROCESSES))
        raise ConfigError(f"unknown arrival process {process!r}; choose one of: {choices}")
    shape: dict[str, Any] = {}
    if cv is not None:
        shape["cv"] = cv
    if burstiness is not None:
        shape["burstiness"] = burstiness
    if shape and fn is not gamma:
        raise ConfigError(
            f"{'/'.join(shape)} only shapes the gamma process, not {process!r}; "
            "use process='gamma' or drop it"
        )
    return fn(rate, n, rng, **shape)
