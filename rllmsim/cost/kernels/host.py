"""Host time of an engine step, and how vLLM's async scheduling hides it behind the GPU.

Each step the engine core schedules (Python, per request), prepares inputs, launches the model
and processes outputs. Without async scheduling these run between GPU steps and add to every
step. With it (vLLM's `--async-scheduling`, on by default since 0.14) the scheduler works on step
n+1 while the GPU runs step n, so a step takes the larger of the two, plus whatever cannot
overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class HostParams:
    """Seconds of host work per step.

    step_s, per_seq_s: fixed and per scheduled sequence (scheduling, input preparation, output
        processing); the values the roofline model has always charged (2.5 ms + 12 us a sequence),
        carried over as an assumption, not fitted to any run.
    per_token_s: per scheduled token (input ids, positions, slot mappings).
    serial_s: host work that cannot overlap the GPU even with async scheduling.
    launch_s: CPU time to launch one kernel when a step is not replayed from a CUDA graph
        (`--enforce-eager`, or batches above the largest capture size): the GPU cannot run a
        step faster than the host issues its kernels. ~5 us is the typical CUDA launch cost.
    """

    step_s: float = 2.5e-3
    per_seq_s: float = 12e-6
    per_token_s: float = 0.0
    serial_s: float = 0.0
    launch_s: float = 5e-6

    def seconds(self, seqs: Any, tokens: Any) -> Any:
        return self.step_s + self.per_seq_s * seqs + self.per_token_s * tokens


def combine(gpu_s: Any, host_s: Any, async_scheduling: bool, serial_s: float = 0.0,
            maximum: Callable[[Any, Any], Any] = np.maximum) -> Any:
    """Step seconds from GPU and host seconds (arrays, or floats with `maximum=max`): overlapped
    with async scheduling, added without."""
    step = maximum(gpu_s, host_s) if async_scheduling else gpu_s + host_s
    return step + serial_s if serial_s else step  # x + 0.0 == x: the same bits either way
