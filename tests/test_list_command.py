"""`rllmsim list models|gpus|datasets`: every catalog entry a flag accepts, with its source."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.specs import gpu_names, load_gpu, model_names
from rllmsim.workload import model_lengths, servegen
from rllmsim.workload.draw import check_dataset
from rllmsim.workload.lengths import dataset_names


def _rows(kind: str) -> dict[str, list[str]]:
    result = CliRunner().invoke(main, ["list", kind])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert set(lines[1].replace(" ", "")) == {"-"}  # header, rule, then one row per entry
    return {line.split()[0]: line.split() for line in lines[2:]}


def test_models_with_hf_ids_and_config_sources():
    rows = _rows("models")
    assert sorted(rows) == model_names()
    row = rows["deepseek-r1-distill-qwen-7b"]
    assert row[1] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" and row[2] == "7.62" and row[4] == "yes"
    assert row[5].startswith("huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    assert rows["deepseek-r1"][5].startswith("ai-dynamo/aiconfigurator@")  # a recorded config_source


def test_gpus_with_prices_and_their_sources():
    rows = _rows("gpus")
    assert sorted(rows) == sorted(gpu_names())
    h100 = load_gpu("h100-sxm")
    line = " ".join(rows["h100-sxm"])
    assert f"{h100.price_per_gpu_hour_usd:.2f}" in line and f"({h100.price_date})" in line
    assert h100.price_source.split()[0] in line


def test_datasets_list_every_name_a_run_accepts():
    rows = _rows("datasets")
    assert set(dataset_names()) | set(model_lengths.PROMPTS_FROM) | {servegen.DATASET} == set(rows)
    for name in rows:
        check_dataset(name)  # every listed name is accepted by --dataset
    assert rows["math-500"][1] == "reasoning" and "datasets.toml:" in rows["math-500"]
    assert "ServeGen" in " ".join(rows[servegen.DATASET])


def test_a_bad_kind_is_one_line_exit_2():
    result = CliRunner().invoke(main, ["list", "tokenizers"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "'tokenizers' is not one of 'datasets', 'gpus', 'models'" in result.output


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_help_points_at_rllmsim_list(command):
    text = CliRunner().invoke(main, [command, "--help"]).output
    assert "rllmsim list gpus" in text and "rllmsim list models" in text and "rllmsim specs" not in text
