"""Multi-turn conversations: each turn's prompt carries the conversation so far.

A conversation of T turns is T requests. Turn k's prompt is turn k - 1's prompt, its answer, and a
new user message; the previous turn's reasoning is not in it, because reasoning models' chat
templates drop it from the history (DeepSeek-R1's and Qwen3's templates strip earlier turns'
`<think>` content, gpt-oss's harmony format drops earlier turns' analysis channel). So the KV turn
k can reuse is turn k - 1's prompt: its reasoning and answer were computed after reasoning tokens
the new prompt does not contain, so their blocks' hashes do not match.

Each conversation is one prefix group whose prefix is each turn's whole prompt: turn k publishes
its prompt's full blocks, and turn k + 1 hits what the group has cached (turn k's prompt blocks,
or less if evicted) and extends it (`BlockPool.cache_prefix`).

Rows are laid out conversation-major: request s * T + k is turn k (from 0) of conversation s,
which the client (`clients.Sessions`) and the summary read. Every turn's `arrival_s` is first
its conversation's start, so the table stays sorted; the client sets a later turn's arrival when
it sends it, a think time after the previous turn completes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rllmsim import checks
from rllmsim.errors import ConfigError
from rllmsim.workload.arrivals import ARRIVAL_PROCESSES
from rllmsim.workload.table import make_request_table

if TYPE_CHECKING:
    from rllmsim.simulation import WorkloadSpec


def check(spec: "WorkloadSpec") -> None:
    """One-line ConfigErrors for a `turns` the simulator cannot honour."""
    turns = spec.turns
    if isinstance(turns, bool) or not isinstance(turns, (int, np.integer)) or turns < 1:
        raise ConfigError(f"turns must be an integer >= 1 (requests per conversation), got {turns!r}; "
                          "give --turns 1 for single requests")
    if turns == 1:
        return
    checks.request_count(spec.num_requests * turns, "num_requests x turns")
    if spec.arrival not in ARRIVAL_PROCESSES:
        raise ConfigError(f"--turns {turns} needs an open-loop arrival ({', '.join(ARRIVAL_PROCESSES)}) that starts "
                          f"the conversations, not --arrival {spec.arrival}; give --turns 1 or change --arrival")
    if spec.max_concurrency is not None:
        raise ConfigError(f"--turns {turns} does not combine with --max-concurrency; drop one of them")
    if spec.shared_prefix_tokens:
        raise ConfigError(f"--turns {turns}: each conversation is its own prefix group, so "
                          "--shared-prefix-tokens does not apply; drop one of them")


def conversation_table(first_arrival_s: np.ndarray, user_tokens: np.ndarray, output: np.ndarray,
                       reasoning: np.ndarray, labels: Any, turns: int) -> pd.DataFrame:
    """The request table of len(first_arrival_s) conversations of `turns` turns. The per-turn
    arrays are conversation-major (turn k of conversation s at s * turns + k): `user_tokens` are
    the new messages, `output` and `reasoning` each turn's output and its reasoning part."""
    n = len(first_arrival_s)
    user = np.asarray(user_tokens, dtype=np.int64).reshape(n, turns)
    answer = (np.asarray(output, dtype=np.int64) - np.asarray(reasoning, dtype=np.int64)).reshape(n, turns)
    # turn k's prompt: every message up to k and every answer before k
    prompt = (np.cumsum(user, axis=1) + np.cumsum(answer, axis=1) - answer).ravel()
    return make_request_table(np.repeat(np.asarray(first_arrival_s, dtype=np.float64), turns), prompt, output,
                              labels, prefix_group=np.repeat(np.arange(n), turns), prefix_tokens=prompt,
                              reasoning_tokens=reasoning)


def session_summary(requests: pd.DataFrame, turns: int) -> dict[str, Any]:
    """First turns against later ones: mean TTFT (completed requests) and the share of the later
    turns' prompt tokens the prefix cache served, which is what session affinity buys."""
    later = requests["request_id"].to_numpy() % turns > 0
    done = requests["finish_s"].notna().to_numpy()
    ttft = requests["ttft_s"].to_numpy()
    prompt = int(requests.loc[later, "prompt_tokens"].sum())
    return {
        "conversations": len(requests) // turns,
        "turns": turns,
        "first_turn_mean_ttft_s": _mean(ttft[done & ~later]),
        "later_turn_mean_ttft_s": _mean(ttft[done & later]),
        "later_turn_hit_rate": int(requests.loc[later, "cached_tokens"].sum()) / prompt if prompt else 0.0,
    }


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None
