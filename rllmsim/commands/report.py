"""`rllmsim report RUN_OR_SWEEP_DIR`: a self-contained HTML report (works offline)."""

from __future__ import annotations

import click

from rllmsim.report import REPORT_FILE, write_report


@click.command("report")
@click.argument("directory", metavar="RUN_OR_SWEEP_DIR", type=click.Path(file_okay=False))
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help=f"Where to write the page (default: DIRECTORY/{REPORT_FILE}).")
def command(directory, out_path) -> None:
    """Write report.html for a run (KV usage, counts, latency CDFs, Gantt, per-dataset), a sweep
    (metric-vs-rate curves, cost/latency Pareto) or a plan directory."""
    path = write_report(directory, out_path)
    click.echo(f"report written to {path} ({path.stat().st_size / 1e6:.1f} MB, plotly.js inlined)")
