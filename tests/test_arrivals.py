"""Arrival processes: rate and CV as requested, vLLM's Gamma convention, determinism, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rllmsim.errors import ConfigError
from rllmsim.rng import RngStreams
from rllmsim.workload.arrivals import ARRIVAL_PROCESSES, arrival_times, constant, gamma, poisson

N = 20_000


def _rate_and_cv(times: np.ndarray) -> tuple[float, float]:
    gaps = np.diff(times)
    return 1.0 / gaps.mean(), gaps.std() / gaps.mean()


@pytest.mark.parametrize(
    ("rate", "cv"), [(1.0, 0.5), (10.0, 1.0), (4.0, 2.0), (0.2, 1.5), (50.0, 0.25)]
)
def test_gamma_matches_rate_and_cv(rate: float, cv: float) -> None:
    times = gamma(rate, N, RngStreams(7).stream("arrivals"), cv=cv)
    got_rate, got_cv = _rate_and_cv(times)
    assert got_rate == pytest.approx(rate, rel=0.05)
    assert got_cv == pytest.approx(cv, rel=0.05)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_burstiness_given_directly(burstiness: float) -> None:
    times = gamma(8.0, N, RngStreams(3).stream("arrivals"), burstiness=burstiness)
    got_rate, got_cv = _rate_and_cv(times)
    assert got_rate == pytest.approx(8.0, rel=0.05)
    assert got_cv == pytest.approx(1.0 / math.sqrt(burstiness), rel=0.05)


def test_gamma_draws_exactly_like_vllm_bench() -> None:
    """Intervals are rng.gamma(shape=b, scale=1/(rate*b)), first request at t=0."""
    rate, b, n = 3.0, 0.4, 50
    times = gamma(rate, n, np.random.default_rng(11), burstiness=b)
    intervals = np.random.default_rng(11).gamma(shape=b, scale=1.0 / (rate * b), size=n - 1)
    assert times[0] == 0.0
    np.testing.assert_allclose(times[1:], np.cumsum(intervals))


def test_cv_maps_to_burstiness() -> None:
    a = gamma(5.0, 100, np.random.default_rng(1), cv=2.0)
    b = gamma(5.0, 100, np.random.default_rng(1), burstiness=0.25)
    np.testing.assert_array_equal(a, b)


def test_poisson_cv_is_one_and_equals_gamma_burstiness_one() -> None:
    times = poisson(5.0, N, RngStreams(5).stream("arrivals"))
    got_rate, got_cv = _rate_and_cv(times)
    assert got_rate == pytest.approx(5.0, rel=0.05)
    assert got_cv == pytest.approx(1.0, rel=0.05)
    same = gamma(5.0, N, RngStreams(5).stream("arrivals"), burstiness=1.0)
    np.testing.assert_array_equal(times, same)


@pytest.mark.parametrize("process", sorted(ARRIVAL_PROCESSES))
def test_shape_and_determinism(process: str) -> None:
    kw = {"cv": 2.0} if process == "gamma" else {}
    a = arrival_times(process, 2.0, 1000, RngStreams(42).stream("arrivals"), **kw)
    b = arrival_times(process, 2.0, 1000, RngStreams(42).stream("arrivals"), **kw)
    assert a.dtype == np.float64 and a.shape == (1000,)
    assert a[0] == 0.0 and np.all(np.diff(a) >= 0)
    np.testing.assert_array_equal(a, b)


def test_different_seed_gives_different_arrivals() -> None:
    a = poisson(2.0, 100, RngStreams(1).stream("arrivals"))
    b = poisson(2.0, 100, RngStreams(2).stream("arrivals"))
    assert not np.array_equal(a, b)


def test_constant_is_deterministic_and_draws_nothing() -> None:
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    times = constant(4.0, 5, rng)
    np.testing.assert_allclose(times, [0.0, 0.25, 0.5, 0.75, 1.0])
    assert rng.bit_generator.state == before


def test_limits_match_vllm_inf_conventions() -> None:
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(poisson(math.inf, 4, rng), np.zeros(4))
    np.testing.assert_allclose(gamma(2.0, 3, rng, burstiness=math.inf), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(gamma(2.0, 3, rng, cv=0.0), [0.0, 0.5, 1.0])
    assert poisson(1.0, 1, rng).tolist() == [0.0]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda r: poisson(-1, 10, r), "rate"),
        (lambda r: poisson(0, 10, r), "rate"),
        (lambda r: poisson(float("nan"), 10, r), "rate"),
        (lambda r: poisson(1.0, 0, r), "n "),
        (lambda r: poisson(1.0, 2.5, r), "n "),
        (lambda r: poisson(1.0, True, r), "n "),
        (lambda r: gamma(1.0, 10, r, cv=-1.0), "cv"),
        (lambda r: gamma(1.0, 10, r, cv=float("inf")), "cv"),
        (lambda r: gamma(1.0, 10, r, burstiness=0.0), "burstiness"),
        (lambda r: gamma(1.0, 10, r), "cv or burstiness"),
        (lambda r: gamma(1.0, 10, r, cv=1.0, burstiness=1.0), "cv or burstiness"),
        (lambda r: arrival_times("weibull", 1.0, 10, r), "poisson"),
        (lambda r: arrival_times("poisson", 1.0, 10, r, cv=2.0), "gamma"),
    ],
)
def test_bad_input_is_one_line_config_error(call, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        call(np.random.default_rng(0))
    msg = str(exc.value)
    assert field in msg and "\n" not in msg
