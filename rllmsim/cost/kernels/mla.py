"""MLA attention (DeepSeek-V3/R1, Kimi-K2) from aiconfigurator's measured MLA module tables.

A module row times vLLM's whole `DeepseekV2MLAAttention` forward of one layer at `heads` query
heads per GPU (the collector builds it at TP 1 with the per-GPU head count): fused q/kv
down-projection (`fused_qkv_a_proj`), q and kv latent RMSNorms, `q_b_proj`, rotary, the attention
kernel with the absorbed `W_UK`/`W_UV` BMMs on decode and `kv_b_proj` up-projection on prefill,
and `o_proj`. Only what lies outside the module is added from the other tables: the layer's two
fused residual-add RMSNorms, its MLP or MoE, and the TP all-reduce after `o_proj`. So an MLA layer
has no separate QKV/O projection GEMMs.

Decode is the generation module at (sequences, context per sequence). Prefill is measured from an
empty cache; a chunk after cached context does the work of a from-empty sequence with the same
causal pairs (L tokens) in attention, but its projections run at the chunk's tokens and its
`kv_b_proj` at the whole context (vLLM up-projects the cached latent): so it costs
max(module(chunk), module(L) - proj(L) - kv_b(L) + proj(chunk) + kv_b(context)), the
projections from the GEMM tables at the module's shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rllmsim.cost.kernels.attention import causal_pairs, length_for_pairs
from rllmsim.cost.kernels.lookup import Curve, Grid
from rllmsim.cost.kernels.tables import KernelTables
from rllmsim.errors import ConfigError
from rllmsim.specs import ModelSpec

#: Largest token count the projection curves are tabulated for (beyond: linear, the edge's efficiency).
_PROJECTION_GRID = np.unique(np.round(np.geomspace(1, 1 << 17, 120))).astype(np.float64)


@dataclass(frozen=True)
class MlaShapes:
    """Per-GPU GEMM shapes inside one MLA module: (n, k) of each projection."""

    qkv_a: tuple[int, int]
    q_b: tuple[int, int]
    kv_b: tuple[int, int]
    o: tuple[int, int]

    @classmethod
    def of(cls, model: ModelSpec, heads: int) -> "MlaShapes":
        a, h = model.attention, model.hidden_size
        q_dim = a.qk_nope_head_dim + a.qk_rope_head_dim
        # without a q LoRA (DeepSeek-V2-Lite) q_proj runs at the full width: fold it into q_b
        q_b = (heads * q_dim, a.q_lora_rank) if a.q_lora_rank else (heads * q_dim, h)
        return cls(qkv_a=(a.q_lora_rank + a.kv_lora_rank + a.qk_rope_head_dim, h), q_b=q_b,
                   kv_b=(heads * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank),
                   o=(h, heads * a.v_head_dim))


class MlaPrefill:
    """Prefill of an MLA module for a chunk after cached context (see the module docstring).
    Answers as a `Grid` does (`at_row_scalar`, `outside_scalar`), in microseconds."""

    def __init__(self, module: Curve, projections: Curve, kv_b: Curve) -> None:
        self.module, self.projections, self.kv_b = module, projections, kv_b

    def at_row_scalar(self, chunk: float, context: float) -> float:
        alone = self.module.scalar(chunk)
        length = length_for_pairs(causal_pairs(chunk, context))
        if length <= chunk + 0.5:
            return alone
        moved = (self.module.scalar(length) - self.projections.scalar(length) - self.kv_b.scalar(length)
                 + self.projections.scalar(chunk) + self.kv_b.scalar(context))
        return max(alone, moved)

    def outside_scalar(self, chunk: float, context: float) -> bool:
        return length_for_pairs(causal_pairs(chunk, context)) > self.module.x_max


def _module_rows(tables: KernelTables, name: str, model: ModelSpec, dtype: str, kv_dtype: str, heads: int):
    table = tables.table(name)
    if table is None:
        raise ConfigError(f"kernel tables of {tables.meta.get('device', 'this GPU')} have no MLA module table "
                          f"({name}); MLA attention is timed by the roofline")
    a = model.attention
    dims = (model.hidden_size, a.q_lora_rank, a.kv_lora_rank, a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim)
    rows = table[(table["hidden"] == dims[0]) & (table["q_lora"] == dims[1]) & (table["kv_lora"] == dims[2])
                 & (table["nope_dim"] == dims[3]) & (table["rope_dim"] == dims[4]) & (table["v_dim"] == dims[5])]
    if rows.empty:
        raise ConfigError(f"{model.name}: its MLA shape (hidden/q_lora/kv_lora/nope/rope/v {'/'.join(map(str, dims))}) "
                          "was never measured; MLA attention is timed by the roofline")
    rows = rows[(rows["dtype"] == dtype) & (rows["kv_dtype"] == kv_dtype) & (rows["heads"] == heads)]
    if rows.empty:
        have = sorted(set(zip(table["dtype"], table["kv_dtype"])))
        raise ConfigError(f"MLA module tables have no rows at {heads} heads per GPU with {dtype} GEMMs and a "
                          f"{kv_dtype} KV cache (measured dtype/kv: {', '.join('/'.join(p) for p in have)})")
    return rows


def mla_from_database(tables: KernelTables, model: ModelSpec, heads: int, dtype: str,
                      kv_dtype: str) -> tuple[Grid, MlaPrefill]:
    """Decode grid (per layer, us; rows: sequences, columns: context per sequence) and prefill of
    this model's MLA modules at `heads` query heads per GPU."""
    gen = _module_rows(tables, "mla_generation", model, dtype, kv_dtype, heads)
    ctx = _module_rows(tables, "mla_context", model, dtype, kv_dtype, heads)
    decode = Grid.from_points(gen["batch"].to_numpy(), gen["context"].to_numpy(), gen["latency_us"].to_numpy())
    one = ctx[ctx["batch"] == 1]
    if one.empty:
        raise ConfigError("MLA context module table has no single-sequence rows; MLA attention is timed by the roofline")
    module = Curve.from_points(one["isl"].to_numpy(), one["latency_us"].to_numpy())
    shapes = MlaShapes.of(model, heads)
    grid = tables.gemm_grid(dtype)
    total = np.zeros(len(_PROJECTION_GRID))
    for n, k in (shapes.qkv_a, shapes.q_b, shapes.o):
        total += grid.curve(n, k)[0](_PROJECTION_GRID)
    kv_b = Curve(_PROJECTION_GRID, grid.curve(*shapes.kv_b)[0](_PROJECTION_GRID))
    return decode, MlaPrefill(module, Curve(_PROJECTION_GRID, total), kv_b)
