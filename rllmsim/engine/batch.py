"""The running sequences of one replica, as parallel numpy arrays in admission order.

Order matters: vLLM schedules running requests first-come first-served and, when a decode cannot
get a block, preempts the most recently admitted one (the last). Keeping the state in arrays lets
a decode step over hundreds of sequences cost a handful of vectorised operations.
"""

from __future__ import annotations

import numpy as np

_FIELDS = ("rid", "tokens", "computed", "generated", "target", "blocks")


class RunningBatch:
    """Running sequences: request id, known tokens (prompt + generated), computed tokens,
    generated tokens, target output tokens and KV blocks held, one entry per sequence."""

    def __init__(self) -> None:
        for name in _FIELDS:
            setattr(self, name, np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.rid)

    def append(self, rid: int, tokens: int, computed: int, generated: int, target: int, blocks: int) -> None:
        values = (rid, tokens, computed, generated, target, blocks)
        for name, value in zip(_FIELDS, values):
            setattr(self, name, np.append(getattr(self, name), np.int64(value)))

    def pop_last(self) -> tuple[int, int, int]:
        """Remove the newest sequence; returns its (request id, blocks held, tokens generated)."""
        out = int(self.rid[-1]), int(self.blocks[-1]), int(self.generated[-1])
        for name in _FIELDS:
            setattr(self, name, getattr(self, name)[:-1])
        return out

    def keep(self, mask: np.ndarray) -> None:
        """Drop the sequences where `mask` is False, preserving order."""
        for name in _FIELDS:
            setattr(self, name, getattr(self, name)[mask])
