"""vLLM's admission gate (`scheduler_reserve_full_isl`, added in 0.19.0 and on by default): a
waiting or preempted request joins only when the free KV blocks hold its whole sequence, not just
its first chunk.

vLLM 0.19 `Scheduler.schedule` calls `KVCacheManager.can_fit_full_sequence` for the head of the
waiting queue and `break`s when it fails; the blocks counted are those of `request.num_tokens`
(prompt plus output so far, for a resumed request) beyond its prefix-cache hit, plus the hit
blocks that sit unreferenced in the free queue.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.compare.variants import variant_from_flags
from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.request import RequestLedger
from rllmsim.engine.scheduler import Scheduler, SchedulerConfig
from rllmsim.metrics.histogram import LogHistogram
from rllmsim.simulation import run_simulation
from rllmsim.workload.table import make_request_table

BLOCK = 8


# -- a hand-checked run ---------------------------------------------------------------------------
def _two_requests(gate: bool, fast_forward: bool = True):
    """6 blocks of 16 tokens, 32 tokens a step, every step 10 ms. Request 0 (48 prompt tokens, 20
    out) prefills in steps 1-2 and then decodes: it holds 3 blocks after step 2, 4 after step 3
    and 5 from step 19. Request 1 (64 prompt tokens, 1 out) would fit its first chunk from step 2
    on, but its whole prompt (4 blocks) only once request 0 finishes."""
    deployment = small_deployment(blocks=6, block_size=16, budget=32, max_model_len=96,
                                  enable_prefix_caching=False, scheduler_reserve_full_isl=gate)
    table = make_request_table(np.zeros(2), [48, 64], [20, 1], "gate")
    cost = LinearCostModel(base=0.01, per_token=0.0, per_kv=0.0)
    return run_simulation(deployment, table, cost_model=cost, fast_forward=fast_forward)


@pytest.mark.parametrize("fast_forward", [True, False])
def test_gate_on_the_long_prompt_waits_for_its_whole_prompt(fast_forward):
    run = _two_requests(gate=True, fast_forward=fast_forward)
    req = run.requests.set_index("request_id")
    # step 2 leaves 3 free blocks < the 4 request 1 needs; request 0 then takes 2 more. It emits
    # its 20th token at the end of step 2 + 19 = 21 (t = 0.21) and frees its 5 blocks; request 1
    # is admitted in step 22 and prefills 32 + 32 tokens in steps 22-23.
    assert req.loc[0, "finish_s"] == pytest.approx(0.21)
    assert req.loc[1, "first_scheduled_s"] == pytest.approx(0.21)
    assert req.loc[1, "first_token_s"] == pytest.approx(0.23)
    assert req["preemptions"].tolist() == [0, 0]
    assert run.summary["sim"]["steps"] == 23
    assert run.result.timeline["prefill_tokens"].sum() == 48 + 64  # every prompt token once


@pytest.mark.parametrize("fast_forward", [True, False])
def test_gate_off_the_long_prompt_is_admitted_on_its_first_chunk_and_thrashes(fast_forward):
    run = _two_requests(gate=False, fast_forward=fast_forward)
    req = run.requests.set_index("request_id")
    # step 2: request 1 joins with the 16 tokens left of the budget (1 block, 2 free). Step 3:
    # request 0's decode takes a block, request 1's next 31 tokens need 2 more, 1 is free: request
    # 1 is preempted. From then on it rejoins on even steps with a 31-token chunk (2 blocks, 0
    # free) and is preempted on the odd step after, when its next chunk needs 2 more (steps 3, 5,
    # ..., 19: 9 times; in step 19 request 0 itself needs its 5th block). With 1 block left it
    # cannot rejoin until request 0 finishes in step 21, then prefills in steps 22-23 as above.
    assert req.loc[1, "first_scheduled_s"] == pytest.approx(0.01)
    assert req.loc[1, "preemptions"] == 9
    assert req.loc[0, "preemptions"] == 0
    assert run.summary["preemptions"] == 9
    assert req.loc[0, "finish_s"] == pytest.approx(0.21)
    assert req.loc[1, "first_token_s"] == pytest.approx(0.23)
    # recomputed prompt tokens: 16 in step 2 and 31 in each of the 8 readmissions
    assert run.result.timeline["prefill_tokens"].sum() == 48 + 16 + 8 * 31 + 64


# -- the admission check, one scheduler step --------------------------------------------------
def _scheduler(prompts, gate, budget=8, blocks=16, used=0, prefix_caching=False, groups=None, prefix=None):
    table = make_request_table(np.zeros(len(prompts)), prompts, [10] * len(prompts), "gate",
                               prefix_group=groups, prefix_tokens=prefix)
    config = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=budget, enable_prefix_caching=prefix_caching,
                             scheduler_reserve_full_isl=gate)
    scheduler = Scheduler(config, BlockPool(blocks, BLOCK), RequestLedger(table))
    scheduler.pool.take(used)  # blocks held by sequences outside this test
    scheduler.waiting.extend(range(len(prompts)))
    return scheduler


@pytest.mark.parametrize("gate", [True, False])
def test_a_resumed_request_needs_blocks_for_its_prompt_and_output_so_far(gate):
    # 20 prompt tokens, 10 generated before preemption: 30 tokens = 4 blocks; the 8-token chunk
    # needs 1. 3 blocks are free.
    scheduler = _scheduler([20], gate, blocks=16, used=13)
    scheduler.ledger.generated[0] = 10
    plan = scheduler.schedule(0.0)
    assert plan.admitted == (0 if gate else 1)
    assert scheduler.pool.free == (3 if gate else 2)


def test_a_fresh_prompt_that_fits_exactly_is_admitted():
    scheduler = _scheduler([24], gate=True, blocks=16, used=13)  # 3 blocks, 3 free
    assert scheduler.schedule(0.0).admitted == 1


def test_a_refused_head_blocks_the_queue():
    """First come first served: vLLM breaks out of the waiting loop, so the 4-token request behind
    the refused head waits too, though its one block would fit."""
    scheduler = _scheduler([40, 4], gate=True, budget=20, blocks=16, used=12)  # 5 blocks needed, 4 free
    plan = scheduler.schedule(0.0)
    assert plan.admitted == 0 and not plan.sched.any()
    assert list(scheduler.waiting) == [0, 1]
    assert scheduler.pool.free == 4


def test_a_referenced_prefix_hit_is_not_counted_again():
    # 40 tokens = 5 blocks, of which the 2 of the cached 16-token prefix are held by a running
    # request: 3 new blocks fit the 3 free ones.
    scheduler = _scheduler([40], gate=True, blocks=16, used=13, prefix_caching=True,
                           groups=np.array([0]), prefix=np.array([16]))
    scheduler.pool.cache_prefix(0, 2)
    plan = scheduler.schedule(0.0)
    assert plan.admitted == 1
    assert scheduler.prefix_hit_tokens == 16


@pytest.mark.parametrize("free, admitted", [(5, 1), (4, 0)])
def test_an_unreferenced_prefix_hit_counts_against_the_free_blocks(free, admitted):
    """vLLM counts hit blocks sitting in the free queue (`num_evictable_blocks`): touching them
    takes them out of it. 3 new blocks + 2 evictable ones."""
    scheduler = _scheduler([40], gate=True, blocks=16, used=16 - free + 2, prefix_caching=True,
                           groups=np.array([0]), prefix=np.array([16]))
    scheduler.pool.cache_prefix(0, 2)
    scheduler.pool.dereference(0)  # nobody runs with it: its 2 blocks are free but cached
    assert scheduler.pool.free == free
    assert scheduler.schedule(0.0).admitted == admitted


# -- the step after a fast-forwarded run ----------------------------------------------------
@pytest.mark.parametrize("gate", [True, False])
def test_shortcut_after_a_run_applies_the_gate_as_the_general_path(gate):
    """Two sequences decode after a run; the waiting request's first chunk fits the free blocks
    but its whole prompt does not."""
    table = make_request_table(np.zeros(3), [30, 45, 60], [50, 50, 50], "gate")
    config = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=16, scheduler_reserve_full_isl=gate)
    scheduler = Scheduler(config, BlockPool(14, BLOCK), RequestLedger(table))
    itl = LogHistogram()
    scheduler.waiting.extend([0, 1])
    while len(scheduler.running) < 2 or not scheduler._every_sequence_decodes():
        scheduler.apply(scheduler.schedule(0.0), 0.1, itl)
    run = scheduler.plan_decode_only_run(max_steps=2)
    assert run is not None and run.steps == 2
    scheduler.advance(run, np.full(2, 0.01), 0.12, itl)
    scheduler.waiting.append(2)
    free = scheduler.pool.free
    assert scheduler.pool.blocks_for(14) <= free < scheduler.pool.blocks_for(60)  # 60 tokens: 8 blocks
    general = copy.deepcopy(scheduler)
    general._all_decoding = False
    fast_plan, general_plan = scheduler.schedule(0.12), general.schedule(0.12)
    assert fast_plan.admitted == general_plan.admitted == (0 if gate else 1)
    assert fast_plan.sched.tolist() == general_plan.sched.tolist()
    assert scheduler.pool.free == general.pool.free
    # refused, the head cannot get in before the batch changes: the run may go on
    assert (scheduler.plan_run(fast_plan, 8) is not None) == gate


# -- wiring -----------------------------------------------------------------------------------------
def test_the_gate_follows_the_vllm_version_unless_set():
    """vLLM 0.19.0 added the flag, on by default; 0.18.0 has no such gate."""
    assert small_deployment().scheduler_reserve_full_isl is True  # the default version, 0.19.0
    assert small_deployment(vllm_version="0.18.0").scheduler_reserve_full_isl is False
    assert small_deployment(vllm_version="0.12.0", scheduler_reserve_full_isl=True).scheduler_reserve_full_isl is True


def test_the_flag_reaches_the_deployment():
    assert variant_from_flags("default", [], {}).deployment.scheduler_reserve_full_isl is True
    off = variant_from_flags("off", ["--no-scheduler-reserve-full-isl"], {})
    assert off.deployment.scheduler_reserve_full_isl is False
    on = variant_from_flags("on", ["--scheduler-reserve-full-isl", "--vllm-version", "0.18.0"], {})
    assert on.deployment.scheduler_reserve_full_isl is True
    old = variant_from_flags("old", ["--vllm-version", "0.18.0"], {})
    assert old.deployment.scheduler_reserve_full_isl is False
