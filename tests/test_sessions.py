"""Multi-turn conversations: the history rule, a growing prefix group's blocks, session routing."""

from __future__ import annotations

import numpy as np
import pytest

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.engine.clients import Sessions
from rllmsim.engine.cluster import Cluster
from rllmsim.engine.kv_cache import BlockPool
from rllmsim.errors import ConfigError
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.workload.sessions import conversation_table


def _two_turns() -> tuple:
    # turn 1: a 100-token message, 10 output tokens of which 6 reasoning (answer 4);
    # turn 2: prompt = 100 + 4 + a 20-token message = 124
    table = conversation_table(np.array([0.0]), [100, 20], [10, 10], [6, 6], "t", turns=2)
    return small_deployment(block_size=16, enable_prefix_caching=True), table


def test_turn_prompt_is_previous_prompt_and_answer_plus_message():
    table = conversation_table(np.array([0.0, 1.0]), [100, 20, 30, 40, 50, 60], [10, 9, 8, 7, 6, 5],
                               [6, 0, 8, 3, 0, 0], "t", turns=3)
    assert table["prompt_tokens"].tolist() == [100, 100 + 4 + 20, 124 + 9 + 30, 40, 40 + 4 + 50, 94 + 6 + 60]
    assert table["prefix_group"].tolist() == [0, 0, 0, 1, 1, 1]
    assert (table["prefix_tokens"] == table["prompt_tokens"]).all()


def test_second_turn_hits_first_prompt_blocks_and_prefills_only_the_rest():
    dep, table = _two_turns()
    cost = LinearCostModel()
    run = run_simulation(dep, table, cost_model=cost, client=Sessions(2, think_time_s=1.0))
    req = run.requests.set_index("request_id")
    assert req.loc[0, "cached_tokens"] == 0
    assert req.loc[1, "cached_tokens"] == 96  # turn 1's 6 full blocks of 16
    assert req.loc[1, "arrival_s"] == pytest.approx(req.loc[0, "finish_s"] + 1.0)
    # turn 2 runs alone: one prefill step of the 28 uncached tokens over a 124-token context
    assert req.loc[1, "ttft_s"] == pytest.approx(cost.base + cost.per_token * 28 + cost.per_kv * 124)
    assert run.summary["sessions"]["later_turn_hit_rate"] == pytest.approx(96 / 124)
    assert run.summary["prefix_cache"]["hit_rate"] == pytest.approx(96 / 224)


def test_extended_group_keeps_exact_block_counts():
    dep, table = _two_turns()
    cluster = Cluster(dep, LinearCostModel(), table, Sessions(2))
    cluster.run()
    pool = cluster.replicas[0].scheduler.pool
    assert pool.cached_blocks(0) == 124 // 16  # turn 2 extended turn 1's 6 blocks to 7
    assert pool.free == pool.capacity  # nothing leaked: the cached prefix is free but kept


def test_pool_extension_moves_only_the_new_blocks():
    pool = BlockPool(num_blocks=10, block_size=16)
    pool.take(6)
    assert pool.cache_prefix(0, 6) == 6
    pool.dereference(0)
    pool.reference(0)               # the next turn hits the 6 blocks
    pool.take(3)                    # and computes 3 more of its own
    assert pool.free == 1
    assert pool.cache_prefix(0, 8, referenced=False) == 0  # a copy: only a referencing request extends
    assert pool.cache_prefix(0, 8, referenced=True) == 2
    assert pool.cached_blocks(0) == 8 and pool.free == 1
    pool.release(1)                 # the turn finishes: its last own block, then its reference
    pool.dereference(0)
    assert pool.free == pool.capacity and pool.reference_cost(0) == 8


def _conversations(n: int, turns: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    output = rng.integers(20, 60, n * turns)
    return conversation_table(np.cumsum(rng.uniform(0, 0.3, n)), rng.integers(40, 120, n * turns), output,
                              output // 2, "t", turns=turns)


def test_session_router_keeps_conversations_on_one_replica_and_hits_more():
    dep = small_deployment(blocks=400, block_size=16, replicas=2, max_model_len=2048, enable_prefix_caching=True)
    table = _conversations(20, 3)
    runs = {router: run_simulation(dep, table, cost_model=LinearCostModel(), router=router,
                                   client=Sessions(3, think_time_s=0.5))
            for router in ("round-robin", "session", "kv-aware:prefix=1,kv=0,queue=0")}
    for router in ("session", "kv-aware:prefix=1,kv=0,queue=0"):  # the prefix index follows the growing group
        replicas = runs[router].requests.groupby(table["prefix_group"])["replica"].nunique()
        assert (replicas == 1).all(), router
    hit = {router: run.summary["sessions"]["later_turn_hit_rate"] for router, run in runs.items()}
    assert hit["session"] > hit["round-robin"]
    assert runs["round-robin"].requests.groupby(table["prefix_group"])["replica"].nunique().max() == 2


def test_workload_turns_draw_and_send_conversations():
    spec = WorkloadSpec(arrival="poisson", rate=2.0, num_requests=6, turns=3, think_time_s=0.2, max_tokens=256)
    dep = small_deployment(blocks=2000, max_model_len=8192, enable_prefix_caching=True)
    one = run_simulation(dep, spec, seed=3, cost_model=LinearCostModel())
    again = run_simulation(dep, spec, seed=3, cost_model=LinearCostModel())
    req = one.requests
    assert len(req) == 18 and one.summary["sessions"]["conversations"] == 6
    assert req.equals(again.requests)  # same seed, same result
    turn = req["request_id"] % 3
    later = req[turn > 0].set_index("request_id")
    before = req.set_index("request_id").loc[later.index - 1]
    assert (later["arrival_s"].to_numpy() == pytest.approx(before["finish_s"].to_numpy() + 0.2))
    assert (later["cached_tokens"].to_numpy() == before["prompt_tokens"].to_numpy() // 16 * 16).all()


@pytest.mark.parametrize(("fields", "pattern"), [
    ({"turns": 0}, r"turns must be an integer >= 1"),
    ({"turns": 2, "arrival": "closed-loop"}, r"--turns 2 needs an open-loop arrival"),
    ({"turns": 2, "max_concurrency": 4}, r"does not combine with --max-concurrency"),
    ({"turns": 2, "shared_prefix_tokens": 64}, r"--shared-prefix-tokens does not apply"),
    ({"turns": 1000, "num_requests": 2_000_000, "arrival": "poisson"}, r"num_requests x turns"),
])
def test_bad_turns_are_one_line_errors(fields: dict, pattern: str):
    with pytest.raises(ConfigError, match=pattern) as err:
        WorkloadSpec(**fields)
    assert "\n" not in str(err.value)
