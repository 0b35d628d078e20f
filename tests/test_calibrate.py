"""Calibration without vllm: a synthetic profile drawn from a known linear law plus noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rllmsim.cost.base import CostModel
from rllmsim.cost.features import FEATURE_NAMES, BatchShape, StepFeatures
from rllmsim.cost.fit_eval import error_metrics, extrapolation_split, random_split
from rllmsim.cost.profile_table import read_profile, step_kind
from rllmsim.cost.regression import (
    DEFAULT_FEATURES, RegressionCostModel, calibrate, save_calibration)
from rllmsim.cost.tree_json import tree_predict, tree_to_json
from rllmsim.errors import ConfigError
from rllmsim.profile.writer import ProfileWriter

TRUE_LAW = {
    "overhead": 4e-3,
    "prefill_tokens": 2.5e-5,
    "prefill_attn_pairs": 2e-9,
    "prefill_seqs": 8e-4,
    "decode_tokens": 1.2e-3,
    "decode_kv_tokens": 6e-8,
}
META = {"model": "tiny-llama", "dtype": "float32", "tp": 1, "kv_cache_dtype": "auto",
        "kv_cache_dtype_resolved": "float32", "block_size": 128, "num_gpu_blocks": 2048,
        "device": {"type": "cpu", "name": "synthetic"}, "vllm_version": "synthetic",
        "model_shape": {"hidden_size": 256, "num_hidden_layers": 4}}


def _shapes(rng: np.random.Generator) -> list[tuple[str, BatchShape]]:
    """A grid like the profiler's: prefill, decode and mixed cells with repetitions."""
    out = []
    for L in (16, 64, 256, 512, 1024, 2048):
        for n in (1, 2, 4, 8):
            for _ in range(3):
                out.append((f"prefill/L{L}xN{n}", BatchShape(((L, 0),) * n)))
    for b in (1, 2, 4, 8, 16, 32, 64):
        for c in (128, 512, 1024, 2048):
            for k in range(8):
                ctx = tuple(int(c + k + d) for d in rng.integers(0, 4, size=b))
                out.append((f"decode/B{b}xC{c}", BatchShape(decode_contexts=ctx)))
            for chunk in (32, 256, 1024):
                out.append((f"decode/B{b}xC{c}",
                            BatchShape(((chunk, int(rng.integers(0, 2)) * chunk),),
                                       decode_contexts=(c + 8,) * b)))
    return out


def true_time(features: StepFeatures) -> np.ndarray:
    t = np.full(len(features), TRUE_LAW["overhead"])
    for name in DEFAULT_FEATURES:
        t = t + TRUE_LAW[name] * getattr(features, name)
    return t


def write_synthetic_profile(out_dir: Path, name: str = "synthetic", noise: float = 0.02,
                            seed: int = 0, contended: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shapes = _shapes(rng)
    feats = StepFeatures.from_shapes(s for _, s in shapes)
    wall = true_time(feats) * rng.lognormal(0.0, noise, size=len(feats))
    writer = ProfileWriter(out_dir, name)
    writer.update_metadata(**META)
    cols = feats.as_dict()
    for i, (cell, _) in enumerate(shapes):
        row = {k: int(v[i]) for k, v in cols.items()}
        bad = i < contended
        row.update(step=i, cell=cell, phase=cell.split("/")[0], wall_s=float(wall[i]) * (10 if bad else 1),
                   kind=step_kind(row["prefill_seqs"], row["decode_seqs"]), kv_blocks_used=1,
                   running=1, waiting=0, contended=bad)
        writer.add(row)
    writer.close("complete")
    return out_dir / name


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic_profile(tmp_path_factory.mktemp("profiles"))


@pytest.fixture(scope="module")
def doc(synthetic) -> dict:
    return calibrate(read_profile(synthetic), "synthetic")


def test_recovers_known_coefficients(doc):
    assert doc["overhead_s"] == pytest.approx(TRUE_LAW["overhead"], rel=0.1)
    for name in DEFAULT_FEATURES:
        assert doc["coefficients"][name] == pytest.approx(TRUE_LAW[name], rel=0.15), name
    assert all(v >= 0 for v in doc["coefficients"].values())


def test_both_heldout_splits_reported(doc):
    for split in ("random_20", "extrapolation"):
        block = doc["metrics"][split]
        assert block["n_train"] > 0 and block["n_test"] > 0, split
        m = block["linear"]
        assert set(m) >= {"mape_pct", "p90_ape_pct", "r2", "n"}
        assert m["mape_pct"] < 5.0, (split, m)   # noise is 2%; the law is linear
        assert m["p90_ape_pct"] < 8.0, (split, m)
        assert m["r2"] > 0.98, (split, m)
    # the tree residual cannot help a linear law, so auto leaves it out
    assert doc["metrics"]["selected"] == "linear" and doc["residual"] is None


def test_json_round_trip_and_protocol(doc, tmp_path):
    path = save_calibration(doc, tmp_path / "cal" / "synthetic.json")
    text = path.read_text()
    assert "pickle" not in text.lower()
    model = RegressionCostModel.load(path)
    assert isinstance(model, CostModel)
    feats = StepFeatures.from_shapes([BatchShape(((512, 0),)), BatchShape(decode_contexts=(100,) * 8)])
    expected = doc["overhead_s"] + sum(doc["coefficients"][n] * getattr(feats, n).astype(float)
                                       for n in DEFAULT_FEATURES)
    np.testing.assert_allclose(model.step_time(feats), expected, rtol=1e-12)
    assert model.metadata["num_gpu_blocks"] == 2048 and model.metadata["block_size"] == 128
    prov = model.provenance()
    assert prov["kind"] == "regression" and prov["sha256"] and prov["num_gpu_blocks"] == 2048
    assert prov["heldout_mape_pct"]["random_20"] is not None
    json.loads(text)  # plain JSON


@pytest.mark.parametrize("residual", ["never", "always"])
def test_step_time_elementwise_single_vs_batch(synthetic, residual):
    model = RegressionCostModel(calibrate(read_profile(synthetic), "s", residual=residual))
    assert (model.residual is not None) == (residual == "always")
    rng = np.random.default_rng(3)
    shapes = [BatchShape(tuple((int(rng.integers(1, 3000)), int(rng.integers(0, 4000)))
                               for _ in range(int(rng.integers(0, 3)))),
                         tuple(int(x) for x in rng.integers(1, 9000, size=int(rng.integers(0, 70)))))
              for _ in range(300)]
    batch = model.step_time(StepFeatures.from_shapes(shapes))
    single = np.array([model.step_time(StepFeatures.from_shapes([s]))[0] for s in shapes])
    assert batch.dtype == np.float64 and batch.shape == (300,)
    assert np.array_equal(batch, single)
    assert np.all(batch > 0)
    # decode-only fast-forward rows cost the same as the shapes they describe
    ff = StepFeatures.decode_only(np.array([8, 8]), np.array([800, 1600]))
    direct = StepFeatures.from_shapes([BatchShape(decode_contexts=(100,) * 8),
                                       BatchShape(decode_contexts=(200,) * 8)])
    assert np.array_equal(model.step_time(ff), model.step_time(direct))


def test_monotone_extrapolation(doc):
    model = RegressionCostModel(doc)
    small = StepFeatures.decode_only(np.array([64]), np.array([64 * 2048]))
    big = StepFeatures.decode_only(np.array([1024]), np.array([1024 * 32768]))
    assert model.step_time(big)[0] > model.step_time(small)[0]


def test_check_matches(doc):
    model = RegressionCostModel(doc)
    model.check_matches("tiny-llama", 1, "float32")
    model.check_matches("org/Tiny-Llama", 1, "fp32", "auto")
    model.check_matches("tiny-llama", 1, "float32", "float32")
    with pytest.raises(ConfigError, match="tp 1 != 2"):
        model.check_matches("tiny-llama", 2, "float32")
    with pytest.raises(ConfigError, match="model tiny-llama"):
        model.check_matches("deepseek-r1-distill-qwen-7b", 1, "bfloat16", "fp8")
    model.check_matches("deepseek-r1-distill-qwen-7b", 1, "bf16", allow_extrapolation=True)
    assert len(model.provenance()["extrapolating"]) == 2


def test_contended_steps_are_left_out(tmp_path):
    path = write_synthetic_profile(tmp_path, "busy", contended=40)
    prof = read_profile(path)
    doc = calibrate(prof, "busy")
    assert doc["fit"]["contended_steps_in_profile"] == 40
    assert doc["fit"]["steps"] == len(prof.frame) - 40
    assert doc["metrics"]["random_20"]["linear"]["mape_pct"] < 5.0
    kept = calibrate(prof, "busy", keep_contended=True)
    assert kept["fit"]["steps"] == len(prof.frame)


def test_splits():
    train, test = random_split(100, 0.2, seed=1)
    assert test.sum() == 20 and not (train & test).any() and (train | test).all()
    frame = pd.DataFrame({n: 0 for n in FEATURE_NAMES}, index=range(8))
    frame["decode_seqs"] = [1, 2, 8, 16, 1, 2, 8, 16]
    frame["decode_kv_tokens"] = frame["decode_seqs"] * np.array([100, 100, 100, 100, 900, 900, 900, 900])
    frame["kind"] = "decode"
    tr, te = extrapolation_split(frame)
    assert list(np.flatnonzero(tr)) == [0, 1] and list(np.flatnonzero(te)) == [6, 7]


def test_error_metrics():
    m = error_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.1, 2.0, 3.6]))
    assert m["mape_pct"] == pytest.approx(20 / 3)
    assert m["n"] == 3 and m["r2"] < 1


def test_tree_json_matches_sklearn():
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = rng.integers(0, 1000, size=(400, 3)).astype(float)
    y = np.sin(X[:, 0] / 100) + (X[:, 1] > 500)
    tree = DecisionTreeRegressor(max_depth=4).fit(X, y)
    spec = tree_to_json(tree, ["a", "b", "c"])
    got = tree_predict(json.loads(json.dumps(spec)), {"a": X[:, 0], "b": X[:, 1], "c": X[:, 2]})
    np.testing.assert_array_equal(got, tree.predict(X))


def test_bad_inputs(tmp_path, synthetic):
    with pytest.raises(ConfigError, match="profile not found"):
        read_profile(tmp_path / "nope")
    with pytest.raises(ConfigError, match="unknown feature"):
        calibrate(read_profile(synthetic), "x", features=("prefill_tokens", "flops"))
    with pytest.raises(ConfigError, match="calibration file not found"):
        RegressionCostModel.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="format"):
        RegressionCostModel.load(tmp_path / "bad.json")
    frame = pd.read_parquet(str(synthetic) + ".parquet").drop(columns=["decode_kv_tokens"])
    frame.to_parquet(tmp_path / "cut.parquet")
    (tmp_path / "cut.json").write_text(Path(str(synthetic) + ".json").read_text())
    with pytest.raises(ConfigError, match="missing columns decode_kv_tokens"):
        read_profile(tmp_path / "cut.parquet")


def test_calibrate_cli(synthetic, tmp_path):
    from rllmsim.cli import main

    out = tmp_path / "cal"
    res = CliRunner().invoke(main, ["calibrate", str(synthetic) + ".parquet", "--name", "syn",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "random_20" in res.output and "extrapolation" in res.output and "MAPE" in res.output
    doc = json.loads((out / "syn.json").read_text())
    assert doc["profile"]["metadata"]["device"]["type"] == "cpu"
    res = CliRunner().invoke(main, ["calibrate", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "profile not found" in res.output


def test_simulator_side_never_imports_profiler_or_vllm():
    code = ("import sys, rllmsim.cost.regression, rllmsim.cost.profile_table, rllmsim.commands.calibrate;"
            "bad = [m for m in sys.modules if m.startswith(('rllmsim.profile', 'vllm'))];"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
