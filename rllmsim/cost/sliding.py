"""Sliding-window layers in the roofline: their attention reads at most `window` keys per query.

`StepFeatures` carries a step's totals, not each sequence's context, so a sliding layer is charged
from them: decode reads min(KV tokens, sequences x window) (exact when every context is at least
the window, the usual case past the first few steps), prefill pairs are capped at tokens x window
and the KV it touches at tokens + sequences x window. Full-attention layers keep the totals.
Attention sinks (gpt-oss) add one logit per head and query: no time of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rllmsim.deployment import Deployment
from rllmsim.specs import dtype_bytes


def kv_bytes_per_layer_token_per_gpu(deployment: Deployment) -> float:
    """KV bytes one token occupies in one layer on one GPU: an MLA latent is kept whole on every
    rank; GQA KV heads are split across TP ranks (replicated when there are more ranks)."""
    m = deployment.model
    element = dtype_bytes(deployment.kv_cache_dtype)
    if m.attention.is_mla:
        return float(m.attention.mla_latent_dim * element)
    return float(max(1, m.num_kv_heads // deployment.tp) * m.head_dim * 2 * element)


@dataclass(frozen=True)
class SlidingLayers:
    """Roofline coefficients of a model's sliding-window layers: seconds per query-key pair and
    per KV token read, summed over those layers."""

    window: int
    s_per_pair: float
    s_per_kv_token: float

    @classmethod
    def of(cls, deployment: Deployment, s_per_pair_all_layers: float, bytes_per_s: float) -> "SlidingLayers | None":
        a = deployment.model.attention
        if not a.has_sliding_window:
            return None
        layers = a.num_sliding_layers
        per_layer_pair = s_per_pair_all_layers / deployment.model.num_layers
        return cls(int(a.sliding_window), per_layer_pair * layers,
                   layers * kv_bytes_per_layer_token_per_gpu(deployment) / bytes_per_s)

    def seconds(self, prefill_tokens: Any, prefill_seqs: Any, prefill_pairs: Any, prefill_kv: Any, decode_seqs: Any,
                decode_tokens: Any, decode_kv: Any, minimum: Callable, maximum: Callable) -> Any:
        """Attention seconds of the sliding layers for steps given by their features (arrays with
        np.minimum/np.maximum, or numbers with min/max)."""
        w = self.window
        per_seq = decode_tokens // maximum(decode_seqs, 1)
        decode_read = minimum(decode_kv, decode_seqs * w)
        pairs = minimum(prefill_pairs, prefill_tokens * w) + decode_read * per_seq
        kv = minimum(prefill_kv, prefill_tokens + prefill_seqs * w) + decode_read
        return maximum(self.s_per_pair * pairs, self.s_per_kv_token * kv)
