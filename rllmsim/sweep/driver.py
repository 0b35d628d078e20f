"""Running a sweep: expand the grid, skip what `results.parquet` already holds, run the rest on an
executor and append each row the moment its run finishes.

Killing the process at any point loses at most the runs in flight; running the same command again
runs only what is missing. A run that fails is a row with `status="error"`; it is not retried on
resume unless asked (`retry_failed`), since most failures (a model that does not fit) are
deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from rllmsim.sweep.executors import Executor, InlineExecutor
from rllmsim.sweep.results import ResultsStore
from rllmsim.sweep.runner import config_columns, run_one
from rllmsim.sweep.spec import SweepSpec

SPEC_FILE = "sweep.yaml"


@dataclass
class SweepOutcome:
    total: int
    skipped: int
    ran: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    results_path: Path | None = None


def plan_sweep(spec: SweepSpec, out_dir: str | Path, retry_failed: bool = False,
               save_runs: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]], ResultsStore]:
    """(all runs, runs still to do, the results store)."""
    out = Path(out_dir)
    store = ResultsStore(out)
    runs = spec.expand()
    done = store.finished_keys(include_failed=not retry_failed)
    todo = [run for run in runs if run["key"] not in done]
    if save_runs:
        for run in todo:
            run["save_dir"] = str(out / "runs" / run["key"])
    return runs, todo, store


def run_sweep(spec: SweepSpec, out_dir: str | Path, executor: Executor | None = None,
              retry_failed: bool = False, save_runs: bool = False,
              on_result: Callable[[dict[str, Any]], None] | None = None) -> SweepOutcome:
    """Run every run of `spec` that `out_dir` lacks; rows land in `out_dir/results.parquet`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".results.parquet.*.tmp"):  # left by a sweep killed mid-write
        stale.unlink(missing_ok=True)
    _write_spec(spec, out / SPEC_FILE)
    runs, todo, store = plan_sweep(spec, out, retry_failed, save_runs)
    outcome = SweepOutcome(total=len(runs), skipped=len(runs) - len(todo), results_path=store.path)
    executor = executor or InlineExecutor()
    for index, result in executor.imap_unordered(run_one, todo):
        if isinstance(result, BaseException):  # the task itself died (lost worker or node)
            row = config_columns(todo[index])
            row.update(status="error", error=f"{type(result).__name__}: {' '.join(str(result).split())}")
        else:
            row = result
        store.append([row])
        outcome.ran += 1
        if row["status"] != "ok":
            outcome.failed += 1
            outcome.errors.append(row["error"])
        if on_result is not None:
            on_result(row)
    store.sort_by_index({run["key"]: run["index"] for run in runs})
    return outcome


def _write_spec(spec: SweepSpec, path: Path) -> None:
    """The spec as run, beside its results (rewritten on every resume)."""
    import os
    import tempfile

    data = {"name": spec.name, "description": spec.description, "seeds": list(spec.seeds),
            "deployment": spec.deployment, "workload": spec.workload,
            "slos": {slo.name: f"{slo.limit_s}s" for slo in spec.slos},
            "fast_forward": spec.fast_forward, "straggler_factor": spec.straggler_factor}
    if spec.duration_s is not None:
        data["duration_s"] = spec.duration_s
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    os.replace(tmp, path)
