"""What a model is, read from its Hugging Face `config.json`: shapes, parameter counts, KV size.

The catalog (`models/*.json`) ships the published configs (facts only: every shape, attention, MoE,
rope and quantization field as published) plus one `_rllmsim` block (HF id, the parameter counts the
model card publishes and where they come from, whether it is a reasoning model), so the same parser
reads a catalog entry and a user's own `config.json`. Parameter counts are derived from the shapes,
not copied, and the tests hold them within 2% of the published sizes: that is what keeps weight
memory, KV capacity and GEMM FLOPs honest for any config a user brings.

Supported architectures (`SUPPORTED_ARCHITECTURES`): decoder-only transformers with gated (SwiGLU)
MLPs and dense or mixture-of-experts layers - Llama, Mistral, Mixtral, Qwen2/Qwen3 (dense and MoE),
DeepSeek-V3 (MLA attention, dense-first layers, shared experts, MTP layers: DeepSeek-R1/V3.1,
Kimi-K2), gpt-oss (sliding-window layers, attention sinks, biased experts), MiniMax-M2 and GLM-4.x
MoE. `rllmsim.specs.attention` describes each model's attention; the KV cache of MLA and
sliding-window layers is not sized yet (`kv_bytes_per_token` refuses them rather than mis-size).
See docs/models.md.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from rllmsim.errors import ConfigError
from rllmsim.specs.attention import (
    FULL_ATTENTION,
    GQA,
    MLA,
    SLIDING_ATTENTION,
    AttentionSpec,
)

#: `architectures` values the parser models; a config naming none of them is refused.
SUPPORTED_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM",
    "Qwen2ForCausalLM", "Qwen2MoeForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM",
    "DeepseekV3ForCausalLM", "GptOssForCausalLM", "MiniMaxM2ForCausalLM", "Glm4MoeForCausalLM",
})
# Architectures whose config has no `attention_bias` key but whose q/k/v projections carry one.
_QKV_BIAS_TYPES = frozenset({"qwen2", "qwen2_moe"})
# Architectures whose `attention_bias` covers q/k/v only: o_proj is built without a bias.
_NO_O_BIAS_TYPES = frozenset({"glm4_moe"})
# Architectures with a per-head RMSNorm on q and k (weights of head_dim each) and no config flag.
_QK_NORM_TYPES = frozenset({"qwen3", "qwen3_moe"})
# Routers with one bias per expert besides their weights: GLM-4.x's e_score_correction_bias (always
# built) and gpt-oss's biased router Linear; DeepSeek's comes with `topk_method: noaux_tc`, MiniMax's
# with `use_routing_bias`.
_ROUTER_BIAS_TYPES = frozenset({"glm4_moe", "gpt_oss"})
#: What a published "active parameters" figure counts besides the transformer layers:
#: "all" (input embedding and lm_head, Qwen's convention), "no_input_embedding" (the lm_head but not
#: the embedding lookup, DeepSeek's and OpenAI's), "no_embeddings" (neither).
ACTIVE_CONVENTIONS = ("all", "no_input_embedding", "no_embeddings")
# Bytes per parameter of the parts vLLM never quantizes (embeddings, lm_head, norms, biases,
# MoE router): the checkpoint's bf16.
UNQUANTIZED_BYTES = 2.0


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of one decoder-only model, plus the counts a cost model needs.

    Counts are for the whole model, before any tensor-parallel split. For MLA models
    `num_kv_heads` is the config's `num_key_value_heads` (= query heads) and `head_dim` the q/k
    head dimension (`qk_nope_head_dim + qk_rope_head_dim`); `attention` holds the latent shapes.
    """

    name: str
    hf_id: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    torch_dtype: str = "bfloat16"
    tie_word_embeddings: bool = False
    attention: AttentionSpec = AttentionSpec()
    attention_bias: bool = False  # q/k/v projections carry a bias (Qwen2, gpt-oss, GLM-4.x)
    o_proj_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # q and k are RMS-normalized (attention.qk_norm says per head or per layer)
    num_experts: int = 0  # routed experts per MoE layer; 0 for a dense model
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    num_moe_layers: int = 0  # layers whose MLP is the expert block; the rest (e.g. the first k) are dense
    num_shared_experts: int = 0
    shared_expert_intermediate_size: int = 0  # total width of the always-on shared expert(s)
    shared_expert_gate: bool = False  # Qwen2-MoE's sigmoid gate on the shared expert
    router_bias: bool = False  # one bias per routed expert (e_score_correction_bias, routing bias)
    expert_bias: bool = False  # gpt-oss: gate/up and down projections of each expert carry biases
    num_mtp_layers: int = 0  # multi-token-prediction layers shipped beside the main stack
    checkpoint_quantization: str | None = None  # quantization_config.quant_method: fp8, mxfp4, ...
    checkpoint_quantization_format: str = ""  # e.g. "e4m3, 128x128 blocks" or "int4, group 32"
    reasoning: bool = False
    published_params_b: float | None = None
    published_active_params_b: float | None = None
    published_active_convention: str = "all"  # what the published active figure counts (ACTIVE_CONVENTIONS)
    published_mtp_params_b: float | None = None
    published_source: str = ""  # where the published figures come from

    # ---- per-layer pieces -------------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def attention_kind(self) -> str:
        """"gqa" or "mla" (`rllmsim.specs.attention`)."""
        return self.attention.kind

    def _attention_linear(self) -> int:
        """Projection weights of one layer's attention: q, k, v, o (GQA) or MLA's five."""
        h, heads, a = self.hidden_size, self.num_attention_heads, self.attention
        if not a.is_mla:
            return h * self.q_size + 2 * h * self.kv_size + self.q_size * h
        qk_dim = a.qk_nope_head_dim + a.qk_rope_head_dim
        q = h * a.q_lora_rank + a.q_lora_rank * heads * qk_dim if a.q_lora_rank else h * heads * qk_dim
        kv_a = h * (a.kv_lora_rank + a.qk_rope_head_dim)  # kv_a_proj_with_mqa: latent + rotary key
        kv_b = a.kv_lora_rank * heads * (a.qk_nope_head_dim + a.v_head_dim)
        return q + kv_a + kv_b + heads * a.v_head_dim * h  # ... + o_proj

    def _attention_extra(self) -> int:
        """Biases, q/k (or MLA latent) norms and attention sinks of one layer."""
        a = self.attention
        extra = (self.q_size + 2 * self.kv_size) if self.attention_bias else 0
        extra += self.hidden_size if self.o_proj_bias else 0
        if a.is_mla:
            extra += a.q_lora_rank + a.kv_lora_rank  # q_a_layernorm, kv_a_layernorm
        elif a.qk_norm == "per_head":
            extra += 2 * self.head_dim
        elif a.qk_norm == "per_layer":
            extra += self.q_size + self.kv_size
        return extra + (self.num_attention_heads if a.sinks else 0)

    def _gated_mlp(self, width: int) -> int:
        """gate, up and down projection weights of a SwiGLU MLP of the given width."""
        return 3 * self.hidden_size * width

    def _dense_mlp_bias(self) -> int:
        return (2 * self.intermediate_size + self.hidden_size) if self.mlp_bias else 0

    def _expert_bias(self) -> int:
        return (2 * self.moe_intermediate_size + self.hidden_size) if self.expert_bias else 0

    def _router(self) -> int:
        """Router (and shared-expert gate) weights of one MoE layer; vLLM keeps them bf16."""
        return (self.hidden_size * self.num_experts + (self.num_experts if self.router_bias else 0)
                + (self.hidden_size if self.shared_expert_gate else 0))

    def _moe_linear(self, experts: int) -> int:
        """Expert and shared-expert weights of one MoE layer with `experts` routed experts."""
        return experts * self._gated_mlp(self.moe_intermediate_size) + self._gated_mlp(
            self.shared_expert_intermediate_size
        )

    def _quantizable_params(self) -> int:
        """Linear weights inside the transformer layers: what `--quantization` compresses."""
        return (
            self.num_layers * self._attention_linear()
            + self.num_dense_layers * self._gated_mlp(self.intermediate_size)
            + self.num_moe_layers * self._moe_linear(self.num_experts)
        )

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Weights the final projection multiplies through (shared with the embedding if tied)."""
        return self.vocab_size * self.hidden_size

    # ---- public counts ----------------------------------------------------------------------
    def param_count(self) -> int:
        """Total stored parameters of the main model: embeddings, lm_head unless tied, every layer,
        final norm. MTP layers are not included (`mtp_param_count`)."""
        norms = self.num_layers * 2 * self.hidden_size + self.hidden_size
        return (
            self.embedding_params
            + (0 if self.tie_word_embeddings else self.lm_head_params)
            + self._quantizable_params()
            + self.num_layers * self._attention_extra()
            + self.num_dense_layers * self._dense_mlp_bias()
            + self.num_moe_layers * (self._router() + self.num_experts * self._expert_bias())
            + norms
        )

    def active_param_count(self, convention: str = "all") -> int:
        """Parameters one token touches: as `param_count`, but only the top-k routed experts.

        `convention` says what counts besides the layers (`ACTIVE_CONVENTIONS`): "all" counts the
        embedding and the lm_head, "no_input_embedding" leaves out the embedding lookup (a gather,
        not a GEMM), "no_embeddings" leaves out both. A tied matrix counts as the lm_head.
        """
        if convention not in ACTIVE_CONVENTIONS:
            raise ConfigError(f"active-parameter convention {convention!r} is not one of {', '.join(ACTIVE_CONVENTIONS)}")
        active = self.param_count()
        if self.is_moe:
            idle = self.num_experts - self.num_experts_per_tok
            active -= self.num_moe_layers * idle * (self._gated_mlp(self.moe_intermediate_size) + self._expert_bias())
        if convention != "all" and not self.tie_word_embeddings:
            active -= self.embedding_params
        if convention == "no_embeddings":
            active -= self.lm_head_params
        return active

    def mtp_param_count(self) -> int:
        """Parameters of the multi-token-prediction layers, apart from the main model.

        Each is laid out as DeepSeek-V3's and GLM-4.x's (vLLM `DeepSeekMTP`, `Glm4MoeMTP`): one
        decoder layer of the model's MoE shape (dense when the model has no experts), `eh_proj`
        (2 x hidden -> hidden), `enorm`, `hnorm` and the head's norm; the embedding and lm_head are
        the main model's.
        """
        if not self.num_mtp_layers:
            return 0
        h = self.hidden_size
        if self.is_moe:
            mlp = self._moe_linear(self.num_experts) + self._router() + self.num_experts * self._expert_bias()
        else:
            mlp = self._gated_mlp(self.intermediate_size) + self._dense_mlp_bias()
        layer = self._attention_linear() + self._attention_extra() + mlp + 2 * h
        return self.num_mtp_layers * (layer + 2 * h * h + 3 * h)

    def layer_linear_params_per_token(self) -> int:
        """Linear weights one token multiplies through inside the transformer layers (no lm_head)."""
        return (
            self.num_layers * self._attention_linear()
            + self.num_dense_layers * self._gated_mlp(self.intermediate_size)
            + self.num_moe_layers * (self._moe_linear(self.num_experts_per_tok) + self._router())
        )

    def linear_params_per_token(self) -> int:
        """Weights a token multiplies through: layers + lm_head (GEMM FLOPs = 2 x this per token).

        The embedding lookup is a gather, not a GEMM, so it is excluded; a tied lm_head still
        costs a full vocab x hidden GEMM. vLLM computes logits only for the positions it samples
        (one per sequence per step), so a cost model may charge `lm_head_params` per sequence
        and `layer_linear_params_per_token` per token instead.
        """
        return self.layer_linear_params_per_token() + self.lm_head_params

    def weight_bytes(self, weight_bytes_per_param: float) -> float:
        """Bytes of all weights when linear layers take `weight_bytes_per_param` bytes each.

        At 2 bytes or more (bf16, fp32) every tensor is stored at that width. Below 2 bytes only
        the transformer-layer linear weights shrink: vLLM's fp8/int8/AWQ/GPTQ paths leave the
        embedding, lm_head, norms, biases and MoE router in the checkpoint's bf16.
        """
        if weight_bytes_per_param <= 0:
            raise ConfigError(f"weight bytes per parameter {weight_bytes_per_param!r} must be > 0")
        total = self.param_count()
        if weight_bytes_per_param >= UNQUANTIZED_BYTES:
            return float(total * weight_bytes_per_param)
        quantized = self._quantizable_params()
        return quantized * weight_bytes_per_param + (total - quantized) * UNQUANTIZED_BYTES

    def kv_bytes_per_token(self, kv_dtype_bytes: float) -> float:
        """KV cache bytes one token occupies across all layers (before TP): K and V of every KV
        head for GQA; for MLA one latent of kv_lora_rank + qk_rope_head_dim per layer (what vLLM's
        MLA backends cache).

        A model with sliding-window layers (whose cache stops growing at the window, in blocks of
        its own under vLLM's hybrid KV manager) is refused with a ConfigError rather than sized as
        if every layer were full attention.
        """
        a = self.attention
        if a.has_sliding_window:
            raise ConfigError(
                f"{self.name}: the KV cache of its attention ({a.describe()}) is not modelled yet; "
                "full-attention GQA and MLA models are sized (see docs/models.md)")
        if a.is_mla:
            return float(self.num_layers * a.mla_latent_dim * kv_dtype_bytes)
        return float(self.num_layers * self.num_kv_heads * self.head_dim * 2 * kv_dtype_bytes)

    def attention_flops_per_pair(self) -> int:
        """FLOPs of QK^T plus PV for one (query, key) pair over all layers and query heads."""
        return 4 * self.num_layers * self.num_attention_heads * self.head_dim


# ---- parsing a config.json -------------------------------------------------------------------
class _Config:
    """Typed access to one config dict, with errors that name the key and the file."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def integer(self, key: str, default: int | None = None, minimum: int = 1) -> int:
        value = self.data.get(key)
        if value is None:
            if default is None:
                raise ConfigError(f"{self.source} is missing required key {key!r}; add it to the config")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{self.source}: {key} = {value!r}; expected an integer >= {minimum}")
        return value

    def number(self, key: str, low: float, high: float) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
            raise ConfigError(f"{self.source}: {key} = {value!r}; expected a number in ({low}, {high}]")
        return float(value)


def _moe_layer_count(cfg: _Config, num_layers: int) -> int:
    """How many layers use the expert MLP, following the HF/vLLM placement rules."""
    mlp_only = set(cfg.data.get("mlp_only_layers") or [])
    step = cfg.integer("decoder_sparse_step", 1)  # Qwen2/3-MoE: every step-th layer is sparse
    first_dense = cfg.integer("first_k_dense_replace", 0, minimum=0)  # DeepSeek, GLM: leading dense layers
    freq = cfg.integer("moe_layer_freq", 1)
    return sum(
        1
        for i in range(num_layers)
        if i not in mlp_only and (i + 1) % step == 0 and i >= first_dense and i % freq == 0
    )


def _check_architecture(data: dict[str, Any], source: str) -> None:
    archs = data.get("architectures")
    if archs is None:  # a bare config (tests, profiles): judged by its shapes alone
        return
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ConfigError(f"{source}: architectures = {archs!r}; expected a list of class names")
    if not SUPPORTED_ARCHITECTURES.intersection(archs):
        raise ConfigError(f"{source}: architecture {', '.join(archs) or '(none)'} is not modelled; "
                          f"supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}")


def _layer_types(cfg: _Config, layers: int) -> tuple[tuple[str, ...], int | None]:
    """Per-layer full/sliding pattern and window, from `layer_types` (gpt-oss, newer HF configs).

    Configs without `layer_types` are taken as full attention everywhere: Qwen's `sliding_window`
    is inert while `use_sliding_window` is false, as in every shipped config.
    """
    attn_types = cfg.data.get("attn_type_list")  # MiniMax: 1 = softmax attention, 0 = lightning (linear)
    if attn_types is not None and (not isinstance(attn_types, list) or any(t != 1 for t in attn_types)):
        raise ConfigError(f"{cfg.source}: attn_type_list has non-softmax (linear attention) layers; "
                          "only softmax attention is modelled")
    types = cfg.data.get("layer_types")
    if types is None:
        return (), None
    allowed = (FULL_ATTENTION, SLIDING_ATTENTION)
    if not isinstance(types, list) or len(types) != layers or any(t not in allowed for t in types):
        raise ConfigError(f"{cfg.source}: layer_types must list {layers} entries of {' or '.join(allowed)}")
    if SLIDING_ATTENTION not in types:
        return tuple(types), None
    return tuple(types), cfg.integer("sliding_window")


def _attention(cfg: _Config, model_type: str, heads: int, head_dim: int, layers: int) -> AttentionSpec:
    data = cfg.data
    layer_types, window = _layer_types(cfg, layers)
    if data.get("use_qk_norm") is not None and not isinstance(data["use_qk_norm"], bool):
        raise ConfigError(f"{cfg.source}: use_qk_norm = {data['use_qk_norm']!r}; expected true or false")
    if model_type in _QK_NORM_TYPES or data.get("use_qk_norm"):
        qk_norm = "per_layer" if data.get("qk_norm_type") == "per_layer" else "per_head"
    else:
        qk_norm = "none"
    common = {"layer_types": layer_types, "sliding_window": window, "sinks": model_type == "gpt_oss",
              "qk_norm": qk_norm}
    if cfg.has("kv_lora_rank"):
        rope = cfg.integer("qk_rope_head_dim")
        return AttentionSpec(
            kind=MLA, q_lora_rank=cfg.integer("q_lora_rank") if cfg.has("q_lora_rank") else 0,
            kv_lora_rank=cfg.integer("kv_lora_rank"), qk_nope_head_dim=cfg.integer("qk_nope_head_dim"),
            qk_rope_head_dim=rope, v_head_dim=cfg.integer("v_head_dim"), rotary_dim=rope, **common)
    rotary = cfg.integer("rotary_dim") if cfg.has("rotary_dim") else None  # MiniMax
    factor = cfg.number("partial_rotary_factor", 0.0, 1.0)  # GLM-4.x
    if rotary is None and factor is not None:
        rotary = round(head_dim * factor)
    if rotary is not None and rotary > head_dim:
        raise ConfigError(f"{cfg.source}: rotary_dim {rotary} exceeds head_dim {head_dim}")
    return AttentionSpec(kind=GQA, rotary_dim=None if rotary == head_dim else rotary, **common)


def _quantization(data: dict[str, Any], source: str) -> tuple[str | None, str]:
    """quant_method and a short format of a checkpoint's quantization_config (bytes come later)."""
    qc = data.get("quantization_config")
    if qc is None:
        return None, ""
    if not isinstance(qc, dict) or not isinstance(qc.get("quant_method"), str):
        raise ConfigError(f"{source}: quantization_config must be an object with a quant_method string")
    method = qc["quant_method"]
    parts: list[str] = []
    if isinstance(qc.get("fmt"), str):
        parts.append(qc["fmt"])
    block = qc.get("weight_block_size")
    if isinstance(block, list) and len(block) == 2:
        parts.append(f"{block[0]}x{block[1]} blocks")
    if isinstance(qc.get("scale_fmt"), str):
        parts.append(f"{qc['scale_fmt']} scales")
    for group in (qc.get("config_groups") or {}).values():  # compressed-tensors
        weights = group.get("weights") if isinstance(group, dict) else None
        if isinstance(weights, dict):
            parts.append(f"{weights.get('type', '')}{weights.get('num_bits', '')} weights"
                         + (f", group {weights['group_size']}" if weights.get("group_size") else ""))
    if isinstance(qc.get("format"), str):
        parts.append(qc["format"])
    return method, ", ".join(parts) or method


def _meta(data: dict[str, Any], source: str) -> dict[str, Any]:
    meta = data.get("_rllmsim") or {}
    if not isinstance(meta, dict):
        raise ConfigError(f"{source}: _rllmsim must be an object with hf_id/published_params_b/reasoning")
    for key in ("published_params_b", "published_active_params_b", "published_mtp_params_b"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ConfigError(f"{source}: _rllmsim.{key} = {value!r}; expected a positive number of billions")
    convention = meta.get("active_convention", "all")
    if convention not in ACTIVE_CONVENTIONS:
        raise ConfigError(f"{source}: _rllmsim.active_convention = {convention!r}; "
                          f"expected one of {', '.join(ACTIVE_CONVENTIONS)}")
    return meta


def _spec_from_config(data: dict[str, Any], source: str, name: str) -> ModelSpec:
    meta = _meta(data, source)
    if data.get("num_hidden_layers") is None and isinstance(data.get("text_config"), dict):
        data = {**data["text_config"], "_name_or_path": data.get("_name_or_path")}
    _check_architecture(data, source)
    cfg = _Config(data, source)
    model_type = str(data.get("model_type") or "unknown")
    layers = cfg.integer("num_hidden_layers")
    hidden = cfg.integer("hidden_size")
    heads = cfg.integer("num_attention_heads")
    kv_heads = cfg.integer("num_key_value_heads", heads)
    if cfg.has("kv_lora_rank"):  # MLA: the q/k head is the no-rope part plus the rotary part
        head_dim = cfg.integer("qk_nope_head_dim") + cfg.integer("qk_rope_head_dim")
    elif cfg.has("head_dim"):
        head_dim = cfg.integer("head_dim")
    elif hidden % heads:
        raise ConfigError(f"{source}: hidden_size {hidden} is not divisible by num_attention_heads {heads}; add head_dim")
    else:
        head_dim = hidden // heads
    if heads % kv_heads:
        raise ConfigError(f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    attention = _attention(cfg, model_type, heads, head_dim, layers)

    experts = 0
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if cfg.has(key):
            experts = cfg.integer(key, minimum=0)
            break
    moe_layers = _moe_layer_count(cfg, layers) if experts else 0
    top_k = cfg.integer("num_experts_per_tok") if experts else 0
    if top_k > experts:
        raise ConfigError(f"{source}: num_experts_per_tok {top_k} exceeds the {experts} experts")
    inter = cfg.integer("intermediate_size", None if moe_layers < layers else 0, minimum=0)
    moe_inter = cfg.integer("moe_intermediate_size", inter or None) if experts else 0
    shared_experts = shared_inter = 0
    if experts and cfg.has("n_shared_experts"):  # DeepSeek, GLM: n copies of the expert width
        shared_experts = cfg.integer("n_shared_experts", minimum=0)
        shared_inter = shared_experts * moe_inter
    elif experts and cfg.has("shared_expert_intermediate_size"):  # Qwen2-MoE: one wide expert
        shared_inter = cfg.integer("shared_expert_intermediate_size", minimum=0)
        shared_experts = 1 if shared_inter else 0

    if "attention_bias" in data:  # Llama/Qwen3/Mistral/gpt-oss: one flag for q, k, v and o
        qkv_bias = bool(data["attention_bias"])
        o_bias = qkv_bias and model_type not in _NO_O_BIAS_TYPES
    else:
        qkv_bias, o_bias = model_type in _QKV_BIAS_TYPES, False
    if attention.is_mla and qkv_bias:
        raise ConfigError(f"{source}: MLA attention with attention_bias is not modelled")
    router_bias = bool(experts) and (data.get("topk_method") == "noaux_tc" or data.get("use_routing_bias") is True
                                     or model_type in _ROUTER_BIAS_TYPES)
    mtp = cfg.integer("num_nextn_predict_layers", 0, minimum=0)  # DeepSeek-V3, GLM-4.x
    if not mtp and data.get("use_mtp") is True:  # MiniMax-M2: modules of mtp_transformer_layers each
        mtp = cfg.integer("num_mtp_modules", 0, minimum=0) * cfg.integer("mtp_transformer_layers", 1)
    quant_method, quant_format = _quantization(data, source)

    published = meta.get("published_params_b")
    active = meta.get("published_active_params_b")
    mtp_published = meta.get("published_mtp_params_b")
    return ModelSpec(
        name=name,
        hf_id=str(meta.get("hf_id") or data.get("_name_or_path") or name),
        model_type=model_type,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=cfg.integer("vocab_size"),
        max_position_embeddings=cfg.integer("max_position_embeddings"),
        torch_dtype=str(data.get("torch_dtype") or data.get("dtype") or "bfloat16"),
        tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
        attention=attention,
        attention_bias=qkv_bias,
        o_proj_bias=o_bias,
        mlp_bias=bool(data.get("mlp_bias", False)),
        qk_norm=attention.qk_norm != "none",
        num_experts=experts,
        num_experts_per_tok=top_k,
        moe_intermediate_size=moe_inter,
        num_moe_layers=moe_layers,
        num_shared_experts=shared_experts,
        shared_expert_intermediate_size=shared_inter,
        shared_expert_gate=bool(shared_inter) and model_type == "qwen2_moe",
        router_bias=router_bias,
        expert_bias=bool(experts) and model_type == "gpt_oss",
        num_mtp_layers=mtp,
        checkpoint_quantization=quant_method,
        checkpoint_quantization_format=quant_format,
        reasoning=bool(meta.get("reasoning", False)),
        published_params_b=None if published is None else float(published),
        published_active_params_b=None if active is None else float(active),
        published_active_convention=str(meta.get("active_convention", "all")),
        published_mtp_params_b=None if mtp_published is None else float(mtp_published),
        published_source=str(meta.get("source") or ""),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read model config {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model config {path} is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"model config {path} must hold a JSON object, like a Hugging Face config.json")
    return data


# ---- the shipped catalog ---------------------------------------------------------------------
def _compact(name: str) -> str:
    """Lookup form of a model name: lowercase alphanumerics only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


@lru_cache(maxsize=1)
def _catalog() -> dict[str, dict[str, Any]]:
    """Raw config dicts of the shipped models, by catalog key (file name without .json)."""
    folder = resources.files("rllmsim.specs").joinpath("models")
    out: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            out[entry.name[: -len(".json")]] = json.loads(entry.read_text(encoding="utf-8"))
    return out


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    """Catalog key by the compact form of every key, HF id and HF id basename."""
    index: dict[str, str] = {}
    for key, data in _catalog().items():
        hf_id = str((data.get("_rllmsim") or {}).get("hf_id") or key)
        for label in {key, hf_id, hf_id.rsplit("/", 1)[-1]}:
            compact = _compact(label)
            if index.get(compact, key) != key:
                raise ConfigError(f"model catalog name {label!r} is claimed by {index[compact]!r} and {key!r}")
            index[compact] = key
    return index


@lru_cache(maxsize=None)
def _load_catalog_entry(key: str) -> ModelSpec:
    return _spec_from_config(_catalog()[key], f"catalog model {key!r}", key)


def model_names() -> list[str]:
    """Catalog keys of every shipped model, sorted."""
    return sorted(_catalog())


def _load_path(path: Path) -> ModelSpec:
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"model directory {path} has no config.json; point at the file or the HF snapshot folder")
    name = file.parent.name if file.name == "config.json" else file.stem
    return _spec_from_config(_read_json(file), str(file), name or "model")


def load_model(name_or_path: str | os.PathLike[str]) -> ModelSpec:
    """A model by catalog key, Hugging Face id, or path to a config.json (or a folder holding one).

    An existing path wins over a catalog name, as in `transformers.from_pretrained`.
    """
    text = os.fspath(name_or_path).strip()
    path = Path(text).expanduser()
    if text and path.exists():
        return _load_path(path)
    key = _index().get(_compact(text))
    if key is not None:
        return _load_catalog_entry(key)
    names = model_names()
    candidates = {n: n for n in names}
    candidates.update({str((d.get("_rllmsim") or {}).get("hf_id", k)).lower(): k for k, d in _catalog().items()})
    close = difflib.get_close_matches(text.lower(), list(candidates), n=3, cutoff=0.5)
    close_keys = list(dict.fromkeys(candidates[c] for c in close))
    hint = f"did you mean {', '.join(close_keys)}? " if close_keys else f"known models: {', '.join(names)}; "
    raise ConfigError(
        f"unknown model {text!r}: not a catalog name, Hugging Face id or existing path; "
        f"{hint}a path to a config.json (or a folder containing one) also works"
    )


def model_from_config(config: dict[str, Any], name: str) -> ModelSpec:
    """A model from an HF config dict already in hand (a profile's metadata carries one)."""
    return _spec_from_config(config, f"config of {name}", name)
