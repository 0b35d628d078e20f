"""Fast-forward: the run of decode-only steps that follows a step after which only decodes remain.

Reasoning workloads spend most of their time in long runs of steps in which the same sequences
each decode. Such a run changes course only when a request finishes, when the block pool cannot
cover the blocks the next step needs (preemption), or when a new request arrives. Between those
points every step is known in advance, so a replica plans them all in one vectorised call and
sleeps until the end of the run (or until an arrival interrupts it).

Without speculation, the m-th step of the run computes position c_i + m of each sequence (c_i its
computed tokens) and needs a new block exactly when (c_i + m) % B == 0, so counting sequences by
c_i % B gives every step's block demand at once. With speculation each sequence emits a varying
number of tokens per step and holds lookahead slots for the k tokens it verifies; its progress has
a closed form (`speculation.py`), so the run is planned as a (steps x sequences) table instead.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from rllmsim.cost.features import StepFeatures
from rllmsim.engine import speculation
from rllmsim.engine.kv_layout import KVLayout

#: A run planner's view of sliding-window layers: the layout and the blocks they hold now.
WindowState = tuple[KVLayout, np.ndarray]


MAX_RUN_STEPS = 1 << 16
_STEPS = np.arange(MAX_RUN_STEPS, dtype=np.int64)


class DecodeRun(NamedTuple):
    """`steps` decode steps; `new_blocks_cum[m]` is the blocks allocated by steps 0..m, and
    `features` describes each step for the cost model. `until_finish` is the number of steps
    after which the first sequence has emitted its last token: a run cut short before that
    finishes nobody. Speculative runs also carry each sequence's acceptance rate and the blocks
    each holds after every step (and its sliding-window layers hold, with such layers).
    (A named tuple: one is built per segment, millions of times.)"""

    steps: int
    new_blocks_cum: np.ndarray
    features: StepFeatures
    until_finish: int
    accept_rate: np.ndarray | None = None
    blocks_by_step: np.ndarray | None = None
    window_by_step: np.ndarray | None = None

    def blocks_at(self, step: int) -> np.ndarray:
        assert self.blocks_by_step is not None
        return self.blocks_by_step[step]

    def window_at(self, step: int) -> np.ndarray:
        assert self.window_by_step is not None
        return self.window_by_step[step]

    def first(self, steps: int) -> "DecodeRun":
        """The run cut to its first `steps` steps."""
        if steps >= self.steps:
            return self
        seqs, tokens_per_seq = self.features.decode_batch
        features = StepFeatures.decode_run(seqs, self.features.decode_kv_tokens[:steps], tokens_per_seq)
        return self._replace(
            steps=steps, new_blocks_cum=self.new_blocks_cum[:steps], features=features,
            blocks_by_step=None if self.blocks_by_step is None else self.blocks_by_step[:steps],
            window_by_step=None if self.window_by_step is None else self.window_by_step[:steps])


def plan_decode_run(
    computed: np.ndarray,
    remaining_outputs: np.ndarray,
    free_blocks: int,
    block_size: int,
    max_steps: int,
    window: WindowState | None = None,
) -> DecodeRun:
    """Plan the decode steps (one token each) that can run before the batch must be rescheduled.

    computed: tokens each sequence has in the KV cache, holding ceil(computed / B) blocks.
    remaining_outputs: tokens each sequence still has to emit (>= 0).
    window: with sliding-window layers, whose blocks also come and go (`kv_layout.py`).
    The run stops at the step in which the first sequence emits its last token (inclusive), before
    the first step whose blocks do not fit in `free_blocks`, and after `max_steps`.

    This runs once per segment, millions of times, on small arrays: it uses the ufuncs' own
    reduce/accumulate and ndarray methods, which skip numpy's Python-level wrappers.
    """
    n = len(computed)
    until_finish = int(np.minimum.reduce(remaining_outputs)) if n else 0
    horizon = min(until_finish, max_steps, MAX_RUN_STEPS)
    residues = np.bincount(computed % block_size, minlength=block_size)
    new_blocks_cum = np.add.accumulate(residues[_phases(block_size)[:horizon]])
    if window is None:
        steps = min(int(new_blocks_cum.searchsorted(free_blocks, "right")), horizon)
    else:
        layout, held = window
        new_blocks_cum += np.add.accumulate(layout.run_window_deltas(computed, held, horizon))
        steps = _steps_that_fit(new_blocks_cum, free_blocks, horizon)
    context = _STEPS[:steps] * n
    context += int(np.add.reduce(computed))
    return DecodeRun(steps, new_blocks_cum[:steps], StepFeatures.decode_run(n, context), until_finish)


@functools.lru_cache(maxsize=None)
def _phases(block_size: int) -> np.ndarray:
    """(-m) mod B for each step m of a run: the residue c % B of the sequences that need a new
    block in step m (position c + m starts a block when (c + m) % B == 0)."""
    return (-_STEPS) % block_size


def plan_speculative_run(
    computed: np.ndarray,
    accepted: np.ndarray,
    accept_rate: np.ndarray,
    remaining_outputs: np.ndarray,
    blocks: np.ndarray,
    free_blocks: int,
    block_size: int,
    spec_tokens: int,
    max_steps: int,
    window: WindowState | None = None,
) -> DecodeRun:
    """Plan decode steps that each verify `spec_tokens` proposed tokens per sequence.

    A step needs room for the sequence's computed tokens plus 1 + k slots. The run stops at the
    step in which the first sequence emits its last token, before the first step whose new blocks
    do not fit, and after `max_steps`.
    """
    n = len(computed)
    if n == 0 or int(remaining_outputs.min()) <= 0:
        return _empty_run(accept_rate, blocks, window)
    until_finish = int(speculation.steps_to_emit(accepted, accept_rate, remaining_outputs).min())
    horizon = min(until_finish, max_steps)
    m = np.arange(horizon, dtype=np.int64)[:, None]
    before = speculation.emitted_after(accepted[None, :], accept_rate[None, :], m)
    held = np.maximum(-(-(computed + before + 1 + spec_tokens) // block_size), blocks)
    new_blocks_cum = held.sum(axis=1) - int(blocks.sum())
    window_by_step = None
    if window is not None:
        layout, window_held = window
        window_by_step = layout.window_blocks(computed + before, 1 + spec_tokens)
        new_blocks_cum += window_by_step.sum(axis=1) - int(window_held.sum())
    steps = _steps_that_fit(new_blocks_cum, free_blocks, horizon)
    context = int(computed.sum()) + before[:steps].sum(axis=1)
    features = StepFeatures.decode_run(n, context, tokens_per_seq=1 + spec_tokens)
    return DecodeRun(steps, new_blocks_cum[:steps], features, until_finish, accept_rate, held[:steps],
                     None if window_by_step is None else window_by_step[:steps])


def _steps_that_fit(new_blocks_cum: np.ndarray, free_blocks: int, horizon: int) -> int:
    """Steps before the first whose blocks do not fit: new blocks need not grow step by step when
    sliding windows free blocks, so the bound is on their running maximum."""
    return min(int(np.maximum.accumulate(new_blocks_cum).searchsorted(free_blocks, "right")), horizon)


def _empty_run(accept_rate: np.ndarray, blocks: np.ndarray, window: WindowState | None) -> DecodeRun:
    empty = np.zeros(0, dtype=np.int64)
    return DecodeRun(0, empty, StepFeatures.decode_run(len(blocks), empty), 0, accept_rate, blocks[None, :0],
                     None if window is None else window[1][None, :0])
