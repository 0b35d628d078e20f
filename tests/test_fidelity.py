"""Every run names the nearest validated case and its measured error (rllmsim/fidelity.py)."""

from __future__ import annotations

import math

import pytest

from rllmsim.deployment import Deployment
from rllmsim.fidelity import fidelity, nearest_case, run_cost_model, validated_cases
from rllmsim.specs import load_gpu, load_model


def _deployment(model: str, gpu: str, tp: int = 1) -> Deployment:
    return Deployment(model=load_model(model), gpu=load_gpu(gpu), tp=tp)


def test_the_shipped_table_holds_the_validated_cases() -> None:
    cases = validated_cases()
    assert {c["case"] for c in cases} >= {"RTXPRO6000_Llama-3.1-8B", "RTXPRO6000_Qwen3-32B",
                                         "vllm_h100_sxm.csv: Qwen/Qwen3-32B"}
    for case in cases:
        assert set(case["errors"]) == {"ttft", "tpot", "e2el"}
        assert all(math.isfinite(v) for v in case["errors"].values())
        load_gpu(case["gpu"]), load_model(case["model"])  # every entry names catalog entries


def test_nearest_case_by_hand() -> None:
    # 7.6B dense on H100 (3350 GB/s): Llama-3.1-8B on RTX PRO 6000 (1792 GB/s) is at
    # ln(3350/1792) + ln(8.03/7.62) = 0.63 + 0.05; Qwen3-32B on H100 at 0 + ln(32.76/7.62) = 1.46
    assert nearest_case(_deployment("deepseek-r1-distill-qwen-7b", "h100-sxm"))["case"] == "RTXPRO6000_Llama-3.1-8B"
    # 32B on H100: the closed-loop Qwen3-32B rows (distance 0) beat the RTX replay (0.63)
    assert nearest_case(_deployment("deepseek-r1-distill-qwen-32b", "h100-sxm", 2))["case"] == \
        "vllm_h100_sxm.csv: Qwen/Qwen3-32B"
    # 32B on RTX PRO 6000: the replay of that very model
    assert nearest_case(_deployment("qwen3-32b", "rtx-pro-6000", 2))["case"] == "RTXPRO6000_Qwen3-32B"
    # a MoE against a dense case pays the kind gap: gpt-oss-20b (20.91B) on H100 is at
    # ln(32.76/20.91) + 1.0 = 1.45 from the Qwen3-32B rows, ln(116.83/20.91) = 1.72 from gpt-oss-120b's
    assert nearest_case(_deployment("gpt-oss-20b", "h100-sxm"))["case"] == "vllm_h100_sxm.csv: Qwen/Qwen3-32B"
    # ... and a large MoE finds the MoE rows: DeepSeek-R1 (671B) on H200 -> MiniMax-M2.5 (228.7B)
    assert nearest_case(_deployment("deepseek-r1", "h200", 8))["model"] == "minimax-m2.5"


def test_the_line_names_the_case_and_flags_an_unvalidated_cost_model() -> None:
    dep = _deployment("qwen3-32b", "rtx-pro-6000", 2)
    kernels = fidelity(dep, {"kind": "kernels", "tables": {"location": "shipped (rtx-pro-6000)"}})
    assert kernels["nearest_case"] == "RTXPRO6000_Qwen3-32B" and kernels["cost_model"] == "kernels"
    assert "TTFT +1.0 %" in kernels["line"] and "not validated" not in kernels["line"]
    roofline = fidelity(dep, {"kind": "roofline"})
    assert "this run's roofline model is not validated" in roofline["line"]
    fitted = {"kind": "kernels", "tables": {"location": "fitted roofline (no kernel tables for mi355x; ...)"}}
    assert run_cost_model(fitted) == "kernels (fitted roofline)"
    assert run_cost_model({"kind": "speculative", "target": {"kind": "roofline"}}) == "roofline"


@pytest.mark.parametrize("args,expected", [((), "llama-3.1-8b TP 1 on rtx-pro-6000"),
                                           (("--cost-model", "roofline"), "roofline model is not validated")])
def test_simulate_prints_and_saves_the_fidelity_line(tmp_path, args, expected) -> None:
    import json

    from click.testing import CliRunner

    from rllmsim.cli import main
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["simulate", "--num-requests", "10", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    line = json.loads((out / "summary.json").read_text())["fidelity"]["line"]
    assert expected in line and line in result.output


def test_a_device_without_datasheet_bandwidth_gets_no_nearest_case() -> None:
    from rllmsim.specs import uncatalogued_gpu

    dep = Deployment(model=load_model("llama-3.1-8b"), gpu=uncatalogued_gpu("a CPU"), tp=1, num_gpu_blocks_override=1000, max_model_len=4096)
    assert dep.gpu.hbm_bandwidth_gbps <= 0 and nearest_case(dep) is None
    assert fidelity(dep, {"kind": "regression"}) is None
