"""Why each straggler is long: a long output, waiting for its first token, or slow decoding.

A straggler's E2EL is compared with the typical request of its dataset (the medians of TTFT,
decode time, output tokens and TPOT). Its excess splits into three parts that add up exactly:

- waiting: TTFT - median TTFT (queueing, the client's cap, prefill behind other prompts);
- long output: (output tokens - median output tokens) x median TPOT, the time the extra tokens
  take at the typical pace;
- slow decode: the rest of the decode excess, tokens emitted slower than the typical pace
  (a crowded batch, preemption and recompute).

The largest part names the cause. Long reasoning outputs call for a max_tokens cap or more
replicas; waiting and slow decode for KV room or a lower load.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rllmsim.metrics.stragglers import straggler_mask
from rllmsim.report.html import Section, table_html
from rllmsim.report.latency import latencies

#: Column of each part -> how the page names it.
CAUSES = {"long_output": "long output", "waiting": "waiting", "slow_decode": "slow decode"}
MAX_ROWS = 25


def attribute(requests: pd.DataFrame, factor: float) -> pd.DataFrame:
    """One row per straggler (completed requests past factor x their dataset's median E2EL): its
    excess over the typical request in seconds, split into CAUSES, and the largest as `cause`."""
    done = requests[requests["finish_s"].notna()].copy()
    if done.empty:
        return pd.DataFrame(columns=["request_id", "dataset", "cause", *CAUSES])
    done["tpot_s"] = latencies(done)["TPOT"]
    done["decode_s"] = done["finish_s"] - done["first_token_s"]
    typical = done.groupby("dataset")[["ttft_s", "decode_s", "output_tokens", "tpot_s"]].transform("median")
    strag = straggler_mask(done, factor)
    rows, typ = done[strag], typical[strag]
    long_output = (rows["output_tokens"] - typ["output_tokens"]) * typ["tpot_s"].fillna(0.0)
    parts = pd.DataFrame({"long_output": long_output, "waiting": rows["ttft_s"] - typ["ttft_s"],
                          "slow_decode": rows["decode_s"] - typ["decode_s"] - long_output})
    out = rows[["request_id", "dataset", "e2el_s", "ttft_s", "decode_s", "output_tokens", "preemptions"]].copy()
    out["typical_e2el_s"] = typ["ttft_s"] + typ["decode_s"]
    out["typical_output_tokens"] = typ["output_tokens"]
    out[list(CAUSES)] = parts
    out["cause"] = np.array(list(CAUSES.values()))[parts.to_numpy().argmax(axis=1)] if len(parts) else []
    return out.sort_values("e2el_s", ascending=False, kind="stable").reset_index(drop=True)


def straggler_section(requests: pd.DataFrame, factor: float) -> Section:
    """Counts by cause, then the longest stragglers with their parts in ms."""
    table = attribute(requests, factor)
    title = "Why stragglers are long"
    if table.empty:
        return Section(title, html=f'<p class="note">No stragglers (no request past {factor:g}x its dataset\'s '
                                   "median E2EL).</p>")
    counts = table["cause"].value_counts()
    positive = table[list(CAUSES)].clip(lower=0)
    total = max(float(positive.to_numpy().sum()), 1e-12)
    summary = table_html(["cause", "stragglers", "share of their excess (%)"],
                         [[label, int(counts.get(label, 0)), 100.0 * positive[c].sum() / total]
                          for c, label in CAUSES.items()])
    rows = [[r.request_id, r.dataset, r.cause, 1e3 * r.e2el_s, 1e3 * r.typical_e2el_s, int(r.output_tokens),
             r.typical_output_tokens, 1e3 * r.ttft_s, 1e3 * r.decode_s, int(r.preemptions),
             1e3 * r.long_output, 1e3 * r.waiting, 1e3 * r.slow_decode] for r in table.head(MAX_ROWS).itertuples()]
    detail = table_html(["request", "dataset", "cause", "E2EL (ms)", "typical E2EL (ms)", "output tokens",
                         "typical output", "TTFT (ms)", "decode (ms)", "preemptions", "long output (ms)",
                         "waiting (ms)", "slow decode (ms)"], rows, (1, 2))
    note = ('<p class="note">Excess over the typical request of the dataset (median TTFT + median decode): '
            "<b>long output</b> = extra tokens at the median TPOT, <b>waiting</b> = TTFT over the median, "
            "<b>slow decode</b> = the rest of the decode excess (crowded batches, preemption). "
            f"The {min(len(table), MAX_ROWS)} longest of {len(table)} stragglers:</p>")
    return Section(title, html=summary + note + detail)
