"""Branch and bound for `plan --search cheapest`: search fully only the candidates that can still
be the cheapest.

A plan asks for the cheapest deployment of the target rate, and most candidates of a grid are
nowhere near it: searching each one's sustainable rate to the tolerance is what made the README's
plan take a minute. The bound is a simulated fact, not an estimate. Once some candidate is known
to serve the target at C $/hour (the incumbent), another auto-sized candidate can only match it
with at most n_max = floor(C / cost of one replica) replicas, i.e. if one replica sustains
target / n_max. One probe at that rate settles it: if it misses the SLOs, the candidate needs more
than n_max replicas and costs more than C (a rate a replica cannot sustain, a higher one cannot
either: the bisection rests on the same monotonicity), so its search stops there; if it passes,
the candidate is searched as `--search all` would search it. Ties (cost equal to C) are searched,
since equal cost is broken by latency. A fixed-replica candidate's cost is known before any
probe.

Determinism: the incumbent must not depend on which worker finished first. The plan therefore
has two waves. Wave one searches fully the candidates whose closed-form estimate
(`rllmsim.sweep.bracket`) gives the lowest cost; the cheapest of them that meets the target is
the incumbent for every candidate of wave two. Wave two starts at once, with the cost wave one's
estimate predicts as its bound, and is run again (reusing its probes) only if wave one's
cheapest costs something else (`rllmsim.sweep.plan.run_plan`). The estimate only decides which
candidates go first and which bound wave two starts with; if it is wrong, the plan still finds
the cheapest, at the price of more probes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from rllmsim.sweep.probe import ProbeSpec

#: Relative slack on cost comparisons, so float rounding never turns a tie into a loss.
COST_EPS = 1e-9


def competitive_replicas(incumbent_usd_h: float, usd_per_replica: float) -> int:
    """The most replicas a candidate may need while costing no more than the incumbent (0: even one
    replica costs more)."""
    return int(math.floor(incumbent_usd_h * (1 + COST_EPS) / usd_per_replica))


def costs_more(usd_h: float, incumbent_usd_h: float | None) -> bool:
    return incumbent_usd_h is not None and usd_h > incumbent_usd_h * (1 + COST_EPS)


def estimated_cost(target_rate: float, replicas: int | None, rate_estimate: float | None,
                   usd_per_replica: float) -> float:
    """$/hour of a candidate if the closed-form rate estimate were its sustainable rate (inf where
    it has none); a fixed replica count costs what it costs."""
    if replicas is not None:
        return replicas * usd_per_replica
    if rate_estimate is None or not rate_estimate > 0:
        return math.inf
    return math.ceil(target_rate / rate_estimate - 1e-9) * usd_per_replica


def unrounded_cost(target_rate: float, replicas: int | None, rate_estimate: float | None,
                   usd_per_replica: float) -> float:
    """$/hour at the estimated rate, replicas not rounded up: orders candidates by how near they come."""
    if replicas is not None:
        return replicas * usd_per_replica
    return target_rate / rate_estimate * usd_per_replica if rate_estimate else math.inf


def reusable(probe: dict[str, Any]) -> dict[str, Any]:
    """A probe to hand to another search of the same candidate: its verdict and figures, without
    the marks the first search gave it."""
    return {k: v for k, v in probe.items() if k not in ("best_of_seed", "stage")}


def first_wave(costs: Sequence[float]) -> list[int]:
    """Indices of the candidates with the lowest estimated cost (ties included): searched fully,
    before any bound is known. Empty when no candidate has an estimate."""
    finite = [c for c in costs if math.isfinite(c)]
    if not finite:
        return []
    low = min(finite)
    return [i for i, c in enumerate(costs) if math.isfinite(c) and not costs_more(c, low)]


def incumbent(rows: Sequence[dict[str, Any]]) -> float | None:
    """The lowest $/hour among rows that serve the target; None if none does."""
    costs = [r["cost_per_hour_usd"] for r in rows if r.get("meets_target")]
    return min(costs) if costs else None


def bound_check(spec: ProbeSpec, simulate: Callable[[ProbeSpec, float], dict[str, Any]], target_rate: float,
                incumbent_usd_h: float, usd_per_replica: float, fixed_replicas: int | None,
                known: Sequence[dict[str, Any]] = ()) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Whether a candidate can still cost no more than the incumbent: (None, its bound probe, to
    reuse) if it can, else (the row fields of a dominated candidate, its probes). `simulate` runs
    one probe of the candidate at target / n_max; `known`: probes already run for it (a second
    wave run again), one of which may be that probe."""
    if fixed_replicas is not None:
        usd_h = fixed_replicas * usd_per_replica
        if not costs_more(usd_h, incumbent_usd_h):
            return None, []
        return {"reason": f"{fixed_replicas} replicas cost ${usd_h:,.2f}/hour, more than the cheapest found "
                          f"(${incumbent_usd_h:,.2f}/hour)", "min_cost_per_hour_usd": usd_h}, []
    most = competitive_replicas(incumbent_usd_h, usd_per_replica)
    if most < 1:
        return {"reason": f"one replica costs ${usd_per_replica:,.2f}/hour, more than the cheapest found "
                          f"(${incumbent_usd_h:,.2f}/hour)", "min_cost_per_hour_usd": usd_per_replica}, []
    rate = target_rate / most
    probe = next((p for p in known if p.get("seed") == spec.seed and math.isclose(p["rate"], rate)), None)
    if probe is None:
        probe = simulate(spec, rate)
    probe.update(stage="bound", seed=spec.seed)
    if probe["ok"]:
        return None, [probe]
    floor_usd_h = (most + 1) * usd_per_replica
    return {"reason": f"one replica misses {probe['violated']} at {probe['rate']:.3g} req/s (target / {most}), so "
                      f"it needs >= {most + 1} replicas, >= ${floor_usd_h:,.2f}/hour against the cheapest found "
                      f"(${incumbent_usd_h:,.2f}/hour)",
            "min_cost_per_hour_usd": floor_usd_h, "rate_bracket_high": probe["rate"]}, [probe]
