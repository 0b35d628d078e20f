"""Shared test fixtures for engine tests: a linear cost model and small deployments."""

from __future__ import annotations

import dataclasses

import numpy as np

from rllmsim.cost.features import StepFeatures
from rllmsim.deployment import Deployment
from rllmsim.specs import ModelSpec, load_gpu, load_model


class LinearCostModel:
    """step = base + per_token * tokens + per_kv * context read: easy to compute by hand."""

    def __init__(self, base: float = 0.01, per_token: float = 1e-4, per_kv: float = 1e-6) -> None:
        self.base, self.per_token, self.per_kv = base, per_token, per_kv

    def step_time(self, f: StepFeatures) -> np.ndarray:
        tokens = f.total_tokens.astype(np.float64)
        kv = (f.decode_kv_tokens + f.prefill_kv_tokens).astype(np.float64)
        return self.base + self.per_token * tokens + self.per_kv * kv

    def provenance(self) -> dict:
        return {"kind": "linear-test"}


def small_deployment(blocks: int = 64, block_size: int = 16, max_num_seqs: int = 8,
                     budget: int = 256, chunked: bool = True, max_model_len: int = 1024,
                     replicas: int = 1, model: ModelSpec | None = None, **knobs) -> Deployment:
    return Deployment(
        model=model or load_model("deepseek-r1-distill-qwen-1.5b"), gpu=load_gpu("h100-sxm"),
        replicas=replicas, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
        max_model_len=max_model_len, block_size=block_size, enable_chunked_prefill=chunked,
        num_gpu_blocks_override=blocks, **knobs,
    )


def sliding_model(window: int) -> ModelSpec:
    """gpt-oss-20b (alternating full and sliding layers, one KV group of each) with a window
    small enough for hand-sized workloads."""
    model = load_model("gpt-oss-20b")
    return dataclasses.replace(model, attention=dataclasses.replace(model.attention, sliding_window=window))
