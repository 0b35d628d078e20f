"""MLA attention in the kernel model: aiconfigurator's MLA module tables, looked up exactly at
their grid, and a step that is the sum of its op lookups plus host time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rllmsim.cost.features import StepFeatures
from rllmsim.cost.kernels.lookup import Curve
from rllmsim.cost.kernels.mla import MlaPrefill, MlaShapes
from rllmsim.cost.kernels.model import KernelCostModel
from rllmsim.cost.kernels.tables import shipped_tables
from rllmsim.cost.select import cost_model_for
from rllmsim.deployment import Deployment
from rllmsim.specs import load_gpu, load_model


def r1(**kw) -> Deployment:
    kw.setdefault("max_model_len", 32768)
    return Deployment(model=load_model("deepseek-r1"), gpu=load_gpu("h200"), tp=8, **kw)


def module_row(name: str, kv_dtype: str = "bfloat16", **where) -> float:
    table = shipped_tables("h200").tables[name]
    rows = table[(table["heads"] == 16) & (table["dtype"] == "fp8_block") & (table["kv_dtype"] == kv_dtype)
                 & (table["hidden"] == 7168) & (table["kv_lora"] == 512)]
    for column, value in where.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1
    return float(rows["latency_us"].iloc[0])


def test_mla_module_tables_ship_with_the_measured_model_dimensions():
    tables = shipped_tables("h200")
    assert tables.meta["vllm_versions"]["mla_generation_module_perf"] == "0.19.0"
    gen = tables.tables["mla_generation"]
    assert set(gen["q_lora"]) == {1536} and set(gen["rope_dim"]) == {64} and set(gen["nope_dim"]) == {128}
    assert {"bfloat16", "fp8"} <= set(gen["kv_dtype"]) and "fp8_block" in set(gen["dtype"])


def test_decode_attention_is_the_generation_module_at_the_grid():
    cost = KernelCostModel(r1(), shipped_tables("h200"))
    # 128 heads over 8 ranks: the module measured at 16 heads, 64 sequences of 4096 tokens
    seconds, outside = cost._decode_attention_s(64, np.array([64.0 * 4096]))
    assert seconds[0] == pytest.approx(61 * module_row("mla_generation", batch=64, context=4096) * 1e-6, rel=1e-9)
    assert outside == 0.0


def test_fp8_kv_cache_reads_the_fp8_module_rows():
    cost = KernelCostModel(r1(kv_cache_dtype="fp8"), shipped_tables("h200"))
    seconds, _ = cost._decode_attention_s(64, np.array([64.0 * 4096]))
    assert seconds[0] == pytest.approx(61 * module_row("mla_generation", "fp8", batch=64, context=4096) * 1e-6,
                                       rel=1e-9)


def test_prefill_from_empty_is_the_context_module_at_the_grid():
    cost = KernelCostModel(r1(), shipped_tables("h200"))
    seconds, _ = cost._prefill_attention_s(2048, 2048 * 2049 // 2)
    assert seconds == pytest.approx(61 * module_row("mla_context", batch=1, isl=2048) * 1e-6, rel=1e-9)


def test_an_mla_step_is_the_sum_of_its_op_lookups_plus_host():
    d = r1(async_scheduling=False)
    cost = KernelCostModel(d, shipped_tables("h200"))
    parts = cost.breakdown(0, 0, 64, 4096)
    # the module holds q/kv projections, norms, rotary and o_proj: no GEMMs of its own beside it
    assert not {"qkv_proj", "o_proj"} & set(parts)
    assert {"moe", "shared_gate_up_proj", "gate_up_proj", "allreduce", "decode_attention", "lm_head"} <= set(parts)
    assert parts["decode_attention"] == pytest.approx(61 * module_row("mla_generation", batch=64, context=4096) * 1e-6)
    moe = shipped_tables("h200").tables["moe"]
    row = moe[(moe["dtype"] == "fp8_block") & (moe["hidden"] == 7168) & (moe["inter"] == 2048) & (moe["topk"] == 8)
              & (moe["experts"] == 256) & (moe["tp"] == 8) & (moe["ep"] == 1) & (moe["tokens"] == 64)]
    assert parts["moe"] == pytest.approx(58 * float(row["latency_us"].mean()) * 1e-6, rel=1e-9)  # 58 MoE layers
    step = cost.step_time(StepFeatures.decode_only(np.array([64]), np.array([64 * 4096])))[0]
    assert step == pytest.approx(sum(parts.values()), rel=1e-12)  # host added: no async scheduling


def test_mla_prefill_after_context_moves_projections_to_the_chunk_and_kv_b_to_the_context():
    """By hand on straight-line curves: module(x) = 10x, projections 2x, kv_b x."""
    grid = np.array([1.0, 1e6])
    prefill = MlaPrefill(Curve(grid, 10 * grid), Curve(grid, 2 * grid), Curve(grid, grid))
    assert prefill.at_row_scalar(100, 100) == pytest.approx(1000)  # from empty: the module itself
    chunk, context = 100.0, 1100.0
    pairs = chunk * (context - chunk) + chunk * (chunk + 1) / 2
    length = (np.sqrt(8 * pairs + 1) - 1) / 2
    assert prefill.at_row_scalar(chunk, context) == pytest.approx(10 * length - 3 * length + 2 * chunk + context)


def test_mla_projection_shapes_per_gpu():
    shapes = MlaShapes.of(load_model("deepseek-r1"), 16)
    assert shapes.qkv_a == (1536 + 512 + 64, 7168) and shapes.q_b == (16 * 192, 1536)
    assert shapes.kv_b == (16 * 256, 512) and shapes.o == (7168, 16 * 128)


def test_cli_simulates_deepseek_r1_on_h200_tp8_with_the_kernel_model(tmp_path: Path):
    from click.testing import CliRunner

    from rllmsim.cli import main

    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["simulate", "--model", "deepseek-r1", "--gpu", "h200", "--tp", "8",
                                       "--dataset", "aime-2024", "--num-requests", "40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["cost_model"]["kind"] == "kernels"
    assert "MLA module" in summary["config"]["cost_model"]["ops"]["attention"]
    assert cost_model_for(r1()).provenance()["kind"] == "kernels"
