"""Which cost model times a deployment's steps: `--cost-model roofline|kernels|CALIBRATION.json`.

The default is the op-level kernel model wherever the GPU has measured kernel tables (shipped, or
given with `--kernel-tables`); a GPU without tables gets the same model on tables synthesised
from its datasheet peaks and efficiency curves fitted across the measured GPUs (the fitted
roofline, `kernels/fitted.py`); a deployment neither can time (a quantization or TP degree never
measured) falls back to the plain roofline, and the provenance says why.
"""

from __future__ import annotations

from pathlib import Path

from rllmsim.cost.base import CostModel
from rllmsim.cost.kernels import fitted
from rllmsim.cost.kernels.model import KernelCostModel
from rllmsim.cost.kernels.tables import KernelTables, shipped_gpus, shipped_tables
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError

KINDS = ("auto", "roofline", "kernels")


def kernel_tables_for(deployment: Deployment, directory: str | Path | None = None) -> tuple[KernelTables | None, str]:
    """The tables to use and where they came from: a user's folder, else the shipped set."""
    if directory is not None:
        return KernelTables.load(directory), str(directory)
    return shipped_tables(deployment.gpu.name), f"shipped ({deployment.gpu.name})"


def cost_model_for(deployment: Deployment, kind: str = "auto", kernel_tables: str | Path | None = None) -> CostModel:
    """The cost model `kind` names for this deployment (a calibration file is handled by the
    commands, which also take its engine settings)."""
    if kind not in KINDS:
        raise ConfigError(f"--cost-model {kind!r} is not one of {', '.join(KINDS)} or a calibration JSON")
    if kind == "roofline":
        return RooflineCostModel(deployment)
    tables, label = kernel_tables_for(deployment, kernel_tables)
    if tables is None:
        if kind == "kernels":
            raise ConfigError(f"--cost-model kernels: no kernel tables for {deployment.gpu.name}; GPUs with "
                              f"tables: {', '.join(shipped_gpus())}; or give --kernel-tables DIR (the default, "
                              "auto, times it with the fitted roofline)")
        synthetic = fitted.fitted_tables(deployment.gpu)
        note = f"no kernel tables for {deployment.gpu.name}"
        if synthetic is None:
            return RooflineCostModel(deployment, note=note)
        try:
            return KernelCostModel(deployment, synthetic, tables_label=fitted.label(deployment.gpu, synthetic))
        except ConfigError as exc:
            return RooflineCostModel(deployment,
                                     note=f"{note}, and the fitted roofline cannot time this deployment: {exc}")
    try:
        return KernelCostModel(deployment, tables, tables_label=label)
    except ConfigError as exc:
        if kind == "kernels":
            raise
        return RooflineCostModel(deployment, note=f"kernel tables cannot time this deployment: {exc}")
