"""The part of a lockstep data-parallel step that all DP ranks share: the routed experts and the
token exchange around them (`rllmsim.parallel` says when ranks step in lockstep).

With D DP ranks of a MoE model, vLLM's default all2all backend (`allgather_reducescatter`,
vllm/config/parallel.py; `AgRsAll2AllManager` in distributed/device_communicators/all2all.py)
all-gathers every rank's hidden states (and router logits) over the DP group before each MoE
layer and reduce-scatters the expert outputs after it. Every GPU then runs its share of the
experts over the tokens of all ranks: with `--enable-expert-parallel` E / (D x tp) whole experts,
without it a 1 / (D x tp) slice of every expert. Under CUDA graphs the ranks pad their batch to
the largest rank's token count (`coordinate_batch_across_dp`, v1/worker/dp_utils.py), so the
experts see D x max tokens; eager steps, or steps too large to be graphed, see the plain sum.

Per step, the shared seconds are `num_moe_layers x (experts + all-gather + reduce-scatter)` at
those global tokens. They come from the kernel tables where measured (the fused-MoE table at
moe_ep = D x tp or moe_tp = D x tp, whose `tokens` axis counts the tokens of all DP ranks as
aiconfigurator's collector does; NCCL all-gather and reduce-scatter over D GPUs), else from the
roofline's peaks. The rest of each rank's step (attention, dense layers, TP all-reduces, host) is
the rank's own cost-model step with its routed experts left out (hooks in the kernel model and the
roofline). Everything is tabulated against the global token count, so a step costs one lookup and
a step costs the same alone or inside a fast-forwarded run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rllmsim import parallel
from rllmsim.cost.base import CostModel
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError

US = 1e-6
GIGA = 1e9
ACTIVATION_BYTES = 2
#: Assumption: bandwidth per GPU between nodes, where one replica's DP x TP GPUs span NVLink
#: domains (one 400 Gb/s InfiniBand NDR NIC per GPU, as DGX/HGX H100 and H200 nodes ship).
INTER_NODE_GBPS = 50.0
#: Assumption: the fixed cost of one collective between nodes (network and proxy latency).
INTER_NODE_LATENCY_S = 20e-6


class SharedMoE:
    """Seconds per lockstep step of the routed experts and their all-gather / reduce-scatter,
    tabulated against the step's global token count."""

    def __init__(self, deployment: Deployment, cost_model: CostModel) -> None:
        from rllmsim.cost.kernels.model import KernelCostModel  # here: the kernel model imports parallel
        from rllmsim.cost.kernels.ops import max_capture_size
        from rllmsim.cost.roofline import RooflineCostModel

        d = self.deployment = deployment
        cost_model = getattr(cost_model, "target", cost_model)  # a speculative wrapper times the target's steps
        if not isinstance(cost_model, (KernelCostModel, RooflineCostModel)):
            raise ConfigError(f"data_parallel_size {d.data_parallel_size} with a mixture-of-experts model needs "
                              "--cost-model kernels or roofline (a calibrated model times whole steps, experts "
                              "included, of one engine); give one of them")
        self.ranks = d.data_parallel_size
        per_rank = max(d.max_num_batched_tokens, d.max_num_seqs * (1 + d.num_speculative_tokens))
        self.capture_size = max_capture_size(d)
        tokens = np.arange(self.ranks * per_rank + 1, dtype=np.int64)
        self.sources: dict[str, str] = {}
        tables = cost_model.tables if isinstance(cost_model, KernelCostModel) else None
        experts = self._experts_from_tables(tables, tokens) if tables is not None else None
        if experts is None:
            experts = self._experts_roofline(tokens)
        exchange = self._exchange_from_tables(tables, tokens) if tables is not None else None
        if exchange is None:
            exchange = self._exchange_analytic(tokens)
        self.experts_s = d.model.num_moe_layers * experts * (tokens > 0)
        self.exchange_s = d.model.num_moe_layers * exchange * (tokens > 0)
        self._table = self.experts_s + self.exchange_s

    # -- the step -------------------------------------------------------------------------------
    def global_tokens(self, tokens_max: np.ndarray, tokens_sum: np.ndarray) -> np.ndarray:
        """Tokens the experts see per step: D x the largest rank's under CUDA graphs (every rank
        pads to it), the sum of the ranks' otherwise (eager, or a step too large to graph)."""
        padded = (tokens_max <= self.capture_size) & (self.capture_size > 0)
        return np.where(padded, self.ranks * tokens_max, tokens_sum)

    def seconds(self, global_tokens: np.ndarray) -> np.ndarray:
        """Shared seconds of each step (elementwise; beyond the table scaled linearly)."""
        top = len(self._table) - 1
        clipped = np.minimum(global_tokens, top)
        out = self._table[clipped]
        over = global_tokens > top
        if over.any():
            out = np.where(over, out * (global_tokens / top), out)
        return out

    # -- the experts ----------------------------------------------------------------------------
    def _experts_from_tables(self, tables: Any, tokens: np.ndarray) -> np.ndarray | None:
        from rllmsim.cost.kernels import sources
        from rllmsim.cost.kernels.ops import moe_dtype

        d, m = self.deployment, self.deployment.model
        tp, ep = (1, parallel.moe_gpus(d)) if d.enable_expert_parallel else (parallel.moe_gpus(d), 1)
        found = sources.moe_from_database(tables, moe_dtype(d), m.hidden_size, m.moe_intermediate_size,
                                          m.num_experts_per_tok, m.num_experts, tp, tokens, ep=ep)
        if found is None:
            return None
        self.sources["experts"] = f"fused MoE table, moe_tp {tp} x moe_ep {ep}, tokens of all DP ranks"
        return found[0] * US

    def _experts_roofline(self, tokens: np.ndarray) -> np.ndarray:
        """Each GPU's share of the routed experts: their FLOPs at the GEMM peak, or the bytes of the
        experts the tokens touch at the HBM bandwidth, whichever is larger (uniform routing)."""
        from rllmsim.cost.roofline import RooflineParams, gemm_peak_tflops

        d, m, p = self.deployment, self.deployment.model, RooflineParams()
        gpus = parallel.moe_gpus(d)
        expert_params = 3 * m.hidden_size * m.moe_intermediate_size
        flops = 2.0 * expert_params * m.num_experts_per_tok * tokens / gpus
        compute = flops / (gemm_peak_tflops(d, p) * 1e12 * p.gemm_efficiency)
        touched = 1.0 - np.power(1.0 - m.num_experts_per_tok / m.num_experts, tokens.astype(np.float64))
        weights = touched * parallel.routed_expert_bytes(d) / m.num_moe_layers / gpus
        self.sources["experts"] = "roofline (GEMM peak or expert weight bytes), tokens of all DP ranks"
        return np.maximum(compute, weights / (d.gpu.hbm_bandwidth_gbps * GIGA * p.memory_efficiency))

    # -- the exchange ---------------------------------------------------------------------------
    def _message_bytes(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bytes of the gathered buffer (hidden states and router logits) and of the scattered one."""
        m = self.deployment.model
        return (tokens * (m.hidden_size + m.num_experts) * float(ACTIVATION_BYTES),
                tokens * m.hidden_size * float(ACTIVATION_BYTES))

    def _exchange_from_tables(self, tables: Any, tokens: np.ndarray) -> np.ndarray | None:
        from rllmsim.cost.kernels import sources

        if parallel.spans_nodes(self.deployment):
            return None
        gather = sources.allreduce_curve(tables, "nccl_all_gather", self.ranks)
        scatter = sources.allreduce_curve(tables, "nccl_reduce_scatter", self.ranks)
        if gather is None or scatter is None:
            return None
        gathered, scattered = self._message_bytes(tokens)
        self.sources["exchange"] = f"NCCL all-gather + reduce-scatter over {self.ranks} GPUs, measured"
        return (gather(gathered) + scatter(scattered)) * US

    def _exchange_analytic(self, tokens: np.ndarray) -> np.ndarray:
        """Ring all-gather and reduce-scatter over the D ranks: (D - 1) / D of the buffer crosses
        the slowest link, plus a fixed cost per call; between nodes, the network link."""
        from rllmsim.cost.roofline import RooflineParams

        d, p = self.deployment, RooflineParams()
        if parallel.spans_nodes(d):
            link, latency, where = INTER_NODE_GBPS * GIGA * p.interconnect_efficiency, INTER_NODE_LATENCY_S, "network"
        else:
            pcie = d.gpu.interconnect.startswith("pcie")
            link = d.gpu.interconnect_gbps * GIGA * (p.pcie_interconnect_efficiency if pcie else p.interconnect_efficiency)
            latency, where = p.allreduce_latency_s * math.log2(max(self.ranks, 2)), d.gpu.interconnect
        share = (self.ranks - 1) / self.ranks
        gathered, scattered = self._message_bytes(tokens)
        self.sources["exchange"] = f"ring all-gather + reduce-scatter over {self.ranks} GPUs ({where}), analytic"
        return share * (gathered + scattered) / link + 2 * latency

    def provenance(self) -> dict[str, Any]:
        return {"data_parallel_size": self.ranks, "moe_gpus": parallel.moe_gpus(self.deployment),
                "expert_parallel": self.deployment.enable_expert_parallel, **self.sources}


def roofline_rank_terms(deployment: Deployment, s_per_token: float, gemm_flops_per_s: float,
                        bytes_per_s: float) -> tuple[float, float, float]:
    """A lockstep rank's roofline terms without its routed experts (timed by `SharedMoE`): seconds
    per token, dense weight-read seconds, expert weight-read seconds (0)."""
    d, m = deployment, deployment.model
    routed = m.num_moe_layers * m.num_experts_per_tok * 3 * m.hidden_size * m.moe_intermediate_size
    dense_bytes = d.weight_bytes_per_gpu - parallel.routed_expert_bytes(d) / parallel.moe_gpus(d)
    return s_per_token - 2.0 * routed / d.tp / gemm_flops_per_s, dense_bytes / bytes_per_s, 0.0
