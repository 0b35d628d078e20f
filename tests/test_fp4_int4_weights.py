"""NVFP4 (ModelOpt `modelopt_fp4`) and weight-only INT4 (compressed-tensors, Kimi-K2-Thinking):
their weight bytes, the kernel rows they are timed from, and the roofline fallback where none ship."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bad_input_helpers import SIMULATE, assert_refused
from rllmsim.cost.kernels.model import KernelCostModel
from rllmsim.cost.kernels.ops import LM_HEAD_DTYPE, gemm_dtype, moe_dtype
from rllmsim.cost.kernels.tables import KernelTables, shipped_tables
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.cost import select
from rllmsim.cost.select import cost_model_for
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.specs import ModelSpec, load_gpu, load_model
from rllmsim.specs.dtypes import INT4_WO_BYTES, NVFP4_BYTES, quantization_scope, quantization_weight_bytes

KERNELS = Path(__file__).resolve().parents[1] / "rllmsim" / "data" / "kernels"
MODELS = Path(__file__).resolve().parents[1] / "rllmsim" / "specs" / "models"


def deploy(model: str, gpu: str, **kw) -> Deployment:
    kw.setdefault("num_gpu_blocks_override", 4_000)
    kw.setdefault("max_model_len", 8_192)
    return Deployment(model=load_model(model), gpu=load_gpu(gpu), **kw)


def rows(gpu: str, table: str, **where) -> pd.DataFrame:
    df = pd.read_parquet(KERNELS / gpu / f"{table}.parquet")
    for column, value in where.items():
        df = df[df[column] == value]
    return df


# -- bytes ---------------------------------------------------------------------------------------
def test_both_formats_are_4_5_bits():
    # NVFP4: 4-bit e2m1 + one 8-bit e4m3 scale per 16; int4: 4 bits + one bf16 scale per 32
    assert quantization_weight_bytes("nvfp4") == quantization_weight_bytes("modelopt_fp4") == NVFP4_BYTES == 0.5625
    assert quantization_weight_bytes("int4_wo") == INT4_WO_BYTES == 0.5625
    assert quantization_scope("nvfp4") == quantization_scope("modelopt_fp4") == "linear"
    assert quantization_scope("int4_wo") == "experts"


TINY = ModelSpec(name="tiny", hf_id="tiny", model_type="tiny", num_layers=1, hidden_size=32, num_attention_heads=2,
                 num_kv_heads=2, head_dim=16, intermediate_size=64, vocab_size=100, max_position_embeddings=128,
                 num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, num_moe_layers=1)


def test_tiny_model_bytes_by_hand():
    """One MoE layer: q, k, v, o 32x32 each (4096), four experts of 3 x 32 x 16 (6144), router
    32 x 4, embedding and lm_head 100 x 32 each, three norms of 32."""
    total = 4096 + 6144 + 128 + 2 * 3200 + 3 * 32
    assert TINY.param_count() == total
    # NVFP4, every linear in the layer: 10240 weights at half a byte plus 10240 / 16 one-byte scales
    assert TINY.weight_bytes(NVFP4_BYTES, "linear") == 10240 / 2 + 10240 / 16 + (total - 10240) * 2
    # int4, routed experts only: 6144 weights at half a byte plus 6144 / 32 two-byte scales
    assert TINY.weight_bytes(INT4_WO_BYTES, "experts") == 6144 / 2 + 6144 / 32 * 2 + (total - 6144) * 2


def test_kimi_k2_thinking_checkpoint_quantizes_the_routed_experts_only():
    """Its compressed-tensors config ignores attention, the shared experts and the dense MLPs."""
    qc = json.loads((MODELS / "kimi-k2-thinking.json").read_text())["quantization_config"]
    weights = qc["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"], weights["type"]) == (4, 32, True, "int")
    assert {"lm_head", "re:.*self_attn.*", "re:.*shared_experts.*"} <= set(qc["ignore"])
    assert any("mlp" in pattern for pattern in qc["ignore"])


def test_kimi_k2_thinking_defaults_to_int4_experts_and_weighs_its_published_594_gb():
    d = deploy("kimi-k2-thinking", "b200", tp=8)
    assert d.quantization == "int4_wo"
    m = d.model
    experts = 60 * 384 * 3 * 7168 * 2048  # MoE layers x experts x gate/up/down x hidden x expert width
    assert m.routed_expert_params() == experts
    expected = experts * 4.5 / 8 + (m.param_count() - experts) * 2
    assert m.weight_bytes(INT4_WO_BYTES, "experts") == expected == d.weight_bytes_per_gpu * 8
    assert expected / 1e9 == pytest.approx(594, rel=0.01)  # the HF checkpoint's ~594 GB


def test_deepseek_r1_as_nvfp4_by_hand():
    d = deploy("deepseek-r1", "b200", tp=8, quantization="modelopt_fp4")
    m = d.model
    linear = m._quantizable_params()
    expected = linear * 4.5 / 8 + (m.param_count() - linear) * 2
    assert d.weight_bytes_per_gpu * 8 == pytest.approx(expected, rel=1e-12)
    assert expected / 1e9 == pytest.approx(380.3, abs=0.1)  # derived: 671B, 669B of them in linears


# -- kernels -------------------------------------------------------------------------------------
def test_nvfp4_moe_and_gemms_hit_the_nvfp4_rows_on_b200():
    d = deploy("deepseek-r1", "b200", tp=8, quantization="nvfp4")
    assert (gemm_dtype(d), moe_dtype(d), LM_HEAD_DTYPE) == ("nvfp4", "nvfp4", "bfloat16")
    cost = KernelCostModel(d, shipped_tables("b200"))
    assert cost.provenance()["ops"]["moe"] == "fused MoE table"
    row = rows("b200", "moe", dtype="nvfp4", hidden=7168, inter=2048, topk=8, experts=256, tp=8, ep=1, tokens=64)
    assert cost.ops.token_ops["moe"][64] == pytest.approx(58 * float(row["latency_us"].astype(float).mean()), rel=1e-12)
    assert isinstance(cost_model_for(d), KernelCostModel)


def test_nvfp4_dense_projections_are_nvfp4_gemms_and_the_lm_head_bf16():
    d = deploy("llama-3.1-8b", "b200", quantization="nvfp4")
    cost = KernelCostModel(d, shipped_tables("b200"))
    qkv = rows("b200", "gemm", dtype="nvfp4", n=(32 + 2 * 8) * 128, k=4096, m=64)  # a grid point
    assert len(qkv) == 1
    assert cost.ops.token_ops["qkv_proj"][64] == pytest.approx(32 * float(qkv["latency_us"].iloc[0]), rel=1e-12)
    # ModelOpt leaves the lm_head bf16: it costs what it costs in the bf16 deployment
    bf16 = KernelCostModel(deploy("llama-3.1-8b", "b200"), shipped_tables("b200"))
    assert cost.ops.seq_ops["lm_head"][64] == pytest.approx(bf16.ops.seq_ops["lm_head"][64], rel=1e-12)
    assert cost.ops.token_ops["qkv_proj"][64] != bf16.ops.token_ops["qkv_proj"][64]


@pytest.mark.parametrize("gpu", ["b200", "h200"])
def test_int4_experts_run_the_int4_wo_rows_and_the_rest_bf16(gpu):
    d = deploy("kimi-k2-thinking", gpu, tp=8)
    assert (gemm_dtype(d), moe_dtype(d)) == ("bfloat16", "int4_wo")
    cost = KernelCostModel(d, shipped_tables(gpu))
    assert cost.provenance()["ops"]["moe"] == "fused MoE table"
    row = rows(gpu, "moe", dtype="int4_wo", hidden=7168, inter=2048, topk=8, experts=384, tp=8, ep=1, tokens=64)
    assert len(row) >= 1
    assert cost.ops.token_ops["moe"][64] == pytest.approx(60 * float(row["latency_us"].astype(float).mean()), rel=1e-12)


def test_nvfp4_without_nvfp4_rows_falls_back_to_the_roofline_with_a_note():
    d = deploy("deepseek-r1", "h200", tp=8, quantization="nvfp4")
    assert rows("h200", "gemm", dtype="nvfp4").empty
    cost = cost_model_for(d)
    assert isinstance(cost, RooflineCostModel)
    note = cost.provenance()["note"]
    assert "\n" not in note and "no nvfp4 GEMMs" in note


def test_int4_experts_without_int4_rows_fall_back_to_the_roofline_with_a_note(monkeypatch):
    d = deploy("kimi-k2-thinking", "b200", tp=8)
    shipped = shipped_tables("b200")
    moe = shipped.table("moe")
    # the same tables as a GPU that never measured int4 experts (a fresh object: no built models)
    tables = KernelTables(tables={**shipped.tables, "moe": moe[moe["dtype"] != "int4_wo"]}, meta=shipped.meta)
    with pytest.raises(ConfigError, match="no fused int4_wo MoE rows") as refused:
        KernelCostModel(d, tables)
    assert "\n" not in str(refused.value)
    monkeypatch.setattr(select, "shipped_tables", lambda gpu: tables)
    cost = select.cost_model_for(d)
    assert isinstance(cost, RooflineCostModel)
    assert cost.provenance()["note"] == f"kernel tables cannot time this deployment: {refused.value}"


def test_a_bad_quantization_is_one_line_naming_the_new_choices(tmp_path):
    err = assert_refused(tmp_path, SIMULATE + ["--quantization", "nvfp5"], "quantization")
    assert "nvfp4" in err and "int4_wo" in err
