"""What a plan found: every candidate's row, ranked by cost, the misses, the Pareto front."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:
    from rllmsim.sweep.plan import PlanSettings


@dataclass
class PlanResult:
    settings: PlanSettings
    rows: list[dict[str, Any]]

    @property
    def ranked(self) -> list[dict[str, Any]]:
        """Candidates meeting the target, cheapest first (ties: lower latency)."""
        metric = f"at_target_{self.settings.pareto_metric}"
        ok = [r for r in self.rows if r.get("meets_target")]
        return sorted(ok, key=lambda r: (r["cost_per_hour_usd"], r.get(metric, math.inf), r["label"]))

    @property
    def cheapest(self) -> dict[str, Any] | None:
        ranked = self.ranked
        return ranked[0] if ranked else None

    @property
    def pareto(self) -> list[dict[str, Any]]:
        return pareto_front(self.ranked, "cost_per_hour_usd", f"at_target_{self.settings.pareto_metric}")

    @property
    def missing(self) -> list[dict[str, Any]]:
        """Candidates that do not serve the target (or were not sized: an error, an infeasible fit)."""
        return [r for r in self.rows if not r.get("meets_target") and r.get("status") != "dominated"]

    @property
    def dominated(self) -> list[dict[str, Any]]:
        """Candidates whose search stopped once they could not be cheaper than the cheapest found."""
        return [r for r in self.rows if r.get("status") == "dominated"]


def pareto_front(rows: Iterable[Mapping[str, Any]], cost: str, latency: str) -> list[dict[str, Any]]:
    """Rows no other row beats on both cost and latency (lower is better), cheapest first."""
    points = sorted((r for r in rows if np.isfinite(r.get(latency, np.nan))),
                    key=lambda r: (r[cost], r[latency]))
    front, best = [], math.inf
    for row in points:
        if row[latency] < best:
            front.append(dict(row))
            best = row[latency]
    return front
