"""Step cost under speculative decoding: verification plus proposal.

Verification is already in the step's features: each decoding sequence feeds 1 + k tokens, so the
target model's linear layers see k more tokens per sequence and attention k more queries. What the
features do not hold is the proposer. vLLM v1 runs it after the target's forward pass, as its
EAGLE-style proposers (EAGLE, EAGLE-3, MTP, draft model) do:
- a first pass over every token the target just ran (prefill chunks included: the drafter keeps
  its own KV of the prompt), which yields each sequence's first draft token;
- k - 1 more passes of one token per running sequence for the rest of the draft.
Heads also multiply each token through their fusing projection (eh_proj / fc: 2 or 3 x hidden ->
hidden, replicated on every TP rank), costed here at the GPU's bf16 roofline. N-gram lookup runs
on the CPU and adds nothing on the GPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rllmsim import spec_decode
from rllmsim.cost.base import CostModel
from rllmsim.cost.features import StepFeatures
from rllmsim.cost.roofline import GIGA, TERA, RooflineCostModel, RooflineParams
from rllmsim.deployment import Deployment


class SpeculativeCostModel:
    """A target-model cost model plus the proposer's passes per step."""

    def __init__(self, target: CostModel, proposer: CostModel | None, spec_tokens: int, method: str,
                 projection_s_per_token: float = 0.0, projection_read_s: float = 0.0) -> None:
        self.target = target
        self.proposer = proposer
        self.spec_tokens = spec_tokens
        self.method = method
        self.projection_s_per_token = projection_s_per_token
        self.projection_read_s = projection_read_s

    def step_time(self, features: StepFeatures) -> np.ndarray:
        total = self.target.step_time(features)
        if self.proposer is None:
            return total
        f = features
        seqs = f.decode_seqs + f.prefill_seqs
        busy = seqs > 0
        drafting = self.proposer.step_time(f) + self._projection(f.total_tokens)
        if self.spec_tokens > 1:
            later = StepFeatures.decode_only(seqs, f.decode_kv_tokens + f.prefill_kv_tokens)
            drafting = drafting + (self.spec_tokens - 1) * (self.proposer.step_time(later) + self._projection(seqs))
        return total + busy * drafting

    def _projection(self, tokens: np.ndarray) -> np.ndarray:
        """The fusing projection of a pass over `tokens` tokens: compute- or weight-read-bound."""
        return np.maximum(self.projection_s_per_token * tokens, self.projection_read_s)

    def provenance(self) -> dict[str, Any]:
        return {"kind": "speculative", "method": self.method, "num_speculative_tokens": self.spec_tokens,
                "target": self.target.provenance(),
                "proposer": self.proposer.provenance() if self.proposer else None}


def speculative_cost_model(cost_model: CostModel, deployment: Deployment) -> CostModel:
    """`cost_model` plus the proposer's cost when the deployment speculates.

    The proposer runs on the target's GPUs at its roofline cost without the per-step CPU
    overheads, which the target step already pays once. An MTP module keeps the checkpoint's
    quantization; a draft model its own; an EAGLE head is bf16.
    """
    if not deployment.speculative_method:
        return cost_model
    head = deployment.drafter
    if head is None:
        return SpeculativeCostModel(cost_model, None, deployment.num_speculative_tokens, deployment.speculative_method)
    method = deployment.speculative_method
    draft = dataclasses.replace(
        deployment, model=head, speculative_method=None, num_speculative_tokens=0, draft_model=None,
        spec_acceptance_rate=None, spec_mean_acceptance_length=None,
        quantization=deployment.quantization if method == "mtp" else None,
        enable_expert_parallel=deployment.enable_expert_parallel and head.is_moe,
        num_gpu_blocks_override=deployment.num_gpu_blocks)
    params = RooflineParams(step_overhead_s=0.0, per_seq_overhead_s=0.0)
    proposer = RooflineCostModel(draft, params)
    weights = spec_decode.projection_params(deployment)
    gpu = deployment.gpu
    per_token = 2.0 * weights / (gpu.bf16_tflops * TERA * params.gemm_efficiency)
    read = 2.0 * weights / (gpu.hbm_bandwidth_gbps * GIGA * params.memory_efficiency)
    return SpeculativeCostModel(cost_model, proposer, deployment.num_speculative_tokens, method, per_token, read)
