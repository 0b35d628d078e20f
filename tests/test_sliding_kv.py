"""Sliding-window layers under vLLM's hybrid KV manager: one pool, a block per group of layers,
and sliding groups that keep only their window (rllmsim/engine/kv_layout.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine_helpers import LinearCostModel, sliding_model, small_deployment
from rllmsim.deployment import Deployment
from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.kv_layout import KVLayout, kv_layout
from rllmsim.engine.request import RequestLedger
from rllmsim.engine.scheduler import Scheduler, SchedulerConfig
from rllmsim.errors import ConfigError
from rllmsim.simulation import run_simulation
from rllmsim.specs import load_gpu, load_model
from rllmsim.specs.attention import FULL_ATTENTION, SLIDING_ATTENTION
from rllmsim.workload.table import make_request_table


def test_gpt_oss_gets_one_full_and_one_sliding_group_of_half_its_layers() -> None:
    for name, layers in (("gpt-oss-120b", 36), ("gpt-oss-20b", 24)):
        layout = kv_layout(load_model(name), 16, 8192, 131072)
        assert (layout.layers_per_block, layout.sliding_groups, layout.window) == (layers // 2, 1, 128)
        # vLLM's admission cap: ceil((128 - 1 + 8192) / 16) + 1
        assert layout.admission_cap == 521
    assert not kv_layout(load_model("qwen3-8b"), 16, 8192, 32768).hybrid


def test_window_blocks_by_hand() -> None:
    layout = KVLayout(16, 18, 1, 128, 521)
    assert layout.window_blocks(0, 1000) == 63  # a first chunk holds all its blocks
    # decoding at 1000 tokens: blocks of tokens 873..1000; those wholly before 873 (54 of them) are freed
    assert layout.window_blocks(1000, 1) == 63 - 54 == 9
    assert layout.window_blocks(1007, 1) == 8  # the window's tail just passed a block's end
    assert layout.window_reserve(1000) == 63 and layout.window_reserve(100_000) == 521


def test_run_window_deltas_equal_the_step_by_step_difference() -> None:
    layout = KVLayout(16, 18, 1, 128, 521)
    rng = np.random.default_rng(7)
    for _ in range(100):
        computed = rng.integers(1, 400, size=int(rng.integers(1, 12)))
        held = np.asarray(layout.window_blocks(computed - 1, 1)) + rng.integers(0, 3, len(computed))
        horizon = int(rng.integers(1, 300))
        step_by_step = [int(np.sum(layout.window_blocks(computed + m, 1))) for m in range(horizon)]
        expected = np.diff(np.concatenate(([held.sum()], step_by_step)))
        np.testing.assert_array_equal(layout.run_window_deltas(computed, held, horizon), expected)


def test_long_context_capacity_is_close_to_twice_full_attention_on_every_layer() -> None:
    """gpt-oss-120b on one H100 (MXFP4 experts), bf16 KV: 8 KV heads x 64 dims x K and V x 2 bytes =
    2048 bytes per layer and token; a pool block holds 16 tokens of one 18-layer group."""
    d = Deployment(model=load_model("gpt-oss-120b"), gpu=load_gpu("h100-sxm"), max_model_len=65536)
    assert d.kv_block_bytes == 16 * 18 * 2048
    assert d.num_gpu_blocks == int(d.kv_budget.available // (16 * 18 * 2048))
    full_everywhere = int(d.kv_budget.available // (16 * 36 * 2048))
    length = 65536
    decoding = length // 16 + d.kv_layout.decode_window_bound(length)
    assert decoding == 4096 + 9
    # tokens the pool holds in decoding requests of this length, against full attention on every layer
    hybrid_tokens = d.num_gpu_blocks / decoding * length
    full_tokens = full_everywhere / (length // 16) * length
    assert 1.99 < hybrid_tokens / full_tokens <= 2.0


def test_the_timeline_shows_what_the_sliding_layers_hold() -> None:
    """On gpt-oss-120b a 2000-token prompt's first chunk holds 125 blocks in each group; once it
    decodes (alone, after two short ones finish) the sliding group keeps 8 or 9 (w = 128 in blocks
    of 16) and the full group all of its tokens."""
    d = Deployment(model=load_model("gpt-oss-120b"), gpu=load_gpu("h100-sxm"), max_model_len=8192)
    table = make_request_table(np.zeros(3), [2000, 300, 300], [3000, 50, 50], "three")
    tl = run_simulation(d, table, cost_model=LinearCostModel()).result.timeline
    # the first row: the three prefills (2000 + 300 + 300 tokens in both groups) at its peak, then
    # decodes until the short two finish at its end, leaving the long one's window
    assert tl["kv_blocks_peak"].iloc[0] == 2 * 125 + 2 * 2 * 19 and tl["kv_window_blocks"].iloc[0] == 9
    # then the long one decodes alone to its end, holding its full blocks plus 8 or 9 in the window
    assert len(tl) == 2 and tl["kv_blocks_peak"].iloc[1] == -(-(2000 + 3000 - 1) // 16) + 9
    assert tl["kv_window_blocks"].iloc[1] == 0  # finished: nothing held


def test_a_decoding_sequence_holds_its_full_blocks_plus_the_window() -> None:
    model = sliding_model(128)
    d = small_deployment(blocks=400, block_size=16, max_num_seqs=4, budget=2048, max_model_len=4096, model=model)
    table = make_request_table(np.array([0.0]), [1000], [300], "one")
    ledger = RequestLedger(table)
    config = SchedulerConfig(d.max_num_seqs, d.max_num_batched_tokens, kv_layout=d.kv_layout)
    scheduler = Scheduler(config, BlockPool(d.num_gpu_blocks, d.block_size), ledger)
    scheduler.waiting.append(0)
    itl_sink = _NullHistogram()
    plan = scheduler.schedule(0.0)
    assert scheduler.pool.used == 63 + 63  # the 1000-token chunk in both groups
    scheduler.apply(plan, 0.1, itl_sink)
    plan = scheduler.schedule(0.1)  # first decode: the sliding group frees all but its window
    assert scheduler.pool.used == 63 + 9 and scheduler.window_blocks_held == 9
    scheduler.apply(plan, 0.2, itl_sink)
    run = scheduler.plan_decode_only_run(1000)
    assert run is not None and run.steps == 298
    scheduler.advance(run, np.full(200, 0.01), 2.2, itl_sink)  # the first 200 steps of the run
    computed = 1000 + 1 + 200
    assert scheduler.pool.used == -(-computed // 16) + scheduler.window_blocks_held
    assert scheduler.window_blocks_held == KVLayout(16, 12, 1, 128).window_blocks(computed - 1, 1) == 9
    scheduler.advance(scheduler.plan_decode_only_run(1000), np.full(98, 0.01), 3.18, itl_sink)
    assert scheduler.pool.used == 0 and not len(scheduler.running)  # finished: every block returned


def test_invariants_and_fast_forward_with_sliding_layers_under_kv_pressure() -> None:
    rng = np.random.default_rng(3)
    n = 60
    table = make_request_table(np.cumsum(rng.exponential(0.05, n)), rng.integers(20, 600, n).tolist(),
                               rng.integers(50, 900, n).tolist(), "sliding")
    d = small_deployment(blocks=220, block_size=16, max_num_seqs=16, budget=512, max_model_len=1600,
                         model=sliding_model(64))
    fast = run_simulation(d, table, cost_model=LinearCostModel(), fast_forward=True)
    slow = run_simulation(d, table, cost_model=LinearCostModel(), fast_forward=False)
    for column in ("first_token_s", "finish_s"):
        np.testing.assert_array_equal(fast.requests[column].to_numpy(), slow.requests[column].to_numpy())
    req, tl = fast.requests, fast.result.timeline
    assert req["finish_s"].notna().all() and fast.summary["preemptions"] > 0  # the pool was contended
    assert (tl["kv_blocks_peak"] <= d.num_gpu_blocks).all()
    assert (tl["kv_window_blocks"] <= tl["kv_blocks_peak"]).all() and tl["kv_window_blocks"].max() > 0
    assert tl["output_tokens"].sum() == req["output_tokens"].sum()


def test_layouts_with_more_than_one_full_attention_group_are_refused() -> None:
    model = load_model("gpt-oss-20b")
    types = (FULL_ATTENTION,) * 20 + (SLIDING_ATTENTION,) * 4  # group size 4: five full groups
    odd = dataclasses.replace(model, attention=dataclasses.replace(model.attention, layer_types=types))
    with pytest.raises(ConfigError, match="5 full-attention KV groups"):
        kv_layout(odd, 16, 8192, 8192)


class _NullHistogram:
    def add(self, values, weight: int = 1) -> None:
        pass
