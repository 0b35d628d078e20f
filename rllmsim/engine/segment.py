"""Fast-forward: the run of decode-only steps that follows a pure-decode step.

Reasoning workloads spend most of their time in long runs of steps in which the same sequences
each decode one token. Such a run changes course only when a request finishes, when the block pool
cannot cover the blocks the next step needs (preemption), or when a new request arrives. Between
those points every step is known in advance, so a replica plans them all in one vectorised call
and sleeps until the end of the run (or until an arrival interrupts it).

Given the batch after a pure-decode step, with computed tokens c_i (each holding ceil(c_i / B)
blocks), the m-th following step computes position c_i + m of each sequence and needs a new block
exactly when (c_i + m) % B == 0. Counting the sequences by c_i % B gives every step's new-block
demand at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rllmsim.cost.features import StepFeatures


@dataclass(frozen=True)
class DecodeRun:
    """`steps` decode steps after a pure-decode step; `new_blocks_cum[m]` is the blocks allocated
    by steps 0..m of the run, and `features` describes each step for the cost model."""

    steps: int
    new_blocks_cum: np.ndarray
    features: StepFeatures


def plan_decode_run(
    computed: np.ndarray,
    remaining_outputs: np.ndarray,
    free_blocks: int,
    block_size: int,
    max_steps: int,
) -> DecodeRun:
    """Plan the decode steps that can run before the batch must be rescheduled.

    computed: tokens each sequence has in the KV cache (all sequences decode).
    remaining_outputs: tokens each sequence still has to emit (>= 0).
    The run stops at the step in which the first sequence emits its last token (inclusive), before
    the first step whose blocks do not fit in `free_blocks`, and after `max_steps`.
    """
    n = len(computed)
    if n == 0:
        return DecodeRun(0, np.zeros(0, dtype=np.int64), StepFeatures.decode_only(np.zeros(0), np.zeros(0)))
    horizon = int(min(int(remaining_outputs.min()), max_steps))
    m = np.arange(horizon, dtype=np.int64)
    residues = np.bincount(computed % block_size, minlength=block_size)
    new_blocks_cum = np.cumsum(residues[(-m) % block_size])
    steps = int(np.searchsorted(new_blocks_cum, free_blocks, side="right"))
    steps = min(steps, horizon)
    context = int(computed.sum()) + m[:steps] * n
    return DecodeRun(steps, new_blocks_cum[:steps], StepFeatures.decode_only(np.full(steps, n), context))
