"""Self-contained HTML reports of a run, a sweep or a plan directory (plotly.js inlined).

`build_report(path)` returns the HTML of whatever directory it is given; `write_report(path)`
writes it atomically to `path/report.html` (or elsewhere). `run_report_html(summary, requests,
timeline)` serves `simulate --report`, which writes the page with the run itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from rllmsim.errors import ConfigError
from rllmsim.file_checks import load_yaml, read_file, read_json_object, read_run
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
    from rllmsim.report.sweep_figures import sweep_sections
    from rllmsim.sweep.results import read_results

    frame = read_results(directory)
    spec_path = directory / "sweep.yaml"
    spec = read_file(spec_path, "sweep spec", lambda p: load_yaml(p.read_text())) if spec_path.exists() else None
    if spec is not None and not isinstance(spec, dict):
        raise ConfigError(f"{spec_path}: a sweep spec must be a mapping; rewrite or remove it")
    name = (spec or {}).get("name") or directory.name
    return render_page(f"rllmsim sweep: {name}", f"{len(frame)} runs in {directory}", sweep_sections(frame, spec))


def plan_report_html(directory: Path) -> str:
    from rllmsim.report.sweep_figures import plan_sections

    plan = read_json_object(directory / "plan.json", "plan")
    candidates = read_file(directory / "candidates.parquet", "plan candidates table", pd.read_parquet)
    probes_path = directory / "probes.parquet"
    probes = read_file(probes_path, "plan probes table", pd.read_parquet) if probes_path.exists() else pd.DataFrame()
    s = plan.get("settings")
    if not isinstance(s, dict) or not isinstance(s.get("model"), str) or \
            isinstance(s.get("target_rate"), bool) or not isinstance(s.get("target_rate"), (int, float)):
        raise ConfigError(f"{directory / 'plan.json'}: field 'settings' must hold model and target_rate; "
                          "rewrite it with `rllmsim plan --out`")
    return render_page(f"rllmsim plan: {s['model']} at {s['target_rate']:g} req/s",
                       f"{len(candidates)} candidates in {directory}", plan_sections(plan, candidates, probes))


def build_report(path: str | Path) -> str:
    """The report of a run, sweep or plan directory."""
    directory = Path(path)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory; give a run, sweep or plan directory")
    # the files are data from disk: a value of the wrong type deep in them is one line too
    if (directory / "results.parquet").exists():
        return read_file(directory, "sweep directory", sweep_report_html)
    if (directory / "plan.json").exists():
        return read_file(directory, "plan directory", plan_report_html)
    if (directory / "summary.json").exists() and (directory / "requests.parquet").exists():
        return read_file(directory, "run directory", lambda d: run_report_html(*read_run(d)))
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
