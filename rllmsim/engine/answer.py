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


def mark_answers_in_run(ledger: RequestLedger, rids: np.ndarray, generated: np.ndarray, tokens: np.ndarray | int,
                        gaps: np.ndarray, end: float, accepted: np.ndarray | None = None,
                        rate: np.ndarray | None = None) -> None:
    """`generated` is each sequence's count after the run, `tokens` what the run added, `gaps` the
    run's step durations ending at `end`; `accepted`/`rate` are the speculative accumulators after
    the run and their per-step gain (None without speculation)."""
    at = ledger.answer_at[rids]
    # crossing inside the run: before < at <= generated, i.e. 0 <= generated - at < tokens; as
    # unsigned one comparison (requests without reasoning have at = 0 and generated > tokens)
    ahead = generated - at
    step_tokens = np.uint64(tokens) if isinstance(tokens, (int, np.integer)) else tokens.view(np.uint64)
    cross = ahead.view(np.uint64) < step_tokens
    if not cross.any():
        return
    need = tokens - ahead[cross] if isinstance(tokens, (int, np.integer)) else tokens[cross] - ahead[cross]
    if rate is None:
        steps = need
    else:
        steps = speculation.steps_to_emit(accepted[cross] - len(gaps) * rate[cross], rate[cross], need)
    # step k (1-based) ends at end - (the durations of the steps after it), as the replica's clock adds them
    cum = np.cumsum(gaps)
    ledger.answer_token[rids[cross]] = end - (cum[-1] - cum[steps - 1])
