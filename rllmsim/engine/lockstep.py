"""A data-parallel replica of a mixture-of-experts model: D engine cores stepping in lockstep.

vLLM's `DPEngineCoreProc` runs one scheduler, KV pool and waiting queue per DP rank; every forward
pass gathers all ranks' tokens for the experts, so the ranks step together: a rank with nothing to
schedule runs a dummy batch (`execute_dummy_batch`) while any rank has work, and each step lasts
as long as its slowest rank plus the shared expert and exchange time (`rllmsim.cost.data_parallel`).
The front end's DP load balancer (`DPLBAsyncMPClient.get_core_engine_for_request`) gives each
request to the rank with the lowest score, its requests in flight, plus, where it has a queue and
its KV cache is over half full, 6 x waiting x (usage - 0.5); ties to the lowest rank.

The loop is the replica's (`replica.py`): a segment is an optional scheduled step of every rank,
then an optional fast-forwarded run of decode steps, which exists only when every rank with work
can run one; its length is the shortest rank's, and its step times are the elementwise maximum of
the ranks' (cost models are elementwise, so a step costs the same bits either way). An arrival
interrupts the run at a step boundary, as for one engine core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import simpy

from rllmsim.cost.base import CostModel
from rllmsim.cost.data_parallel import SharedMoE
from rllmsim.cost.features import StepFeatures
from rllmsim.engine.replica import FinishCallback, Replica, _step_ends, apply_steps
from rllmsim.engine.scheduler import Scheduler, StepPlan
from rllmsim.engine.segment import MAX_RUN_STEPS, DecodeRun
from rllmsim.metrics.histogram import LogHistogram
from rllmsim.metrics.timeline import TimelineRecorder

#: vLLM's DP balancer: the waiting penalty per request and the KV usage it starts above.
WAITING_PENALTY, KV_PENALTY_FROM = 6.0, 0.5


class LockstepPlan(NamedTuple):
    """A segment of every rank: its scheduled step (None: none, or a dummy) and its run."""

    plans: list[StepPlan | None]
    runs: list[DecodeRun | None]
    own: np.ndarray  # (ranks, steps) each rank's own step seconds, NaN where it runs a dummy
    shared: np.ndarray  # (steps,) seconds of the experts and their exchange


@dataclass
class LockstepStats:
    """What lockstep costs, summed over ranks and steps (`rllmsim.metrics.summary`)."""

    steps: int = 0
    rank_steps: int = 0
    dummy_rank_steps: int = 0
    step_s: float = 0.0
    rank_s: float = 0.0  # ranks x step time
    own_s: float = 0.0  # busy ranks' own step time
    wait_s: float = 0.0  # busy ranks waiting for the slowest rank
    dummy_s: float = 0.0  # ranks running dummy batches
    shared_s: float = 0.0  # experts and exchange, per step
    per_rank_steps: list[int] = field(default_factory=list)

    def add(self, own: np.ndarray, durations: np.ndarray, shared: np.ndarray) -> None:
        ranks, steps = own.shape
        busy = ~np.isnan(own)
        total = float(durations.sum())
        self.steps += steps
        self.rank_steps += ranks * steps
        self.dummy_rank_steps += int((~busy).sum())
        self.step_s += total
        self.rank_s += ranks * total
        self.own_s += float(np.where(busy, own, 0.0).sum())
        self.wait_s += float(np.where(busy, durations - own, 0.0).sum()) - float(busy.sum(axis=0) @ shared)
        self.dummy_s += float(np.where(busy, 0.0, durations).sum())
        self.shared_s += float(shared.sum())
        if not self.per_rank_steps:
            self.per_rank_steps = [0] * ranks
        for r, n in enumerate(busy.sum(axis=1).tolist()):
            self.per_rank_steps[r] += n


class LockstepReplica(Replica):
    """One replica of D data-parallel ranks; the router sees it as one replica."""

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        schedulers: list[Scheduler],
        cost_model: CostModel,
        shared: SharedMoE,
        timeline: TimelineRecorder,
        itl: LogHistogram,
        fast_forward: bool = True,
        max_run_steps: int = MAX_RUN_STEPS,
        on_finish: FinishCallback | None = None,
        first_row: int = 0,
    ) -> None:
        """`first_row` is the timeline index of rank 0 (ranks get consecutive rows)."""
        self.ranks = schedulers
        self.shared = shared
        self.first_row = first_row
        self.stats = LockstepStats()
        super().__init__(env, index, schedulers[0], cost_model, timeline, itl, fast_forward, max_run_steps, on_finish)

    # -- what the router sees -------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return sum(s.outstanding for s in self.ranks)

    @property
    def kv_capacity_blocks(self) -> int:
        return sum(s.pool.capacity for s in self.ranks)

    def enqueue(self, rid: int) -> None:
        """The DP balancer's pick; the request joins that rank's queue at the next step boundary."""
        self.ranks[self.choose_rank(self.env.now)].waiting.append(rid)
        self._wake_up()

    def choose_rank(self, now: float) -> int:
        """KV usage is that of the step in progress, as a fast-forwarded run and step-by-step
        stepping both know it, so both route alike."""
        used = self._rank_blocks_used(now)
        scores = []
        for s, blocks in zip(self.ranks, used):
            score = float(s.outstanding)
            if s.waiting:
                score += WAITING_PENALTY * len(s.waiting) * max(0.0, blocks / s.pool.capacity - KV_PENALTY_FROM)
            scores.append(score)
        return scores.index(min(scores))

    def kv_blocks_used(self, now: float) -> int:
        return int(sum(self._rank_blocks_used(now)))

    def _rank_blocks_used(self, now: float) -> list[int]:
        """Each rank's blocks in use during the step in progress at `now` (see `Replica`)."""
        if self._in_flight is None:
            return [s.pool.used for s in self.ranks]
        ends, used = self._in_flight
        return used[min(int(ends.searchsorted(now, "left")), len(used) - 1)].tolist()

    # -- one segment ----------------------------------------------------------------------
    def _plan(self) -> tuple[LockstepPlan | None, None, np.ndarray, np.ndarray]:
        """Every rank's next segment; the step boundary times (segment start first) and the
        blocks in use during each step (steps x ranks)."""
        ranks = self.ranks
        before = np.array([s.pool.used for s in ranks], dtype=np.int64)
        busy = [s.outstanding > 0 for s in ranks]
        if self.fast_forward:
            runs = [s.plan_decode_only_run(self.max_run_steps) if b else None for s, b in zip(ranks, busy)]
            if all(run is not None and run.steps for run, b in zip(runs, busy) if b):
                steps = min(run.steps for run in runs if run is not None)
                return self._segment([None] * len(ranks), runs, steps, before)
        plans: list[StepPlan | None] = [s.schedule(self.clock) if b else None for s, b in zip(ranks, busy)]
        plans = [p if p is not None and np.logical_or.reduce(p.sched) else None for p in plans]
        if all(p is None for p in plans):
            return None, None, np.zeros(0), np.zeros((0, len(ranks)))
        after = np.array([s.pool.used for s in ranks], dtype=np.int64)
        runs = [None] * len(ranks)
        if self.fast_forward and all(p is not None for p, b in zip(plans, busy) if b):
            runs = [s.plan_run(p, self.max_run_steps) if p is not None else None for s, p in zip(ranks, plans)]
            if not all(run is not None and run.steps for run, p in zip(runs, plans) if p is not None):
                runs = [None] * len(ranks)
        steps = min((run.steps for run in runs if run is not None), default=0)
        return self._segment(plans, runs, steps, after)

    def _segment(self, plans: list[StepPlan | None], runs: list[DecodeRun | None], steps: int,
                 used_first: np.ndarray) -> tuple[LockstepPlan, None, np.ndarray, np.ndarray]:
        """Times and blocks of a segment: the ranks' scheduled steps (if any), then `steps` run steps."""
        first = any(p is not None for p in plans)
        width = int(first) + steps
        own = np.full((len(self.ranks), width), np.nan)
        used = np.repeat(used_first[None, :], width, axis=0)
        tokens = np.zeros((len(self.ranks), width), dtype=np.int64)
        for r, (plan, run) in enumerate(zip(plans, runs)):
            if plan is not None:
                own[r, 0] = self.cost_model.step_time(plan.features)[0] + plan.load_s
                tokens[r, 0] = plan.features.prefill_tokens[0] + plan.features.decode_tokens[0]
            if run is not None and steps:
                features = _head(run.features, steps)
                own[r, int(first):] = self.cost_model.step_time(features)
                tokens[r, int(first):] = features.decode_tokens
                used[int(first):, r] += run.new_blocks_cum[:steps]
        dummy = np.isnan(own)
        shared = self.shared.seconds(self.shared.global_tokens(tokens.max(axis=0), (tokens + dummy).sum(axis=0)))
        durations = np.fmax.reduce(own, axis=0) + shared
        return LockstepPlan(plans, runs, own, shared), None, _step_ends(self.clock, durations), used

    def _apply(self, plan: LockstepPlan | None, run: None, times: np.ndarray, used: np.ndarray) -> None:
        """Apply the done steps on every rank that had work in them."""
        assert plan is not None
        done = len(times) - 1
        self.clock = float(times[-1])
        self.steps += done
        self.stats.add(plan.own[:, :done], times[1:] - times[:-1], plan.shared[:done])
        for r, scheduler in enumerate(self.ranks):
            if plan.plans[r] is None and plan.runs[r] is None:
                continue  # a dummy batch throughout
            finished = apply_steps(scheduler, self.first_row + r, plan.plans[r], plan.runs[r], times,
                                   used[:done, r], self.timeline, self.itl)
            if self.on_finish is not None:
                for rids in finished:
                    if len(rids):
                        self.on_finish(self.index, rids, self.clock)


def _head(features: StepFeatures, steps: int) -> StepFeatures:
    """The first `steps` steps of a decode run's features."""
    if len(features) == steps:
        return features
    assert features.decode_batch is not None
    seqs, per_seq = features.decode_batch
    return StepFeatures.decode_run(seqs, features.decode_kv_tokens[:steps], per_seq)


def lockstep_summary(replicas: list, deployment) -> dict | None:
    """The DP straggler effect over all lockstep replicas: shares of rank time (ranks x step time)
    spent waiting for the slowest rank, running dummy batches, and in the shared experts and
    their exchange; None without lockstep replicas."""
    groups = [r for r in replicas if isinstance(r, LockstepReplica)]
    if not groups:
        return None
    total = LockstepStats()
    for group in groups:
        s = group.stats
        for name in ("steps", "rank_steps", "dummy_rank_steps", "step_s", "rank_s", "own_s", "wait_s", "dummy_s",
                     "shared_s"):
            setattr(total, name, getattr(total, name) + getattr(s, name))
    ranks = deployment.data_parallel_size
    share = (lambda x: x / total.rank_s) if total.rank_s > 0 else (lambda x: 0.0)
    return {
        "data_parallel_size": ranks,
        "moe_gpus": groups[0].shared.provenance()["moe_gpus"],
        "expert_parallel": bool(deployment.enable_expert_parallel),
        "lockstep_steps": total.steps,
        "rank_steps": total.rank_steps,
        "dummy_rank_steps": total.dummy_rank_steps,
        "dummy_step_share": total.dummy_rank_steps / total.rank_steps if total.rank_steps else 0.0,
        "dp_sync_wait_share": share(total.wait_s),
        "dummy_time_share": share(total.dummy_s),
        "shared_moe_share": share(total.shared_s * ranks),
        "busy_steps_per_rank": [sum(g.stats.per_rank_steps[r] for g in groups if g.stats.per_rank_steps)
                                for r in range(ranks)],
        "cost": groups[0].shared.provenance(),
    }
