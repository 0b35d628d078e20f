"""Batch shapes and the feature rows every cost model consumes.

One engine step is described by a `BatchShape`: the prefill chunks it runs (new tokens and the
context already cached before them) and the decoding sequences (their cached context). The same
`StepFeatures` table serves profiling (one row per measured step), fitting (the regression's
design matrix) and simulation (many steps at once when a replica fast-forwards), so the three can
never disagree on what a feature means.

All features are exact integers (int64) so that a step described once by the scheduler and the
same step described inside a vectorised fast-forward segment give bit-identical cost-model input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "prefill_tokens",
    "prefill_seqs",
    "prefill_attn_pairs",
    "prefill_kv_tokens",
    "decode_seqs",
    "decode_tokens",
    "decode_kv_tokens",
)


@dataclass(frozen=True)
class BatchShape:
    """What one engine step computes.

    prefill_chunks: (new_tokens, context_before) per sequence that is prefilling this step.
    decode_contexts: tokens already in the KV cache for each decoding sequence.
    decode_tokens_per_seq: tokens each decoding sequence feeds this step (1, or 1 + k when
        speculative decoding verifies k proposed tokens).
    """

    prefill_chunks: tuple[tuple[int, int], ...] = ()
    decode_contexts: tuple[int, ...] = ()
    decode_tokens_per_seq: int = 1


@dataclass(slots=True, eq=False)
class StepFeatures:
    """Per-step features as parallel int64 arrays (one entry per step). Treat as read-only; it
    is not frozen only because the simulator builds millions and a frozen init costs 4x more.

    prefill_tokens: new prompt tokens computed (sum of chunk sizes).
    prefill_seqs: sequences with a prefill chunk.
    prefill_attn_pairs: causal query-key pairs of the chunks, sum of c*ctx + c*(c+1)/2;
        proportional to prefill attention FLOPs.
    prefill_kv_tokens: KV tokens the chunks' attention touches, sum of ctx + c.
    decode_seqs: decoding sequences.
    decode_tokens: tokens fed by decoding sequences (decode_seqs x tokens per sequence).
    decode_kv_tokens: cached context the decode attention reads, sum of contexts.

    decode_batch is not a feature: (sequences, tokens per sequence) when every step is a pure
    decode of the same batch (a fast-forwarded run), so a cost model may compute the terms that
    depend only on the batch once instead of once per step.
    """

    prefill_tokens: np.ndarray
    prefill_seqs: np.ndarray
    prefill_attn_pairs: np.ndarray
    prefill_kv_tokens: np.ndarray
    decode_seqs: np.ndarray
    decode_tokens: np.ndarray
    decode_kv_tokens: np.ndarray
    decode_batch: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.decode_seqs)

    @property
    def total_tokens(self) -> np.ndarray:
        """Tokens through the linear layers this step (prefill + decode)."""
        return self.prefill_tokens + self.decode_tokens

    def as_dict(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in FEATURE_NAMES}

    def matrix(self) -> np.ndarray:
        """The features as a float64 (steps x features) matrix in FEATURE_NAMES order."""
        return np.column_stack([getattr(self, n).astype(np.float64) for n in FEATURE_NAMES])

    @classmethod
    def from_columns(cls, columns: Mapping[str, Iterable[int]]) -> "StepFeatures":
        """Build from a mapping (a DataFrame works) holding every name in FEATURE_NAMES."""
        return cls(**{n: np.asarray(columns[n], dtype=np.int64) for n in FEATURE_NAMES})

    @classmethod
    def from_shapes(cls, shapes: Iterable[BatchShape]) -> "StepFeatures":
        rows = [_shape_row(s) for s in shapes]
        if not rows:
            return cls(**{n: np.zeros(0, dtype=np.int64) for n in FEATURE_NAMES})
        table = np.array(rows, dtype=np.int64)
        return cls(**{n: table[:, i] for i, n in enumerate(FEATURE_NAMES)})

    @classmethod
    def one_step(cls, row: tuple[int, ...]) -> "StepFeatures":
        """One step from its `step_row`."""
        return cls(*np.array(row, dtype=np.int64)[:, None])

    @classmethod
    def decode_only(
        cls, decode_seqs: np.ndarray, decode_kv_tokens: np.ndarray, tokens_per_seq: int = 1
    ) -> "StepFeatures":
        """Steps with no prefill, given as equal-length arrays: the fast-forward path describes
        k steps at once this way."""
        seqs = np.asarray(decode_seqs, dtype=np.int64)
        zeros = np.zeros(len(seqs), dtype=np.int64)
        return cls(
            prefill_tokens=zeros,
            prefill_seqs=zeros,
            prefill_attn_pairs=zeros,
            prefill_kv_tokens=zeros,
            decode_seqs=seqs,
            decode_tokens=seqs * tokens_per_seq if tokens_per_seq != 1 else seqs,
            decode_kv_tokens=np.asarray(decode_kv_tokens, dtype=np.int64),
        )

    @classmethod
    def decode_run(cls, seqs: int, decode_kv_tokens: np.ndarray, tokens_per_seq: int = 1) -> "StepFeatures":
        """Steps in which the same `seqs` sequences each decode `tokens_per_seq` tokens, reading
        `decode_kv_tokens[m]` cached tokens in step m (int64)."""
        steps = len(decode_kv_tokens)
        zeros = np.zeros(steps, dtype=np.int64)
        decode_seqs = np.empty(steps, dtype=np.int64)
        decode_seqs.fill(seqs)
        decode_tokens = decode_seqs * tokens_per_seq if tokens_per_seq != 1 else decode_seqs
        # positional, in field order: this runs once per fast-forwarded run
        return cls(zeros, zeros, zeros, zeros, decode_seqs, decode_tokens, decode_kv_tokens, (seqs, tokens_per_seq))


def _shape_row(shape: BatchShape) -> tuple[int, ...]:
    n_decode = len(shape.decode_contexts)
    return step_row(shape.prefill_chunks, n_decode, n_decode * shape.decode_tokens_per_seq,
                    sum(shape.decode_contexts))


def step_row(prefill_chunks: Iterable[tuple[int, int]], decode_seqs: int, decode_tokens: int,
             decode_kv_tokens: int) -> tuple[int, ...]:
    """One step's features in FEATURE_NAMES order, from its (new tokens, context before) prefill
    chunks and its decode totals."""
    tokens = seqs = pairs = kv = 0
    for chunk, context in prefill_chunks:
        tokens += chunk
        seqs += 1
        pairs += chunk * context + chunk * (chunk + 1) // 2
        kv += chunk + context
    return tokens, seqs, pairs, kv, decode_seqs, decode_tokens, decode_kv_tokens
