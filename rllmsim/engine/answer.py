"""When a request's answer becomes visible inside a fast-forwarded decode run.

A run applies many decode steps at once, so the step at which a sequence emits its first answer
token (output token reasoning + 1) is found in closed form rather than by stepping: one token a
step without speculation, `speculation.steps_to_emit` with it. Only sequences that cross inside
the run are looked at, so the common case costs two array comparisons.
"""

from __future__ import annotations

import numpy as np

from rllmsim.engine import speculation
from rllmsim.engine.request import RequestLedger


class AnswerWatch:
    """A lower bound on the tokens any running sequence of one scheduler still emits before its
    first answer token, so that the steps and runs which cannot reach one (nearly all of them)
    skip the marking: only a bound at or below zero triggers the exact check."""

    def __init__(self, ledger: RequestLedger) -> None:
        self.ledger = ledger
        self.gap = 0

    def admit(self, rid: int, generated: int) -> None:
        self.gap = min(self.gap, int(self.ledger.answer_pending[rid]) - generated)

    def may_cross(self, most: int) -> bool:
        """After every sequence emitted at most `most` tokens: whether one may have reached its answer."""
        self.gap -= most
        return self.gap <= 0

    def rebase(self, rids: np.ndarray, generated: np.ndarray) -> None:
        """The exact bound for the running sequences, after marking."""
        left = self.ledger.answer_pending[rids] - generated
        self.gap = int(np.minimum.reduce(left)) if len(left) else int(np.iinfo(np.int64).max)


def mark_answers_in_run(ledger: RequestLedger, rids: np.ndarray, generated: np.ndarray, tokens: np.ndarray | int,
                        gaps: np.ndarray, end: float, accepted: np.ndarray | None = None,
                        rate: np.ndarray | None = None) -> None:
    """`generated` is each sequence's count after the run, `tokens` what the run added, `gaps` the
    run's step durations ending at `end`; `accepted`/`rate` are the speculative accumulators after
    the run and their per-step gain (None without speculation)."""
    at = ledger.answer_pending[rids]
    # crossing inside the run: before < at <= generated, i.e. 0 <= generated - at < tokens; as
    # unsigned one comparison (answers marked already or without reasoning are pending at a count
    # no sequence reaches, so generated - at is negative)
    ahead = generated - at
    step_tokens = np.uint64(tokens) if isinstance(tokens, (int, np.integer)) else tokens.view(np.uint64)
    cross = ahead.view(np.uint64) < step_tokens
    if not np.logical_or.reduce(cross):
        return
    need = tokens - ahead[cross] if isinstance(tokens, (int, np.integer)) else tokens[cross] - ahead[cross]
    if rate is None:
        steps = need
    else:
        steps = speculation.steps_to_emit(accepted[cross] - len(gaps) * rate[cross], rate[cross], need)
    # step k (1-based) ends at end - (the durations of the steps after it), as the replica's clock adds them
    cum = np.cumsum(gaps)
    ledger.mark(rids[cross], end - (cum[-1] - cum[steps - 1]))
