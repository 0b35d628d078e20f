"""`rllmsim validate RUN`: replay a recorded real vLLM run and report how far the simulation is.

RUN is an LLMServingSim run folder (requests.jsonl, timeseries.csv, meta.json), a
`vllm bench serve --save-result --save-detailed` result JSON (engine args beside it), or an
aiconfigurator silicon CSV of closed-loop benchmarks. Writes, into --out:

- replayed runs: errors.csv (signed / absolute error per metric and statistic), validation.json
  (everything: errors, deployment, cost model, notes, diagnosis), requests.csv (per request, real
  vs simulated), ticks.csv (real vs simulated running / waiting / KV usage) and report.html;
- closed-loop CSVs: cases.csv (per row), mape.csv (TTFT, TPOT and E2EL MAPE by model),
  validation.json and report.html.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pandas as pd

from rllmsim.errors import ConfigError
from rllmsim.rundir import check_new_dir, default_run_dir, staged_directory, to_jsonable


@click.command("validate")
@click.argument("run_path", metavar="RUN", type=click.Path())
@click.option("--cost-model", default="auto", show_default=True,
              help="auto (kernel tables where the GPU has them, else roofline), roofline, kernels, "
                   "or a calibration JSON written by `rllmsim calibrate` (a regression, or a kernel correction "
                   "for any model on its GPU).")
@click.option("--gpu", default=None, help="GPU catalog name (default: from the run's records or name).")
@click.option("--model", default=None, help="Model catalog name, HF id or config.json (default: the run's).")
@click.option("--engine-args", default=None, type=click.Path(),
              help="JSON of the server's engine arguments, for a vllm bench result.")
@click.option("--allow-extrapolation", is_flag=True,
              help="Use a calibration measured on a different deployment.")
@click.option("--requests-per-user", type=int, default=None,
              help="Closed-loop cases: requests per user, the benchmark's num-requests / concurrency "
                   "[default: 20, as aiconfigurator's generated aiperf command sends].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", default=None, help="Output directory (default: a new folder under runs/).")
def command(run_path, cost_model, gpu, model, engine_args, allow_extrapolation, requests_per_user,
            seed, out_dir) -> None:
    """Replay a recorded real run through the simulator and report the error of every metric."""
    from rllmsim.validate.aiconfigurator import is_aiconfigurator

    path = Path(run_path)
    if not path.exists():
        raise ConfigError(f"recorded run not found: {path}")
    if requests_per_user is not None and requests_per_user < 1:
        raise ConfigError(f"--requests-per-user must be >= 1, got {requests_per_user}")
    out = check_new_dir(out_dir) if out_dir else None
    if is_aiconfigurator(path):
        files = _closed_loop(path, cost_model, gpu, requests_per_user, seed, allow_extrapolation)
        label = f"validate-{path.stem}"
    else:
        files, label = _replay(path, cost_model, gpu, model, engine_args, allow_extrapolation, seed)
    written = _write(out or default_run_dir(label), files)
    click.echo(f"validation written to {written}")


def _replay(path, cost_model_arg, gpu, model, engine_args, allow_extrapolation, seed):
    from rllmsim.cost.kernel_calibration import load_kernel_correction
    from rllmsim.cost.select import KINDS, cost_model_for
    from rllmsim.validate import diagnose
    from rllmsim.validate.compare import format_errors
    from rllmsim.validate.plots import replay_report
    from rllmsim.validate.replay import (build_deployment, engine_with_block_size, open_run, resolve_gpu,
                                         validate, with_measured_capacity)

    run = open_run(path, engine_args)
    notes: list[str] = []
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
    v = validate(run, deployment, cost_model, seed=seed, notes=notes)
    steps = diagnose.decode_steps(run, cost_model)
    fit = diagnose.residual_fit(run, cost_model)
    d = deployment
    click.echo(f"{run.name}: {len(run.requests)} requests replayed ({run.source}) on {d.model.name} / {d.gpu.name} "
               f"tp={d.tp} max_num_seqs={d.max_num_seqs} max_num_batched_tokens={d.max_num_batched_tokens} "
               f"KV {d.num_gpu_blocks} blocks; cost model {_describe(cost_model.provenance())}")
    click.echo(format_errors(v.errors))
    if steps is not None:
        click.echo("\ndecode step time on the real batches (engine log vs cost model):")
        click.echo(diagnose.format_decode_steps(steps))
    if fit is not None:
        click.echo(f"residual fit over {fit['ticks']} log ticks: +{1e6 * fit['extra_s_per_prompt_token']:.1f} us per "
                   f"prompt token, +{1e6 * fit['extra_s_per_decode_token']:.1f} us per decode token beyond the model")
    for note in run.notes + v.notes:
        click.echo(f"note: {note}")
    summary = v.summary()
    summary["diagnosis"] = {"decode_steps": None if steps is None else steps.to_dict(orient="records"),
                            "residual_fit": fit}
    files = {
        "errors.csv": v.errors.to_csv(index=False),
        "validation.json": json.dumps(to_jsonable(summary), indent=2) + "\n",
        "requests.csv": v.requests.to_csv(index=False),
        "report.html": replay_report(v, steps),
    }
    if v.ticks is not None:
        files["ticks.csv"] = v.ticks.to_csv(index=False)
    return files, f"validate-{run.name}"


def _describe(prov: dict) -> str:
    """The cost model in a few words: kind, the tables it read, and its extrapolated share."""
    if prov.get("kind") != "kernels":
        return str(prov.get("kind")) + (f" ({prov['note']})" if prov.get("note") else "")
    tables = prov.get("tables") or {}
    versions = ", ".join(sorted(set((tables.get("vllm_versions") or {}).values())))
    return (f"kernels ({tables.get('device')}; {prov.get('ops', {}).get('linear')}; versions {versions}; "
            f"{100 * prov.get('extrapolated_share', 0.0):.1f}% of GPU time outside the measured grid)")


def _closed_loop(path, cost_model_arg, gpu, requests_per_user, seed, allow_extrapolation=False):
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
        click.echo(f"{path.name}: {len(cases)} rows; benchmark client: all users start at t=0, {per_user} requests "
                   f"per user through a users-slot semaphore, means over every request; cost model {cost_model_arg}")
        click.echo(shown.to_string(index=False))
    for reason, count in results.loc[results["skipped"] != "", "skipped"].value_counts().items():
        click.echo(f"skipped {count} rows: {reason}")
    for reason, count in results.loc[(results["excluded"] != "") & (results["skipped"] == ""),
                                     "excluded"].value_counts().items():
        click.echo(f"excluded from MAPE {count} rows: {reason}")
    summary = {"source": str(path), "cost_model": cost_model_arg,
               "client": {"start": "all users at t=0 (the benchmark's concurrency burst)",
                          "requests_per_user": per_user, "requests": "requests_per_user x users, through a "
                          "users-slot semaphore", "means": "every request, the opening wave included",
                          "warmup": "not simulated: it drains before the measured phase"},
               "mape": mape.to_dict(orient="records"), "cases": results.to_dict(orient="records")}
    return {
        "cases.csv": results.to_csv(index=False),
        "mape.csv": mape.to_csv(index=False),
        "validation.json": json.dumps(to_jsonable(summary), indent=2) + "\n",
        "report.html": closed_loop_report(results, mape, f"rllmsim validate: {path.name} ({cost_model_arg})"),
    }


def _write(path: Path, files: dict[str, str]) -> Path:
    """All files land in a temporary sibling first, then one rename: no half-written output."""
    with staged_directory(path) as staging:
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
    return path
