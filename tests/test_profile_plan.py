"""The profiler's pure-Python parts: grid plans, their checks, the writer, step rows, the CLI's
errors. None of this needs vllm."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from click.testing import CliRunner

from rllmsim.cost.features import BatchShape, StepFeatures
from rllmsim.cost.profile_table import read_profile
from rllmsim.errors import ConfigError
from rllmsim.profile import contention
from rllmsim.profile.metadata import model_shape, resolve_model
from rllmsim.profile.plan import PRESETS, DecodeCell, ProfilePlan, make_plan, parse_int_list
from rllmsim.profile.vllm_runner import StepRecorder, step_row
from rllmsim.profile.writer import ProfileWriter

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "profiles" / "models" / "tiny-llama"
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_presets_are_valid_and_sized():
    for name, plan in PRESETS.items():
        steps = plan.planned_steps()
        assert steps["total"] == steps["prefill"] + steps["decode"] + steps["mixed"] > 0, name
        assert plan.prefill_cells() and plan.decode_cells()
    ci = PRESETS["ci"]
    assert len(ci.prefill_cells()) == 6 and len(ci.decode_cells()) == 6
    assert ci.planned_steps()["total"] <= 80


def test_plan_validation():
    with pytest.raises(ConfigError, match="empty"):
        ProfilePlan()
    with pytest.raises(ConfigError, match="positive"):
        ProfilePlan(prefill_lens=(0, 16))
    with pytest.raises(ConfigError, match="both decode_batches and decode_contexts"):
        ProfilePlan(decode_batches=(1,))
    with pytest.raises(ConfigError, match="mixed_chunks"):
        ProfilePlan(prefill_lens=(16,), mixed_chunks=(16,))
    plan = ProfilePlan(prefill_lens=(64, 16, 64))
    assert plan.prefill_lens == (16, 64)  # sorted, deduplicated


def test_engine_limit_checks():
    plan = ProfilePlan(prefill_lens=(1024,), decode_batches=(64,), decode_contexts=(2048,),
                       mixed_chunks=(256,))
    assert plan.max_seqs_needed() == 65
    with pytest.raises(ConfigError, match="max_num_seqs is 64"):
        plan.check_engine_limits(max_num_seqs=64, max_model_len=8192, token_budget=2048)
    with pytest.raises(ConfigError, match="max_model_len is 2048"):
        plan.check_engine_limits(max_num_seqs=128, max_model_len=2048, token_budget=2048)
    plan.check_engine_limits(max_num_seqs=128, max_model_len=8192, token_budget=2048)


def test_peak_blocks_and_pool_check():
    plan = ProfilePlan(decode_batches=(4,), decode_contexts=(100,), decode_steps=4,
                       warmup_steps=1, repetitions=1, retry_factor=1)
    cell = DecodeCell(4, 100)
    # setup ceil(400/512)+1 = 2, warm-up 1, decode 4, slack 2
    assert plan.decode_growth(cell, 512) == 9
    assert plan.peak_blocks(block_size=16, token_budget=512) == 4 * math.ceil(109 / 16)
    plan.check_fits_pool(num_gpu_blocks=29, block_size=16, token_budget=512)
    with pytest.raises(ConfigError, match="does not fit the KV pool: its largest cell needs 28"):
        plan.check_fits_pool(num_gpu_blocks=28, block_size=16, token_budget=512)


def test_make_plan_and_parsing():
    plan = make_plan("ci", decode_batches=parse_int_list("2, 4"), repetitions=None)
    assert plan.decode_batches == (2, 4) and plan.repetitions == PRESETS["ci"].repetitions
    assert plan.name == "ci+custom"
    assert parse_int_list("") is None
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_int_list("1,x")
    with pytest.raises(ConfigError, match="unknown grid preset"):
        make_plan("huge")


def test_resolve_model(tmp_path):
    assert resolve_model(str(TINY)) == ("tiny-llama", TINY.resolve())
    assert resolve_model(str(TINY / "config.json"))[0] == "tiny-llama"
    assert resolve_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B") == (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", None)
    with pytest.raises(ConfigError, match="model config not found"):
        resolve_model(str(tmp_path))
    with pytest.raises(ConfigError, match="model config not found"):
        resolve_model("./no/such/dir")


def test_tiny_model_shape():
    shape = model_shape(json.loads((TINY / "config.json").read_text()))
    assert shape["hidden_size"] == 256 and shape["num_hidden_layers"] == 4
    assert shape["num_key_value_heads"] == 2 and shape["head_dim"] == 64
    assert shape["kv_elems_per_token"] == 2 * 4 * 2 * 64
    assert 19e6 < shape["approx_params"] < 20e6


def test_writer_keeps_rows_of_an_interrupted_profile(tmp_path):
    writer = ProfileWriter(tmp_path, "cut", flush_every_s=0)
    writer.update_metadata(model="m", dtype="float32", tp=1, kv_cache_dtype="auto", block_size=16,
                           num_gpu_blocks=10, device={"type": "cpu"})
    row = {"step": 0, "cell": "c", "phase": "decode", "kind": "decode", "wall_s": 0.01,
           "kv_blocks_used": 1, "running": 1, "waiting": 0,
           **{k: int(v[0]) for k, v in StepFeatures.from_shapes(
               [BatchShape(decode_contexts=(5,))]).as_dict().items()}}
    writer.add(row)
    writer.add({**row, "step": 1})
    assert len(pd.read_parquet(tmp_path / "cut.parquet")) == 2  # flushed as it went
    writer.close("interrupted")
    prof = read_profile(tmp_path / "cut")
    assert prof.metadata["status"] == "interrupted" and len(prof.frame) == 2
    assert not list(tmp_path.glob(".*tmp"))


class _FakeScheduler:
    """The attributes of vLLM's v1 Scheduler that StepRecorder reads."""

    def __init__(self, prompts: dict[str, int], free_blocks: int):
        self.requests = {rid: SimpleNamespace(num_prompt_tokens=n) for rid, n in prompts.items()}
        self.kv_cache_manager = SimpleNamespace(
            block_pool=SimpleNamespace(get_num_free_blocks=lambda: free_blocks))
        self.running, self.waiting = [1, 2, 3], []
        self.output = None

    def schedule(self):
        return self.output


def test_step_recorder_reads_exact_shapes():
    sched = _FakeScheduler({"new": 300, "chunked": 5000, "dec1": 50, "dec2": 70}, free_blocks=90)
    rec = StepRecorder(sched, num_gpu_blocks=101)
    sched_output = SimpleNamespace(
        scheduled_new_reqs=[SimpleNamespace(req_id="new", num_computed_tokens=0)],
        scheduled_cached_reqs=SimpleNamespace(req_ids=["chunked", "dec1", "dec2"],
                                              num_computed_tokens=[2048, 60, 99],
                                              resumed_req_ids=set()),
        num_scheduled_tokens={"new": 300, "chunked": 1024, "dec1": 1, "dec2": 1},
        total_num_scheduled_tokens=1326, scheduled_spec_decode_tokens={})
    sched.output = sched_output
    assert sched.schedule() is sched_output  # the wrapper passes the output through
    captured = rec.take()
    assert captured["chunks"] == [(300, 0), (1024, 2048)]
    assert captured["decode_contexts"] == [60, 99]
    assert captured["kv_blocks_used"] == 100 - 90
    stats = SimpleNamespace(num_running_reqs=4, num_waiting_reqs=0, kv_cache_usage=0.1,
                            iteration_details=SimpleNamespace(num_ctx_tokens=1324,
                                                              num_generation_tokens=2,
                                                              elapsed_ms=3.0))
    row = step_row(captured, stats)
    expected = StepFeatures.from_shapes([BatchShape(((300, 0), (1024, 2048)), (60, 99))])
    for name, values in expected.as_dict().items():
        assert row[name] == values[0], name
    assert row["kind"] == "mixed" and row["prefill_ctx_sum"] == 2048
    assert row["decode_kv_sq_sum"] == 60 ** 2 + 99 ** 2
    assert row["vllm_ctx_tokens"] + row["vllm_gen_tokens"] == row["scheduled_tokens"]
    assert row["running"] == 4 and rec.take() is None


def test_contention_rule():
    assert not contention.is_contended(0.0004, 0.005)
    assert contention.is_contended(0.004, 0.005)
    assert not contention.is_contended(0.004, 0.2)
    assert not contention.is_contended(float("nan"), 0.1)
    probe = contention.RunQueueProbe()
    probe.start()
    sum(i * i for i in range(200_000))
    value = probe.stop()
    assert math.isnan(value) or value >= 0


def test_profile_cli_dry_run_and_errors(tmp_path):
    from rllmsim.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["profile", str(TINY), "--grid", "ci", "--dry-run",
                               "--block-size", "16"])
    assert res.exit_code == 0, res.output
    assert "planned_steps" in res.output and "peak KV blocks of 16" in res.output
    res = runner.invoke(main, ["profile", str(tmp_path), "--dry-run"])
    assert res.exit_code == 2 and "model config not found" in res.output
    res = runner.invoke(main, ["profile", str(TINY), "--grid", "ci", "--max-num-seqs", "8",
                               "--max-model-len", "4096"])
    assert res.exit_code == 2 and "max_num_seqs is 8" in res.output
    res = runner.invoke(main, ["profile", str(TINY), "--kv-cache-memory", "lots"])
    assert res.exit_code == 2 and "cannot read 'lots'" in res.output


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here; the missing-vllm error cannot show")
def test_profile_cli_without_vllm(tmp_path):
    from rllmsim.cli import main

    res = CliRunner().invoke(main, ["profile", str(TINY), "--grid", "ci", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert ("vllm is not installed: install rllmsim[profile] on a GPU host or "
            "rllmsim[profile-cpu] here") in res.output
    assert not list(tmp_path.iterdir())
