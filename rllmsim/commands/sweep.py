"""`rllmsim sweep SPEC.yaml --out DIR`: a grid of simulations, locally or on Ray, resumable."""

from __future__ import annotations

import sys

import click

from rllmsim import checks
from rllmsim.sweep.driver import plan_sweep, run_sweep
from rllmsim.sweep.executors import default_workers, make_executor
from rllmsim.sweep.spec import load_spec


@click.command("sweep")
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Sweep directory: results.parquet and sweep.yaml land here; re-runs resume it.")
@click.option("--workers", type=int, default=None,
              help="Parallel runs (default: CPU count). 1 runs in this process.")
@click.option("--ray", "use_ray", is_flag=True, help="Run on a local Ray instance (pip install 'rllmsim[ray]').")
@click.option("--ray-address", default=None, help="Join a running Ray cluster, e.g. auto or ray://head:10001.")
@click.option("--retry-failed", is_flag=True, help="Run again the runs recorded as failed.")
@click.option("--save-runs", is_flag=True, help="Also write each run's directory under DIR/runs/<key>/.")
@click.option("--dry-run", is_flag=True, help="List what would run and exit.")
def command(spec_path, out_dir, workers, use_ray, ray_address, retry_failed, save_runs, dry_run) -> None:
    """Simulate every (deployment x workload x seed) of a YAML grid; resumable, one row per run."""
    spec = load_spec(spec_path)
    if workers is not None:
        checks.integer(workers, "--workers", minimum=1)
    checks.writable_dir(out_dir)
    runs, todo, _ = plan_sweep(spec, out_dir, retry_failed, save_runs)
    axes = ", ".join(spec.axes) or "none"
    click.echo(f"sweep {spec.name}: {len(runs)} runs over axes [{axes}] x {len(spec.seeds)} seed(s); "
               f"{len(runs) - len(todo)} already in {out_dir}, {len(todo)} to run")
    if dry_run or not todo:
        if not todo:
            click.echo(f"nothing to do; results in {out_dir}/results.parquet")
        return
    executor = make_executor(workers or (None if (use_ray or ray_address) else default_workers()),
                             ray=use_ray, ray_address=ray_address)
    click.echo(f"executor: {executor.name}" + (f" ({getattr(executor, 'workers', '')} workers)"
                                                if executor.name == "local" else ""))
    try:
        with click.progressbar(length=len(todo), label="runs", show_pos=True, show_eta=True,
                               file=sys.stderr) as bar:
            outcome = run_sweep(spec, out_dir, executor, retry_failed=retry_failed, save_runs=save_runs,
                                on_result=lambda row: bar.update(1))
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; finished runs are in {out_dir}/results.parquet. "
                   "Run the same command again to finish the rest.", err=True)
        sys.exit(130)
    finally:
        executor.close()
    click.echo(f"{outcome.ran} runs done ({outcome.failed} failed), {outcome.skipped} skipped; "
               f"results in {outcome.results_path}")
    for error in _distinct(outcome.errors)[:5]:
        click.echo(f"  failed: {error}")


def _distinct(items: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for item in items:
        seen[item] = seen.get(item, 0) + 1
    return [f"{text} (x{count})" if count > 1 else text for text, count in seen.items()]
