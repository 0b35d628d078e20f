"""Readers of recorded real runs: the shared real files (skipped when ../shared is absent) and the
small fixtures in tests/data/validate (synthetic runs in the same formats)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rllmsim.errors import ConfigError
from rllmsim.validate.aiconfigurator import case_deployment, read_aiconfigurator
from rllmsim.validate.recorded import EngineArgs, real_latencies
from rllmsim.validate.replay import open_run, resolve_gpu

DATA = Path(__file__).parent / "data" / "validate"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "validation"
LSS = SHARED / "llmservingsim-vllm0.19"
AIC = SHARED / "aiconfigurator-silicon" / "vllm_h100_sxm.csv"
needs_shared = pytest.mark.skipif(not LSS.is_dir(), reason="../shared/validation not present")


@needs_shared
@pytest.mark.parametrize("folder, tp, model", [("RTXPRO6000_Llama-3.1-8B", 1, "meta-llama/Llama-3.1-8B"),
                                               ("RTXPRO6000_Qwen3-32B", 2, "Qwen/Qwen3-32B")])
def test_llmservingsim_real_runs(folder: str, tp: int, model: str) -> None:
    run = open_run(LSS / folder)
    assert run.source == "llmservingsim" and len(run.requests) == 300
    e = run.engine
    assert (e.model, e.tp, e.max_num_seqs, e.max_num_batched_tokens, e.max_model_len) == (model, tp, 128, 2048, None)
    assert e.dtype == "bfloat16" and e.kv_cache_dtype == "auto" and e.vllm_version == "0.19.0"
    assert resolve_gpu(None, run).name == "rtx-pro-6000"
    # engine-side times: TTFT = first_token_ts - queued_ts, exactly, for the file's first line
    first = json.loads((LSS / folder / "requests.jsonl").read_text().splitlines()[0])
    lat = real_latencies(run.requests)
    row = int(np.flatnonzero(run.requests["request_id"] == first["request_id"])[0])
    assert lat["ttft"][row] == pytest.approx(first["first_token_ts"] - first["queued_ts"], abs=1e-9)
    assert lat["e2el"][row] == pytest.approx(first["last_token_ts"] - first["queued_ts"], abs=1e-9)
    assert run.requests["arrival_s"].iloc[0] == 0.0 and run.requests["arrival_s"].is_monotonic_increasing
    assert run.itl_s is None
    # the log's kv_cache_pct is 0 throughout while 128 requests run: read as not recorded
    assert not run.kv_recorded and run.timeseries["running"].max() == 128
    # its clock lands within a second of the request clock, matching running+waiting closely
    offset_note = next(n for n in run.notes if n.startswith("timeseries clock aligned"))
    assert abs(float(offset_note.split("t + ")[1].split(" s")[0])) < 1.0


@needs_shared
def test_aiconfigurator_real_rows() -> None:
    cases = read_aiconfigurator(AIC)
    assert len(cases) == 240
    by_model = pd.Series([c.model for c in cases]).value_counts()
    assert by_model["Qwen/Qwen3-32B"] == 94 and by_model["meta-llama/Llama-3.1-70B"] == 45
    first = cases[0]
    assert (first.isl, first.osl, first.users, first.tp, first.precision) == (1024, 128, 8, 2, "bf16")
    assert first.ttft_ms == pytest.approx(154.2481599) and first.concurrency_recorded
    assert sum(not c.concurrency_recorded for c in cases) == 6
    assert case_deployment(first).model.name == "qwen3-32b"
    llama = next(c for c in cases if c.model == "meta-llama/Llama-3.1-70B")
    assert case_deployment(llama).quantization == "fp8"
    # labelled nvfp4, but an H100 can only run the checkpoint's MXFP4 experts
    gpt_oss = case_deployment(next(c for c in cases if c.model == "openai/gpt-oss-120b"))
    assert gpt_oss.quantization == "mxfp4" and gpt_oss.kv_layout.hybrid
    minimax = case_deployment(next(c for c in cases if c.model == "MiniMaxAI/MiniMax-M2.5"))
    assert minimax.model.name == "minimax-m2.5" and minimax.quantization == "fp8"
    disagg = next(c for c in cases if c.model == "Qwen/Qwen3-32B" and c.mode == "disagg")
    with pytest.raises(ConfigError, match="disaggregated"):
        case_deployment(disagg)


def test_llmservingsim_fixture_alignment() -> None:
    """The fixture's log clock runs 0.3 s ahead of the first queued_ts; the reader finds it."""
    run = open_run(DATA / "RTXPRO6000_Llama-3.1-8B-small")
    assert len(run.requests) == 16 and run.engine.max_num_seqs == 8
    assert run.timeseries["t_s"].iloc[0] == pytest.approx(1.0 - 0.302, abs=0.02)


def test_vllm_bench_fixture() -> None:
    run = open_run(DATA / "bench_small.json")
    raw = json.loads((DATA / "bench_small.json").read_text())
    assert run.source == "vllm-bench" and len(run.requests) == 11  # the failed request is dropped
    assert any("dropped 1 failed" in n for n in run.notes)
    e = run.engine
    assert (e.model, e.max_num_seqs, e.max_num_batched_tokens, e.num_gpu_blocks, e.device) == \
        ("deepseek-r1-distill-qwen-1.5b", 4, 256, 200, "h100-sxm")
    start = np.asarray(raw["start_times"][:-1])
    order = np.argsort(start, kind="stable")
    np.testing.assert_allclose(run.requests["arrival_s"], start[order] - start.min())
    np.testing.assert_allclose(real_latencies(run.requests)["ttft"], np.asarray(raw["ttfts"][:-1])[order])
    np.testing.assert_allclose(real_latencies(run.requests)["e2el"], np.asarray(raw["latencies"][:-1])[order])
    assert len(run.itl_s) == sum(len(x) for x in raw["itls"][:-1])
    assert run.kv_recorded and run.timeseries["t_s"].iloc[0] == pytest.approx(0.0, abs=1e-3)


def test_engine_args_conversion_and_errors(tmp_path: Path) -> None:
    args = EngineArgs.from_mapping({"tensor_parallel_size": "2", "max-num-seqs": "64", "enable_chunked_prefill": "false",
                                    "gpu_memory_utilization": "0.85", "unrelated": 3}, "meta")
    assert (args.tp, args.max_num_seqs, args.enable_chunked_prefill, args.gpu_memory_utilization) == (2, 64, False, 0.85)
    with pytest.raises(ConfigError, match="max_num_seqs='many'"):
        EngineArgs.from_mapping({"max_num_seqs": "many"}, "meta")
    bad = tmp_path / "bench.json"
    bad.write_text(json.dumps({"input_lens": [1], "output_lens": [2]}))
    with pytest.raises(ConfigError, match="--save-detailed"):
        open_run(bad)
    with pytest.raises(ConfigError, match="not a recorded run"):
        open_run(tmp_path)
