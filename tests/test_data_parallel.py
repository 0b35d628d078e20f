"""Data-parallel ranks of a MoE model stepping in lockstep (`rllmsim.engine.lockstep`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rllmsim import parallel
from rllmsim.cost.data_parallel import SharedMoE
from rllmsim.cost.kernels.model import KernelCostModel
from rllmsim.cost.kernels.tables import shipped_tables
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.simulation import run_simulation
from rllmsim.specs import load_gpu, load_model
from rllmsim.workload.table import make_request_table

MOE = "qwen3-30b-a3b"
TIME_COLUMNS = ("first_scheduled_s", "first_token_s", "finish_s")


def moe_deployment(dp: int = 2, blocks: int = 64, **knobs) -> Deployment:
    fields = dict(model=load_model(MOE), gpu=load_gpu("h100-sxm"), data_parallel_size=dp,
                  enable_expert_parallel=True, max_num_seqs=8, max_num_batched_tokens=256, max_model_len=1024,
                  num_gpu_blocks_override=blocks)
    fields.update(knobs)
    return Deployment(**fields)


def simulate(deployment: Deployment, arrivals, prompts, outputs, fast_forward: bool = True, router="round-robin"):
    table = make_request_table(np.asarray(arrivals, dtype=float), prompts, outputs, "dp")
    return run_simulation(deployment, table, cost_model=RooflineCostModel(deployment), router=router,
                          fast_forward=fast_forward)


def test_an_idle_rank_runs_dummy_steps_at_the_busy_ranks_pace():
    """One request: rank 1 runs a dummy batch every step. Two identical requests, one per rank:
    every step is small enough to be graphed (12-token prompts, capture size 16), so both ranks pad
    to the same tokens, every step costs the same and the lone request finishes exactly when the
    pair does; the pair wastes no rank-step."""
    d = moe_deployment()
    alone = simulate(d, [0.0], [12], [40])
    pair = simulate(d, [0.0, 0.0], [12, 12], [40, 40])
    dp_alone, dp_pair = alone.summary["data_parallel"], pair.summary["data_parallel"]
    assert dp_alone["dummy_rank_steps"] == dp_alone["lockstep_steps"] > 0
    assert dp_alone["dummy_time_share"] == pytest.approx(0.5)
    assert dp_alone["dp_sync_wait_share"] == pytest.approx(0.0, abs=1e-12)
    assert dp_pair["dummy_rank_steps"] == 0 and dp_pair["dp_sync_wait_share"] == pytest.approx(0.0, abs=1e-12)
    assert alone.requests["finish_s"][0] == pair.requests["finish_s"][0] == pair.requests["finish_s"][1]
    assert dp_pair["busy_steps_per_rank"] == [dp_pair["lockstep_steps"]] * 2


def test_the_slowest_rank_sets_everyones_step():
    """A long prompt on one rank holds back the other rank's short request."""
    d = moe_deployment()
    short_alone = simulate(d, [0.0], [16], [30]).requests
    both = simulate(d, [0.0, 0.0], [900, 16], [30, 30]).requests
    assert both["ttft_s"][1] > short_alone["ttft_s"][0]
    summary = simulate(d, [0.0, 0.0], [900, 16], [30, 30]).summary["data_parallel"]
    assert summary["dp_sync_wait_share"] > 0


def test_the_dp_balancer_spreads_requests_over_ranks():
    d = moe_deployment(dp=4)
    run = simulate(d, [0.0] * 8, [50] * 8, [20] * 8)
    assert run.summary["data_parallel"]["busy_steps_per_rank"] == [run.summary["data_parallel"]["lockstep_steps"]] * 4
    assert sorted(set(run.result.timeline["replica"])) == [0, 1, 2, 3]


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 20))
    dp = draw(st.integers(2, 3))
    knobs = {}
    if draw(st.booleans()):
        knobs.update(speculative_method="ngram", num_speculative_tokens=draw(st.integers(1, 3)),
                     spec_acceptance_rate=draw(st.floats(0.0, 1.0)))
    block_size = draw(st.sampled_from([8, 16]))
    d = moe_deployment(dp=dp, blocks=draw(st.integers(256 // block_size, 4 * 256 // block_size)), block_size=block_size,
                       max_num_seqs=draw(st.integers(1, 6)), max_num_batched_tokens=draw(st.integers(16, 200)),
                       max_model_len=256, replicas=draw(st.integers(1, 2)), enforce_eager=draw(st.booleans()), **knobs)
    gaps = draw(st.lists(st.floats(0, 0.3), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))
    router = draw(st.sampled_from(["round-robin", "least-outstanding", "least-kv"]))
    return d, np.cumsum(gaps), prompts, outputs, router


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios())
def test_lockstep_invariants_and_fast_forward_equals_step_by_step(scenario):
    d, arrivals, prompts, outputs, router = scenario
    fast = simulate(d, arrivals, prompts, outputs, True, router)
    slow = simulate(d, arrivals, prompts, outputs, False, router)
    for column in TIME_COLUMNS:
        np.testing.assert_allclose(fast.requests[column], slow.requests[column], rtol=1e-9, atol=0)
    for column in ("preemptions", "replica", "output_tokens", "rejected"):
        assert (fast.requests[column] == slow.requests[column]).all(), column
    req, tl = fast.requests, fast.result.timeline
    done = req["finish_s"].notna()
    assert (done ^ req["rejected"]).all()  # every request completes or is rejected
    assert (tl["kv_blocks_peak"] <= d.num_gpu_blocks).all()  # per rank, never above its pool
    assert tl["output_tokens"].sum() == req.loc[done, "output_tokens"].sum()  # tokens conserved
    assert (tl["end_s"] >= tl["start_s"]).all()
    for _, rows in tl.groupby("replica"):  # each rank's segments follow one another in time
        assert (rows["start_s"].to_numpy()[1:] >= rows["end_s"].to_numpy()[:-1]).all()
    assert tl["replica"].max() < d.engine_cores


def test_dense_data_parallel_ranks_are_independent_replicas():
    model = load_model("deepseek-r1-distill-qwen-1.5b")
    base = dict(model=model, gpu=load_gpu("h100-sxm"), max_num_seqs=8, max_num_batched_tokens=256,
                max_model_len=1024, num_gpu_blocks_override=64)
    table = make_request_table(np.linspace(0, 1, 12), [60] * 12, [30] * 12, "dense")
    dp = run_simulation(Deployment(data_parallel_size=2, **base), table, router="least-outstanding")
    replicas = run_simulation(Deployment(replicas=2, **base), table, router="least-outstanding")
    for column in TIME_COLUMNS:
        assert (dp.requests[column] == replicas.requests[column]).all()
    assert "data_parallel" not in dp.summary


def test_data_parallel_size_one_changes_nothing():
    d = moe_deployment(dp=1)
    assert not parallel.lockstep(d)
    assert d == dataclasses.replace(d, data_parallel_size=1)
    plain = Deployment(model=d.model, gpu=d.gpu, enable_expert_parallel=True, max_num_seqs=8,
                       max_num_batched_tokens=256, max_model_len=1024, num_gpu_blocks_override=64)
    assert plain == d and plain.weight_bytes_per_gpu == d.weight_bytes_per_gpu


def test_memory_per_gpu_splits_experts_over_dp_x_tp():
    model = load_model("deepseek-r1")
    one = Deployment(model=model, gpu=load_gpu("h200"), tp=8)
    dp8 = Deployment(model=model, gpu=load_gpu("h200"), data_parallel_size=8, enable_expert_parallel=True)
    experts = parallel.routed_expert_bytes(dp8)
    total = model.weight_bytes(dp8.weight_bytes_per_param)
    assert dp8.weight_bytes_per_gpu == pytest.approx((total - experts) + experts / 8)
    assert one.weight_bytes_per_gpu == pytest.approx(total / 8)
    # MLA keeps the whole latent on every TP rank: eight DP ranks hold far more tokens than TP8
    assert dp8.engine_cores * dp8.num_gpu_blocks > 4 * one.num_gpu_blocks
    assert dp8.gpus_per_replica == one.gpus_per_replica == 8


def test_shared_experts_and_exchange_come_from_the_kernel_tables():
    d = moe_deployment(dp=4, num_gpu_blocks_override=None, max_model_len=4096)
    shared = SharedMoE(d, KernelCostModel(d, shipped_tables("h100-sxm")))
    assert shared.sources["experts"].startswith("fused MoE table, moe_tp 1 x moe_ep 4")
    assert shared.sources["exchange"].startswith("NCCL all-gather + reduce-scatter over 4 GPUs")
    tokens = np.array([0, 8, 64, 512, 4096])
    seconds = shared.seconds(tokens)
    assert seconds[0] == 0 and (np.diff(seconds) > 0).all()
    assert shared.global_tokens(np.array([3, 600]), np.array([5, 700])).tolist() == [12, 700]


@pytest.mark.parametrize("dp, message", [(0, "data_parallel_size must be an integer >= 1"),
                                         (-2, "give --data-parallel-size 1 or more")])
def test_bad_data_parallel_size_is_one_line(dp, message):
    with pytest.raises(ConfigError, match=message):
        moe_deployment(dp=dp)


def test_a_calibrated_model_cannot_time_lockstep_steps():
    class Whole:
        def step_time(self, features):
            return np.ones(len(features))

        def provenance(self):
            return {}

    with pytest.raises(ConfigError, match="data_parallel_size 2 with a mixture-of-experts model needs"):
        SharedMoE(moe_deployment(), Whole())
