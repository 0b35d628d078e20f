"""HTML reports of every directory the CLI writes: a run, a sweep, a plan, a comparison, and a
validation (whose report.html `rllmsim validate` writes itself, from the replay in memory).

`directory_kind(path)` says which kind a directory is; `build_report(path)` returns its page;
`write_report(path)` writes it atomically to `path/report.html` (or elsewhere). plotly.js is
inlined unless `plotlyjs` says "cdn" or "directory" (one plotly.min.js beside the pages).
`run_report_html(summary, requests, timeline)` serves `simulate --report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from rllmsim.errors import ConfigError
from rllmsim.file_checks import load_yaml, read_file, read_json_object, read_run
from rllmsim.report.files import write_text_atomic
from rllmsim.report.html import check_plotlyjs, render_page, write_plotlyjs

REPORT_FILE = "report.html"


def run_report_html(summary: Mapping[str, Any], requests: pd.DataFrame, timeline: pd.DataFrame | None,
                    title: str | None = None, plotlyjs: str = "inline") -> str:
    from rllmsim.report.run_figures import run_sections

    dep = summary.get("config", {}).get("deployment", {})
    label = title or (f"{dep.get('model', 'run')} on {dep.get('replicas', '?')} x {dep.get('gpu', '?')} "
                      f"tp{dep.get('tp', '?')}")
    work = summary.get("config", {}).get("workload", {})
    subtitle = (f"{work.get('dataset', '')} {work.get('arrival', '')} at {work.get('rate', '')} req/s, "
                f"{summary.get('requests', {}).get('arrived', '?')} requests, seed {summary.get('seed', '?')}")
    return render_page(f"rllmsim run: {label}", subtitle, run_sections(summary, requests, timeline), plotlyjs)


def sweep_report_html(directory: Path, plotlyjs: str = "inline") -> str:
    from rllmsim.report.sweep_figures import sweep_sections
    from rllmsim.sweep.results import read_results

    frame = read_results(directory)
    spec_path = directory / "sweep.yaml"
    spec = read_file(spec_path, "sweep spec", lambda p: load_yaml(p.read_text())) if spec_path.exists() else None
    if spec is not None and not isinstance(spec, dict):
        raise ConfigError(f"{spec_path}: a sweep spec must be a mapping; rewrite or remove it")
    name = (spec or {}).get("name") or directory.name
    return render_page(f"rllmsim sweep: {name}", f"{len(frame)} runs in {directory}", sweep_sections(frame, spec),
                       plotlyjs)


def plan_report_html(directory: Path, plotlyjs: str = "inline") -> str:
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
                       f"{len(candidates)} candidates in {directory}", plan_sections(plan, candidates, probes),
                       plotlyjs)


#: Each kind of directory and the file that marks it, checked in this order (a run's summary.json
#: counts only beside requests.parquet).
KINDS = (("sweep", "results.parquet"), ("plan", "plan.json"), ("compare", "compare.json"),
         ("validate", "validation.json"), ("run", "summary.json"))
EXPECTED = ("a run (summary.json + requests.parquet), a sweep (results.parquet), a plan (plan.json), "
            "a comparison (compare.json) or a validation (validation.json)")


def directory_kind(path: str | Path) -> str:
    """sweep, plan, compare, validate or run; ConfigError naming what was expected otherwise."""
    directory = Path(path)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory; give {EXPECTED}")
    for kind, marker in KINDS:
        if (directory / marker).exists() and (kind != "run" or (directory / "requests.parquet").exists()):
            return kind
    raise ConfigError(f"{directory}: not a directory rllmsim writes; give {EXPECTED}")


def build_report(path: str | Path, plotlyjs: str = "inline") -> str:
    """The report page of a run, sweep, plan or compare directory (a validation's is already there)."""
    from rllmsim.report.compare_dir import compare_report_html

    check_plotlyjs(plotlyjs)
    directory = Path(path)
    kind = directory_kind(directory)
    if kind == "validate":
        raise ConfigError(f"{directory}: a validation's report.html is written by `rllmsim validate` from the "
                          "replay; rerun `rllmsim validate RUN --out DIR` to rebuild the page")
    builders = {"sweep": sweep_report_html, "plan": plan_report_html, "compare": compare_report_html,
                "run": lambda d, mode: run_report_html(*read_run(d), plotlyjs=mode)}
    # the files are data from disk: a value of the wrong type deep in them is one line too
    return read_file(directory, f"{kind} directory", lambda d: builders[kind](d, plotlyjs))


def write_report(path: str | Path, out: str | Path | None = None, plotlyjs: str = "inline") -> Path:
    """Write the page (and plotly.min.js beside it for "directory"); a validation's page is left
    as `rllmsim validate` wrote it, and its path returned."""
    directory = Path(path)
    if directory_kind(directory) == "validate" and out is None and (directory / REPORT_FILE).exists():
        return directory / REPORT_FILE
    target = Path(out) if out else directory / REPORT_FILE
    page = build_report(directory, plotlyjs)
    written = write_text_atomic(target, page)
    if plotlyjs == "directory":
        write_plotlyjs(written.parent)
    return written


__all__ = ["REPORT_FILE", "build_report", "directory_kind", "run_report_html", "write_report", "write_text_atomic"]
