"""`rllmsim calibrate PROFILE`: fit the regression cost model to a profile, or (`--on kernels`) a
correction of the kernel model of the profiled GPU (op scales and host times)."""

from __future__ import annotations

from pathlib import Path

import click

from rllmsim.errors import ConfigError


def _fmt(m: dict | None) -> str:
    if not m:
        return "-"
    return (f"MAPE {m['mape_pct']:6.2f}%  P90 {m['p90_ape_pct']:6.2f}%  R2 {m['r2']:.4f}  "
            f"(n={m['n']})")


def format_report(doc: dict) -> str:
    lines = [f"calibration {doc['name']} from profile {doc['profile']['name']} "
             f"({doc['fit']['steps']} steps: {doc['fit']['kinds']})",
             f"  overhead_s = {doc['overhead_s']:.6g}"]
    for name, coef in doc["coefficients"].items():
        lines.append(f"  {name:<20s} {coef:.6g} s/unit")
    metrics = doc["metrics"]
    lines += _split_lines(metrics, ("linear", "linear+tree"))
    lines.append(f"  selected: {metrics['selected']}")
    return "\n".join(lines)


def format_kernel_report(doc: dict) -> str:
    fit = doc["fit"]
    d = fit["deployment"]
    lines = [f"kernel correction {doc['name']} of {doc['gpu']} from profile {doc['profile']['name']} "
             f"({fit['steps']} steps: {fit['kinds']}; {d['model']} tp={d['tp']})"]
    for group, scale in doc["scales"].items():
        share = fit["group_share_of_wall"][group]
        lines.append(f"  scale {group:<13s} {scale:.4f}   ({share:.1%} of profiled wall time before scaling)")
    host = doc["host"]
    lines.append(f"  host: {1e3 * host['step_s']:.4f} ms per step + {1e6 * host['per_seq_s']:.3f} us per sequence "
                 f"+ {1e9 * host['per_token_s']:.2f} ns per token")
    lines += _split_lines(doc["metrics"], ("corrected", "uncorrected"))
    return "\n".join(lines)


def _split_lines(metrics: dict, models: tuple[str, ...]) -> list[str]:
    """The held-out and in-sample errors of each model, one block per split."""
    lines = []
    for split in ("random_20", "extrapolation", "in_sample"):
        block = metrics.get(split, {})
        lines.append(f"  {split}: n_train={block.get('n_train', '-')} "
                     f"n_test={block.get('n_test', block.get(models[0], {}).get('n', '-'))}"
                     + (f"  ({block['skipped']})" if "skipped" in block else ""))
        lines += [f"    {model:<12s} {_fmt(block[model])}" for model in models if model in block]
    return lines


@click.command("calibrate")
@click.argument("profile", type=click.Path())
@click.option("--name", help="Calibration name (default: the profile's name).")
@click.option("--out", "out_dir", default="calibration", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--features", help="Comma-separated features (default: prefill_tokens,"
              "prefill_attn_pairs,prefill_seqs,decode_tokens,decode_kv_tokens).")
@click.option("--phases", help="Comma-separated phases to fit (default: all but warmup).")
@click.option("--residual", type=click.Choice(["auto", "never", "always"]), default="auto",
              show_default=True, help="Residual tree: auto keeps it only if held-out error drops.")
@click.option("--keep-contended", is_flag=True,
              help="Also fit steps the profiler flagged as slowed by other processes.")
@click.option("--test-fraction", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--on", "on", type=click.Choice(["regression", "kernels", "auto"]), default="regression",
              show_default=True,
              help="regression: a linear law of the profiled deployment only; kernels: op scales and host "
                   "times on top of the kernel model of the profiled GPU (every model on it); auto: kernels "
                   "when the profile's device is a catalog GPU with kernel tables, else regression.")
def command(profile, name, out_dir, features, phases, residual, keep_contended, test_fraction,
            seed, on):
    """Fit a non-negative linear step-time model to PROFILE (.parquet, .json or the stem), or a
    correction of the kernel model (--on kernels), and write CALIBRATION/NAME.json with the fit,
    held-out errors and the profile metadata."""
    from rllmsim.cost.kernel_calibration import calibrate_kernels, profiled_gpu
    from rllmsim.cost.profile_table import read_profile
    from rllmsim.cost.regression import DEFAULT_FEATURES, calibrate, save_calibration

    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    prof = read_profile(profile)
    if prof.metadata.get("status") not in (None, "complete"):
        click.echo(f"warning: profile status is {prof.metadata.get('status')!r}; "
                   f"calibrating the {len(prof.frame)} steps it kept", err=True)
    feats = tuple(f.strip() for f in features.split(",") if f.strip()) if features else \
        DEFAULT_FEATURES
    phase_list = [p.strip() for p in phases.split(",") if p.strip()] if phases else None
    name = name or prof.name
    if "/" in name or name.startswith("."):
        raise ConfigError(f"--name must be a plain file name, got {name!r}")
    if on == "auto":
        on = "kernels" if profiled_gpu(prof.metadata) is not None else "regression"
    if on == "kernels":
        ctx = click.get_current_context()
        regression_only = [f"--{p}" for p in ("features", "residual")
                           if ctx.get_parameter_source(p) != click.core.ParameterSource.DEFAULT]
        if regression_only:
            raise ConfigError(f"{', '.join(regression_only)} applies to --on regression, not to a kernel correction")
        doc = calibrate_kernels(prof, name, phase_list, seed, test_fraction, keep_contended)
    else:
        doc = calibrate(prof, name, feats, phase_list, residual, seed, test_fraction, keep_contended)
    path = save_calibration(doc, Path(out_dir) / f"{name}.json")
    click.echo(format_kernel_report(doc) if on == "kernels" else format_report(doc))
    click.echo(f"wrote {path}")
