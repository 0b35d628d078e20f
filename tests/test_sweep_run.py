"""Running sweeps: one row per run, failures recorded, resume after a kill, and the same results
in this process, on a process pool and on Ray."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.sweep.driver import run_sweep
from rllmsim.sweep.executors import InlineExecutor, LocalExecutor
from rllmsim.sweep.results import RESULTS_FILE, read_results
from rllmsim.sweep.runner import VOLATILE_COLUMNS
from rllmsim.sweep.spec import parse_spec

#: 48 runs: 2 GPUs x 2 TP x 2 KV dtypes x 3 rates x 2 seeds, small enough to take ~0.05 s each.
GRID_48 = """
name: grid48
seeds: [0, 1]
deployment:
  model: deepseek-r1-distill-qwen-1.5b
  gpu: [h100-sxm, a100-80gb]
  tp: [1, 2]
  kv_cache_dtype: [auto, fp8]
  max_model_len: 16384
workload:
  rate: [2, 8, 32]
  dataset: math-500
  max_tokens: 4096
  num_requests: 40
slos: {ttft_p99: 2s, tpot_p99: 4ms}
"""

#: 4 runs, one of which cannot run (a 70B model does not fit one L4).
WITH_FAILURE = """
deployment:
  model: [deepseek-r1-distill-qwen-1.5b, deepseek-r1-distill-llama-70b]
  gpu: l4
  max_model_len: 8192
workload:
  rate: [1, 4]
  max_tokens: 2048
  num_requests: 20
"""


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in VOLATILE_COLUMNS if c in frame.columns])
    return frame.sort_values("key").reset_index(drop=True)


def test_failed_runs_are_recorded_and_do_not_stop_the_sweep(tmp_path):
    spec = parse_spec(WITH_FAILURE)
    outcome = run_sweep(spec, tmp_path, InlineExecutor())
    assert (outcome.total, outcome.ran, outcome.failed) == (4, 4, 2)
    frame = read_results(tmp_path)
    assert list(frame["run_index"]) == [0, 1, 2, 3]
    ok, bad = frame[frame["status"] == "ok"], frame[frame["status"] == "error"]
    assert set(ok["model"]) == {"deepseek-r1-distill-qwen-1.5b"}
    assert set(bad["model"]) == {"deepseek-r1-distill-llama-70b"}
    assert all(e.startswith("ConfigError: ") and "does not fit on l4" in e for e in bad["error"])
    assert ok["requests_completed"].tolist() == [20, 20]
    assert (ok["cost_per_hour_usd"] > 0).all() and ok["ttft_s_p99"].notna().all()
    assert bad["ttft_s_p99"].isna().all()
    # resuming runs nothing: failures are results too, unless asked to retry them
    again = run_sweep(spec, tmp_path, InlineExecutor())
    assert (again.skipped, again.ran) == (4, 0)
    retry = run_sweep(spec, tmp_path, InlineExecutor(), retry_failed=True)
    assert (retry.skipped, retry.ran, retry.failed) == (2, 2, 2)
    assert len(read_results(tmp_path)) == 4


def test_resume_runs_only_new_grid_points_and_keeps_old_rows(tmp_path):
    small = WITH_FAILURE.replace("deepseek-r1-distill-llama-70b", "qwen2.5-7b-instruct")
    run_sweep(parse_spec(small), tmp_path, InlineExecutor())
    before = read_results(tmp_path)
    grown = parse_spec(small.replace("rate: [1, 4]", "rate: [1, 4, 8]"))
    outcome = run_sweep(grown, tmp_path, InlineExecutor())
    assert (outcome.skipped, outcome.ran) == (4, 2)
    after = read_results(tmp_path)
    assert len(after) == 6 and list(after["run_index"]) == list(range(6))
    kept = after.set_index("key").loc[before["key"]]
    assert list(kept["finished_at"]) == list(before["finished_at"])  # not re-run


def test_save_runs_writes_run_directories_the_report_can_read(tmp_path):
    spec = parse_spec(WITH_FAILURE.replace("rate: [1, 4]", "rate: [1]"))
    run_sweep(spec, tmp_path, InlineExecutor(), save_runs=True)
    frame = read_results(tmp_path)
    ok_key = frame.loc[frame["status"] == "ok", "key"].item()
    run_dir = tmp_path / "runs" / ok_key
    assert {p.name for p in run_dir.iterdir()} == {"requests.parquet", "timeline.parquet", "summary.json",
                                                   "bench.json"}  # as simulate writes it


def test_48_runs_inline_and_on_a_process_pool_agree(tmp_path):
    spec = parse_spec(GRID_48)
    assert len(spec.expand()) == 48
    run_sweep(spec, tmp_path / "pool", LocalExecutor(2))
    pool = read_results(tmp_path / "pool")
    assert len(pool) == 48 and (pool["status"] == "ok").all()
    assert pool["slo_ok"].any() and not pool["slo_ok"].all()  # the grid crosses the SLO boundary
    inline_spec = parse_spec(GRID_48.replace("seeds: [0, 1]", "seeds: [1]"))  # half, to keep it quick
    run_sweep(inline_spec, tmp_path / "inline", InlineExecutor())
    inline = read_results(tmp_path / "inline")
    pd.testing.assert_frame_equal(comparable(inline.drop(columns="run_index")),
                                  comparable(pool[pool["seed"] == 1].drop(columns="run_index")))


def test_48_runs_on_local_ray_match_the_process_pool(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'rllmsim[ray]')")
    from rllmsim.sweep.executors import RayExecutor

    spec = parse_spec(GRID_48)
    run_sweep(spec, tmp_path / "local", LocalExecutor(2))
    executor = RayExecutor(num_cpus=2)
    try:
        run_sweep(spec, tmp_path / "ray", executor)
        assert ray.is_initialized()
    finally:
        executor.close()
    assert not ray.is_initialized()
    local, on_ray = read_results(tmp_path / "local"), read_results(tmp_path / "ray")
    assert len(on_ray) == 48 and (on_ray["status"] == "ok").all()
    pd.testing.assert_frame_equal(comparable(local), comparable(on_ray))


def _rows(path: Path) -> int:
    try:
        return len(pd.read_parquet(path / RESULTS_FILE))
    except (FileNotFoundError, OSError, ValueError):
        return 0


def test_killed_sweep_resumes_with_only_the_missing_runs(tmp_path):
    spec_path = tmp_path / "grid.yaml"
    spec_path.write_text(GRID_48.replace("num_requests: 40", "num_requests: 150"))
    out = tmp_path / "out"
    command = [sys.executable, "-c", "from rllmsim.cli import main; main()", "sweep", str(spec_path), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while _rows(out) < 8 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the sweep and its pool workers, mid-run
        process.wait(timeout=30)
    done_before = _rows(out)
    assert 8 <= done_before < 48, f"the sweep should have been killed midway ({done_before} rows)"
    before = read_results(out)
    assert before["key"].is_unique

    result = CliRunner().invoke(main, ["sweep", str(spec_path), "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    match = re.search(r"(\d+) already in .*, (\d+) to run", result.output)
    assert match and int(match.group(1)) == done_before and int(match.group(2)) == 48 - done_before
    assert f"{48 - done_before} runs done (0 failed), {done_before} skipped" in result.output
    after = read_results(out)
    assert len(after) == 48 and after["key"].is_unique and (after["status"] == "ok").all()
    assert sorted(after["run_index"]) == list(range(48))
    assert not list(out.glob(".*.tmp"))  # no temp file of a write the kill interrupted is left
    kept = after.set_index("key").loc[before["key"]]
    assert list(kept["finished_at"]) == list(before["finished_at"])
    assert list(kept["worker"]) == list(before["worker"])  # the first process's rows, untouched
    # a third run has nothing left to do
    final = CliRunner().invoke(main, ["sweep", str(spec_path), "--out", str(out)])
    assert "48 already in" in final.output and "nothing to do" in final.output
