"""`bench.json`: a simulated run in the format of `vllm bench serve --save-result`.

Tools people already point at vLLM's result files (their own scripts, `rllmsim validate`, the
`--trace` replay) read a simulated run unchanged. Keys, units and statistics follow vLLM's
`vllm/benchmarks/serve.py` (0.32): latencies in ms; mean, median, std (numpy's, population) and
the percentiles vLLM writes by default (P99, `--metric-percentiles 99`) of TTFT, TPOT and ITL,
plus E2EL (vLLM writes it under `--percentile-metrics ...,e2el`); throughputs over the benchmark
duration; `request_goodput` null without `--goodput`; per-request lists in request order, a
failed (rejected) request with 0 tokens, 0.0 times and its error. Under a client cap, vLLM's
client-queue statistics too.

The file says it is simulated without breaking readers: `backend` and `endpoint_type` stay what
the simulated client would use (vLLM's default, "openai"), since vLLM readers branch on them,
while `label`, free text in vLLM (`--label`), is "rllmsim", and `simulated_by` is an extra
top-level key, which readers tolerate because vLLM's own `--metadata KEY=VALUE` adds arbitrary
top-level keys to the same dict.

Not written, because a simulation has no such data: `generated_texts` (no text is generated) and
`itls` (per-request gap lists; the run pools every gap in one histogram, from which the ITL
statistics come). `NOT_SIMULATED` lists them for tests and readers.
"""

from __future__ import annotations

import math
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd

from rllmsim.metrics.histogram import LogHistogram

BENCH_FILE = "bench.json"
PERCENTILES = (99.0,)  # vllm bench serve's default --metric-percentiles
NOT_SIMULATED = ("generated_texts", "itls")
BACKEND = "openai"  # vllm bench serve's default --backend
_RATED = ("poisson", "gamma", "constant", "servegen")


def bench_result(summary: dict[str, Any], requests: pd.DataFrame, itl: LogHistogram, model_id: str) -> dict[str, Any]:
    """The `--save-result` dict of a run, from its summary, requests table and ITL histogram."""
    workload = summary["config"]["workload"]
    done_mask = requests["finish_s"].notna().to_numpy()
    done = requests[done_mask]
    ttft, e2el = done["ttft_s"].to_numpy(float), done["e2el_s"].to_numpy(float)
    outputs = done["output_tokens"].to_numpy()
    multi = outputs > 1
    throughput = summary["throughput"]
    goodput = summary.get("goodput")
    result: dict[str, Any] = {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": BACKEND,
        "backend": BACKEND,
        "label": "rllmsim",
        "simulated_by": f"rllmsim {_version()}",
        "model_id": model_id,
        "tokenizer_id": model_id,
        "num_prompts": int(len(requests)),
        **_traffic(workload),
        "duration": summary["duration_s"],
        "completed": int(done_mask.sum()),
        "failed": int((~done_mask).sum()),
        "total_input_tokens": summary["tokens"]["input"],
        "total_output_tokens": summary["tokens"]["output"],
        "request_throughput": throughput["requests_per_s"],
        "request_goodput": goodput["requests_per_s"] if goodput else None,
        "output_throughput": throughput["output_tokens_per_s"],
        "total_token_throughput": throughput["total_tokens_per_s"],
        **_per_request(requests, done_mask),
        "max_output_tokens_per_s": _max_tokens_per_second(done),
        "max_concurrent_requests": _max_concurrent_requests(done),
        "rtfx": 0.0,  # audio seconds per second: text prompts have none
    }
    result.update(_stats("ttft", ttft))
    result.update(_stats("tpot", (e2el[multi] - ttft[multi]) / (outputs[multi] - 1)))
    result.update(_itl_stats(itl))
    result.update(_stats("e2el", e2el))
    if result["max_concurrency"] is not None:
        queue = done["client_queue_s"].to_numpy(float)
        result.update(_stats("client_queue_time", queue))
        if result["request_rate"] != "inf":
            result.update(_stats("e2el_including_client_queue", e2el + queue))
    return result


def _version() -> str:
    try:
        return version("rllmsim")
    except PackageNotFoundError:
        return "unknown"


def _traffic(workload: dict[str, Any]) -> dict[str, Any]:
    """request_rate ("inf" as vLLM writes it), burstiness (1 = Poisson, "inf" = constant gaps)
    and max_concurrency; vLLM's closed loop is rate inf with the users as the cap."""
    arrival = workload.get("arrival")
    rate = workload.get("rate") if arrival in _RATED else float("inf")
    burstiness: float | str = 1.0
    if arrival == "gamma":
        burstiness = workload.get("burstiness") or 1.0 / workload["cv"] ** 2
    elif arrival == "constant":
        burstiness = "inf"
    cap = workload.get("concurrency") if arrival == "closed-loop" else workload.get("max_concurrency")
    return {"request_rate": "inf" if rate is None or math.isinf(rate) else rate, "burstiness": burstiness,
            "max_concurrency": cap}


def _per_request(requests: pd.DataFrame, done: np.ndarray) -> dict[str, list]:
    """vLLM's per-request lists; start_times are send times, queue_times the client-side wait."""
    errors = np.where(requests["rejected"], "rejected: " + requests["reject_reason"].astype(str), "not finished")
    return {
        "input_lens": requests["prompt_tokens"].astype(int).tolist(),
        "output_lens": np.where(done, requests["output_tokens"], 0).astype(int).tolist(),
        "ttfts": np.where(done, requests["ttft_s"], 0.0).tolist(),
        "latencies": np.where(done, requests["e2el_s"], 0.0).tolist(),
        "start_times": requests["arrival_s"].astype(float).tolist(),
        "queue_times": requests["client_queue_s"].astype(float).tolist(),
        "errors": np.where(done, "", errors).tolist(),
    }


def _stats(name: str, seconds: np.ndarray) -> dict[str, float]:
    """mean/median/std/pNN in ms, as vLLM's `np.mean(values or 0) * 1000`: 0 when empty."""
    values = seconds if len(seconds) else np.zeros(1)
    out = {f"mean_{name}_ms": float(np.mean(values)) * 1e3, f"median_{name}_ms": float(np.median(values)) * 1e3,
           f"std_{name}_ms": float(np.std(values)) * 1e3}
    for p in PERCENTILES:
        out[f"p{_word(p)}_{name}_ms"] = float(np.percentile(values, p)) * 1e3
    return out


def _itl_stats(itl: LogHistogram) -> dict[str, float]:
    """From the pooled histogram: the mean is exact, quantiles within its 0.1% bins, the std from
    the bin centres."""
    if not itl.count:
        return _stats("itl", np.zeros(0))
    out = {"mean_itl_ms": itl.mean() * 1e3, "median_itl_ms": itl.quantile(0.5) * 1e3, "std_itl_ms": itl.std() * 1e3}
    for p in PERCENTILES:
        out[f"p{_word(p)}_itl_ms"] = itl.quantile(p / 100) * 1e3
    return out


def _word(p: float) -> str:
    return str(int(p)) if int(p) == p else str(p)


def _max_concurrent_requests(done: pd.DataFrame) -> int:
    """vLLM's: the most requests active in any one-second bucket from the first send, a request
    counting in every bucket from its send's to its finish's."""
    if not len(done):
        return 0
    start = done["arrival_s"].to_numpy(float)
    t0 = start.min()
    first, last = (start - t0).astype(np.int64), (done["finish_s"].to_numpy(float) - t0).astype(np.int64)
    active = np.zeros(int(last.max()) + 2)
    np.add.at(active, first, 1)
    np.add.at(active, last + 1, -1)
    return int(np.cumsum(active).max())


def _max_tokens_per_second(done: pd.DataFrame) -> float:
    """vLLM's peak of output tokens per one-second bucket from the first send. The run records
    each request's first and last token times, not every token's, so the tokens between are
    spread evenly over that span (exact for the first and last tokens)."""
    if not len(done):
        return 0.0
    t0 = done["arrival_s"].min()
    first = done["first_token_s"].to_numpy(float) - t0
    last = done["finish_s"].to_numpy(float) - t0
    n = done["output_tokens"].to_numpy(np.int64)
    span = last - first
    ramp = (n > 1) & (span > 0)
    edges = np.arange(int(last.max()) + 2, dtype=float)
    at_first = np.where(ramp, 1.0, n)  # tokens at the first token's time: all of them without a span
    order = np.argsort(first)
    emitted = np.concatenate(([0.0], np.cumsum(at_first[order])))[np.searchsorted(first[order], edges, "left")]
    rate = np.where(ramp, (n - 1) / np.where(ramp, span, 1.0), 0.0)
    emitted += _ramps(first, rate, edges) - _ramps(last, rate, edges)
    return float(np.diff(emitted).max())


def _ramps(start: np.ndarray, rate: np.ndarray, t: np.ndarray) -> np.ndarray:
    """sum_i rate_i * max(t - start_i, 0) at each t, in O((n + len(t)) log n)."""
    order = np.argsort(start)
    s, r = start[order], rate[order]
    k = np.searchsorted(s, t, "right")
    return t * np.concatenate(([0.0], np.cumsum(r)))[k] - np.concatenate(([0.0], np.cumsum(r * s)))[k]
