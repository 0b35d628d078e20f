"""What a deployment costs: $/hour from the GPU catalog's on-demand price, and $ per million
output tokens at a given output-token rate.

Prices in `gpus.toml` carry their source and date; cloud prices move, so every plan and report
prints the price it used.
"""

from __future__ import annotations

from typing import Any, Mapping

from rllmsim.deployment import Deployment


def gpus(deployment: Deployment) -> int:
    return deployment.gpus_per_replica * deployment.replicas


def cost_per_hour(deployment: Deployment, replicas: int | None = None) -> float:
    """On-demand $/hour of every GPU of the deployment (or of `replicas` replicas of its shape)."""
    n = deployment.replicas if replicas is None else replicas
    return deployment.gpus_per_replica * n * deployment.gpu.price_per_gpu_hour_usd


def usd_per_million_tokens(usd_per_hour: float, tokens_per_s: float) -> float:
    if not tokens_per_s or tokens_per_s <= 0:
        return float("nan")
    return usd_per_hour / (tokens_per_s * 3600.0) * 1e6


def price_columns(deployment: Deployment, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Sweep columns: GPUs, $/hour, and $/M output tokens at the run's measured output rate."""
    usd_h = cost_per_hour(deployment)
    tokens_per_s = float(summary.get("throughput", {}).get("output_tokens_per_s") or 0.0)
    return {
        "gpus": gpus(deployment),
        "price_per_gpu_hour_usd": deployment.gpu.price_per_gpu_hour_usd,
        "cost_per_hour_usd": usd_h,
        "usd_per_million_output_tokens": usd_per_million_tokens(usd_h, tokens_per_s),
    }
