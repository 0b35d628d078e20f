"""The scheduler's fast-forward half: the decode steps that follow a step, planned at once.

`Scheduler` inherits these methods; they read and update the same running batch, waiting queue
and block pool (see `segment.py` for how a run is planned and `scheduler.py` for the step policy
whose outcome they must reproduce exactly).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from rllmsim.engine import speculation
from rllmsim.engine.answer import AnswerWatch, mark_answers_in_run
from rllmsim.engine.batch import RunningBatch
from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.kv_layout import KVLayout
from rllmsim.engine.request import RequestLedger
from rllmsim.engine.segment import DecodeRun, plan_decode_run, plan_speculative_run
from rllmsim.metrics.histogram import LogHistogram

if TYPE_CHECKING:
    from rllmsim.engine.scheduler import SchedulerConfig, StepPlan

NO_REQUESTS = np.zeros(0, dtype=np.int64)  # what finished when nobody did
_total, _all = np.add.reduce, np.logical_and.reduce


class StepOutcome(NamedTuple):
    """What applying steps emitted: tokens out and the ids of requests that finished."""

    emitted: int
    finished: np.ndarray


class DecodeRunPlanning:
    """Planning and applying fast-forwarded decode runs (a mixin of `Scheduler`)."""

    config: SchedulerConfig
    pool: BlockPool
    ledger: RequestLedger
    running: RunningBatch
    waiting: deque[int]
    spec: int
    layout: KVLayout
    hybrid_kv: bool
    answers: AnswerWatch
    _all_decoding: bool
    # and, from Scheduler: _retire_finished, _head_admission, _prefix_lookup

    def plan_run(self, plan: StepPlan, max_steps: int) -> DecodeRun | None:
        """The decode steps that follow `plan` before the batch can change, or None.

        They follow when every running sequence decodes after `plan` (each completes its known
        tokens in it), the budget covers them all, and no waiting request can join: the queue is
        empty, or `plan` was itself pure decode, in which case what kept the waiting head out
        (budget, sequences, the blocks of its chunk or, under `scheduler_reserve_full_isl`, of its
        whole sequence) can only tighten until the batch changes — unless the head
        would reuse an unreferenced cached prefix, which it must pull out of the free pool: a
        decode step can evict that prefix and make the head cheaper to admit; or sliding windows
        free blocks during the run (`_until_head_fits`).
        """
        batch, pool = self.running, self.pool
        per_seq = 1 + self.spec
        if len(batch) * per_seq > self.config.max_num_batched_tokens:
            return None
        if self.waiting and (not plan.pure_decode or self._head_reuses_evictable_prefix()):
            return None
        if not self.spec:
            computed = batch.computed + plan.sched
            if not _all(computed == batch.tokens):
                return None
            run = plan_decode_run(computed, batch.target - batch.generated - 1, pool.free, pool.block_size, max_steps,
                                  self._run_window())
            return self._until_head_fits(run) if self.waiting and self.hybrid_kv else run
        if not plan.pure_decode or not (plan.sched == per_seq).all():
            return None
        gain = speculation.emitted_after(batch.accepted, batch.accept_rate, 1)
        gain = np.minimum(gain, batch.target - batch.generated)
        run = plan_speculative_run(batch.computed + gain, batch.accepted + batch.accept_rate,
                                   batch.accept_rate, batch.target - batch.generated - gain,
                                   batch.blocks + batch.shared, pool.free, pool.block_size, self.spec, max_steps,
                                   self._run_window())
        return self._until_head_fits(run) if self.waiting and self.hybrid_kv else run

    def plan_decode_only_run(self, max_steps: int) -> DecodeRun | None:
        """A run starting now, when every running sequence is decoding, nobody waits and the
        budget covers them all: the general scheduler would give each one token per step."""
        batch = self.running
        if self.spec or self.waiting or not len(batch) or len(batch) > self.config.max_num_batched_tokens:
            return None
        if not self._all_decoding and not self._every_sequence_decodes():
            return None
        return plan_decode_run(batch.computed, batch.target - batch.generated, self.pool.free,
                               self.pool.block_size, max_steps, self._run_window())

    def _run_window(self) -> tuple[KVLayout, np.ndarray] | None:
        """What a run's planner needs of the sliding-window layers: the layout and the blocks they
        hold now (None without them)."""
        return (self.layout, self.running.window) if self.hybrid_kv else None

    def _until_head_fits(self, run: DecodeRun) -> DecodeRun:
        """Sliding windows free blocks mid-run, so a waiting head kept out by blocks alone may fit
        before the batch changes: the run stops before the step whose scheduling would admit it
        (admission sees the blocks free after the running sequences took theirs)."""
        cfg = self.config
        budget = cfg.max_num_batched_tokens - len(self.running) * (1 + self.spec)
        if len(self.running) >= cfg.max_num_seqs or budget <= 0:
            return run
        head = self._head_admission(budget)
        if head is None:
            return run
        fits = np.flatnonzero(self.pool.free - run.new_blocks_cum >= head.required)
        return run.first(int(fits[0])) if len(fits) else run

    def _every_sequence_decodes(self) -> bool:
        batch = self.running
        return bool(_all(batch.computed == batch.tokens - 1) and _all(batch.generated >= 1))

    def _head_reuses_evictable_prefix(self) -> bool:
        if not self.config.enable_prefix_caching:
            return False
        rid = self.waiting[0]
        group, _, hit_blocks = self._prefix_lookup(rid, int(self.ledger.prompt[rid] + self.ledger.generated[rid]))
        return hit_blocks > 0 and self.pool.reference_cost(group) > 0

    def advance(self, run: DecodeRun, gaps: np.ndarray, end: float, itl: LogHistogram) -> StepOutcome:
        """Apply the first steps of a planned run at once: `gaps` holds their durations (each is
        the inter-token latency of every running sequence) and `end` is when the last ended."""
        steps = len(gaps)
        batch, ledger, pool = self.running, self.ledger, self.pool
        if run.accept_rate is None:
            tokens, emitted = steps, steps * len(batch)
            held = -(-(batch.computed + steps) // pool.block_size)
            if self.hybrid_kv:
                batch.window = self.layout.window_blocks(batch.computed + steps - 1, 1)
        else:
            tokens = np.minimum(speculation.emitted_after(batch.accepted, run.accept_rate, steps),
                                batch.target - batch.generated)
            batch.accepted += steps * run.accept_rate
            emitted = int(_total(tokens))
            held = run.blocks_at(steps - 1).copy()
            if self.hybrid_kv:
                batch.window = run.window_at(steps - 1)
        batch.add_tokens(tokens)
        if ledger.tracks_answer and self.answers.may_cross(steps * (1 + self.spec)):
            mark_answers_in_run(ledger, batch.rid, batch.generated, tokens, gaps, end, batch.accepted, run.accept_rate)
            self.answers.rebase(batch.rid, batch.generated)
        held -= batch.shared
        batch.blocks = held
        if self.hybrid_kv:
            # sliding windows free blocks mid-run: taking the run's peak first evicts the cached
            # prefixes its steps would have, one by one (eviction depends only on the peak)
            peak = max(int(np.maximum.reduce(run.new_blocks_cum[:steps])), 0)
            pool.take(peak)
            pool.release(peak - int(run.new_blocks_cum[steps - 1]))
        else:
            pool.take(int(run.new_blocks_cum[steps - 1]))
        itl.add(gaps, len(batch))
        ledger.last_token[batch.rid] = end
        self._all_decoding = True
        finished = self._retire_finished() if steps >= run.until_finish else NO_REQUESTS
        return StepOutcome(emitted, finished)
