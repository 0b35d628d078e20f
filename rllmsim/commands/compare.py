"""`rllmsim compare`: one workload and seed under several deployment variants, with deltas.

A thin layer over `rllmsim.api.compare`: the flags the user gave become its keywords.
"""

from __future__ import annotations

import click
from click.core import ParameterSource

from rllmsim import checks
from rllmsim.api.compare import prepare
from rllmsim.commands.multi_value import MultiValueOption
from rllmsim.commands.options import deployment_options, workload_options
from rllmsim.rundir import check_new_dir, default_run_dir


@click.command("compare")
@deployment_options
@workload_options
@click.option("--variant", "variant_specs", multiple=True, metavar="NAME:FLAGS",
              help="A variant: a name, a colon, and deployment flags that override the shared ones, "
                   "comma-separated (e.g. awq:--quantization=awq or spec:--speculative-method=ngram,"
                   "--num-speculative-tokens=4). Repeat it; the first is the baseline ('baseline:' = shared).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", default=None, help="Output directory (default: a new folder under runs/).")
@click.option("--goodput", cls=MultiValueOption, metavar="KEY:MS ...",
              help="Per-request SLOs in ms, as vllm bench serve takes them: --goodput ttft:500 tpot:50.")
@click.option("--straggler-factor", type=float, default=3.0, show_default=True,
              help="A request is a straggler past this multiple of its dataset's median E2EL.")
@click.option("--step-by-step", is_flag=True, help="Simulate every engine step (no fast-forward).")
@click.option("--html/--no-html", default=True, show_default=True, help="Write compare.html (plotly, self-contained).")
@click.option("--save-runs", is_flag=True, help="Also write each variant's run directory under OUT/runs/NAME/.")
def command(variant_specs, seed, out_dir, goodput, straggler_factor, step_by_step, html, save_runs, **opts) -> None:
    """Run one workload and seed under several variants; print one table of metrics with deltas
    against the first variant, and write compare.json, compare.csv and compare.html.

    \b
    rllmsim compare --model deepseek-r1-distill-qwen-14b --dataset math-500 \\
        --variant baseline: --variant fp8kv:--kv-cache-dtype=fp8 --variant awq:--quantization=awq
    """
    checks.seed(seed, "--seed")
    checks.straggler_factor(straggler_factor, "--straggler-factor")
    ctx = click.get_current_context()
    given = {name: value for name, value in opts.items() if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    setup = prepare(list(variant_specs), seed=seed, goodput=goodput, straggler_factor=straggler_factor,
                    step_by_step=step_by_step, **given)
    base = setup.variants[0].deployment
    out = check_new_dir(out_dir) if out_dir else default_run_dir(f"compare-{base.model.name}-{base.gpu.name}")
    comparison = setup.run(progress=lambda name: click.echo(f"simulating {name} ...", err=True))
    comparison.save(out, html=html, save_runs=save_runs)
    click.echo(comparison.format())
    files = ", ".join(f for f in ("compare.json", "compare.csv", "compare.html") if html or f != "compare.html")
    click.echo(f"comparison written to {out} ({files})")
