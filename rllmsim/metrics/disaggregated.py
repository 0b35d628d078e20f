"""Per-pool metrics of disaggregated serving: how busy each pool was, where requests waited,
and what the KV transfers took (the summary's `disaggregated` section).

Utilisation is an engine's busy time (its steps) over the simulated span, averaged over the
pool's replicas. The waits follow a request through the hand-over (`DisaggregatedLedger`): the
prefill queue, the prefill itself, the wait on the decode instance for KV room (and a step
boundary) before the pull starts, the transfer, and the wait for a decode step once the KV landed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from rllmsim.disaggregation import Disaggregation
from rllmsim.engine.cluster import SimulationResult
from rllmsim.metrics.summary import kv_stats, latency_stats


def pool_rows(timeline: pd.DataFrame, pools: Disaggregation, pool: str) -> pd.DataFrame:
    """The timeline rows of one pool: prefill replicas come first, then decode."""
    first = pools.prefill.replicas
    return timeline[timeline["replica"] < first] if pool == "prefill" else timeline[timeline["replica"] >= first]


def disaggregated_summary(result: SimulationResult, requests: pd.DataFrame, pools: Disaggregation) -> dict[str, Any]:
    """The `disaggregated` section; its `decode.kv` is also the run's top-level `kv`."""
    done = requests[requests["finish_s"].notna()]
    span = result.simulated_s
    out: dict[str, Any] = {"gpus": pools.gpus}
    waits = {"prefill": {"queue_s": "queue_s", "prefill_s": "prefill_s"},
             "decode": {"kv_wait_s": "kv_wait_s", "decode_wait_s": "decode_wait_s"}}
    for pool in ("prefill", "decode"):
        d = getattr(pools, pool)
        rows = pool_rows(result.timeline, pools, pool)
        busy = float((rows["end_s"] - rows["start_s"]).sum())
        out[pool] = {
            "replicas": d.replicas, "tp": d.tp, "gpu": d.gpu.name,
            "max_num_seqs": d.max_num_seqs, "max_num_batched_tokens": d.max_num_batched_tokens,
            "utilization": busy / (d.replicas * span) if span > 0 else 0.0,
            "steps": int(rows["steps"].sum()),
            "kv": kv_stats(rows, d.num_gpu_blocks, d.replicas, span),
            **{key: latency_stats(done[column].to_numpy()) for key, column in waits[pool].items()},
        }
    out["kv_transfer"] = {
        **pools.transfer.to_dict(),
        "shard_bytes_per_token": pools.shard_bytes_per_token(),
        "bytes_per_request_mean": float(done["kv_transfer_bytes"].mean()) if len(done) else 0.0,
        "seconds": latency_stats(done["kv_transfer_s"].to_numpy()),
    }
    return out
