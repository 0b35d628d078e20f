"""A decode instance of disaggregated serving: its requests arrive prefilled elsewhere.

What vLLM does (`vllm/v1/core/sched/scheduler.py` with the NixlConnector): the decode instance
gets the request with the prefill's `kv_transfer_params`. When its scheduler reaches the request
in the waiting queue (with a sequence slot and token budget free, and no preemption this step),
the connector reports every prompt token as remote (`get_num_new_matched_tokens`, loaded
asynchronously), the scheduler allocates KV blocks for the whole prompt, or leaves the request
waiting when they do not fit, and parks it as WAITING_FOR_REMOTE_KVS while the workers pull the
blocks, starting in that step. Once the pull is reported done, `_update_waiting_for_remote_kv`
sets its computed tokens to the prompt less one (the last prompt token is recomputed to sample
the first output token) and the request is scheduled as any waiting one: one token, then decodes.

Here a request moves `remote` (waiting for blocks) -> transferring (blocks held) -> `loaded` ->
the running batch. Hand-overs happen at step boundaries, in `schedule`, so fast-forward and
step-by-step see them at the same instants: a request arriving or a transfer landing wakes the
replica as an arrival does, and a fast-forwarded run never outlasts a waiting hand-over, since
nothing a decode run does frees a sequence slot or blocks before its first finish ends it.
Loaded requests join after the waiting (preempted) ones, and a preempted request is readmitted
by recomputing locally, as vLLM does once the remote KV has been consumed.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.pd_ledger import DisaggregatedLedger
from rllmsim.engine.replica import Replica
from rllmsim.engine.scheduler import Scheduler, SchedulerConfig, StepPlan, _step_features
from rllmsim.engine.segment import DecodeRun

#: called with (request id, time) when a request's blocks are allocated and its KV pull starts
TransferStart = Callable[[int, float], None]


class DecodeScheduler(Scheduler):
    """vLLM's scheduler on a decode instance: running batch, waiting queue, and the hand-over."""

    def __init__(self, config: SchedulerConfig, pool: BlockPool, ledger: DisaggregatedLedger,
                 start_transfer: TransferStart) -> None:
        super().__init__(config, pool, ledger)
        self.pd_ledger = ledger
        self.remote: deque[int] = deque()  # prefilled, waiting for KV blocks here
        self.loaded: deque[int] = deque()  # KV landed, waiting to join the batch
        self.transferring = 0
        self._start_transfer = start_transfer

    @property
    def outstanding(self) -> int:
        """Requests this engine core can step. With nothing running and only blocks held for
        transfers in flight keeping the queue heads out, none: the core sleeps until a transfer
        lands (which wakes it) instead of rescheduling an empty step forever."""
        ready = len(self.running) + len(self.loaded)
        queued = len(self.waiting) + len(self.remote)
        if ready or not queued or not self.transferring or self._a_head_fits():
            return ready + queued
        return 0

    def _a_head_fits(self) -> bool:
        if self.waiting:
            head = self._head_admission(self.config.max_num_batched_tokens)
            return head is not None and head.required <= self.pool.free
        return self.pool.blocks_for(int(self.ledger.prompt[self.remote[0]])) <= self.pool.free

    def schedule(self, now: float) -> StepPlan:
        """vLLM's step, then, in a step without preemption, the hand-over: loaded requests join
        (one token each: the last prompt token), then remote ones get their prompt's blocks."""
        plan = super().schedule(now)
        if plan.preempted:
            return plan
        budget = self.config.max_num_batched_tokens - int(np.add.reduce(plan.sched))
        joined = self._join_loaded(budget, now)
        if not self.waiting:
            self._allocate_remote(budget - joined, now)
        if not joined:
            return plan
        sched = np.concatenate((plan.sched, np.ones(joined, dtype=np.int64)))
        is_decode = np.concatenate((plan.is_decode, np.zeros(joined, dtype=bool)))
        features = _step_features(sched, self.running.computed, is_decode)
        return StepPlan(sched, is_decode, features, 0, plan.admitted + joined)

    def _join_loaded(self, budget: int, now: float) -> int:
        batch, ledger = self.running, self.ledger
        joined = 0
        while self.loaded and len(batch) < self.config.max_num_seqs and budget > joined:
            rid = self.loaded.popleft()
            prompt = int(ledger.prompt[rid])
            batch.append(rid, prompt, prompt - 1, 0, int(ledger.target[rid]), self.pool.blocks_for(prompt),
                         int(ledger.accept_rate[rid]))
            if ledger.tracks_answer:
                self.answers.admit(rid, 0)
            self.pd_ledger.decode_start[rid] = now
            joined += 1
        return joined

    def _allocate_remote(self, budget: int, now: float) -> None:
        while self.remote and len(self.running) < self.config.max_num_seqs and budget > 0:
            rid = self.remote[0]
            if not self.pool.allocate(self.pool.blocks_for(int(self.ledger.prompt[rid]))):
                return
            self.remote.popleft()
            self.transferring += 1
            self._start_transfer(rid, now)

    def plan_decode_only_run(self, max_steps: int) -> DecodeRun | None:
        """No run past a pending hand-over: `schedule` must see it at this step boundary."""
        if self.remote or self.loaded:
            return None
        return super().plan_decode_only_run(max_steps)

    def landed(self, rid: int) -> None:
        self.transferring -= 1
        self.loaded.append(rid)


class DecodeReplica(Replica):
    """A replica whose requests come from the prefill pool, as hand-overs rather than arrivals."""

    scheduler: DecodeScheduler

    def receive(self, rid: int) -> None:
        """A prefilled request arrives: it waits for KV blocks from the next step boundary."""
        self.scheduler.remote.append(rid)
        self._wake_up()

    def deliver(self, rid: int) -> None:
        """The request's KV has landed: it joins the batch at the next step boundary."""
        self.scheduler.landed(rid)
        self._wake_up()
