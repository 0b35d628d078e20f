"""Replaying a vllm bench result with --trace simulates the model it measured (its model_id)
unless --model says otherwise; a disagreement or an unknown id is one warning line on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.commands.options import DEFAULT_MODEL
from rllmsim.workload.traces import bench_model_id

REAL = Path(__file__).parent / "data" / "vllm_bench_save_result_real.json"
HF_ID = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


def _bench(tmp_path: Path, model_id: str) -> Path:
    data = json.loads(REAL.read_text())
    data["model_id"] = model_id
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def _simulate(tmp_path: Path, trace: Path, *args: str):
    result = CliRunner().invoke(main, ["simulate", "--gpu", "h100", "--trace", str(trace), "--no-timeline",
                                       *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    return summary["config"]["deployment"]["model"], result.stderr


def test_model_id_picks_the_model_when_model_is_not_given(tmp_path):
    model, stderr = _simulate(tmp_path, _bench(tmp_path, HF_ID))
    assert model == "deepseek-r1-distill-qwen-1.5b" and "warning" not in stderr


def test_an_unknown_model_id_keeps_the_default_with_one_warning(tmp_path):
    assert bench_model_id(REAL) == "/tmp/edges_real/model/tiny-llama"  # a path on the machine that ran it
    model, stderr = _simulate(tmp_path, _bench(tmp_path, "acme/Uncatalogued-7B"))
    assert model == DEFAULT_MODEL
    warning = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "'acme/Uncatalogued-7B'" in warning[0] and "--model" in warning[0]


@pytest.mark.parametrize("given, warns", [("deepseek-r1-distill-qwen-7b", True),
                                          ("deepseek-r1-distill-qwen-1.5b", False), (HF_ID, False)])
def test_a_given_model_wins_and_a_disagreement_warns(tmp_path, given, warns):
    model, stderr = _simulate(tmp_path, _bench(tmp_path, HF_ID), "--model", given)
    assert model == ("deepseek-r1-distill-qwen-7b" if warns else "deepseek-r1-distill-qwen-1.5b")
    lines = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == int(warns)
    if warns:
        assert f"--model {given} differs from model_id {HF_ID!r}" in lines[0]


def test_other_trace_formats_record_no_model():
    assert bench_model_id(Path(__file__).parent / "data" / "generic_small.csv") is None
