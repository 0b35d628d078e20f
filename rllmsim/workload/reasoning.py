"""Reasoning then answer: how many of a request's output tokens are hidden reasoning.

A reasoning model's user sees nothing until its reasoning ends, so the latency that matters is
the time to the first answer token (TTFVT), and a thinking budget (`reasoning_budget`, as serving
stacks offer) caps the reasoning while the answer still follows. Each request's output is split
as reasoning = round(share * output), answer = the rest, from the uncut length; then the budget
caps the reasoning, and the token budget (`max_tokens`) cuts the whole output, reasoning first
(a response cut mid-reasoning shows no answer at all).

Shares: ServeGen gives one per request (its `reason_ratio`); catalog datasets use the measured
share of their model family (`FAMILY_SHARE`); chat datasets have none.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from rllmsim.errors import ConfigError

# Token-weighted share of reasoning tokens in all outputs of cpldcpu/LRMTokenEconomy @ d5cc353
# (Apache-2.0; 19 prompts x ~5 runs each, `reasoning_tokens / output_tokens` summed): measured on
# those prompts, assumed to hold on every benchmark (its four AIME problems give 0.63-0.73).
FAMILY_SHARE: dict[str, float] = {
    "deepseek-r1-distill": 0.79,   # DeepSeek-R1-Distill-Qwen-7B, 95 samples
    "deepseek-r1": 0.81,           # DeepSeek-R1, 95 samples
    "qwen3": 0.74,                 # Qwen3-30B-A3B thinking, 95 samples
    "qwq": 0.79,                   # no data: its nearest relative in style, the R1 distills (assumed)
}
DEFAULT_SHARE = FAMILY_SHARE["deepseek-r1-distill"]


def family_share(model: str | None) -> float:
    """The reasoning share of the model's family (the R1 distills' when unknown)."""
    name = (model or "").lower()
    for family in sorted(FAMILY_SHARE, key=len, reverse=True):
        if family in name:
            return FAMILY_SHARE[family]
    return DEFAULT_SHARE


def check_budget(budget: int | None) -> int | None:
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, Integral) or budget < 0:
        raise ConfigError(f"--reasoning-budget must be an integer >= 0 (reasoning tokens per request), got {budget!r}")
    return int(budget)


def split_output(output: np.ndarray, share: np.ndarray | float, max_tokens: int | None = None,
                 budget: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(output_tokens, reasoning_tokens) after the thinking budget and the token budget.

    `output` is the uncut length each request would write; `share` its reasoning share in [0, 1].
    """
    output = np.asarray(output, dtype=np.int64)
    reasoning = np.rint(np.clip(share, 0.0, 1.0) * output).astype(np.int64)
    answer = output - reasoning
    budget = check_budget(budget)
    if budget is not None:
        reasoning = np.minimum(reasoning, budget)
    total = np.maximum(reasoning + answer, 1)
    if max_tokens is not None:
        total = np.minimum(total, int(max_tokens))
    return total, np.minimum(reasoning, total)
