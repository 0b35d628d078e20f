"""Timelines to compare: the simulated replica timeline sampled at the real log's ticks, the real
log's clock aligned to the request clock, and KV usage reconstructed from request timestamps.

All times are seconds from the first arrival of the run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def in_system(requests: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    """Requests arrived and not yet finished at each time (running + waiting)."""
    arrivals = np.sort(requests["arrival_s"].to_numpy(dtype=np.float64))
    finishes = np.sort(requests["finish_s"].to_numpy(dtype=np.float64))
    times = np.asarray(times, dtype=np.float64)
    return np.searchsorted(arrivals, times, side="right") - np.searchsorted(finishes, times, side="right")


def align_log(log_t: np.ndarray, log_count: np.ndarray, requests: pd.DataFrame,
              step: float = 0.01, margin: float = 10.0) -> tuple[float, float]:
    """The offset to add to a log's clock to put it on the request clock, found by matching the
    log's running + waiting against the requests in the system; returns (offset, mean abs miss).

    Searched on a grid from `margin` seconds before the log's first tick lands on the first
    arrival to `margin` seconds after; when several offsets match equally well (counts change only
    at arrivals and completions), the median of them is taken.
    """
    log_t = np.asarray(log_t, dtype=np.float64)
    log_count = np.asarray(log_count, dtype=np.float64)
    if len(log_t) == 0:
        return 0.0, float("nan")
    offsets = np.arange(-float(log_t.min()) - margin, margin + step / 2, step)
    miss = np.array([np.abs(in_system(requests, log_t + o) - log_count).mean() for o in offsets])
    best = offsets[miss <= miss.min() + 1e-12]
    return float(np.median(best)), float(miss.min())


def reconstruct_kv_blocks(requests: pd.DataFrame, times: np.ndarray, block_size: int) -> np.ndarray:
    """KV blocks in use at each time, rebuilt from request timestamps, assuming no preemption.

    A request's prompt fills its cache linearly from its first schedule (``scheduled_s``, or its
    first token when the record has no schedule time) to its first token; afterwards it holds
    prompt + generated tokens, generated growing linearly to the output length at its last token.
    """
    times = np.asarray(times, dtype=np.float64)[:, None]
    first = requests["first_token_s"].to_numpy(dtype=np.float64)[None, :]
    finish = requests["finish_s"].to_numpy(dtype=np.float64)[None, :]
    start = requests["scheduled_s"].to_numpy(dtype=np.float64)[None, :] if "scheduled_s" in requests else first
    prompt = requests["prompt_tokens"].to_numpy(dtype=np.float64)[None, :]
    out = requests["output_tokens"].to_numpy(dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        filling = np.clip((times - start) / np.maximum(first - start, 1e-12), 0.0, 1.0)
        decoding = np.clip((times - first) / np.maximum(finish - first, 1e-12), 0.0, 1.0)
    tokens = np.where(times < first, prompt * filling, prompt + 1 + (out - 1) * decoding)
    live = (times >= start) & (times < finish)
    return np.where(live, np.ceil(tokens / block_size), 0.0).sum(axis=1)


def sample_sim_timeline(timeline: pd.DataFrame, times: np.ndarray, capacity_blocks: int,
                        replicas: int) -> pd.DataFrame:
    """The simulated running, waiting and KV blocks at each time, summed over replicas.

    A timeline row covers [start_s, end_s) of one replica; its KV blocks grow from
    kv_blocks_start to kv_blocks_peak across the row (decode runs only grow). Outside every row
    the replica is idle: nothing running, waiting or cached.
    """
    times = np.asarray(times, dtype=np.float64)
    running = np.zeros(len(times))
    waiting = np.zeros(len(times))
    blocks = np.zeros(len(times))
    for _, rows in timeline.groupby("replica", sort=True):
        rows = rows.sort_values("start_s", kind="stable")
        start, end = rows["start_s"].to_numpy(), rows["end_s"].to_numpy()
        idx = np.searchsorted(start, times, side="right") - 1
        ok = idx >= 0
        ok[ok] &= times[ok] < end[idx[ok]]
        i = idx[ok]
        running[ok] += rows["running"].to_numpy()[i]
        waiting[ok] += rows["waiting"].to_numpy()[i]
        lo, hi = rows["kv_blocks_start"].to_numpy(np.float64)[i], rows["kv_blocks_peak"].to_numpy(np.float64)[i]
        frac = (times[ok] - start[i]) / np.maximum(end[i] - start[i], 1e-12)
        blocks[ok] += lo + (hi - lo) * frac
    pct = 100.0 * blocks / max(capacity_blocks * replicas, 1)
    return pd.DataFrame({"t_s": times, "running": running, "waiting": waiting, "kv_blocks": blocks, "kv_pct": pct})


def sim_tokens_per_interval(timeline: pd.DataFrame, ticks: np.ndarray, width: float = 1.0) -> pd.DataFrame:
    """Simulated prompt and generated tokens per second over (tick - width, tick], each timeline
    row's tokens spread evenly over its duration."""
    ticks = np.asarray(ticks, dtype=np.float64)
    prompt = np.zeros(len(ticks))
    gen = np.zeros(len(ticks))
    for _, rows in timeline.groupby("replica", sort=True):
        rows = rows.sort_values("start_s", kind="stable")
        start, end = rows["start_s"].to_numpy(), rows["end_s"].to_numpy()
        for column, acc in (("prefill_tokens", prompt), ("decode_tokens", gen)):
            tokens = rows[column].to_numpy(np.float64)
            acc += (_cumulative(start, end, tokens, ticks) - _cumulative(start, end, tokens, ticks - width)) / width
    return pd.DataFrame({"t_s": ticks, "prompt_tps": prompt, "gen_tps": gen})


def _cumulative(start: np.ndarray, end: np.ndarray, tokens: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Tokens done by each time, rows being disjoint intervals sorted by start."""
    before = np.concatenate(([0.0], np.cumsum(tokens)))
    idx = np.searchsorted(start, times, side="right") - 1
    out = np.zeros(len(times))
    ok = idx >= 0
    i = idx[ok]
    frac = np.clip((times[ok] - start[i]) / np.maximum(end[i] - start[i], 1e-12), 0.0, 1.0)
    out[ok] = before[i] + tokens[i] * frac
    return out
