"""Speculative decoding: the acceptance model and its effect, checked by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.deployment import Deployment
from rllmsim import spec_decode
from rllmsim.engine import acceptance, speculation
from rllmsim.errors import ConfigError
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.specs import load_gpu, load_model
from rllmsim.workload.table import make_request_table


def test_rate_is_vllms_accepted_over_drafted():
    """vLLM's 0.6 at k = 4 is a mean acceptance length of 1 + 0.6 x 4 = 3.4 tokens per step."""
    dep = small_deployment(speculative_method="ngram", num_speculative_tokens=4, spec_acceptance_rate=0.6)
    assert dep.spec_tokens_per_step == pytest.approx(3.4)
    assert dataclasses.replace(dep, spec_acceptance_rate=1.0).spec_tokens_per_step == 5.0
    assert dataclasses.replace(dep, spec_acceptance_rate=0.0).spec_tokens_per_step == 1.0
    by_length = small_deployment(speculative_method="ngram", num_speculative_tokens=4, spec_mean_acceptance_length=3.4)
    assert by_length.spec_tokens_per_step == pytest.approx(3.4)
    assert spec_decode.acceptance_rate(by_length) == pytest.approx(0.6)
    assert small_deployment(speculative_method="ngram", num_speculative_tokens=4).spec_tokens_per_step == \
        pytest.approx(1 + 0.7 * 4)  # the default rate


@pytest.mark.parametrize("knobs, needle", [
    ({"spec_acceptance_rate": 0.6, "spec_mean_acceptance_length": 3.4}, "not both"),
    ({"spec_acceptance_rate": 1.2}, r"spec_acceptance_rate must be in \[0, 1\]"),
    ({"spec_acceptance_rate": -0.1}, "spec_acceptance_rate"),
    ({"spec_mean_acceptance_length": 0.5}, r"spec_mean_acceptance_length must be in \[1, 5\]"),
    ({"spec_mean_acceptance_length": 5.5}, r"\[1, 5\]"),
    ({"spec_acceptance_spread": 1.0}, "spec_acceptance_spread"),
])
def test_acceptance_conflicts_and_ranges_are_one_line_errors(knobs, needle):
    with pytest.raises(ConfigError, match=needle) as caught:
        small_deployment(speculative_method="ngram", num_speculative_tokens=4, **knobs)
    assert "\n" not in str(caught.value)


def test_per_position_model_keeps_the_mean_and_decreases():
    rates = acceptance.per_position_rates(0.6, 4)
    p = acceptance.per_position_probability(0.6, 4)
    assert p + p**2 + p**3 + p**4 == pytest.approx(2.4, abs=1e-12)
    assert sum(rates) / 4 == pytest.approx(0.6, abs=1e-12)
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert acceptance.per_position_probability(0.6, 1) == 0.6
    assert acceptance.per_position_rates(1.0, 3) == [1.0, 1.0, 1.0] and acceptance.per_position_rates(0.0, 2) == [0, 0]


def test_per_request_rates_aggregate_to_the_given_rate():
    """Low-rate requests need more steps, so they weigh more in vLLM's aggregate: the Beta's mean
    sits above the rate so that the aggregate tokens per step is 1 + rate x k."""
    draws = acceptance.request_rates(0.6, 4, 0.05, 400_000, np.random.default_rng(0))
    aggregate_length = 1 / np.mean(1 / (1 + 4 * draws))
    assert aggregate_length == pytest.approx(3.4, rel=2e-3)
    assert draws.mean() > 0.6 and 0.09 < draws.std() < 0.13
    same = acceptance.request_rates(0.6, 4, 0.05, 1000, np.random.default_rng(7))
    assert (same == acceptance.request_rates(0.6, 4, 0.05, 1000, np.random.default_rng(7))).all()
    assert (acceptance.request_rates(0.6, 4, 0.0, 5, np.random.default_rng(0)) == 0.6).all()


def _long_run(spread: float, seed: int = 0, n: int = 1500):
    rng = np.random.default_rng(11)
    table = make_request_table(np.cumsum(rng.uniform(0, 0.05, n)), np.full(n, 32), rng.integers(500, 2500, n), "t")
    dep = small_deployment(blocks=20000, max_num_seqs=32, budget=2048, max_model_len=4096, speculative_method="ngram",
                           num_speculative_tokens=4, spec_acceptance_rate=0.6, spec_acceptance_spread=spread)
    return run_simulation(dep, table, cost_model=LinearCostModel(), seed=seed)


@pytest.mark.parametrize("spread, tolerance", [(0.0, 2e-3), (0.05, 1e-2)])
def test_long_run_emits_3_4_tokens_per_verifying_step(spread, tolerance):
    run = _long_run(spread)
    assert run.summary["preemptions"] == 0
    req, tl = run.requests, run.result.timeline
    drafts = tl["decode_tokens"].sum() / 5  # each verifying step feeds 1 + k tokens
    by_hand = (req["output_tokens"] - 1).sum() / drafts  # the first token comes from the prefill
    assert by_hand == pytest.approx(3.4, rel=tolerance)
    simulated = run.summary["speculative"]["simulated"]
    assert simulated["mean_acceptance_length"] == pytest.approx(by_hand, rel=1e-12)
    assert simulated["draft_acceptance_rate"] == pytest.approx(0.6, rel=tolerance * 3.4 / 2.4)


def test_same_seed_same_result_and_the_seed_moves_the_draws():
    first, again, other = (_long_run(0.05, seed, n=200) for seed in (3, 3, 4))
    assert first.requests.equals(again.requests)
    assert (first.result.ledger.accept_rate == again.result.ledger.accept_rate).all()
    assert (first.result.ledger.accept_rate != other.result.ledger.accept_rate).any()


def test_fixed_point_schedule_emits_the_average():
    rate = np.array([speculation.rate_units(2.3056)])
    emitted = speculation.emitted_after(np.array([0]), rate, 1000)
    assert emitted[0] == pytest.approx(2305.6, abs=1.0)
    # the closed form for "steps until n tokens" agrees with counting
    for tokens in (1, 2, 3, 10, 57):
        steps = speculation.steps_to_emit(np.array([0]), rate, np.array([tokens]))[0]
        assert speculation.emitted_after(np.array([0]), rate, steps)[0] >= tokens
        assert steps == 1 or speculation.emitted_after(np.array([0]), rate, steps - 1)[0] < tokens


def test_full_acceptance_emits_k_plus_one_tokens_per_decode_step():
    dep = small_deployment(speculative_method="ngram", num_speculative_tokens=3, spec_acceptance_rate=1.0)
    table = make_request_table(np.zeros(1), [20], [9], "t")
    run = run_simulation(dep, table, cost_model=LinearCostModel(), fast_forward=False)
    # one prefill step emits token 1; two decode steps emit 4 each
    assert run.summary["sim"]["steps"] == 3
    assert run.requests.iloc[0].output_tokens == 9


def test_zero_acceptance_never_beats_baseline():
    base = Deployment(model=load_model("deepseek-r1-distill-qwen-7b"), gpu=load_gpu("h100-sxm"))
    spec = WorkloadSpec(arrival="gamma", rate=1.0, num_requests=60, dataset="math-500")
    tpot = {}
    for name, dep in {"base": base,
                      "ngram": dataclasses.replace(base, speculative_method="ngram", num_speculative_tokens=4,
                                                   spec_acceptance_rate=0.0)}.items():
        tpot[name] = run_simulation(dep, spec, seed=3).summary["tpot_s"]["mean"]
    assert tpot["ngram"] >= tpot["base"]


def test_draft_model_costs_time_and_memory():
    base = Deployment(model=load_model("deepseek-r1-distill-qwen-7b"), gpu=load_gpu("h100-sxm"))
    draft = dataclasses.replace(base, speculative_method="draft_model", num_speculative_tokens=4,
                                draft_model=load_model("deepseek-r1-distill-qwen-1.5b"))
    assert draft.weight_bytes_per_gpu == pytest.approx(
        base.weight_bytes_per_gpu + load_model("deepseek-r1-distill-qwen-1.5b").weight_bytes(2.0))
    assert draft.num_gpu_blocks < base.num_gpu_blocks


def test_bad_speculative_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="num_speculative_tokens"):
        small_deployment(speculative_method="ngram", num_speculative_tokens=0)
    with pytest.raises(ConfigError, match="draft_model"):
        small_deployment(speculative_method="draft", num_speculative_tokens=2)


def test_beta_mean_for_a_vanishing_rate_is_the_rate():
    """Hypothesis found rate 3e-17: the bracket's ends then agree in sign in floating point."""
    from rllmsim.engine.acceptance import beta_mean_for_rate
    assert beta_mean_for_rate(2.942910349802793e-17, 1, 0.05) == pytest.approx(2.942910349802793e-17)
