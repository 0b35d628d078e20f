"""KV capacity as vLLM v1 sizes it (rllmsim.engine.kv_capacity), checked by hand, and the run
readers taking `kv_cache.num_gpu_blocks` from a run's meta.json."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.deployment import Deployment
from rllmsim.engine.kv_capacity import capture_sizes
from rllmsim.errors import ConfigError
from rllmsim.specs import load_gpu, load_model
from rllmsim.validate.replay import open_run

DATA = Path(__file__).parent / "data" / "validate"
GIB, MIB = 1024**3, 1024**2


def _llama8b(**knobs) -> Deployment:
    base = dict(max_num_seqs=256, max_num_batched_tokens=4096, vllm_version="0.21.0")
    return Deployment(model=load_model("llama-3.1-8b"), gpu=load_gpu("h100-sxm"), **{**base, **knobs})


def test_llama_8b_on_h100_by_hand() -> None:
    """(util x HBM - weights - activation peak - non-torch - graphs) / (block_size x KV bytes per
    token per GPU), every term written out from Llama-3.1-8B's config and the H100's 79.65 GiB."""
    dep = _llama8b()
    requested = math.ceil(0.9 * 79.65 * GIB)
    weights = 8_030_261_248 * 2  # bf16 parameters
    # profile forward over 4096 tokens, one layer's widest point per token: hidden + residual
    # (2 x 4096) + the MLP's gate_up output and SiLU-and-mul (2 x 14336 + 14336), which beats the
    # attention's qkv output + attention output (4096 + 2 x 1024 + 4096); bf16
    forward = 4096 * (2 * 4096 + 3 * 14336) * 2
    # sampler run over min(256, 4096) requests: the 4096 hidden states still held, 256 last
    # hidden states, and 256 x 128256 logits at 2 (bf16) + 4 (fp32) + 4 (probs) + 4 (noise) bytes
    sampler = (4096 + 256) * 4096 * 2 + 256 * 128256 * 14
    assert sampler > forward
    non_torch = 0.2 * GIB
    # capture sizes 1, 2, 4, 8..248 by 8, 256..512 by 16: 51 piecewise; those <= 256 seqs: 35 full
    graphs = (51 + 35 - 1) * 20 * MIB
    kv_bytes_per_token = 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads, head_dim 128, bf16
    expected = int((requested - weights - sampler - non_torch - graphs) // (16 * kv_bytes_per_token))
    assert dep.num_gpu_blocks == expected == 27_855
    budget = dep.kv_budget
    assert (budget.weights, budget.activation_peak, budget.cudagraphs) == (weights, sampler, graphs)
    assert len(capture_sizes(dep)) == 51
    assert dep.kv_capacity_source == "derived from memory as vLLM v1 profiles it"
    assert dep.to_dict()["num_gpu_blocks"] == expected


def test_graphs_eager_version_and_tp_terms() -> None:
    with_graphs = _llama8b()
    eager = _llama8b(enforce_eager=True)
    before_estimate = _llama8b(vllm_version="0.19.0")  # graphs captured after the KV cache, in the slack
    assert eager.kv_budget.cudagraphs == before_estimate.kv_budget.cudagraphs == 0
    assert eager.num_gpu_blocks == before_estimate.num_gpu_blocks > with_graphs.num_gpu_blocks
    assert eager.num_gpu_blocks - with_graphs.num_gpu_blocks == pytest.approx(85 * 20 * MIB / (2 * MIB), abs=1)
    tp2 = _llama8b(tp=2)
    assert tp2.kv_budget.non_torch == pytest.approx(0.4 * GIB)  # NCCL buffers connected in the profile run
    # fewer sequences: a smaller sampler run and fewer graphs, so more blocks
    assert _llama8b(max_num_seqs=64).num_gpu_blocks > with_graphs.num_gpu_blocks
    assert _llama8b(num_gpu_blocks_override=100, max_model_len=1024).kv_capacity_source == "num_gpu_blocks_override"


def test_moe_and_too_small_gpu() -> None:
    moe = Deployment(model=load_model("qwen3-30b-a3b"), gpu=load_gpu("h100-sxm"))
    assert moe.kv_budget.activation_peak > 0 and moe.num_gpu_blocks > 0
    with pytest.raises(ConfigError, match=r"does not fit on l4 at tp=1: .*short by"):
        Deployment(model=load_model("llama-3.1-70b"), gpu=load_gpu("l4"))


def _run_folder(tmp_path: Path, kv_cache: object) -> Path:
    folder = tmp_path / "RTXPRO6000_Llama-3.1-8B-small"
    shutil.copytree(DATA / folder.name, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["kv_cache"] = kv_cache
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_meta_json_kv_cache_blocks_drive_validate(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, {"num_gpu_blocks": 9001, "block_size": 16})
    assert open_run(folder).engine.num_gpu_blocks == 9001
    out = tmp_path / "v"
    result = CliRunner().invoke(main, ["validate", str(folder), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "validation.json").read_text())
    assert summary["deployment"]["num_gpu_blocks"] == 9000  # less vLLM's null block
    assert summary["deployment"]["kv_capacity_source"] == "num_gpu_blocks_override"


def test_bench_engine_file_kv_cache_blocks(tmp_path: Path) -> None:
    for name in ("bench_small.json", "bench_small.timeseries.csv"):
        shutil.copy(DATA / name, tmp_path / name)
    engine = json.loads((DATA / "bench_small.engine.json").read_text())
    del engine["num_gpu_blocks"]
    engine["kv_cache"] = {"num_gpu_blocks": 321}
    (tmp_path / "bench_small.engine.json").write_text(json.dumps(engine))
    assert open_run(tmp_path / "bench_small.json").engine.num_gpu_blocks == 321


@pytest.mark.parametrize("bad", [-5, 0, 12.5, True, "300", "many"])
def test_bad_recorded_blocks_are_one_line(tmp_path: Path, bad: object) -> None:
    folder = _run_folder(tmp_path, {"num_gpu_blocks": bad})
    result = CliRunner().invoke(main, ["validate", str(folder), "--out", str(tmp_path / "v")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "meta.json: kv_cache.num_gpu_blocks=" in result.output and "positive integer" in result.output


@pytest.mark.parametrize("bad", [-1, True, 7.5, "x"])
def test_bad_blocks_in_other_places(tmp_path: Path, bad: object) -> None:
    folder = _run_folder(tmp_path, None)
    meta = json.loads((folder / "meta.json").read_text())
    meta["engine_kwargs"]["num_gpu_blocks"] = bad
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"meta.json: num_gpu_blocks=.* positive integer"):
        open_run(folder)
    bad_cache = _run_folder(tmp_path / "b", [1, 2])
    with pytest.raises(ConfigError, match="meta.json: kv_cache=.* not an object"):
        open_run(bad_cache)
