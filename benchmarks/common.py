"""Shared pieces of the benchmarks: the reference deployment, capacity probing, peak RSS."""

from __future__ import annotations

import resource
import sys
import time

from rllmsim.deployment import Deployment
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.specs import load_gpu, load_model

MIX = "math-500:0.5,aime-2024:0.5"


def reference_deployment(replicas: int) -> Deployment:
    """DeepSeek-R1-Distill-Qwen-7B on H100 SXM, TP1, vllm serve defaults."""
    return Deployment(model=load_model("deepseek-r1-distill-qwen-7b"), gpu=load_gpu("h100-sxm"), replicas=replicas)


def replica_capacity_rps(dataset: str = MIX, users: int = 512, requests: int = 3000, seed: int = 0) -> float:
    """Requests per second one saturated replica completes (closed loop, many users)."""
    spec = WorkloadSpec(arrival="closed-loop", concurrency=users, num_requests=requests, dataset=dataset)
    summary = run_simulation(reference_deployment(1), spec, seed=seed).summary
    return summary["throughput"]["requests_per_s"]


def peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024**3 if sys.platform == "darwin" else 1024**2)


class Stopwatch:
    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
