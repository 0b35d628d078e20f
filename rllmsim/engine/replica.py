"""One vLLM replica as a SimPy process: schedule a step, ask the cost model, advance time.

After a pure-decode step the replica fast-forwards (see `segment.py`): it plans the following
decode steps up to the next batch-changing event, computes their durations in one vectorised call
and sleeps until the run ends. When the router delivers a request mid-run, the replica wakes,
finishes the step in progress (an engine step is never interrupted) and reschedules, exactly as
the step-by-step loop would at that step boundary. Step end times are accumulated in the same
left-to-right order in both modes, so both give bit-identical timestamps.

The replica keeps its own clock (`clock`), the end of its last step, as the source of truth for
every timestamp; SimPy's clock only orders events.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import simpy

from rllmsim.cost.base import CostModel
from rllmsim.engine.scheduler import Scheduler, StepPlan
from rllmsim.engine.segment import MAX_RUN_STEPS, DecodeRun
from rllmsim.metrics.histogram import LogHistogram
from rllmsim.metrics.timeline import TimelineRecorder

FinishCallback = Callable[[int, np.ndarray, float], None]
_NOBODY = np.zeros(0, dtype=np.int64)


class EngineCore:
    """What the cluster and the router see of one engine core, whatever steps it: its scheduler
    (waiting queue and KV pool), its clock, and its step and event counts."""

    def __init__(self, env: simpy.Environment, index: int, scheduler: Scheduler, cost_model: CostModel,
                 timeline: TimelineRecorder, itl: LogHistogram, on_finish: FinishCallback | None) -> None:
        self.env = env
        self.index = index
        self.scheduler = scheduler
        self.cost_model = cost_model
        self.timeline = timeline
        self.itl = itl
        self.on_finish = on_finish
        self.clock = 0.0
        self.steps = 0
        self.events = 0
        self._wake: simpy.Event | None = None

    @property
    def outstanding(self) -> int:
        """Requests running or waiting here."""
        return self.scheduler.outstanding

    @property
    def kv_capacity_blocks(self) -> int:
        return self.scheduler.pool.capacity

    def enqueue(self, rid: int) -> None:
        """Accept a routed request; it joins the waiting queue at the next step boundary."""
        self.scheduler.waiting.append(rid)
        self._wake_up()

    def _wake_up(self) -> None:
        """A request joined: wake the idle process."""
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()


class Replica(EngineCore):
    """A SimPy process serving the requests the router gives it."""

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        scheduler: Scheduler,
        cost_model: CostModel,
        timeline: TimelineRecorder,
        itl: LogHistogram,
        fast_forward: bool = True,
        max_run_steps: int = MAX_RUN_STEPS,
        on_finish: FinishCallback | None = None,
        at_boundary: Callable[["Replica"], None] | None = None,
    ) -> None:
        super().__init__(env, index, scheduler, cost_model, timeline, itl, on_finish)
        self.at_boundary = at_boundary  # called at every step boundary before scheduling (migration)
        self.fast_forward = fast_forward
        self.max_run_steps = max_run_steps
        self._sleeping = False
        self._in_flight: tuple[np.ndarray, int, np.ndarray] | None = None
        self.process = env.process(self._run())

    def _wake_up(self) -> None:
        """A request joined: wake the idle process, or cut its sleep short at the step in progress
        (an idle process is never sleeping)."""
        super()._wake_up()
        if self._sleeping:
            self._sleeping = False
            self.process.interrupt()

    def kv_blocks_used(self, now: float) -> int:
        """Blocks in use during the step in progress at `now` (a step's blocks are allocated when
        it starts); a step that ends exactly at `now` still counts as in progress."""
        if self._in_flight is None:
            return self.scheduler.pool.used
        ends, used = self._in_flight
        return int(used[min(int(ends.searchsorted(now, "left")), len(used) - 1)])

    # -- the process ----------------------------------------------------------------------
    def _run(self):
        env = self.env
        while True:
            if self.at_boundary is not None:
                self.at_boundary(self)
            if self.outstanding == 0:
                self._wake = env.event()
                yield self._wake
                self.events += 1
                self.clock = max(self.clock, env.now)
                continue  # at the boundary of waking up, too
            plan, run, times, used = self._plan()
            if plan is None and run is None:
                continue  # the only running request preempted itself; the next step readmits it
            self._in_flight = (times[1:], used)
            done = yield from self._sleep_until(times[1:])
            self._in_flight = None
            self._apply(plan, run, times[: done + 1], used[:done])

    def _plan(self) -> tuple[StepPlan | None, DecodeRun | None, np.ndarray, np.ndarray]:
        """The next segment: an optional scheduled step, then an optional fast-forwarded run.

        Returns the plan, the run, the step boundary times (segment start first) and the KV
        blocks in use during each step. A batch that only decodes, with nobody waiting, skips the
        general scheduler: its whole segment is one run.
        """
        scheduler = self.scheduler
        used_before = scheduler.pool.used
        run = scheduler.plan_decode_only_run(self.max_run_steps) if self.fast_forward else None
        if run is not None and run.steps:
            times = _step_ends(self.clock, self.cost_model.step_time(run.features))
            return None, run, times, used_before + run.new_blocks_cum
        plan = scheduler.schedule(self.clock)
        if not np.logical_or.reduce(plan.sched):
            return None, None, np.zeros(0), np.zeros(0)
        first = float(self.cost_model.step_time(plan.features)[0]) + plan.load_s
        used_first = scheduler.pool.used
        run = scheduler.plan_run(plan, self.max_run_steps) if self.fast_forward else None
        if run is None or run.steps == 0:
            return plan, None, np.array([self.clock, self.clock + first]), np.array([used_first])
        times = _step_ends(self.clock, self.cost_model.step_time(run.features), first)
        return plan, run, times, np.concatenate(([used_first], used_first + run.new_blocks_cum))

    def _sleep_until(self, ends: np.ndarray):
        """Sleep until the planned steps end or an arrival interrupts; returns the steps done."""
        env = self.env
        self._sleeping = True
        try:
            yield env.timeout(max(0.0, float(ends[-1]) - env.now))
        except simpy.Interrupt:
            pass
        self._sleeping = False
        self.events += 1
        if env.now >= ends[-1]:
            return len(ends)
        in_progress = int(ends.searchsorted(env.now, "left"))
        if ends[in_progress] > env.now:
            yield env.timeout(float(ends[in_progress]) - env.now)
            self.events += 1
        return in_progress + 1

    def _apply(self, plan: StepPlan | None, run: DecodeRun | None, times: np.ndarray, used: np.ndarray) -> None:
        """Apply the steps done: `times` holds the segment start and each done step's end,
        `used` the blocks in use during each done step."""
        self.clock = float(times[-1])
        self.steps += len(times) - 1
        finished = apply_steps(self.scheduler, self.index, plan, run, times, used, self.timeline, self.itl)
        if self.on_finish is not None:
            for rids in finished:
                if len(rids):
                    self.on_finish(self.index, rids, self.clock)


def apply_steps(scheduler: Scheduler, row_index: int, plan: StepPlan | None, run: DecodeRun | None,
                times: np.ndarray, used: np.ndarray, timeline: TimelineRecorder,
                itl: LogHistogram) -> tuple[np.ndarray, np.ndarray]:
    """Apply one engine core's done steps of a segment and record its timeline row (under
    `row_index`); returns the requests the scheduled step and the run finished. Shared by a
    replica and by each rank of a lockstep data-parallel replica (`lockstep.py`)."""
    running, waiting = len(scheduler.running), len(scheduler.waiting)
    done = len(times) - 1
    emitted = prefill_tokens = decode_tokens = preempted = 0
    finished = plan_finished = _NOBODY
    start, end = float(times[0]), float(times[-1])
    durations = times[1:] - times[:-1]
    run_steps = done
    if plan is not None:
        emitted, plan_finished = scheduler.apply(plan, float(times[1]), itl)
        prefill_tokens = int(plan.features.prefill_tokens[0])
        decode_tokens = int(plan.features.decode_tokens[0])
        preempted = plan.preempted
        run_steps = done - 1
    if run_steps > 0:
        assert run is not None and run.features.decode_batch is not None
        run_emitted, finished = scheduler.advance(run, durations[done - run_steps:], end, itl)
        emitted += run_emitted
        seqs, tokens_per_seq = run.features.decode_batch
        decode_tokens += run_steps * seqs * tokens_per_seq
    blocks = used.astype(np.float64)
    # without sliding windows blocks are only allocated within a segment: its last step holds the most
    peak = int(np.maximum.reduce(used)) if scheduler.hybrid_kv else int(used[-1])
    timeline.record(
        row_index, start, end, done, running, waiting, int(used[0]), peak,
        float(np.dot(blocks, durations)), float(np.dot(blocks * blocks, durations)), prefill_tokens,
        decode_tokens, emitted, preempted, scheduler.window_blocks_held)
    return plan_finished, finished


def _step_ends(start: float, durations: np.ndarray, first: float | None = None) -> np.ndarray:
    """[start, end of each step]: `first` (when given) then `durations`, summed left to right as
    the step-by-step loop adds them, so both give the same timestamps."""
    offset = 1 if first is None else 2
    times = np.empty(len(durations) + offset)
    times[0] = start
    if first is not None:
        times[1] = first
    times[offset:] = durations
    return np.add.accumulate(times, out=times)
