"""The analytical roofline cost model: step time from GPU peaks and model shape.

Used when no profile of the deployment exists. A step's time is the sum of
- the linear layers: the larger of their FLOPs at the tensor-core peak and their weight bytes at
  the HBM bandwidth (small decode batches are bandwidth-bound, large prefills compute-bound);
- attention: the larger of its FLOPs (prefill pairs, decode context) and its KV bytes read;
- tensor-parallel all-reduces, two per layer, ring-style over the interconnect;
- a fixed per-step CPU overhead (scheduling, input preparation, sampling) plus a per-sequence
  one (output processing), which dominates tiny batches.
Each peak is derated by an efficiency factor: no real kernel runs at the datasheet number. Only
elementwise arithmetic is used, so a step costs the same alone or inside a vectorised batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from rllmsim.cost.features import StepFeatures
from rllmsim.deployment import Deployment

TERA = 1e12
GIGA = 1e9


@dataclass(frozen=True)
class RooflineParams:
    """Efficiency factors and overheads; defaults are typical of vLLM on NVIDIA datacenter GPUs.

    gemm_efficiency: share of dense tensor-core peak that large GEMMs reach (60-75% is typical).
    attention_efficiency: share of peak that attention kernels reach (lower: softmax, masking).
    memory_efficiency: share of HBM bandwidth that weight and KV streaming achieve (~80%).
    interconnect_efficiency: share of link bandwidth an all-reduce achieves.
    allreduce_latency_s: fixed cost of one all-reduce call (launch and synchronisation).
    step_overhead_s: CPU time per engine step that the GPU cannot hide.
    per_seq_overhead_s: CPU time per scheduled sequence (input preparation, output processing).
    """

    gemm_efficiency: float = 0.65
    attention_efficiency: float = 0.45
    memory_efficiency: float = 0.8
    interconnect_efficiency: float = 0.7
    allreduce_latency_s: float = 10e-6
    step_overhead_s: float = 2.5e-3
    per_seq_overhead_s: float = 12e-6


class RooflineCostModel:
    """Step time of one replica of `deployment`, from first principles."""

    def __init__(self, deployment: Deployment, params: RooflineParams | None = None) -> None:
        self.deployment = deployment
        self.params = params or RooflineParams()
        model, gpu, tp = deployment.model, deployment.gpu, deployment.tp
        lm_head_params = model.vocab_size * model.hidden_size
        self._layer_params_per_token = model.linear_params_per_token() - lm_head_params
        self._lm_head_params = lm_head_params
        self._tp = tp
        self._gemm_flops_per_s = gpu.peak_tflops(deployment.weight_bytes_per_param) * TERA * self.params.gemm_efficiency
        self._attn_flops_per_s = gpu.bf16_tflops * TERA * self.params.attention_efficiency
        self._bytes_per_s = gpu.hbm_bandwidth_gbps * GIGA * self.params.memory_efficiency
        self._link_bytes_per_s = gpu.interconnect_gbps * GIGA * self.params.interconnect_efficiency
        self._dense_weight_bytes, self._expert_bytes = self._split_weight_bytes()
        self._attn_flops_per_pair = model.attention_flops_per_pair() / tp
        self._kv_bytes_per_token = deployment.kv_bytes_per_token_per_gpu

    def _split_weight_bytes(self) -> tuple[float, float]:
        """Per-GPU bytes of the weights every step reads, and of all routed experts (MoE)."""
        d, m = self.deployment, self.deployment.model
        total = d.weight_bytes_per_gpu
        if not m.num_experts:
            return total, 0.0
        experts = m.num_layers * m.num_experts * 3 * m.hidden_size * m.moe_intermediate_size
        expert_bytes = experts * d.weight_bytes_per_param / self._tp
        return total - expert_bytes, expert_bytes

    def step_time(self, features: StepFeatures) -> np.ndarray:
        p = self.params
        tokens = features.total_tokens.astype(np.float64)
        sampled = (features.decode_seqs + features.prefill_seqs).astype(np.float64)
        linear_flops = 2.0 * (self._layer_params_per_token * tokens + self._lm_head_params * sampled) / self._tp
        weight_bytes = self._dense_weight_bytes + self._expert_bytes * self._expert_share(tokens)
        linear = np.maximum(linear_flops / self._gemm_flops_per_s, weight_bytes / self._bytes_per_s)
        pairs = features.prefill_attn_pairs + features.decode_kv_tokens * (features.decode_tokens // np.maximum(features.decode_seqs, 1))
        attn_flops = self._attn_flops_per_pair * pairs.astype(np.float64)
        kv_bytes = self._kv_bytes_per_token * (features.prefill_kv_tokens + features.decode_kv_tokens).astype(np.float64)
        attention = np.maximum(attn_flops / self._attn_flops_per_s, kv_bytes / self._bytes_per_s)
        seqs = (features.decode_seqs + features.prefill_seqs).astype(np.float64)
        overhead = p.step_overhead_s + p.per_seq_overhead_s * seqs
        return linear + attention + self._allreduce_time(tokens) + overhead

    def _expert_share(self, tokens: np.ndarray) -> np.ndarray:
        """Expected share of routed experts touched by `tokens` tokens (uniform routing)."""
        m = self.deployment.model
        if not m.num_experts:
            return np.zeros_like(tokens)
        miss = 1.0 - m.num_experts_per_tok / m.num_experts
        return 1.0 - np.power(miss, tokens)

    def _allreduce_time(self, tokens: np.ndarray) -> np.ndarray:
        if self._tp == 1:
            return np.zeros_like(tokens)
        m, p = self.deployment.model, self.params
        message = tokens * m.hidden_size * 2.0
        ring = 2.0 * (self._tp - 1) / self._tp * message / self._link_bytes_per_s
        return 2.0 * m.num_layers * (p.allreduce_latency_s + ring)

    def provenance(self) -> dict[str, Any]:
        d = self.deployment
        return {
            "kind": "roofline",
            "model": d.model.name,
            "gpu": d.gpu.name,
            "tp": d.tp,
            "quantization": d.quantization,
            "kv_cache_dtype": d.kv_cache_dtype,
            "params": dataclasses.asdict(self.params),
        }
