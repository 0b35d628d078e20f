"""Per-request state and records, held as numpy arrays indexed by request id.

A reasoning workload has up to millions of requests; one Python object each would dominate memory
and time, so the ledger keeps one array per field. Replicas read the static fields (prompt and
output lengths) and write the progress fields (tokens emitted, timestamps, preemptions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NOT_YET = np.nan
_NEVER = np.iinfo(np.int64).max  # an output count no request reaches


def per_request_tpot(ttft_s: np.ndarray, e2el_s: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
    """(E2EL - TTFT) / (output - 1) per request, the TPOT `vllm bench serve` averages; NaN for a
    request with at most one output token (no gap between tokens) or not finished."""
    output = np.asarray(output_tokens, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(output > 1, (np.asarray(e2el_s) - np.asarray(ttft_s)) / (output - 1), np.nan)


class RequestLedger:
    """Everything the engine knows and records about each request, by request id."""

    def __init__(self, table: pd.DataFrame) -> None:
        n = len(table)
        self.size = n
        self.arrival = table["arrival_s"].to_numpy(dtype=np.float64, copy=True)
        self.prompt = table["prompt_tokens"].to_numpy(dtype=np.int64, copy=True)
        self.target = table["output_tokens"].to_numpy(dtype=np.int64, copy=True)
        self.dataset = table["dataset"].to_numpy(dtype=object, copy=True)
        self.generated = np.zeros(n, dtype=np.int64)
        self.first_scheduled = np.full(n, NOT_YET)
        self.first_token = np.full(n, NOT_YET)
        self.last_token = np.full(n, NOT_YET)
        self.finish = np.full(n, NOT_YET)
        self.client_queue = np.zeros(n)  # waited for a client slot (--max-concurrency) before `arrival`
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.accept_rate = np.zeros(n, dtype=np.int64)  # speculative tokens per step, 1/1024 units
        self.prefix_group = table["prefix_group"].to_numpy(dtype=np.int64, copy=True)
        self.prefix_tokens = table["prefix_tokens"].to_numpy(dtype=np.int64, copy=True)
        self.cached_tokens = np.zeros(n, dtype=np.int64)  # prefix-cache hit at first admission
        self.replica = np.full(n, -1, dtype=np.int64)
        self.rejected = np.zeros(n, dtype=bool)
        self.reject_reason = np.full(n, "", dtype=object)
        # Reasoning then answer: the answer's first token is output token reasoning + 1; 0 marks a
        # request whose first token is already visible (no reasoning), read from first_token.
        self.reasoning = (table["reasoning_tokens"].to_numpy(dtype=np.int64, copy=True)
                          if "reasoning_tokens" in table.columns else np.zeros(n, dtype=np.int64))
        self.answer_at = np.where(self.reasoning > 0, self.reasoning + 1, 0)
        self.answer_token = np.full(n, NOT_YET)
        self.tracks_answer = bool(self.reasoning.any())
        # the output count at which each request's answer is still to be marked; NEVER once marked
        # or without reasoning, so marking is one gather and one comparison per step
        self.answer_pending = np.where(self.answer_at > 0, self.answer_at, _NEVER)

    def mark_answer(self, rids: np.ndarray, generated: np.ndarray, end: float) -> None:
        """Record `end` for the requests whose emitted count has just reached their first answer
        token (once: a preempted request keeps the time its answer first became visible)."""
        hit = generated >= self.answer_pending[rids]
        if np.logical_or.reduce(hit):
            self.mark(rids[hit], end)

    def mark(self, rids: np.ndarray, times: np.ndarray | float) -> None:
        """The answers of `rids` became visible at `times`; they are never marked again."""
        self.answer_token[rids] = times
        self.answer_pending[rids] = _NEVER

    def to_frame(self) -> pd.DataFrame:
        """One row per request, in the column order of `requests.parquet`."""
        return pd.DataFrame({
            "request_id": np.arange(self.size, dtype=np.int64),
            "dataset": self.dataset.astype(str),
            "arrival_s": self.arrival,
            "first_scheduled_s": self.first_scheduled,
            "first_token_s": self.first_token,
            "finish_s": self.finish,
            "queue_s": self.first_scheduled - self.arrival,
            "client_queue_s": self.client_queue,
            "ttft_s": self.first_token - self.arrival,
            "e2el_s": self.finish - self.arrival,
            "tpot_s": per_request_tpot(self.first_token - self.arrival, self.finish - self.arrival, self.generated),
            "prompt_tokens": self.prompt,
            "output_tokens": self.generated,
            "target_output_tokens": self.target,
            "cached_tokens": self.cached_tokens,
            "preemptions": self.preemptions,
            "replica": self.replica,
            "rejected": self.rejected,
            "reject_reason": self.reject_reason.astype(str),
            **self._answer_columns(),
        })

    def _answer_columns(self) -> dict[str, np.ndarray]:
        """The reasoning/answer split of what was emitted, and TTFVT: time to the first visible
        (answer) token; NaN for a request cut before its answer began."""
        reasoning = np.minimum(self.reasoning, self.generated)
        answered = self.generated > self.reasoning
        first_answer = np.where(self.answer_at > 0, self.answer_token, self.first_token)
        first_answer = np.where(answered, first_answer, NOT_YET)
        return {"reasoning_tokens": reasoning, "answer_tokens": self.generated - reasoning,
                "first_answer_token_s": first_answer, "ttfvt_s": first_answer - self.arrival}
