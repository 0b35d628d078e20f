"""Bad input reaches the user as one line and exit 2, never a traceback (issue #11's list): an
unsupported architecture, a sliding window wider than the context, expert parallelism on a dense
model. The all-skipped closed-loop CSV is in tests/test_validate_cli.py."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.specs.model_catalog import SUPPORTED_ARCHITECTURES


def _simulate(tmp_path: Path, *args: str):
    """`rllmsim simulate` on a small workload; the error must come before any simulation."""
    return CliRunner().invoke(main, ["simulate", "--gpu", "h100", "--dataset", "gsm8k", "--rate", "4",
                                     "--num-requests", "5", "--out", str(tmp_path / "run"), *args])


def _one_line_exit_2(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    return result.output


def _catalog_config(name: str, **changes) -> dict:
    raw = json.loads(resources.files("rllmsim.specs").joinpath("models", f"{name}.json").read_text())
    raw.pop("_rllmsim")
    raw.update(changes)
    return raw


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "model" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config))
    return path


def test_unsupported_architecture_names_itself_and_the_supported_ones(tmp_path: Path) -> None:
    config = _catalog_config("qwen3-8b", architectures=["RwkvForCausalLM"])
    line = _one_line_exit_2(_simulate(tmp_path, "--model", str(_write(tmp_path, config))))
    assert "RwkvForCausalLM" in line and all(arch in line for arch in SUPPORTED_ARCHITECTURES)
    assert not (tmp_path / "run").exists()


def test_sliding_window_wider_than_the_context_is_refused(tmp_path: Path) -> None:
    # gpt-oss alternates 128-token sliding layers with full ones; a window past the context is a typo
    config = _catalog_config("gpt-oss-20b", sliding_window=200_000)
    assert config["max_position_embeddings"] < 200_000
    line = _one_line_exit_2(_simulate(tmp_path, "--model", str(_write(tmp_path, config))))
    assert f"sliding_window 200000 is larger than max_position_embeddings {config['max_position_embeddings']}" in line
    assert f"set sliding_window <= {config['max_position_embeddings']}" in line


def test_a_window_equal_to_the_context_and_qwens_inert_window_still_load(tmp_path: Path) -> None:
    from rllmsim.specs import load_model

    context = _catalog_config("gpt-oss-20b")["max_position_embeddings"]
    spec = load_model(_write(tmp_path, _catalog_config("gpt-oss-20b", sliding_window=context)))
    assert spec.attention.sliding_window == context
    # Qwen2.5 ships sliding_window 131072 over a 32768 context, inert while use_sliding_window is false
    qwen = _catalog_config("qwen2.5-7b-instruct")
    assert qwen["sliding_window"] > qwen["max_position_embeddings"] and not qwen["use_sliding_window"]
    assert not load_model("qwen2.5-7b-instruct").attention.has_sliding_window


def test_expert_parallel_on_a_dense_model_is_refused(tmp_path: Path) -> None:
    line = _one_line_exit_2(_simulate(tmp_path, "--model", "qwen3-8b", "--enable-expert-parallel"))
    assert "enable_expert_parallel needs a mixture-of-experts model" in line and "qwen3-8b is dense" in line
    assert not (tmp_path / "run").exists()
