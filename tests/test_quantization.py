"""Weight and KV-cache quantization: memory and step-time mechanisms, by hand-computed numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rllmsim.cost.features import StepFeatures
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.deployment import GIB, Deployment
from rllmsim.specs import load_gpu, load_model


@pytest.fixture
def base() -> Deployment:
    return Deployment(model=load_model("deepseek-r1-distill-qwen-14b"), gpu=load_gpu("h100-sxm"))


def test_fp8_kv_doubles_capacity_for_the_same_memory(base):
    fp8 = dataclasses.replace(base, kv_cache_dtype="fp8")
    assert fp8.kv_bytes_per_token_per_gpu * 2 == base.kv_bytes_per_token_per_gpu
    # same KV budget in bytes, half the bytes per block: twice the blocks (floor division aside)
    assert fp8.num_gpu_blocks in (2 * base.num_gpu_blocks, 2 * base.num_gpu_blocks + 1)


def test_fp8_kv_halves_attention_bytes_of_long_decodes(base):
    fp8 = dataclasses.replace(base, kv_cache_dtype="fp8")
    step = StepFeatures.decode_only(np.array([256]), np.array([256 * 8000]))
    assert RooflineCostModel(fp8).step_time(step)[0] < RooflineCostModel(base).step_time(step)[0]


def test_weight_quantization_frees_kv_room(base):
    awq = dataclasses.replace(base, quantization="awq")
    saved = base.weight_bytes_per_gpu - awq.weight_bytes_per_gpu
    assert saved > 0.6 * base.weight_bytes_per_gpu  # linear weights go from 2 to ~0.52 bytes
    extra_blocks = saved / (base.block_size * base.kv_bytes_per_token_per_gpu)
    assert awq.num_gpu_blocks - base.num_gpu_blocks == pytest.approx(extra_blocks, abs=1)


def test_int4_speeds_small_decode_batches_and_slows_large_prefills(base):
    awq = dataclasses.replace(base, quantization="awq")
    small = StepFeatures.decode_only(np.array([4]), np.array([4 * 1000]))
    big = StepFeatures.from_columns({"prefill_tokens": [8192], "prefill_seqs": [4], "prefill_attn_pairs": [0],
                                     "prefill_kv_tokens": [8192], "decode_seqs": [0], "decode_tokens": [0],
                                     "decode_kv_tokens": [0]})
    b, q = RooflineCostModel(base), RooflineCostModel(awq)
    assert q.step_time(small)[0] < b.step_time(small)[0]   # bandwidth-bound: fewer weight bytes
    assert q.step_time(big)[0] > b.step_time(big)[0]       # compute-bound: dequantization costs


def test_fp8_weights_use_fp8_tensor_cores_where_present(base):
    fp8 = dataclasses.replace(base, quantization="fp8")
    big = StepFeatures.from_columns({"prefill_tokens": [8192], "prefill_seqs": [4], "prefill_attn_pairs": [0],
                                     "prefill_kv_tokens": [8192], "decode_seqs": [0], "decode_tokens": [0],
                                     "decode_kv_tokens": [0]})
    assert RooflineCostModel(fp8).step_time(big)[0] < RooflineCostModel(base).step_time(big)[0]
    assert fp8.weight_bytes_per_gpu < base.weight_bytes_per_gpu / 1.8
    assert base.weight_bytes_per_gpu / GIB == pytest.approx(27.5, rel=0.03)  # 14.8B params x 2 bytes


def test_the_lm_head_stays_bf16_under_fp8_in_both_cost_models():
    """vLLM quantizes linear layers, not the ParallelLMHead: an fp8 deployment's lm_head costs what
    a bf16 one's does (kernel tables), and runs at the bf16 peak (roofline)."""
    from rllmsim.cost.kernels.model import KernelCostModel
    from rllmsim.cost.kernels.tables import shipped_tables
    from rllmsim.cost.roofline import RooflineCostModel
    from rllmsim.deployment import Deployment
    from rllmsim.specs import load_gpu, load_model

    model, gpu = load_model("llama-3.1-70b"), load_gpu("h100-sxm")
    bf16 = Deployment(model=model, gpu=gpu, tp=4, max_model_len=8192)
    fp8 = Deployment(model=model, gpu=gpu, tp=4, quantization="fp8", max_model_len=8192)
    tables = shipped_tables("h100-sxm")
    heads = [KernelCostModel(d, tables).breakdown(0, 0, 8, 1024)["lm_head"] for d in (bf16, fp8)]
    assert heads[0] > 0 and heads[1] == heads[0]
    rooflines = [RooflineCostModel(d)._s_per_sample for d in (bf16, fp8)]
    assert rooflines[1] == rooflines[0]
