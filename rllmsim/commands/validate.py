"""`rllmsim validate RUN`: replay a recorded real vLLM run and report how far the simulation is.

RUN is an LLMServingSim run folder (requests.jsonl, timeseries.csv, meta.json), a
`vllm bench serve --save-result --save-detailed` result JSON (engine args beside it), or an
aiconfigurator silicon CSV of closed-loop benchmarks. Writes, into --out:

- replayed runs: errors.csv (signed / absolute error per metric and statistic), validation.json
  (everything: errors, deployment, cost model, notes, diagnosis), requests.csv (per request, real
  vs simulated), ticks.csv (real vs simulated running / waiting / KV usage) and report.html;
- closed-loop CSVs: cases.csv (per row), mape.csv (TTFT, TPOT and E2EL MAPE by model),
  validation.json and report.html.

A thin layer over `rllmsim.api.validate`, which replays the run and builds those files.
"""

from __future__ import annotations

from pathlib import Path

import click

from rllmsim.errors import ConfigError
from rllmsim.rundir import check_new_dir, default_run_dir


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
    from rllmsim.api.validate import validate

    path = Path(run_path)
    if not path.exists():
        raise ConfigError(f"recorded run not found: {path}")
    if requests_per_user is not None and requests_per_user < 1:
        raise ConfigError(f"--requests-per-user must be >= 1, got {requests_per_user}")
    out = check_new_dir(out_dir) if out_dir else None
    result = validate(path, cost_model=cost_model, gpu=gpu, model=model, engine_args=engine_args,
                      allow_extrapolation=allow_extrapolation, requests_per_user=requests_per_user, seed=seed)
    click.echo(result.text)
    written = result.save(out or default_run_dir(result.label))
    click.echo(f"validation written to {written}")
