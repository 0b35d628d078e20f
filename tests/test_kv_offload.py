"""The CPU KV tier (`--kv-offloading-size`, `rllmsim.engine.kv_offload`): what it keeps, what a
reload costs, what it saves, and the inputs vLLM refuses."""

from __future__ import annotations

import numpy as np
import pytest

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.engine.kv_offload import CpuKVTier, OffloadConfig
from rllmsim.errors import ConfigError
from rllmsim.simulation import run_simulation
from rllmsim.specs import load_model
from rllmsim.workload.table import make_request_table

BLOCK = 16


def tier(capacity: int, backend: str = "native") -> CpuKVTier:
    return CpuKVTier(OffloadConfig(backend, capacity, BLOCK, load_s_per_block=1e-3, bytes_per_block=1.0))


def test_the_tier_evicts_the_least_recently_used_group():
    t = tier(10)
    t.store(1, 4)
    t.store(2, 4)
    assert t.lookup(1, 99) == 4  # group 1 is now the most recent
    t.store(3, 4)  # 12 > 10: group 2 goes
    assert (t.lookup(2, 99), t.lookup(1, 99), t.lookup(3, 99)) == (0, 4, 4)
    assert t.lookup(1, 3) == 3  # never more than the request can use


def test_lmcache_keeps_whole_prompt_chunks_only():
    config = OffloadConfig("lmcache", 100, BLOCK, 1e-3, 1.0)
    assert config.storable_blocks(prompt=600, computed=900) == 512 // BLOCK  # two 256-token chunks
    assert config.storable_blocks(prompt=200, computed=900) == 0
    assert OffloadConfig("native", 100, BLOCK, 1e-3, 1.0).storable_blocks(prompt=600, computed=900) == 900 // BLOCK
    t = CpuKVTier(config)
    t.store(5, 40)
    assert t.lookup(5, 20) == 16  # 20 usable blocks hold one whole chunk


def preemption_case(**knobs):
    """A (arrives first) and B share 20 blocks; as both decode, B (the newest) is preempted and
    readmitted when A finishes. Prefix caching is off, so only the CPU tier can give B's blocks
    back. Every step costs 10 ms whatever it holds, so a run's timings differ only by loads."""
    d = small_deployment(blocks=20, budget=512, max_model_len=320, enable_prefix_caching=False, **knobs)
    table = make_request_table(np.array([0.0, 0.0]), [100, 100], [150, 150], "pair")
    run = run_simulation(d, table, cost_model=LinearCostModel(base=0.01, per_token=0.0, per_kv=0.0),
                         fast_forward=False)
    return d, run


def test_a_reload_costs_its_bytes_over_the_host_link_and_saves_the_recompute():
    _, plain = preemption_case()
    d, tiered = preemption_case(kv_offloading_size=1.0)
    assert plain.summary["preemptions"] == tiered.summary["preemptions"] == 1
    # B's recompute in the plain run: its prompt and what it had generated, in one step
    recomputed = int(plain.result.timeline["prefill_tokens"].sum()) - 200
    loaded_blocks = (recomputed - 1) // BLOCK  # all its full blocks but never its last token
    offload = tiered.summary["kv_offloading"]
    assert offload["recompute_tokens_saved"] == loaded_blocks * BLOCK
    def computed(run) -> int:  # tokens the steps computed, prefill and decode alike
        return int((run.result.timeline["prefill_tokens"] + run.result.timeline["decode_tokens"]).sum())

    assert computed(tiered) == computed(plain) - loaded_blocks * BLOCK
    # one H100 GPU: the blocks' bytes at 80 % of PCIe Gen5 x16's 64 GB/s
    load_s = loaded_blocks * d.kv_block_bytes / (64e9 * 0.8)
    assert offload["load_s"] == pytest.approx(load_s, rel=1e-12)
    assert offload["reloaded_bytes"] == loaded_blocks * d.kv_block_bytes
    a_plain, b_plain = plain.requests["finish_s"]
    a_tier, b_tier = tiered.requests["finish_s"]
    assert a_tier == a_plain  # A finished before B came back
    assert b_tier - b_plain == pytest.approx(load_s, rel=1e-9)  # same steps; the readmission step loads


def test_lmcache_gives_back_nothing_of_a_short_prompt():
    """B's 100-token prompt is less than one LMCache chunk and its output is never stored."""
    _, plain = preemption_case()
    _, lmcache = preemption_case(kv_offloading_size=1.0, kv_offloading_backend="lmcache")
    assert lmcache.summary["kv_offloading"]["recompute_tokens_saved"] == 0
    assert list(lmcache.requests["finish_s"]) == list(plain.requests["finish_s"])


def test_a_shared_prefix_evicted_from_the_gpu_comes_back_from_the_cpu():
    """Group 0's 256-token prefix is cached by the first request, evicted by a long unrelated
    one, then wanted again: the GPU misses, the CPU tier hits all its full blocks."""
    d = small_deployment(blocks=24, budget=512, max_model_len=384, kv_offloading_size=1.0)
    table = make_request_table(np.array([0.0, 1.0, 2.0]), [300, 370, 300], [2, 2, 2], "prefix",
                               prefix_group=np.array([0, -1, 0]), prefix_tokens=np.array([256, 0, 256]))
    run = run_simulation(d, table, cost_model=LinearCostModel())
    assert run.summary["prefix_cache"]["hit_tokens"] == 0
    assert run.summary["kv_offloading"]["hit_tokens"] == 256
    assert int(run.requests["cached_tokens"][2]) == 256


@pytest.mark.parametrize("knobs, message", [
    (dict(kv_offloading_size=0.0), "kv_offloading_size"),
    (dict(kv_offloading_size=-4.0), "kv_offloading_size"),
    (dict(kv_offloading_size=4.0, kv_offloading_backend="redis"), "native or lmcache"),
    (dict(kv_offloading_size=4.0, model=load_model("gpt-oss-20b"), max_model_len=1024, blocks=512),
     "sliding-window layers of gpt-oss-20b"),
])
def test_refused_offloading_names_the_field_and_the_fix(knobs, message):
    with pytest.raises(ConfigError, match=message):
        small_deployment(**knobs)
