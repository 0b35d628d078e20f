"""Speculative decoding settings as vLLM names them: the methods, their drafters and the checks.

`Deployment` keeps the fields and delegates here, so the rules live in one place:
- `ngram` looks drafts up in the prompt on the CPU: no drafter on the GPU.
- `draft_model` (alias `draft`) runs a smaller model of the same vocabulary, kept in bf16.
- `eagle` runs a one-layer head of the target's width over the target's hidden state fused with
  the token embedding (`fc`: 2 x hidden -> hidden), kept in bf16.
- `eagle3` is EAGLE-3: the head fuses three of the target's hidden states (`fc`: 3 x hidden ->
  hidden) and its attention reads the embedding and the fused feature concatenated (q, k and v
  projections from 2 x hidden), so it costs a little more than `eagle`.
- `mtp` (alias `deepseek_mtp`) runs the checkpoint's own multi-token-prediction module(s)
  (DeepSeek-V3/R1, GLM-4.x, MiniMax-M2): a decoder layer of the model's own shape (its experts
  too) plus `eh_proj` (2 x hidden -> hidden), in the checkpoint's quantization. vLLM cycles the
  modules to draft more tokens than there are, so k may exceed them when it is a multiple.
A head shares the target's embedding and lm_head, so its weights add one layer, not a model.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from rllmsim.engine import acceptance, speculation
from rllmsim.errors import ConfigError
from rllmsim.specs import ModelSpec
from rllmsim.specs.dtypes import quantization_scope

if TYPE_CHECKING:
    from rllmsim.deployment import Deployment

SPECULATIVE_METHODS = ("ngram", "draft_model", "eagle", "eagle3", "mtp")
METHOD_ALIASES = {"draft": "draft_model", "deepseek_mtp": "mtp"}
#: Every name `--speculative-method` takes: vLLM's, and the aliases.
METHOD_NAMES = SPECULATIVE_METHODS + tuple(METHOD_ALIASES)
#: Input width of the head's fusing projection, in multiples of hidden (eh_proj or fc).
_FUSED_INPUTS = {"eagle": 2, "eagle3": 3, "mtp": 2}
MAX_SPECULATIVE_TOKENS = 16


def check_speculative(dep: Deployment) -> None:
    """Validate the speculative fields (one-line ConfigErrors) and write the method's vLLM name."""
    method = dep.speculative_method
    if method is None:
        if dep.num_speculative_tokens != 0:
            raise ConfigError(f"num_speculative_tokens needs --speculative-method {'|'.join(SPECULATIVE_METHODS)}")
        return
    method = METHOD_ALIASES.get(method, method)
    if method not in SPECULATIVE_METHODS:
        raise ConfigError(f"speculative_method {dep.speculative_method!r} is not one of {', '.join(METHOD_NAMES)}")
    object.__setattr__(dep, "speculative_method", method)
    k = dep.num_speculative_tokens
    if not 1 <= k <= MAX_SPECULATIVE_TOKENS:
        raise ConfigError(f"num_speculative_tokens must be in 1..{MAX_SPECULATIVE_TOKENS} with "
                          f"--speculative-method, got {k}")
    acceptance.resolve_rate(dep.spec_acceptance_rate, dep.spec_mean_acceptance_length, k)
    acceptance.check_spread(dep.spec_acceptance_spread)
    if (method == "draft_model") != (dep.draft_model is not None):
        raise ConfigError("draft_model is required with --speculative-method draft_model (and only then); "
                          "give --draft-model NAME")
    if method == "mtp":
        layers = dep.model.num_mtp_layers
        if not layers:
            raise ConfigError(f"speculative_method mtp needs multi-token-prediction layers, and {dep.model.name} has "
                              "none (num_nextn_predict_layers = 0); use eagle3, draft_model or ngram")
        if k > layers and k % layers:
            raise ConfigError(f"num_speculative_tokens {k} must be at most or a multiple of the {layers} MTP layers "
                              f"of {dep.model.name} (vLLM reuses them in turn)")


def acceptance_rate(dep: Deployment) -> float:
    """The draft acceptance rate (accepted / drafted tokens) the deployment was given, resolved."""
    return acceptance.resolve_rate(dep.spec_acceptance_rate, dep.spec_mean_acceptance_length,
                                   dep.num_speculative_tokens)


def tokens_per_step(dep: Deployment) -> float:
    """Mean tokens a decoding sequence emits per step: 1 without speculation, else 1 + rate x k."""
    if not dep.speculative_method:
        return 1.0
    return acceptance.mean_acceptance_length(acceptance_rate(dep), dep.num_speculative_tokens)


def drafter(dep: Deployment) -> ModelSpec | None:
    """The model that proposes on the GPU (a draft model or a one-layer head), None for ngram.
    An EAGLE head is a dense layer; an MTP module keeps the model's experts."""
    method, model = dep.speculative_method, dep.model
    if method == "draft_model":
        return dep.draft_model
    if method not in _FUSED_INPUTS:
        return None
    head = {"num_layers": 1, "num_mtp_layers": 0, "name": f"{model.name}-{method}-head",
            "attention": dataclasses.replace(model.attention, layer_types=(), sliding_window=None)}
    if method == "mtp":
        return dataclasses.replace(model, num_moe_layers=1 if model.is_moe else 0, **head)
    return dataclasses.replace(model, num_moe_layers=0, num_experts=0, num_experts_per_tok=0, moe_intermediate_size=0,
                               num_shared_experts=0, shared_expert_intermediate_size=0, router_bias=False,
                               expert_bias=False, shared_expert_gate=False, checkpoint_quantization=None, **head)


def projection_params(dep: Deployment) -> int:
    """Weights a head multiplies each drafted token through besides its decoder layer: the fusing
    projection (eh_proj / fc), and for EAGLE-3 the wider input of q, k and v."""
    method, model = dep.speculative_method, dep.model
    if method not in _FUSED_INPUTS:
        return 0
    h = model.hidden_size
    widened_qkv = h * (model.q_size + 2 * model.kv_size) if method == "eagle3" else 0
    return _FUSED_INPUTS[method] * h * h + widened_qkv


def drafter_weight_bytes(dep: Deployment) -> float:
    """Bytes the drafter adds to the target's weights (before the TP split).

    A draft model's own weights in bf16; an EAGLE head's layer and projections in bf16; for MTP
    every module the checkpoint ships (`ModelSpec.mtp_param_count` parameters), its decoder layer
    at the checkpoint's weight bytes and eh_proj and the norms in bf16, as vLLM loads them.
    """
    head = drafter(dep)
    if head is None:
        return 0.0
    if dep.speculative_method == "draft_model":
        return head.weight_bytes(2.0)
    mtp = dep.speculative_method == "mtp"
    per_param = dep.weight_bytes_per_param if mtp else 2.0
    scope = quantization_scope(dep.quantization) if mtp else "linear"
    headless = dataclasses.replace(head, num_layers=0, num_moe_layers=0)
    layer = head.weight_bytes(per_param, scope) - headless.weight_bytes(per_param, scope)
    if not mtp:
        return layer + projection_params(dep) * 2.0
    model = dep.model
    rest = model.mtp_param_count() // model.num_mtp_layers - (head.param_count() - headless.param_count())
    return model.num_mtp_layers * (layer + rest * max(per_param, 2.0))


def request_rate_units(dep: Deployment, n: int, rng: np.random.Generator) -> np.ndarray:
    """Each request's mean tokens per verifying step, 1 + rate_i x k, in the engine's fixed-point
    units (`rllmsim.engine.speculation`), with rate_i drawn around the given rate."""
    k = dep.num_speculative_tokens
    rates = acceptance.request_rates(acceptance_rate(dep), k, dep.spec_acceptance_spread, n, rng)
    return np.maximum(speculation.SCALE, np.rint((1.0 + k * rates) * speculation.SCALE).astype(np.int64))
