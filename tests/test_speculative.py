"""Speculative decoding: the acceptance model and its effect, checked by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.deployment import Deployment
from rllmsim.engine import speculation
from rllmsim.errors import ConfigError
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.specs import load_gpu, load_model
from rllmsim.workload.table import make_request_table


def test_expected_tokens_per_step_formula():
    dep = small_deployment(speculative_method="ngram", num_speculative_tokens=4, spec_acceptance_rate=0.6)
    assert dep.spec_tokens_per_step == pytest.approx((1 - 0.6**5) / 0.4)  # 2.3056
    assert dataclasses.replace(dep, spec_acceptance_rate=1.0).spec_tokens_per_step == 5.0
    assert dataclasses.replace(dep, spec_acceptance_rate=0.0).spec_tokens_per_step == 1.0


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
    draft = dataclasses.replace(base, speculative_method="draft", num_speculative_tokens=4,
                                draft_model=load_model("deepseek-r1-distill-qwen-1.5b"))
    assert draft.weight_bytes_per_gpu == pytest.approx(
        base.weight_bytes_per_gpu + load_model("deepseek-r1-distill-qwen-1.5b").weight_bytes(2.0))
    assert draft.num_gpu_blocks < base.num_gpu_blocks


def test_bad_speculative_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="num_speculative_tokens"):
        small_deployment(speculative_method="ngram", num_speculative_tokens=0)
    with pytest.raises(ConfigError, match="draft_model"):
        small_deployment(speculative_method="draft", num_speculative_tokens=2)
