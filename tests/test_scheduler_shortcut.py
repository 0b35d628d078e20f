"""The step after a fast-forwarded run takes a shortcut; it must plan what the general path plans."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.request import RequestLedger
from rllmsim.engine.scheduler import Scheduler, SchedulerConfig
from rllmsim.metrics.histogram import LogHistogram
from rllmsim.workload.table import make_request_table

BLOCK = 8


def _decoding_scheduler(prompts: list[int], outputs: list[int], blocks: int = 64) -> Scheduler:
    """Requests 0 and 1 admitted, prefilled and fast-forwarded a few decode steps; the others
    wait."""
    table = make_request_table(np.zeros(len(prompts)), prompts, outputs, "test")
    config = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=256, enable_prefix_caching=True)
    scheduler = Scheduler(config, BlockPool(blocks, BLOCK), RequestLedger(table))
    itl = LogHistogram()
    scheduler.waiting.extend([0, 1])
    plan = scheduler.schedule(0.0)
    scheduler.apply(plan, 0.1, itl)
    run = scheduler.plan_decode_only_run(max_steps=3)
    assert run is not None and run.steps == 3
    scheduler.advance(run, np.full(3, 0.01), 0.13, itl)
    scheduler.waiting.extend(range(2, len(prompts)))
    return scheduler


def _preempted_with_cached_blocks(scheduler: Scheduler, rid: int, generated: int) -> None:
    """Request `rid` was preempted after `generated` tokens; its computed blocks stayed cached."""
    scheduler.ledger.generated[rid] = generated
    tokens = int(scheduler.ledger.prompt[rid]) + generated
    scheduler.pool.keep_released(-2 - rid, (tokens - 1) // BLOCK)


@pytest.mark.parametrize("case", ["nobody joins", "a new request joins", "a preempted request rejoins as a decode",
                                  "both join"])
def test_shortcut_plans_what_the_general_path_plans(case: str) -> None:
    prompts, outputs = [30, 45, 20, 17], [50, 50, 50, 50]
    scheduler = _decoding_scheduler(prompts, outputs)
    if case == "nobody joins":
        scheduler.waiting.clear()
    elif case == "a new request joins":
        scheduler.waiting.remove(3)
    elif case == "a preempted request rejoins as a decode":
        scheduler.waiting.remove(2)
        _preempted_with_cached_blocks(scheduler, 3, generated=8)  # 17 + 8 - 1 = 24 = 3 full blocks
    else:
        _preempted_with_cached_blocks(scheduler, 3, generated=8)
    general = copy.deepcopy(scheduler)
    general._all_decoding = False  # what a scheduler that did not just run would see
    fast_plan, general_plan = scheduler.schedule(0.13), general.schedule(0.13)

    assert fast_plan.sched.tolist() == general_plan.sched.tolist()
    assert fast_plan.is_decode.tolist() == general_plan.is_decode.tolist()
    assert fast_plan.admitted == general_plan.admitted
    for name, values in fast_plan.features.as_dict().items():
        assert values.tolist() == getattr(general_plan.features, name).tolist(), name
    assert scheduler.running._data.tolist() == general.running._data.tolist()
    assert scheduler.pool.free == general.pool.free
    if case == "a preempted request rejoins as a decode":
        assert fast_plan.is_decode.all() and fast_plan.features.prefill_tokens[0] == 0
