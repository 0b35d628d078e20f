"""`rllmsim simulate`: run one workload on one deployment and write the run directory."""

from __future__ import annotations

import json

import click
from click.core import ParameterSource

from rllmsim import checks
from rllmsim.commands.multi_value import MultiValueOption
from rllmsim.commands.options import (deployment_from_options, deployment_options, parse_goodput,
                                      with_trace_model, workload_from_options, workload_options)
from rllmsim.cost.calibrated import calibrated_setup
from rllmsim.cost.kernel_calibration import load_kernel_correction
from rllmsim.cost.select import KINDS, cost_model_for
from rllmsim.metrics.bench_json import BENCH_FILE, bench_result
from rllmsim.metrics.console import format_summary
from rllmsim.rundir import check_new_dir, default_run_dir, to_jsonable, write_run
from rllmsim.simulation import run_simulation


@click.command("simulate")
@deployment_options
@workload_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", default=None, help="Run directory (default: a new folder under runs/).")
@click.option("--step-by-step", is_flag=True, help="Simulate every engine step (no fast-forward).")
@click.option("--goodput", cls=MultiValueOption, metavar="KEY:MS ...",
              help="Per-request SLOs in ms, as vllm bench serve takes them: --goodput ttft:500 tpot:50.")
@click.option("--straggler-factor", type=float, default=3.0, show_default=True,
              help="A request is a straggler past this multiple of its dataset's median E2EL.")
@click.option("--timeline/--no-timeline", default=True, show_default=True, help="Write timeline.parquet.")
@click.option("--cost-model", "cost_model_path", default="auto", show_default=True,
              help="auto (kernel tables where the GPU has them, else roofline), roofline, kernels, "
                   "or a calibration JSON (rllmsim calibrate).")
@click.option("--kernel-tables", default=None, help="A kernel-table folder (rllmsim kernels import) for this GPU.")
@click.option("--allow-extrapolation", is_flag=True,
              help="Use --cost-model on a deployment other than the one it was measured on.")
@click.option("--report", "report", is_flag=True, help="Also write report.html (plotly, works offline).")
def command(seed, out_dir, step_by_step, goodput, straggler_factor, timeline, report, cost_model_path,
            kernel_tables, allow_extrapolation, **opts) -> None:
    """Simulate serving a workload; prints a vllm-bench-style summary and writes the run."""
    checks.seed(seed, "--seed")
    checks.straggler_factor(straggler_factor, "--straggler-factor")
    checks.cost_model_arg(cost_model_path, KINDS)
    opts = with_trace_model(opts)
    deployment, cost_model = _deployment_and_cost_model(opts, cost_model_path, allow_extrapolation, kernel_tables)
    workload = workload_from_options(opts)
    slos = parse_goodput(goodput)
    out = check_new_dir(out_dir) if out_dir else default_run_dir(f"{deployment.model.name}-{deployment.gpu.name}")
    run = run_simulation(deployment, workload, seed=seed, cost_model=cost_model, router=opts["router"],
                         fast_forward=not step_by_step, slos_s=slos, straggler_factor=straggler_factor)
    tables = {"requests": run.requests}
    if timeline:
        tables["timeline"] = run.result.timeline
    extra = {}
    if report:
        from rllmsim.report import REPORT_FILE, run_report_html
        extra[REPORT_FILE] = run_report_html(run.summary, run.requests, tables.get("timeline"))
    extra[BENCH_FILE] = json.dumps(to_jsonable(bench_result(run.summary, run.requests, run.result.itl,
                                                            deployment.model.hf_id)), indent=2) + "\n"
    write_run(out, tables, run.summary, extra_files=extra)
    click.echo(format_summary(run.summary))
    click.echo(f"run written to {out}")


def _deployment_and_cost_model(opts: dict, path: str, allow_extrapolation: bool, kernel_tables: str | None):
    """The roofline and kernel models need only the options; a kernel correction only its GPU (when
    --gpu is not given) and times any model on it; a regression calibration fills in what the user
    left unset (model, device, KV pool, engine limits) from the engine it was measured on, and
    refuses a mismatch."""
    if path in KINDS:
        deployment = deployment_from_options(opts)
        return deployment, cost_model_for(deployment, path, kernel_tables)
    ctx = click.get_current_context()
    given = {name for name in opts if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    correction = load_kernel_correction(path)
    if correction is not None:  # any model on the corrected GPU: the options describe the deployment
        deployment = deployment_from_options(opts if "gpu" in given else {**opts, "gpu": correction.gpu})
        return deployment, correction.cost_model(deployment, allow_extrapolation, kernel_tables)
    setup = calibrated_setup(path, opts["model"] if "model" in given else None, opts["gpu"] if "gpu" in given else None)
    opts = {**opts, **{k: v for k, v in setup.engine_defaults.items() if k not in given}}
    deployment = deployment_from_options(opts, model=setup.model, gpu=setup.gpu)
    setup.cost_model.check_matches(deployment.model.name, deployment.tp, setup.cost_model.metadata.get("dtype", "auto"),
                                   deployment.kv_cache_dtype, allow_extrapolation=allow_extrapolation)
    return deployment, setup.cost_model
