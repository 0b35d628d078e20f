"""Property tests over random small workloads: the engine's invariants and fast-forward equality."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_helpers import LinearCostModel, sliding_model, small_deployment
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.engine.clients import Sessions
from rllmsim.simulation import run_simulation
from rllmsim.workload.sessions import conversation_table
from rllmsim.workload.table import make_request_table

TIME_COLUMNS = ("first_scheduled_s", "first_token_s", "finish_s")


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 25))
    block_size = draw(st.sampled_from([8, 16]))
    max_model_len = draw(st.integers(8, 256))
    min_blocks = -(-max_model_len // block_size)
    chunked = draw(st.booleans())
    knobs = {"scheduler_reserve_full_isl": draw(st.booleans())}  # vLLM's admission gate on or off
    if draw(st.booleans()):
        # eagle and eagle3 add a drafter's roofline cost to every step; spread varies requests' rates
        knobs.update(speculative_method=draw(st.sampled_from(["ngram", "eagle", "eagle3"])),
                     num_speculative_tokens=draw(st.integers(1, 5)), spec_acceptance_rate=draw(st.floats(0.0, 1.0)),
                     spec_acceptance_spread=draw(st.sampled_from([0.0, 0.05, 0.3])))
    budget = draw(st.integers(8, 300)) if chunked else draw(st.integers(max_model_len, 400))
    if draw(st.booleans()):  # half the layers slide: vLLM's hybrid KV groups (kv_layout.py)
        window = draw(st.integers(2, 96))
        knobs["model"] = sliding_model(window)
        # vLLM's start-up check: a window plus a step's tokens per sliding group
        min_blocks += -(-min(window - 1 + budget, max_model_len) // block_size) + 1
    if "model" not in knobs and draw(st.booleans()):  # a CPU KV tier, from a few blocks to all of them
        knobs.update(kv_offloading_size=draw(st.sampled_from([0.002, 0.01, 8.0])),
                     kv_offloading_backend=draw(st.sampled_from(["native", "lmcache"])))
    deployment = small_deployment(
        blocks=draw(st.integers(min_blocks, 4 * min_blocks)), block_size=block_size,
        max_num_seqs=draw(st.integers(1, 8)), budget=budget, chunked=chunked,
        max_model_len=max_model_len, replicas=draw(st.integers(1, 3)), **knobs)
    gaps = draw(st.lists(st.floats(0, 0.5), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    groups = prefix = None
    if draw(st.booleans()):
        shared = draw(st.integers(1, 64))
        groups = np.array(draw(st.lists(st.integers(-1, 2), min_size=n, max_size=n)))
        prompts = [p + shared if g >= 0 else p for p, g in zip(prompts, groups)]
        prefix = np.where(groups >= 0, shared, 0)
        deployment = dataclasses.replace(deployment, enable_prefix_caching=True)
    if deployment.replicas > 1 and "model" not in knobs and draw(st.booleans()):  # live migration between them
        deployment = dataclasses.replace(deployment, enable_migration=True,
                                         migration_interval_s=draw(st.sampled_from([0.01, 0.1])))
    table = make_request_table(np.cumsum(gaps), prompts, outputs, "prop", prefix_group=groups, prefix_tokens=prefix)
    router = draw(st.sampled_from(["round-robin", "least-outstanding", "least-kv"]))
    return deployment, table, router


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios())
def test_invariants_hold(scenario):
    deployment, table, router = scenario
    run = run_simulation(deployment, table, cost_model=LinearCostModel(), router=router)
    req = run.requests
    completed = req["finish_s"].notna()
    # every arrived request is completed or rejected, never both
    assert (completed ^ req["rejected"]).all()
    # completed requests emitted exactly their (max_model_len-capped) target
    cap = np.maximum(deployment.max_model_len - req["prompt_tokens"], 1)
    expected = np.minimum(table["output_tokens"], cap)
    assert (req.loc[completed, "output_tokens"] == expected[completed]).all()
    # KV blocks in use never exceed the pool
    assert (run.result.timeline["kv_blocks_peak"] <= deployment.num_gpu_blocks).all()
    # timestamps are ordered
    done = req[completed]
    assert (done["first_scheduled_s"] >= done["arrival_s"]).all()
    assert (done["first_token_s"] > done["first_scheduled_s"]).all()
    assert (done["finish_s"] >= done["first_token_s"]).all()
    # tokens conserved: every emitted token is counted once, preempted or not
    tl = run.result.timeline
    assert tl["output_tokens"].sum() == done["output_tokens"].sum()
    # without preemption each prompt token is prefilled once; without speculation each later
    # output token is one decode token
    if run.summary["preemptions"] == 0:
        assert tl["prefill_tokens"].sum() == done["prompt_tokens"].sum() - done["cached_tokens"].sum()
        if not deployment.speculative_method:
            assert tl["decode_tokens"].sum() == (done["output_tokens"] - 1).sum()


@SETTINGS
@given(scenarios(), st.booleans())
def test_fast_forward_equals_step_by_step(scenario, roofline):
    """Also with the roofline, whose fast path for decode runs must give the same bits as its
    per-step formula."""
    deployment, table, router = scenario
    cost = RooflineCostModel(deployment) if roofline else LinearCostModel()
    fast = run_simulation(deployment, table, cost_model=cost, router=router, fast_forward=True).requests
    slow = run_simulation(deployment, table, cost_model=cost, router=router, fast_forward=False).requests
    for column in TIME_COLUMNS:
        np.testing.assert_allclose(fast[column], slow[column], rtol=1e-9, atol=0)
    for column in ("preemptions", "replica", "output_tokens", "rejected"):
        assert (fast[column] == slow[column]).all(), column


@pytest.mark.parametrize("gate", [True, False])
def test_fast_forward_equals_step_by_step_with_contended_prefix_cache(gate):
    """Tiny pools where decode steps evict cached prefixes that waiting requests wanted: the case
    in which admission is not monotone and a run must not skip over the waiting head."""
    for seed in range(300):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 12))
        shared = int(rng.integers(1, 64))
        groups = rng.integers(-1, 3, n)
        prompts = np.where(groups >= 0, rng.integers(1, 60, n) + shared, rng.integers(1, 60, n))
        table = make_request_table(np.cumsum(rng.uniform(0, 0.5, n)), prompts, rng.integers(1, 60, n), "seeded",
                                   prefix_group=groups, prefix_tokens=np.where(groups >= 0, shared, 0))
        deployment = small_deployment(blocks=int(rng.integers(10, 20)), block_size=8,
                                      max_num_seqs=int(rng.integers(1, 4)), budget=int(rng.integers(8, 40)),
                                      max_model_len=74, enable_prefix_caching=True, scheduler_reserve_full_isl=gate)
        fast = run_simulation(deployment, table, cost_model=LinearCostModel()).requests
        slow = run_simulation(deployment, table, cost_model=LinearCostModel(), fast_forward=False).requests
        for column in TIME_COLUMNS:
            np.testing.assert_allclose(fast[column], slow[column], rtol=1e-9, atol=0, err_msg=f"seed {seed}")


@st.composite
def session_scenarios(draw):
    """Conversations on the deployments of `scenarios`: each turn's prompt grows by the last
    answer and a new message, its prefix group's cached prefix with it."""
    deployment, _, _ = draw(scenarios())
    n, turns = draw(st.integers(1, 8)), draw(st.integers(2, 3))
    lengths = st.lists(st.integers(1, 60), min_size=n * turns, max_size=n * turns)
    messages, outputs = draw(lengths), np.array(draw(lengths))
    reasoning = outputs * draw(st.integers(0, 4)) // 4
    first = np.cumsum(draw(st.lists(st.floats(0, 0.5), min_size=n, max_size=n)))
    table = conversation_table(first, messages, outputs, reasoning, "prop", turns)
    router = draw(st.sampled_from(["round-robin", "least-outstanding", "session", "kv-aware"]))
    think = draw(st.sampled_from([0.0, 0.05]))
    return dataclasses.replace(deployment, enable_prefix_caching=True), table, router, Sessions(turns, think)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session_scenarios())
def test_fast_forward_equals_step_by_step_with_sessions(scenario):
    deployment, table, router, client = scenario
    run = run_simulation(deployment, table, cost_model=LinearCostModel(), router=router, client=client)
    fast = run.requests
    slow = run_simulation(deployment, table, cost_model=LinearCostModel(), router=router, client=client,
                          fast_forward=False).requests
    assert (fast["finish_s"].notna() ^ fast["rejected"]).all()
    assert (run.result.timeline["kv_blocks_peak"] <= deployment.num_gpu_blocks).all()
    for column in TIME_COLUMNS + ("arrival_s",):
        np.testing.assert_allclose(fast[column], slow[column], rtol=1e-9, atol=0)
    for column in ("preemptions", "replica", "output_tokens", "rejected", "cached_tokens"):
        assert (fast[column] == slow[column]).all(), column
