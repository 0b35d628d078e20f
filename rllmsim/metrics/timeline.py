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
)


class TimelineRecorder:
    """Appends timeline rows column-wise; cheap enough for millions of rows."""

    def __init__(self) -> None:
        self._cols: dict[str, list] = {c: [] for c in TIMELINE_COLUMNS}

    def record(self, **row: float) -> None:
        for name, values in self._cols.items():
            values.append(row[name])

    def __len__(self) -> int:
        return len(self._cols["replica"])

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({c: np.asarray(v) for c, v in self._cols.items()}, columns=list(TIMELINE_COLUMNS))
        return frame.sort_values(["start_s", "replica"], kind="stable").reset_index(drop=True)
