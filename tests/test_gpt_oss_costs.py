"""gpt-oss: MXFP4 expert weights, the MXFP4 fused-MoE tables, and sliding-window attention cost.

The KV accounting of sliding windows is someone else's work; these tests build deployments with
`num_gpu_blocks_override` so nothing here depends on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rllmsim.cost.features import StepFeatures
from rllmsim.cost.kernels import attention as attn
from rllmsim.cost.kernels.importers.aiconfigurator import MXFP4_KERNELS, _one_kernel_per_shape
from rllmsim.cost.kernels.lookup import Curve
from rllmsim.cost.kernels.model import KernelCostModel
from rllmsim.cost.kernels.ops import gemm_dtype, moe_dtype
from rllmsim.cost.kernels.tables import KernelTables, shipped_tables
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.cost.select import cost_model_for
from rllmsim.deployment import GIB, Deployment
from rllmsim.specs import load_gpu, load_model
from rllmsim.specs.dtypes import MXFP4_BYTES, quantization_scope, quantization_weight_bytes


def gpt_oss(name: str = "gpt-oss-120b", gpu: str = "h100-sxm", **kw) -> Deployment:
    kw.setdefault("num_gpu_blocks_override", 20_000)
    kw.setdefault("max_model_len", 16_384)
    return Deployment(model=load_model(name), gpu=load_gpu(gpu), **kw)


def test_mxfp4_is_4_25_bits_and_covers_the_experts_only():
    assert MXFP4_BYTES == quantization_weight_bytes("mxfp4") == (4 + 8 / 32) / 8
    assert quantization_scope("mxfp4") == "experts" and quantization_scope("fp8") == "linear"
    assert quantization_scope(None) == "linear"


@pytest.mark.parametrize("name, published_gb", [("gpt-oss-120b", 65.2), ("gpt-oss-20b", 13.8)])
def test_weight_bytes_follow_the_mxfp4_checkpoint(name, published_gb):
    """The published checkpoints (HF safetensors) are ~65 GB and ~13.8 GB: MXFP4 experts plus
    bf16 attention, router, embeddings and lm_head."""
    model = load_model(name)
    experts = model.routed_expert_params()
    # by hand: 36 (24) MoE layers x 128 (32) experts x 3 x 2880 x 2880 expert weights
    assert experts == model.num_moe_layers * model.num_experts * 3 * 2880 * 2880
    expected = experts * 4.25 / 8 + (model.param_count() - experts) * 2
    assert model.weight_bytes(MXFP4_BYTES, "experts") == expected
    assert expected / 1e9 == pytest.approx(published_gb, rel=0.02)


def test_mxfp4_is_the_default_quantization_of_an_mxfp4_checkpoint():
    d = gpt_oss()
    assert d.quantization == "mxfp4"
    model = load_model("gpt-oss-120b")
    assert d.weight_bytes_per_gpu == model.weight_bytes(MXFP4_BYTES, "experts")
    assert d.weight_bytes_per_gpu / GIB < 62  # fits one 80 GB H100, as gpt-oss-120b does
    assert gpt_oss(tp=2).weight_bytes_per_gpu == d.weight_bytes_per_gpu / 2


# -- MXFP4 fused MoE ---------------------------------------------------------------------------
def table_rows(gpu: str, name: str, **where) -> pd.DataFrame:
    rows = shipped_tables(gpu).tables[name]
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows


@pytest.mark.parametrize("gpu", ["h100-sxm", "h200", "b200", "b300", "gb200", "gb300", "l40s", "rtx-pro-6000"])
def test_mxfp4_moe_rows_at_gpt_oss_shapes_ship_from_vllm_0_24(gpu):
    tables = shipped_tables(gpu)
    assert tables.meta["moe_dtype_versions"]["w4a16_mxfp4"] == "0.24.0"
    for experts in (128, 32):  # gpt-oss-120b, gpt-oss-20b
        rows = table_rows(gpu, "moe", dtype="w4a16_mxfp4", hidden=2880, inter=2880, topk=4, experts=experts)
        assert {1, 2, 4, 8} <= set(rows["tp"]) and not rows.duplicated(["tokens", "tp", "ep"]).any()


def test_the_mxfp4_kernel_is_picked_as_vllm_does_per_gpu_family():
    rows = pd.DataFrame({"moe_dtype": "w4a16_mxfp4", "hidden_size": [2880, 2880, 3584], "inter_size": [2880, 2880, 3072],
                         "topk": [4, 4, 16], "num_experts": 128,
                         "kernel_source": ["vllm_gptossmxfp4moe_triton_oaitritonmxfp4expertsmonolithic",
                                           "vllm_gptossmxfp4moe_marlin_marlinexperts",
                                           "vllm_compressedtensorsw4a4mxfp4moe_marlin_marlinexperts"]})
    hopper = _one_kernel_per_shape(rows, MXFP4_KERNELS["hopper"])
    assert hopper["kernel_source"].tolist() == [rows["kernel_source"][0], rows["kernel_source"][2]]
    other = _one_kernel_per_shape(rows, MXFP4_KERNELS["other"])  # Ada, Blackwell RTX: Marlin
    assert other["kernel_source"].tolist() == rows["kernel_source"][1:].tolist()


def test_mxfp4_experts_run_the_fused_mxfp4_table_and_the_rest_bf16():
    d = gpt_oss()
    assert (gemm_dtype(d), moe_dtype(d)) == ("bfloat16", "w4a16_mxfp4")
    cost = KernelCostModel(d, shipped_tables("h100-sxm"))
    assert cost.provenance()["ops"]["moe"] == "fused MoE table"
    row = table_rows("h100-sxm", "moe", dtype="w4a16_mxfp4", experts=128, tp=1, ep=1, tokens=64)
    assert cost.ops.token_ops["moe"][64] == pytest.approx(36 * float(row["latency_us"].iloc[0]), rel=1e-12)
    assert isinstance(cost_model_for(d), KernelCostModel)


# -- sliding-window attention ------------------------------------------------------------------
def window_row(name: str, window: int, **where) -> float:
    rows = table_rows("h100-sxm", name, heads=64, kv_heads=8, head_dim=64, kv_dtype="bfloat16", window=window,
                      **where)
    assert len(rows) == 1
    return float(rows["latency_us"].iloc[0])


def test_decode_splits_full_and_sliding_layers_on_measured_window_rows():
    cost = KernelCostModel(gpt_oss(), shipped_tables("h100-sxm"))
    assert cost.ops.sliding.layers == 18 and not cost.ops.sliding.capped
    seconds, _ = cost._decode_attention_s(8, np.array([8.0 * 4096]))
    by_hand = 18 * window_row("generation_attention", 0, batch=8, context=4096) + \
        18 * window_row("generation_attention", 128, batch=8, context=4096)
    assert seconds[0] == pytest.approx(by_hand * 1e-6, rel=1e-9)
    # all 36 layers at full attention would cost more: the window layers read 128 keys, not 4096
    assert by_hand < 36 * window_row("generation_attention", 0, batch=8, context=4096)


def test_without_window_rows_sliding_layers_read_full_rows_at_the_window():
    shipped = shipped_tables("h100-sxm")
    bare = {k: (v[v["window"] == 0] if k.endswith("_attention") else v) for k, v in shipped.tables.items()}
    cost = KernelCostModel(gpt_oss(), KernelTables(bare, dict(shipped.meta)))
    assert cost.ops.sliding.capped
    seconds, _ = cost._decode_attention_s(8, np.array([8.0 * 4096]))
    by_hand = 18 * window_row("generation_attention", 0, batch=8, context=4096) + \
        18 * window_row("generation_attention", 0, batch=8, context=128)
    assert seconds[0] == pytest.approx(by_hand * 1e-6, rel=1e-9)


def test_windowed_pairs_by_hand():
    assert attn.windowed_pairs(1000, 1000, 128) == 128 * 129 / 2 + (1000 - 128) * 128
    assert attn.windowed_pairs(100, 5100, 128) == 100 * 128  # every query sees a full window
    assert attn.windowed_pairs(100, 100, 128) == 100 * 101 / 2  # shorter than the window: causal


def test_prefill_of_sliding_layers_from_empty_is_the_window_row_at_its_length():
    cost = KernelCostModel(gpt_oss(), shipped_tables("h100-sxm"))
    seconds, _ = cost._prefill_attention_s(2048, 2048 * 2049 // 2)
    by_hand = 18 * window_row("context_attention", 0, batch=1, isl=2048) + \
        18 * window_row("context_attention", 128, batch=1, isl=2048)
    assert seconds == pytest.approx(by_hand * 1e-6, rel=1e-9)
    # on full-attention rows: the from-empty length with as many (windowed) pairs
    prefill = attn.WindowedPrefill(Curve(np.array([1.0, 1e5]), np.array([1.0, 1e5])), 128, measured=False)
    assert prefill.at_row_scalar(1000, 1000) == pytest.approx(attn.length_for_pairs(attn.windowed_pairs(1000, 1000, 128)))


def test_a_decode_run_costs_what_its_steps_cost_one_by_one():
    cost = KernelCostModel(gpt_oss(), shipped_tables("h100-sxm"))
    kv = np.array([32 * 3000, 32 * 3001, 32 * 3002], dtype=np.int64)
    run = cost.step_time(StepFeatures.decode_run(32, kv))
    steps = [cost.step_time(StepFeatures.decode_only(np.array([32]), kv[i:i + 1]))[0] for i in range(3)]
    assert run.tolist() == steps


def test_roofline_charges_sliding_layers_their_window_only():
    d = gpt_oss(async_scheduling=False)
    r = RooflineCostModel(d)
    per_layer = 8 * 64 * 2 * 2  # 8 KV heads x 64 dims x K and V x bf16
    bytes_per_s = d.gpu.hbm_bandwidth_gbps * 1e9 * r.params.memory_efficiency
    assert r._s_per_kv_token == pytest.approx(18 * per_layer / bytes_per_s)
    assert r._sliding.s_per_kv_token == pytest.approx(18 * per_layer / bytes_per_s)
    step = lambda ctx: r.step_time(StepFeatures.decode_only(np.array([64]), np.array([64 * ctx])))[0]  # noqa: E731
    # past the window only the 18 full layers read more: by hand, bandwidth-bound decode
    assert step(8000) - step(4000) == pytest.approx(r._s_attention_one_token * 64 * 4000, rel=1e-9)
    # the sliding layers read 64 x 128 tokens whatever the context
    assert r._sliding.seconds(0, 0, 0, 0, 64, 64, 64 * 4000, minimum=min, maximum=max) == pytest.approx(
        max(r._sliding.s_per_pair * 64 * 128, r._sliding.s_per_kv_token * 64 * 128))
