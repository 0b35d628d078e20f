"""What a model is, read from its Hugging Face `config.json`: shapes, parameter counts, KV size.

The catalog (`models/*.json`) ships the published configs verbatim plus one `_rllmsim` block
(HF id, the parameter count the model card publishes, whether it is a reasoning model), so the
same parser reads a catalog entry and a user's own `config.json`. Parameter counts are derived
from the shapes, not copied, and the tests hold them within 2% of the published size: that is
what keeps weight memory, KV capacity and GEMM FLOPs honest for any config a user brings.

Supported: decoder-only transformers with GQA attention and gated (SwiGLU) MLPs - Llama, Qwen2,
Qwen3, Mistral and their MoE variants (Qwen2-MoE/Qwen3-MoE/Mixtral-style experts, shared experts).
MLA attention (DeepSeek-V2/V3) is refused rather than mis-sized. Sliding-window layers are sized
as full attention (an upper bound on KV).
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

# Architectures whose config has no `attention_bias` key but whose q/k/v projections carry one.
_QKV_BIAS_TYPES = frozenset({"qwen2", "qwen2_moe"})
# Architectures with a per-head RMSNorm on q and k (weights of head_dim each).
_QK_NORM_TYPES = frozenset({"qwen3", "qwen3_moe"})
# Bytes per parameter of the parts vLLM never quantizes (embeddings, lm_head, norms, biases,
# MoE router): the checkpoint's bf16.
UNQUANTIZED_BYTES = 2.0


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of one decoder-only model, plus the counts a cost model needs.

    Counts are for the whole model, before any tensor-parallel split.
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
    attention_bias: bool = False  # q/k/v projections carry a bias (Qwen2)
    o_proj_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # Qwen3's per-head q_norm / k_norm
    num_experts: int = 0  # routed experts per MoE layer; 0 for a dense model
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    num_moe_layers: int = 0  # layers whose MLP is the expert block; the rest are dense
    num_shared_experts: int = 0
    shared_expert_intermediate_size: int = 0  # total width of the always-on shared expert(s)
    shared_expert_gate: bool = False  # Qwen2-MoE's sigmoid gate on the shared expert
    reasoning: bool = False
    published_params_b: float | None = None
    published_active_params_b: float | None = None

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

    def _attention_linear(self) -> int:
        """q, k, v, o projection weights of one layer."""
        h = self.hidden_size
        return h * self.q_size + 2 * h * self.kv_size + self.q_size * h

    def _attention_extra(self) -> int:
        """Biases and q/k norms of one layer's attention."""
        extra = (self.q_size + 2 * self.kv_size) if self.attention_bias else 0
        extra += self.hidden_size if self.o_proj_bias else 0
        extra += 2 * self.head_dim if self.qk_norm else 0
        return extra

    def _gated_mlp(self, width: int) -> int:
        """gate, up and down projection weights of a SwiGLU MLP of the given width."""
        return 3 * self.hidden_size * width

    def _dense_mlp_bias(self) -> int:
        return (2 * self.intermediate_size + self.hidden_size) if self.mlp_bias else 0

    def _router(self) -> int:
        """Router (and shared-expert gate) weights of one MoE layer; vLLM keeps them bf16."""
        return self.hidden_size * self.num_experts + (self.hidden_size if self.shared_expert_gate else 0)

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
        """Total stored parameters: embeddings, lm_head unless tied, every layer, final norm."""
        norms = self.num_layers * 2 * self.hidden_size + self.hidden_size
        per_layer_extra = self._attention_extra()
        return (
            self.embedding_params
            + (0 if self.tie_word_embeddings else self.lm_head_params)
            + self._quantizable_params()
            + self.num_layers * per_layer_extra
            + self.num_dense_layers * self._dense_mlp_bias()
            + self.num_moe_layers * self._router()
            + norms
        )

    def active_param_count(self) -> int:
        """Parameters one token touches: as `param_count`, but only the top-k routed experts."""
        if not self.is_moe:
            return self.param_count()
        idle = self.num_experts - self.num_experts_per_tok
        return self.param_count() - self.num_moe_layers * idle * self._gated_mlp(self.moe_intermediate_size)

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
        """K and V cache bytes one token occupies across all layers and KV heads (before TP)."""
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


def _moe_layer_count(cfg: _Config, num_layers: int) -> int:
    """How many layers use the expert MLP, following the HF/vLLM placement rules."""
    mlp_only = set(cfg.data.get("mlp_only_layers") or [])
    step = cfg.integer("decoder_sparse_step", 1)  # Qwen2/3-MoE: every step-th layer is sparse
    first_dense = cfg.integer("first_k_dense_replace", 0, minimum=0)  # DeepSeek: leading dense layers
    freq = cfg.integer("moe_layer_freq", 1)
    return sum(
        1
        for i in range(num_layers)
        if i not in mlp_only and (i + 1) % step == 0 and i >= first_dense and i % freq == 0
    )


def _spec_from_config(data: dict[str, Any], source: str, name: str) -> ModelSpec:
    meta = data.get("_rllmsim") or {}
    if not isinstance(meta, dict):
        raise ConfigError(f"{source}: _rllmsim must be an object with hf_id/published_params_b/reasoning")
    if data.get("num_hidden_layers") is None and isinstance(data.get("text_config"), dict):
        data = {**data["text_config"], "_name_or_path": data.get("_name_or_path")}
    if data.get("kv_lora_rank"):
        raise ConfigError(f"{source}: MLA attention (kv_lora_rank, DeepSeek-V2/V3) is not modelled; use a GQA model")
    cfg = _Config(data, source)
    model_type = str(data.get("model_type") or "unknown")
    layers = cfg.integer("num_hidden_layers")
    hidden = cfg.integer("hidden_size")
    heads = cfg.integer("num_attention_heads")
    kv_heads = cfg.integer("num_key_value_heads", heads)
    if cfg.has("head_dim"):
        head_dim = cfg.integer("head_dim")
    elif hidden % heads:
        raise ConfigError(f"{source}: hidden_size {hidden} is not divisible by num_attention_heads {heads}; add head_dim")
    else:
        head_dim = hidden // heads
    if heads % kv_heads:
        raise ConfigError(f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")

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
    if experts and cfg.has("n_shared_experts"):  # DeepSeek: n copies of the expert width
        shared_experts = cfg.integer("n_shared_experts", minimum=0)
        shared_inter = shared_experts * moe_inter
    elif experts and cfg.has("shared_expert_intermediate_size"):  # Qwen2-MoE: one wide expert
        shared_inter = cfg.integer("shared_expert_intermediate_size", minimum=0)
        shared_experts = 1 if shared_inter else 0

    if "attention_bias" in data:  # Llama/Qwen3/Mistral: one flag for q, k, v and o
        qkv_bias = o_bias = bool(data["attention_bias"])
    else:
        qkv_bias, o_bias = model_type in _QKV_BIAS_TYPES, False

    published = meta.get("published_params_b")
    active = meta.get("published_active_params_b")
    for key, value in (("published_params_b", published), ("published_active_params_b", active)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ConfigError(f"{source}: _rllmsim.{key} = {value!r}; expected a positive number of billions")
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
        attention_bias=qkv_bias,
        o_proj_bias=o_bias,
        mlp_bias=bool(data.get("mlp_bias", False)),
        qk_norm=model_type in _QK_NORM_TYPES,
        num_experts=experts,
        num_experts_per_tok=top_k,
        moe_intermediate_size=moe_inter,
        num_moe_layers=moe_layers,
        num_shared_experts=shared_experts,
        shared_expert_intermediate_size=shared_inter,
        shared_expert_gate=bool(shared_inter) and model_type == "qwen2_moe",
        reasoning=bool(meta.get("reasoning", False)),
        published_params_b=None if published is None else float(published),
        published_active_params_b=None if active is None else float(active),
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
