"""One sweep run in a worker: a run config in, one flat result row out.

`run_one` is a top-level function of plain dicts so a process pool or Ray can ship it. It never
raises for a run that fails: the row carries `status="error"` and the one-line error, and the
sweep goes on.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from rllmsim.deployment import Deployment
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.specs import load_gpu, load_model
from rllmsim.sweep.pricing import price_columns
from rllmsim.sweep.slo import SLO, check, summary_value
from rllmsim.sweep.spec import MODEL_FIELDS

#: Columns whose values depend on the machine or the moment, not on the run's inputs. Two sweeps
#: of the same spec agree on every other column, locally or on Ray.
VOLATILE_COLUMNS = ("elapsed_s", "sim_wall_s", "finished_at", "worker")
#: Summary entries that are not metrics (the config is in the config columns already).
_SKIP = {"config", "seed", "stragglers.threshold_s_by_dataset", "goodput.slos_s"}


def build_deployment(fields: Mapping[str, Any]) -> Deployment:
    """A Deployment from a run config's deployment section (`router` is not a Deployment field)."""
    values = {k: v for k, v in fields.items() if k not in ("model", "gpu", "router")}
    if values.get("quantization") in ("", "none"):
        values["quantization"] = None
    for name in MODEL_FIELDS:  # e.g. draft_model, given by name
        if isinstance(values.get(name), str):
            values[name] = load_model(values[name])
    return Deployment(model=load_model(fields["model"]), gpu=load_gpu(fields["gpu"]), **values)


def config_columns(run: Mapping[str, Any]) -> dict[str, Any]:
    """The run's inputs as flat columns: deployment fields, then workload fields, then the seed."""
    row: dict[str, Any] = {"key": run["key"], "run_index": run.get("index", -1)}
    row.update(run["deployment"])
    row.update(run["workload"])
    row["seed"] = run["seed"]
    return row


def flatten_summary(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"ttft_s": {"p99": x}}` -> `{"ttft_s_p99": x}`; lists and the config are left out."""
    flat: dict[str, Any] = {}
    for name, value in summary.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if dotted in _SKIP:
            continue
        column = dotted.replace(".", "_")
        if isinstance(value, Mapping):
            flat.update(flatten_summary(value, dotted))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[column] = value
    return flat


def run_one(run: Mapping[str, Any]) -> dict[str, Any]:
    """Simulate one run config; returns its result row, with status 'ok' or 'error'."""
    started = time.perf_counter()
    row = config_columns(run)
    try:
        deployment = build_deployment(run["deployment"])
        slos = [SLO.from_dict(s) for s in run.get("slos", [])]
        per_request = {}
        for slo in slos:  # goodput thresholds per request, one per metric (the tightest)
            if slo.metric in ("ttft", "tpot", "e2el"):
                per_request[slo.metric] = min(per_request.get(slo.metric, slo.limit_s), slo.limit_s)
        out = run_simulation(deployment, WorkloadSpec(**run["workload"]), seed=run["seed"],
                             router=run["deployment"].get("router", "round-robin"),
                             fast_forward=run.get("fast_forward", True), slos_s=per_request or None,
                             straggler_factor=run.get("straggler_factor", 3.0))
        resolved = deployment.to_dict()
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "num_gpu_blocks",
                     "kv_capacity_source", "weight_gib_per_gpu"):
            row[name] = resolved[name]
        row.update(flatten_summary(out.summary))
        row.update(price_columns(deployment, out.summary))
        if slos:
            values = {slo.name: summary_value(out.summary, slo) for slo in slos}
            violated = check(values, slos)
            row["slo_ok"] = not violated
            row["slo_violated"] = ",".join(violated)
        save_dir = run.get("save_dir")
        if save_dir:
            _save_run(Path(save_dir), out, deployment.model.hf_id)
        row["status"], row["error"] = "ok", ""
    except Exception as err:  # noqa: BLE001 - a failed run is a result, not a crash
        row["status"] = "error"
        row["error"] = _one_line(err)
    row["elapsed_s"] = time.perf_counter() - started
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    row["worker"] = f"{os.uname().nodename}:{os.getpid()}"
    return row


def _save_run(path: Path, out, model_id: str) -> None:
    """The run's directory, as `simulate` writes it; a partial one from a killed sweep is replaced."""
    from rllmsim.rundir import write_simulation

    if path.exists():
        shutil.rmtree(path)
    write_simulation(path, out, model_id)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or traceback.format_exception_only(type(err), err)[-1].strip()
    return f"{type(err).__name__}: {text}"
