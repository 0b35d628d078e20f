"""Kernel correction: `rllmsim calibrate --on kernels` fits op scales and host times on top of the
kernel model from a profile, and every model on that GPU is then timed with them."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.cost.features import BatchShape, StepFeatures
from rllmsim.cost.kernel_calibration import (KernelCorrection, calibrate_kernels, load_kernel_correction,
                                             profiled_deployment)
from rllmsim.cost.kernels.host import HostParams
from rllmsim.cost.kernels.model import OP_GROUPS, KernelCostModel, OpScales
from rllmsim.cost.kernels.tables import shipped_tables
from rllmsim.cost.profile_table import read_profile, step_kind
from rllmsim.cost.regression import save_calibration
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.profile.writer import ProfileWriter
from rllmsim.specs import load_gpu, load_model

MODEL = "deepseek-r1-distill-qwen-7b"
TRUE_SCALES = OpScales(linear=1.25, attention=0.85, per_sequence=1.1)
TRUE_HOST = HostParams(step_s=1.5e-3, per_seq_s=20e-6, per_token_s=0.0)
NOISE = 0.015
META = {"model": MODEL, "dtype": "bfloat16", "tp": 1, "kv_cache_dtype": "auto", "kv_cache_dtype_resolved": "bfloat16",
        "block_size": 16, "num_gpu_blocks": 60000, "max_num_batched_tokens": 8192, "max_num_seqs": 256,
        "max_model_len": 16384, "enforce_eager": False, "async_scheduling": False,
        "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}, "vllm_version": "synthetic"}


def _model_config(name: str) -> dict:
    return json.loads(resources.files("rllmsim.specs").joinpath("models", f"{name}.json").read_text())


def _shapes(rng: np.random.Generator) -> list[tuple[str, BatchShape]]:
    """A grid like the profiler's `gpu` grid: prefill, decode and mixed cells with repetitions."""
    out = []
    for length in (16, 128, 512, 1024, 2048, 4096, 8192):
        for n in (1, 2, 4):
            if length * n > 8192:
                continue
            for _ in range(3):
                out.append((f"prefill/L{length}xN{n}", BatchShape(((length, 0),) * n)))
    for batch in (1, 4, 16, 32, 64, 128, 256):
        for context in (256, 1024, 4096, 8192):
            for k in range(6):
                contexts = tuple(int(context + k + d) for d in rng.integers(0, 8, size=batch))
                out.append((f"decode/B{batch}xC{context}", BatchShape(decode_contexts=contexts)))
            for chunk in (64, 512, 2048):
                out.append((f"decode/B{batch}xC{context}",
                            BatchShape(((chunk, int(rng.integers(0, 2)) * chunk),), decode_contexts=(context + 8,) * batch)))
    return out


def write_kernel_profile(out_dir: Path, name: str = "r1-qwen-7b-h100", noise: float = NOISE, seed: int = 0) -> Path:
    """Steps timed by the kernel model of the profiled deployment with TRUE_SCALES and TRUE_HOST,
    synchronously (as the profiler steps the engine), times seeded log-normal noise."""
    meta = dict(META, model_config=_model_config(MODEL))
    deployment, tables = profiled_deployment(meta)
    truth = KernelCostModel(deployment, tables, host=TRUE_HOST, scales=TRUE_SCALES)
    rng = np.random.default_rng(seed)
    shapes = _shapes(rng)
    features = StepFeatures.from_shapes(s for _, s in shapes)
    wall = truth.step_time(features) * rng.lognormal(0.0, noise, size=len(features))
    writer = ProfileWriter(out_dir, name)
    writer.update_metadata(**meta)
    columns = features.as_dict()
    for i, (cell, _) in enumerate(shapes):
        row = {k: int(v[i]) for k, v in columns.items()}
        kind = step_kind(row["prefill_seqs"], row["decode_seqs"])
        row.update(step=i, cell=cell, phase=kind, wall_s=float(wall[i]), kind=kind, kv_blocks_used=1, running=1,
                   waiting=0, contended=False)
        writer.add(row)
    writer.close("complete")
    return out_dir / name


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory) -> Path:
    return write_kernel_profile(tmp_path_factory.mktemp("profiles"))


@pytest.fixture(scope="module")
def doc(profile_path) -> dict:
    return calibrate_kernels(read_profile(profile_path), "r1-qwen-7b-h100")


@pytest.fixture(scope="module")
def calibration(doc, tmp_path_factory) -> Path:
    return save_calibration(doc, tmp_path_factory.mktemp("cal") / "r1-qwen-7b-h100.json")


def _deployment(model: str, gpu: str = "h100-sxm", **kw) -> Deployment:
    return Deployment(model=load_model(model), gpu=load_gpu(gpu), **kw)


# -- the model ------------------------------------------------------------------------------------
def test_unit_scales_change_nothing_and_scales_multiply_their_groups() -> None:
    tables = shipped_tables("h100-sxm")
    d = _deployment("qwen3-8b", async_scheduling=False)
    rng = np.random.default_rng(1)
    shapes = [BatchShape(tuple((int(c), int(x)) for c, x in rng.integers(1, 3000, (rng.integers(0, 2), 2))),
                         tuple(int(x) for x in rng.integers(1, 9000, rng.integers(0 if i % 2 else 1, 200))))
              for i in range(60)]
    f = StepFeatures.from_shapes(shapes)
    plain = KernelCostModel(d, tables)
    unit = KernelCostModel(d, tables, scales=OpScales())
    assert plain.step_time(f).tolist() == unit.step_time(f).tolist()
    assert "scales" not in unit.provenance()
    groups = plain.op_group_seconds(f)
    assert groups.shape == (60, len(OP_GROUPS)) and np.all(groups[:, 0] > 0) and np.all(groups[:, 2] > 0)
    host = HostParams().seconds(f.prefill_seqs + f.decode_seqs, f.total_tokens)
    np.testing.assert_allclose(groups.sum(axis=1) + host, plain.step_time(f), rtol=1e-12)
    scaled = KernelCostModel(d, tables, scales=TRUE_SCALES)
    coef = np.array(list(TRUE_SCALES.as_dict().values()))
    np.testing.assert_allclose(scaled.step_time(f), groups @ coef + host, rtol=1e-12)
    # the design matrix stays unscaled on a scaled model
    np.testing.assert_allclose(scaled.op_group_seconds(f), groups, rtol=1e-12)
    assert scaled.provenance()["scales"] == TRUE_SCALES.as_dict()


def test_scaled_decode_runs_cost_each_step_as_it_costs_alone() -> None:
    """The memoised decode tables of fast-forward carry the attention scale."""
    cost = KernelCostModel(_deployment("qwen3-8b"), shipped_tables("h100-sxm"), scales=TRUE_SCALES)
    contexts = np.array([37 * 1000 + 41 * m for m in range(40)], dtype=np.int64)
    run = cost.step_time(StepFeatures.decode_run(37, contexts))
    alone = [cost.step_time(StepFeatures.from_shapes([BatchShape(decode_contexts=(int(c) - 36 * 10,) + (10,) * 36)]))[0]
             for c in contexts]
    assert run.tolist() == alone


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", True])
def test_op_scales_refuse_what_is_not_a_scale(bad) -> None:
    with pytest.raises(ConfigError, match="op scale linear"):
        OpScales(linear=bad)


# -- the fit --------------------------------------------------------------------------------------
def test_fit_recovers_the_scales_and_host_times(doc) -> None:
    assert doc["scales"]["linear"] == pytest.approx(TRUE_SCALES.linear, rel=0.03)
    assert doc["scales"]["attention"] == pytest.approx(TRUE_SCALES.attention, rel=0.03)
    # lm_head + sampler are 1.6% of the steps and grow with sequences as host time does: the wall
    # times cannot tell a 1.1 scale from 40 us more host time, so the prior holds the scale at 1
    assert doc["fit"]["group_share_of_wall"]["per_sequence"] < 0.02
    assert doc["scales"]["per_sequence"] == pytest.approx(1.0, abs=0.01)
    assert doc["host"]["step_s"] == pytest.approx(TRUE_HOST.step_s, rel=0.05)
    assert doc["host"]["per_seq_s"] == pytest.approx(TRUE_HOST.per_seq_s, rel=0.05)
    assert doc["host"]["per_token_s"] < 1.5e-7  # none in the truth; the projections cost ~20 us a token
    assert doc["kind"] == "kernel-correction" and doc["gpu"] == "h100-sxm"
    assert doc["fit"]["deployment"]["model"] == MODEL and doc["profile"]["parquet_sha256"]


def test_heldout_error_is_the_noise_and_the_uncorrected_model_is_worse(doc) -> None:
    for split in ("random_20", "extrapolation"):
        block = doc["metrics"][split]
        assert block["n_train"] > 0 and block["n_test"] > 0, split
        # noise is 1.5% (MAPE ~1.2%); measured: random 1.15% vs 7.6% uncorrected, extrapolation 2.76% vs 4.92%
        assert block["corrected"]["mape_pct"] < 3.0, (split, block)
        assert block["uncorrected"]["mape_pct"] > 1.5 * block["corrected"]["mape_pct"], (split, block)


def test_calibration_times_another_model_on_the_same_gpu(calibration) -> None:
    correction = load_kernel_correction(calibration)
    assert isinstance(correction, KernelCorrection)
    d = _deployment("qwen3-8b", async_scheduling=False)
    corrected = correction.cost_model(d)
    plain = KernelCostModel(d, shipped_tables("h100-sxm"))
    f = StepFeatures.from_shapes([BatchShape(((2048, 0),)), BatchShape(decode_contexts=(3000,) * 64),
                                  BatchShape(((512, 1024),), decode_contexts=(700,) * 16)])
    groups = plain.op_group_seconds(f)
    coef = np.array([correction.scales.linear, correction.scales.attention, correction.scales.per_sequence])
    host = correction.host.seconds(f.prefill_seqs + f.decode_seqs, f.total_tokens)
    np.testing.assert_allclose(corrected.step_time(f), groups @ coef + host, rtol=1e-12)
    np.testing.assert_allclose(coef[:2], [TRUE_SCALES.linear, TRUE_SCALES.attention], rtol=0.03)
    prov = corrected.provenance()
    assert prov["kind"] == "kernels" and prov["model"] == "qwen3-8b"
    assert prov["calibration"]["name"] == "r1-qwen-7b-h100" and prov["calibration"]["extrapolating"] == []
    assert prov["host"]["step_s"] == pytest.approx(correction.host.step_s)


def test_another_gpu_is_refused_unless_extrapolation_is_allowed(calibration) -> None:
    correction = load_kernel_correction(calibration)
    d = _deployment("qwen3-8b", "b200")
    with pytest.raises(ConfigError, match="corrects the kernel tables of h100-sxm, not b200"):
        correction.cost_model(d)
    prov = correction.cost_model(d, allow_extrapolation=True).provenance()
    assert prov["gpu"] == "b200" and prov["calibration"]["extrapolating"] == ["gpu h100-sxm != b200"]


def test_a_regression_calibration_is_not_a_kernel_correction() -> None:
    shipped = Path(__file__).resolve().parents[1] / "calibration" / "tiny-llama-cpu.json"
    assert load_kernel_correction(shipped) is None


def test_a_profile_off_the_catalog_gpus_cannot_be_corrected(profile_path, tmp_path) -> None:
    parquet, meta = profile_path.with_suffix(".parquet"), json.loads(profile_path.with_suffix(".json").read_text())
    (tmp_path / "cpu.parquet").write_bytes(parquet.read_bytes())
    (tmp_path / "cpu.json").write_text(json.dumps(dict(meta, device={"type": "cpu", "name": "AMD EPYC"})))
    with pytest.raises(ConfigError, match="'AMD EPYC' is not a catalog GPU"):
        calibrate_kernels(read_profile(tmp_path / "cpu"), "cpu")
    out = tmp_path / "cal"
    result = CliRunner().invoke(main, ["calibrate", str(tmp_path / "cpu"), "--on", "kernels", "--out", str(out)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()
    result = CliRunner().invoke(main, ["calibrate", str(tmp_path / "cpu"), "--on", "auto", "--out", str(out), "--name", "cpu"])
    assert result.exit_code == 0 and json.loads((out / "cpu.json").read_text())["kind"] == "regression"


# -- the command line -----------------------------------------------------------------------------
def test_cli_calibrate_then_simulate_another_model(profile_path, tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["calibrate", str(profile_path), "--on", "kernels", "--out", str(tmp_path / "cal")])
    assert result.exit_code == 0, result.output
    assert "kernel correction" in result.output and "random_20" in result.output
    cal = tmp_path / "cal" / "r1-qwen-7b-h100.json"
    assert json.loads(cal.read_text())["kind"] == "kernel-correction"
    out = tmp_path / "run"
    args = ["simulate", "--cost-model", str(cal), "--model", "qwen3-8b", "--dataset", "gsm8k", "--rate", "4",
            "--num-requests", "40", "--max-tokens", "512", "--out", str(out)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    cost = summary["config"]["cost_model"]
    assert cost["kind"] == "kernels" and cost["gpu"] == "h100-sxm" and cost["model"] == "qwen3-8b"
    assert cost["calibration"]["kind"] == "kernel-correction" and cost["scales"]["linear"] == pytest.approx(1.25, rel=0.03)
    assert summary["requests"]["completed"] == 40
    refused = runner.invoke(main, args[:-1] + [str(tmp_path / "run2"), "--gpu", "b200"])
    assert refused.exit_code == 2 and "not b200" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not (tmp_path / "run2").exists()
    allowed = runner.invoke(main, args[:-1] + [str(tmp_path / "run3"), "--gpu", "b200", "--allow-extrapolation"])
    assert allowed.exit_code == 0, allowed.output


def test_cli_auto_picks_kernels_for_a_gpu_profile_and_regression_stays_the_default(profile_path, tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["calibrate", str(profile_path), "--on", "auto", "--out", str(tmp_path), "--name", "a"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a.json").read_text())["kind"] == "kernel-correction"
    result = runner.invoke(main, ["calibrate", str(profile_path), "--out", str(tmp_path), "--name", "r"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["kind"] == "regression"


@pytest.mark.parametrize("damage, field", [
    (lambda d: d["scales"].update(linear=-0.5), "scales.linear"),
    (lambda d: d["scales"].update(attention=float("nan")), "scales.attention"),
    (lambda d: d["host"].update(step_s="fast"), "host.step_s"),
    (lambda d: d["scales"].pop("per_sequence"), "per_sequence"),
    (lambda d: d.pop("host"), "'host'"),
    (lambda d: d.update(gpu=7), "'gpu'"),
    (lambda d: d.update(scales=[1, 1, 1]), "'scales'"),
])
def test_a_damaged_correction_ends_in_one_line_naming_the_field(calibration, tmp_path, damage, field) -> None:
    doc = json.loads(calibration.read_text())
    damage(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))  # NaN is written as JSON's NaN literal, which Python reads back
    result = CliRunner().invoke(main, ["simulate", "--cost-model", str(bad), "--num-requests", "5",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_validate_replays_a_recorded_run_with_the_correction(calibration, tmp_path) -> None:
    """validate accepts a kernel correction for the run's own model, on the GPU it corrects."""
    run = Path(__file__).parent / "data" / "validate" / "RTXPRO6000_Llama-3.1-8B-small"  # an RTX PRO 6000 run
    runner = CliRunner()
    refused = runner.invoke(main, ["validate", str(run), "--cost-model", str(calibration), "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2 and "not rtx-pro-6000" in refused.output, refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    out = tmp_path / "b"
    result = runner.invoke(main, ["validate", str(run), "--cost-model", str(calibration), "--allow-extrapolation",
                                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    cost = json.loads((out / "validation.json").read_text())["cost_model"]
    assert cost["kind"] == "kernels" and cost["gpu"] == "rtx-pro-6000"
    assert cost["calibration"]["extrapolating"] == ["gpu h100-sxm != rtx-pro-6000"]
