"""The cluster: replicas behind a router, fed by a client, in one SimPy environment."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from rllmsim import parallel, spec_decode
from rllmsim.cost.base import CostModel
from rllmsim.cost.data_parallel import SharedMoE
from rllmsim.deployment import Deployment
from rllmsim.engine.clients import Client
from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.kv_offload import offload_summary
from rllmsim.engine.lockstep import LockstepReplica, lockstep_summary
from rllmsim.engine.migration import Migrator
from rllmsim.engine.pipeline_replica import PipelineReplica, pipeline_summary
from rllmsim.engine.pipeline_scheduler import PipelineScheduler
from rllmsim.engine.replica import Replica
from rllmsim.engine.request import RequestLedger
from rllmsim.engine.router import make_router
from rllmsim.engine.scheduler import Scheduler, SchedulerConfig
from rllmsim.metrics.histogram import LogHistogram
from rllmsim.metrics.timeline import TimelineRecorder


@dataclass
class SimulationResult:
    """Everything a run produced, before it is summarised or written."""

    ledger: RequestLedger
    timeline: pd.DataFrame
    itl: LogHistogram
    capacity_blocks: int
    simulated_s: float
    wall_s: float
    steps: int
    events: int
    truncated_outputs: int
    prefix_query_tokens: int = 0
    prefix_hit_tokens: int = 0
    data_parallel: dict | None = None  # lockstep DP ranks: what waiting for the slowest rank cost
    kv_offloading: dict | None = None  # the CPU KV tiers' traffic, summed over engine cores
    pipeline: dict | None = None  # pipeline replicas: how busy their stages were
    migration: dict | None = None  # live migrations between replicas


class Cluster:
    """Builds the replicas of a deployment and runs a workload through them."""

    def __init__(
        self,
        deployment: Deployment,
        cost_model: CostModel,
        requests: pd.DataFrame,
        client: Client,
        router: str = "round-robin",
        fast_forward: bool = True,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.deployment = deployment
        self.env = simpy.Environment()
        self.ledger = RequestLedger(requests)
        self.client = client
        self.timeline = TimelineRecorder()
        self.itl = LogHistogram()
        self._waiters: dict[int, simpy.Event] = {}
        self.truncated_outputs = apply_max_model_len(self.ledger, deployment.max_model_len)
        self.migrator = Migrator(self, deployment.migration_interval_s) if deployment.enable_migration else None
        config = scheduler_config(deployment)
        if deployment.speculative_method:
            # each request its own acceptance, from the run's "speculation" stream (rng) when given
            rng = rng if rng is not None else np.random.default_rng(0)
            self.ledger.accept_rate[:] = spec_decode.request_rate_units(deployment, self.ledger.size, rng)
        self.replicas = self._build_replicas(config, cost_model, fast_forward)
        self.router = make_router(router, self.ledger, deployment.block_size,
                                  [r.kv_capacity_blocks for r in self.replicas])
        self.outstanding = np.zeros(len(self.replicas), dtype=np.int64)
        self.arrivals = 0

    def _build_replicas(self, config: SchedulerConfig, cost_model: CostModel, fast_forward: bool) -> list[Replica]:
        """What the router spreads over: one engine core per replica and DP rank (a
        `PipelineReplica` with pipeline stages), except that the DP ranks of a mixture-of-experts
        replica step together as one `LockstepReplica`."""
        d = self.deployment

        def pool() -> BlockPool:
            return BlockPool(d.num_gpu_blocks, d.block_size)

        def scheduler() -> Scheduler:
            return Scheduler(config, pool(), self.ledger)

        if d.pipeline_parallel_size > 1:  # stepped one micro-batch at a time: no fast-forward
            return [PipelineReplica(self.env, i, PipelineScheduler(config, pool(), self.ledger), cost_model, d,
                                    self.timeline, self.itl, on_finish=self._finished)
                    for i in range(d.engine_cores)]
        if not parallel.lockstep(d):
            boundary = self.migrator.at_boundary if self.migrator else None
            return [Replica(self.env, i, scheduler(), cost_model, self.timeline, self.itl, fast_forward=fast_forward,
                            on_finish=self._finished, at_boundary=boundary) for i in range(d.engine_cores)]
        shared = SharedMoE(d, cost_model)
        ranks = d.data_parallel_size
        return [LockstepReplica(self.env, i, [scheduler() for _ in range(ranks)], cost_model, shared, self.timeline,
                                self.itl, fast_forward=fast_forward, on_finish=self._finished, first_row=i * ranks)
                for i in range(d.replicas)]

    def submit(self, rid: int, notify: bool = False) -> simpy.Event | None:
        """A request arrives now: route it, or reject it. With `notify`, returns an event that
        fires when the request completes or is rejected."""
        self.arrivals += 1
        waiter = self.env.event() if notify else None
        if self.ledger.rejected[rid]:
            if waiter is not None:
                waiter.succeed()
            return waiter
        if waiter is not None:
            self._waiters[rid] = waiter
        self._route(rid)
        return waiter

    def _route(self, rid: int) -> None:
        """Give an admitted request to the replica the router picks."""
        index = self.router.choose(rid, self.replicas, self.outstanding, self.env.now)
        self.outstanding[index] += 1
        self.ledger.replica[rid] = index
        self.replicas[index].enqueue(rid)

    def move_outstanding(self, rid: int, source: int, destination: int) -> None:
        """A request migrates: it is now outstanding at `destination`, not `source`."""
        self.outstanding[source] -= 1
        self.outstanding[destination] += 1
        self.ledger.replica[rid] = destination

    def _finished(self, replica: int, rids: np.ndarray, now: float) -> None:
        self.outstanding[replica] -= len(rids)
        if self._waiters:
            for rid in rids.tolist():
                waiter = self._waiters.pop(rid, None)
                if waiter is not None:
                    waiter.succeed()

    def run(self) -> SimulationResult:
        started = time.perf_counter()
        self.env.process(self.client.drive(self))
        if self.migrator is not None:
            self.env.process(self.migrator.run())
        self.env.run()
        wall = time.perf_counter() - started
        return SimulationResult(
            ledger=self.ledger,
            timeline=self.timeline.to_frame(),
            itl=self.itl,
            capacity_blocks=self.deployment.num_gpu_blocks,
            simulated_s=float(max((r.clock for r in self.replicas), default=0.0)),
            wall_s=wall,
            steps=sum(r.steps for r in self.replicas),
            events=self.arrivals + sum(r.events for r in self.replicas),
            truncated_outputs=self.truncated_outputs,
            prefix_query_tokens=sum(s.prefix_query_tokens for s in self._schedulers()),
            prefix_hit_tokens=sum(s.prefix_hit_tokens for s in self._schedulers()),
            data_parallel=lockstep_summary(self.replicas, self.deployment),
            kv_offloading=offload_summary([s.cpu_tier for s in self._schedulers()]),
            pipeline=pipeline_summary(self.replicas),
            migration=self.migrator.summary() if self.migrator else None,
        )

    def _schedulers(self) -> list[Scheduler]:
        return [s for r in self.replicas for s in getattr(r, "ranks", [r.scheduler])]


def scheduler_config(d: Deployment) -> SchedulerConfig:
    """The engine arguments of `d` that shape scheduling."""
    return SchedulerConfig(d.max_num_seqs, d.max_num_batched_tokens, d.enable_chunked_prefill,
                           d.num_speculative_tokens, d.enable_prefix_caching, d.scheduler_reserve_full_isl,
                           d.kv_layout, d.offload_config)


def apply_max_model_len(ledger: RequestLedger, limit: int) -> int:
    """Prompts with no room for an output token are rejected on arrival (vLLM answers 400);
    outputs that would pass max_model_len stop there, as vLLM's length limit stops them.
    Returns the outputs cut."""
    too_long = ledger.prompt >= limit
    ledger.rejected[too_long] = True
    ledger.reject_reason[too_long] = f"prompt >= max_model_len {limit}"
    room = np.maximum(limit - ledger.prompt, 1)
    truncated = (~too_long) & (ledger.target > room)
    ledger.target = np.where(truncated, room, ledger.target)
    return int(truncated.sum())
