"""Run directories given to `rllmsim report` are data (issue #13): a damaged file is one line,
everything a report shows is escaped, and a killed writer's staging dir is cleaned next time.
Also: in every run's output time never goes backwards, whatever the cost model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bad_input_helpers import SIMULATE, assert_refused, run_in

SCRIPT = "</p><script>alert(1)</script>"


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    result = run_in(root, [*SIMULATE, "--num-requests", "20", "--out", root / "run"])
    assert result.exit_code == 0, result.output
    return root / "run"


def _copy(good_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    return run


DAMAGE = {
    "summary not json": ("summary.json", "{broken"),
    "summary list": ("summary.json", "[1, 2]"),
    "summary config list": ("summary.json", '{"config": [1]}'),
    "summary deployment text": ("summary.json", '{"config": {"deployment": "x"}}'),
    "summary kv number": ("summary.json", '{"kv": 5}'),
    "summary binary": ("summary.json", b"\xff\xfe\x00"),
    "requests broken": ("requests.parquet", b"PAR1 broken"),
    "requests empty": ("requests.parquet", b""),
    "timeline broken": ("timeline.parquet", b"PAR1 broken"),
    "timeline text": ("timeline.parquet", "a,b\n1,2\n"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_report_on_a_damaged_run_refused(good_run: Path, tmp_path: Path, name: str) -> None:
    run = _copy(good_run, tmp_path)
    file, content = DAMAGE[name]
    (run / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_refused(tmp_path, ["report", run], (file, "run"))


def test_report_on_a_foreign_table_refused(good_run: Path, tmp_path: Path) -> None:
    run = _copy(good_run, tmp_path)
    pd.DataFrame({"x": [1]}).to_parquet(run / "requests.parquet")
    assert_refused(tmp_path, ["report", run], "requests.parquet")


@pytest.mark.parametrize("content", ["{broken", "[1]", '{"settings": 5}', '{"settings": {"model": 1}}'])
def test_report_on_a_damaged_plan_refused(tmp_path: Path, content: str) -> None:
    plan = tmp_path / "plan"
    plan.mkdir()
    (plan / "plan.json").write_text(content)
    pd.DataFrame({"x": [1]}).to_parquet(plan / "candidates.parquet")
    assert_refused(tmp_path, ["report", plan], "plan")


def test_report_on_a_damaged_sweep_refused(tmp_path: Path) -> None:
    sweep = tmp_path / "sw"
    sweep.mkdir()
    (sweep / "results.parquet").write_bytes(b"PAR1 broken")
    assert_refused(tmp_path, ["report", sweep], "results.parquet")


def _poison(value):
    """Every string in a summary replaced by a script tag."""
    if isinstance(value, dict):
        return {k: _poison(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v) for v in value]
    return SCRIPT if isinstance(value, str) else value


def test_every_field_a_report_shows_is_escaped(good_run: Path, tmp_path: Path) -> None:
    run = _copy(good_run, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(_poison(summary)))
    requests = pd.read_parquet(run / "requests.parquet")
    for column in requests.columns:
        if isinstance(requests[column].iloc[0], str):
            requests[column] = SCRIPT
    requests.to_parquet(run / "requests.parquet")
    result = run_in(tmp_path, ["report", run])
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    assert "<script>alert(1)" not in page and "</p><script>" not in page


def test_a_killed_writers_staging_dir_is_cleaned_on_the_next_run(tmp_path: Path) -> None:
    stale = tmp_path / ".run.pid999999999.abcd.tmp"  # no such process
    stale.mkdir()
    (stale / "summary.json").write_text("{}")
    result = run_in(tmp_path, [*SIMULATE, "--no-timeline", "--out", tmp_path / "run"])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and (tmp_path / "run" / "summary.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


COST_MODELS = ["roofline", "auto", str(Path(__file__).resolve().parents[1] / "calibration" / "tiny-llama-cpu.json")]


@pytest.mark.parametrize("cost_model", COST_MODELS, ids=["roofline", "auto", "calibrated"])
@pytest.mark.parametrize("arrival", ["gamma", "closed-loop"])
def test_time_never_goes_backwards(tmp_path: Path, cost_model: str, arrival: str) -> None:
    args = ["simulate", "--cost-model", cost_model, "--dataset", "gsm8k", "--rate", "50", "--num-requests", "40",
            "--max-tokens", "256", "--arrival", arrival, "--max-concurrency", "8", "--out", tmp_path / "run"]
    if cost_model != COST_MODELS[2]:
        args += ["--gpu", "h100", "--model", "deepseek-r1-distill-qwen-1.5b", "--num-gpu-blocks-override", "64",
                 "--max-model-len", "1024"]
    result = run_in(tmp_path, args)
    assert result.exit_code == 0, result.output
    req = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    done = req.dropna(subset=["finish_s"])
    assert len(done)
    assert (done["arrival_s"] <= done["first_scheduled_s"]).all()
    assert (done["first_scheduled_s"] <= done["first_token_s"]).all()
    assert (done["first_token_s"] <= done["finish_s"]).all()
    timeline = pd.read_parquet(tmp_path / "run" / "timeline.parquet")
    assert (timeline["end_s"] > timeline["start_s"]).all()
