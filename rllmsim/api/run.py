"""`Run`: one simulation's results as a notebook wants them, and the files the CLI writes.

`simulate --out DIR` and `Run.save(DIR)` are the same code, so a run saved from a notebook opens
with `rllmsim report DIR` exactly as one written by the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rllmsim.api.display import headline, table_html
from rllmsim.deployment import Deployment
from rllmsim.metrics.bench_json import bench_result
from rllmsim.metrics.load import load_warning
from rllmsim.rundir import write_simulation
from rllmsim.simulation import RunOutput


class Run:
    """The output of `rllmsim.simulate`: `summary` (the dict summary.json holds), `requests` and
    `timeline` (DataFrames), and `result` (the engine's full `SimulationResult`)."""

    def __init__(self, output: RunOutput, deployment: Deployment) -> None:
        self.output = output
        self.deployment = deployment

    @property
    def summary(self) -> dict[str, Any]:
        return self.output.summary

    @property
    def requests(self) -> pd.DataFrame:
        return self.output.requests

    @property
    def timeline(self) -> pd.DataFrame:
        return self.output.result.timeline

    @property
    def result(self):
        return self.output.result

    def report_html(self, timeline: bool = True) -> str:
        """The page `simulate --report` writes (plotly.js inlined: works offline); without the
        timeline it leaves out the KV and queue plots, as `--report --no-timeline` does."""
        from rllmsim.report import run_report_html

        return run_report_html(self.summary, self.requests, self.timeline if timeline else None)

    def report(self, path: str | Path) -> Path:
        """Write the HTML report to `path` (atomically) and return the path."""
        from rllmsim.report import write_text_atomic

        return write_text_atomic(path, self.report_html())

    def save(self, path: str | Path, timeline: bool = True, report: bool = False) -> Path:
        """Write the run directory `simulate --out` writes (requests.parquet, timeline.parquet,
        summary.json, bench.json in `vllm bench serve --save-result` form, report.html with
        `report`) into the new directory `path`, atomically."""
        from rllmsim.report import REPORT_FILE

        extra = {REPORT_FILE: self.report_html(timeline)} if report else None
        return write_simulation(path, self.output, self.deployment.model.hf_id, timeline=timeline, extra_files=extra)

    def bench(self) -> dict[str, Any]:
        """The run as `vllm bench serve --save-result` writes a result (its keys, ms units), for
        tools that read vLLM's benchmark files (`rllmsim.metrics.bench_json`)."""
        return bench_result(self.summary, self.requests, self.result.itl, self.deployment.model.hf_id)

    def title(self) -> str:
        d, pools = self.deployment, self.output.config.get("disaggregation")
        if pools:
            p, q = pools["prefill"], pools["decode"]
            return (f"{d.model.name} on {p['replicas']} prefill x {p['gpu']} tp{p['tp']} + "
                    f"{q['replicas']} decode x {q['gpu']} tp{q['tp']}")
        return f"{d.model.name} on {d.replicas} x {d.gpu.name} tp{d.tp}"

    def __repr__(self) -> str:
        s = self.summary
        ttft, tpot = (s.get(k) or {} for k in ("ttft_s", "tpot_s"))
        latency = ", ".join(f"{name} p50 {1e3 * stats['p50']:.1f} ms"
                            for name, stats in (("TTFT", ttft), ("TPOT", tpot)) if stats.get("p50") is not None)
        return (f"<Run {self.title()}: {s['requests']['completed']} requests in {s['duration_s']:.1f} s, "
                f"{s['throughput']['output_tokens_per_s']:.1f} output tok/s{', ' + latency if latency else ''}>")

    def _repr_html_(self) -> str:
        return table_html(f"rllmsim run: {self.title()}", headline(self.summary), note=self._note())

    def _note(self) -> str:
        """What to trust and what went wrong, as the console prints it, then how to look closer."""
        s = self.summary
        warning = load_warning(s.get("load"))
        lines = [*([f"warning: {warning}"] if warning else []), *([s["fidelity"]["line"]] if "fidelity" in s else [])]
        return " | ".join([*lines, f"seed {s.get('seed')}; .summary, .requests, .timeline, .report(path), .save(dir)"])
