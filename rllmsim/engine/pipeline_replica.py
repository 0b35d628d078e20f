"""A pipeline-parallel vLLM replica: one engine core, P stages, up to P micro-batches in flight.

The engine core loop is vLLM's `EngineCore.step_with_batch_queue` (`max_concurrent_batches` = P
under pipeline parallelism): while fewer than P batches are in flight and someone can be
scheduled, it schedules one more and launches it without waiting; otherwise it blocks on the
oldest batch, applies its output, and loops. Requests that arrive meanwhile join the waiting
queue and are seen at the next schedule.

Timing: scheduling and preparing a batch is the step's host time (the cost model's
`host_seconds`), spent on the engine core before the batch launches; the batch then runs stage
after stage, each stage as soon as it is free, taking its layers' share of the step's GPU time
(the lm_head and sampling are spread with the layers, not put on the last stage), and the
hidden states cross between stages (`StageLinks`). With P batches in flight every stage is busy,
which is where pipeline parallelism earns its throughput; each sequence still waits for its
batch to cross all stages before its next token.

Pipeline replicas are stepped one micro-batch at a time (no fast-forward), so `--step-by-step`
gives the same results by construction.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import simpy

from rllmsim import parallel, pipeline
from rllmsim.cost.base import CostModel
from rllmsim.deployment import Deployment
from rllmsim.engine.links import link
from rllmsim.engine.pipeline_scheduler import MicroBatch, PipelineScheduler
from rllmsim.engine.replica import EngineCore, FinishCallback, apply_steps
from rllmsim.errors import ConfigError
from rllmsim.metrics.histogram import LogHistogram
from rllmsim.metrics.timeline import TimelineRecorder


class StageLinks:
    """Seconds for a micro-batch's intermediate tensors to cross each stage boundary.

    Stage j runs on GPUs j x tp .. (j + 1) x tp - 1 of the replica; a boundary inside one NVLink
    domain crosses the GPU's interconnect, one between domains the network. vLLM sends each TP
    rank's slice of the tensors and all-gathers them on the receiving stage, so each GPU's link
    carries 1/tp of the bytes; each crossing also pays one copy's fixed cost (`links.py`)."""

    def __init__(self, dep: Deployment) -> None:
        tp, domain = dep.tp, parallel.nvlink_domain(dep)
        self.bytes_per_token = pipeline.activation_bytes_per_token(dep) / tp
        # (bytes per second, fixed seconds) per boundary
        self.links = [link(dep, (j * tp) // domain != ((j + 1) * tp) // domain or tp > domain)
                      for j in range(dep.pipeline_parallel_size - 1)]

    def seconds(self, boundary: int, tokens: int) -> float:
        rate, fixed = self.links[boundary]
        return fixed + tokens * self.bytes_per_token / rate


class PipelineReplica(EngineCore):
    """A SimPy process serving the requests the router gives it, P micro-batches at a time."""

    def __init__(self, env: simpy.Environment, index: int, scheduler: PipelineScheduler, cost_model: CostModel,
                 deployment: Deployment, timeline: TimelineRecorder, itl: LogHistogram,
                 on_finish: FinishCallback | None = None) -> None:
        if not hasattr(cost_model, "host_seconds"):
            raise ConfigError("pipeline_parallel_size > 1 needs a cost model that separates host and GPU time; "
                              "use --cost-model kernels or roofline")
        super().__init__(env, index, scheduler, cost_model, timeline, itl, on_finish)
        self.scheduler: PipelineScheduler = scheduler
        self.depth = deployment.pipeline_parallel_size
        layers = pipeline.stage_layers(deployment.model.num_layers, self.depth)
        self.stage_shares = [n / deployment.model.num_layers for n in layers]
        self.links = StageLinks(deployment)
        self._stage_free = [0.0] * self.depth
        self.stage_busy_s = [0.0] * self.depth  # GPU seconds each stage computed
        self.micro_batch_seqs = 0  # sequences summed over micro-batches
        self._first_launch: float | None = None
        self._in_flight: deque[tuple[MicroBatch, float, float, int]] = deque()
        self._recorded_until = 0.0
        self.process = env.process(self._run())

    def kv_blocks_used(self, now: float) -> int:
        """Blocks held now: a micro-batch's blocks are allocated when it is scheduled."""
        return self.scheduler.pool.used

    @property
    def span_s(self) -> float:
        """From the first micro-batch's schedule to the last one's return (0 before any)."""
        return self._recorded_until - self._first_launch if self._first_launch is not None else 0.0

    # -- the engine core ------------------------------------------------------------------
    def _run(self):
        env = self.env
        while True:
            if not self._in_flight and self.outstanding == 0:
                self._wake = env.event()
                yield self._wake
                self.events += 1
                self.clock = max(self.clock, env.now)
            if self.clock > env.now:
                yield env.timeout(self.clock - env.now)  # arrivals until the engine core schedules
                self.events += 1
            if len(self._in_flight) < self.depth and self.outstanding and self._launch():
                continue
            if not self._in_flight:
                continue  # the only running request preempted itself; the next schedule readmits it
            micro, scheduled_at, end, used = self._in_flight.popleft()
            if end > env.now:
                yield env.timeout(end - env.now)
                self.events += 1
            self.clock = max(self.clock, end)
            self._finish(micro, scheduled_at, end, used)

    def _launch(self) -> bool:
        """Schedule a micro-batch at the engine core's clock and send it down the stages."""
        micro = self.scheduler.schedule_micro_batch(self.clock)
        if micro is None:
            return False
        features = micro.features
        step = float(self.cost_model.step_time(features)[0])
        host = float(self.cost_model.host_seconds(features)[0])
        gpu = max(step - host, 0.0)  # without async scheduling a step is its GPU time plus its host time
        scheduled_at = self.clock
        self.clock += host + micro.load_s  # a CPU-tier load completes before the forward starts
        tokens = int(features.prefill_tokens[0] + features.decode_tokens[0])
        t = self.clock
        for stage, share in enumerate(self.stage_shares):
            if stage:
                t += self.links.seconds(stage - 1, tokens)
            t = max(t, self._stage_free[stage]) + gpu * share
            self._stage_free[stage] = t
            self.stage_busy_s[stage] += gpu * share
        self._in_flight.append((micro, scheduled_at, t, self.scheduler.pool.used))
        self.micro_batch_seqs += len(micro.rids)
        if self._first_launch is None:
            self._first_launch = scheduled_at
        return True

    def _finish(self, micro: MicroBatch, scheduled_at: float, end: float, used: int) -> None:
        """Apply a returned micro-batch; its timeline row runs from the previous row's end (or
        from when it was scheduled, after an idle pipeline) to its return, so rows never overlap."""
        start = max(self._recorded_until, scheduled_at)
        self._recorded_until = end
        self.steps += 1
        finished, _ = apply_steps(self.scheduler, self.index, micro, None, np.array([start, end]),
                                  np.array([used]), self.timeline, self.itl)
        if self.on_finish is not None and len(finished):
            self.on_finish(self.index, finished, self.clock)


def pipeline_summary(replicas: list) -> dict | None:
    """How busy the stages of the pipeline replicas were, for the run's summary; None without
    them. A stage's busy share is its GPU seconds over the span from the first launch to the last
    return (per replica, summed): 1 - the mean share is the pipeline's bubble."""
    pipes = [r for r in replicas if isinstance(r, PipelineReplica)]
    if not pipes:
        return None
    span = sum(r.span_s for r in pipes)
    busy = [sum(r.stage_busy_s[j] for r in pipes) for j in range(pipes[0].depth)]
    shares = [b / span if span > 0 else 0.0 for b in busy]
    batches = sum(r.steps for r in pipes)
    return {"pipeline_parallel_size": pipes[0].depth, "micro_batches": batches,
            "mean_micro_batch_seqs": sum(r.micro_batch_seqs for r in pipes) / batches if batches else 0.0,
            "stage_busy_share": shares, "bubble_share": 1.0 - sum(shares) / len(shares)}

