"""What a model is: shapes, parameter counts and KV size of one decoder-only model.

`ModelSpec` is read from a Hugging Face `config.json` by `rllmsim.specs.model_catalog`, which also
holds the shipped catalog. Parameter counts are derived from the shapes, not copied, and the tests
hold them within 2% of the published sizes: that is what keeps weight memory, KV capacity and GEMM
FLOPs honest for any config a user brings. `rllmsim.specs.attention` describes each model's
attention (GQA or MLA, sliding windows, sinks); MLA caches its latent, and sliding-window layers
share the block pool as vLLM's hybrid KV manager lays it out (`rllmsim.engine.kv_layout`). See
docs/models.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from rllmsim.errors import ConfigError
from rllmsim.specs.attention import AttentionSpec

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

    def routed_expert_params(self) -> int:
        """Weights of the routed experts over all MoE layers (gate, up and down; no biases)."""
        return self.num_moe_layers * self.num_experts * self._gated_mlp(self.moe_intermediate_size)

    def weight_bytes(self, weight_bytes_per_param: float, scope: str = "linear") -> float:
        """Bytes of all weights when the quantized linear weights take `weight_bytes_per_param` bytes each.

        At 2 bytes or more (bf16, fp32) every tensor is stored at that width. Below 2 bytes only
        the quantized weights shrink: with scope "linear" every linear weight inside the layers
        (vLLM's fp8/int8/AWQ/GPTQ paths leave the embedding, lm_head, norms, biases and MoE router
        in the checkpoint's bf16; NVFP4 likewise); with scope "experts" only the routed experts (MXFP4
        checkpoints and Kimi-K2-Thinking's int4 one, whose attention and shared experts stay bf16 too).
        """
        if weight_bytes_per_param <= 0:
            raise ConfigError(f"weight bytes per parameter {weight_bytes_per_param!r} must be > 0")
        if scope not in ("linear", "experts"):
            raise ConfigError(f"weight quantization scope {scope!r} must be 'linear' or 'experts'")
        total = self.param_count()
        if weight_bytes_per_param >= UNQUANTIZED_BYTES:
            return float(total * weight_bytes_per_param)
        quantized = self._quantizable_params() if scope == "linear" else self.routed_expert_params()
        return quantized * weight_bytes_per_param + (total - quantized) * UNQUANTIZED_BYTES

    def kv_bytes_per_token(self, kv_dtype_bytes: float) -> float:
        """KV cache bytes one token occupies across all layers (before TP), as if every layer kept
        every token: K and V of every KV head for GQA; for MLA one latent of kv_lora_rank +
        qk_rope_head_dim per layer (what vLLM's MLA backends cache). Sliding-window layers keep
        only their window; how that shares the pool is `rllmsim.engine.kv_layout`'s business.
        """
        a = self.attention
        if a.is_mla:
            return float(self.num_layers * a.mla_latent_dim * kv_dtype_bytes)
        return float(self.num_layers * self.num_kv_heads * self.head_dim * 2 * kv_dtype_bytes)

    def attention_flops_per_pair(self) -> int:
        """FLOPs of QK^T plus PV for one (query, key) pair over all layers and query heads."""
        return 4 * self.num_layers * self.num_attention_heads * self.head_dim
