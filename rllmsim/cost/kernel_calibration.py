"""A kernel correction: the op-level kernel model calibrated on one profile of a real GPU.

`rllmsim calibrate PROFILE --on kernels` times every profiled step with the kernel model of the
profiled deployment (its model, TP, dtypes and engine limits, from the profile's metadata) on the
shipped tables of the profiled GPU, splits each step's GPU time into three op groups
(`OP_GROUPS`: linear = projections, MoE, elementwise, all-reduces; attention; per_sequence =
lm_head, sampler), and fits

    wall_s = sum_g scale_g * group_g + host_step_s + host_per_seq_s * seqs + host_per_token_s * tokens

by non-negative least squares on relative error (`scipy.optimize.nnls`, rows weighted 1/wall_s).
The profiler steps the engine synchronously, so host time adds to GPU time there; the simulator
then overlaps it with async scheduling like any host time. The scales correct the tables where
this GPU runs faster or slower than its measured kernels suggest, the host times replace the
assumed `HostParams`: neither depends on the profiled model, so the correction applies to every
model on that GPU (`KernelCorrection.cost_model`).

Two terms cannot be told apart from others by step wall times, so weak priors (`PRIORS`) hold
them at their assumed values unless the profile says otherwise:
- per_sequence: lm_head and the sampler are ~2% of a step and grow with sequences almost exactly
  as host time does (fixed + per sequence), so their scale is held at 1 and the host terms take
  what is left;
- host per_token_s: where the projections are compute-bound they grow linearly in tokens, as a
  per-token host cost would, so it is held at 0 (vLLM's per-token input preparation is vectorised).
A prior of weight w on a term with mean share u of a step (per unit of its coefficient) adds the
row sqrt(w) u (c - c0) = 0: moving the term's share of a step by d costs what w steps each off by d
cost. The linear and attention scales and the fixed and per-sequence host times carry no prior.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rllmsim.cost.features import StepFeatures
from rllmsim.cost.fit_eval import EXTRAPOLATION_SPLIT, RANDOM_SPLIT, error_metrics, held_out_metrics
from rllmsim.cost.kernels.host import HostParams
from rllmsim.cost.kernels.model import OP_GROUPS, KernelCostModel, OpScales
from rllmsim.cost.kernels.tables import KernelTables, shipped_gpus, shipped_tables
from rllmsim.cost.profile_table import Profile
from rllmsim.cost.regression import CALIBRATION_FORMAT, select_steps
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError

KIND = "kernel-correction"
HOST_FIELDS: tuple[str, ...] = ("step_s", "per_seq_s", "per_token_s")
#: Priors (held value, weight in steps) by coefficient, in design-matrix order of
#: (*OP_GROUPS, *HOST_FIELDS); see the module docstring.
PRIORS: dict[str, tuple[float, float]] = {"per_sequence": (1.0, 1000.0), "per_token_s": (0.0, 100.0)}
COEFFICIENTS: tuple[str, ...] = (*OP_GROUPS, *HOST_FIELDS)
GROUP_DEFINITIONS = {
    "linear": "per-token ops: QKV/O and MLP projections, fused MoE, elementwise kernels, TP all-reduces",
    "attention": "prefill, decode and mixed attention",
    "per_sequence": "lm_head and the sampler",
}
LAW = ("step_time = sum over op groups g of scales[g] x kernel-table seconds of g + host.step_s "
       "+ host.per_seq_s x sequences + host.per_token_s x tokens (host time adds to the GPU's in a "
       "synchronous step and overlaps it with async scheduling)")


# ----- the profiled deployment -------------------------------------------------------------------
def profiled_gpu(metadata: dict[str, Any]) -> str | None:
    """The catalog GPU with shipped kernel tables a profile was measured on, or None."""
    from rllmsim.specs import load_gpu

    name = (metadata.get("device") or {}).get("name")
    if not name:
        return None
    try:
        gpu = load_gpu(str(name)).name
    except ConfigError:
        return None
    return gpu if shipped_tables(gpu) is not None else None


def profiled_deployment(metadata: dict[str, Any]) -> tuple[Deployment, KernelTables]:
    """The deployment a profile measured (model config, device, TP, dtypes, engine limits, KV
    pool, eager or graphed, synchronous), and the shipped kernel tables of its GPU."""
    from rllmsim.cost.calibrated import _engine_defaults
    from rllmsim.specs import load_gpu, load_model, model_from_config

    device = str((metadata.get("device") or {}).get("name") or "unknown device")
    have = ", ".join(shipped_gpus())
    try:
        gpu = load_gpu(device)
    except ConfigError:
        raise ConfigError(f"--on kernels: the profile's device {device!r} is not a catalog GPU; a kernel "
                          f"correction needs one with kernel tables ({have}); use --on regression") from None
    tables = shipped_tables(gpu.name)
    if tables is None:
        raise ConfigError(f"--on kernels: no kernel tables ship for {gpu.name} (the profile's device {device!r}); "
                          f"GPUs with tables: {have}; use --on regression")
    if metadata.get("model_config"):
        model = model_from_config(metadata["model_config"], str(metadata.get("model", "profiled-model")))
    elif metadata.get("model"):
        model = load_model(str(metadata["model"]))
    else:
        raise ConfigError("--on kernels: the profile's metadata names no model and carries no model_config")
    engine_args = metadata.get("engine_args") or {}
    quantization = metadata.get("quantization") or engine_args.get("quantization")
    try:
        deployment = Deployment(
            model=model, gpu=gpu, tp=int(metadata.get("tp", 1)),
            quantization=None if quantization in (None, "", "none") else str(quantization),
            kv_cache_dtype=str(metadata.get("kv_cache_dtype") or "auto"),
            enforce_eager=bool(metadata.get("enforce_eager", False)),
            disable_custom_all_reduce=bool(engine_args.get("disable_custom_all_reduce", False)),
            async_scheduling=False, enable_prefix_caching=False, **_engine_defaults(metadata))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"--on kernels: the profile's metadata does not describe a deployment ({err})") from None
    return deployment, tables


# ----- the fit -----------------------------------------------------------------------------------
def design(model: KernelCostModel, features: StepFeatures) -> np.ndarray:
    """Steps x (OP_GROUPS..., 1, sequences, tokens): the columns the correction weighs."""
    groups = model.op_group_seconds(features)
    seqs = (features.prefill_seqs + features.decode_seqs).astype(np.float64)
    tokens = features.total_tokens.astype(np.float64)
    return np.column_stack([groups, np.ones(len(features)), seqs, tokens])


def fit_correction(X: np.ndarray, y: np.ndarray, priors: dict[str, tuple[float, float]] | None = None
                   ) -> tuple[OpScales, HostParams]:
    """Non-negative least squares on relative error, with the weak priors of `PRIORS`."""
    from scipy.optimize import nnls

    priors = PRIORS if priors is None else priors
    A = X / y[:, None]
    b = np.ones(len(y))
    share = A.mean(axis=0)  # mean share of a step per unit of each coefficient
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0
    A = A / scale  # columns of comparable size; the solution is unscaled below
    rows, targets = [], []
    for name, (held, weight) in priors.items():
        j = COEFFICIENTS.index(name)
        if weight > 0 and share[j] > 0:
            row = np.zeros(A.shape[1])
            row[j] = math.sqrt(weight) * share[j] / scale[j]
            rows.append(row)
            targets.append(math.sqrt(weight) * share[j] * held)
    if rows:
        A = np.vstack([A, np.array(rows)])
        b = np.concatenate([b, np.array(targets)])
    solution, _ = nnls(A, b, maxiter=50 * A.shape[1])
    coef = solution / scale
    groups = len(OP_GROUPS)
    scales = OpScales(**{g: float(c) for g, c in zip(OP_GROUPS, coef[:groups])})
    host = HostParams(**{f: float(c) for f, c in zip(HOST_FIELDS, coef[groups:])})
    return scales, host


def predict(X: np.ndarray, scales: OpScales, host: HostParams) -> np.ndarray:
    """Synchronous step seconds of the corrected model on design rows (as the profiler measured)."""
    coef = np.array([*scales.as_dict().values(), *(getattr(host, f) for f in HOST_FIELDS)])
    return X @ coef


def _split_metrics(X: np.ndarray, y: np.ndarray, uncorrected: np.ndarray, train: np.ndarray,
                   test: np.ndarray, priors: dict[str, tuple[float, float]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"n_train": int(train.sum()), "n_test": int(test.sum())}
    if train.sum() < X.shape[1] + 2 or test.sum() == 0:
        out["skipped"] = "too few steps on one side of the split"
        return out
    scales, host = fit_correction(X[train], y[train], priors)
    out["corrected"] = error_metrics(y[test], predict(X[test], scales, host))
    out["uncorrected"] = error_metrics(y[test], uncorrected[test])
    out["scales"] = scales.as_dict()
    return out


def calibrate_kernels(profile: Profile, name: str, phases: Sequence[str] | None = None, seed: int = 0,
                      test_fraction: float = 0.2, keep_contended: bool = False,
                      priors: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """Fit a kernel correction to a profile; returns the calibration document (`KernelCorrection`)."""
    frame = select_steps(profile, phases, keep_contended)
    need = len(OP_GROUPS) + len(HOST_FIELDS) + 5
    if len(frame) < need:
        raise ConfigError(f"the profile has {len(frame)} usable steps; a kernel correction needs at least {need}")
    deployment, tables = profiled_deployment(profile.metadata)
    label = f"shipped ({deployment.gpu.name})"
    model = KernelCostModel(deployment, tables, tables_label=label)
    features = StepFeatures.from_columns(frame)
    X = design(model, features)
    y = frame["wall_s"].to_numpy(dtype=np.float64)
    uncorrected = model.step_time(features)  # synchronous: GPU + the assumed host time

    metrics: dict[str, Any] = held_out_metrics(
        frame, test_fraction, seed, lambda train, test: _split_metrics(X, y, uncorrected, train, test, priors))
    priors = PRIORS if priors is None else priors
    scales, host = fit_correction(X, y, priors)
    metrics["in_sample"] = {"corrected": error_metrics(y, predict(X, scales, host)),
                            "uncorrected": error_metrics(y, uncorrected)}
    shares = X[:, : len(OP_GROUPS)].sum(axis=0) / y.sum()
    contended = int(profile.frame["contended"].sum()) if "contended" in profile.frame else 0
    d = deployment
    return {
        "format": CALIBRATION_FORMAT,
        "name": name,
        "kind": KIND,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "law": LAW,
        "gpu": d.gpu.name,
        "scales": scales.as_dict(),
        "host": {f: getattr(host, f) for f in HOST_FIELDS},
        "groups": dict(GROUP_DEFINITIONS),
        "tables": {"location": label, "device": tables.meta.get("device"), "sources": tables.meta.get("sources"),
                   "vllm_versions": tables.meta.get("vllm_versions")},
        "fit": {
            "method": "scipy.optimize.nnls on relative error (rows weighted 1/wall_s)",
            "priors": {name: {"held_at": held, "weight_steps": weight} for name, (held, weight) in priors.items()},
            "target": "wall_s (LLMEngine.step wall time, synchronous: GPU + host)",
            "deployment": {"model": d.model.name, "tp": d.tp, "quantization": d.quantization,
                           "kv_cache_dtype": d.kv_cache_dtype, "enforce_eager": d.enforce_eager,
                           "max_num_batched_tokens": d.max_num_batched_tokens, "max_num_seqs": d.max_num_seqs},
            "ops": dict(model.ops.sources),
            "group_share_of_wall": {g: float(s) for g, s in zip(OP_GROUPS, shares)},
            "steps": int(len(frame)),
            "phases": sorted(frame["phase"].unique().tolist()),
            "kinds": {k: int(v) for k, v in frame["kind"].value_counts().items()},
            "contended_steps_in_profile": contended,
            "contended_steps_used": bool(keep_contended),
            "seed": seed,
        },
        "metrics": metrics,
        "profile": {
            "name": profile.name,
            "parquet": str(profile.parquet_path),
            "parquet_sha256": hashlib.sha256(profile.parquet_path.read_bytes()).hexdigest(),
            "metadata": profile.metadata,
        },
    }


# ----- loading and applying ----------------------------------------------------------------------
def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class KernelCorrection:
    """Fitted op scales and host times for one GPU's kernel tables, loaded from calibration JSON."""

    gpu: str
    scales: OpScales
    host: HostParams
    doc: dict[str, Any] = field(repr=False)
    path: Path | None = None
    sha256: str | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any], path: str | Path | None = None,
                 sha256: str | None = None) -> "KernelCorrection":
        where = str(path or "calibration")
        if doc.get("format") != CALIBRATION_FORMAT:
            raise ConfigError(f"{where}: format is {doc.get('format')!r}, expected {CALIBRATION_FORMAT!r}")
        if doc.get("kind") != KIND:
            raise ConfigError(f"{where}: kind is {doc.get('kind')!r}, expected {KIND!r}")
        for key in ("gpu", "scales", "host"):
            if key not in doc:
                raise ConfigError(f"{where}: kernel correction lacks field '{key}'")
        gpu = doc["gpu"]
        if not isinstance(gpu, str) or not gpu:
            raise ConfigError(f"{where}: field 'gpu' must be a GPU catalog name, got {gpu!r}")
        for key, names in (("scales", OP_GROUPS), ("host", HOST_FIELDS)):
            block = doc[key]
            if not isinstance(block, dict):
                raise ConfigError(f"{where}: field '{key}' must be an object with {', '.join(names)}")
            missing = [n for n in names if n not in block]
            if missing:
                raise ConfigError(f"{where}: field '{key}' lacks {', '.join(missing)}")
        scales = OpScales(**{g: _number(doc["scales"][g], f"{where}: field 'scales.{g}'") for g in OP_GROUPS})
        host = HostParams(**{f: _number(doc["host"][f], f"{where}: field 'host.{f}'") for f in HOST_FIELDS})
        return cls(gpu, scales, host, doc, None if path is None else Path(path), sha256)

    @property
    def name(self) -> str:
        return str(self.doc.get("name"))

    def summary(self, extrapolating: Sequence[str] = ()) -> dict[str, Any]:
        """What a run's provenance records of the correction."""
        metrics = self.doc.get("metrics") if isinstance(self.doc.get("metrics"), dict) else {}

        def mape(split: str, model: str) -> float | None:
            block = metrics.get(split)
            value = block.get(model) if isinstance(block, dict) else None
            return value.get("mape_pct") if isinstance(value, dict) else None

        profile = self.doc.get("profile") if isinstance(self.doc.get("profile"), dict) else {}
        fit = self.doc.get("fit") if isinstance(self.doc.get("fit"), dict) else {}
        return {
            "kind": KIND,
            "name": self.name,
            "path": None if self.path is None else str(self.path),
            "sha256": self.sha256,
            "gpu": self.gpu,
            "profile": profile.get("name"),
            "profiled": fit.get("deployment"),
            "scales": self.scales.as_dict(),
            "heldout_mape_pct": {split: {m: mape(split, m) for m in ("corrected", "uncorrected")}
                                 for split in (RANDOM_SPLIT, EXTRAPOLATION_SPLIT)},
            "extrapolating": list(extrapolating),
        }

    def cost_model(self, deployment: Deployment, allow_extrapolation: bool = False,
                   kernel_tables: str | Path | None = None) -> KernelCostModel:
        """The kernel model of any deployment on the corrected GPU, with the fitted scales and host
        times; another GPU only with `allow_extrapolation`."""
        if kernel_tables is not None:
            raise ConfigError(f"cost model {self.name} corrects the shipped kernel tables of {self.gpu}; "
                              "it cannot be combined with --kernel-tables")
        extrapolating = []
        if deployment.gpu.name != self.gpu:
            if not allow_extrapolation:
                raise ConfigError(f"cost model {self.name} corrects the kernel tables of {self.gpu}, not "
                                  f"{deployment.gpu.name}: profile that GPU or allow extrapolation")
            extrapolating.append(f"gpu {self.gpu} != {deployment.gpu.name}")
        tables = shipped_tables(deployment.gpu.name)
        if tables is None:
            raise ConfigError(f"cost model {self.name}: no kernel tables ship for {deployment.gpu.name}; "
                              f"GPUs with tables: {', '.join(shipped_gpus())}")
        return KernelCostModel(deployment, tables, host=self.host, tables_label=f"shipped ({deployment.gpu.name})",
                               scales=self.scales, calibration=self.summary(extrapolating))


def read_calibration(path: str | Path) -> tuple[dict[str, Any], str]:
    """A calibration file's JSON object and sha256; one ConfigError line when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"calibration file not found: {path}")
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return doc, hashlib.sha256(raw).hexdigest()


def load_kernel_correction(path: str | Path) -> KernelCorrection | None:
    """The kernel correction in `path`, or None when the file holds another kind of calibration
    (a regression, which `RegressionCostModel.load` reads)."""
    doc, sha = read_calibration(path)
    if doc.get("kind") != KIND:
        return None
    return KernelCorrection.from_doc(doc, path, sha)
