"""Data-parallel layouts as vLLM runs them: `--data-parallel-size D` beside `--tensor-parallel-size`.

One `vllm serve` with D data-parallel ranks starts D engine cores, each with its own scheduler, KV
pool and waiting queue, and each with a TP group of `tp` GPUs for attention: D x tp GPUs per
replica. What the ranks share depends on the model (vllm/config/parallel.py, v1/engine/core.py):

- dense model: nothing; the ranks are independent engines (`replicas` in all but name);
- mixture of experts: every MoE layer runs over all D x tp GPUs. With `--enable-expert-parallel`
  each GPU holds E / (D x tp) whole experts (EP size D x tp); without it every expert is split
  tensor-parallel over the D x tp GPUs. Either way the ranks gather each other's tokens before the
  experts and scatter the results after them, so they step in lockstep: a rank with nothing to do
  runs a dummy batch (`DPEngineCoreProc.run_busy_loop` / `execute_dummy_batch`), and each step
  takes as long as the slowest rank's (`rllmsim.engine.lockstep`).

Memory per GPU: attention, dense layers, embeddings and lm_head are replicated on every DP rank
and split by TP; the routed experts are split over all D x tp GPUs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from rllmsim.errors import ConfigError
from rllmsim.specs.dtypes import quantization_scope

if TYPE_CHECKING:
    from rllmsim.deployment import Deployment

#: GPUs one NVLink domain (one node) holds; a MoE layer spread over more GPUs than that exchanges
#: its tokens over the network between nodes (`rllmsim.cost.data_parallel`). GPUs not named have 8.
NVLINK_DOMAIN_GPUS = {"gb200": 72, "gb300": 72}
DEFAULT_NVLINK_DOMAIN = 8


def check(dep: Deployment) -> None:
    """One-line ConfigError for a data-parallel size vLLM refuses."""
    dp = dep.data_parallel_size
    if isinstance(dp, bool) or not isinstance(dp, int) or dp < 1:
        raise ConfigError(f"data_parallel_size must be an integer >= 1, got {dp!r}; give --data-parallel-size 1 or more")


def nvlink_domain(dep: Deployment) -> int:
    return NVLINK_DOMAIN_GPUS.get(dep.gpu.name, DEFAULT_NVLINK_DOMAIN)


def spans_nodes(dep: Deployment) -> bool:
    """Whether one replica's D x tp GPUs are more than one NVLink domain holds."""
    return dep.data_parallel_size * dep.tp > nvlink_domain(dep)


def lockstep(dep: Deployment) -> bool:
    """Whether the DP ranks of a replica step together: D > 1 with a mixture-of-experts model."""
    return dep.data_parallel_size > 1 and dep.model.num_experts > 0


def moe_gpus(dep: Deployment) -> int:
    """GPUs each MoE layer spans: D x tp (EP size with --enable-expert-parallel, else MoE TP size)."""
    return dep.data_parallel_size * dep.tp if dep.model.num_experts else dep.tp


def routed_expert_bytes(dep: Deployment) -> float:
    """Bytes of all routed experts (with their router) at the deployment's weight precision: the
    model's weights less those of the same model without routed experts, so whatever precision
    the spec gives experts is honoured."""
    model = dep.model
    if not model.num_experts:
        return 0.0
    bpp, scope = dep.weight_bytes_per_param, quantization_scope(dep.quantization)
    return model.weight_bytes(bpp, scope) - dataclasses.replace(model, num_experts=0).weight_bytes(bpp, scope)


def weight_bytes_per_gpu(dep: Deployment, total: float) -> float:
    """`total` (the model's and a drafter's weight bytes) per GPU: the routed experts split over
    the D x tp GPUs of a MoE layer, everything else over the tp GPUs of one DP rank."""
    if dep.data_parallel_size == 1 or not dep.model.num_experts:
        return total / dep.tp
    experts = routed_expert_bytes(dep)
    return (total - experts) / dep.tp + experts / moe_gpus(dep)
