"""Per-op time curves of one deployment, read from its GPU's kernel tables.

Two sources, tried in this order:
- a layer profile of exactly this model at this TP on this GPU (LLMServingSim's format): its
  measured projections, attention, lm_head and sampler are used as they are;
- the GPU's kernel database (aiconfigurator's format): GEMMs looked up at each projection's
  (n, k), attention by heads, KV heads and head_dim, the fused MoE by its shape.
What neither covers falls back to shape arithmetic at the GPU's measured bandwidth (elementwise
kernels, the sampler) and is counted as extrapolated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rllmsim.cost.kernels.attention import PrefillFromEmpty, SlidingAttention, attention_rows, sliding_from_database
from rllmsim.cost.kernels.lookup import Curve, Grid, MixedGrid
from rllmsim.cost.kernels.mla import MlaPrefill, mla_from_database
from rllmsim.cost.kernels.ops import LayerShapes
from rllmsim.cost.kernels.tables import KernelTables, LayerProfile
from rllmsim.errors import ConfigError
from rllmsim.specs import ModelSpec

#: Share of HBM bandwidth that elementwise kernels reach, and the shortest such kernel (us):
#: used only where no layer profile measured them.
ELEMENTWISE_EFFICIENCY = 0.6
ELEMENTWISE_FLOOR_US = 2.5
#: Sampler traffic: fp32 logits read a few times (temperature, top-p/k, argmax) per sequence.
SAMPLER_PASSES = 4


@dataclass
class OpTimes:
    """Microseconds of each op for every token count 0..T (token ops, summed over layers) and
    every sequence count 0..S (per-sequence ops), with masks of where a value was extrapolated;
    attention as grids per layer."""

    token_ops: dict[str, np.ndarray] = field(default_factory=dict)
    token_outside: dict[str, np.ndarray] = field(default_factory=dict)
    seq_ops: dict[str, np.ndarray] = field(default_factory=dict)
    seq_outside: dict[str, np.ndarray] = field(default_factory=dict)
    decode_attention: Grid | None = None  # rows: decoding sequences, cols: context per sequence
    prefill_attention: "Grid | PrefillFromEmpty | MlaPrefill | None" = None  # (chunk, context after it)
    sliding: SlidingAttention | None = None  # sliding-window layers; the grids above time the others
    mixed_attention: MixedGrid | None = None  # one chunk and decodes in one call, where measured
    attention_exact_shape: bool = True
    sources: dict[str, str] = field(default_factory=dict)


def _gemm_curve(tables: KernelTables, dtype: str, n: int, k: int) -> tuple[Curve, bool]:
    """Time against M of one (n, k) projection."""
    return tables.gemm_grid(dtype).curve(n, k)


def _scaled_grid(rows: pd.DataFrame, row: str, col: str, scale: float) -> Grid:
    return Grid.from_points(rows[row].to_numpy(), rows[col].to_numpy(), rows["latency_us"].to_numpy() * scale)


def _elementwise(shapes: LayerShapes, tokens: np.ndarray, bandwidth_gbps: float) -> np.ndarray:
    bytes_per_us = bandwidth_gbps * 1e3 * ELEMENTWISE_EFFICIENCY
    per_layer = shapes.elementwise_kernels * ELEMENTWISE_FLOOR_US + shapes.elementwise_bytes_per_token * tokens / bytes_per_us
    return shapes.layers * per_layer


def _sampler(vocab: int, seqs: np.ndarray, bandwidth_gbps: float) -> np.ndarray:
    bytes_per_us = bandwidth_gbps * 1e3 * ELEMENTWISE_EFFICIENCY
    return np.where(seqs > 0, ELEMENTWISE_FLOOR_US * SAMPLER_PASSES + SAMPLER_PASSES * 4 * vocab * seqs / bytes_per_us, 0.0)


def from_database(tables: KernelTables, shapes: LayerShapes, dtype: str, kv_dtype: str, model: ModelSpec,
                  bandwidth_gbps: float, tokens: np.ndarray, seqs: np.ndarray, lm_head_dtype: str | None = None) -> OpTimes:
    """Op times from an aiconfigurator-style kernel database; the lm_head runs `lm_head_dtype`
    GEMMs where the checkpoint keeps it apart from the layers' dtype (None: the layers' dtype)."""
    vocab = model.vocab_size
    out = OpTimes()
    gemm = tables.table("gemm")
    measured = set(gemm["dtype"].unique().tolist()) if gemm is not None else set()
    if dtype not in measured:
        have = sorted(measured)
        raise ConfigError(f"kernel tables of {tables.meta.get('device', 'this GPU')} have no {dtype} GEMMs "
                          f"(measured: {', '.join(have) or 'none'}); use --cost-model roofline")
    for op in shapes.gemms:
        curve, outside = _gemm_curve(tables, dtype, op.n, op.k)
        out.token_ops[op.name] = op.layers * curve(tokens) * (tokens > 0)
        out.token_outside[op.name] = curve.outside(tokens) | outside
    if dtype in ("fp8", "fp8_block"):  # block-scaled inputs: the same two kernels, per 128-wide group
        _add_activation_quant(out, tables, shapes, tokens)
    lm_curve, lm_outside = _gemm_curve(tables, lm_head_dtype or dtype, shapes.lm_head.n, shapes.lm_head.k)
    out.seq_ops["lm_head"] = lm_curve(seqs) * (seqs > 0)
    out.seq_outside["lm_head"] = lm_curve.outside(seqs) | lm_outside
    out.seq_ops["sampler"] = _sampler(vocab, seqs, bandwidth_gbps)
    out.seq_outside["sampler"] = np.ones(len(seqs), dtype=bool)
    out.token_ops["elementwise"] = _elementwise(shapes, tokens, bandwidth_gbps) * (tokens > 0)
    out.token_outside["elementwise"] = np.ones(len(tokens), dtype=bool)
    out.sources = {"linear": "kernel database", "attention": "kernel database"}
    if shapes.mla:
        out.decode_attention, out.prefill_attention = mla_from_database(tables, model, shapes.heads, dtype, kv_dtype)
        out.sources["attention"] = "MLA module tables (projections, norms, rotary and attention of each layer)"
        return out
    gen, ctx = tables.table("generation_attention"), tables.table("context_attention")
    if gen is None or ctx is None:
        raise ConfigError("kernel tables lack generation or context attention; use --cost-model roofline")
    shape = (shapes.heads, shapes.kv_heads, shapes.head_dim, kv_dtype)
    rows, scale, exact_gen = attention_rows(gen, *shape, "context")
    out.decode_attention = _scaled_grid(rows, "batch", "context", scale)
    rows, scale, exact_ctx = attention_rows(ctx, *shape, "isl")
    rows = rows[rows["batch"] == rows["batch"].min()]
    out.prefill_attention = PrefillFromEmpty(Curve.from_points(rows["isl"].to_numpy(),
                                                               rows["latency_us"].to_numpy() * scale))
    out.attention_exact_shape = exact_gen and exact_ctx
    if shapes.sliding_layers:
        out.sliding = sliding_from_database(gen, ctx, *shape, shapes.sliding_layers, shapes.sliding_window)
        out.attention_exact_shape = out.attention_exact_shape and out.sliding.exact_shape
        out.sources["sliding_attention"] = (f"{shapes.sliding_window}-token window rows" if not out.sliding.capped
                                            else f"full-attention rows capped at the {shapes.sliding_window}-token window")
    return out


def _add_activation_quant(out: OpTimes, tables: KernelTables, shapes: LayerShapes, tokens: np.ndarray) -> None:
    """FP8 (W8A8) linears quantize their input activations with a dynamic scale before each GEMM:
    two kernels per projection input (compute the scale, quantize), measured by input width."""
    quant = tables.table("activation_quant")
    if quant is None:
        return
    total = np.zeros(len(tokens))
    outside = np.zeros(len(tokens), dtype=bool)
    for kind in ("quantize", "dynamic_scale"):
        rows = quant[quant["kind"] == kind]
        if rows.empty:
            continue
        grid = Grid.from_points(rows["k"].to_numpy(), rows["m"].to_numpy(), rows["latency_us"].to_numpy())
        for op in shapes.gemms:
            total += op.layers * grid.at_row(float(op.k), np.maximum(tokens, 1)) * (tokens > 0)
            outside |= grid.outside(float(op.k), np.maximum(tokens, 1))
    out.token_ops["activation_quant"] = total
    out.token_outside["activation_quant"] = outside
    out.sources["activation_quant"] = "dynamic fp8 activation quantization table"


def from_layer_profile(profile: LayerProfile, shapes: LayerShapes, tokens: np.ndarray, seqs: np.ndarray) -> OpTimes:
    """Op times from a layer profile of exactly this model and TP degree."""
    out = OpTimes()
    linear = profile.tables["linear"]
    per_layer_ops = {"qkv_proj": 1, "o_proj": 1, "gate_up_proj": 1, "down_proj": 1, "act_fn": 1,
                     "layernorm": 2, "qk_norm": 1, "rotary_emb": 1}
    once_ops = {"embedding": 1, "final_layernorm": 1}
    for name, rows in linear.groupby("op"):
        curve = Curve.from_points(rows["tokens"].to_numpy(), rows["latency_us"].to_numpy())
        if name in per_layer_ops:
            layers = shapes.layers if name not in ("gate_up_proj", "down_proj", "act_fn") else shapes.layers - shapes.moe_layers
            count = per_layer_ops[name] * layers
        elif name in once_ops:
            count = 1
        else:
            continue
        out.token_ops[name] = count * curve(tokens) * (tokens > 0)
        out.token_outside[name] = curve.outside(tokens)
    if "moe" in profile.tables and shapes.moe_layers:
        moe = profile.tables["moe"]
        curve = Curve.from_points(moe["tokens"].to_numpy(), moe["latency_us"].to_numpy())
        out.token_ops["moe"] = shapes.moe_layers * curve(tokens) * (tokens > 0)
        out.token_outside["moe"] = curve.outside(tokens)
    for name, rows in profile.tables["per_sequence"].groupby("op"):
        curve = Curve.from_points(rows["sequences"].to_numpy(), rows["latency_us"].to_numpy())
        out.seq_ops[name] = curve(seqs) * (seqs > 0)
        out.seq_outside[name] = curve.outside(seqs)
    attention = profile.tables["attention"]
    decode = attention[(attention["prefill_chunk"] == 0) & (attention["n_decode"] > 0)]
    out.decode_attention = Grid.from_points(decode["n_decode"].to_numpy(), decode["kv_decode"].to_numpy(),
                                            decode["latency_us"].to_numpy())
    prefill = attention[(attention["n_decode"] == 0) & (attention["prefill_chunk"] > 0)]
    out.prefill_attention = Grid.from_points(prefill["prefill_chunk"].to_numpy(),
                                             (prefill["kv_prefill"] + prefill["prefill_chunk"]).to_numpy(),
                                             prefill["latency_us"].to_numpy())
    mixed = attention[(attention["n_decode"] > 0) & (attention["prefill_chunk"] > 0)]
    if not mixed.empty:
        out.mixed_attention = MixedGrid(mixed["prefill_chunk"].to_numpy(),
                                        (mixed["kv_prefill"] + mixed["prefill_chunk"]).to_numpy(),
                                        mixed["n_decode"].to_numpy(), mixed["kv_decode"].to_numpy(),
                                        mixed["latency_us"].to_numpy())
    out.sources = {"linear": f"layer profile {profile.name}", "attention": f"layer profile {profile.name}"
                   + (" (mixed prefill+decode calls measured)" if out.mixed_attention else "")}
    return out


def moe_from_database(tables: KernelTables, dtype: str, hidden: int, inter: int, topk: int, experts: int,
                      tp: int, tokens: np.ndarray, ep: int = 1) -> tuple[np.ndarray, np.ndarray] | None:
    """Fused-MoE time per MoE layer against tokens, where this exact expert shape and split
    (moe_tp x moe_ep) was measured."""
    moe = tables.table("moe")
    if moe is None:
        return None
    rows = moe[(moe["dtype"] == dtype) & (moe["hidden"] == hidden) & (moe["inter"] == inter) & (moe["topk"] == topk)
               & (moe["experts"] == experts) & (moe["tp"] == tp) & (moe["ep"] == ep)]
    if rows.empty:
        return None
    curve = Curve.from_points(rows["tokens"].to_numpy(), rows["latency_us"].to_numpy())
    return curve(tokens) * (tokens > 0), curve.outside(tokens)


def routed_experts_from_gemms(tables: KernelTables, dtype: str, shapes: LayerShapes, hidden: int, inter: int,
                              topk: int, experts: int, tp: int, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fallback MoE: the experts a batch touches each run a GEMM over their share of the tokens."""
    up, _ = _gemm_curve(tables, dtype, 2 * inter // tp, hidden)
    down, _ = _gemm_curve(tables, dtype, hidden, inter // tp)
    touched = experts * (1.0 - np.power(1.0 - topk / experts, tokens.astype(np.float64)))
    per_expert = np.maximum(1.0, tokens * topk / np.maximum(touched, 1.0))
    time = touched * (up(per_expert) + down(per_expert)) * (tokens > 0)
    return time, np.ones(len(tokens), dtype=bool)


def allreduce_curve(tables: KernelTables, impl: str, tp: int) -> Curve | None:
    comm = tables.table("allreduce")
    if comm is None:
        return None
    rows = comm[(comm["impl"] == impl) & (comm["num_gpus"] == tp)]
    if rows.empty:
        return None
    return Curve.from_points(rows["bytes"].to_numpy(), rows["latency_us"].to_numpy())

