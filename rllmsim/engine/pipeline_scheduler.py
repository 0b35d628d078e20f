"""vLLM's step policy with several micro-batches in flight, as under pipeline parallelism.

vLLM's scheduler advances a request's computed tokens when it schedules them, not when their
batch returns (`Scheduler._update_after_schedule`). With up to P batches in flight that decides
who can join the next one (vllm/v1/core/sched/scheduler.py, the `num_new_tokens == 0` case): a
decoding request in flight has no token to feed until its batch returns and is skipped, while a
prefilling one can send its next prompt chunk at once, so one long prompt is pipelined. Tokens are
emitted when the batch that completes them returns.

A request preempted while in flight loses that batch's output: vLLM discards the stale output
(`num_stale_output_tokens`), and here each admission starts a new epoch of the request, so a
returning batch only updates sequences still in the epoch it was scheduled in. vLLM keeps such a
request waiting until its stale output drained (at most P batches); here it may rejoin at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.request import RequestLedger
from rllmsim.engine.scheduler import Scheduler, SchedulerConfig, StepPlan
from rllmsim.engine.scheduler_runs import StepOutcome
from rllmsim.metrics.histogram import LogHistogram


@dataclass
class MicroBatch(StepPlan):
    """A scheduled step in flight: the plan, and who it will update when it returns: the
    scheduled sequences' request ids, their epochs, and which of them it makes emit a token."""

    rids: np.ndarray | None = None
    epochs: np.ndarray | None = None
    emits: np.ndarray | None = None


class PipelineScheduler(Scheduler):
    """`Scheduler` whose steps are scheduled and finished apart, several in flight at once."""

    def __init__(self, config: SchedulerConfig, pool: BlockPool, ledger: RequestLedger) -> None:
        super().__init__(config, pool, ledger)
        self._epoch = np.zeros(ledger.size, dtype=np.int64)
        self._position = np.full(ledger.size, -1, dtype=np.int64)

    def schedule_micro_batch(self, now: float) -> MicroBatch | None:
        """Schedule the next micro-batch from the sequences not in flight, allocating its blocks
        and advancing its computed tokens; None when nobody can be scheduled."""
        plan = self.schedule(now)
        batch = self.running
        if plan.admitted:
            self._epoch[batch.rid[len(batch) - plan.admitted:]] += 1
        scheduled = plan.sched > 0
        if not scheduled.any():
            return None
        computed = batch.computed + plan.sched
        emits = (computed == batch.tokens)[scheduled]
        batch.computed = computed
        rids = batch.rid[scheduled]
        return MicroBatch(plan.sched, plan.is_decode, plan.features, plan.preempted, plan.admitted, plan.load_s,
                          rids=rids, epochs=self._epoch[rids], emits=emits)

    def apply(self, plan: StepPlan, end: float, itl: LogHistogram) -> StepOutcome:
        """A micro-batch returns at `end`: the sequences it completed (and that are still in the
        epoch it was scheduled in) emit one token each; then as `Scheduler.apply`."""
        assert isinstance(plan, MicroBatch)
        batch = self.running
        position = self._position
        position[batch.rid] = np.arange(len(batch))
        rids = plan.rids[plan.emits]
        rows = position[rids]
        position[batch.rid] = -1
        live = (rows >= 0) & (self._epoch[rids] == plan.epochs[plan.emits])
        emitted = np.zeros(len(batch), dtype=np.int64)
        emitted[rows[live]] = 1
        batch.generated += emitted
        batch.tokens += emitted
        return self._record_emissions(emitted, end, itl)
