"""Speculative decoding as a deterministic token-acceptance schedule.

With k proposed tokens and vLLM's draft acceptance rate r (accepted / drafted tokens), a
verifying step emits on average E = 1 + r k tokens per sequence (the accepted prefix plus the
bonus token: vLLM's "mean acceptance length"); each request has its own r (`acceptance.py`). The
simulator emits exactly that average over time: each sequence accumulates E per step in fixed
point (1/1024 token units) and emits the whole tokens its accumulator crosses. Integer arithmetic
makes the schedule identical whether steps are simulated one by one or fast-forwarded, and the
count of tokens after m steps has a closed form, so a run's finishing step is known in advance.
"""

from __future__ import annotations

import numpy as np

SCALE_BITS = 10
SCALE = 1 << SCALE_BITS


def rate_units(tokens_per_step: float) -> int:
    """Expected tokens per step in fixed-point units (at least one whole token)."""
    return max(SCALE, int(round(tokens_per_step * SCALE)))


def emitted_after(accepted: np.ndarray, rate: np.ndarray, steps: np.ndarray | int) -> np.ndarray:
    """Tokens emitted over the next `steps` steps, from accumulators `accepted`."""
    return ((accepted + steps * rate) >> SCALE_BITS) - (accepted >> SCALE_BITS)


def steps_to_emit(accepted: np.ndarray, rate: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The fewest steps after which at least `tokens` tokens have been emitted (>= 1 each)."""
    missing = ((accepted >> SCALE_BITS) + tokens) * SCALE - accepted
    return np.maximum(-(-missing // rate), 1)
