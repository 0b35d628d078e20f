"""Simulating with a calibrated cost model: on the deployment its profile measured.

A regression measured on one engine (model, TP, dtypes, KV pool) is only valid there, so the
calibration supplies what the user leaves out: the model (its config travels in the profile's
metadata), the device, the KV pool the real engine allocated, and the engine limits the profile
ran with. What the user does give must match, unless extrapolation is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rllmsim.cost.regression import RegressionCostModel
from rllmsim.errors import ConfigError
from rllmsim.specs import GPUSpec, ModelSpec, load_gpu, load_model, model_from_config, uncatalogued_gpu


@dataclass(frozen=True)
class CalibratedSetup:
    cost_model: RegressionCostModel
    model: ModelSpec
    gpu: GPUSpec
    engine_defaults: dict[str, Any]


def calibrated_setup(path: str, model: str | None = None, gpu: str | None = None) -> CalibratedSetup:
    """Load a calibration and resolve the model, device and engine limits it was measured with.
    `model`/`gpu` override the calibration's own (then `check_matches` decides if that is allowed)."""
    cost_model = RegressionCostModel.load(path)
    meta = cost_model.metadata
    if model is not None:
        spec = load_model(model)
    elif meta.get("model_config"):
        spec = model_from_config(meta["model_config"], str(meta.get("model", "calibrated-model")))
    else:
        raise ConfigError(f"{path} does not carry its model's config; give --model")
    return CalibratedSetup(cost_model, spec, load_gpu(gpu) if gpu else _device(meta), _engine_defaults(meta))


def _device(meta: dict[str, Any]) -> GPUSpec:
    name = str((meta.get("device") or {}).get("name") or "unknown device")
    try:
        return load_gpu(name)
    except ConfigError:
        return uncatalogued_gpu(name)


def _engine_defaults(meta: dict[str, Any]) -> dict[str, Any]:
    """The engine limits and KV pool of the profiled engine. vLLM's num_gpu_blocks counts one null
    block it never hands out, so the usable pool is one block smaller."""
    defaults = {k: meta[k] for k in ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size")
                if meta.get(k) is not None}
    if meta.get("num_gpu_blocks"):
        defaults["num_gpu_blocks_override"] = max(int(meta["num_gpu_blocks"]) - 1, 1)
    return defaults
