"""`rllmsim plan`: the cheapest deployment that serves a target rate within the SLOs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rllmsim import checks
from rllmsim.commands.multi_value import MultiValueOption
from rllmsim.commands.options import DEFAULT_MODEL, workload_from_options, workload_options
from rllmsim.engine.router import ROUTERS
from rllmsim.errors import ConfigError
from rllmsim.specs import load_model
from rllmsim.sweep.executors import default_workers, make_executor
from rllmsim.sweep.plan import PlanSettings, candidates_from, run_plan
from rllmsim.sweep.plan_output import format_plan, write_plan
from rllmsim.sweep.slo import parse_slos

DEFAULT_GPUS = "h100-sxm,h200,b200,a100-80gb"


def _split(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _ints(values: tuple[str, ...], flag: str) -> list[int]:
    try:
        return [int(v) for v in _split(values)]
    except ValueError:
        raise ConfigError(f"{flag} takes integers such as 1,2,4, got {','.join(values)!r}") from None


def _check_grid(model: str, candidates, seed: int, workers: int | None, out_dir: str | None) -> None:
    """Every value of the grid is checked before the search starts (and its progress bar), so a
    typo is one line instead of a table of failed candidates. A candidate that does not fit its
    GPU, or whose TP does not divide the model's heads, is a result, not a mistake."""
    checks.seed(seed, "--seed")
    if workers is not None:
        checks.integer(workers, "--workers", minimum=1)
    load_model(model)
    for candidate in candidates:
        checks.tp_size(candidate.tp, "--tp")
        checks.quantization(candidate.quantization, "--quantization")
        checks.kv_cache_dtype(candidate.kv_cache_dtype, "--kv-cache-dtype")
        if candidate.replicas is not None:
            checks.integer(candidate.replicas, "--replicas", minimum=1, fix="give auto or counts such as 1,2,4")
    if out_dir:
        checks.writable_dir(out_dir)


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
@click.option("--router", type=click.Choice(sorted(ROUTERS)), default="round-robin", show_default=True)
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
@click.option("--start-rate", type=float, default=1.0, show_default=True, help="First probe, req/s per replica.")
@click.option("--pareto-metric", default="e2el_p99", show_default=True, help="Latency axis of the Pareto front.")
@click.option("--verify", is_flag=True, help="Also simulate each auto-sized deployment whole at the target rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=None, help="Candidates searched in parallel (default: CPU count).")
@click.option("--ray", "use_ray", is_flag=True, help="Search candidates on a local Ray instance.")
@click.option("--ray-address", default=None, help="Join a running Ray cluster.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Write plan.json, candidates.parquet and probes.parquet here.")
def command(model, gpus, tps, quantizations, kv_dtypes, replicas, router, slos, duration_s, min_requests,
            max_requests, warmup, rel_tol, max_probes, start_rate, pareto_metric, verify, seed, workers,
            use_ray, ray_address, out_dir, **opts) -> None:
    """Find, per candidate deployment, the highest rate it sustains within the SLOs (bisection),
    and the cheapest deployment for the target --rate, with $/hour and $ per million output tokens.

    \b
    rllmsim plan --model deepseek-r1-distill-qwen-32b --dataset math-500 --rate 20 \\
        --gpus h100-sxm,h200,b200,a100-80gb --tp 1,2,4,8 --max-model-len 32768 \\
        --slo ttft_p99=10s --slo tpot_p99=80ms --slo e2el_p90=600s
    """
    engine_keys = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "gpu_memory_utilization",
                   "block_size", "enable_chunked_prefill")
    engine = {k: opts.pop(k) for k in engine_keys}
    engine = {k: v for k, v in engine.items() if v is not None}
    checks.engine_fields(engine)
    ctx = click.get_current_context()
    if ctx.get_parameter_source("num_requests") is not click.core.ParameterSource.DEFAULT:
        min_requests = max_requests = opts["num_requests"]  # an explicit count fixes it
    workload = workload_from_options(opts).to_dict()
    target = workload.pop("rate")
    workload.pop("num_requests")
    replica_choices: list[int | None] = [None] if replicas.strip().lower() == "auto" \
        else _ints((replicas,), "--replicas")
    settings = PlanSettings(model=model, target_rate=target, slos=tuple(parse_slos(slos)), workload=workload,
                            engine=engine, router=router, duration_s=duration_s, min_requests=min_requests,
                            max_requests=max_requests, warmup=warmup, seed=seed, rel_tol=rel_tol,
                            max_probes=max_probes, start_rate=start_rate, pareto_metric=pareto_metric,
                            verify=verify)
    candidates = candidates_from(_split(gpus), _ints(tps, "--tp"), _split(quantizations), _split(kv_dtypes),
                                 replica_choices)
    _check_grid(model, candidates, seed, workers, out_dir)
    click.echo(f"plan: {len(candidates)} candidates for {model} at {target:g} req/s; SLOs "
               + ", ".join(str(s) for s in settings.slos))
    executor = make_executor(workers or (None if (use_ray or ray_address) else default_workers()),
                             ray=use_ray, ray_address=ray_address)
    try:
        with click.progressbar(length=len(candidates), label="candidates", show_pos=True,
                               file=sys.stderr) as bar:
            result = run_plan(settings, candidates, executor, on_result=lambda row: bar.update(1))
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        sys.exit(130)
    finally:
        executor.close()
    click.echo(format_plan(result))
    if out_dir:
        path = write_plan(result, Path(out_dir))
        click.echo(f"plan written to {path}")
