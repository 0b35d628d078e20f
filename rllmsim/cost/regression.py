"""A step-time cost model calibrated on a real engine's profile: fit, save, load, predict.

The model is a linear law on physically meaningful features of the batch shape,

    step_time = overhead + sum_j coef_j * feature_j,        overhead >= 0, coef_j >= 0

fitted with scikit-learn's `LinearRegression(positive=True)` (non-negative least squares) with
weights 1/t^2, so it minimises relative error and, having no negative terms, extrapolates
monotonically beyond the measured grid. The default features are

    prefill_tokens       new prompt tokens (linear layers, per-token work)
    prefill_attn_pairs   causal query-key pairs of the prefill chunks (attention FLOPs)
    prefill_seqs         sequences prefilling (per-sequence logits, sampling, metadata)
    decode_tokens        tokens fed by decoding sequences (linear layers, sampling)
    decode_kv_tokens     cached context the decode attention reads (KV bytes)

An optional residual decision tree (multiplicative correction) is kept only when it lowers the
held-out error: MAPE down by at least 10% on the random split and not up on the extrapolation
split. The calibration file is JSON (coefficients, feature definitions, held-out metrics, the
profile's metadata) — never a pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from rllmsim.cost.features import FEATURE_NAMES, StepFeatures
from rllmsim.cost.fit_eval import (
    EXTRAPOLATION_SPLIT, RANDOM_SPLIT, error_metrics, held_out_metrics)
from rllmsim.cost.profile_table import Profile
from rllmsim.cost.tree_json import tree_predict, tree_to_json
from rllmsim import file_checks
from rllmsim.errors import ConfigError

CALIBRATION_FORMAT = "rllmsim.calibration/1"
DEFAULT_FEATURES: tuple[str, ...] = (
    "prefill_tokens", "prefill_attn_pairs", "prefill_seqs", "decode_tokens", "decode_kv_tokens",
)
FEATURE_DEFINITIONS: dict[str, str] = {
    "overhead": "constant per-step cost, seconds",
    "prefill_tokens": "new prompt tokens computed this step (sum of chunk sizes)",
    "prefill_seqs": "sequences with a prefill chunk",
    "prefill_attn_pairs": "causal query-key pairs of the chunks, sum of c*ctx + c*(c+1)/2",
    "prefill_kv_tokens": "KV tokens the chunks' attention touches, sum of ctx + c",
    "decode_seqs": "decoding sequences",
    "decode_tokens": "tokens fed by decoding sequences (decode_seqs x tokens per sequence)",
    "decode_kv_tokens": "cached context the decode attention reads, sum of contexts",
}
RESIDUAL_CLIP = (-0.5, 1.0)  # a residual tree may scale a prediction by 0.5x .. 2x, no more


# ----- the law -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearLaw:
    overhead: float
    coefficients: dict[str, float]

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Elementwise: a fixed sequence of per-element float64 operations per row."""
        n = len(next(iter(columns.values())))
        out = np.full(n, self.overhead, dtype=np.float64)
        for name, coef in self.coefficients.items():
            out = out + coef * np.asarray(columns[name], dtype=np.float64)
        return out


def _predict(law: LinearLaw, residual: dict | None, columns: Mapping[str, np.ndarray]
             ) -> np.ndarray:
    base = law.predict(columns)
    if residual is None:
        return base
    return base * (1.0 + np.clip(tree_predict(residual, columns), *RESIDUAL_CLIP))


def fit_linear(frame: pd.DataFrame, y: np.ndarray, features: Sequence[str]) -> LinearLaw:
    """Non-negative weighted least squares on [1, features] minimising relative error."""
    from sklearn.linear_model import LinearRegression

    X = np.column_stack([np.ones(len(frame))] +
                        [frame[f].to_numpy(dtype=np.float64) for f in features])
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    reg = LinearRegression(positive=True, fit_intercept=False)
    reg.fit(X / scale, y, sample_weight=1.0 / np.square(y))
    coef = reg.coef_ / scale
    return LinearLaw(overhead=float(coef[0]),
                     coefficients={f: float(c) for f, c in zip(features, coef[1:])})


def fit_residual_tree(frame: pd.DataFrame, y: np.ndarray, law: LinearLaw, seed: int = 0
                      ) -> dict[str, Any]:
    """A shallow tree on the relative residual y / law(x) - 1, as JSON."""
    from sklearn.tree import DecisionTreeRegressor

    cols = {n: frame[n].to_numpy() for n in FEATURE_NAMES}
    target = y / law.predict(cols) - 1.0
    X = np.column_stack([cols[n].astype(np.float64) for n in FEATURE_NAMES])
    tree = DecisionTreeRegressor(max_depth=3, min_samples_leaf=max(10, len(y) // 20),
                                 random_state=seed)
    tree.fit(X, target)
    return tree_to_json(tree, list(FEATURE_NAMES))


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {n: frame[n].to_numpy() for n in FEATURE_NAMES}


def _evaluate(frame: pd.DataFrame, y: np.ndarray, train: np.ndarray, test: np.ndarray,
              features: Sequence[str], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n_train": int(train.sum()), "n_test": int(test.sum())}
    if train.sum() < len(features) + 2 or test.sum() == 0:
        out["skipped"] = "too few steps on one side of the split"
        return out
    tr, te = frame[train], frame[test]
    law = fit_linear(tr, y[train], features)
    out["linear"] = error_metrics(y[test], _predict(law, None, _columns(te)))
    if train.sum() >= 40:
        tree = fit_residual_tree(tr, y[train], law, seed)
        out["linear+tree"] = error_metrics(y[test], _predict(law, tree, _columns(te)))
    return out


def _tree_helps(metrics: dict[str, Any]) -> bool:
    def mape(split: str, model: str) -> float | None:
        m = metrics.get(split, {}).get(model)
        return None if m is None else m["mape_pct"]

    r_lin, r_tree = mape(RANDOM_SPLIT, "linear"), mape(RANDOM_SPLIT, "linear+tree")
    e_lin, e_tree = mape(EXTRAPOLATION_SPLIT, "linear"), mape(EXTRAPOLATION_SPLIT, "linear+tree")
    if r_lin is None or r_tree is None or r_tree > 0.9 * r_lin:
        return False
    return e_lin is None or e_tree is None or e_tree <= e_lin


# ----- calibrate -------------------------------------------------------------------------------
def select_steps(profile: Profile, phases: Sequence[str] | None = None,
                 keep_contended: bool = False) -> pd.DataFrame:
    """The steps to fit: all phases but warm-up unless named, with a positive wall time, and
    without the steps the profiler flagged as slowed by another process."""
    frame = profile.frame
    if phases is None:
        keep = frame["phase"] != "warmup"
    else:
        unknown = sorted(set(phases) - set(frame["phase"].unique()))
        if unknown:
            raise ConfigError(f"phases {unknown} are not in the profile (it has "
                              f"{sorted(frame['phase'].unique())})")
        keep = frame["phase"].isin(list(phases))
    keep &= np.isfinite(frame["wall_s"]) & (frame["wall_s"] > 0)
    if not keep_contended and "contended" in frame.columns:
        keep &= ~frame["contended"].astype(bool)
    return frame[keep].reset_index(drop=True)


def calibrate(profile: Profile, name: str, features: Sequence[str] = DEFAULT_FEATURES,
              phases: Sequence[str] | None = None, residual: str = "auto", seed: int = 0,
              test_fraction: float = 0.2, keep_contended: bool = False) -> dict[str, Any]:
    """Fit a profile; returns the calibration document (see `RegressionCostModel`)."""
    bad = [f for f in features if f not in FEATURE_NAMES]
    if bad:
        raise ConfigError(f"unknown feature(s) {bad}; choose from {list(FEATURE_NAMES)}")
    if residual not in ("auto", "never", "always"):
        raise ConfigError(f"residual must be auto, never or always, got {residual!r}")
    frame = select_steps(profile, phases, keep_contended)
    contended = int(profile.frame["contended"].sum()) if "contended" in profile.frame else 0
    if len(frame) < len(features) + 5:
        raise ConfigError(f"the profile has {len(frame)} usable steps; calibration needs at "
                          f"least {len(features) + 5}")
    y = frame["wall_s"].to_numpy(dtype=np.float64)

    metrics: dict[str, Any] = held_out_metrics(
        frame, test_fraction, seed, lambda tr, te: _evaluate(frame, y, tr, te, features, seed))

    law = fit_linear(frame, y, features)
    use_tree = residual == "always" or (residual == "auto" and _tree_helps(metrics))
    tree = fit_residual_tree(frame, y, law, seed) if use_tree else None
    metrics["in_sample"] = {"linear": error_metrics(y, _predict(law, None, _columns(frame)))}
    if tree is not None:
        metrics["in_sample"]["linear+tree"] = error_metrics(y, _predict(law, tree,
                                                                        _columns(frame)))
    selected = "linear+tree" if tree is not None else "linear"
    metrics["selected"] = selected

    parquet_bytes = profile.parquet_path.read_bytes()
    return {
        "format": CALIBRATION_FORMAT,
        "name": name,
        "kind": "regression",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "law": "step_time = overhead + sum(coefficients[f] * feature f) [x (1 + residual)]",
        "overhead_s": law.overhead,
        "coefficients": law.coefficients,
        "feature_definitions": {k: FEATURE_DEFINITIONS[k] for k in ("overhead", *features)},
        "residual": tree,
        "residual_clip": list(RESIDUAL_CLIP) if tree is not None else None,
        "fit": {
            "method": "sklearn LinearRegression(positive=True), weights 1/wall_s^2",
            "target": "wall_s (LLMEngine.step wall time)",
            "steps": int(len(frame)),
            "phases": sorted(frame["phase"].unique().tolist()),
            "kinds": {k: int(v) for k, v in frame["kind"].value_counts().items()},
            "contended_steps_in_profile": contended,
            "contended_steps_used": bool(keep_contended),
            "residual_policy": residual,
            "seed": seed,
        },
        "metrics": metrics,
        "profile": {
            "name": profile.name,
            "parquet": str(profile.parquet_path),
            "parquet_sha256": hashlib.sha256(parquet_bytes).hexdigest(),
            "metadata": profile.metadata,
        },
    }


def save_calibration(doc: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2, default=str)
            fh.write("\n")
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ----- the cost model ----------------------------------------------------------------------------
_DTYPE_ALIASES = {
    "fp32": "float32", "float": "float32", "float32": "float32",
    "fp16": "float16", "half": "float16", "float16": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp8": "fp8", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2",
}


def _norm_dtype(value: Any) -> str:
    text = str(value).lower().replace("torch.", "")
    return _DTYPE_ALIASES.get(text, text)


def _norm_model(value: Any) -> str:
    return str(value).rstrip("/").split("/")[-1].lower()


class RegressionCostModel:
    """A calibrated step-time model (CostModel protocol), loaded from calibration JSON."""

    def __init__(self, doc: dict[str, Any], path: str | Path | None = None,
                 sha256: str | None = None):
        if doc.get("format") != CALIBRATION_FORMAT:
            raise ConfigError(f"{path or 'calibration'}: format is {doc.get('format')!r}, "
                              f"expected {CALIBRATION_FORMAT!r}")
        file_checks.calibration(doc, str(path or "calibration"), tuple(FEATURE_NAMES))
        try:
            coefficients = {str(k): float(v) for k, v in doc["coefficients"].items()}
            self.law = LinearLaw(float(doc["overhead_s"]), coefficients)
            self.metadata: dict[str, Any] = dict(doc["profile"]["metadata"])
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{path or 'calibration'} is malformed: missing or bad {err}"
                              ) from None
        bad = [f for f in coefficients if f not in FEATURE_NAMES]
        if bad:
            raise ConfigError(f"{path or 'calibration'}: unknown feature(s) {bad}")
        self.residual: dict[str, Any] | None = doc.get("residual")
        self.doc = doc
        self.path = None if path is None else Path(path)
        self.sha256 = sha256
        self.extrapolating: list[str] = []

    @classmethod
    def load(cls, path: str | Path) -> "RegressionCostModel":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"calibration file not found: {path}")
        raw = path.read_bytes()
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from None
        return cls(doc, path, hashlib.sha256(raw).hexdigest())

    @property
    def name(self) -> str:
        return str(self.doc.get("name"))

    def step_time(self, features: StepFeatures) -> np.ndarray:
        return _predict(self.law, self.residual, features.as_dict())

    def provenance(self) -> dict[str, Any]:
        meta = self.metadata
        metrics = self.doc.get("metrics", {})

        def mape(split: str) -> float | None:
            sel = metrics.get("selected", "linear")
            return metrics.get(split, {}).get(sel, {}).get("mape_pct")

        return {
            "kind": "regression",
            "name": self.name,
            "path": None if self.path is None else str(self.path),
            "sha256": self.sha256,
            "profile": self.doc.get("profile", {}).get("name"),
            "model": meta.get("model"),
            "device": (meta.get("device") or {}).get("name"),
            "vllm_version": meta.get("vllm_version"),
            "dtype": meta.get("dtype"),
            "tp": meta.get("tp"),
            "kv_cache_dtype": meta.get("kv_cache_dtype"),
            "block_size": meta.get("block_size"),
            "num_gpu_blocks": meta.get("num_gpu_blocks"),
            "residual": self.residual is not None,
            "heldout_mape_pct": {RANDOM_SPLIT: mape(RANDOM_SPLIT),
                                 EXTRAPOLATION_SPLIT: mape(EXTRAPOLATION_SPLIT)},
            "extrapolating": list(self.extrapolating),
        }

    def check_matches(self, model_name: str, tp: int, dtype: str, kv_cache_dtype: str = "auto",
                      allow_extrapolation: bool = False) -> None:
        """Refuse a deployment this model was not measured on, unless told to extrapolate.

        Model names compare by their last path component, case-insensitively ("org/Name" ==
        "name"); dtypes by canonical name ("bf16" == "bfloat16"); kv_cache_dtype "auto" means
        the model dtype.
        """
        meta = self.metadata
        mine_dtype = _norm_dtype(meta.get("dtype"))
        mine_kv = _norm_dtype(meta.get("kv_cache_dtype_resolved") or meta.get("kv_cache_dtype"))
        mine_kv = mine_dtype if mine_kv == "auto" else mine_kv
        theirs_dtype = _norm_dtype(dtype)
        theirs_kv = _norm_dtype(kv_cache_dtype)
        theirs_kv = theirs_dtype if theirs_kv == "auto" else theirs_kv
        diffs = []
        if _norm_model(meta.get("model")) != _norm_model(model_name):
            diffs.append(f"model {meta.get('model')} != {model_name}")
        if int(meta.get("tp", 1)) != int(tp):
            diffs.append(f"tp {meta.get('tp')} != {tp}")
        if mine_dtype != theirs_dtype:
            diffs.append(f"dtype {meta.get('dtype')} != {dtype}")
        both_follow_dtype = _norm_dtype(kv_cache_dtype) == "auto" and mine_kv == mine_dtype
        if mine_kv != theirs_kv and not both_follow_dtype:
            diffs.append(f"kv_cache_dtype {mine_kv} != {theirs_kv}")
        self.extrapolating = diffs if allow_extrapolation else []
        if diffs and not allow_extrapolation:
            raise ConfigError(f"cost model {self.name} was calibrated on a different deployment "
                              f"({'; '.join(diffs)}): profile this deployment or allow "
                              f"extrapolation")
