"""gpt-oss: MXFP4 expert weights, the MXFP4 fused-MoE tables, and sliding-window attention cost.

The KV accounting of sliding windows is someone else's work; these tests build deployments with
`num_gpu_blocks_override` so nothing here depends on it.
"""

from __future__ import annotations

import numpy as np
import pytest

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
