"""The run's speculative-decoding figures, named as vLLM's SpecDecoding metrics log them.

`given` restates what the run was told (resolved from either figure) with the per-position rates
of the model in `rllmsim.engine.acceptance`; `simulated` counts the run the way vLLM counts it:
a draft is one decoding sequence's verifying step (k draft tokens), its accepted tokens are the
tokens it emitted less the bonus token. The timeline holds no per-step prefill emissions, so a
prompt's completion is taken to emit one token per completed request and per preemption (the
recomputed prompt samples again); a request preempted before its first token makes the accepted
count one token low.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rllmsim import spec_decode
from rllmsim.deployment import Deployment
from rllmsim.engine import acceptance, speculation
from rllmsim.engine.cluster import SimulationResult


def speculative_summary(result: SimulationResult, requests: pd.DataFrame, deployment: Deployment) -> dict[str, Any]:
    k = deployment.num_speculative_tokens
    rate = spec_decode.acceptance_rate(deployment)
    timeline = result.timeline
    drafts = float(timeline["decode_tokens"].sum()) / (1 + k) if len(timeline) else 0.0
    done = requests["finish_s"].notna()
    prompt_emissions = int(done.sum()) + int(requests.loc[done, "preemptions"].sum())
    decode_emitted = float(timeline["output_tokens"].sum()) - prompt_emissions if len(timeline) else 0.0
    accepted = max(decode_emitted - drafts, 0.0)
    per_request = (result.ledger.accept_rate / speculation.SCALE - 1.0) / k
    p10, p50, p90 = np.percentile(per_request, [10, 50, 90]) if len(per_request) else (float("nan"),) * 3
    return {
        "method": deployment.speculative_method,
        "num_speculative_tokens": k,
        "given": {
            "draft_acceptance_rate": rate,
            "mean_acceptance_length": acceptance.mean_acceptance_length(rate, k),
            "per_position_acceptance_rate": acceptance.per_position_rates(rate, k),
            "acceptance_spread": deployment.spec_acceptance_spread,
            "per_request_rate": {"p10": float(p10), "p50": float(p50), "p90": float(p90)},
        },
        "simulated": {
            "drafts": drafts,
            "draft_tokens": drafts * k,
            "accepted_tokens": accepted,
            "draft_acceptance_rate": accepted / (drafts * k) if drafts else float("nan"),
            "mean_acceptance_length": 1.0 + accepted / drafts if drafts else float("nan"),
        },
    }
