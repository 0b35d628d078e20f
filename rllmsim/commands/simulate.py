"""`rllmsim simulate`: run one workload on one deployment and write the run directory.

A thin layer over the Python API (`rllmsim.api.simulate`): the flags the user gave become its
keywords, so the CLI and `rllmsim.simulate(...)` resolve a run identically.
"""

from __future__ import annotations

import click
from click.core import ParameterSource

from rllmsim import checks
from rllmsim.api.simulate import prepare
from rllmsim.commands.multi_value import MultiValueOption
from rllmsim.commands.options import deployment_options, workload_options
from rllmsim.cost.select import KINDS
from rllmsim.metrics.console import format_summary
from rllmsim.rundir import check_new_dir, default_run_dir


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
    ctx = click.get_current_context()
    given = {name: value for name, value in opts.items() if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    simulation = prepare(seed=seed, cost_model=cost_model_path, kernel_tables=kernel_tables,
                         allow_extrapolation=allow_extrapolation, step_by_step=step_by_step, goodput=goodput,
                         straggler_factor=straggler_factor, **given)
    d = simulation.deployment
    out = check_new_dir(out_dir) if out_dir else default_run_dir(f"{d.model.name}-{d.gpu.name}")
    run = simulation.run()
    run.save(out, timeline=timeline, report=report)
    click.echo(format_summary(run.summary))
    click.echo(f"run written to {out}")
