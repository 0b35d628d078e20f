"""The replica timeline: one row per executed step or fast-forwarded run of decode steps.

Each row carries enough to rebuild time-weighted KV statistics exactly (the integral of blocks in
use and of its square over the row's duration) without one row per step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TIMELINE_COLUMNS = (
    "replica", "start_s", "end_s", "steps", "running", "waiting", "kv_blocks_start", "kv_blocks_peak",
    "kv_block_seconds", "kv_block_sq_seconds", "prefill_tokens", "decode_tokens", "output_tokens", "preempted",
    "kv_window_blocks",
)
_FLOAT_COLUMNS = frozenset({"start_s", "end_s", "kv_block_seconds", "kv_block_sq_seconds"})
_CHUNK_ROWS = 1 << 14


class TimelineRecorder:
    """Collects rows as tuples and packs them into float64 chunks of 16k rows.

    A day-scale run records millions of rows; fourteen Python objects per row would cost about
    ten times the memory of the packed chunks. Every value is an integer below 2**53 or a float,
    so float64 holds each exactly and `to_frame` restores the integer columns losslessly.
    """

    def __init__(self) -> None:
        self._rows: list[tuple[float, ...]] = []
        self._chunks: list[np.ndarray] = []

    def record(self, replica: int, start_s: float, end_s: float, steps: int, running: int, waiting: int,
               kv_blocks_start: int, kv_blocks_peak: int, kv_block_seconds: float, kv_block_sq_seconds: float,
               prefill_tokens: int, decode_tokens: int, output_tokens: int, preempted: int,
               kv_window_blocks: int = 0) -> None:
        """Append one row (arguments in `TIMELINE_COLUMNS` order). `kv_window_blocks` is what
        sliding-window layers hold at the row's end (the rest of the blocks are full attention's)."""
        self._rows.append((replica, start_s, end_s, steps, running, waiting, kv_blocks_start, kv_blocks_peak,
                           kv_block_seconds, kv_block_sq_seconds, prefill_tokens, decode_tokens, output_tokens,
                           preempted, kv_window_blocks))
        if len(self._rows) >= _CHUNK_ROWS:
            self._pack()

    def _pack(self) -> None:
        if self._rows:
            self._chunks.append(np.array(self._rows, dtype=np.float64))
            self._rows = []

    def __len__(self) -> int:
        return len(self._rows) + sum(len(c) for c in self._chunks)

    def to_frame(self) -> pd.DataFrame:
        self._pack()
        table = np.concatenate(self._chunks) if self._chunks else np.zeros((0, len(TIMELINE_COLUMNS)))
        frame = pd.DataFrame({
            name: table[:, i] if name in _FLOAT_COLUMNS else table[:, i].astype(np.int64)
            for i, name in enumerate(TIMELINE_COLUMNS)
        })
        return frame.sort_values(["start_s", "replica"], kind="stable").reset_index(drop=True)
