"""MLA models cache one latent per layer and token, whole on every TP rank (vLLM's MLA backends)."""

from __future__ import annotations

import pytest

from rllmsim.cost.kernels.model import KernelCostModel
from rllmsim.cost.kernels.tables import KernelTables, shipped_tables
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.cost.select import cost_model_for
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.specs import load_gpu, load_model


def test_deepseek_r1_kv_capacity_by_hand_on_h200_tp8() -> None:
    model = load_model("deepseek-r1")
    d = Deployment(model=model, gpu=load_gpu("h200"), tp=8, max_model_len=32768)
    a = model.attention
    assert (a.kv_lora_rank, a.qk_rope_head_dim, model.num_layers) == (512, 64, 61)
    per_token = 61 * (512 + 64) * 2  # bf16 latent of every layer, not divided by the 8 ranks
    assert d.kv_bytes_per_token_per_gpu == per_token == 70_272
    assert d.quantization == "fp8"  # taken from the checkpoint's quantization_config, as vLLM does
    assert d.num_gpu_blocks == int(d.kv_budget.available // (16 * per_token))
    # sized as GQA (128 KV heads x 192 dims x K and V, split over 8 ranks) it would hold 11x fewer tokens
    assert model.num_kv_heads * 192 * 2 * 2 * 61 / 8 / per_token > 10


def test_fp8_kv_cache_halves_the_latent() -> None:
    d = Deployment(model=load_model("deepseek-r1"), gpu=load_gpu("h200"), tp=8, kv_cache_dtype="fp8",
                   max_model_len=32768)
    assert d.kv_bytes_per_token_per_gpu == 61 * 576


def test_mla_models_are_timed_by_the_kernel_model_from_the_mla_module_tables() -> None:
    d = Deployment(model=load_model("deepseek-r1"), gpu=load_gpu("h200"), tp=8, max_model_len=32768)
    cost = cost_model_for(d)
    assert isinstance(cost, KernelCostModel) and "MLA module" in cost.provenance()["ops"]["attention"]


def test_tables_without_mla_modules_leave_mla_models_to_the_roofline() -> None:
    d = Deployment(model=load_model("deepseek-r1"), gpu=load_gpu("h200"), tp=8, max_model_len=32768)
    shipped = shipped_tables("h200")
    bare = KernelTables({k: v for k, v in shipped.tables.items() if not k.startswith("mla_")}, dict(shipped.meta))
    with pytest.raises(ConfigError, match="no MLA module table"):
        KernelCostModel(d, bare)
    assert isinstance(cost_model_for(d, "roofline"), RooflineCostModel)

