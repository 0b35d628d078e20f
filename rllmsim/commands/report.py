"""`rllmsim report DIR`: the HTML report of any directory rllmsim writes (works offline by default)."""

from __future__ import annotations

import click

from rllmsim.report import REPORT_FILE, directory_kind, write_report
from rllmsim.report.html import PLOTLYJS_FILE, PLOTLYJS_MODES


@click.command("report")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help=f"Where to write the page (default: DIRECTORY/{REPORT_FILE}).")
@click.option("--plotlyjs", type=click.Choice(PLOTLYJS_MODES), default="inline", show_default=True,
              help="inline: plotly.js in the page (4.6 MB, opens offline); cdn: loaded from cdn.plot.ly; "
                   "directory: one plotly.min.js beside the page, shared by the reports of a folder.")
def command(directory, out_path, plotlyjs) -> None:
    """Write report.html for a run (KV usage, counts, latency CDFs, Gantt, why stragglers are long,
    per-dataset), a sweep (metric-vs-rate curves, cost/latency Pareto), a plan, or a comparison
    (the delta table; figures where it was run with --save-runs). A validation's report.html is
    written by `rllmsim validate` itself; this says where it is."""
    kind = directory_kind(directory)
    path = write_report(directory, out_path, plotlyjs)
    if kind == "validate" and out_path is None:
        click.echo(f"{path} is already there: `rllmsim validate` wrote it with the replay (rerun validate to rebuild it)")
        return
    how = {"inline": "plotly.js inlined", "cdn": "plotly.js from the CDN",
           "directory": f"plotly.js in {path.parent / PLOTLYJS_FILE}"}[plotlyjs]
    click.echo(f"report written to {path} ({path.stat().st_size / 1e6:.1f} MB, {how})")
