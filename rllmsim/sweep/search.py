"""The rate search of one candidate: find where its SLO verdict flips, within a tolerance.

Vidur-Search style: probe a start rate, step up (or down) until the verdict flips, then bisect the
bracket until it is within a relative tolerance. Two things make it cheaper than plain doubling
from a fixed start:

- a guess (`rllmsim.sweep.bracket`) as the start, with small steps that grow (1 + 1.5 x tol,
  then squared each time), so a good guess is bracketed in two probes, one bisection away from the
  tolerance, and a poor one still in a few;
- sizing points: with auto replicas the plan needs the smallest n whose one replica sustains
  target / n, so the start, each step and each bisection midpoint snap to a nearby target / n
  (within half the tolerance of a step; within the middle half of a bracket), and once the
  bracket is within the tolerance any target / n still inside it is probed. The replica count
  then does not depend on where the tolerance happened to stop, and the probe at the target is
  often one the search already ran.

Every point it returns is a probe's verdict; the guess and the snapping only choose where to probe.
"""

from __future__ import annotations

import math
from typing import Any, Callable

Probe = dict[str, Any]

#: The first step from a guess, in tolerances: small enough that a guess within it is bracketed by
#: two probes and one bisection; 1.5 needed the fewest probes (~7 % fewer than 1 or 2, 10-13 % fewer
#: of the 6000-request ones) over the README example's 14 thresholds, each jittered +-3 %, 30 times.
FIRST_STEP = 1.5


def sizing_points(target: float, low: float, high: float) -> list[float]:
    """The rates target / n strictly inside (low, high), highest first."""
    first, last = math.floor(target / high) + 1, math.ceil(target / low) - 1
    inside = (target / n for n in range(max(first, 1), last + 1))
    return [rate for rate in inside if low < rate < high
            and not math.isclose(rate, low) and not math.isclose(rate, high)]


def bisect_rate(evaluate: Callable[[float], Probe], start: float, max_rate: float, rel_tol: float,
                max_probes: int, min_rate: float, *, guessed: bool = False,
                sizing_target: float | None = None) -> tuple[Probe | None, float | None, list[Probe]]:
    """(best passing probe or None, lowest failing rate or None, every probe in order).

    `guessed`: `start` is an estimate of the answer, so steps start small (1 + FIRST_STEP x rel_tol) and
    square each time; otherwise the rate doubles (or halves) from `start`. `sizing_target`: snap
    to, and settle, the rates sizing_target / n (see the module docstring)."""
    probes: list[Probe] = []

    def run(rate: float) -> Probe:
        result = evaluate(rate)
        probes.append(result)
        return result

    factor = 1 + FIRST_STEP * rel_tol if guessed else 2.0
    growth = 2.0 if guessed else 1.0  # each step raises the factor to this power
    best: Probe | None = None
    fail: float | None = None

    def snap(rate: float) -> float:
        return min(_snapped(rate, sizing_target, rel_tol), max_rate)

    rate = snap(start)
    first = run(rate)
    if first["ok"]:
        best = first
        while len(probes) < max_probes and rate < max_rate:
            rate = snap(rate * factor)
            factor **= growth
            result = run(rate)
            if result["ok"]:
                best = result
            else:
                fail = rate
                break
    else:
        fail = rate
        while len(probes) < max_probes and rate / factor >= min_rate:
            rate = snap(rate / factor)
            factor **= growth
            result = run(rate)
            if result["ok"]:
                best = result
                break
            fail = rate
    while best is not None and fail is not None and len(probes) < max_probes:
        rate = _next_rate(best["rate"], fail, rel_tol, sizing_target)
        if rate is None:
            break
        result = run(rate)
        if result["ok"]:
            best = result
        else:
            fail = rate
    return best, fail, probes


def _snapped(rate: float, sizing_target: float | None, rel_tol: float) -> float:
    """The sizing point nearest `rate` if it is within rel_tol / 2 of it, else `rate`."""
    if not sizing_target:
        return rate
    ratio = sizing_target / rate
    point = min((sizing_target / n for n in {max(1, math.floor(ratio)), max(1, math.ceil(ratio))}),
                key=lambda p: abs(p / rate - 1))
    return point if abs(point / rate - 1) <= rel_tol / 2 else rate


def _next_rate(low: float, high: float, rel_tol: float, sizing_target: float | None) -> float | None:
    """Where to probe inside (low, high): the midpoint, or a sizing point within its middle half;
    once the bracket is within `rel_tol`, the middle sizing point still inside it, else None."""
    points = sizing_points(sizing_target, low, high) if sizing_target else []
    if high / low - 1 > rel_tol:
        mid, quarter = (low + high) / 2, (high - low) / 4
        near = [p for p in points if abs(p - mid) <= quarter]
        return min(near, key=lambda p: abs(p - mid)) if near else mid
    return points[len(points) // 2] if points else None
