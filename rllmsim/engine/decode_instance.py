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
replica as an arrival does, and a fast-forwarded run never outlasts a waiting hand-over: no run
starts while a remote request fits (only the step's token budget can have kept it out), and
nothing a decode run does frees a sequence slot or blocks before its first finish ends it.

One departure from vLLM's queue order: a loaded request joins the running batch at the start of
the step, ahead of preempted requests waiting to be recomputed (in vLLM those are prepended
before it). It holds its blocks already and needs one token, and joining first guarantees
progress: otherwise a preempted request that no longer fits beside the blocks held for loaded
requests can be readmitted, grow and preempt itself forever while they wait behind it. Joined,
it can be preempted like any running request; it is then recomputed locally, as vLLM does once
the remote KV has been consumed.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.pd_ledger import DisaggregatedLedger
from rllmsim.engine.replica import Replica
from rllmsim.engine.scheduler import Scheduler, SchedulerConfig, StepPlan
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
        """vLLM's step with the hand-over: loaded requests join the running batch first (each to
        compute its last prompt token), then, in a step without preemption and with nobody
        waiting, remote requests get their prompt's blocks."""
        self._join_loaded(now)
        plan = super().schedule(now)
        if not plan.preempted and not self.waiting:
            self._allocate_remote(self.config.max_num_batched_tokens - int(np.add.reduce(plan.sched)), now)
        return plan

    def _join_loaded(self, now: float) -> None:
        batch, ledger = self.running, self.ledger
        while self.loaded and len(batch) < self.config.max_num_seqs:
            rid = self.loaded.popleft()
            prompt = int(ledger.prompt[rid])
            batch.append(rid, prompt, prompt - 1, 0, int(ledger.target[rid]), self.pool.blocks_for(prompt),
                         int(ledger.accept_rate[rid]))
            if ledger.tracks_answer:
                self.answers.admit(rid, 0)
            self.pd_ledger.decode_start[rid] = now
            self._all_decoding = False

    def _allocate_remote(self, budget: int, now: float) -> None:
        while self.remote and len(self.running) < self.config.max_num_seqs and budget > 0:
            rid = self.remote[0]
            if not self.pool.allocate(self.pool.blocks_for(int(self.ledger.prompt[rid]))):
                return
            self.remote.popleft()
            self.transferring += 1
            self._start_transfer(rid, now)

    def plan_run(self, plan: StepPlan, max_steps: int) -> DecodeRun | None:
        """No run while the remote head fits the blocks and a sequence slot: this step's token
        budget may be all that kept it out, and a decode step leaves budget over."""
        if self.remote and not self.waiting and len(self.running) < self.config.max_num_seqs \
                and self.pool.blocks_for(int(self.ledger.prompt[self.remote[0]])) <= self.pool.free:
            return None
        return super().plan_run(plan, max_steps)

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
