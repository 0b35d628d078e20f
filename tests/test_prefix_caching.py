"""Prefix caching: hits skip prefill by exactly the shared full blocks; LRU eviction."""

from __future__ import annotations

import numpy as np
import pytest

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.engine.kv_cache import BlockPool
from rllmsim.simulation import run_simulation
from rllmsim.workload.table import make_request_table


def _two_requests(prefix_tokens: int, prompt: int, second_arrival: float, group2: int = 0):
    return make_request_table(np.array([0.0, second_arrival]), [prompt, prompt], [5, 5], "t",
                              prefix_group=[0, group2], prefix_tokens=[prefix_tokens, prefix_tokens])


def test_hit_skips_exactly_the_shared_full_blocks():
    # 70 shared tokens = 4 full blocks of 16 (64 tokens); the 6 left over are recomputed.
    dep = small_deployment(block_size=16, enable_prefix_caching=True)
    run = run_simulation(dep, _two_requests(70, 100, 5.0), cost_model=LinearCostModel())
    req = run.requests.set_index("request_id")
    assert req.loc[0, "cached_tokens"] == 0
    assert req.loc[1, "cached_tokens"] == 64
    assert run.result.timeline["prefill_tokens"].sum() == 100 + (100 - 64)
    assert run.summary["prefix_cache"]["hit_rate"] == pytest.approx(64 / 200)


def test_hit_lowers_ttft_and_other_groups_miss():
    dep = small_deployment(block_size=16, enable_prefix_caching=True)
    hit = run_simulation(dep, _two_requests(96, 100, 5.0), cost_model=LinearCostModel()).requests
    miss = run_simulation(dep, _two_requests(96, 100, 5.0, group2=1), cost_model=LinearCostModel()).requests
    assert hit.loc[1, "ttft_s"] < miss.loc[1, "ttft_s"]
    assert miss.loc[1, "cached_tokens"] == 0


def test_disabled_cache_never_hits():
    dep = small_deployment(block_size=16, enable_prefix_caching=False)
    run = run_simulation(dep, _two_requests(96, 100, 5.0), cost_model=LinearCostModel())
    assert (run.requests["cached_tokens"] == 0).all()
    assert run.summary["prefix_cache"]["hit_rate"] == 0.0


def test_pool_evicts_least_recently_released_prefix_first():
    pool = BlockPool(num_blocks=10, block_size=16)
    for group in (1, 2):
        pool.take(3)
        assert pool.cache_prefix(group, 3)
    pool.dereference(1)            # released first: least recently used
    pool.dereference(2)
    assert pool.free == 10 and pool.used == 0   # cached-but-unreferenced blocks count as free
    pool.take(5)                   # 4 uncached free blocks: must evict one prefix (group 1)
    assert pool.cached_blocks(1) == 0 and pool.cached_blocks(2) == 3
    assert pool.reference_cost(2) == 3
    pool.reference(2)
    assert pool.free == 2
