"""The running sequences of one replica, as rows of one numpy array in admission order.

Order matters: vLLM schedules running requests first-come first-served and, when a decode cannot
get a block, preempts the most recently admitted one (the last). The state lives in a single
(fields x sequences) int64 array so a step over hundreds of sequences costs a handful of
vectorised operations, and admitting, retiring or preempting a sequence is one array operation
rather than one per field.
"""

from __future__ import annotations

import numpy as np

_FIELDS = ("rid", "tokens", "computed", "generated", "target", "blocks", "accepted", "accept_rate",
           "group", "shared", "prefix_blocks", "window")
(_RID, _TOKENS, _COMPUTED, _GENERATED, _TARGET, _BLOCKS, _ACCEPTED, _ACCEPT_RATE,
 _GROUP, _SHARED, _PREFIX_BLOCKS, _WINDOW) = range(len(_FIELDS))


FIELD_INDEX = {name: i for i, name in enumerate(_FIELDS)}


def _row(index: int) -> property:
    def get(self: "RunningBatch") -> np.ndarray:
        return self._data[index]

    def set(self: "RunningBatch", values: np.ndarray) -> None:
        self._data[index] = values

    return property(get, set, doc=f"{_FIELDS[index]} of each running sequence (a writable view)")


class RunningBatch:
    """Running sequences, one column each: request id, known tokens (prompt + generated), computed
    tokens, generated tokens, target output tokens, KV blocks held privately, for speculative
    decoding the accumulated and per-step expected emitted tokens in 1/1024 units (see
    `speculation.py`), and for prefix caching the prefix group (-1 for none), the cached prefix
    blocks it references, and the prefix blocks it may still publish once computed."""

    rid = _row(_RID)
    tokens = _row(_TOKENS)
    computed = _row(_COMPUTED)
    generated = _row(_GENERATED)
    target = _row(_TARGET)
    blocks = _row(_BLOCKS)
    accepted = _row(_ACCEPTED)
    accept_rate = _row(_ACCEPT_RATE)
    group = _row(_GROUP)
    shared = _row(_SHARED)
    prefix_blocks = _row(_PREFIX_BLOCKS)
    window = _row(_WINDOW)

    def __init__(self) -> None:
        self._data = np.zeros((len(_FIELDS), 0), dtype=np.int64)

    def __len__(self) -> int:
        return self._data.shape[1]

    def append(self, rid: int, tokens: int, computed: int, generated: int, target: int, blocks: int,
               accept_rate: int = 0, group: int = -1, shared: int = 0, prefix_blocks: int = 0,
               window: int = 0) -> None:
        column = np.array([rid, tokens, computed, generated, target, blocks, 0, accept_rate, group, shared,
                           prefix_blocks, window], dtype=np.int64)
        self._data = np.concatenate((self._data, column[:, None]), axis=1)

    def pop_last(self) -> np.ndarray:
        """Remove the newest sequence and return its column (index it with `FIELD_INDEX`)."""
        last = self._data[:, -1].copy()
        self._data = self._data[:, :-1]
        return last

    def column(self, index: int) -> np.ndarray:
        """A copy of one sequence's column (index it with `FIELD_INDEX`)."""
        return self._data[:, index].copy()

    def add_tokens(self, tokens: np.ndarray | int) -> None:
        """Each sequence computes and emits `tokens` more tokens (an int or one per sequence): the
        known, computed and generated rows are adjacent, so this is one array operation."""
        self._data[_TOKENS:_GENERATED + 1] += tokens

    def keep(self, mask: np.ndarray) -> None:
        """Drop the sequences where `mask` is False, preserving order."""
        self._data = self._data.compress(mask, axis=1)
