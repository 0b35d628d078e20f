"""Speculative acceptance as vLLM reports it, and the per-position and per-request models behind it.

vLLM's SpecDecoding metrics (`vllm/v1/spec_decode/metrics.py`) log two figures a user can paste:
- "Draft acceptance rate" = accepted tokens / drafted tokens;
- "Mean acceptance length" = 1 + accepted tokens / drafts (the bonus token included).
With k tokens drafted per step, a step emits on average 1 + rate x k tokens, so the two figures
carry the same information: length = 1 + rate x k. That is the number the engine needs.

vLLM also logs a per-position acceptance rate: the share of drafts whose i-th token was accepted.
A draft is accepted as a prefix (position i only if 1..i-1 were), so these decrease with i. The
model used here gives every position the same conditional probability p, hence position i the
rate p^i, with p solving sum_{i=1..k} p^i = rate x k: it reproduces the mean exactly and the
prefix semantics qualitatively (real drafters lose a little more at later positions).

Requests differ in how predictable they are, so each request draws its own rate from a Beta
distribution. Its spread s is the variance as a share of the largest a rate with that mean can
have, m(1 - m); the Beta's concentration is 1/s - 1. vLLM's printed rate is an aggregate over
drafts, and a request with a low rate needs more steps for the same output, so it weighs more in
that aggregate. The Beta's mean m is therefore set above the given rate so that the aggregate of
a long run is the given rate: E[1 / (1 + k R)] = 1 / (1 + k rate) for R ~ Beta, which has the
closed form 2F1(1, a; a + b; -k).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import hyp2f1

from rllmsim.errors import ConfigError

#: vLLM-style draft acceptance rate used when neither the rate nor the mean length is given.
DEFAULT_ACCEPTANCE_RATE = 0.7
#: Per-request spread (variance / m(1 - m)): at rate 0.6 a standard deviation of about 0.11 over
#: requests. A judgement, not a measurement: a modest difference between problems.
DEFAULT_ACCEPTANCE_SPREAD = 0.05


def resolve_rate(rate: float | None, mean_length: float | None, k: int) -> float:
    """The draft acceptance rate from whichever of vLLM's two figures was given (not both)."""
    if rate is not None and mean_length is not None:
        raise ConfigError("spec_acceptance_rate and spec_mean_acceptance_length are the same figure; "
                          "give --acceptance-rate or --mean-acceptance-length, not both")
    if mean_length is not None:
        if not 1.0 <= mean_length <= k + 1:
            raise ConfigError(f"spec_mean_acceptance_length must be in [1, {k + 1}] (1 + k) with "
                              f"--num-speculative-tokens {k}, got {mean_length}")
        return (mean_length - 1.0) / k
    rate = DEFAULT_ACCEPTANCE_RATE if rate is None else rate
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"spec_acceptance_rate must be in [0, 1] (accepted / drafted tokens), got {rate}")
    return float(rate)


def check_spread(spread: float) -> None:
    if not 0.0 <= spread < 1.0:
        raise ConfigError(f"spec_acceptance_spread must be in [0, 1) (0: every request alike), got {spread}")


def mean_acceptance_length(rate: float, k: int) -> float:
    """vLLM's "Mean acceptance length": tokens a verifying step emits on average."""
    return 1.0 + rate * k


def per_position_probability(rate: float, k: int) -> float:
    """The conditional acceptance p with sum_{i=1..k} p^i = rate x k (p = rate when k = 1)."""
    if rate <= 0.0 or rate >= 1.0 or k == 1:
        return float(min(max(rate, 0.0), 1.0))
    from scipy.optimize import brentq  # here: scipy.optimize costs every process half a second to import

    return float(brentq(lambda p: sum(p**i for i in range(1, k + 1)) - rate * k, 0.0, 1.0, xtol=1e-14))


def per_position_rates(rate: float, k: int) -> list[float]:
    """The rates vLLM would log per position, 1..k: p^i, decreasing, averaging `rate`."""
    p = per_position_probability(rate, k)
    return [p**i for i in range(1, k + 1)]


def _mean_inverse_length(mean: float, concentration: float, k: int) -> float:
    """E[1 / (1 + k R)] for R ~ Beta(mean x c, (1 - mean) x c)."""
    return float(hyp2f1(1.0, mean * concentration, concentration, -float(k)))


def beta_mean_for_rate(rate: float, k: int, spread: float) -> float:
    """The per-request mean whose draws give `rate` as vLLM aggregates it over a long run."""
    if spread == 0.0 or rate in (0.0, 1.0):
        return rate
    concentration = 1.0 / spread - 1.0
    target = 1.0 / (1.0 + k * rate)
    upper = 1.0 - 1e-12
    if _mean_inverse_length(upper, concentration, k) >= target:
        return upper
    if _mean_inverse_length(rate, concentration, k) <= target:
        return rate  # a rate so near 0 that its own mean meets the target in floating point
    from scipy.optimize import brentq

    return float(brentq(lambda m: _mean_inverse_length(m, concentration, k) - target, rate, upper, xtol=1e-13))


def request_rates(rate: float, k: int, spread: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """One draft acceptance rate per request, in request order, from the run's seeded stream.

    Without spread (or at rate 0 or 1, where a rate cannot vary) every request gets `rate` and
    the stream is not touched.
    """
    if spread == 0.0 or rate in (0.0, 1.0) or n == 0:
        return np.full(n, rate, dtype=np.float64)
    mean = beta_mean_for_rate(rate, k, spread)
    concentration = 1.0 / spread - 1.0
    alpha, beta = mean * concentration, (1.0 - mean) * concentration
    if not (math.isfinite(alpha) and beta > 0.0):
        return np.full(n, mean, dtype=np.float64)
    return rng.beta(alpha, beta, size=n)
