"""Step cost under speculative decoding: verification plus proposal.

Verification is already in the step's features: each decoding sequence feeds 1 + k tokens, so the
target model's linear layers see k more tokens per sequence and attention k more queries. What the
features do not hold is the proposer: a draft model (or an EAGLE head) runs k autoregressive
decode steps over the same sequences before the target verifies. N-gram lookup runs on the CPU
and adds nothing on the GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rllmsim.cost.base import CostModel
from rllmsim.cost.features import StepFeatures


class SpeculativeCostModel:
    """A target-model cost model plus k proposer decode passes per step."""

    def __init__(self, target: CostModel, proposer: CostModel | None, spec_tokens: int, method: str) -> None:
        self.target = target
        self.proposer = proposer
        self.spec_tokens = spec_tokens
        self.method = method

    def step_time(self, features: StepFeatures) -> np.ndarray:
        total = self.target.step_time(features)
        if self.proposer is None:
            return total
        drafting = StepFeatures.decode_only(features.decode_seqs, features.decode_kv_tokens)
        busy = features.decode_seqs > 0
        return total + busy * (self.spec_tokens * self.proposer.step_time(drafting))

    def provenance(self) -> dict[str, Any]:
        return {"kind": "speculative", "method": self.method, "num_speculative_tokens": self.spec_tokens,
                "target": self.target.provenance(),
                "proposer": self.proposer.provenance() if self.proposer else None}
