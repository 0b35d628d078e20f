"""Running a comparison: one workload, one seed, several variants; and writing its outputs.

Every variant sees the identical request table: the workload is drawn from the run's named RNG
streams ("arrivals", "lengths"), which no deployment setting touches, so deltas come from the
deployment alone.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from rllmsim.compare.table import METRICS, Metric, delta_frame, format_table, priced
from rllmsim.compare.variants import Variant
from rllmsim.cost.base import CostModel
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.metrics.stragglers import DEFAULT_FACTOR
from rllmsim.rundir import staged_directory, to_jsonable, write_json_atomic, write_simulation
from rllmsim.simulation import RunOutput, WorkloadSpec, run_simulation
from rllmsim.sweep.pricing import cost_per_hour

FILES = ("compare.json", "compare.csv", "compare.html")


@dataclass
class Comparison:
    """The runs of every variant (in order, the first the baseline) and their delta table."""

    variants: list[Variant]
    workload: WorkloadSpec | pd.DataFrame
    seed: int
    runs: dict[str, RunOutput]
    table: pd.DataFrame
    metrics: Sequence[Metric] = field(default=METRICS)

    @property
    def baseline(self) -> str:
        return self.variants[0].name

    def summaries(self) -> dict[str, dict[str, Any]]:
        return {name: run.summary for name, run in self.runs.items()}

    def wide(self, column: str = "value") -> pd.DataFrame:
        """Metrics x variants of `column` (value, delta or delta_pct)."""
        wide = self.table.pivot(index="metric", columns="variant", values=column)
        order = list(dict.fromkeys(self.table["metric"]))
        return wide.loc[order, [v.name for v in self.variants]]

    def value(self, variant: str, metric: str) -> float | None:
        row = self.table[(self.table["variant"] == variant) & (self.table["metric"] == metric)]
        return None if row.empty or pd.isna(row["value"].iloc[0]) else float(row["value"].iloc[0])

    def delta_pct(self, variant: str, metric: str) -> float | None:
        row = self.table[(self.table["variant"] == variant) & (self.table["metric"] == metric)]
        return None if row.empty or pd.isna(row["delta_pct"].iloc[0]) else float(row["delta_pct"].iloc[0])

    def title(self) -> str:
        dep = self.variants[0].deployment
        head = f"{dep.model.name} on {dep.gpu.name} tp{dep.tp}"
        if dep.replicas > 1:
            head += f" x{dep.replicas}"
        return f"{head} · {_describe_workload(self.workload)} · seed {self.seed}"

    def format(self) -> str:
        table = format_table(self.table, self.metrics, title=self.title())
        legend = [f"  {v.name}: {' '.join(v.flags) or '(shared deployment)'}" for v in self.variants]
        return "\n".join([table, "variants:", *legend, *self._fidelity_lines()])

    def _fidelity_lines(self) -> list[str]:
        """How far to trust each variant: one line per distinct nearest validated case."""
        shared: dict[str, list[str]] = {}
        for v in self.variants:
            trust = self.runs[v.name].summary.get("fidelity")
            if trust:
                shared.setdefault(trust["line"].removeprefix("fidelity: "), []).append(v.name)
        return ["fidelity:", *(f"  {', '.join(names)}: {line}" for line, names in shared.items())] if shared else []

    def to_json(self) -> dict[str, Any]:
        workload = self.workload.to_dict() if isinstance(self.workload, WorkloadSpec) \
            else {"arrival": "table", "num_requests": len(self.workload)}
        metrics = []
        for key, group in self.table.groupby("metric", sort=False):
            first = group.iloc[0]
            metrics.append({
                "metric": key, "label": first["label"], "unit": first["unit"], "better": first["better"],
                "values": _by_variant(group, "value"), "delta": _by_variant(group, "delta"),
                "delta_pct": _by_variant(group, "delta_pct"),
            })
        return {
            "baseline": self.baseline,
            "seed": self.seed,
            "workload": workload,
            "title": self.title(),
            "variants": [{"name": v.name, "flags": list(v.flags), "overrides": dict(v.overrides),
                          "router": v.router, "deployment": v.deployment.to_dict(),
                          "cost_per_hour_usd": _price(v),
                          "summary": self.runs[v.name].summary} for v in self.variants],
            "metrics": metrics,
        }

    def to_csv(self) -> str:
        buffer = io.StringIO()
        self.table.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL, float_format="%.10g")
        return buffer.getvalue()

    def save(self, out: str | Path, html: bool = True, save_runs: bool = False) -> Path:
        """`write_comparison` into the new directory `out`: what `rllmsim compare --out` writes."""
        return write_comparison(self, out, html=html, save_runs=save_runs)

    def __repr__(self) -> str:
        return f"<Comparison {', '.join(v.name for v in self.variants)}: {self.title()}>"

    def _repr_html_(self) -> str:
        """Jupyter: metric values per variant, then each variant's change against the baseline in %."""
        from rllmsim.api.display import frame_html

        shown = self.wide("value")
        for name in shown.columns[1:]:
            shown[f"{name} Δ%"] = self.wide("delta_pct")[name]
        return frame_html(f"rllmsim compare: {self.title()}", shown,
                          note=f"baseline {self.baseline}; .table, .wide(), .summaries(), .save(dir)")


def _price(variant: Variant) -> float | None:
    """$/hour of the variant's GPUs (both pools' when disaggregated); None for a GPU without a
    catalog price (a custom spec)."""
    pools = variant.disaggregation
    deployments = [variant.deployment] if pools is None else [pools.prefill, pools.decode]
    return sum(cost_per_hour(d) for d in deployments) or None


def _by_variant(group: pd.DataFrame, column: str) -> dict[str, float | None]:
    return {str(v): (None if pd.isna(x) else float(x)) for v, x in zip(group["variant"], group[column])}


def _describe_workload(workload: WorkloadSpec | pd.DataFrame) -> str:
    if not isinstance(workload, WorkloadSpec):
        return f"request table of {len(workload)} requests"
    w = workload
    if w.arrival == "trace":
        return f"trace {w.trace} (x{w.time_scale:g} time)"
    if w.arrival in ("closed-loop", "batch-waves"):
        load = f"{w.arrival} concurrency {w.concurrency}"
    else:
        shape = f" cv {w.cv:g}" if w.arrival == "gamma" and w.cv is not None else (
            f" burstiness {w.burstiness:g}" if w.burstiness is not None else "")
        load = f"{w.arrival} {w.rate:g} req/s{shape}"
    budget = f" · max_tokens {w.max_tokens}" if w.max_tokens else ""
    lengths = w.lengths_file or w.dataset
    count = (f"{w.num_requests} conversations x {w.turns} turns (think {w.think_time_s:g} s)" if w.turns > 1
             else f"{w.num_requests} requests")
    return f"{load} · {lengths} · {count}{budget}"


def run_comparison(
    variants: Sequence[Variant],
    workload: WorkloadSpec | pd.DataFrame,
    seed: int = 0,
    slos_s: Mapping[str, float] | None = None,
    straggler_factor: float = DEFAULT_FACTOR,
    fast_forward: bool = True,
    cost_model: Callable[[Deployment], CostModel] | None = None,
    metrics: Sequence[Metric] = METRICS,
    progress: Callable[[str], None] | None = None,
    **run_kwargs: Any,
) -> Comparison:
    """Simulate `workload` with `seed` under every variant; the first variant is the baseline.

    `cost_model`, if given, builds the cost model for each variant's deployment (default: the
    roofline). Extra keyword arguments go to `run_simulation` (e.g. `client=`).
    """
    variants = list(variants)
    if not variants:
        raise ConfigError("a comparison needs at least one variant")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"variant names must be unique, got {names}")
    runs: dict[str, RunOutput] = {}
    for variant in variants:
        if progress:
            progress(variant.name)
        model = cost_model(variant.deployment) if cost_model else None
        runs[variant.name] = run_simulation(variant.deployment, workload, seed=seed, cost_model=model,
                                            router=variant.router, fast_forward=fast_forward, slos_s=slos_s,
                                            straggler_factor=straggler_factor,
                                            disaggregation=variant.disaggregation, **run_kwargs)
    table = delta_frame({v.name: priced(runs[v.name].summary, _price(v)) for v in variants}, metrics)
    return Comparison(variants, workload, seed, runs, table, metrics)


def write_comparison(comparison: Comparison, out: str | Path, html: bool = True, save_runs: bool = False) -> Path:
    """Write compare.json, compare.csv, compare.html (and each variant's run directory with
    `save_runs`) into the new directory `out`, atomically: all of it appears at once or none."""
    from rllmsim.compare.figures import comparison_html

    with staged_directory(out) as staging:
        write_json_atomic(staging / "compare.json", to_jsonable(comparison.to_json()))
        (staging / "compare.csv").write_text(comparison.to_csv(), encoding="utf-8")
        if html:
            (staging / "compare.html").write_text(comparison_html(comparison, comparison.metrics), encoding="utf-8")
        if save_runs:
            models = {v.name: v.deployment.model.hf_id for v in comparison.variants}
            for name, run in comparison.runs.items():
                write_simulation(staging / "runs" / name, run, models[name])
    return Path(out)
