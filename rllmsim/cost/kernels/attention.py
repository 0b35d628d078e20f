"""Attention lookups by layer kind: full attention, sliding-window layers, and prefill from empty.

The kernel tables measure attention per layer: decode at (sequences, context per sequence), prefill
as one sequence from an empty cache. A step only carries totals (`StepFeatures`: prefill tokens and
query-key pairs, decode sequences and KV tokens), so sliding-window layers (gpt-oss: every other
layer attends to the last 128 tokens) are timed from those totals:

- decode: at the batch's mean context per sequence on rows measured with that window (the kernel
  reads at most `window` keys itself), else on full-attention rows at min(mean context, window);
- prefill: the chunk's query-key pairs with each query seeing at most `window` keys (the step's
  chunks taken as one, as for full attention), timed as the from-empty sequence with the same
  windowed pairs, on windowed rows where measured.

Attention sinks (gpt-oss: one learned logit per head added to the softmax denominator) cost one
exp and add per head and query, nothing beside the kernel's own work, so they are not timed apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rllmsim.cost.kernels.lookup import Curve, Grid
from rllmsim.errors import ConfigError


def attention_rows(table: pd.DataFrame, heads: int, kv_heads: int, head_dim: int, kv_dtype: str, column: str,
                   window: int = 0) -> tuple[pd.DataFrame, float, bool]:
    """Rows measured for this attention shape and window (0: full attention), or for the nearest
    shape scaled by work (KV heads for decode, query heads for prefill) with exact=False."""
    table = table[(table["window"] == window) & (table["kv_dtype"] == kv_dtype)]
    if table.empty:
        kind = f"sliding-window ({window}-token)" if window else "full-attention"
        raise ConfigError(f"kernel tables have no {kind} rows with kv cache dtype {kv_dtype}")
    exact = table[(table["heads"] == heads) & (table["kv_heads"] == kv_heads) & (table["head_dim"] == head_dim)]
    if not exact.empty:
        return exact, 1.0, True
    keys = table[["heads", "kv_heads", "head_dim"]].drop_duplicates()
    distance = (np.abs(np.log(keys["kv_heads"] / kv_heads)) + np.abs(np.log(keys["heads"] / heads))
                + 4 * np.abs(np.log(keys["head_dim"] / head_dim)))
    best = keys.iloc[int(np.argmin(distance.to_numpy()))]
    rows = table[(table["heads"] == best["heads"]) & (table["kv_heads"] == best["kv_heads"])
                 & (table["head_dim"] == best["head_dim"])]
    work = kv_heads if column == "context" else heads
    scale = work * head_dim / (float(best["kv_heads" if column == "context" else "heads"]) * float(best["head_dim"]))
    return rows, scale, False


def causal_pairs(chunk: float, context: float) -> float:
    """Query-key pairs of a causal chunk of `chunk` tokens ending at `context` tokens."""
    return chunk * (context - chunk) + chunk * (chunk + 1) / 2


def windowed_pairs(chunk: float, context: float, window: int) -> float:
    """Query-key pairs of the same chunk in a sliding-window layer: the query at position j
    (1-based) sees min(j, window) keys."""
    before = context - chunk
    top = min(context, float(window))
    ramp = (top * (top + 1) - before * (before + 1)) / 2 if top > before else 0.0
    return ramp + max(0.0, context - max(before, float(window))) * window


def length_for_pairs(pairs: float) -> float:
    """The sequence length L whose causal attention from empty has `pairs` pairs, L(L+1)/2."""
    return (math.sqrt(8 * pairs + 1) - 1) / 2


class PrefillFromEmpty:
    """Prefill attention measured from an empty cache (one sequence of `isl` tokens), asked for a
    chunk after cached context: the sequence length with the same causal query-key pairs, so the
    time grows monotonically with the work. Answers as a `Grid` does (`at_row_scalar`)."""

    def __init__(self, curve: Curve) -> None:
        self.curve = curve

    @staticmethod
    def _length(chunk: float, context: float) -> float:
        return length_for_pairs(causal_pairs(chunk, context))

    def at_row_scalar(self, chunk: float, context: float) -> float:
        return self.curve.scalar(self._length(chunk, context))

    def outside_scalar(self, chunk: float, context: float) -> bool:
        return self._length(chunk, context) > self.curve.x_max


class WindowedPrefill:
    """Prefill of a sliding-window layer: the chunk's windowed pairs (at most chunk x window), timed
    as the from-empty sequence with as many pairs, on rows measured with the window (`measured`: a
    windowed sequence of L tokens has L(L+1)/2 pairs up to the window, `window` more per token
    after, so a chunk from empty is its own length) or on full-attention rows (L(L+1)/2 throughout)."""

    def __init__(self, curve: Curve, window: int, measured: bool) -> None:
        self.curve, self.window, self.measured = curve, window, measured

    def _length(self, chunk: float, context: float) -> float:
        w = self.window
        pairs = windowed_pairs(chunk, context, w)
        if not self.measured or pairs <= w * (w + 1) / 2:
            return length_for_pairs(pairs)
        return w + (pairs - w * (w + 1) / 2) / w

    def at_row_scalar(self, chunk: float, context: float) -> float:
        return self.curve.scalar(self._length(chunk, context))

    def outside_scalar(self, chunk: float, context: float) -> bool:
        return self._length(chunk, context) > self.curve.x_max


@dataclass(frozen=True)
class SlidingAttention:
    """The sliding-window layers of a model: their count, window, per-layer decode grid (rows:
    sequences, columns: context per sequence) and prefill; `capped` when the decode grid was
    measured at full attention and must be asked at min(context, window)."""

    layers: int
    window: int
    decode: Grid
    prefill: WindowedPrefill
    capped: bool
    exact_shape: bool

    def decode_context(self, contexts: np.ndarray) -> np.ndarray:
        return np.minimum(contexts, float(self.window)) if self.capped else contexts


def _window_rows(table: pd.DataFrame, shape: tuple[int, int, int, str], column: str,
                 window: int) -> tuple[pd.DataFrame, float, bool, bool]:
    """(rows, work scale, exact shape, measured with the window): this shape's rows measured with
    the window where there are some, else the full-attention rows (of the nearest shape if need be)."""
    try:
        rows, scale, exact = attention_rows(table, *shape, column, window)
        if exact:
            return rows, scale, True, True
    except ConfigError:
        pass
    return (*attention_rows(table, *shape, column), False)


def sliding_from_database(gen: pd.DataFrame, ctx: pd.DataFrame, heads: int, kv_heads: int, head_dim: int,
                          kv_dtype: str, layers: int, window: int) -> SlidingAttention:
    """Sliding-window attention from rows measured with this window and shape where there are
    some, else from full-attention rows with contexts and pairs capped at the window."""
    shape = (heads, kv_heads, head_dim, kv_dtype)
    rows, scale, exact_gen, measured_decode = _window_rows(gen, shape, "context", window)
    decode = Grid.from_points(rows["batch"].to_numpy(), rows["context"].to_numpy(), rows["latency_us"].to_numpy() * scale)
    rows, scale, exact_ctx, measured_prefill = _window_rows(ctx, shape, "isl", window)
    rows = rows[rows["batch"] == rows["batch"].min()]
    prefill = WindowedPrefill(Curve.from_points(rows["isl"].to_numpy(), rows["latency_us"].to_numpy() * scale),
                              window, measured_prefill)
    return SlidingAttention(layers, window, decode, prefill, capped=not measured_decode,
                            exact_shape=exact_gen and exact_ctx)
