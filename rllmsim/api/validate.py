"""`rllmsim.validate(RUN, ...)`: replay a recorded real vLLM run and measure the simulation's error.

RUN is an LLMServingSim run folder, a `vllm bench serve --save-result --save-detailed` result
JSON (engine args beside it or in `engine_args`), or an aiconfigurator silicon CSV of closed-loop
benchmarks. The `Validation` holds the error tables as DataFrames, validation.json's content as
a dict, the console report `rllmsim validate` prints, and `.save(dir)` for the files it writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rllmsim import checks
from rllmsim.api.display import frame_html
from rllmsim.errors import ConfigError
from rllmsim.rundir import staged_directory, to_jsonable


@dataclass
class Validation:
    """What a validation found: `summary` (validation.json), `tables` by name (replays: errors,
    requests, ticks; closed-loop CSVs: cases, mape), `text` (the console report), and `files`,
    the file name -> text that `save` writes."""

    source: Path
    label: str
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    text: str
    files: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def errors(self) -> pd.DataFrame:
        """Replays: the signed and absolute error per metric and statistic; closed loop: MAPE by model."""
        return self.tables["errors"] if "errors" in self.tables else self.tables["mape"]

    def save(self, path: str | Path) -> Path:
        """Write the files into the new directory `path`: all in a temporary sibling first, then one
        rename, so no half-written output is left behind."""
        with staged_directory(path) as staging:
            for name, text in self.files.items():
                (staging / name).write_text(text, encoding="utf-8")
        return Path(path)

    def __repr__(self) -> str:
        return f"<Validation {self.label}: {', '.join(self.tables)}>"

    def _repr_html_(self) -> str:
        return frame_html(f"rllmsim validate: {self.source.name}", self.errors,
                          note=".summary, .tables, .errors, .text, .save(dir)")


def validate(run: str | Path, *, cost_model: str = "auto", gpu: str | None = None, model: str | None = None,
             engine_args: str | Path | None = None, allow_extrapolation: bool = False,
             requests_per_user: int | None = None, seed: int = 0) -> Validation:
    """Replay `run` through the simulator. `cost_model`: auto, roofline, kernels, or a calibration
    JSON (a regression, or a kernel correction for any model on its GPU); `gpu`/`model` override
    what the run records; `requests_per_user` sets closed-loop cases' requests per user (default
    20, as aiconfigurator's generated aiperf command sends)."""
    from rllmsim.validate.aiconfigurator import is_aiconfigurator

    path = Path(run)
    if not path.exists():
        raise ConfigError(f"recorded run not found: {path}")
    if requests_per_user is not None:
        checks.integer(requests_per_user, "requests_per_user", minimum=1)
    checks.seed(seed)
    if is_aiconfigurator(path):
        return _closed_loop(path, cost_model, gpu, requests_per_user, seed, allow_extrapolation)
    return _replay(path, cost_model, gpu, model, engine_args, allow_extrapolation, seed)


def _replay(path: Path, cost_model_arg: str, gpu: str | None, model: str | None, engine_args: str | Path | None,
            allow_extrapolation: bool, seed: int) -> Validation:
    """A recorded run, request by request, on the deployment its engine arguments describe."""
    from rllmsim.cost.kernel_calibration import load_kernel_correction
    from rllmsim.cost.select import KINDS, cost_model_for
    from rllmsim.validate import diagnose
    from rllmsim.validate.compare import format_errors
    from rllmsim.validate.plots import replay_report
    from rllmsim.validate.replay import (build_deployment, engine_with_block_size, open_run, resolve_gpu,
                                         with_measured_capacity)
    from rllmsim.validate.replay import validate as replay

    run = open_run(path, engine_args)
    notes: list[str] = []
    lines: list[str] = []
    correction = None if cost_model_arg in KINDS else load_kernel_correction(cost_model_arg)
    if cost_model_arg in KINDS:
        deployment = build_deployment(run.engine, resolve_gpu(gpu, run), model, notes=notes)
        cost_model = cost_model_for(deployment, cost_model_arg)
    elif correction is not None:  # the run's own model and engine, on the corrected GPU's tables
        deployment = build_deployment(run.engine, resolve_gpu(gpu, run, correction.gpu), model, notes=notes)
        cost_model = correction.cost_model(deployment, allow_extrapolation)
    else:
        from rllmsim.cost.regression import RegressionCostModel

        cost_model = RegressionCostModel.load(cost_model_arg)
        prov = cost_model.provenance()
        engine = engine_with_block_size(run.engine, cost_model)
        deployment = build_deployment(engine, resolve_gpu(gpu, run, prov.get("device") or "uncatalogued device"),
                                      model, with_measured_capacity(engine, cost_model), notes)
        dtype = run.engine.dtype if run.engine.dtype != "auto" else deployment.model.torch_dtype
        cost_model.check_matches(model or run.engine.model or deployment.model.name, deployment.tp, dtype,
                                 deployment.kv_cache_dtype, allow_extrapolation)
    v = replay(run, deployment, cost_model, seed=seed, notes=notes)
    steps = diagnose.decode_steps(run, cost_model)
    fit = diagnose.residual_fit(run, cost_model)
    d = deployment
    lines.append(f"{run.name}: {len(run.requests)} requests replayed ({run.source}) on {d.model.name} / {d.gpu.name} "
                 f"tp={d.tp} max_num_seqs={d.max_num_seqs} max_num_batched_tokens={d.max_num_batched_tokens} "
                 f"KV {d.num_gpu_blocks} blocks; cost model {_describe(cost_model.provenance())}")
    lines.append(format_errors(v.errors))
    if steps is not None:
        lines.append("\ndecode step time on the real batches (engine log vs cost model):")
        lines.append(diagnose.format_decode_steps(steps))
    if fit is not None:
        lines.append(f"residual fit over {fit['ticks']} log ticks: +{1e6 * fit['extra_s_per_prompt_token']:.1f} us per "
                     f"prompt token, +{1e6 * fit['extra_s_per_decode_token']:.1f} us per decode token beyond the model")
    for note in run.notes + v.notes:
        lines.append(f"note: {note}")
    summary = v.summary()
    summary["diagnosis"] = {"decode_steps": None if steps is None else steps.to_dict(orient="records"),
                            "residual_fit": fit}
    files = {
        "errors.csv": v.errors.to_csv(index=False),
        "validation.json": json.dumps(to_jsonable(summary), indent=2) + "\n",
        "requests.csv": v.requests.to_csv(index=False),
        "report.html": replay_report(v, steps),
    }
    tables = {"errors": v.errors, "requests": v.requests}
    if v.ticks is not None:
        files["ticks.csv"] = v.ticks.to_csv(index=False)
        tables["ticks"] = v.ticks
    return Validation(path, f"validate-{run.name}", to_jsonable(summary), tables, "\n".join(lines), files)


def _describe(prov: dict[str, Any]) -> str:
    """The cost model in a few words: kind, the tables it read, and its extrapolated share."""
    if prov.get("kind") != "kernels":
        return str(prov.get("kind")) + (f" ({prov['note']})" if prov.get("note") else "")
    tables = prov.get("tables") or {}
    versions = ", ".join(sorted(set((tables.get("vllm_versions") or {}).values())))
    return (f"kernels ({tables.get('device')}; {prov.get('ops', {}).get('linear')}; versions {versions}; "
            f"{100 * prov.get('extrapolated_share', 0.0):.1f}% of GPU time outside the measured grid)")


def _closed_loop(path: Path, cost_model_arg: str, gpu: str | None, requests_per_user: int | None, seed: int,
                 allow_extrapolation: bool = False) -> Validation:
    """Closed-loop silicon rows, each simulated as the benchmark ran it; MAPE by model."""
    from rllmsim.cost.kernel_calibration import load_kernel_correction
    from rllmsim.cost.select import KINDS, cost_model_for
    from rllmsim.validate.aiconfigurator import (BENCH_REQUESTS_PER_USER, mape_by_model, read_aiconfigurator,
                                                 require_simulated, validate_cases)
    from rllmsim.validate.plots import closed_loop_report

    correction = None if cost_model_arg in KINDS else load_kernel_correction(cost_model_arg)
    if cost_model_arg not in KINDS and correction is None:
        raise ConfigError("closed-loop silicon rows span many deployments; they validate the roofline and kernel "
                          "models and kernel corrections only (a regression calibration describes one deployment)")
    per_user = requests_per_user or BENCH_REQUESTS_PER_USER
    lines: list[str] = []
    cases = read_aiconfigurator(path)
    if correction is not None:  # every row on the corrected GPU (other GPUs: skipped, unless allowed)
        def factory(d):
            return correction.cost_model(d, allow_extrapolation)
    else:
        def factory(d):
            return cost_model_for(d, cost_model_arg)
    results = validate_cases(cases, factory, gpu=gpu, requests_per_user=per_user, seed=seed)
    require_simulated(results, path.name)
    mape = mape_by_model(results)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        shown = mape.drop(columns=["skip_reason"]).round(1)
        lines.append(f"{path.name}: {len(cases)} rows; benchmark client: all users start at t=0, {per_user} requests "
                     f"per user through a users-slot semaphore, means over every request; cost model {cost_model_arg}")
        lines.append(shown.to_string(index=False))
    for reason, count in results.loc[results["skipped"] != "", "skipped"].value_counts().items():
        lines.append(f"skipped {count} rows: {reason}")
    for reason, count in results.loc[(results["excluded"] != "") & (results["skipped"] == ""),
                                     "excluded"].value_counts().items():
        lines.append(f"excluded from MAPE {count} rows: {reason}")
    summary = {"source": str(path), "cost_model": cost_model_arg,
               "client": {"start": "all users at t=0 (the benchmark's concurrency burst)",
                          "requests_per_user": per_user, "requests": "requests_per_user x users, through a "
                          "users-slot semaphore", "means": "every request, the opening wave included",
                          "warmup": "not simulated: it drains before the measured phase"},
               "mape": mape.to_dict(orient="records"), "cases": results.to_dict(orient="records")}
    files = {
        "cases.csv": results.to_csv(index=False),
        "mape.csv": mape.to_csv(index=False),
        "validation.json": json.dumps(to_jsonable(summary), indent=2) + "\n",
        "report.html": closed_loop_report(results, mape, f"rllmsim validate: {path.name} ({cost_model_arg})"),
    }
    return Validation(path, f"validate-{path.stem}", to_jsonable(summary), {"cases": results, "mape": mape},
                      "\n".join(lines), files)
