"""The attention a model uses, read from its `config.json`: what a KV-cache model needs to know.

Two kinds:

- ``"gqa"``: multi-head / grouped-query attention. Each layer caches K and V of
  ``num_key_value_heads`` heads of ``head_dim`` (Llama, Qwen, Mistral, gpt-oss, MiniMax-M2, GLM-4.x).
- ``"mla"``: DeepSeek-V2/V3 multi-head latent attention (DeepSeek-R1/V3.1, Kimi-K2). Queries go
  through a low-rank ``q_a_proj`` (``q_lora_rank``) and ``q_b_proj``; keys and values share one
  compressed latent of ``kv_lora_rank`` plus one decoupled rotary key of ``qk_rope_head_dim``
  (``kv_a_proj_with_mqa``), expanded per head by ``kv_b_proj`` into ``qk_nope_head_dim`` key and
  ``v_head_dim`` value dimensions. What a layer caches per token is the latent and the rotary key.

Either kind may mix full-attention and sliding-window layers (``layer_types``, gpt-oss: every other
layer attends to the last ``sliding_window`` tokens) and carry per-head attention sinks (gpt-oss:
one learned logit per head). This module describes; it sizes nothing (`ModelSpec` counts
parameters, and the KV accounting of MLA and sliding windows is not modelled yet).
"""

from __future__ import annotations

from dataclasses import dataclass

GQA = "gqa"
MLA = "mla"
FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"
#: How q and k are normalized before RoPE: not at all, per head (Qwen3, GLM-4.x: `head_dim`
#: weights each), or over the whole projection of the layer (MiniMax-M2: `q_size`/`kv_size` weights).
QK_NORMS = ("none", "per_head", "per_layer")


@dataclass(frozen=True)
class AttentionSpec:
    """Kind and layout of a model's attention; head counts and `head_dim` live on `ModelSpec`."""

    kind: str = GQA
    # ---- MLA (kind == "mla"); zero for GQA ----
    q_lora_rank: int = 0  # 0: queries use one full-rank q_proj (DeepSeek-V2-Lite)
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # ---- layer pattern ----
    layer_types: tuple[str, ...] = ()  # one of FULL_ATTENTION / SLIDING_ATTENTION per layer; () = all full
    sliding_window: int | None = None  # tokens a sliding layer attends to (set only when a layer slides)
    sinks: bool = False  # gpt-oss: one learned sink logit per query head per layer
    # ---- q/k details ----
    rotary_dim: int | None = None  # rotated dimensions per head when RoPE is partial; None = all
    qk_norm: str = "none"

    @property
    def is_mla(self) -> bool:
        return self.kind == MLA

    @property
    def num_sliding_layers(self) -> int:
        return sum(t == SLIDING_ATTENTION for t in self.layer_types)

    @property
    def has_sliding_window(self) -> bool:
        return self.num_sliding_layers > 0

    def is_sliding(self, layer: int) -> bool:
        """Whether layer `layer` (0-based) attends only to the last `sliding_window` tokens."""
        return bool(self.layer_types) and self.layer_types[layer] == SLIDING_ATTENTION

    @property
    def mla_latent_dim(self) -> int:
        """Elements an MLA layer keeps per token: the k/v latent plus the shared rotary key."""
        return self.kv_lora_rank + self.qk_rope_head_dim if self.is_mla else 0

    def describe(self) -> str:
        """One line for messages and docs, e.g. 'mla (kv_lora_rank 512, qk_rope_head_dim 64)'."""
        if self.is_mla:
            text = (f"mla (q_lora_rank {self.q_lora_rank or 'none'}, kv_lora_rank {self.kv_lora_rank}, "
                    f"qk_nope/rope/v head dims {self.qk_nope_head_dim}/{self.qk_rope_head_dim}/{self.v_head_dim})")
        else:
            text = "gqa"
        if self.has_sliding_window:
            text += (f", {self.num_sliding_layers} of {len(self.layer_types)} layers sliding over "
                     f"{self.sliding_window} tokens")
        return text + (", attention sinks" if self.sinks else "")
