"""Hand-checked engine cases: numbers a person can verify with a pencil."""

from __future__ import annotations

import numpy as np
import pytest

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.cost.features import BatchShape, StepFeatures
from rllmsim.simulation import run_simulation
from rllmsim.workload.table import make_request_table


def _table(arrivals, prompts, outputs):
    return make_request_table(np.asarray(arrivals, float), prompts, outputs, "test")


def test_single_request_ttft_is_one_prefill_step_and_decode_steps_follow():
    cost = LinearCostModel(base=0.01, per_token=1e-4, per_kv=1e-6)
    run = run_simulation(small_deployment(), _table([0.0], [100], [4]), cost_model=cost)
    row = run.requests.iloc[0]
    prefill = 0.01 + 1e-4 * 100 + 1e-6 * 100          # 100 new tokens, attention touches 100
    decodes = [0.01 + 1e-4 + 1e-6 * ctx for ctx in (100, 101, 102)]
    assert row.ttft_s == pytest.approx(prefill, rel=1e-12)
    assert row.e2el_s == pytest.approx(prefill + sum(decodes), rel=1e-12)
    assert row.output_tokens == 4
    assert run.summary["tpot_s"]["mean"] == pytest.approx(np.mean(decodes), rel=1e-12)


def test_long_prompt_is_chunked_by_the_token_budget():
    cost = LinearCostModel(base=0.01, per_token=0.0, per_kv=0.0)
    run = run_simulation(small_deployment(budget=64), _table([0.0], [200], [1]), cost_model=cost)
    # 200 prompt tokens at 64 per step: 4 steps (64, 64, 64, 8); the last one emits the token.
    assert run.requests.iloc[0].ttft_s == pytest.approx(0.04)
    assert run.summary["sim"]["steps"] == 4


def test_kv_overflow_preempts_the_newest_request():
    # 4 blocks of 16 tokens = 64 slots. Two requests of 16-token prompts each take 1 block, then
    # grow; when the pool is dry, the newer one (request 1) is preempted, never request 0.
    cost = LinearCostModel()
    dep = small_deployment(blocks=4, block_size=16, max_model_len=64)
    run = run_simulation(dep, _table([0.0, 0.0], [16, 16], [40, 40]), cost_model=cost)
    req = run.requests.set_index("request_id")
    assert req.loc[0, "preemptions"] == 0
    assert req.loc[1, "preemptions"] >= 1
    assert (req["output_tokens"] == 40).all()
    assert run.summary["kv"]["peak_blocks"] <= 4


def test_max_num_seqs_limits_the_running_batch():
    cost = LinearCostModel()
    run = run_simulation(small_deployment(max_num_seqs=2), _table([0, 0, 0], [10, 10, 10], [5, 5, 5]),
                         cost_model=cost, fast_forward=False)
    assert run.result.timeline["running"].max() == 2
    req = run.requests.set_index("request_id")
    assert req.loc[2, "first_scheduled_s"] >= req.loc[0, "finish_s"]


def test_prompt_at_max_model_len_is_rejected_and_counted():
    run = run_simulation(small_deployment(max_model_len=128), _table([0, 1], [50, 128], [10, 10]),
                         cost_model=LinearCostModel())
    assert run.summary["requests"] == {"arrived": 2, "completed": 1, "rejected": 1, "truncated_to_max_model_len": 0}


def test_outputs_stop_at_max_model_len():
    run = run_simulation(small_deployment(max_model_len=128), _table([0], [100], [500]), cost_model=LinearCostModel())
    assert run.requests.iloc[0].output_tokens == 28
    assert run.summary["requests"]["truncated_to_max_model_len"] == 1


def test_step_features_match_batch_shape_definitions():
    shape = BatchShape(prefill_chunks=((64, 100), (10, 0)), decode_contexts=(5, 7, 9))
    f = StepFeatures.from_shapes([shape])
    assert f.prefill_tokens[0] == 74
    assert f.prefill_attn_pairs[0] == 64 * 100 + 64 * 65 // 2 + 10 * 11 // 2
    assert f.prefill_kv_tokens[0] == 174
    assert (f.decode_seqs[0], f.decode_tokens[0], f.decode_kv_tokens[0]) == (3, 3, 21)
