"""Self-contained HTML reports of a run, a sweep or a plan directory (plotly.js inlined).

`build_report(path)` returns the HTML of whatever directory it is given; `write_report(path)`
writes it atomically to `path/report.html` (or elsewhere). `run_report_html(summary, requests,
timeline)` serves `simulate --report`, which writes the page with the run itself.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from rllmsim.errors import ConfigError
from rllmsim.report.html import render_page

REPORT_FILE = "report.html"


def run_report_html(summary: Mapping[str, Any], requests: pd.DataFrame, timeline: pd.DataFrame | None,
                    title: str | None = None) -> str:
    from rllmsim.report.run_figures import run_sections

    dep = summary.get("config", {}).get("deployment", {})
    label = title or (f"{dep.get('model', 'run')} on {dep.get('replicas', '?')} x {dep.get('gpu', '?')} "
                      f"tp{dep.get('tp', '?')}")
    work = summary.get("config", {}).get("workload", {})
    subtitle = (f"{work.get('dataset', '')} {work.get('arrival', '')} at {work.get('rate', '')} req/s, "
                f"{summary.get('requests', {}).get('arrived', '?')} requests, seed {summary.get('seed', '?')}")
    return render_page(f"rllmsim run: {label}", subtitle, run_sections(summary, requests, timeline))


def sweep_report_html(directory: Path) -> str:
    import yaml

    from rllmsim.report.sweep_figures import sweep_sections
    from rllmsim.sweep.results import read_results

    frame = read_results(directory)
    spec_path = directory / "sweep.yaml"
    spec = yaml.safe_load(spec_path.read_text()) if spec_path.exists() else None
    name = (spec or {}).get("name") or directory.name
    return render_page(f"rllmsim sweep: {name}", f"{len(frame)} runs in {directory}", sweep_sections(frame, spec))


def plan_report_html(directory: Path) -> str:
    from rllmsim.report.sweep_figures import plan_sections

    plan = json.loads((directory / "plan.json").read_text())
    candidates = pd.read_parquet(directory / "candidates.parquet")
    probes_path = directory / "probes.parquet"
    probes = pd.read_parquet(probes_path) if probes_path.exists() else pd.DataFrame()
    s = plan["settings"]
    return render_page(f"rllmsim plan: {s['model']} at {s['target_rate']:g} req/s",
                       f"{len(candidates)} candidates in {directory}", plan_sections(plan, candidates, probes))


def build_report(path: str | Path) -> str:
    """The report of a run, sweep or plan directory."""
    directory = Path(path)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory; give a run, sweep or plan directory")
    if (directory / "results.parquet").exists():
        return sweep_report_html(directory)
    if (directory / "plan.json").exists():
        return plan_report_html(directory)
    if (directory / "summary.json").exists() and (directory / "requests.parquet").exists():
        summary = json.loads((directory / "summary.json").read_text())
        requests = pd.read_parquet(directory / "requests.parquet")
        timeline_path = directory / "timeline.parquet"
        timeline = pd.read_parquet(timeline_path) if timeline_path.exists() else None
        return run_report_html(summary, requests, timeline)
    raise ConfigError(f"{directory}: neither a run (summary.json + requests.parquet), a sweep (results.parquet) "
                      "nor a plan (plan.json)")


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    directory = Path(path)
    return write_text_atomic(Path(out) if out else directory / REPORT_FILE, build_report(directory))


__all__ = ["REPORT_FILE", "build_report", "run_report_html", "write_report", "write_text_atomic"]
