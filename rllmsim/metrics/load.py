"""Did the run reach a steady state? An open-loop run past its deployment's capacity still ends
with a summary (every request completes eventually), but its latencies then measure the run's
length, not the deployment: requests pile up for as long as they keep arriving. This check says so.

A deployment that keeps up completes requests about as fast as they arrive once the first ones are
through; so over the second half of the arrival window completions match arrivals, and the
requests in flight stop growing. An overloaded one completes them at its own, lower rate, and the
difference piles up (in the running batch, whose steps slow down, or in the waiting queue). A run
too short for its requests fails the same way: it ends before the first ones are through. Which of
the two it is shows in the first requests, who met an idle deployment: when they alone took more
than half the arrival window, the run is too short to tell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Completions over arrivals in the second half of the arrival window below which the run did not
#: keep up: a fifth of the arrivals piled up instead of completing.
KEEP_UP = 0.8
#: The first requests by arrival whose latency shows how long a request takes on an idle deployment.
FIRST_SHARE = 0.1


def load_check(requests: pd.DataFrame) -> dict[str, Any] | None:
    """Offered rate over the arrival window, completions and arrivals over its second half, how
    many more were in flight at the last arrival than at the middle, whether the run kept up, and
    the median E2EL of its first requests; None when the arrivals span no time (one request, or
    all at once)."""
    arrival = requests["arrival_s"].to_numpy(np.float64)
    finish = requests["finish_s"].to_numpy(np.float64)
    if len(arrival) < 2:
        return None
    start, last = float(arrival.min()), float(arrival.max())
    span = last - start
    if span <= 0:
        return None
    middle = start + span / 2
    arrived = int(np.count_nonzero(arrival > middle))
    completed = int(np.count_nonzero((finish > middle) & (finish <= last)))  # NaN (never done) is False
    first = np.argsort(arrival, kind="stable")[: max(1, int(FIRST_SHARE * len(arrival)))]
    first_e2el = np.where(np.isnan(finish[first]), np.inf, finish[first] - arrival[first])
    return {"offered_requests_per_s": (len(arrival) - 1) / span,
            "completed_requests_per_s": completed / (span / 2),
            "in_flight_growth": arrived - completed,
            "kept_up": bool(completed >= KEEP_UP * arrived),
            "first_requests_e2el_p50_s": float(np.median(first_e2el)),
            "arrival_window_s": span}


def load_warning(load: dict[str, Any] | None) -> str | None:
    """One line for the console when the run did not keep up, naming what to change."""
    if not load or load["kept_up"]:
        return None
    head = (f"not a steady state: {load['offered_requests_per_s']:.2f} req/s offered, "
            f"{load['completed_requests_per_s']:.2f} req/s completed over the second half of the arrivals "
            f"({load['in_flight_growth']} more in flight at the last arrival than at the middle), so latencies "
            "depend on --num-requests")
    if load["first_requests_e2el_p50_s"] > load["arrival_window_s"] / 2:
        return (f"{head}; the first requests alone took {load['first_requests_e2el_p50_s']:.1f} s (median), more "
                f"than half the {load['arrival_window_s']:.1f} s of arrivals: raise --num-requests to tell "
                "whether the deployment keeps up")
    return f"{head}; the deployment is overloaded: lower --rate or add --replicas"
