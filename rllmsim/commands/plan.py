"""`rllmsim plan`: the cheapest deployment that serves a target rate within the SLOs.

A thin layer over `rllmsim.api.plan`, which checks the grid and runs the search.
"""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from rllmsim import checks
from rllmsim.api.plan import DEFAULT_GPUS, prepare
from rllmsim.commands.multi_value import MultiValueOption
from rllmsim.commands.options import DEFAULT_MODEL, RouterSpec, workload_options
from rllmsim.engine.router import ROUTERS
from rllmsim.sweep.plan import SEARCH_MODES

@click.command("plan")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Catalog name, HF id, or a config.json.")
@click.option("--gpus", "--gpu", "gpus", multiple=True, default=(DEFAULT_GPUS,), show_default=True,
              help="Candidate GPUs, comma-separated or repeated.")
@click.option("--tp", "tps", multiple=True, default=("1,2,4,8",), show_default=True, help="Candidate TP sizes.")
@click.option("--quantization", "quantizations", multiple=True, default=("none",), show_default=True,
              help="Candidate weight quantizations, e.g. none,fp8.")
@click.option("--kv-cache-dtype", "kv_dtypes", multiple=True, default=("auto",), show_default=True,
              help="Candidate KV-cache dtypes, e.g. auto,fp8.")
@click.option("--replicas", "replicas", default="auto", show_default=True,
              help="auto (as many as the target needs) or candidate counts such as 1,2,4.")
@click.option("--max-num-seqs", type=int, default=None)
@click.option("--max-num-batched-tokens", type=int, default=None)
@click.option("--max-model-len", type=int, default=None)
@click.option("--gpu-memory-utilization", type=float, default=0.9, show_default=True)
@click.option("--block-size", type=int, default=16, show_default=True)
@click.option("--enable-chunked-prefill/--no-enable-chunked-prefill", default=True, show_default=True)
@click.option("--router", type=RouterSpec(), default="round-robin", show_default=True,
              help=f"{', '.join(ROUTERS)}; the cache-aware ones take weights (kv-aware:prefix=2,kv=1,queue=1).")
@workload_options
@click.option("--slo", "slos", cls=MultiValueOption, required=True, metavar="METRIC_STAT=LIMIT ...",
              help="Percentile SLOs with a unit: --slo ttft_p99=10s tpot_p99=80ms e2el_p90=600s (unlike "
              "simulate's --goodput, which counts the requests that meet per-request limits).")
@click.option("--duration", "duration_s", type=float, default=1800.0, show_default=True,
              help="Seconds of arrivals per probe (the request count follows, within the bounds below).")
@click.option("--min-requests", type=int, default=200, show_default=True, help="Per replica, per probe.")
@click.option("--max-requests", type=int, default=6000, show_default=True, help="Per replica, per probe.")
@click.option("--warmup", type=float, default=0.25, show_default=True,
              help="Share of each probe's first requests left out of its SLO statistics.")
@click.option("--tolerance", "rel_tol", type=float, default=0.05, show_default=True,
              help="Stop bisecting when the rate bracket is this close (relative).")
@click.option("--max-probes", type=int, default=12, show_default=True, help="Probes per candidate search.")
@click.option("--start-rate", type=float, default=1.0, show_default=True,
              help="First probe, req/s per replica, with --no-first-bracket.")
@click.option("--first-bracket/--no-first-bracket", default=True, show_default=True,
              help="Start each search at the cost model's estimate of its rate (probes decide every "
              "reported rate); off: at --start-rate, doubling.")
@click.option("--search", type=click.Choice(SEARCH_MODES), default="cheapest", show_default=True,
              help="cheapest: once a deployment serves the target, stop each other candidate after one probe "
              "shows it needs more than that $/hour (docs/capacity_planning.md); all: search every candidate "
              "to the tolerance (each one's rate, and the full Pareto front).")
@click.option("--pd-ratios", default=None, metavar="1:3,2:6",
              help="Also search each auto-sized GPU x TP as prefill/decode-disaggregated units of x prefill and "
              "y decode instances (docs/capacity_planning.md).")
@click.option("--pareto-metric", default="e2el_p99", show_default=True, help="Latency axis of the Pareto front.")
@click.option("--verify", is_flag=True, help="Also simulate each auto-sized deployment whole at the target rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--seeds", default=None, metavar="0,1,2",
              help="Search each candidate under every seed's traffic; report the spread and size by the worst.")
@click.option("--workers", type=int, default=None, help="Candidates searched in parallel (default: CPU count).")
@click.option("--ray", "use_ray", is_flag=True, help="Search candidates on a local Ray instance.")
@click.option("--ray-address", default=None, help="Join a running Ray cluster.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Write plan.json, candidates.parquet and probes.parquet here.")
def command(model, gpus, tps, quantizations, kv_dtypes, replicas, router, slos, duration_s, min_requests,
            max_requests, warmup, rel_tol, max_probes, start_rate, first_bracket, search, pd_ratios, pareto_metric,
            verify, seed, seeds, workers, use_ray, ray_address, out_dir, **opts) -> None:
    """Find, per candidate deployment, the highest rate it sustains within the SLOs (bisection),
    and the cheapest deployment for the target --rate, with $/hour and $ per million output tokens.

    \b
    rllmsim plan --model deepseek-r1-distill-qwen-32b --dataset math-500 --rate 20 \\
        --gpus h100-sxm,h200,b200,a100-80gb --tp 1,2,4,8 --max-model-len 32768 \\
        --slo ttft_p99=10s --slo tpot_p99=80ms --slo e2el_p90=600s
    """
    ctx = click.get_current_context()
    given = {name: value for name, value in opts.items() if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    setup = prepare(slo=slos, model=model, gpus=gpus, tp=tps, quantization=quantizations, kv_cache_dtype=kv_dtypes,
                    replicas=replicas, router=router, duration_s=duration_s, min_requests=min_requests,
                    max_requests=max_requests, warmup=warmup, tolerance=rel_tol, max_probes=max_probes,
                    start_rate=start_rate, first_bracket=first_bracket, search=search, pd_ratios=pd_ratios,
                    pareto_metric=pareto_metric, verify=verify, seed=seed, seeds=seeds, workers=workers,
                    ray=use_ray, ray_address=ray_address, **given)
    if out_dir:
        checks.writable_dir(out_dir)
    click.echo(setup.header())
    try:
        with click.progressbar(length=len(setup.candidates), label="candidates", show_pos=True,
                               file=sys.stderr) as bar:
            result = setup.run(on_result=lambda row: bar.update(1))
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        sys.exit(130)
    click.echo(result.text)
    if out_dir:
        path = result.save(out_dir)
        click.echo(f"plan written to {path}")
