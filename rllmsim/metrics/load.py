"""Was the offered load served? An open-loop run past its deployment's capacity still ends with a
summary (every request completes eventually), but its latencies then measure the run's length, not
the deployment: requests pile up for as long as they keep arriving. This check says so.

A deployment that keeps up completes requests about as fast as they arrive once the first ones are
through; so over the second half of the arrival window completions match arrivals, and the
requests in flight stop growing. An overloaded one completes them at its own, lower rate, and the
difference piles up (in the running batch, whose steps slow down, or in the waiting queue). A run
whose requests outlast half its arrival window fails the check too, rightly: it ends before a
steady state, so its latencies also depend on its length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Completions over arrivals in the second half of the arrival window below which the run is
#: called overloaded: a fifth of the arrivals piled up instead of completing.
KEEP_UP = 0.8


def load_check(requests: pd.DataFrame) -> dict[str, Any] | None:
    """Offered rate over the arrival window, completions and arrivals over its second half, how
    many more were in flight at the last arrival than at the middle, and whether the run kept up;
    None when the arrivals span no time (one request, or all at once)."""
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
    return {"offered_requests_per_s": (len(arrival) - 1) / span,
            "completed_requests_per_s": completed / (span / 2),
            "in_flight_growth": arrived - completed,
            "overloaded": bool(completed < KEEP_UP * arrived)}


def overload_warning(load: dict[str, Any] | None) -> str | None:
    """One line for the console when the run did not keep up, naming what to change."""
    if not load or not load["overloaded"]:
        return None
    return (f"overloaded: {load['offered_requests_per_s']:.2f} req/s offered, {load['completed_requests_per_s']:.2f} "
            f"req/s completed over the second half of the arrivals ({load['in_flight_growth']} more in flight at "
            "the last arrival than at the middle): latencies grow with --num-requests; lower --rate or add --replicas "
            "(or send more requests, if they outlast the arrival window)")
