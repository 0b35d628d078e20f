"""The model catalog and the `config.json` parser: from a Hugging Face config to a `ModelSpec`.

The catalog (`models/*.json`) ships the published configs (facts only: every shape, attention, MoE,
rope and quantization field as published) plus one `_rllmsim` block (HF id, the parameter counts the
model card publishes and where they come from, whether it is a reasoning model), so the same parser
reads a catalog entry and a user's own `config.json`.

Supported architectures (`SUPPORTED_ARCHITECTURES`): decoder-only transformers with gated (SwiGLU)
MLPs and dense or mixture-of-experts layers - Llama, Mistral, Mixtral, Qwen2/Qwen3 (dense and MoE),
DeepSeek-V3 (MLA attention, dense-first layers, shared experts, MTP layers: DeepSeek-R1/V3.1,
Kimi-K2), gpt-oss (sliding-window layers, attention sinks, biased experts), MiniMax-M2 and GLM-4.x
MoE. See docs/models.md.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from rllmsim.errors import ConfigError
from rllmsim.specs.attention import FULL_ATTENTION, GQA, MLA, SLIDING_ATTENTION, AttentionSpec
from rllmsim.specs.models import ACTIVE_CONVENTIONS, ModelSpec

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
    window, context = cfg.integer("sliding_window"), cfg.integer("max_position_embeddings")
    if window > context:  # such a layer attends to every token: the config is inconsistent, not hybrid
        raise ConfigError(f"{cfg.source}: sliding_window {window} is larger than max_position_embeddings "
                          f"{context}; set sliding_window <= {context}, or mark those layers full_attention")
    return tuple(types), window


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


def config_source(name: str) -> str:
    """Where a shipped model's config.json was copied from: the `_rllmsim.config_source` it
    records, else the Hugging Face repository of its hf_id (the catalog's default origin)."""
    meta = _catalog()[name].get("_rllmsim", {})
    return str(meta.get("config_source") or f"huggingface.co/{meta.get('hf_id', name)} config.json")


def model_names() -> list[str]:
    """Catalog keys of every shipped model, sorted."""
    return sorted(_catalog())


def _load_path(path: Path) -> ModelSpec:
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"model directory {path} has no config.json; point at the file or the HF snapshot folder")
    name = file.parent.name if file.name == "config.json" else file.stem
    try:
        return _spec_from_config(_read_json(file), str(file), name or "model")
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as err:  # a field of the wrong shape
        raise ConfigError(f"model config {file}: a field has the wrong type or shape ({err}); "
                          "compare it with the model's Hugging Face config.json") from None


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
