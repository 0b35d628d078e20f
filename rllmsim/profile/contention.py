"""Detects steps slowed by other processes, from the kernel's per-thread run-queue wait.

On a shared host (a CI runner, a CPU box where other jobs run) another process can take a core
from the engine in the middle of a step; the step then takes several times longer and says
nothing about the engine. Linux counts, per thread, the nanoseconds it spent runnable but
waiting for a CPU (`/proc/self/task/<tid>/schedstat`, second field). Summed over the engine's
worker threads across one step, that wait is close to the time the step lost, so a step
whose wait exceeds `CONTENTION_ABS_S + CONTENTION_FRAC * wall` is flagged `contended` and
re-measured. Where schedstat is unavailable the probe reads NaN and never flags a step.

`others_busy_cores` (from /proc/stat less this process's own CPU time) lets the driver wait for
a quiet machine before a measurement instead of retrying into a busy one.
"""

from __future__ import annotations

import math
import os
import time

CONTENTION_ABS_S = 0.001
CONTENTION_FRAC = 0.05
_TASKS = "/proc/self/task"


class RunQueueProbe:
    """Run-queue wait of the process's *worker* threads, summed across one step.

    Only threads that did a real share of the process's work so far (at least WORKER_SHARE of
    its CPU time) count: an engine also runs helper threads (gloo TCP loops, loggers) that wake
    briefly and queue behind the engine's own compute threads; their wait is the engine
    waiting for itself, not for another process.
    """

    WORKER_SHARE = 0.05

    def __init__(self) -> None:
        self.available = os.path.exists(f"{_TASKS}/{os.getpid()}/schedstat")
        self._before: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _snapshot() -> dict[str, tuple[int, int]]:
        """tid -> (cpu ns, run-queue wait ns) for every live thread of this process."""
        out = {}
        for tid in os.listdir(_TASKS):
            try:
                with open(f"{_TASKS}/{tid}/schedstat", "rb") as fh:
                    fields = fh.read().split()
                out[tid] = (int(fields[0]), int(fields[1]))
            except (OSError, IndexError, ValueError):
                continue  # a thread that exited between listdir and open
        return out

    def start(self) -> None:
        if self.available:
            try:
                self._before = self._snapshot()
            except OSError:
                self.available = False

    def stop(self) -> float:
        """Seconds the worker threads waited on a run queue since `start()` (NaN if unknown)."""
        if not self.available:
            return math.nan
        try:
            after = self._snapshot()
        except OSError:
            return math.nan
        total_cpu = sum(cpu for cpu, _ in after.values()) or 1
        wait = 0
        for tid, (cpu, waited) in after.items():
            if cpu < self.WORKER_SHARE * total_cpu:
                continue
            cpu0, waited0 = self._before.get(tid, (0, 0))
            wait += waited - waited0
        return wait / 1e9


def _busy_and_own() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        cpu = [int(v) for v in fh.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait
    busy = sum(cpu) - cpu[3] - (cpu[4] if len(cpu) > 4 else 0)
    with open("/proc/self/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return busy, int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of the file)


def others_busy_cores(window_s: float = 0.5) -> float:
    """CPU cores other processes kept busy over the next `window_s` seconds (NaN if unknown)."""
    try:
        busy0, own0 = _busy_and_own()
        time.sleep(window_s)
        busy1, own1 = _busy_and_own()
    except (OSError, ValueError, IndexError):
        return math.nan
    ticks = os.sysconf("SC_CLK_TCK") * window_s
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / ticks)


def is_contended(runq_wait_s: float, wall_s: float) -> bool:
    if math.isnan(runq_wait_s):
        return False
    return runq_wait_s > CONTENTION_ABS_S + CONTENTION_FRAC * wall_s


def rule() -> dict:
    return {"signal": "sum of /proc/self/task/*/schedstat run-queue wait over the step",
            "contended_if": f"runq_wait_s > {CONTENTION_ABS_S} + {CONTENTION_FRAC} * wall_s"}
