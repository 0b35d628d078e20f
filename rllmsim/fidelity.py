"""How far to trust a run: the measured error of the nearest validated case, one line per answer.

A simulated number is worth its distance from real serving, and that distance was measured only
on a few GPUs and models (`docs/validation.md`). Every summary names the case nearest to its own
deployment and that case's errors, read from `data/fidelity/validated.json`, which
`scripts/build_fidelity_table.py` regenerates by running `rllmsim validate` on the real runs in
../shared/validation (never typed by hand).

Nearest means: closest memory bandwidth (what decode steps are bound by; the GPU itself when it
was validated), then closest parameter count, both on a log scale; a dense model and a MoE are a
step apart. The line also says when the run's cost model is not the one the case was validated
with (the plain roofline, or the fitted roofline of a GPU without kernel tables).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from rllmsim.deployment import Deployment
from rllmsim.specs import load_gpu

TABLE = Path(__file__).resolve().parent / "data" / "fidelity" / "validated.json"
#: Distance between a dense model and a MoE of the same size: their steps scale differently.
KIND_GAP = 1.0


@functools.lru_cache(maxsize=1)
def validated_cases() -> tuple[dict[str, Any], ...]:
    """The shipped table's entries (empty when the table is absent, e.g. before its first build)."""
    if not TABLE.is_file():
        return ()
    return tuple(json.loads(TABLE.read_text(encoding="utf-8"))["entries"])


def _distance(case: dict[str, Any], bandwidth_gbps: float, params_b: float, moe: bool) -> float:
    case_bandwidth = load_gpu(case["gpu"]).hbm_bandwidth_gbps
    return (abs(math.log(bandwidth_gbps / case_bandwidth)) + abs(math.log(params_b / case["params_b"]))
            + (KIND_GAP if bool(case["moe"]) != moe else 0.0))


def nearest_case(deployment: Deployment) -> dict[str, Any] | None:
    """The validated case nearest to `deployment` (ties: the table's order), or None when none
    ships or the device has no datasheet bandwidth to compare (an uncatalogued device, a CPU)."""
    cases = validated_cases()
    params_b = deployment.model.param_count() / 1e9
    bandwidth = deployment.gpu.hbm_bandwidth_gbps
    if not cases or bandwidth <= 0 or params_b <= 0:
        return None
    return min(cases, key=lambda c: _distance(c, bandwidth, params_b, deployment.model.is_moe))


def run_cost_model(provenance: dict[str, Any]) -> str:
    """The run's cost model in a few words, from its provenance (a speculating run's is its target's)."""
    if provenance.get("kind") == "speculative":
        provenance = provenance.get("target") or {}
    kind = str(provenance.get("kind"))
    if kind == "kernels":
        location = str((provenance.get("tables") or {}).get("location", ""))
        return "kernels (fitted roofline)" if location.startswith("fitted") else "kernels"
    return kind


def fidelity(deployment: Deployment, provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The summary's `fidelity` section: the run's cost model, the nearest validated case and
    its errors, and the one line the console prints; None when no table ships."""
    case = nearest_case(deployment)
    if case is None:
        return None
    model = run_cost_model(provenance)
    errors = ", ".join(f"{name.upper()} {value:+.1f} %" if case["kind"] == "replay" else f"{name.upper()} {value:.1f} %"
                       for name, value in case["errors"].items())
    tps = "/".join(str(t) for t in case["tp"])
    line = (f"fidelity: {model} cost model; nearest validated case: {case['model']} TP {tps} on {case['gpu']} "
            f"({case['workload']}, vLLM {case['vllm_version']}): {case['stat']} {errors}")
    if model != case["cost_model"]:
        line += f"; that case used the {case['cost_model']} model, this run's {model} model is not validated"
    return {"cost_model": model, "nearest_case": case["case"], "kind": case["kind"], "stat": case["stat"],
            "errors_pct": dict(case["errors"]), "line": line + " (docs/validation.md)"}
