"""The analytical roofline cost model: step time from GPU peaks and model shape.

Used when no profile of the deployment exists. A step's time is the sum of
- the linear layers: the larger of their FLOPs at the tensor-core peak and their weight bytes at
  the HBM bandwidth (small decode batches are bandwidth-bound, large prefills compute-bound);
- attention: the larger of its FLOPs (prefill pairs, decode context) and its KV bytes read
  (sliding-window layers read at most their window, `rllmsim.cost.sliding`);
- tensor-parallel all-reduces, two per layer, ring-style over the interconnect;
- the host time of the step, a fixed part (scheduling, input preparation) plus a per-sequence
  one (output processing): added to the GPU time without async scheduling, overlapped with it
  (the larger of the two) with async scheduling, vLLM's default since 0.14.
Each peak is derated by an efficiency factor: no real kernel runs at the datasheet number. Only
elementwise arithmetic is used, so a step costs the same alone or inside a vectorised batch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from rllmsim import parallel
from rllmsim.cost.features import FEATURE_NAMES, StepFeatures
from rllmsim.cost.sliding import SlidingLayers, kv_bytes_per_layer_token_per_gpu
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.specs import dtype_bytes

TERA = 1e12
GIGA = 1e9


@dataclass(frozen=True)
class RooflineParams:
    """Efficiency factors and overheads; defaults are typical of vLLM on NVIDIA datacenter GPUs.

    gemm_efficiency: share of dense tensor-core peak that large GEMMs reach (60-75% is typical).
    attention_efficiency: share of peak that attention kernels reach (lower: softmax, masking).
    memory_efficiency: share of HBM bandwidth that weight and KV streaming achieve (~80%).
    interconnect_efficiency: share of link bandwidth an all-reduce achieves over NVLink/xGMI.
    pcie_interconnect_efficiency: the same over PCIe, where vLLM's custom all-reduce is off and
        NCCL's proxies and the host root complex sit in the path.
    allreduce_latency_s: fixed cost of one all-reduce call per doubling of the TP group: small
        all-reduces are latency-bound and take log2(tp) synchronising rounds (tree / recursive
        doubling, as NCCL and vLLM's custom all-reduce do), so their cost grows with the group.
    step_overhead_s: host time per engine step (scheduling, input preparation).
    per_seq_overhead_s: host time per scheduled sequence (input preparation, output processing).
    weight_only_dequant_efficiency: share of the BF16 GEMM peak left when weights must be
        dequantized inside the kernel (AWQ/GPTQ int4 Marlin, FP8 weights on chips without FP8
        tensor cores): memory-bound small batches still gain from the smaller weights, but
        compute-bound large batches run slower than plain BF16.
    fp8_kv_attention_efficiency: share of attention compute throughput left when an FP8 KV cache
        is dequantized inside the attention kernel; its reads are half the bytes, so
        bandwidth-bound decodes still gain while compute-bound prefills lose a little.
    """

    gemm_efficiency: float = 0.65
    attention_efficiency: float = 0.45
    memory_efficiency: float = 0.8
    interconnect_efficiency: float = 0.7
    pcie_interconnect_efficiency: float = 0.5
    allreduce_latency_s: float = 8e-6
    step_overhead_s: float = 2.5e-3
    per_seq_overhead_s: float = 12e-6
    weight_only_dequant_efficiency: float = 0.75
    fp8_kv_attention_efficiency: float = 0.8


def gemm_peak_tflops(deployment: Deployment, params: RooflineParams) -> float:
    """The tensor-core peak the linear layers run at, by vLLM quantization method.

    fp8 (W8A8) uses FP8 tensor cores where the chip has them, int8 (W8A8) the INT8 ones; AWQ/GPTQ
    int4 and FP8 on chips without FP8 are weight-only: BF16 math after in-kernel dequantization.
    """
    gpu, method = deployment.gpu, deployment.quantization
    if method in ("int8", "w8a8") and gpu.int8_tops > 0:
        return gpu.int8_tops
    if method == "fp8" and gpu.has_fp8:
        return gpu.fp8_tflops
    if method is None:
        return gpu.bf16_tflops
    return gpu.bf16_tflops * params.weight_only_dequant_efficiency


class RooflineCostModel:
    """Step time of one replica of `deployment`, from first principles.

    Every per-deployment constant (peaks, efficiencies, bytes) is folded into a few coefficients
    at construction, because `step_time` runs millions of times per simulation.
    """

    def __init__(self, deployment: Deployment, params: RooflineParams | None = None, note: str | None = None) -> None:
        self.deployment = deployment
        self.note = note
        self.params = p = params or RooflineParams()
        model, gpu, tp = deployment.model, deployment.gpu, deployment.tp
        if gpu.bf16_tflops <= 0 or gpu.hbm_bandwidth_gbps <= 0:
            raise ConfigError(f"{gpu.display_name} has no datasheet peaks for the roofline model; pick a --gpu from "
                              "the catalog or give --cost-model calibrated on this device")
        gemm_flops_per_s = gemm_peak_tflops(deployment, p) * TERA * p.gemm_efficiency
        attn_flops_per_s = gpu.bf16_tflops * TERA * p.attention_efficiency
        if dtype_bytes(deployment.kv_cache_dtype) < 2:
            attn_flops_per_s *= p.fp8_kv_attention_efficiency
        bytes_per_s = gpu.hbm_bandwidth_gbps * GIGA * p.memory_efficiency
        # seconds per token through the layers, per sampled token through lm_head
        self._s_per_token = 2.0 * model.layer_linear_params_per_token() / tp / gemm_flops_per_s
        # the lm_head stays bf16 under every quantization method (kernels/ops.py lm_head_dtype)
        self._s_per_sample = 2.0 * model.lm_head_params / tp / (gpu.bf16_tflops * TERA * p.gemm_efficiency)
        dense_bytes, expert_bytes = self._split_weight_bytes()
        self._dense_read_s = dense_bytes / bytes_per_s
        self._expert_read_s = expert_bytes / bytes_per_s
        if parallel.lockstep(deployment):  # routed experts are shared by the DP ranks: rllmsim.cost.data_parallel
            from rllmsim.cost.data_parallel import roofline_rank_terms
            self._s_per_token, self._dense_read_s, self._expert_read_s = roofline_rank_terms(
                deployment, self._s_per_token, gemm_flops_per_s, bytes_per_s)
        self._s_per_pair = model.attention_flops_per_pair() / tp / attn_flops_per_s
        self._sliding = SlidingLayers.of(deployment, self._s_per_pair, bytes_per_s)
        if self._sliding is None:
            self._s_per_kv_token = deployment.kv_bytes_per_token_per_gpu / bytes_per_s
        else:  # the coefficients of the full-attention layers; `_sliding` times the others
            full = model.num_layers - model.attention.num_sliding_layers
            self._s_per_pair = self._s_per_pair * full / model.num_layers
            self._s_per_kv_token = full * kv_bytes_per_layer_token_per_gpu(deployment) / bytes_per_s
        self._s_attention_one_token = max(self._s_per_pair, self._s_per_kv_token)
        self._allreduce_per_token_s, self._allreduce_fixed_s = self._allreduce_coefficients()
        self._per_seq_s = p.per_seq_overhead_s
        self._fixed_s = self._allreduce_fixed_s
        self._host_fixed_s = p.step_overhead_s
        self._async = bool(deployment.async_scheduling)
        self._decode_terms_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _split_weight_bytes(self) -> tuple[float, float]:
        """Per-GPU bytes of the weights every step reads, and of all routed experts (MoE)."""
        d, m = self.deployment, self.deployment.model
        total = d.weight_bytes_per_tp_gpu
        if not m.num_experts:
            return total, 0.0
        experts = m.num_moe_layers * m.num_experts * 3 * m.hidden_size * m.moe_intermediate_size
        expert_bytes = experts * d.weight_bytes_per_param / d.tp
        return total - expert_bytes, expert_bytes

    def _allreduce_coefficients(self) -> tuple[float, float]:
        """Two ring all-reduces of the hidden state per layer: a per-token and a fixed cost."""
        d, p = self.deployment, self.params
        if d.tp == 1:
            return 0.0, 0.0
        pcie = d.gpu.interconnect.startswith("pcie")
        efficiency = p.pcie_interconnect_efficiency if pcie else p.interconnect_efficiency
        link_bytes_per_s = d.gpu.interconnect_gbps * GIGA * efficiency
        per_token = 2.0 * (d.tp - 1) / d.tp * d.model.hidden_size * 2.0 / link_bytes_per_s
        calls = 2.0 * d.model.num_layers
        return calls * per_token, calls * p.allreduce_latency_s * math.log2(d.tp)

    def step_time(self, features: StepFeatures) -> np.ndarray:
        f = features
        if f.decode_batch is not None:
            seqs, per_seq = f.decode_batch
            kv_tokens = f.decode_kv_tokens
            # with one token per sequence, attention's two bounds scale the same count, and
            # rounding is monotone, so the larger coefficient gives the larger bound bit for bit
            attention = (self._s_attention_one_token * kv_tokens if per_seq == 1
                         else self._attention(kv_tokens * per_seq, kv_tokens))
            gpu_terms, host = self._decode_batch_terms(seqs, per_seq)
            gpu = attention + gpu_terms
            if self._sliding is not None:  # in `_seconds`' order, so a run and its steps agree bit for bit
                read = np.minimum(kv_tokens, seqs * self._sliding.window)
                gpu = gpu + np.maximum(self._sliding.s_per_pair * (read * per_seq), self._sliding.s_per_kv_token * read)
            return self._combine(gpu, host, np.maximum)
        if len(f) == 1 and not self.deployment.model.num_experts:
            # one scheduled step (one per arrival): the same formula on Python numbers, which
            # are IEEE doubles too, so the bits match a one-element array's, without a dozen
            # array calls
            row = [int(getattr(f, name)[0]) for name in FEATURE_NAMES]
            sliding = self._sliding.seconds(*row, minimum=min, maximum=max) if self._sliding else 0.0
            return np.array([self._seconds(*_totals(*row, maximum=max), maximum=max, sliding=sliding)])
        columns = (f.prefill_tokens, f.prefill_seqs, f.prefill_attn_pairs, f.prefill_kv_tokens,
                   f.decode_seqs, f.decode_tokens, f.decode_kv_tokens)
        sliding = self._sliding.seconds(*columns, minimum=np.minimum, maximum=np.maximum) if self._sliding else 0.0
        return self._seconds(*_totals(*columns, maximum=np.maximum), maximum=np.maximum, sliding=sliding)

    def _seconds(self, pairs: Any, kv_tokens: Any, tokens: Any, seqs: Any, maximum: Callable, sliding: Any = 0.0) -> Any:
        """Step seconds from attention's query-key pairs and KV tokens read and the step's token
        and sequence counts: arrays (with np.maximum) or plain numbers (with max); `sliding` is
        the attention of sliding-window layers, apart (`rllmsim.cost.sliding`)."""
        gpu = self._attention(pairs, kv_tokens, maximum) + self._batch_terms(tokens, seqs, maximum)
        if self._sliding is not None:
            gpu = gpu + sliding
        return self._combine(gpu, self._host(seqs), maximum)

    def host_seconds(self, features: StepFeatures) -> np.ndarray:
        """The host part of each step's time (see `KernelCostModel.host_seconds`)."""
        return self._host(features.prefill_seqs + features.decode_seqs).astype(np.float64)

    def _host(self, seqs: Any) -> Any:
        return self._per_seq_s * seqs + self._host_fixed_s

    def _combine(self, gpu: Any, host: Any, maximum: Callable) -> Any:
        """Async scheduling overlaps host work with the GPU step; without it they add."""
        return maximum(gpu, host) if self._async else gpu + host

    def _attention(self, pairs: Any, kv_tokens: Any, maximum: Callable = np.maximum) -> Any:
        """Attention: compute-bound on query-key pairs or bandwidth-bound on KV bytes read."""
        return maximum(self._s_per_pair * pairs, self._s_per_kv_token * kv_tokens)

    def _batch_terms(self, tokens: Any, seqs: Any, maximum: Callable = np.maximum) -> Any:
        """GPU time outside attention: linear layers and all-reduces, which depend only on the
        step's token and sequence counts."""
        compute = self._s_per_token * tokens + self._s_per_sample * seqs
        weights = self._dense_read_s + self._expert_read_s * self._expert_share(tokens)
        return maximum(compute, weights) + (self._allreduce_per_token_s * tokens + self._fixed_s)

    def _decode_batch_terms(self, seqs: int, per_seq: int) -> tuple[np.ndarray, np.ndarray]:
        """`_batch_terms` and host time of a pure-decode step of `seqs` sequences, memoised:
        fast-forwarded runs ask for the same few batch sizes millions of times. Computed on
        one-element arrays, exactly as a single scheduled step is, so both give the same bits."""
        key = (seqs, per_seq)
        terms = self._decode_terms_cache.get(key)
        if terms is None:
            size = np.array([seqs], dtype=np.int64)
            terms = self._decode_terms_cache[key] = (self._batch_terms(size * per_seq, size), self._host(size))
        return terms

    def _expert_share(self, tokens: np.ndarray) -> np.ndarray | float:
        """Expected share of routed experts touched by `tokens` tokens (uniform routing)."""
        m = self.deployment.model
        if not m.num_experts:
            return 0.0
        miss = 1.0 - m.num_experts_per_tok / m.num_experts
        return 1.0 - np.power(miss, tokens)

    def provenance(self) -> dict[str, Any]:
        d = self.deployment
        return {
            "kind": "roofline",
            "model": d.model.name,
            "gpu": d.gpu.name,
            "tp": d.tp,
            "quantization": d.quantization,
            "kv_cache_dtype": d.kv_cache_dtype,
            "async_scheduling": self._async,
            "params": dataclasses.asdict(self.params),
            **({"note": self.note} if self.note else {}),
        }


def _totals(prefill_tokens: Any, prefill_seqs: Any, prefill_attn_pairs: Any, prefill_kv_tokens: Any,
            decode_seqs: Any, decode_tokens: Any, decode_kv_tokens: Any, maximum: Callable) -> tuple[Any, ...]:
    """(query-key pairs, KV tokens read, tokens, sequences) of steps given by their features."""
    per_seq = decode_tokens // maximum(decode_seqs, 1)
    pairs = prefill_attn_pairs + decode_kv_tokens * per_seq
    return pairs, prefill_kv_tokens + decode_kv_tokens, prefill_tokens + decode_tokens, decode_seqs + prefill_seqs
